//! The API gateway: actix-web in front of the services. Each HTTP request is resolved to a
//! service through the registry and called over the configured transport.
//!
//! Handlers (see `docs/gateway.md`):
//! - `POST /rpc` — `{"service", "endpoint" (or "method"), "request"}` as JSON or form fields.
//! - `api` (default) — path to service and endpoint ([`resolve`]); the HTTP request travels as
//!   an [`api::Request`], the reply is an [`api::Response`].
//! - `rpc` — same resolution; the JSON body (or the query for GET) is the request, the reply
//!   is the JSON response.
//! - `proxy` — reverse proxy (HTTP and WebSocket) to a node's registered HTTP address.
//! - `event` — `POST /event/{topic}` publishes the body.
//!
//! ```no_run
//! # #[actix::main] async fn main() -> std::io::Result<()> {
//! use micro::gateway::{Gateway, GatewayConfig};
//! let client = micro::Client::builder().name("go.micro.api").transport("nats://127.0.0.1:4222")
//!     .connect().await.map_err(std::io::Error::other)?;
//! Gateway::new(client, GatewayConfig::default()).run().await
//! # }
//! ```

use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::{guard, web, App, HttpMessage, HttpRequest, HttpResponse, HttpServer};
use bytes::Bytes;

use crate::api;
use crate::broker::PublishOptions;
use crate::client::{CallOptions, Client};
use crate::codec::Codec;
use crate::message::{new_id, TraceParent};
use crate::status::Code;
use crate::subject;

mod checks;
mod config;
mod error;
#[cfg(feature = "auth")]
mod lockdown;
mod probes;
mod proxy;
pub mod resolve;
mod rpc;

#[cfg(feature = "fuzzing")]
pub(crate) use checks::check_path;
pub(crate) use checks::guard_and_tag;
#[cfg(feature = "sidecar")]
pub(crate) use checks::same_site_or_allowed;
pub use config::{GatewayConfig, HandlerKind};
pub use error::{GatewayError, GATEWAY_ID};
#[cfg(feature = "auth")]
#[cfg_attr(docsrs, doc(cfg(feature = "auth")))]
pub use lockdown::RateLimit;
pub use proxy::HTTP_ADDRESS_KEY;

/// What every gateway worker shares.
pub(crate) struct State {
    pub(crate) client: Client,
    pub(crate) config: GatewayConfig,
    #[cfg(feature = "auth")]
    pub(crate) guard: Option<Arc<lockdown::Guard>>,
    /// The configured `metadata_headers`, parsed once: looked up by a `&str`, a name is parsed
    /// (and allocated) on every lookup.
    pub(crate) metadata_headers: Vec<HeaderName>,
    /// Checks `/ready` requires to pass, besides the broker and the registry.
    pub(crate) health: Option<crate::health::Health>,
}

/// The gateway: a [`Client`] and a [`GatewayConfig`]. Mount it in your own actix-web app with
/// [`configure`](Self::configure), or serve it with [`run`](Self::run).
///
/// ```
/// use actix_web::test;
/// use micro::gateway::{Gateway, GatewayConfig};
/// use micro::prelude::*;
///
/// # #[micro::main] async fn main() -> micro::Result<()> {
/// let svc = Service::builder("go.micro.srv.greeter")
///     .transport("memory://gateway-type-doc")
///     .handle("Say.Hello", |Req(v): Req<serde_json::Value>| async move { Ok::<_, Status>(v) })
///     .start()
///     .await?;
/// let config = GatewayConfig::default().rpc_namespaces(["go.micro.srv"]);
/// let gateway = Gateway::new(Client::connect("memory://gateway-type-doc").await?, config);
/// let app = test::init_service(gateway.app()).await;
/// let body = serde_json::json!({"service": "go.micro.srv.greeter", "endpoint": "Say.Hello", "request": {"name": "John"}});
/// let rsp: serde_json::Value =
///     test::call_and_read_body_json(&app, test::TestRequest::post().uri("/rpc").set_json(&body).to_request()).await;
/// assert_eq!(rsp, serde_json::json!({"name": "John"}));
/// svc.stop().await
/// # }
/// ```
#[derive(Clone)]
pub struct Gateway {
    state: Arc<State>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("config", &self.state.config).finish()
    }
}

