//! Durable (at-least-once) delivery: the transport half.
//!
//! A durable subscription is a named consumer the broker keeps while nobody is connected: a
//! JetStream durable consumer on NATS, a durable queue on RabbitMQ. Its messages come as
//! [`Delivery`]s that must be settled with an [`Acker`]: acknowledged once handled, or handed
//! back for redelivery after a delay. What is not settled (a crash, a lost connection) comes
//! back by itself. Retry counting, dead letters and the handler live in the broker above
//! this; what it asks of a backend travels in the [`DurableSpec`].
//!
//! Transports without a broker (memory) get the in-process fallback of this module: the same
//! API, events acknowledged in memory, nothing kept across a restart.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, Stream, StreamExt};
use tokio::sync::mpsc;

use super::{Subscription, Transport};
use crate::error::Result;
use crate::message::{headers, Message};

/// How long a durable group is kept unused by default: the NATS events stream's retention.
pub const DEFAULT_EXPIRY: Duration = super::kit::DURABLE_EXPIRY;

/// What a durable subscription asks of the broker.
///
/// ```
/// let spec = micro::dev::DurableSpec::new("micro.event.user.>", "audit")
///     .dead_letter("micro.event.audit.dlq");
/// assert_eq!(spec.dead_letter.as_deref(), Some("micro.event.audit.dlq"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DurableSpec {
    /// The subject pattern (`micro.event.user.>`).
    pub subject: String,
    /// The durable group: members share the work, and the broker keeps the group's place.
    pub group: String,
    /// Most deliveries one member holds unsettled: the RabbitMQ prefetch. On NATS, where
    /// `max_ack_pending` counts the whole group, it is 8 × this (at least 256), and each
    /// member's share is bounded above (by the pull batch and the broker layer's slots).
    pub concurrency: usize,
    /// How long a delivery may stay unsettled before the broker hands it out again, where the
    /// broker has such a timer (JetStream `ack_wait`). [`Acker::progress`] extends it.
    pub ack_wait: Duration,
    /// How long the broker keeps the group (and, on RabbitMQ, its dead-letter queue) once no
    /// member uses it: JetStream `inactive_threshold`, RabbitMQ `x-expires`.
    pub expire_after: Duration,
    /// The subject dead letters of this group are published on, if the group has one (the
    /// broker sets it): the transport makes it durable (RabbitMQ binds a durable queue of the
    /// same name without the `micro.event.` prefix to it).
    pub dead_letter: Option<String>,
}

/// A durable group as the broker keeps it: the group, the subject pattern it takes, and what
/// the broker still holds for it. See [`Transport::durable_groups`].
///
/// ```
/// let g = micro::dev::DurableGroup::new("audit", "micro.event.user.>").pending(Some(3));
/// assert_eq!((g.topic(), g.pending), ("user.>", Some(3)));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct DurableGroup {
    /// The durable group.
    pub group: String,
    /// The subject pattern (`micro.event.user.>`).
    pub subject: String,
    /// Messages the broker holds for the group and that are not yet acknowledged, where it can
    /// tell: on NATS those not yet delivered plus those delivered and unacknowledged; on
    /// RabbitMQ the queue's ready messages.
    pub pending: Option<u64>,
}

impl DurableGroup {
    /// A group on a subject pattern, its pending count unknown.
    pub fn new(group: impl Into<String>, subject: impl Into<String>) -> DurableGroup {
        DurableGroup { group: group.into(), subject: subject.into(), pending: None }
    }

    /// Sets what the broker holds for the group.
    pub fn pending(mut self, pending: Option<u64>) -> Self {
        self.pending = pending;
        self
    }

    /// The topic pattern: the subject without `micro.event.`.
    pub fn topic(&self) -> &str {
        self.subject.strip_prefix(crate::subject::EVENT_PREFIX).unwrap_or(&self.subject)
    }
}

impl DurableSpec {
    /// A spec with the defaults: 32 at a time, 30 s ack wait, kept 7 days unused, no
    /// dead-letter subject.
    pub fn new(subject: impl Into<String>, group: impl Into<String>) -> DurableSpec {
        DurableSpec {
            subject: subject.into(),
            group: group.into(),
            dead_letter: None,
            concurrency: super::kit::DURABLE_CONCURRENCY,
            ack_wait: super::kit::DURABLE_ACK_WAIT,
            expire_after: DEFAULT_EXPIRY,
        }
    }

    /// Sets the subject the group's dead letters are published on, for the transport to keep.
    pub fn dead_letter(mut self, subject: impl Into<String>) -> Self {
        self.dead_letter = Some(subject.into());
        self
    }

