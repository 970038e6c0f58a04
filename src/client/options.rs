//! Per-call options and the retry policy.

use std::time::Duration;

use crate::codec::Codec;
use crate::message::Metadata;
use crate::selector::Filter;

/// When and how often a failed call is tried again.
///
/// A call is retried only when it provably did not run (no responder on the node's subject,
/// the node went away, the service answered 503 Unavailable) or, after a timeout, when the
/// endpoint is idempotent. Delays are jittered exponential backoff (backon), and never past
/// the call's deadline.
///
/// ```
/// use std::time::Duration;
/// let p = micro::RetryPolicy::default().max_retries(3).min_delay(Duration::from_millis(5));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    pub(crate) max_retries: usize,
    pub(crate) min_delay: Duration,
    pub(crate) max_delay: Duration,
}

impl Default for RetryPolicy {
    /// 2 retries, 10 ms to 500 ms.
    fn default() -> Self {
        RetryPolicy { max_retries: 2, min_delay: Duration::from_millis(10), max_delay: Duration::from_millis(500) }
    }
}

impl RetryPolicy {
    /// No retries.
    pub fn none() -> Self {
        RetryPolicy { max_retries: 0, ..Default::default() }
    }

    /// Retries after the first attempt.
    pub fn max_retries(mut self, n: usize) -> Self {
        self.max_retries = n;
        self
    }

    /// First backoff delay.
    pub fn min_delay(mut self, d: Duration) -> Self {
        self.min_delay = d;
        self
    }

    /// Largest backoff delay before jitter (jitter adds up to as much again).
    pub fn max_delay(mut self, d: Duration) -> Self {
        self.max_delay = d;
        self
    }

    pub(crate) fn backoff(&self) -> impl Iterator<Item = Duration> {
        use backon::BackoffBuilder;
        backon::ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_retries)
            .build()
    }
}

/// Options for one call; unset ones take the client's defaults.
///
/// ```
/// use std::time::Duration;
/// let opts = micro::CallOptions::new()
///     .timeout(Duration::from_millis(500))
///     .metadata("tenant", "acme")
///     .version("1.0.0")
///     .idempotent(true);
/// ```
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct CallOptions {
    pub(crate) timeout: Option<Duration>,
    pub(crate) retry: Option<RetryPolicy>,
    pub(crate) metadata: Metadata,
    pub(crate) filter: Filter,
    pub(crate) codec: Option<Codec>,
    pub(crate) idempotent: Option<bool>,
    pub(crate) shared: bool,
    pub(crate) node: Option<String>,
    pub(crate) id: Option<String>,
    pub(crate) token: Option<String>,
    /// The trace a call made outside any handler continues (the gateway's HTTP request), and
    /// its `tracestate`: it takes the place of the current context's. Boxed: every future of
    /// a call holds its options, and most calls have none.
    pub(crate) trace: Option<Box<(crate::message::TraceParent, Option<String>)>>,
}

impl CallOptions {
    /// Defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Time the call may take, retries included (default: the client's, 5 s). A call made while
    /// handling a request never outlives that request's deadline.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    /// The retry policy for this call.
    pub fn retry(mut self, r: RetryPolicy) -> Self {
        self.retry = Some(r);
        self
    }

    /// Adds user metadata (sent as `Micro-Meta-<key>`).
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key, value);
        self
    }

    /// Adds every pair of user metadata.
    pub fn metadata_all(mut self, meta: &Metadata) -> Self {
        self.metadata.merge_missing(meta);
        self
    }

    /// Only nodes of this version.
    pub fn version(mut self, v: impl Into<String>) -> Self {
        self.filter = self.filter.version(v);
        self
    }

    /// Only nodes with this metadata label.
    pub fn label(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.filter = self.filter.label(k, v);
        self
    }

    /// The request's encoding (default MessagePack).
    pub fn codec(mut self, c: Codec) -> Self {
        self.codec = Some(c);
        self
    }

    /// Treat the endpoint as idempotent (or not), overriding what its registration says:
    /// idempotent calls are retried after timeouts too.
    pub fn idempotent(mut self, yes: bool) -> Self {
        self.idempotent = Some(yes);
        self
    }

    /// Send to the service's shared subject and let the broker pick a node (queue group),
    /// bypassing registry and selector.
    pub fn broker_balanced(mut self) -> Self {
        self.shared = true;
        self
    }

    /// Gives the request an id (sent as `Micro-Id`, seen by the handler as
    /// [`CallContext::id`](crate::CallContext::id); retries of the call resend it). Without one
    /// the request carries none: a common call pays for no header it does not use.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// A bearer token for this call, sent as `Authorization: Bearer <token>` (services behind
    /// auth check it). It is not passed on to calls the handler makes.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Send to this one node (its id as in the registry), skipping node selection: for probes
    /// such as `Debug.Health` that must reach every node in turn. The node's address comes
    /// from the registry record, so the node must be registered; version and label filters,
    /// the blacklist and [`broker_balanced`](Self::broker_balanced) do not apply. If the node
    /// is not registered the call fails with
    /// [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable).
    ///
    /// ```
    /// # use micro::prelude::*;
    /// # #[actix::main] async fn main() -> micro::Result<()> {
    /// let svc = Service::builder("go.micro.srv.doc-node").transport("memory://doc-node").start().await?;
    /// let client = Client::connect("memory://doc-node").await?;
    /// for version in client.registry().get_service("go.micro.srv.doc-node").await? {
    ///     for node in &version.nodes {
    ///         let opts = CallOptions::new().node(&node.id);
    ///         let health: serde_json::Value =
    ///             client.call_with("go.micro.srv.doc-node", "Debug.Health", &(), opts).await?;
    ///         assert_eq!(health["node"], node.id.as_str());
    ///     }
    /// }
    /// # svc.stop().await?;
    /// # Ok(()) }
    /// ```
    pub fn node(mut self, id: impl Into<String>) -> Self {
        self.node = Some(id.into());
        self
    }
}