impl Gateway {
    /// A gateway calling services with `client`.
    pub fn new(client: Client, config: GatewayConfig) -> Gateway {
        #[cfg(feature = "auth")]
        let guard = Some(Arc::new(lockdown::Guard::new(config.auth.clone(), &config.rate_limit)));
        #[cfg(feature = "prometheus")]
        if let Err(e) = crate::metrics::prometheus::install() {
            tracing::warn!(error = %e, "/metrics will not serve the toolkit's metrics");
        }
        Gateway {
            state: Arc::new(State {
                client,
                metadata_headers: parsed_names(&config.metadata_headers),
                config,
                health: None,
                #[cfg(feature = "auth")]
                guard,
            }),
        }
    }

    /// Health checks `/ready` requires to pass (started ones: [`HealthChecks::start`]).
    ///
    /// ```
    /// # #[micro::main] async fn main() -> micro::Result<()> {
    /// use micro::gateway::{Gateway, GatewayConfig};
    /// use micro::health::HealthChecks;
    /// let checks = HealthChecks::new().check("upstream", || async { Ok::<_, String>(()) }).start().await;
    /// let client = micro::Client::connect("memory://gateway-health-doc").await?;
    /// let gateway = Gateway::new(client, GatewayConfig::default()).health(checks);
    /// # let _ = gateway; Ok(()) }
    /// ```
    ///
    /// [`HealthChecks::start`]: crate::health::HealthChecks::start
    pub fn health(self, health: crate::health::Health) -> Gateway {
        let s = &self.state;
        let state = State {
            client: s.client.clone(),
            config: s.config.clone(),
            metadata_headers: s.metadata_headers.clone(),
            health: Some(health),
            #[cfg(feature = "auth")]
            guard: s.guard.clone(),
        };
        Gateway { state: Arc::new(state) }
    }

    /// Adds the gateway's routes, limits and middleware-free handlers to an app. The checks made
    /// from the request head (declared length, cross-site origin, path tricks) and the body
    /// timeout come with [`app`](Self::app), not with this.
    pub fn configure(&self, cfg: &mut web::ServiceConfig) {
        self.configure_routes(cfg);
        cfg.default_service(handler(self.state.config.handler));
    }

    /// The routes of [`configure`](Self::configure) without the handler for every other path:
    /// `/health`, `/rpc` and the prefix scopes, for an app that serves other paths itself.
    pub(crate) fn configure_routes(&self, cfg: &mut web::ServiceConfig) {
        let config = &self.state.config;
        let limit = config.max_body;
        cfg.app_data(web::Data::from(self.state.clone()))
            .app_data(web::PayloadConfig::new(limit))
            .route("/health", web::get().to(probes::health))
            .route("/ready", web::get().to(probes::ready));
        #[cfg(feature = "prometheus")]
        cfg.route("/metrics", web::get().to(probes::metrics));
        if let Some(p) = &config.rpc_path {
            // Method checks by hand: actix-web's method guards record themselves in the
            // request's extensions on every check (two allocations per request and route).
            let form_post = guard::fn_guard(|ctx| {
                ctx.head().method == Method::POST
                    && ctx
                        .head()
                        .headers()
                        .get(header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"))
            });
            let post = guard::fn_guard(|ctx| ctx.head().method == Method::POST);
            cfg.service(
                web::resource(p.as_str())
                    .app_data(web::FormConfig::default().limit(limit).error_handler(rpc::form_error))
                    .route(web::route().guard(form_post).to(rpc::rpc_form))
                    .route(web::route().guard(post).to(rpc::rpc_json))
                    .default_service(web::to(rpc::rpc_other_method)),
            );
        }
        for (prefix, kind) in config.scopes() {
            cfg.service(web::scope(&prefix).default_service(handler(kind)));
        }
    }

    /// The whole app: routes plus path guard, request ids, CORS.
    pub fn app(
        &self,
    ) -> App<
        impl actix_web::dev::ServiceFactory<
            ServiceRequest,
            Config = (),
            Response = ServiceResponse<impl actix_web::body::MessageBody>,
            Error = actix_web::Error,
            InitError = (),
        >,
    > {
        let gateway = self.clone();
        let app = App::new();
        // Without credentials to check or limits to keep, the guard is not in the way at all.
        #[cfg(feature = "auth")]
        let app = app.wrap(actix_web::middleware::Condition::new(
            self.state.guard.as_ref().is_some_and(|g| !g.is_idle()),
            lockdown::Admit,
        ));
        app.wrap_fn(guard_and_tag).wrap(cors(&self.state.config.cors)).configure(move |cfg| gateway.configure(cfg))
    }

    /// Serves on the configured address until SIGINT/SIGTERM, then drains open requests.
    ///
    /// Auth follows the socket: on a loopback address the gateway may run open, on any other
    /// it refuses to start without auth ([`GatewayConfig::auth`], feature `auth`).
    pub async fn run(self) -> std::io::Result<()> {
        let config = self.state.config.clone();
        check_exposure(&config)?;
        let gateway = self.clone();
        let listen =
            Listen { address: config.address, workers: config.workers, shutdown_timeout: config.shutdown_timeout };
        let server = serve_until_signal(move || gateway.app(), listen, "gateway", || {})?;
        tracing::info!(address = %config.address, handler = ?config.handler, namespace = %config.namespace, "gateway listening");
        server.await
    }
}

/// Refuses an open gateway on an address other than loopback.
pub(crate) fn check_exposure(config: &GatewayConfig) -> std::io::Result<()> {
    if config.address.ip().is_loopback() || config.has_auth() {
        return Ok(());
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!(
            "refusing to serve the gateway on {} without auth: anyone who can reach it could call every \
             service. Configure auth (micro api --auth-id/--auth-secret, GatewayConfig::auth) or listen \
             on a loopback address such as 127.0.0.1",
            config.address
        ),
    ))
}

