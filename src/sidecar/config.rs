//! [`SidecarConfig`]: which app, which service it becomes, and how the sidecar serves it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::gateway::GatewayConfig;
use crate::subject;

/// Sidecar settings. Only the service name and the app URL have no default; `micro sidecar`
/// fills the rest from flags and `MICRO_SIDECAR_*` variables.
///
/// ```
/// use std::time::Duration;
/// use micro::sidecar::SidecarConfig;
/// let c = SidecarConfig::new("go.micro.srv.py-greeter", "http://127.0.0.1:5000")
///     .health("/health", Duration::from_secs(2))
///     .endpoint("Say.Hello")
///     .subscribe_durable("order.>", "/events/order")
///     .token("s3cret");
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct SidecarConfig {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) metadata: BTreeMap<String, String>,
    pub(crate) app: String,
    pub(crate) health: Option<String>,
    pub(crate) health_interval: Duration,
    pub(crate) endpoints: Vec<String>,
    pub(crate) durable: Vec<(String, String)>,
    pub(crate) durable_attempts: u32,
    pub(crate) durable_backoff: (Duration, Duration),
    pub(crate) durable_expire: Option<Duration>,
    pub(crate) transport: String,
    pub(crate) address: SocketAddr,
    pub(crate) token: Option<String>,
    pub(crate) origins: Vec<String>,
    pub(crate) timeout: Duration,
    pub(crate) max_body: usize,
    pub(crate) workers: usize,
}

impl std::fmt::Debug for SidecarConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SidecarConfig")
            .field("name", &self.name)
            .field("app", &self.app)
            .field("health", &self.health)
            .field("endpoints", &self.endpoints)
            .field("durable", &self.durable)
            .field("transport", &crate::transport::redact(&self.transport))
            .field("address", &self.address)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

impl SidecarConfig {
    /// The app at `app` (its base URL, `http://127.0.0.1:5000`) served as the service `name`.
    pub fn new(name: impl Into<String>, app: impl Into<String>) -> SidecarConfig {
        SidecarConfig {
            name: name.into(),
            version: "latest".into(),
            metadata: BTreeMap::new(),
            app: app.into().trim_end_matches('/').to_string(),
            health: None,
            health_interval: Duration::from_secs(5),
            endpoints: Vec::new(),
            durable: Vec::new(),
            durable_attempts: 5,
            durable_backoff: (Duration::from_secs(1), Duration::from_secs(60)),
            durable_expire: None,
            transport: crate::transport::resolve_url(None),
            address: ([127, 0, 0, 1], 8081).into(),
            token: None,
            origins: Vec::new(),
            timeout: Duration::from_secs(10),
            max_body: 1024 * 1024,
            workers: 1,
        }
    }

    /// The version announced in the registry (default `latest`; a `.well-known/micro`
    /// document's version wins).
    pub fn version(mut self, v: impl Into<String>) -> Self {
        self.version = v.into();
        self
    }

    /// A node metadata label.
    pub fn metadata(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.metadata.insert(k.into(), v.into());
        self
    }

    /// The app's health path (`/health`) and how often it is asked (default: not checked, the
    /// service stays registered while the sidecar runs; interval 5 s). A failing check (no
    /// 2xx within the interval) deregisters the service, a passing one registers it again.
    pub fn health(mut self, path: impl Into<String>, every: Duration) -> Self {
        self.health = Some(path.into());
        self.health_interval = every.max(Duration::from_millis(50));
        self
    }

    /// An endpoint the app serves (`Say.Hello`, repeatable). With none, the sidecar reads them
    /// from `GET {app}/.well-known/micro`.
    pub fn endpoint(mut self, name: impl Into<String>) -> Self {
        self.endpoints.push(name.into());
        self
    }

    /// Delivers the events of `topic` (a pattern: `order.>`) to `POST {app}{path}` in a durable
    /// group named after the service: a 2xx acknowledges, anything else retries or
    /// dead-letters as [`ServiceBuilder::subscribe_durable`](crate::ServiceBuilder::subscribe_durable) does.
    pub fn subscribe_durable(mut self, topic: impl Into<String>, path: impl Into<String>) -> Self {
        self.durable.push((topic.into(), path.into()));
        self
    }

    /// Deliveries of a durable event before it is dead-lettered (default 5).
    pub fn durable_attempts(mut self, n: u32) -> Self {
        self.durable_attempts = n.max(1);
        self
    }