    /// Sets how long the broker keeps the group unused.
    pub fn expire_after(mut self, d: Duration) -> Self {
        self.expire_after = d.max(Duration::from_secs(1));
        self
    }

    /// Sets how many deliveries may be unsettled at once.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Sets the ack wait.
    pub fn ack_wait(mut self, d: Duration) -> Self {
        self.ack_wait = d;
        self
    }
}

/// One message of a durable subscription, to be settled with its [`Acker`].
pub struct Delivery {
    /// The subject it was published on.
    pub subject: String,
    /// Headers and body.
    pub message: Message,
    /// 1 on the first delivery, counting every delivery of this message to the group.
    pub attempt: u32,
    /// Settles it.
    pub acker: Acker,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("subject", &self.subject)
            .field("attempt", &self.attempt)
            .field("message", &self.message)
            .finish()
    }
}

/// Settles one [`Delivery`]. Dropping it unsettled hands the message back for redelivery at
/// once ([`AckSink::hand_back`], in the background). If the process dies instead, the broker
/// redelivers by itself: after the ack wait (NATS) or when the connection closes (RabbitMQ).
pub struct Acker(Option<Box<dyn AckSink>>);

impl Acker {
    /// Wraps a backend's acker.
    pub fn new(sink: impl AckSink) -> Acker {
        Acker(Some(Box::new(sink)))
    }

    /// The message is handled: the broker forgets it.
    pub fn ack(mut self) -> BoxFuture<'static, Result<()>> {
        // Only these consuming methods take the sink: it is always there.
        match self.0.take() {
            Some(sink) => sink.ack(),
            None => futures::future::ready(Ok(())).boxed(),
        }
    }

    /// The message should be delivered again (as attempt + 1) after `delay`.
    pub fn retry(mut self, delay: Duration) -> BoxFuture<'static, Result<()>> {
        match self.0.take() {
            Some(sink) => sink.retry(delay),
            None => futures::future::ready(Ok(())).boxed(),
        }
    }

    /// Still working on it: restarts the broker's ack-wait timer.
    pub fn progress(&self) -> BoxFuture<'static, Result<()>> {
        match &self.0 {
            Some(sink) => sink.progress(),
            None => futures::future::ready(Ok(())).boxed(),
        }
    }
}

impl Drop for Acker {
    fn drop(&mut self) {
        if let Some(sink) = self.0.take() {
            let back = sink.hand_back();
            super::kit::spawn_if_running(async move {
                if let Err(e) = back.await {
                    tracing::debug!(error = %e, "an unsettled delivery was not handed back; the broker redelivers it later");
                }
            });
        }
    }
}

impl fmt::Debug for Acker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Acker")
    }
}

/// A backend's way of settling one delivery (for backend authors).
pub trait AckSink: Send + 'static {
    /// Acknowledges.
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<()>>;
    /// Hands it back for redelivery after `delay`, counting one more attempt.
    fn retry(self: Box<Self>, delay: Duration) -> BoxFuture<'static, Result<()>>;
    /// Extends the ack wait; a no-op where the broker has none.
    fn progress(&self) -> BoxFuture<'static, Result<()>> {
        futures::future::ready(Ok(())).boxed()
    }
    /// Hands it back for redelivery at once: the [`Acker`] was dropped unsettled. The future
    /// is spawned when there is a runtime; work that must happen without one goes before it.
    /// The default is `retry` without delay.
    fn hand_back(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        self.retry(Duration::ZERO)
    }
}

/// The deliveries of a durable subscription. Dropping it stops consuming (unsettled
/// deliveries come back later); [`drain`](Self::drain) stops new deliveries but yields those
/// already received.
pub struct DurableSubscription(Box<dyn DurableStream>);

impl DurableSubscription {
    /// Wraps a backend's stream.
    pub fn new(inner: impl DurableStream) -> DurableSubscription {
        DurableSubscription(Box::new(inner))
    }

    /// Stops new deliveries; the stream yields what was already received, then ends.
    pub fn drain(&mut self) -> BoxFuture<'_, Result<()>> {
        self.0.drain()
    }
}

impl Stream for DurableSubscription {
    type Item = Delivery;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        Pin::new(&mut *self.0).poll_next(cx)
    }
}

impl fmt::Debug for DurableSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DurableSubscription")
    }
}

/// A backend's durable subscription stream (for backend authors).
pub trait DurableStream: Stream<Item = Delivery> + Send + Unpin + 'static {
    /// Stops new deliveries but keeps yielding what is buffered; the stream ends afterwards.
    fn drain(&mut self) -> BoxFuture<'_, Result<()>>;
}

