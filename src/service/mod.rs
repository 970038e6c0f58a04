//! [`Service::builder`]: endpoints, subscriptions, state and options, then
//! [`run`](ServiceBuilder::run) (serve until SIGINT/SIGTERM) or [`start`](ServiceBuilder::start)
//! (serve in the background and get a [`ServiceHandle`]).
//!
//! ```
//! use micro::prelude::*;
//!
//! #[derive(serde::Deserialize)] struct Hello { name: String }
//! #[derive(serde::Serialize, serde::Deserialize)] struct Greeting { msg: String }
//!
//! async fn say_hello(Req(h): Req<Hello>) -> Result<Greeting, Status> {
//!     Ok(Greeting { msg: format!("Hello {}", h.name) })
//! }
//!
//! # #[actix::main] async fn main() -> micro::Result<()> {
//! let service = Service::builder("go.micro.srv.greeter")
//!     .version("1.0.0")
//!     .transport("memory://service-doc")
//!     .handle("Say.Hello", say_hello)
//!     .start()
//!     .await?;
//! let reply: Greeting = service.client()
//!     .call("go.micro.srv.greeter", "Say.Hello", &serde_json::json!({"name": "John"})).await?;
//! assert_eq!(reply.msg, "Hello John");
//! service.stop().await?; // deregister, stop taking requests, drain
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::dev::ToEnvelope;
use actix::{Actor, Context, Handler as ActorHandler};
use tokio::sync::watch;

use crate::broker::{BrokerActor, Declared, SubscribeOptions, Subscriptions};
use crate::client::{Client, ClientConfig, RetryPolicy};
use crate::error::{Error, Result};
use crate::health::{Health, HealthChecks};
use crate::middleware::{ClientLayers, ClientMiddleware, Middleware, Wrapped};
use crate::registry::{self, Registry, RegistryOptions};
use crate::selector::{Selector, SelectorActor, Strategy};
use crate::server::{
    serve_nats_micro, subscribe_node, ActorEndpoints, BoundEndpoint, Dispatch, EndpointMessage, Extensions, FnEndpoint,
    FromRequestTuple, Handler, HealthStatus, IntoEndpoint, IntoReply, NatsMicroIdentity, RestartPolicy, Route, Server,
    ServerInfo, Stats, Supervisor,
};
use crate::status::Status;
use crate::subject;
use crate::transport;

mod handle;
mod start;

#[cfg(feature = "gateway")]
pub(crate) use handle::shutdown_signal;
pub use handle::ServiceHandle;

/// Entry point: `Service::builder(name)` describes a service (endpoints, subscriptions, state,
/// middleware, options); `run` serves it until SIGTERM, `start` serves it in the background.
///
/// ```
/// use micro::prelude::*;
///
/// async fn ping(_: CallContext) -> Result<&'static str, Status> {
///     Ok("pong")
/// }
///
/// # #[micro::main] async fn main() -> micro::Result<()> {
/// let service = Service::builder("go.micro.srv.pinger")
///     .version("1.0.0")
///     .transport("memory://service-entry-doc")
///     .handle("Ping.Ping", ping)
///     .subscribe("system.tick", |ctx: CallContext| async move {
///         println!("tick {}", ctx.id());
///         Ok::<_, Status>(())
///     })
///     .start()
///     .await?;
/// let pong: String = service.client().call("go.micro.srv.pinger", "Ping.Ping", &()).await?;
/// assert_eq!(pong, "pong");
/// service.stop().await
/// # }
/// ```
#[derive(Debug)]
pub struct Service;

impl Service {
    /// Starts describing a service. Names are dotted: `go.micro.srv.greeter`.
    pub fn builder(name: impl Into<String>) -> ServiceBuilder {
        ServiceBuilder::new(name.into())
    }
}

struct EndpointSpec {
    name: String,
    endpoint: Rc<dyn Dispatch>,
    metadata: BTreeMap<String, String>,
}

struct SubscriptionSpec {
    topic: String,
    options: SubscribeOptions,
    endpoint: Rc<dyn Dispatch>,
}

