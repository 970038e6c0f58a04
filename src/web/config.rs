//! [`WebConfig`]: where the dashboard listens, which services it proxies, whether it may act.

use std::net::SocketAddr;
use std::time::Duration;

use crate::gateway::{GatewayConfig, HandlerKind};

/// Dashboard settings. Every field has a default; `micro web` fills them from flags and
/// `MICRO_WEB_*` variables.
///
/// The call form and the event console act on the system (they call endpoints and publish
/// events), so they are on only when the dashboard listens on a loopback address, or when
/// [`allow_actions`](Self::allow_actions) turns them on.
///
/// ```
/// use std::time::Duration;
/// use micro::web::WebConfig;
/// let c = WebConfig::default()
///     .address("127.0.0.1:8082".parse().unwrap())
///     .namespace("go.micro.web")
///     .timeout(Duration::from_secs(5));
/// assert!(c.actions_enabled(), "loopback: the call form and the console are on");
/// let open = WebConfig::default().address("0.0.0.0:8082".parse().unwrap());
/// assert!(!open.actions_enabled());
/// assert!(open.allow_actions(true).actions_enabled());
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WebConfig {
    pub(crate) address: SocketAddr,
    pub(crate) namespace: String,
    pub(crate) allow_actions: bool,
    pub(crate) timeout: Duration,
    pub(crate) max_body: usize,
    pub(crate) workers: usize,
    pub(crate) shutdown_timeout: Duration,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            address: ([127, 0, 0, 1], 8082).into(),
            namespace: "go.micro.web".into(),
            allow_actions: false,
            timeout: Duration::from_secs(10),
            max_body: 1024 * 1024,
            workers: 0,
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

impl WebConfig {
    /// Listen address (default `127.0.0.1:8082`).
    pub fn address(mut self, a: SocketAddr) -> Self {
        self.address = a;
        self
    }

    /// Namespace of the web services `/{name}/...` proxies to (default `go.micro.web`).
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = ns.into();
        self
    }

    /// Turns the call form and the event console on even on a non-loopback address (default
    /// `false`: they are on only on loopback). Anyone who reaches the dashboard can then call
    /// any endpoint and publish any event.
    pub fn allow_actions(mut self, yes: bool) -> Self {
        self.allow_actions = yes;
        self
    }

    /// Time a request may take: the longest call the form may wait for, and the proxy's
    /// timeout (default 10 s).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Largest request body; larger ones get 413 (default 1 MiB).
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
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

    /// Whether the call form and the event console are on: on a loopback address, or when
    /// [`allow_actions`](Self::allow_actions) says so.
    pub fn actions_enabled(&self) -> bool {
        self.allow_actions || self.address.ip().is_loopback()
    }

    /// The gateway that serves the proxy, with the same limits, checks and error bodies.
    pub(super) fn gateway(&self) -> GatewayConfig {
        GatewayConfig::default()
            .address(self.address)
            .namespace(&self.namespace)
            .handler(HandlerKind::Proxy)
            .rpc_path(None)
            .event_prefix(None)
            .timeout(self.timeout)
            .max_body(self.max_body)
            .workers(self.workers)
            .shutdown_timeout(self.shutdown_timeout)
    }
}
