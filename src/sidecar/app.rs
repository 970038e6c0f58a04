//! The sidecar's side of the app: requests and events forwarded to it over HTTP, its health
//! check and its `.well-known/micro` document.
//!
//! A request for `Handler.Method` becomes `POST {app}/Handler.Method` with the JSON body and
//! these headers (see `docs/sidecar.md`):
//!
//! | header | value |
//! |---|---|
//! | `Micro-Service`, `Micro-Endpoint` | the service and endpoint called |
//! | `Micro-Id` | the request id, when the caller gave one |
//! | `Micro-Caller` | the calling service, when known |
//! | `Micro-Deadline` | the deadline, ms since the Unix epoch, when the call has one |
//! | `Micro-Timeout` | the time left until it, in ms |
//! | `traceparent`, `tracestate` | the W3C trace context |
//! | `Micro-Meta-<key>` | each metadata entry |
//!
//! An event becomes `POST {app}{path}` with `Micro-Topic`, `Micro-Id`, `Micro-Publisher` and
//! `Micro-Timestamp` besides the trace and metadata headers.

use std::time::Duration;

use actix_web::http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use actix_web::http::{StatusCode, Uri};
use bytes::Bytes;

use crate::context::CallContext;
use crate::error::{Error, Result};
use crate::status::{Code, Status};

/// The most of an app's answer the sidecar reads (a larger one is a 502).
const MAX_ANSWER: usize = 4 * 1024 * 1024;
/// The most of an app's error body kept as the status detail.
const MAX_DETAIL: usize = 4096;

/// What the app declares at `GET {app}/.well-known/micro`.
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub(crate) struct Manifest {
    #[serde(default)]
    pub(crate) version: Option<String>,
    #[serde(default)]
    pub(crate) endpoints: Vec<ManifestEndpoint>,
    #[serde(default)]
    pub(crate) metadata: std::collections::BTreeMap<String, String>,
}

/// An endpoint of the manifest: its name, or `{"name": ..}`.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(untagged)]
pub(crate) enum ManifestEndpoint {
    Name(String),
    Object { name: String },
}

impl ManifestEndpoint {
    pub(crate) fn name(&self) -> &str {
        match self {
            ManifestEndpoint::Name(n) | ManifestEndpoint::Object { name: n } => n,
        }
    }
}

/// An HTTP client of one app. It lives on the arbiter that serves the service (awc's client
/// is not `Send`), one per registration.
#[derive(Clone)]
pub(crate) struct AppClient {
    base: std::rc::Rc<str>,
    service: std::rc::Rc<str>,
    http: awc::Client,
    timeout: Duration,
}

impl AppClient {
    pub(crate) fn new(base: &str, service: &str, timeout: Duration) -> AppClient {
        let http = awc::Client::builder().disable_redirects().timeout(timeout).finish();
        AppClient { base: base.into(), service: service.into(), http, timeout }
    }

    /// The app's URL for `path` (`/Say.Hello`), parsed once where it is used for every call.
    pub(crate) fn uri(&self, path: &str) -> Result<Uri> {
        let url = format!("{}{path}", self.base);
        url.parse().map_err(|e| Error::config(format!("{url} is not a URL: {e}")))
    }

    /// Forwards a request for `endpoint` to `uri` (its [`uri`](Self::uri)): the app's 2xx JSON
    /// answer is the reply, another status is the error with that code and the app's body as
    /// detail, no answer a 503.
    pub(crate) async fn call(
        &self,
        endpoint: &str,
        uri: &Uri,
        ctx: &CallContext,
        body: Bytes,
    ) -> Result<Bytes, Status> {
        let timeout = ctx.remaining().map_or(self.timeout, |r| r.min(self.timeout));
        if timeout.is_zero() {
            let late = Status::timeout(format!("{endpoint}: the deadline passed before the app was asked"));
            return Err(late.with_id(&*self.service));
        }
        let mut req = self.http.post(uri).timeout(timeout);
        req = req.insert_header((CONTENT_TYPE, "application/json"));
        req = req.insert_header(("micro-service", &*self.service)).insert_header(("micro-endpoint", endpoint));
        if let Some(deadline) = ctx.deadline() {
            req = req.insert_header(("micro-deadline", deadline.as_millis().to_string()));
            req = req.insert_header(("micro-timeout", deadline.remaining().as_millis().to_string()));
        }
        if let Some(caller) = ctx.caller() {
            req = req.insert_header(("micro-caller", caller));
        }
        let req = with_context(req, ctx);
        let (status, answer) = self.send(req, body, endpoint).await?;
        if status.is_success() {
            return Ok(if answer.iter().all(u8::is_ascii_whitespace) { Bytes::from_static(b"null") } else { answer });
        }
        Err(app_error(status, &answer, &self.service))
    }

    /// Delivers an event to `POST {app}{path}`: `Ok` on a 2xx, else the status whose code
    /// decides between retry and dead letter.
    pub(crate) async fn deliver(&self, path: &str, uri: &Uri, ctx: &CallContext, body: Bytes) -> Result<(), Status> {
        let mut req = self.http.post(uri);
        req = req.insert_header((CONTENT_TYPE, "application/json")).insert_header(("micro-topic", ctx.endpoint()));
        if let Some(event) = ctx.event() {
            req = req.insert_header(("micro-timestamp", event.timestamp.to_string()));
            if let Some(p) = &event.publisher {
                req = req.insert_header(("micro-publisher", p.as_str()));
            }
        }
        let req = with_context(req, ctx);
        let (status, answer) = self.send(req, body, path).await?;
        if status.is_success() {
            return Ok(());
        }
        Err(app_error(status, &answer, &self.service))
    }

