//! [`Transport`]: one connection to the message system. Request/reply and publish/subscribe
//! primitives over subjects; nothing above this module knows which broker it is.
//!
//! Backends are chosen by URL scheme with [`connect`]:
//!
//! | scheme | backend | feature |
//! |---|---|---|
//! | `memory://[name]` | [`MemoryTransport`]: in-process bus, the embedded default | always |
//! | `nats://host:port`, `tls://host:port` | `NatsTransport` over async-nats | `nats` (NKey and `.creds` logins: `nkeys`) |
//! | `amqp://user:pass@host:port/vhost` | `AmqpTransport` over lapin (RabbitMQ) | `rabbitmq` |
//! | `amqps://user:pass@host:port/vhost` | the same over TLS (rustls) | `rabbitmq` and `tls` |
//!
//! TLS (the CA to trust, a client certificate) and logins come from the URL, the environment or
//! [`ConnectOptions`] given to [`connect_with`]: see `docs/tls.md`.
//!
//! What a backend is made of (subscription and reply sinks, durable deliveries and their
//! ackers) is in [`micro::dev`](crate::dev), for backend authors.
//!
//! ```
//! # #[actix::main] async fn main() -> micro::Result<()> {
//! let t = micro::transport::connect("memory://doc-example").await?;
//! assert_eq!(t.name(), "memory");
//! assert!(micro::transport::connect("carrier-pigeon://x").await.is_err());
//! # Ok(()) }
//! ```

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::Stream;

use crate::error::{Error, Result};
use crate::message::Message;

pub(crate) mod backend;
pub(crate) mod durable;
pub(crate) mod kit;
mod memory;
#[cfg_attr(not(any(feature = "nats", feature = "rabbitmq")), allow(dead_code))]
pub(crate) mod options;

// What a backend is made of is public in `micro::dev`, for backend authors.
pub(crate) use backend::{ReplySink, SubscriptionStream};
#[cfg(any(feature = "nats", feature = "rabbitmq"))]
pub(crate) use durable::AckSink;
pub use durable::DurableGroup;
pub(crate) use durable::{Acker, Delivery, DurableSpec, DurableStream, DurableSubscription};
pub use memory::MemoryTransport;
pub use options::{
    ConnectOptions, NATS_CREDS_ENV, NATS_NKEY_ENV, NATS_TOKEN_ENV, PASSWORD_ENV, TLS_CA_ENV, TLS_CERT_ENV, TLS_KEY_ENV,
    USER_ENV,
};

#[cfg(feature = "nats")]
#[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
mod nats;
#[cfg(all(feature = "nats", feature = "kv"))]
pub(crate) use nats::connect_client as nats_connect_client;
#[cfg(feature = "nats")]
pub(crate) use nats::consumer_name as nats_consumer_name;
#[cfg(feature = "nats")]
pub use nats::{NatsTransport, EVENTS_STREAM as NATS_EVENTS_STREAM};

#[cfg(feature = "rabbitmq")]
#[cfg_attr(docsrs, doc(cfg(feature = "rabbitmq")))]
mod amqp;
#[cfg(feature = "rabbitmq")]
pub use amqp::{AmqpTransport, EXCHANGE as AMQP_EXCHANGE};

/// The environment variable that selects the transport URL when the builder does not.
pub const TRANSPORT_ENV: &str = "MICRO_TRANSPORT";

/// The default transport URL: the in-process memory bus.
pub const DEFAULT_URL: &str = "memory://";

/// A stream of incoming messages for one subscription. Dropping it unsubscribes at once;
/// [`Subscription::drain`] unsubscribes but still yields what was already delivered, then ends.
pub struct Subscription(Box<dyn SubscriptionStream>);

impl Subscription {
    /// Wraps a backend's subscription stream.
    pub fn new(inner: impl SubscriptionStream) -> Subscription {
        Subscription(Box::new(inner))
    }

    /// Stops new messages from arriving; the stream yields those already received, then ends.
    pub fn drain(&mut self) -> BoxFuture<'_, Result<()>> {
        self.0.drain()
    }
}

impl Stream for Subscription {
    type Item = Incoming;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Incoming>> {
        Pin::new(&mut *self.0).poll_next(cx)
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Subscription")
    }
}

/// A message received on a subscription, with the means to answer it if it was a request.
pub struct Incoming {
    /// The subject it was published on.
    pub subject: String,
    /// Headers and body.
    pub message: Message,
    /// Present when the sender waits for a reply.
    pub reply: Option<Reply>,
}

impl fmt::Debug for Incoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("subject", &self.subject)
            .field("message", &self.message)
            .field("reply", &self.reply.is_some())
            .finish()
    }
}

/// The way back to a requester. Sending consumes it: a request gets one reply.
pub struct Reply(Box<dyn ReplySink>);