pub(crate) fn cors(origins: &[String]) -> actix_cors::Cors {
    let base = actix_cors::Cors::default()
        .allowed_methods(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
        .allowed_headers([header::CONTENT_TYPE, header::AUTHORIZATION, header::ACCEPT])
        .allowed_header("x-request-id")
        .expose_headers(["x-request-id"])
        .max_age(3600);
    if origins.iter().any(|o| o == "*") {
        // Any origin, and therefore never with credentials.
        return base.allow_any_origin();
    }
    if origins.is_empty() {
        // Same-origin only: no cross-origin caller is allowed anything.
        return base;
    }
    origins.iter().fold(base, |c, o| c.allowed_origin(o)).supports_credentials()
}

/// Where and how an HTTP front end listens.
pub(crate) struct Listen {
    pub(crate) address: std::net::SocketAddr,
    /// 0: actix-web's default (one per core).
    pub(crate) workers: usize,
    pub(crate) shutdown_timeout: Duration,
}

/// Binds an HTTP server (the gateway's, the dashboard's) with the toolkit's limits and drains it on
/// SIGINT as on SIGTERM (actix-web would stop at once on SIGINT): `before_stop` runs first, then
/// open requests finish within the shutdown timeout. `what` names it in the logs.
pub(crate) fn serve_until_signal<F, T, B>(
    factory: F,
    listen: Listen,
    what: &'static str,
    before_stop: impl FnOnce() + 'static,
) -> std::io::Result<actix_web::dev::Server>
where
    F: Fn() -> App<T> + Send + Clone + 'static,
    T: actix_web::dev::ServiceFactory<
            ServiceRequest,
            Config = (),
            Response = ServiceResponse<B>,
            Error = actix_web::Error,
            InitError = (),
        > + 'static,
    B: actix_web::body::MessageBody + 'static,
{
    let mut server = HttpServer::new(factory)
        .shutdown_timeout(listen.shutdown_timeout.as_secs())
        .client_request_timeout(Duration::from_secs(10))
        .max_connection_rate(1024)
        .disable_signals();
    if listen.workers > 0 {
        server = server.workers(listen.workers);
    }
    let server = server.bind(listen.address)?.run();
    let handle = server.handle();
    actix_rt::spawn(async move {
        if let Err(e) = crate::service::shutdown_signal().await {
            tracing::error!(error = %e, "the {what} cannot listen for SIGINT/SIGTERM");
            return;
        }
        tracing::info!("{what} stopping: finishing open requests");
        before_stop();
        handle.stop(true).await;
    });
    Ok(server)
}

/// Options for one RPC (or publish) made on behalf of an HTTP request: the gateway timeout as
/// the deadline, the request id as the call's id (`Micro-Id`), allowlisted headers as
/// metadata, the HTTP request's trace continued ([`trace_of`]).
fn call_options(state: &State, req: &HttpRequest) -> CallOptions {
    let mut opts = CallOptions::new().timeout(state.config.timeout);
    opts.trace = trace_of(req).map(Box::new);
    opts.id = checks::request_id(req).map(str::to_string);
    for name in &state.metadata_headers {
        if let Some(v) = req.headers().get(name).and_then(|v| v.to_str().ok()) {
            opts = opts.metadata(name.as_str(), v);
        }
    }
    #[cfg(feature = "auth")]
    let opts = match lockdown::forwarded_token(req) {
        Some(token) => opts.token(token),
        None => opts,
    };
    opts
}

/// The trace the calls and publishes made for an HTTP request continue: the gateway's span
/// when one records it (`guard_and_tag`), else the caller's `traceparent`; with the caller's
/// `tracestate`, which belongs to its `traceparent`: without a valid one it is dropped (W3C
/// Trace Context).
fn trace_of(req: &HttpRequest) -> Option<(TraceParent, Option<String>)> {
    // `guard_and_tag` read the caller's traceparent already when it made the span.
    let (trace, continued) = match req.extensions().get::<checks::HttpTrace>() {
        Some(t) => (t.own, t.continued),
        None => (req.headers().get(&TRACEPARENT).and_then(|v| v.to_str().ok()).and_then(TraceParent::parse)?, true),
    };
    let state = continued.then(|| req.headers().get(&TRACESTATE)?.to_str().ok().map(str::to_string)).flatten();
    Some((trace, state))
}

// Looked up by ready names: by a `&str` every lookup would parse (and allocate) the name.
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Header names as configured, those that are valid.
fn parsed_names(names: &[String]) -> Vec<HeaderName> {
    names.iter().filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok()).collect()
}

