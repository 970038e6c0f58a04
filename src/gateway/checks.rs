//! What the gateway checks around every handler: path tricks, the declared body length and
//! the origin of state-changing requests (from the head alone), the body's limit and deadline
//! while it is read, a request id, and a JSON status for errors actix-web makes itself.

use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::{web, HttpMessage};
use futures::future::LocalBoxFuture;
use futures::{Future, Stream};

use super::{payload_error, too_large, GatewayConfig, GatewayError, HandlerKind, State};
use crate::message::{new_id, TraceParent};
use crate::status::Code;
use crate::telemetry::{self, sampling, spans};
use tracing::Instrument;

// Looked up by ready names: by a `&str` every lookup would parse (and allocate) the name.
static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

/// Rejects path tricks before routing, and gives every request an id.
pub(crate) fn guard_and_tag<S, B>(
    mut req: ServiceRequest,
    srv: &S,
) -> LocalBoxFuture<'static, Result<ServiceResponse<actix_web::body::EitherBody<B>>, actix_web::Error>>
where
    S: actix_web::dev::Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    S::Future: 'static,
    B: actix_web::body::MessageBody + 'static,
{
    // The request's span, parented by its `traceparent` header; its identity is what the
    // calls made for it continue (`trace_of`).
    // Read only when a subscriber may record the span: it decides the span's sampling state.
    let parent = if tracing::level_enabled!(tracing::Level::INFO) {
        req.headers().get(&super::TRACEPARENT).and_then(|v| v.to_str().ok()).and_then(TraceParent::parse)
    } else {
        None
    };
    let unsampled = sampling::unsampled(parent);
    let span = sampling::making(unsampled, || spans::http(req.method().as_str(), req.path()));
    if !span.is_disabled() {
        let own = telemetry::identify(&span, parent, spans::Parent::Remote);
        req.extensions_mut().insert(HttpTrace { own, continued: parent.is_some() });
    }
    let state = req.app_data::<web::Data<State>>().cloned();
    let admitted = check_path(req.uri().path()).and_then(|()| match &state {
        Some(state) => admit(&req, &state.config),
        None => Ok(()),
    });
    if let Err(e) = admitted {
        let (http, _) = req.into_parts();
        let rsp = actix_web::ResponseError::error_response(&e);
        spans::record_http(&span, rsp.status().as_u16());
        return Box::pin(async move { Ok(ServiceResponse::new(http, rsp).map_into_right_body()) });
    }
    if let Some(state) = &state {
        // A WebSocket's payload is its frames, for as long as it is open: only the proxy takes
        // it, and it is not a body to bound.
        let websocket = req.headers().contains_key(header::UPGRADE)
            && (state.config.handler_at(req.path()) == Some(HandlerKind::Proxy)
                || state.config.websocket_paths.iter().any(|p| p == req.path()));
        if !websocket {
            let payload = req.take_payload();
            req.set_payload(bounded(payload, state.config.max_body, state.config.timeout));
        }
    }
    tag(&mut req);
    let fut = sampling::making(unsampled, || span.in_scope(|| srv.call(req)));
    let recorded = span.clone();
    let served = async move {
        let mut res = as_json_error(fut.await?);
        // The request's own value, shared rather than copied.
        if let Some(id) = res.request().headers().get(&REQUEST_ID).cloned() {
            res.headers_mut().insert(REQUEST_ID.clone(), id);
        }
        spans::record_http(&recorded, res.status().as_u16());
        Ok(res)
    }
    .instrument(span);
    Box::pin(sampling::follow(unsampled, served))
}

/// The trace context of the gateway's span for a request, when a subscriber records it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HttpTrace {
    pub(crate) own: TraceParent,
    /// Whether it continues the caller's valid `traceparent` (else it is a new root).
    pub(crate) continued: bool,
}

/// What is refused from the request head alone: a declared body over the limit (413, before
/// a byte of it is read, whatever the route), and a state-changing request from another site
/// (403).
fn admit(req: &ServiceRequest, config: &GatewayConfig) -> Result<(), GatewayError> {
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > config.max_body as u64) {
        return Err(too_large(config.max_body));
    }
    if !req.method().is_safe() && !same_site_or_allowed(req.headers(), req.uri(), &config.cors) {
        return Err(GatewayError::new(
            Code::FORBIDDEN,
            "cross-site request refused: its origin is not allowed to call this gateway (see --cors)",
        ));
    }
    Ok(())
}