impl Reply {
    /// Wraps a backend's reply sink.
    pub fn new(sink: impl ReplySink) -> Reply {
        Reply(Box::new(sink))
    }

    /// Sends the reply.
    pub fn send(self, message: Message) -> BoxFuture<'static, Result<()>> {
        self.0.send(message)
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Reply")
    }
}

/// Where a transport's connection to its broker stands, as [`Transport::connection`] reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionState {
    /// True while the connection is up.
    pub connected: bool,
    /// How many times the connection was restored after it was lost.
    pub reconnects: u64,
}

/// One connection to a message system.
///
/// Subjects are dot-separated tokens. Subscriptions may use `*` (one token) and `>` (the rest)
/// wildcards. A subscription with a queue group shares its messages with the other members of
/// the group: each message goes to one of them.
pub trait Transport: Send + Sync + fmt::Debug + 'static {
    /// The backend's name: `memory`, `nats`.
    fn name(&self) -> &'static str;

    /// Sends a request and waits up to `timeout` for the first reply.
    ///
    /// Fails with [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable) when nobody is
    /// subscribed (the request provably did not run) and with
    /// [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) when no reply came in time.
    fn request<'a>(
        &'a self,
        subject: &'a str,
        message: &'a Message,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Message>>;

    /// Sends a request and gathers every reply that arrives within `window` (scatter-gather:
    /// the NATS services API's `$SRV.INFO` is answered by every service). Ends early when the
    /// broker says nobody is subscribed.
    ///
    /// The default (memory, RabbitMQ) is an [`ErrorKind::Config`](crate::ErrorKind::Config)
    /// error: only NATS carries that API.
    fn gather<'a>(
        &'a self,
        subject: &'a str,
        message: Message,
        window: Duration,
    ) -> BoxFuture<'a, Result<Vec<Message>>> {
        let _ = (subject, message, window);
        let e = Error::config(format!("the {} transport cannot gather replies from many responders", self.name()));
        Box::pin(futures::future::ready(Err(e)))
    }

    /// Publishes a message to every subscription (one member per queue group).
    fn publish<'a>(&'a self, subject: &'a str, message: Message) -> BoxFuture<'a, Result<()>>;

    /// Subscribes to a subject, optionally as a member of a queue group.
    fn subscribe<'a>(&'a self, subject: &'a str, queue: Option<&'a str>) -> BoxFuture<'a, Result<Subscription>>;

    /// Publishes and resolves only once the broker has stored the message (JetStream PubAck,
    /// RabbitMQ publisher confirm of a persistent message). A message nothing would keep is
    /// an error, never a silent drop. The `Micro-Id` header is the broker's dedup id.
    ///
    /// The default (memory) hands it to the subscribers in process and fails with
    /// [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable) when there are none.
    fn publish_durable<'a>(&'a self, subject: &'a str, message: Message) -> BoxFuture<'a, Result<()>> {
        self.publish(subject, message)
    }

    /// Subscribes durably: the broker keeps the group's messages while no member is connected
    /// and redelivers what is not acknowledged. See [`DurableSpec`].
    ///
    /// The default is the in-process fallback: same API, nothing survives the process.
    fn subscribe_durable<'a>(&'a self, spec: &'a DurableSpec) -> BoxFuture<'a, Result<DurableSubscription>> {
        Box::pin(durable::in_process(self, spec))
    }

    /// Removes a durable group's place on the broker (its JetStream consumer, its RabbitMQ
    /// queue; not its dead letters), with whatever it still holds. Members must be gone.
    /// Removing a group that does not exist is not an error.
    fn delete_durable<'a>(&'a self, spec: &'a DurableSpec) -> BoxFuture<'a, Result<()>> {
        let _ = spec;
        Box::pin(futures::future::ready(Ok(())))
    }

    /// What the broker still holds for a durable group, not yet acknowledged (see
    /// [`DurableGroup::pending`]); `None` where the broker cannot tell (the default, memory).
    fn durable_pending<'a>(&'a self, spec: &'a DurableSpec) -> BoxFuture<'a, Result<Option<u64>>> {
        let _ = spec;
        Box::pin(futures::future::ready(Ok(None)))
    }

    /// The durable groups the broker keeps, with what each still holds.
    ///
    /// The default (memory, where groups live in the process) is an
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) error saying the transport cannot list them.
    fn durable_groups(&self) -> BoxFuture<'_, Result<Vec<DurableGroup>>> {
        let e = Error::config(format!("the {} transport cannot list durable groups", self.name()));
        Box::pin(futures::future::ready(Err(e)))
    }

    /// The state of the connection, for owners that must act when it is lost or restored (the
    /// registry announces its nodes again and asks who is there). `None` (the default, memory)
    /// where there is no connection to lose.
    fn connection(&self) -> Option<tokio::sync::watch::Receiver<ConnectionState>> {
        None
    }

    /// Flushes anything buffered to the server.
    fn flush(&self) -> BoxFuture<'_, Result<()>>;

    /// Closes the connection: subscriptions end, exclusive broker-side resources go away.
    fn close(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(futures::future::ready(Ok(())))
    }
}

