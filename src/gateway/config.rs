//! [`GatewayConfig`] and [`HandlerKind`]: what the gateway serves and how.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

/// How requests under a path prefix are handled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandlerKind {
    /// Path to service + endpoint; `api.Request` in, `api.Response` out (default).
    #[default]
    Api,
    /// Path to service + endpoint; JSON body (or query) in, JSON reply out.
    Rpc,
    /// Reverse proxy to the node's HTTP address (node metadata `http`).
    Proxy,
    /// Publish the body as an event on the topic the path names.
    Event,
}

impl FromStr for HandlerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "api" => Ok(HandlerKind::Api),
            "rpc" => Ok(HandlerKind::Rpc),
            "proxy" | "http" | "web" => Ok(HandlerKind::Proxy),
            "event" => Ok(HandlerKind::Event),
            other => Err(format!("unknown handler {other:?}: use api, rpc, proxy or event")),
        }
    }
}

/// Gateway settings. Every field has a default; `micro api` fills them from flags and
/// `MICRO_*` variables.
///
/// ```
/// use std::time::Duration;
/// use micro::gateway::{GatewayConfig, HandlerKind};
/// let c = GatewayConfig::default()
///     .address("127.0.0.1:8080".parse().unwrap())
///     .namespace("go.micro.api")
///     .handler(HandlerKind::Api)
///     .route("/rpcapi", HandlerKind::Rpc)
///     .timeout(Duration::from_secs(5))
///     .cors(["https://app.example.com"]);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct GatewayConfig {
    pub(crate) address: SocketAddr,
    pub(crate) namespace: String,
    pub(crate) handler: HandlerKind,
    pub(crate) routes: Vec<(String, HandlerKind)>,
    pub(crate) rpc_path: Option<String>,
    pub(crate) event_prefix: Option<String>,
    pub(crate) timeout: Duration,
    pub(crate) max_body: usize,
    pub(crate) cors: Vec<String>,
    pub(crate) metadata_headers: Vec<String>,
    pub(crate) workers: usize,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) rpc_namespaces: Vec<String>,
    pub(crate) expose_debug: bool,
    /// Paths whose WebSocket upgrades the app serves itself: their payload is not bounded.
    pub(crate) websocket_paths: Vec<String>,
    /// Tokens, API keys and rules (feature `auth`).
    #[cfg(feature = "auth")]
    pub(crate) auth: Option<crate::auth::AuthClient>,
    /// Rate limits (feature `auth`).
    #[cfg(feature = "auth")]
    pub(crate) rate_limit: super::RateLimit,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            address: ([127, 0, 0, 1], 8080).into(),
            namespace: "go.micro.api".into(),
            handler: HandlerKind::Api,
            routes: Vec::new(),
            rpc_path: Some("/rpc".into()),
            event_prefix: Some("/event".into()),
            timeout: Duration::from_secs(10),
            max_body: 1024 * 1024,
            cors: Vec::new(),
            metadata_headers: Vec::new(),
            workers: 0,
            shutdown_timeout: Duration::from_secs(30),
            rpc_namespaces: Vec::new(),
            expose_debug: false,
            websocket_paths: Vec::new(),
            #[cfg(feature = "auth")]
            auth: None,
            #[cfg(feature = "auth")]
            rate_limit: Default::default(),
        }
    }
}

impl GatewayConfig {
    /// Listen address (default `127.0.0.1:8080`).
    pub fn address(mut self, a: SocketAddr) -> Self {
        self.address = a;
        self
    }