fn json_response(body: Bytes) -> HttpResponse {
    HttpResponse::Ok().insert_header((header::CONTENT_TYPE, HeaderValue::from_static("application/json"))).body(body)
}

/// Checks that a body is JSON, pointing at the position when it is not.
fn require_json(body: &[u8]) -> Result<(), GatewayError> {
    serde_json::from_slice::<serde::de::IgnoredAny>(body)
        .map(|_| ())
        .map_err(|e| GatewayError::bad_request(format!("request body is not valid JSON: {e}")))
}

pub(crate) fn valid_name(kind: &str, s: &str) -> Result<(), GatewayError> {
    // One pass: allowed bytes, and no dot first, last or after another dot.
    let mut previous = b'.';
    let ok = !s.is_empty()
        && s.len() <= 255
        && !s.ends_with('.')
        && s.bytes().all(|b| {
            let allowed = b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && previous != b'.');
            previous = b;
            allowed
        });
    if ok {
        Ok(())
    } else {
        Err(GatewayError::bad_request(format!("invalid {kind} name {s:?}: use letters, digits, '.', '-' and '_'")))
    }
}

/// 413, as every handler answers a body over the limit.
pub(crate) fn too_large(limit: usize) -> GatewayError {
    GatewayError::new(Code::PAYLOAD_TOO_LARGE, format!("request body exceeds {limit} bytes"))
}

/// A body that could not be read, as every handler answers it: over the limit 413, not
/// arrived in time 408, anything else 400.
pub(crate) fn payload_error(e: &PayloadError, limit: usize) -> GatewayError {
    match e {
        PayloadError::Overflow => too_large(limit),
        PayloadError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            GatewayError::http(StatusCode::REQUEST_TIMEOUT, "the request body did not arrive in time")
        }
        e => GatewayError::bad_request(format!("cannot read the request body: {e}")),
    }
}

/// The body limit of the gateway serving `req`.
fn limit_of(req: &HttpRequest) -> usize {
    req.app_data::<web::Data<State>>().map_or(usize::MAX, |s| s.config.max_body)
}

/// The whole request body: past the gateway's limit a 413, a body that cannot be read 400 (or
/// 408 when it did not arrive in time, see `checks::bounded`). A body that arrives in one
/// piece, as most do, is taken as it came: no copy.
async fn read_body(mut payload: web::Payload, state: &State) -> Result<Bytes, GatewayError> {
    use futures::StreamExt;
    let limit = state.config.max_body;
    let mut body = Bytes::new();
    let mut joined: Option<bytes::BytesMut> = None;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| payload_error(&e, limit))?;
        let so_far = joined.as_ref().map_or(body.len(), |j| j.len());
        if so_far + chunk.len() > limit {
            return Err(too_large(limit));
        }
        match &mut joined {
            Some(j) => j.extend_from_slice(&chunk),
            None if body.is_empty() => body = chunk,
            None => {
                let mut j = bytes::BytesMut::with_capacity(so_far + chunk.len());
                j.extend_from_slice(&body);
                j.extend_from_slice(&chunk);
                joined = Some(j);
            }
        }
    }
    Ok(joined.map_or(body, bytes::BytesMut::freeze))
}