/// A URL as it may be printed: `scheme://user:secret@host` → `scheme://user:***@host`, and a
/// user part with no password (a token, `nats://token@host`) → `scheme://***@host`.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let Some(at) = authority.rfind('@') else { return url.to_string() };
    match authority[..at].split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***{}", &rest[at..]),
        None => format!("{scheme}://***{}", &rest[at..]),
    }
}

/// Connects to the transport named by a URL.
///
/// An unknown scheme, or one whose cargo feature is off, is an
/// [`ErrorKind::Config`](crate::ErrorKind::Config) error; an unreachable broker is
/// [`ErrorKind::Connect`](crate::ErrorKind::Connect) with the URL in the message, a refused
/// login [`ErrorKind::BrokerAuth`](crate::ErrorKind::BrokerAuth) and a failed TLS handshake
/// (an unknown CA, a certificate the broker requires) [`ErrorKind::Tls`](crate::ErrorKind::Tls),
/// all at once: a first connection is never retried.
///
/// TLS and login settings come from the URL (`tls://host:4222?tls_ca=/etc/micro/ca.pem`,
/// `amqps://user:password@host/%2f`) and the environment (`MICRO_TLS_CA`, ...): see
/// [`ConnectOptions`] and [`connect_with`] to give them in code.
pub async fn connect(url: &str) -> Result<Arc<dyn Transport>> {
    connect_with(url, &ConnectOptions::default()).await
}

/// As [`connect`], with TLS and login settings given in code: each comes before the URL's and
/// the environment's. The memory transport ignores them.
///
/// ```no_run
/// # #[actix::main] async fn main() -> micro::Result<()> {
/// use micro::transport::{connect_with, ConnectOptions};
/// let options = ConnectOptions::new().tls_ca("/etc/micro/ca.pem").user_password("micro", "s3cret");
/// let nats = connect_with("tls://nats.internal:4222", &options).await?;
/// let rabbit = connect_with("amqps://rabbit.internal:5671/%2f", &options).await?;
/// # Ok(()) }
/// ```
pub async fn connect_with(url: &str, options: &ConnectOptions) -> Result<Arc<dyn Transport>> {
    let _ = options;
    let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
    match scheme {
        "memory" => Ok(Arc::new(MemoryTransport::named(&url["memory://".len()..]))),
        #[cfg(feature = "nats")]
        "nats" | "tls" => Ok(Arc::new(NatsTransport::connect_with(url, options).await?)),
        #[cfg(not(feature = "nats"))]
        "nats" | "tls" => Err(Error::config(format!("transport {:?} needs the `nats` cargo feature", redact(url)))),
        #[cfg(feature = "rabbitmq")]
        "amqp" | "amqps" => Ok(Arc::new(AmqpTransport::connect_with(url, options).await?)),
        #[cfg(not(feature = "rabbitmq"))]
        "amqp" | "amqps" => {
            Err(Error::config(format!("transport {:?} needs the `rabbitmq` cargo feature", redact(url))))
        }
        "" => Err(Error::config(format!(
            "transport URL {:?} has no scheme; use memory://, nats://host:port or amqp://host:port",
            redact(url)
        ))),
        other => Err(Error::config(format!(
            "unknown transport scheme {other:?} in {:?}; use memory://, nats://host:port or amqp://host:port",
            redact(url)
        ))),
    }
}

/// The transport URL to use: the given one, else `MICRO_TRANSPORT`, else `memory://`.
pub fn resolve_url(explicit: Option<&str>) -> String {
    explicit
        .map(str::to_string)
        .or_else(|| std::env::var(TRANSPORT_ENV).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| DEFAULT_URL.to_string())
}

#[cfg(test)]
mod redact_tests {
    use super::redact;

    #[test]
    fn secrets_in_urls_are_masked() {
        assert_eq!(redact("amqp://guest:guest@127.0.0.1:5672/%2f"), "amqp://guest:***@127.0.0.1:5672/%2f");
        assert_eq!(redact("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(redact("memory://"), "memory://");
        assert_eq!(redact("nats://tok@host:4222"), "nats://***@host:4222");
        assert_eq!(redact("amqp://u:p%40ss@host/vhost@x"), "amqp://u:***@host/vhost@x");
        assert_eq!(redact("not a url"), "not a url");
    }
}
