//! [`ClientBuilder`]: a standalone client's transport, defaults, middleware and credentials.

use std::sync::Arc;
use std::time::Duration;

use super::{Client, ClientConfig, RetryPolicy};
use crate::codec::Codec;
use crate::error::Result;
use crate::middleware::ClientMiddleware;
use crate::registry::{Registry, RegistryOptions};
use crate::selector::{Filter, Selector, SelectorActor, Strategy};
use crate::transport;

/// Builds a standalone [`Client`] (a service has one already: `ServiceHandle::client`).
///
/// ```no_run
/// # #[actix::main] async fn main() -> micro::Result<()> {
/// use std::time::Duration;
/// use micro::{Client, RetryPolicy, selector::Strategy};
/// let client = Client::builder()
///     .transport("nats://127.0.0.1:4222")
///     .timeout(Duration::from_secs(2))
///     .retry(RetryPolicy::default().max_retries(3))
///     .strategy(Strategy::RoundRobin)
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct ClientBuilder {
    url: Option<String>,
    connect_options: transport::ConnectOptions,
    config: ClientConfig,
    strategy: Strategy,
    registry: RegistryOptions,
}

impl ClientBuilder {
    /// Transport URL (default: `MICRO_TRANSPORT`, else `memory://`).
    pub fn transport(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// TLS and login settings for the broker, before those of the URL and the environment: see
    /// [`ConnectOptions`](transport::ConnectOptions).
    ///
    /// ```no_run
    /// # #[actix::main] async fn main() -> micro::Result<()> {
    /// use micro::transport::ConnectOptions;
    /// let client = micro::Client::builder()
    ///     .transport("amqps://rabbit.internal:5671/%2f")
    ///     .connect_options(ConnectOptions::new().tls_ca("/etc/micro/ca.pem").user_password("micro", "s3cret"))
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn connect_options(mut self, options: transport::ConnectOptions) -> Self {
        self.connect_options = options;
        self
    }

    /// The name sent as caller (default `go.micro.client`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Default call timeout (default 5 s).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.config.timeout = t;
        self
    }

    /// Default retry policy (default: 2 retries).
    pub fn retry(mut self, r: RetryPolicy) -> Self {
        self.config.retry = r;
        self
    }

    /// Default request encoding (default MessagePack).
    pub fn codec(mut self, c: Codec) -> Self {
        self.config.codec = c;
        self
    }

    /// Node selection strategy (default random).
    pub fn strategy(mut self, s: Strategy) -> Self {
        self.strategy = s;
        self
    }

    /// A filter every call applies (version, labels).
    pub fn filter(mut self, f: Filter) -> Self {
        self.config.filter = f;
        self
    }

    /// Registry timings.
    pub fn registry_options(mut self, o: RegistryOptions) -> Self {
        self.registry = o;
        self
    }

    /// Wraps every call and publish in a [`ClientMiddleware`]; the first added is the
    /// outermost. See [`middleware`](crate::middleware).
    pub fn wrap(mut self, layer: impl ClientMiddleware) -> Self {
        self.config.layers.push(Arc::new(layer));
        self
    }

    /// Every call carries this process's token (feature `auth`): `Authorization: Bearer
    /// <token>` from `auth`'s credentials, renewed before it expires, except on a call that
    /// has its own ([`CallOptions::token`](super::CallOptions::token)) and on the auth
    /// service's `Auth.*` endpoints. Publishes carry none. The same as wrapping [`AuthClient::client_layer`], at less cost
    /// per call. An `auth` without credentials adds nothing.
    ///
    /// ```no_run
    /// # use micro::prelude::*;
    /// use micro::auth::{AuthClient, Credentials};
    /// # #[actix::main] async fn main() -> micro::Result<()> {
    /// let plain = Client::connect("nats://127.0.0.1:4222").await?;
    /// let me = AuthClient::builder()
    ///     .credentials(Credentials::new("reporting", std::env::var("REPORTING_SECRET").unwrap()))
    ///     .connect(&plain)
    ///     .await?;
    /// let client = Client::builder().transport("nats://127.0.0.1:4222").auth(me).connect().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// [`AuthClient::client_layer`]: crate::auth::AuthClient::client_layer
    #[cfg(feature = "auth")]
    #[cfg_attr(docsrs, doc(cfg(feature = "auth")))]
    pub fn auth(mut self, auth: crate::auth::AuthClient) -> Self {
        self.config.auth = auth.has_credentials().then_some(auth);
        self
    }

    /// Connects the transport, starts a registry and selector, and returns the client.
    pub async fn connect(self) -> Result<Client> {
        let url = transport::resolve_url(self.url.as_deref());
        let transport = transport::connect_with(&url, &self.connect_options).await?;
        let registry = Registry::start(transport.clone(), self.registry).await?;
        let selector = Selector::new(self.strategy);
        SelectorActor::start(selector.clone(), &registry).await?;
        Ok(Client::from_parts(transport, registry, selector, self.config))
    }
}