/// Every `key=value` pair of a query string, in order, repeats included.
fn query_pairs(req: &HttpRequest) -> Vec<(String, String)> {
    web::Query::<Vec<(String, String)>>::from_query(req.query_string()).map(|q| q.into_inner()).unwrap_or_default()
}

pub(crate) fn pairs(items: impl IntoIterator<Item = (String, String)>) -> api::Pairs {
    let mut out = api::Pairs::new();
    for (k, v) in items {
        out.entry(k.clone()).or_insert_with(|| api::Pair { key: k, values: Vec::new() }).values.push(v);
    }
    out
}

/// The handler for a path prefix (or for every path no prefix claims). Each resolves the part
/// of the path its scope left.
fn handler(kind: HandlerKind) -> actix_web::Route {
    match kind {
        HandlerKind::Api => web::to(api_handler),
        HandlerKind::Rpc => web::to(rpc_handler),
        HandlerKind::Proxy => web::to(proxy::forward),
        HandlerKind::Event => web::to(event_handler),
    }
}

/// The service and endpoint the rest of the path names, and the body.
async fn resolved(
    state: &State,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<(resolve::Route, Bytes), GatewayError> {
    let body = read_body(payload, state).await?;
    let route = resolve::resolve(&state.config.namespace, req.match_info().unprocessed())
        .map_err(|e| GatewayError::bad_request(e.0))?;
    state.config.may_call(&route.service, &route.endpoint, false).map_err(|e| GatewayError::new(Code::FORBIDDEN, e))?;
    #[cfg(feature = "auth")]
    lockdown::authorize(state, req, &route.service, &route.endpoint)?;
    Ok((route, body))
}

async fn api_handler(
    state: web::Data<State>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, GatewayError> {
    let (route, body) = resolved(&state, &req, payload).await?;
    let is_form = req.content_type() == "application/x-www-form-urlencoded";
    let post = if is_form {
        let fields = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body)
            .map_err(|e| GatewayError::bad_request(format!("invalid form body: {e}")))?;
        pairs(fields)
    } else {
        api::Pairs::new()
    };
    let request = api::Request {
        method: req.method().to_string(),
        path: req.path().to_string(),
        header: pairs(
            req.headers().iter().filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_string(), v.to_string()))),
        ),
        get: pairs(query_pairs(&req)),
        post,
        body: String::from_utf8_lossy(&body).into_owned(),
        url: req.uri().to_string(),
    };
    let encoded = Codec::MsgPack.encode(&request)?;
    let opts = call_options(&state, &req);
    let reply = state.client.call_raw(&route.service, &route.endpoint, encoded, Codec::MsgPack, opts).await?;
    let rsp = api_response(&reply, &route.service)?;
    let status = match rsp.status_code {
        0 => StatusCode::OK,
        n => u16::try_from(n)
            .ok()
            .and_then(|n| StatusCode::from_u16(n).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    };
    let mut out = HttpResponse::build(status);
    for pair in rsp.header.values() {
        let Ok(name) = HeaderName::from_bytes(pair.key.as_bytes()) else { continue };
        if proxy::is_hop_by_hop(&name) || name == header::CONTENT_LENGTH {
            continue;
        }
        for v in &pair.values {
            if let Ok(v) = HeaderValue::from_str(v) {
                out.append_header((name.clone(), v));
            }
        }
    }
    Ok(out.body(rsp.body))
}

/// The reply of an api service as an `api.Response`. Its fields all have defaults, so any map
/// would decode as one: a reply with other fields, or none, is not one (502).
fn api_response(reply: &crate::client::RawReply, service: &str) -> Result<api::Response, GatewayError> {
    let not_one = |why: String| {
        GatewayError::new(Code::BAD_GATEWAY, format!("{service} did not answer with an api.Response: {why}"))
    };
    let value: serde_json::Value = reply.decode().map_err(|e| not_one(e.to_string()))?;
    match value.as_object() {
        Some(fields) if fields.is_empty() => return Err(not_one("an empty map".into())),
        Some(fields) => {
            if let Some(other) = fields.keys().find(|k| !["statusCode", "header", "body"].contains(&k.as_str())) {
                return Err(not_one(format!("it has a field {other:?}")));
            }
        }
        None => return Err(not_one("not a map".into())),
    }
    serde_json::from_value(value).map_err(|e| not_one(e.to_string()))
}

