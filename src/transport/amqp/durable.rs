//! Durable subscriptions: a durable (quorum) queue per group and pattern, the group's
//! dead-letter queue, a consumer with manual acks and prefetch on a channel of its own, retries
//! as confirmed copies, and durable publishes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, ConfirmSelectOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use parking_lot::Mutex;
use tokio::sync::{mpsc, Notify};

use super::acks::Acks;
use super::confirm::DurablePublisher;
use super::naming::{binding_key, dead_letter_queue, durable_queue};
use super::properties::{from_properties, short, to_properties};
use super::{down, lapin_err, Inner, Link, EXCHANGE};
use crate::error::{Error, ErrorKind, Result};
use crate::message::Message;
use crate::transport::kit::{self, Fed, Stop};
use crate::transport::{AckSink, Acker, Delivery, DurableSpec, DurableSubscription};

/// The attempt a retried copy of a durable message is on (absent: 1).
const ATTEMPT_HEADER: &str = "Micro-Attempt";
/// The subject a retried copy was first published on (the copy goes to its queue by name).
const SUBJECT_HEADER: &str = "Micro-Subject";
/// Quorum queues count the deliveries of a message that were not settled in this header.
const DELIVERY_COUNT_HEADER: &str = "x-delivery-count";

/// A durable subscription, re-created on every connection until its stream drains or drops.
pub(super) struct DurableState {
    id: u64,
    spec: DurableSpec,
    queue: String,
    /// The group's dead-letter queue and the subject bound to it, when it has one.
    dead_letter: Option<(String, String)>,
    tx: mpsc::UnboundedSender<Delivery>,
    /// The consumer currently feeding `tx`.
    consumer: Mutex<Option<DurableConsumer>>,
}

/// A durable subscription's consumer on one connection: its own channel, which also sends the
/// subscription's retries.
#[derive(Clone)]
pub(super) struct DurableConsumer {
    generation: u64,
    channel: Channel,
    tag: String,
}

/// Declares a durable queue: a quorum queue, else (quorum queues unsupported, or the queue
/// exists as a classic one, which closes the channel) a classic durable queue on a fresh
/// channel. Returns the channel to go on with and the kind declared.
async fn declare_durable_queue(
    conn: &Connection,
    channel: Channel,
    queue: &str,
    expire_after: Duration,
) -> Result<(Channel, &'static str)> {
    let opts = QueueDeclareOptions { durable: true, ..Default::default() };
    // Unused for this long (no consumer, no redeclare), the broker deletes it.
    let mut classic = FieldTable::default();
    classic.insert("x-expires".into(), AMQPValue::LongLongInt(expire_after.as_millis().min(i64::MAX as u128) as i64));
    let mut quorum = classic.clone();
    quorum.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    let (channel, kind) = match channel.queue_declare(queue.into(), opts, quorum).await {
        Ok(_) => (channel, "quorum"),
        Err(e) => {
            tracing::debug!(queue, error = %e, "no quorum queue; declaring a classic durable queue");
            let channel = conn.create_channel().await.map_err(lapin_err)?;
            channel.queue_declare(queue.into(), opts, classic).await.map_err(lapin_err)?;
            (channel, "classic")
        }
    };
    tracing::info!(queue, kind, "durable queue declared");
    Ok((channel, kind))
}