/// Whether a request comes from the gateway's own origin, from an origin the CORS allowlist
/// names, or from no browser context at all (no `Origin`, no cross-site `Sec-Fetch-Site`).
/// A browser sends a cross-site form POST without a preflight, so CORS alone does not stop it.
pub(crate) fn same_site_or_allowed(
    headers: &actix_web::http::header::HeaderMap,
    uri: &actix_web::http::Uri,
    allowed: &[String],
) -> bool {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let Ok(origin) = origin.to_str() else { return false };
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).or(uri.authority().map(|a| a.as_str()));
        let own = origin.split_once("://").map(|(_, authority)| authority).zip(host);
        return allowed.iter().any(|o| o == "*" || o.eq_ignore_ascii_case(origin))
            || own.is_some_and(|(authority, host)| authority.eq_ignore_ascii_case(host));
    }
    !matches!(headers.get(&SEC_FETCH_SITE).and_then(|v| v.to_str().ok()), Some("cross-site" | "same-site"))
}

/// The request body, bounded while it is read: past `limit` bytes an overflow, and once
/// `timeout` has passed since the request arrived a timed-out read, so a body that stalls
/// cannot hold a connection longer than the request may take.
fn bounded(mut payload: Payload, limit: usize, timeout: Duration) -> Payload {
    // The timer is armed only once the body keeps the reader waiting: a request without a body,
    // or whose body is there by the time it is read, costs no timer.
    let arrived = tokio::time::Instant::now();
    let mut deadline: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let (mut seen, mut done) = (0usize, false);
    let stream = futures::stream::poll_fn(move |cx| {
        if done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut payload).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                seen = seen.saturating_add(chunk.len());
                if seen > limit {
                    done = true;
                    return Poll::Ready(Some(Err(PayloadError::Overflow)));
                }
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(other) => {
                done = !matches!(other, Some(Ok(_)));
                Poll::Ready(other)
            }
            Poll::Pending => match deadline
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(arrived + timeout)))
                .as_mut()
                .poll(cx)
            {
                Poll::Ready(()) => {
                    done = true;
                    Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the request body did not arrive in time",
                    )))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    });
    Payload::Stream { payload: Box::pin(stream) }
}

/// An error response actix-web made by itself (an extractor's, text/plain) as the gateway's
/// JSON status, with the same HTTP status.
fn as_json_error<B>(res: ServiceResponse<B>) -> ServiceResponse<actix_web::body::EitherBody<B>> {
    let limit = res.request().app_data::<web::Data<State>>().map_or(usize::MAX, |s| s.config.max_body);
    let replacement = match res.response().error() {
        Some(e) if e.as_error::<GatewayError>().is_none() => {
            let detail = match e.as_error::<PayloadError>() {
                Some(p) => payload_error(p, limit).status().detail().to_string(),
                None => e.to_string(),
            };
            Some(GatewayError::http(res.status(), detail))
        }
        _ => None,
    };
    match replacement {
        Some(e) => {
            let (http, _) = res.into_parts();
            ServiceResponse::new(http, actix_web::ResponseError::error_response(&e)).map_into_right_body()
        }
        None => res.map_into_left_body(),
    }
}

/// Gives a request its id: the caller's `X-Request-Id` when it is a safe one, else a new one
/// in its place. Handlers read it back with [`request_id`]; the response carries it too.
fn tag(req: &mut ServiceRequest) {
    let mut ids = req.headers().get_all(&REQUEST_ID);
    let kept = ids.next().filter(|v| v.to_str().is_ok_and(safe_request_id)).cloned();
    if kept.is_some() && ids.next().is_none() {
        return;
    }
    // Made here, or the first of several: one value, so that nothing downstream sees another.
    let id = kept.unwrap_or_else(|| HeaderValue::try_from(new_id()).expect("an id is a header value"));
    req.headers_mut().insert(REQUEST_ID.clone(), id);
}

fn safe_request_id(v: &str) -> bool {
    !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// The id [`guard_and_tag`] gave a request (its `X-Request-Id`).
pub(crate) fn request_id(req: &actix_web::HttpRequest) -> Option<&str> {
    req.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok())
}

/// Path tricks: encoded slashes, dots or backslashes, double encoding, NUL, dot segments.
pub(crate) fn check_path(raw: &str) -> Result<(), GatewayError> {
    // Without a '%' there is nothing encoded to look at (the common case: no copy, no search).
    if memchr::memchr(b'%', raw.as_bytes()).is_some() {
        let encoded = |w: &[u8]| FORBIDDEN.iter().find(|bad| w.eq_ignore_ascii_case(bad.as_bytes()));
        if let Some(bad) = raw.as_bytes().windows(3).find_map(encoded) {
            return Err(GatewayError::bad_request(format!("path contains the forbidden sequence {bad}")));
        }
    }
    if raw.contains('\0') || raw.contains('\\') {
        return Err(GatewayError::bad_request("path contains a NUL or backslash"));
    }
    if raw.split('/').any(|s| s == "." || s == "..") {
        return Err(GatewayError::bad_request("path contains a dot segment"));
    }
    Ok(())
}

/// Encoded slash, dot, backslash, percent (double encoding) and NUL, as lower case.
const FORBIDDEN: [&str; 5] = ["%2f", "%2e", "%5c", "%25", "%00"];