    /// Whether `GET {app}{path}` answers 2xx within `within`.
    pub(crate) async fn healthy(&self, path: &str, within: Duration) -> bool {
        match self.http.get(format!("{}{path}", self.base)).timeout(within).send().await {
            Ok(mut rsp) => {
                // Read the body so the connection goes back to the pool.
                let _ = rsp.body().limit(64 * 1024).await;
                rsp.status().is_success()
            }
            Err(_) => false,
        }
    }

    /// The app's `.well-known/micro` document.
    pub(crate) async fn manifest(&self) -> Result<Manifest> {
        let url = format!("{}/.well-known/micro", self.base);
        let mut rsp =
            self.http.get(&url).send().await.map_err(|e| Error::unavailable(format!("cannot read {url}: {e}")))?;
        let body =
            rsp.body().limit(MAX_ANSWER).await.map_err(|e| Error::unavailable(format!("cannot read {url}: {e}")))?;
        if !rsp.status().is_success() {
            return Err(Error::unavailable(format!("{url} answered {}", rsp.status())));
        }
        let manifest: Manifest = serde_json::from_slice(&body)
            .map_err(|e| Error::config(format!("{url} is not a manifest ({{\"version\", \"endpoints\"}}): {e}")))?;
        for e in &manifest.endpoints {
            super::config::check_endpoint(e.name())?;
        }
        Ok(manifest)
    }

    async fn send(&self, req: awc::ClientRequest, body: Bytes, what: &str) -> Result<(StatusCode, Bytes), Status> {
        // No `Accept-Encoding: identity` (awc's default without its compression features): an
        // answer is never compressed unless asked for, and every header costs the app a parse.
        let req = req.no_decompress();
        let mut rsp =
            req.send_body(body).await.map_err(|e| unreachable(&self.base, what, &e).with_id(&*self.service))?;
        let answer = rsp.body().limit(MAX_ANSWER).await.map_err(|e| {
            Status::new(Code::BAD_GATEWAY, format!("{what}: cannot read the app's answer: {e}")).with_id(&*self.service)
        })?;
        Ok((rsp.status(), answer))
    }
}

/// The deadline-free context headers: id, trace, metadata.
fn with_context(mut req: awc::ClientRequest, ctx: &CallContext) -> awc::ClientRequest {
    if !ctx.id().is_empty() {
        req = req.insert_header(("micro-id", ctx.id()));
    }
    if let Some(t) = ctx.trace() {
        req = req.insert_header(("traceparent", t.to_string()));
    }
    if let Some(s) = ctx.trace_state() {
        req = req.insert_header(("tracestate", s));
    }
    for (k, v) in ctx.metadata().iter() {
        let name = HeaderName::from_bytes(format!("micro-meta-{k}").as_bytes());
        if let (Ok(name), Ok(value)) = (name, HeaderValue::from_str(v)) {
            req = req.insert_header((name, value));
        }
    }
    req
}

/// No answer from the app: a 503 (it is down or unreachable), or a 408 when it was too slow.
fn unreachable(base: &str, what: &str, e: &awc::error::SendRequestError) -> Status {
    match e {
        awc::error::SendRequestError::Timeout => {
            Status::timeout(format!("{what}: the app at {base} did not answer in time"))
        }
        e => Status::unavailable(format!("{what}: the app at {base} is unreachable: {e}")),
    }
}

/// An app's error answer as a status: the HTTP status is the code (a status outside 400..=599
/// is a 502), the body the detail (a JSON body's `detail` field if it has one).
pub(crate) fn app_error(status: StatusCode, body: &[u8], service: &str) -> Status {
    let code = if status.is_client_error() || status.is_server_error() {
        Code::new(status.as_u16())
    } else {
        Code::BAD_GATEWAY
    };
    let detail = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_string))
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(body);
            let mut text = text.trim().to_string();
            if text.len() > MAX_DETAIL {
                let mut cut = MAX_DETAIL;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
            }
            text
        });
    let detail = if detail.is_empty() { status.to_string() } else { detail };
    Status::new(code, detail).with_id(service)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_statuses_become_codes() {
        let s = app_error(StatusCode::BAD_REQUEST, b"name is required\n", "py");
        assert_eq!((s.code(), s.detail(), s.id()), (Code::BAD_REQUEST, "name is required", "py"));
        let s = app_error(StatusCode::CONFLICT, br#"{"detail": "taken", "x": 1}"#, "py");
        assert_eq!((s.code(), s.detail()), (Code::new(409), "taken"));
        let s = app_error(StatusCode::FOUND, b"", "py");
        assert_eq!(s.code(), Code::BAD_GATEWAY);
        let s = app_error(StatusCode::INTERNAL_SERVER_ERROR, b"", "py");
        assert_eq!(s.detail(), "500 Internal Server Error");
    }

    #[test]
    fn manifests_list_names_or_objects() {
        let m: Manifest =
            serde_json::from_str(r#"{"version": "1.0.0", "endpoints": ["Say.Hello", {"name": "Say.Bye"}]}"#).unwrap();
        let names: Vec<&str> = m.endpoints.iter().map(ManifestEndpoint::name).collect();
        assert_eq!(names, ["Say.Hello", "Say.Bye"]);
        assert_eq!(m.version.as_deref(), Some("1.0.0"));
    }
}