    /// Namespace of resolved services (default `go.micro.api`).
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = ns.into();
        self
    }

    /// The handler for paths no route prefix claims (default `api`).
    pub fn handler(mut self, h: HandlerKind) -> Self {
        self.handler = h;
        self
    }

    /// A handler for a path prefix; the prefix is stripped before resolution.
    pub fn route(mut self, prefix: impl Into<String>, h: HandlerKind) -> Self {
        let p = prefix.into();
        self.routes.push((format!("/{}", p.trim_matches('/')), h));
        self
    }

    /// The `/rpc` endpoint's path, or `None` to turn it off.
    pub fn rpc_path(mut self, p: Option<String>) -> Self {
        self.rpc_path = p;
        self
    }

    /// The event publishing prefix (default `/event`), or `None` to turn it off.
    pub fn event_prefix(mut self, p: Option<String>) -> Self {
        self.event_prefix = p;
        self
    }

    /// Time a request may take; it becomes the RPC deadline (default 10 s).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Largest request body; larger ones get 413 without calling anything (default 1 MiB).
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Origins allowed for CORS (none by default; `*` allows any, without credentials).
    pub fn cors<I: IntoIterator<Item = S>, S: Into<String>>(mut self, origins: I) -> Self {
        self.cors = origins.into_iter().map(Into::into).collect();
        self
    }

    /// HTTP headers copied into RPC metadata (besides `X-Request-Id`); an allowlist.
    pub fn metadata_headers<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.metadata_headers = names.into_iter().map(|s| s.into().to_ascii_lowercase()).collect();
        self
    }

    /// HTTP worker threads (default: one per core).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// How long shutdown waits for open requests (default 30 s).
    pub fn shutdown_timeout(mut self, d: Duration) -> Self {
        self.shutdown_timeout = d;
        self
    }

    /// Namespaces `/rpc` may call besides the gateway's own [`namespace`](Self::namespace)
    /// (none by default): a service is in a namespace when its name is the namespace or starts
    /// with it and a dot. `*` lets `/rpc` call any service. The path handlers only ever reach
    /// the gateway's namespace.
    pub fn rpc_namespaces<I: IntoIterator<Item = S>, S: Into<String>>(mut self, namespaces: I) -> Self {
        self.rpc_namespaces = namespaces.into_iter().map(Into::into).collect();
        self
    }

    /// Whether HTTP callers may reach the `Debug.*` endpoints (node ids, memory, counters) of
    /// the services (default `false`: they get 403).
    pub fn expose_debug(mut self, yes: bool) -> Self {
        self.expose_debug = yes;
        self
    }

    /// Locks the gateway down (feature `auth`): callers present a bearer token or an API key
    /// (`X-Api-Key`, or `Authorization: Bearer mk_...`, exchanged with the auth service for a
    /// token), every call is checked against `auth`'s rules (401/403; deny by default;
    /// `Debug.*` only by a rule naming `Debug` explicitly, whatever
    /// [`expose_debug`](Self::expose_debug) says) and carries the caller's token on to the
    /// service. Required to serve on an address other than loopback.
    #[cfg(feature = "auth")]
    #[cfg_attr(docsrs, doc(cfg(feature = "auth")))]
    pub fn auth(mut self, auth: crate::auth::AuthClient) -> Self {
        self.auth = Some(auth);
        self
    }

    /// Rate limits per client address and per credential (feature `auth`; none by default).
    #[cfg(feature = "auth")]
    #[cfg_attr(docsrs, doc(cfg(feature = "auth")))]
    pub fn rate_limit(mut self, limits: super::RateLimit) -> Self {
        self.rate_limit = limits;
        self
    }

    /// True when the gateway checks tokens.
    pub(crate) fn has_auth(&self) -> bool {
        #[cfg(feature = "auth")]
        return self.auth.is_some();
        #[cfg(not(feature = "auth"))]
        false
    }

    /// Whether an HTTP caller may call this endpoint of this service: the service in the
    /// gateway's namespace (or, through `/rpc`, in one of the `rpc_namespaces`), and no
    /// `Debug.*` endpoint unless exposed.
    pub(super) fn may_call(&self, service: &str, endpoint: &str, via_rpc: bool) -> Result<(), String> {
        let debug = endpoint.split('.').next().is_some_and(|h| h.eq_ignore_ascii_case("debug"));
        // With auth the rules decide `Debug.*` too (an explicit rule is needed).
        if debug && !self.expose_debug && !self.has_auth() {
            return Err(format!("{endpoint} is not served to HTTP callers"));
        }
        let within = |ns: &str| {
            ns == "*" || ns.is_empty() || service == ns || service.strip_prefix(ns).is_some_and(|r| r.starts_with('.'))
        };
        let extra = if via_rpc { &self.rpc_namespaces[..] } else { &[] };
        if within(&self.namespace) || extra.iter().any(|ns| within(ns)) {
            return Ok(());
        }
        Err(format!("{service} is outside the namespaces this gateway serves"))
    }

    /// The handler a path goes to (`None`: `/rpc` or `/health`).
    pub(super) fn handler_at(&self, path: &str) -> Option<HandlerKind> {
        if self.rpc_path.as_deref() == Some(path) || path == "/health" {
            return None;
        }
        let claims = |p: &str| path == p || path.strip_prefix(p).is_some_and(|r| r.starts_with('/'));
        Some(self.scopes().into_iter().find(|(p, _)| claims(p)).map_or(self.handler, |(_, h)| h))
    }

    /// The prefix scopes in the order they must be tried: route prefixes longest first (the
    /// most specific claims a path), then the event prefix.
    pub(super) fn scopes(&self) -> Vec<(String, HandlerKind)> {
        let mut scopes = self.routes.clone();
        scopes.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
        let event = self.event_prefix.as_deref().map(|p| (format!("/{}", p.trim_matches('/')), HandlerKind::Event));
        scopes.extend(event);
        scopes
    }
}