/// Describes a service; nothing is validated or connected until `start`/`run`.
pub struct ServiceBuilder {
    name: String,
    version: String,
    metadata: BTreeMap<String, String>,
    transport: Option<String>,
    registry_url: Option<String>,
    connect_options: transport::ConnectOptions,
    registry: RegistryOptions,
    endpoints: Vec<EndpointSpec>,
    idempotent: std::collections::HashSet<String>,
    subscriptions: Vec<SubscriptionSpec>,
    state: Extensions,
    restart: RestartPolicy,
    grace: Duration,
    max_in_flight: usize,
    client_timeout: Duration,
    client_retry: RetryPolicy,
    strategy: Strategy,
    layers: Vec<Rc<dyn Middleware>>,
    client_layers: ClientLayers,
    /// The token the service's own calls carry.
    #[cfg(feature = "auth")]
    client_auth: Option<crate::auth::AuthClient>,
    /// The check every request to a user endpoint passes first.
    #[cfg(feature = "auth")]
    auth_gate: Option<crate::auth::AuthLayer>,
    checks: HealthChecks,
    #[cfg(feature = "prometheus")]
    metrics_addr: Option<std::net::SocketAddr>,
}

impl std::fmt::Debug for ServiceBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceBuilder")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("endpoints", &self.endpoints.iter().map(|e| e.name.as_str()).collect::<Vec<_>>())
            .field("subscriptions", &self.subscriptions.iter().map(|s| s.topic.as_str()).collect::<Vec<_>>())
            .finish()
    }
}

impl ServiceBuilder {
    fn new(name: String) -> Self {
        ServiceBuilder {
            name,
            version: "latest".into(),
            metadata: BTreeMap::new(),
            transport: None,
            registry_url: None,
            connect_options: Default::default(),
            registry: RegistryOptions::default(),
            endpoints: Vec::new(),
            idempotent: Default::default(),
            subscriptions: Vec::new(),
            state: Extensions::default(),
            restart: RestartPolicy::default(),
            grace: Duration::from_secs(30),
            max_in_flight: 10_000,
            client_timeout: Duration::from_secs(5),
            client_retry: RetryPolicy::default(),
            strategy: Strategy::default(),
            layers: Vec::new(),
            client_layers: ClientLayers::default(),
            #[cfg(feature = "auth")]
            client_auth: None,
            #[cfg(feature = "auth")]
            auth_gate: None,
            checks: HealthChecks::new(),
            #[cfg(feature = "prometheus")]
            metrics_addr: None,
        }
    }

    /// The version announced in the registry (default `latest`).
    pub fn version(mut self, v: impl Into<String>) -> Self {
        self.version = v.into();
        self
    }

    /// A node metadata label (selectors can filter on it).
    pub fn metadata(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.metadata.insert(k.into(), v.into());
        self
    }

    /// Transport URL: `memory://`, `nats://host:port`, `tls://host:port` or
    /// `amqp(s)://user:password@host:port/vhost` (default: `MICRO_TRANSPORT`, else `memory://`).
    pub fn transport(mut self, url: impl Into<String>) -> Self {
        self.transport = Some(url.into());
        self
    }