    /// Redelivery backoff of durable events, from `min` doubling up to `max` (default 1 s to 60 s).
    pub fn durable_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.durable_backoff = (min, max.max(min));
        self
    }

    /// How long the broker keeps the durable group once the sidecar is gone (default: the
    /// broker's retention, see [`SubscribeOptions::expire_after`](crate::SubscribeOptions::expire_after)).
    pub fn durable_expire_after(mut self, d: Duration) -> Self {
        self.durable_expire = Some(d);
        self
    }

    /// The transport URL (default: `MICRO_TRANSPORT`, else `memory://`).
    pub fn transport(mut self, url: impl Into<String>) -> Self {
        self.transport = url.into();
        self
    }

    /// Where the app-facing HTTP API listens (default `127.0.0.1:8081`; port 0 picks one).
    pub fn address(mut self, a: SocketAddr) -> Self {
        self.address = a;
        self
    }

    /// A shared token: every request to the HTTP API must carry `Authorization: Bearer <token>`
    /// (default: none).
    pub fn token(mut self, t: impl Into<String>) -> Self {
        self.token = Some(t.into()).filter(|t| !t.is_empty());
        self
    }

    /// Browser origins allowed to call the HTTP API and open `/subscribe` (none by default:
    /// only the sidecar's own origin and callers that are not browsers).
    pub fn origins<I: IntoIterator<Item = S>, S: Into<String>>(mut self, origins: I) -> Self {
        self.origins = origins.into_iter().map(Into::into).collect();
        self
    }

    /// Time a call may take either way: the app's answer to a forwarded request, and an
    /// app's `/rpc` call (default 10 s).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Largest request body the HTTP API takes (default 1 MiB).
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// HTTP worker threads of the app-facing API (default 1: one app is one caller).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// Refuses what cannot work, before anything connects.
    pub(crate) fn check(&self) -> Result<()> {
        if !subject::is_valid(&self.name, false) {
            return Err(Error::config(format!("invalid service name {:?}", self.name)));
        }
        super::app::AppBase::parse(&self.app)?;
        for e in &self.endpoints {
            check_endpoint(e)?;
        }
        for (topic, path) in &self.durable {
            if !subject::is_valid(topic, true) {
                return Err(Error::config(format!("invalid topic pattern {topic:?}")));
            }
            check_path(path)?;
        }
        if let Some(p) = &self.health {
            check_path(p)?;
        }
        Ok(())
    }

    /// The gateway settings of the app-facing API: `/rpc` may call any service, events are
    /// published under `/publish`.
    pub(crate) fn gateway(&self) -> GatewayConfig {
        let mut c = GatewayConfig::default()
            .address(self.address)
            .namespace("")
            .event_prefix(Some("/publish".into()))
            .rpc_path(Some("/rpc".into()))
            .timeout(self.timeout)
            .max_body(self.max_body)
            .cors(self.origins.clone())
            .workers(self.workers);
        c.websocket_paths = vec!["/subscribe".into()];
        c
    }
}

/// An endpoint name the app may declare: `Handler.Method`, URL-safe.
pub(crate) fn check_endpoint(e: &str) -> Result<()> {
    let ok = e.len() <= 255
        && e.split('.').count() >= 2
        && e.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b)));
    if ok {
        Ok(())
    } else {
        Err(Error::config(format!("invalid endpoint {e:?}: use Handler.Method (letters, digits, '_', '-')")))
    }
}

fn check_path(p: &str) -> Result<()> {
    if p.starts_with('/') && !p.contains("..") && !p.contains("://") && !p.contains(char::is_whitespace) {
        Ok(())
    } else {
        Err(Error::config(format!("invalid app path {p:?}: an absolute path like /health")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_are_refused() {
        let ok = SidecarConfig::new("go.micro.srv.py", "http://127.0.0.1:5000/").endpoint("Say.Hello");
        assert!(ok.check().is_ok());
        assert_eq!(ok.app, "http://127.0.0.1:5000");
        assert!(ok.clone().endpoint("Say/../x").check().is_err());
        assert!(ok.clone().endpoint("Hello").check().is_err());
        assert!(ok.clone().subscribe_durable("order.>", "events").check().is_err());
        assert!(ok.clone().health("http://evil/", Duration::from_secs(1)).check().is_err());
        assert!(SidecarConfig::new("go.micro.srv.py", "file:///etc/passwd").check().is_err());
        // Plain HTTP to the app next door: no TLS, no login, no query.
        assert!(SidecarConfig::new("go.micro.srv.py", "https://127.0.0.1:5000").check().is_err());
        assert!(SidecarConfig::new("go.micro.srv.py", "http://u:p@127.0.0.1:5000").check().is_err());
        assert!(SidecarConfig::new("go.micro.srv.py", "http://127.0.0.1:5000/?x=1").check().is_err());
        assert!(SidecarConfig::new("go.micro.srv.py", "http://[::1]:5000/api").check().is_ok());
        assert!(SidecarConfig::new("bad name", "http://x").check().is_err());
    }
}