async fn rpc_handler(
    state: web::Data<State>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, GatewayError> {
    let (route, body) = resolved(&state, &req, payload).await?;
    let request = if body.iter().all(u8::is_ascii_whitespace) {
        // No body (a GET): the query parameters are the request.
        let query = web::Query::<serde_json::Map<String, serde_json::Value>>::from_query(req.query_string())
            .map_err(|e| GatewayError::bad_request(format!("invalid query: {e}")))?;
        Bytes::from(serde_json::to_vec(&*query).unwrap_or_default())
    } else {
        require_json(&body)?;
        body
    };
    let opts = call_options(&state, &req);
    let reply = state.client.call_raw(&route.service, &route.endpoint, request, Codec::Json, opts).await?;
    Ok(json_response(reply.to_json()?))
}

async fn event_handler(
    state: web::Data<State>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, GatewayError> {
    if req.method() != Method::POST {
        return Err(GatewayError::new(Code::METHOD_NOT_ALLOWED, "publish events with POST"));
    }
    let body = read_body(payload, &state).await?;
    let topic = req.match_info().unprocessed().trim_matches('/').replace('/', ".");
    if !subject::is_valid(&topic, false) {
        return Err(GatewayError::bad_request(format!("invalid topic {topic:?}")));
    }
    require_json(&body)?;
    #[cfg(feature = "auth")]
    lockdown::authorize(&state, &req, &topic, "Publish")?;
    let opts = call_options(&state, &req);
    let id = new_id();
    let mut publish = PublishOptions::new().codec(Codec::Json).id(id.clone());
    publish.metadata = opts.metadata;
    // An event's own id is its `Micro-Id`: the HTTP request's id travels as metadata.
    if let Some(rid) = opts.id {
        publish.metadata.insert("x-request-id", rid);
    }
    let durable = query_pairs(&req).iter().any(|(k, v)| k == "durable" && matches!(v.as_str(), "" | "1" | "true"));
    if durable {
        publish = publish.durable();
    }
    publish.trace = opts.trace.map(|t| t.0);
    state.client.broker().publish_raw(&topic, body, Codec::Json, publish).await?;
    if durable {
        // Stored by the broker: the event is not going to be lost.
        return Ok(HttpResponse::Ok().json(serde_json::json!({"id": id, "topic": topic, "stored": true})));
    }
    Ok(HttpResponse::Accepted().json(serde_json::json!({"id": id, "topic": topic})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_tricks_are_rejected() {
        for bad in ["/a/../b", "/a/%2e%2e/b", "/a%2fb", "/a/%252e", "/a%00", "/a/./b", "/a\\b"] {
            assert!(checks::check_path(bad).is_err(), "{bad}");
        }
        assert!(checks::check_path("/greeter/say/hello").is_ok());
    }

    #[actix_rt::test]
    async fn route_prefixes_pick_handlers() {
        use actix_web::test;
        let config = GatewayConfig::default().route("/web", HandlerKind::Proxy).route("/web/api", HandlerKind::Rpc);
        let order: Vec<String> = config.scopes().into_iter().map(|(p, _)| p).collect();
        assert_eq!(order, ["/web/api", "/web", "/event"], "the most specific prefix first");
        let client = Client::connect(&format!("memory://{}", new_id())).await.unwrap();
        let app = test::init_service(Gateway::new(client, config).app()).await;
        let send = |req: test::TestRequest| {
            let req = req.to_request();
            let app = &app;
            async move {
                let rsp = test::call_service(app, req).await;
                let status = rsp.status().as_u16();
                let body: serde_json::Value = test::read_body_json(rsp).await;
                (status, body["detail"].as_str().unwrap_or_default().to_string())
            }
        };
        // Proxy: the service has no HTTP address.
        let (status, detail) = send(test::TestRequest::get().uri("/web/dash")).await;
        assert_eq!(status, 503, "{detail}");
        // Rpc, the longer prefix: the body must be JSON.
        let (status, detail) = send(test::TestRequest::post().uri("/web/api/x/y").set_payload("{not json")).await;
        assert_eq!((status, detail.contains("not valid JSON")), (400, true), "{detail}");
        // Event: publishing needs POST.
        let (status, _) = send(test::TestRequest::get().uri("/event/user.login")).await;
        assert_eq!(status, 405);
        // Api: a prefix only matches whole segments, and the api handler takes any body.
        let (status, detail) = send(test::TestRequest::post().uri("/webby/say").set_payload("{not json")).await;
        assert_eq!(status, 503, "{detail}");
    }
}