    /// TLS and login settings for the broker (both the transport's and the registry's), before
    /// those of the URL and the environment: see [`ConnectOptions`](transport::ConnectOptions).
    ///
    /// ```no_run
    /// # #[actix::main] async fn main() -> micro::Result<()> {
    /// use micro::prelude::*;
    /// use micro::transport::ConnectOptions;
    /// let svc = Service::builder("go.micro.srv.secure")
    ///     .transport("tls://nats.internal:4222")
    ///     .connect_options(ConnectOptions::new().tls_ca("/etc/micro/ca.pem").user_password("micro", "s3cret"))
    ///     .start()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn connect_options(mut self, options: transport::ConnectOptions) -> Self {
        self.connect_options = options;
        self
    }

    /// Gossip the registry over another transport than requests (default: the same one).
    /// `memory://` keeps discovery inside this process.
    pub fn registry(mut self, url: impl Into<String>) -> Self {
        self.registry_url = Some(url.into());
        self
    }

    /// Registry timings (TTL, heartbeat, discovery window).
    pub fn registry_options(mut self, o: RegistryOptions) -> Self {
        self.registry = o;
        self
    }

    /// Binds an endpoint to an async fn handler. The endpoint is a typed
    /// [`Endpoint<Req, Rsp>`](crate::Endpoint) (a handler that does not take `Req<Req>` and
    /// return `Result<Rsp, Status>` does not compile) or a name (`Handler.Method`).
    ///
    /// ```
    /// use micro::prelude::*;
    /// # #[derive(serde::Serialize, serde::Deserialize)] pub struct Request { name: String }
    /// # #[derive(serde::Serialize, serde::Deserialize)] pub struct Response { msg: String }
    /// pub const SAY_HELLO: Endpoint<Request, Response> = Endpoint::new("Say.Hello");
    ///
    /// async fn hello(Req(r): Req<Request>, ctx: CallContext) -> Result<Response, Status> {
    ///     Ok(Response { msg: format!("Hello {} from {}", r.name, ctx.service()) })
    /// }
    /// let service = Service::builder("go.micro.srv.greeter").handle(SAY_HELLO, hello);
    /// ```
    pub fn handle<E, H, Args>(mut self, endpoint: E, handler: H) -> Self
    where
        E: IntoEndpoint<H, Args>,
    {
        let BoundEndpoint { name, dispatch } = endpoint.bind(handler);
        self.endpoints.push(EndpointSpec { name, endpoint: dispatch, metadata: BTreeMap::new() });
        self
    }

    /// Wraps every endpoint and subscription handler in a [`Middleware`]; the first added is
    /// the outermost. See [`middleware`](crate::middleware) for examples.
    pub fn wrap(mut self, layer: impl Middleware) -> Self {
        self.layers.push(Rc::new(layer));
        self
    }

    /// Wraps every call and publish of the service's own client in a [`ClientMiddleware`]
    /// (the first added is the outermost).
    pub fn wrap_client(mut self, layer: impl ClientMiddleware) -> Self {
        self.client_layers.push(std::sync::Arc::new(layer));
        self
    }

    /// Puts the service behind auth (feature `auth`): every request is checked against the
    /// key set and rules `auth` keeps (401 without a valid token, 403 when no rule allows it;
    /// the caller in [`CallContext::identity`](crate::CallContext::identity)), and, when `auth`
    /// has credentials, the service's own calls carry its token. The check runs before any
    /// middleware, inline in the dispatch (no middleware boxing per request). `Debug.*` stays
    /// outside (see `docs/auth.md`).
    #[cfg(feature = "auth")]
    #[cfg_attr(docsrs, doc(cfg(feature = "auth")))]
    pub fn auth(mut self, auth: crate::auth::AuthClient) -> Self {
        self.auth_gate = Some(auth.layer());
        self.client_auth = auth.has_credentials().then_some(auth);
        self
    }

    /// Marks an endpoint idempotent in the registry, so clients retry it after timeouts too
    /// (safe only if running it twice does no harm).
    pub fn idempotent(mut self, endpoint: impl AsRef<str>) -> Self {
        self.idempotent.insert(endpoint.as_ref().to_string());
        self
    }

    /// Binds an endpoint to an actor's `Handler<M>`; the actor is made by `factory` when the
    /// service starts and made again if it panics.
    pub fn actor<M, A>(self, endpoint: &str, factory: impl Fn() -> A + 'static) -> Self
    where
        M: EndpointMessage,
        A: Actor<Context = Context<A>> + ActorHandler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        self.actors(ActorEndpoints::new(factory).route::<M>(endpoint))
    }

    /// Binds several endpoints to one actor pool.
    pub fn actors<A: Actor<Context = Context<A>>>(mut self, group: ActorEndpoints<A>) -> Self {
        for (name, endpoint) in group.routes {
            self.endpoints.push(EndpointSpec { name, endpoint, metadata: BTreeMap::new() });
        }
        self
    }

    /// Subscribes an async fn to a topic (or pattern) in the service's queue group: each event
    /// is handled by one node of this service.
    pub fn subscribe<H, Args>(self, topic: &str, handler: H) -> Self
    where
        H: Handler<Args>,
        H::Output: IntoReply,
        Args: FromRequestTuple + 'static,
    {
        let group = SubscribeOptions::group(self.name.clone());
        self.subscribe_with(topic, group, handler)
    }

    /// Subscribes an async fn durably, in a group named after the service: at-least-once, the
    /// broker keeps events while the service is down, errors are retried with backoff and
    /// dead-lettered after 5 attempts. `Ok` acknowledges the event; an `Err` status of 5xx, 408
    /// or 429 (or a panic) retries it; any other error dead-letters it at once. Use
    /// [`subscribe_with`](Self::subscribe_with) and [`SubscribeOptions::durable`] to tune it.
    ///
    /// ```
    /// use micro::prelude::*;
    /// #[derive(serde::Deserialize)] struct Login { user_id: String }
    /// async fn record(Req(l): Req<Login>) -> Result<(), Status> {
    ///     println!("{} logged in", l.user_id);
    ///     Ok(())
    /// }
    /// let service = Service::builder("audit").subscribe_durable("user.login", record);
    /// ```
    pub fn subscribe_durable<H, Args>(self, topic: &str, handler: H) -> Self
    where
        H: Handler<Args>,
        H::Output: IntoReply,
        Args: FromRequestTuple + 'static,
    {
        let group = SubscribeOptions::durable(self.name.clone());
        self.subscribe_with(topic, group, handler)
    }

    /// Subscribes with explicit options (another group, broadcast, or durable).
    pub fn subscribe_with<H, Args>(mut self, topic: &str, options: SubscribeOptions, handler: H) -> Self
    where
        H: Handler<Args>,
        H::Output: IntoReply,
        Args: FromRequestTuple + 'static,
    {
        self.subscriptions.push(SubscriptionSpec {
            topic: topic.to_string(),
            options,
            endpoint: Rc::new(FnEndpoint::new(handler)),
        });
        self
    }

    /// Subscribes actors: each route name of the group is a topic, handled in the service's
    /// queue group by the actor's `Handler<M>`.
    pub fn subscribe_actors<A: Actor<Context = Context<A>>>(self, group: ActorEndpoints<A>) -> Self {
        let options = SubscribeOptions::group(self.name.clone());
        self.subscribe_actors_with(group, options)
    }

    /// Subscribes actors with explicit options: each route name of the group is a topic (or
    /// pattern), for example [`SubscribeOptions::durable`] to store events at least once.
    pub fn subscribe_actors_with<A: Actor<Context = Context<A>>>(
        mut self,
        group: ActorEndpoints<A>,
        options: SubscribeOptions,
    ) -> Self {
        for (topic, endpoint) in group.routes {
            self.subscriptions.push(SubscriptionSpec { topic, options: options.clone(), endpoint });
        }
        self
    }

    /// Registers shared state for the [`State`](crate::State) extractor.
    pub fn state<S: Clone + 'static>(mut self, value: S) -> Self {
        self.state.insert(value);
        self
    }

    /// The restart-intensity limit (default 5 restarts within 10 s).
    pub fn restart_policy(mut self, p: RestartPolicy) -> Self {
        self.restart = p;
        self
    }

    /// How long shutdown waits for in-flight requests (default 30 s).
    pub fn grace_period(mut self, d: Duration) -> Self {
        self.grace = d;
        self
    }

    /// Requests in flight above which new ones get 503 Unavailable (default 10 000).
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// Default timeout of the service's own client (default 5 s).
    pub fn client_timeout(mut self, d: Duration) -> Self {
        self.client_timeout = d;
        self
    }

    /// Retry policy of the service's own client.
    pub fn client_retry(mut self, r: RetryPolicy) -> Self {
        self.client_retry = r;
        self
    }

    /// Selection strategy of the service's own client (default random).
    pub fn strategy(mut self, s: Strategy) -> Self {
        self.strategy = s;
        self
    }

    /// Adds a health check, run every [`health_interval`](Self::health_interval) (10 s) with a
    /// [`health_timeout`](Self::health_timeout) (5 s) and cached: `Ok(())` passes, `Err(reason)`
    /// fails. While one fails, `Debug.Health` answers `unhealthy` with the reason, the node's
    /// registry metadata says `health: unhealthy` (announced at once) and selectors skip the
    /// node; it is back as soon as the checks pass again. See [`crate::health`].
    ///
    /// ```
    /// use micro::prelude::*;
    /// let db_up = std::rc::Rc::new(std::cell::Cell::new(true));
    /// let service = Service::builder("go.micro.srv.orders").health_check("db", move || {
    ///     let up = db_up.get();
    ///     async move { if up { Ok(()) } else { Err("db unreachable") } }
    /// });
    /// ```
    pub fn health_check<F, Fut, E>(mut self, name: impl Into<String>, check: F) -> Self
    where
        F: Fn() -> Fut + 'static,
        Fut: std::future::Future<Output = std::result::Result<(), E>> + 'static,
        E: std::fmt::Display,
    {
        self.checks = self.checks.check(name, check);
        self
    }

    /// How often the health checks run (default 10 s).
    pub fn health_interval(mut self, every: Duration) -> Self {
        self.checks = self.checks.interval(every);
        self
    }

    /// How long one health check may take before it counts as failed (default 5 s).
    pub fn health_timeout(mut self, limit: Duration) -> Self {
        self.checks = self.checks.timeout(limit);
        self
    }

    /// Serves the process's metrics in the Prometheus text format at `http://<addr>/metrics`
    /// (default: `MICRO_METRICS_ADDRESS` when set). The recorder is installed once per process;
    /// services given the same address share one listener.
    ///
    /// ```
    /// let service = micro::Service::builder("go.micro.srv.greeter").metrics_addr(([127, 0, 0, 1], 9464).into());
    /// ```
    #[cfg(feature = "prometheus")]
    #[cfg_attr(docsrs, doc(cfg(feature = "prometheus")))]
    pub fn metrics_addr(mut self, addr: std::net::SocketAddr) -> Self {
        self.metrics_addr = Some(addr);
        self
    }
}