pub(super) async fn start_durable(inner: &Arc<Inner>, link: &Link, state: &Arc<DurableState>) -> Result<()> {
    let spec = &state.spec;
    let mut channel = link.conn.create_channel().await.map_err(lapin_err)?;
    // The group's queue on the pattern, and its dead-letter queue so dead letters are kept.
    let dead_letter = state.dead_letter.iter().map(|(queue, subject)| (queue, subject.clone()));
    for (queue, key) in std::iter::once((&state.queue, binding_key(&spec.subject))).chain(dead_letter) {
        channel = declare_durable_queue(&link.conn, channel, queue, spec.expire_after).await?.0;
        channel
            .queue_bind(
                queue.as_str().into(),
                EXCHANGE.into(),
                short("the subject pattern", &key)?,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(lapin_err)?;
    }
    let prefetch = u16::try_from(spec.concurrency.max(1)).unwrap_or(u16::MAX);
    channel.basic_qos(prefetch, BasicQosOptions::default()).await.map_err(lapin_err)?;
    channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(lapin_err)?;
    let tag = format!("micro-durable-{}-{}", state.id, link.generation);
    let mut consumer = channel
        .basic_consume(
            state.queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions { no_ack: false, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .map_err(lapin_err)?;
    let this = DurableConsumer { generation: link.generation, channel: channel.clone(), tag };
    {
        let mut current = state.consumer.lock();
        let already = current.as_ref().is_some_and(|c| c.generation == link.generation);
        // Gone (drained or dropped) while this was being set up, or set up twice on one
        // connection (a subscribe racing a reconnect): this consumer is not needed.
        if already || !inner.durables.lock().contains_key(&state.id) {
            drop(current);
            tokio::spawn(async move {
                let _ = this.channel.close(200, "bye".into()).await;
            });
            return Ok(());
        }
        *current = Some(this);
    }
    let publisher = Arc::new(DurablePublisher::start(channel));
    let queue: Arc<str> = state.queue.as_str().into();
    let tx = state.tx.clone();
    let settling = inner.settling.clone();
    let acks = Arc::new(Acks::default());
    tokio::spawn(async move {
        while let Some(Ok(d)) = consumer.next().await {
            if tx.send(durable_delivery(d, &queue, &publisher, &settling, &acks)).is_err() {
                break;
            }
        }
    });
    Ok(())
}

/// A lapin delivery as a [`Delivery`]: the attempt and the original subject read, and the
/// transport's own headers stripped.
fn durable_delivery(
    d: lapin::message::Delivery,
    queue: &Arc<str>,
    publisher: &Arc<DurablePublisher>,
    settling: &Arc<Settling>,
    acks: &Arc<Acks>,
) -> Delivery {
    let mut headers = from_properties(&d.properties);
    let first = headers.take(ATTEMPT_HEADER).and_then(|v| v.trim().parse::<u32>().ok()).unwrap_or(1).max(1);
    let unsettled = headers.take(DELIVERY_COUNT_HEADER).and_then(|v| v.trim().parse::<u32>().ok()).unwrap_or(0);
    let attempt = first.saturating_add(unsettled);
    let subject = headers.take(SUBJECT_HEADER).unwrap_or_else(|| d.routing_key.as_str().to_string());
    let body = Bytes::from(d.data);
    acks.delivered(d.delivery_tag);
    let acker = AmqpAcker {
        acker: d.acker,
        tag: d.delivery_tag,
        acks: acks.clone(),
        publisher: publisher.clone(),
        settling: settling.clone(),
        queue: queue.clone(),
        subject: subject.clone(),
        properties: d.properties,
        body: body.clone(),
        attempt,
    };
    Delivery { subject, message: Message::with_headers(headers, body), attempt, acker: Acker::new(acker) }
}

/// The properties of a retry's copy: the original's, persistent, on the next attempt, with the
/// subject it was published on, without the quorum queue's count of the original.
fn retry_properties(original: &BasicProperties, attempt: u32, subject: &str) -> BasicProperties {
    let mut table = original.headers().as_ref().map(|t| t.inner().clone()).unwrap_or_default();
    table.remove(DELIVERY_COUNT_HEADER);
    table.insert(ATTEMPT_HEADER.into(), AMQPValue::LongString(attempt.to_string().into()));
    table.insert(SUBJECT_HEADER.into(), AMQPValue::LongString(subject.into()));
    original.clone().with_headers(FieldTable::from(table)).with_delivery_mode(2)
}

struct AmqpAcker {
    acker: lapin::Acker,
    /// Its delivery tag, and the channel's acks it is settled among.
    tag: u64,
    acks: Arc<Acks>,
    /// Keeps the channel open until this delivery is settled.
    publisher: Arc<DurablePublisher>,
    settling: Arc<Settling>,
    queue: Arc<str>,
    subject: String,
    properties: BasicProperties,
    body: Bytes,
    attempt: u32,
}

/// An ack or nack's result: `Ok(false)` means lapin did not send it (the channel is gone).
fn settled(what: &str, result: lapin::Result<bool>) -> Result<()> {
    match result {
        Ok(true) => Ok(()),
        Ok(false) => Err(Error::unavailable(format!(
            "cannot {what}: the delivery's channel is gone; RabbitMQ will deliver it again"
        ))),
        Err(e) => Err(Error::unavailable(format!("cannot {what}: {e}; RabbitMQ will deliver it again")).with_source(e)),
    }
}

// The futures below own the whole acker, its hold on the channel included, until the frame is
// written (lapin resolves an ack once it is sent): the channel closes only after its last settle
// went out, and the connection's `close` waits for every settle under way.
impl AmqpAcker {
    /// Hands the delivery back to its queue (`basic.nack` with `requeue`); once that is sent,
    /// it no longer holds up the channel's coalesced acks.
    async fn requeue(&self) -> Result<()> {
        let requeue = BasicNackOptions { requeue: true, multiple: false };
        let result = settled("nack", self.acker.nack(requeue).await);
        self.acks.forget(self.tag);
        result
    }
}

impl AckSink for AmqpAcker {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        let _settle = self.settling.start();
        async move {
            let _settle = _settle;
            let AmqpAcker { acks, tag, acker, .. } = *self;
            settled("ack", acks.ack(tag, acker).await)
        }
        .boxed()
    }

    fn hand_back(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        let _settle = self.settling.start();
        async move {
            let _settle = _settle;
            self.requeue().await
        }
        .boxed()
    }

    fn retry(self: Box<Self>, delay: Duration) -> BoxFuture<'static, Result<()>> {
        // The message stays unacked (holding a prefetch slot) while it waits; a lost channel
        // meanwhile hands it back to RabbitMQ, and the copy is then not sent.
        kit::after(delay, async move {
            // From here the copy and the settle of the original are under way.
            let _settle = self.settling.start();
            let properties = retry_properties(&self.properties, self.attempt.saturating_add(1), &self.subject);
            match self.publisher.publish("", &self.queue, self.body.clone(), properties).await {
                Ok(()) => {
                    if let Err(e) = settled("ack", self.acks.ack(self.tag, self.acker.clone()).await) {
                        tracing::debug!(queue = %self.queue, error = %e, "retry copy sent, original not acked: it comes twice");
                    }
                }
                Err(e) => {
                    tracing::warn!(queue = %self.queue, error = %e, "retry copy not stored; the original goes back to its queue");
                    if let Err(e) = self.requeue().await {
                        tracing::debug!(queue = %self.queue, error = %e, "nack failed");
                    }
                }
            }
        });
        futures::future::ready(Ok(())).boxed()
    }
}

/// A durable subscription's hold on its consumer: draining or dropping it cancels the consumer.
pub(super) struct DurableGuard {
    inner: Arc<Inner>,
    id: u64,
    removed: bool,
}

impl DurableGuard {
    /// Forgets the subscription (no re-creation on reconnect) and takes its current consumer.
    pub(super) fn remove(&mut self) -> Option<DurableConsumer> {
        if self.removed {
            return None;
        }
        self.removed = true;
        let state = self.inner.durables.lock().remove(&self.id)?;
        let consumer = state.consumer.lock().take();
        consumer
    }
}

impl Stop for DurableGuard {
    fn drain(&mut self) -> BoxFuture<'_, Result<()>> {
        async move {
            // Cancelling ends the consumer's stream after what was already received; the channel
            // stays open for their acks.
            if let Some(consumer) = self.remove() {
                let live = self.inner.link.load().as_ref().is_some_and(|l| l.generation == consumer.generation);
                let cancelled = if live {
                    consumer.channel.basic_cancel(consumer.tag.as_str().into(), BasicCancelOptions::default()).await
                } else {
                    Ok(())
                };
                cancelled.map_err(lapin_err)?;
            }
            Ok(())
        }
        .boxed()
    }
}

