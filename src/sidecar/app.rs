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

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode, Uri};

use super::conns::{Connections, SendError};
use crate::context::CallContext;
use crate::error::{Error, Result};
use crate::status::{Code, Status};

/// The most of an app's answer the sidecar reads (a larger one is a 502).
const MAX_ANSWER: usize = 4 * 1024 * 1024;
/// The most of an app's error body kept as the status detail.
const MAX_DETAIL: usize = 4096;
/// The most of a health check's answer read (and dropped).
const MAX_HEALTH_ANSWER: usize = 64 * 1024;

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

/// Where the app listens, from its base URL (`http://127.0.0.1:5000`, maybe with a path
/// prefix: `http://127.0.0.1:5000/api`).
pub(crate) struct AppBase {
    /// `host:port`, what a connection is opened to.
    addr: String,
    /// The `Host` header.
    host: HeaderValue,
    /// The base URL's path, put before every app path (`""` or `/api`).
    prefix: String,
}

impl AppBase {
    /// Parses the app's base URL: plain `http://` (the sidecar and its app share a host or a
    /// pod), a host, no query.
    pub(crate) fn parse(url: &str) -> Result<AppBase> {
        let bad = |why: &str| Error::config(format!("the app URL {url:?} {why}"));
        let uri: Uri = url.parse().map_err(|e| bad(&format!("is not a URL: {e}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => return Err(bad("must be http://: the sidecar speaks plain HTTP to the app next to it")),
            _ => return Err(bad("must start with http://")),
        }
        let authority = uri.authority().ok_or_else(|| bad("has no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("must not carry a login"));
        }
        if uri.query().is_some() {
            return Err(bad("must not have a query"));
        }
        let addr = format!("{}:{}", authority.host(), authority.port_u16().unwrap_or(80));
        let host = HeaderValue::from_str(authority.as_str()).map_err(|e| bad(&e.to_string()))?;
        let prefix = uri.path().trim_end_matches('/').to_string();
        Ok(AppBase { addr, host, prefix })
    }
}

/// An app path ready for requests: its URI, and the endpoint it serves (the
/// `Micro-Endpoint` header) when it is one.
#[derive(Clone)]
pub(crate) struct AppPath {
    uri: Uri,
    endpoint: Option<HeaderValue>,
}

/// An HTTP client of one app, one per sidecar; it lives on the arbiter that serves the
/// service (its connections are not `Send`).
#[derive(Clone)]
pub(crate) struct AppClient(Rc<Inner>);

struct Inner {
    base: Box<str>,
    prefix: Box<str>,
    host: HeaderValue,
    service: Box<str>,
    service_header: HeaderValue,
    conns: Connections,
    timeout: Duration,
}

impl AppClient {
    /// A client of the app at `base` (checked by [`AppBase::parse`]) serving `service`; an
    /// answer takes at most `timeout`.
    pub(crate) fn new(base: &str, service: &str, timeout: Duration) -> Result<AppClient> {
        let AppBase { addr, host, prefix } = AppBase::parse(base)?;
        let service_header = HeaderValue::from_str(service)
            .map_err(|_| Error::config(format!("the service name {service:?} is not a header value")))?;
        Ok(AppClient(Rc::new(Inner {
            base: base.into(),
            prefix: prefix.into(),
            host,
            service: service.into(),
            service_header,
            conns: Connections::new(&addr),
            timeout,
        })))
    }

    /// The app path serving `endpoint` (`Say.Hello` at `/Say.Hello`), parsed once where it is
    /// used for every call.
    pub(crate) fn endpoint(&self, endpoint: &str) -> Result<AppPath> {
        let mut path = self.path(&format!("/{endpoint}"))?;
        path.endpoint =
            Some(HeaderValue::from_str(endpoint).map_err(|e| Error::config(format!("endpoint {endpoint:?}: {e}")))?);
        Ok(path)
    }

    /// The app path `path` (`/events/order`), parsed once.
    pub(crate) fn path(&self, path: &str) -> Result<AppPath> {
        let full = format!("{}{path}", self.0.prefix);
        let uri = full.parse().map_err(|e| Error::config(format!("{}{path} is not a URL: {e}", self.0.base)))?;
        Ok(AppPath { uri, endpoint: None })
    }

    /// Forwards a request to the app at `to` (an [`endpoint`](Self::endpoint)): the app's 2xx
    /// JSON answer is the reply, another status is the error with that code and the app's body
    /// as detail; an app that cannot be reached is a 503 (callers may try another node), a
    /// connection lost after the request went out a 502 (the app may have acted on it), no
    /// answer in time a 408.
    pub(crate) async fn call(&self, to: &AppPath, ctx: &CallContext, body: Bytes) -> Result<Bytes, Status> {
        let app = &*self.0;
        let timeout = ctx.remaining().map_or(app.timeout, |r| r.min(app.timeout));
        if timeout.is_zero() {
            let late = Status::timeout(format!("{}: the deadline passed before the app was asked", ctx.endpoint()));
            return Err(late.with_id(&*app.service));
        }
        let mut req = self.request(Method::POST, to, body);
        let h = req.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(MICRO_SERVICE, app.service_header.clone());
        if let Some(endpoint) = &to.endpoint {
            h.insert(MICRO_ENDPOINT, endpoint.clone());
        }
        if let Some(deadline) = ctx.deadline() {
            h.insert(MICRO_DEADLINE, HeaderValue::from(deadline.as_millis()));
            h.insert(MICRO_TIMEOUT, HeaderValue::from(deadline.remaining().as_millis() as u64));
        }
        if let Some(caller) = ctx.caller().and_then(|c| HeaderValue::from_str(c).ok()) {
            h.insert(MICRO_CALLER, caller);
        }
        with_context(h, ctx);
        let (status, answer) = self.send(req, ctx.endpoint(), timeout).await?;
        if status.is_success() {
            return Ok(if answer.iter().all(u8::is_ascii_whitespace) { Bytes::from_static(b"null") } else { answer });
        }
        Err(app_error(status, &answer, &app.service))
    }

    /// Delivers an event to the app at `to` (a [`path`](Self::path)): `Ok` on a 2xx, else the
    /// status whose code decides between retry and dead letter.
    pub(crate) async fn deliver(&self, to: &AppPath, ctx: &CallContext, body: Bytes) -> Result<(), Status> {
        let mut req = self.request(Method::POST, to, body);
        let h = req.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Ok(topic) = HeaderValue::from_str(ctx.endpoint()) {
            h.insert(MICRO_TOPIC, topic);
        }
        if let Some(event) = ctx.event() {
            h.insert(MICRO_TIMESTAMP, HeaderValue::from(event.timestamp));
            if let Some(p) = event.publisher.as_deref().and_then(|p| HeaderValue::from_str(p).ok()) {
                h.insert(MICRO_PUBLISHER, p);
            }
        }
        with_context(h, ctx);
        let (status, answer) = self.send(req, to.uri.path(), self.0.timeout).await?;
        if status.is_success() {
            return Ok(());
        }
        Err(app_error(status, &answer, &self.0.service))
    }

    /// Whether `GET {app}{path}` answers 2xx within `within`.
    pub(crate) async fn healthy(&self, path: &AppPath, within: Duration) -> bool {
        let req = self.request(Method::GET, path, Bytes::new());
        matches!(
            tokio::time::timeout(within, self.0.conns.send(req, MAX_HEALTH_ANSWER)).await,
            Ok(Ok((status, _))) if status.is_success()
        )
    }

    /// The app's `.well-known/micro` document.
    pub(crate) async fn manifest(&self) -> Result<Manifest> {
        let url = format!("{}/.well-known/micro", self.0.base);
        let req = self.request(Method::GET, &self.path("/.well-known/micro")?, Bytes::new());
        let (status, body) = self
            .send(req, "/.well-known/micro", self.0.timeout)
            .await
            .map_err(|e| Error::unavailable(format!("cannot read {url}: {}", e.detail())))?;
        if !status.is_success() {
            return Err(Error::unavailable(format!("{url} answered {status}")));
        }
        let manifest: Manifest = serde_json::from_slice(&body)
            .map_err(|e| Error::config(format!("{url} is not a manifest ({{\"version\", \"endpoints\"}}): {e}")))?;
        for e in &manifest.endpoints {
            super::config::check_endpoint(e.name())?;
        }
        Ok(manifest)
    }

    /// A request to `to` with its `Host`; no `Accept-Encoding` (an answer is never compressed
    /// unless asked for) nor `Date`: every header costs the app a parse.
    fn request(&self, method: Method, to: &AppPath, body: Bytes) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = to.uri.clone();
        let h = req.headers_mut();
        h.reserve(8);
        h.insert(HOST, self.0.host.clone());
        req
    }

    async fn send(
        &self,
        req: Request<Full<Bytes>>,
        what: &str,
        within: Duration,
    ) -> Result<(StatusCode, Bytes), Status> {
        let app = &*self.0;
        let answer = match tokio::time::timeout(within, app.conns.send(req, MAX_ANSWER)).await {
            Ok(Ok(answer)) => return Ok(answer),
            Err(_) => Status::timeout(format!("{what}: the app at {} did not answer in time", app.base)),
            Ok(Err(SendError::Unsent(e))) => {
                Status::unavailable(format!("{what}: the app at {} is unreachable: {e}", app.base))
            }
            Ok(Err(SendError::NoAnswer(e))) => Status::new(
                Code::BAD_GATEWAY,
                format!("{what}: the app at {} took the request and gave no answer: {e}", app.base),
            ),
            Ok(Err(SendError::TooLarge(limit))) => Status::new(
                Code::BAD_GATEWAY,
                format!("{what}: the app's answer is larger than {} MiB", limit / (1024 * 1024)),
            ),
        };
        Err(answer.with_id(&*app.service))
    }
}

const MICRO_SERVICE: HeaderName = HeaderName::from_static("micro-service");
const MICRO_ENDPOINT: HeaderName = HeaderName::from_static("micro-endpoint");
const MICRO_DEADLINE: HeaderName = HeaderName::from_static("micro-deadline");
const MICRO_TIMEOUT: HeaderName = HeaderName::from_static("micro-timeout");
const MICRO_CALLER: HeaderName = HeaderName::from_static("micro-caller");
const MICRO_ID: HeaderName = HeaderName::from_static("micro-id");
const MICRO_TOPIC: HeaderName = HeaderName::from_static("micro-topic");
const MICRO_TIMESTAMP: HeaderName = HeaderName::from_static("micro-timestamp");
const MICRO_PUBLISHER: HeaderName = HeaderName::from_static("micro-publisher");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The deadline-free context headers: id, trace, metadata. A value that cannot be a header
/// (a control character) is left out.
fn with_context(h: &mut hyper::HeaderMap, ctx: &CallContext) {
    if let Some(id) = Some(ctx.id()).filter(|id| !id.is_empty()).and_then(|id| HeaderValue::from_str(id).ok()) {
        h.insert(MICRO_ID, id);
    }
    if let Some(t) = ctx.trace().and_then(|t| HeaderValue::try_from(t.to_string()).ok()) {
        h.insert(TRACEPARENT, t);
    }
    if let Some(s) = ctx.trace_state().and_then(|s| HeaderValue::from_str(s).ok()) {
        h.insert(TRACESTATE, s);
    }
    for (k, v) in ctx.metadata().iter() {
        let name = HeaderName::from_bytes(format!("micro-meta-{k}").as_bytes());
        if let (Ok(name), Ok(value)) = (name, HeaderValue::from_str(v)) {
            h.insert(name, value);
        }
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