/// The in-process fallback: a queue-group subscription whose retries are re-sent from memory.
pub(crate) async fn in_process(
    transport: &(impl Transport + ?Sized),
    spec: &DurableSpec,
) -> Result<DurableSubscription> {
    super::kit::check_durable(spec)?;
    let sub = transport.subscribe(&spec.subject, Some(&spec.group)).await?;
    // The dead-letter place: in memory nothing is kept, but a dead letter is logged rather than
    // bounced back forever for want of a subscriber.
    let dlq_sink = match &spec.dead_letter {
        Some(dead_letter) => {
            let mut dead = transport.subscribe(dead_letter, Some(dead_letter)).await?;
            Some(tokio::spawn(async move {
                while let Some(d) = dead.next().await {
                    let h = &d.message.headers;
                    tracing::warn!(
                        subject = %d.subject,
                        id = h.get(headers::ID).unwrap_or_default(),
                        reason = h.get(headers::DLQ_REASON).unwrap_or_default(),
                        "dead letter (the memory transport keeps none)"
                    );
                }
            }))
        }
        None => None,
    };
    let (tx, rx) = mpsc::unbounded_channel();
    Ok(DurableSubscription::new(InProcess { sub: Some(sub), retries: rx, tx: Some(tx), dlq_sink }))
}

type Redelivery = (String, Message, u32);

struct InProcess {
    sub: Option<Subscription>,
    retries: mpsc::UnboundedReceiver<Redelivery>,
    /// Our own sender, dropped on drain so the stream can end once every acker is gone.
    tx: Option<mpsc::UnboundedSender<Redelivery>>,
    dlq_sink: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(sink) = &self.dlq_sink {
            sink.abort();
        }
    }
}

struct InProcessAcker {
    redelivery: Redelivery,
    tx: mpsc::UnboundedSender<Redelivery>,
}

impl AckSink for InProcessAcker {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        futures::future::ready(Ok(())).boxed()
    }

    fn retry(self: Box<Self>, delay: Duration) -> BoxFuture<'static, Result<()>> {
        let InProcessAcker { redelivery: (subject, message, attempt), tx } = *self;
        super::kit::after(delay, async move {
            let _ = tx.send((subject, message, attempt + 1));
        });
        futures::future::ready(Ok(())).boxed()
    }

    fn hand_back(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        // At once, runtime or not.
        let InProcessAcker { redelivery: (subject, message, attempt), tx } = *self;
        let _ = tx.send((subject, message, attempt + 1));
        futures::future::ready(Ok(())).boxed()
    }
}

impl InProcess {
    fn delivery(&self, tx: &mpsc::UnboundedSender<Redelivery>, (subject, message, attempt): Redelivery) -> Delivery {
        let acker =
            Acker::new(InProcessAcker { redelivery: (subject.clone(), message.clone(), attempt), tx: tx.clone() });
        Delivery { subject, message, attempt, acker }
    }
}

impl Stream for InProcess {
    type Item = Delivery;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        let this = &mut *self;
        if let Poll::Ready(Some(r)) = this.retries.poll_recv(cx) {
            // A retry's acker needs a sender: the retry carried one in; any live one will do.
            let tx = match &this.tx {
                Some(tx) => tx.clone(),
                None => {
                    // Draining: a retry that comes back now has nobody to go to after this one.
                    let (tx, _) = mpsc::unbounded_channel();
                    tx
                }
            };
            return Poll::Ready(Some(this.delivery(&tx, r)));
        }
        if let Some(sub) = &mut this.sub {
            match sub.poll_next_unpin(cx) {
                Poll::Ready(Some(incoming)) => {
                    // A live subscription has its sender; a stand-in would do otherwise.
                    let tx = this.tx.clone().unwrap_or_else(|| mpsc::unbounded_channel().0);
                    return Poll::Ready(Some(this.delivery(&tx, (incoming.subject, incoming.message, 1))));
                }
                Poll::Ready(None) => {
                    this.sub = None;
                    this.tx = None;
                }
                Poll::Pending => {}
            }
        }
        if this.sub.is_none() && this.tx.is_none() {
            // Draining: end once no retry can come back (every acker dropped its sender).
            return match this.retries.poll_recv(cx) {
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Ready(Some(r)) => {
                    let (tx, _) = mpsc::unbounded_channel();
                    Poll::Ready(Some(this.delivery(&tx, r)))
                }
                Poll::Pending => Poll::Pending,
            };
        }
        Poll::Pending
    }
}

impl DurableStream for InProcess {
    fn drain(&mut self) -> BoxFuture<'_, Result<()>> {
        async move {
            if let Some(sub) = &mut self.sub {
                sub.drain().await?;
            }
            Ok(())
        }
        .boxed()
    }
}