impl Drop for DurableGuard {
    fn drop(&mut self) {
        // Stop consuming. The channel stays open for the deliveries still being handled, and
        // closes once the last of them is settled or dropped (see `confirm::run`);
        // what is unacked then goes back to the queue.
        if let Some(consumer) = self.remove() {
            let live = self.inner.link.load().as_ref().is_some_and(|l| l.generation == consumer.generation);
            if live {
                kit::spawn_if_running(async move {
                    let _ = consumer
                        .channel
                        .basic_cancel(consumer.tag.as_str().into(), BasicCancelOptions::default())
                        .await;
                });
            }
        }
    }
}

/// Subscribes durably: declares the group's queues and starts its consumer on a channel of its
/// own, and keeps it across reconnects.
pub(super) async fn subscribe(inner: &Arc<Inner>, spec: &DurableSpec) -> Result<DurableSubscription> {
    kit::check_durable(spec)?;
    short("the subject pattern", &spec.subject)?;
    let link = inner.link.load_full().ok_or_else(down)?;
    let (tx, rx) = mpsc::unbounded_channel();
    let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
    let state = Arc::new(DurableState {
        id,
        spec: spec.clone(),
        queue: durable_queue(&spec.group, &spec.subject),
        dead_letter: spec.dead_letter.as_ref().map(|d| (dead_letter_queue(d), d.clone())),
        tx,
        consumer: Mutex::new(None),
    });
    inner.durables.lock().insert(id, state.clone());
    let mut guard = DurableGuard { inner: inner.clone(), id, removed: false };
    if let Err(e) = start_durable(inner, &link, &state).await {
        if let Some(consumer) = guard.remove() {
            let _ = consumer.channel.close(200, "bye".into()).await;
        }
        return Err(Error::new(
            ErrorKind::Broker,
            format!("durable subscription of {} to {} failed: {e}", spec.group, spec.subject),
        ));
    }
    Ok(DurableSubscription::new(Fed::new(rx, guard)))
}

/// Publishes persistently on the connection's durable publisher; resolves with the confirm.
pub(super) async fn publish(inner: &Inner, subject: &str, message: Message) -> Result<()> {
    let link = inner.link.load_full().ok_or_else(down)?;
    let publisher = link.durable_publisher().await?;
    let properties = to_properties(&message.headers)?;
    publisher.publish(EXCHANGE, subject, message.body, properties).await
}

/// Deletes a group's durable queue.
pub(super) async fn delete(inner: &Inner, spec: &DurableSpec) -> Result<()> {
    let link = inner.link.load_full().ok_or_else(down)?;
    // A channel of its own: deleting is rare, and an error closes the channel.
    let channel = link.conn.create_channel().await.map_err(lapin_err)?;
    let queue = durable_queue(&spec.group, &spec.subject);
    let deleted = channel.queue_delete(queue.as_str().into(), lapin::options::QueueDeleteOptions::default()).await;
    let _ = channel.close(200, "bye".into()).await;
    deleted.map(|_| ()).map_err(|e| {
        Error::new(ErrorKind::Broker, format!("deleting durable queue {queue} failed: {e}")).with_source(e)
    })
}

/// The ready messages of a group's durable queue, by a passive declare (on a channel of its
/// own: a missing queue closes the channel). A queue that does not exist holds nothing.
pub(super) async fn pending(inner: &Inner, spec: &DurableSpec) -> Result<Option<u64>> {
    let link = inner.link.load_full().ok_or_else(down)?;
    let channel = link.conn.create_channel().await.map_err(lapin_err)?;
    let queue = durable_queue(&spec.group, &spec.subject);
    let opts = QueueDeclareOptions { passive: true, durable: true, ..Default::default() };
    let declared = channel.queue_declare(queue.as_str().into(), opts, FieldTable::default()).await;
    let _ = channel.close(200, "bye".into()).await;
    match declared {
        Ok(q) => Ok(Some(u64::from(q.message_count()))),
        Err(e) if e.to_string().contains("NOT_FOUND") => Ok(Some(0)),
        Err(e) => Err(lapin_err(e)),
    }
}

/// Settles (acks and nacks) under way on a connection's durable channels: its `close` waits
/// until they are written.
#[derive(Debug, Default)]
pub(super) struct Settling {
    count: AtomicUsize,
    idle: Notify,
}

/// One settle under way.
pub(super) struct SettleGuard(Arc<Settling>);

impl Settling {
    fn start(self: &Arc<Self>) -> SettleGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        SettleGuard(self.clone())
    }

    /// Waits until no settle is under way, at most `timeout`; false if some still were.
    pub(super) async fn idle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.count.load(Ordering::Acquire) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.count.load(Ordering::Acquire) == 0;
            }
        }
    }
}

impl Drop for SettleGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{headers, Headers};

    #[test]
    fn retry_copies_count_the_attempt_and_keep_the_subject() {
        let mut h = Headers::new();
        h.push(headers::ID, "abc");
        h.push("Micro-Meta-tenant", "acme");
        let mut table = to_properties(&h).unwrap().headers().clone().unwrap_or_default();
        table.insert(DELIVERY_COUNT_HEADER.into(), AMQPValue::LongLongInt(2));
        let original = to_properties(&h).unwrap().with_headers(table);
        let copy = retry_properties(&original, 4, "micro.event.user.login");
        assert_eq!(copy.delivery_mode(), &Some(2));
        let mut back = from_properties(&copy);
        assert_eq!(back.take(ATTEMPT_HEADER).as_deref(), Some("4"));
        assert_eq!(back.take(SUBJECT_HEADER).as_deref(), Some("micro.event.user.login"));
        assert_eq!(back.get(DELIVERY_COUNT_HEADER), None);
        assert_eq!((back.get(headers::ID), back.get("Micro-Meta-tenant")), (Some("abc"), Some("acme")));
    }
}
