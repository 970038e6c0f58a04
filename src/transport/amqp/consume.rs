//! Plain subscriptions: a queue per subscription or queue group, bound to the exchange, consumed
//! without acks, and the replies to the requests they receive.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{FieldTable, ShortString};
use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::naming::{binding_key, endpoints_queue, group_queue};
use super::properties::{from_properties, short, to_properties};
use super::{down, lapin_err, Inner, Link, EXCHANGE};
use crate::error::{Error, ErrorKind, Result};
use crate::message::Message;
use crate::transport::kit::{self, Fed, Stop};
use crate::transport::{Incoming, Reply, ReplySink, Subscription};

/// A plain subscription, re-created on every connection until it drains or drops.
pub(super) struct SubState {
    id: u64,
    pattern: String,
    group: Option<String>,
    tx: mpsc::UnboundedSender<Incoming>,
    /// (link generation, consumer tag) of the consumer currently feeding `tx`
    consumer: Mutex<Option<(u64, String)>>,
}

/// Subscribes: declares and binds the queue, starts its consumer, and keeps it across reconnects.
pub(super) async fn subscribe(inner: &Arc<Inner>, pattern: &str, queue: Option<&str>) -> Result<Subscription> {
    kit::check_subject(pattern, true)?;
    // Its binding key (as long as the pattern) must fit an AMQP short string.
    short("the subject pattern", pattern)?;
    let link = inner.link.load_full().ok_or_else(down)?;
    let (tx, rx) = mpsc::unbounded_channel();
    let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
    let sub = Arc::new(SubState {
        id,
        pattern: pattern.to_string(),
        group: queue.map(str::to_string),
        tx,
        consumer: Mutex::new(None),
    });
    inner.subs.lock().insert(id, sub.clone());
    let mut guard = SubGuard { inner: inner.clone(), id, removed: false };
    if let Err(e) = start_consumer(inner, &link, &sub).await {
        guard.remove();
        return Err(Error::new(ErrorKind::Broker, format!("subscribe to {pattern} failed: {e}")));
    }
    Ok(Subscription::new(Fed::new(rx, guard)))
}

pub(super) async fn start_consumer(inner: &Arc<Inner>, link: &Link, sub: &Arc<SubState>) -> Result<()> {
    let ch = &link.consume;
    let queue = match (&sub.group, endpoints_queue(&sub.pattern)) {
        // A node's or a service's endpoints: the queue is named after the base subject, so
        // requests reach it through the default exchange (see `request_route`).
        (group, Some(base)) => {
            let opts = QueueDeclareOptions { exclusive: group.is_none(), auto_delete: true, ..Default::default() };
            ch.queue_declare(base.into(), opts, FieldTable::default()).await.map_err(lapin_err)?;
            base.to_string()
        }
        (Some(g), None) => {
            let q = group_queue(g, &sub.pattern);
            let opts = QueueDeclareOptions { auto_delete: true, ..Default::default() };
            ch.queue_declare(q.as_str().into(), opts, FieldTable::default()).await.map_err(lapin_err)?;
            q
        }
        (None, None) => {
            // Broadcast queues get a unique suffix.
            let mut q = format!("{}~{}", sub.pattern, uuid::Uuid::now_v7().simple());
            q.truncate(255);
            let opts = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
            ch.queue_declare(q.as_str().into(), opts, FieldTable::default()).await.map_err(lapin_err)?;
            q
        }
    };
    ch.queue_bind(
        queue.as_str().into(),
        EXCHANGE.into(),
        short("the subject pattern", &binding_key(&sub.pattern))?,
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .map_err(lapin_err)?;
    let tag = format!("micro-{}-{}", sub.id, link.generation);
    let mut consumer = ch
        .basic_consume(
            queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .map_err(lapin_err)?;
    *sub.consumer.lock() = Some((link.generation, tag));
    let sub = sub.clone();
    let weak = Arc::downgrade(inner);
    tokio::spawn(async move {
        while let Some(Ok(d)) = consumer.next().await {
            let props = &d.properties;
            let reply = match (props.reply_to(), props.correlation_id()) {
                (Some(to), Some(corr)) => {
                    Some(Reply::new(AmqpReply { inner: weak.clone(), to: to.clone(), correlation_id: corr.clone() }))
                }
                _ => None,
            };
            // Through the default exchange, a request's endpoint is in the `type` property.
            let subject = match props.kind() {
                Some(endpoint) if d.exchange.as_str().is_empty() => {
                    format!("{}.{}", d.routing_key.as_str(), endpoint.as_str())
                }
                _ => d.routing_key.as_str().to_string(),
            };
            let incoming =
                Incoming { subject, message: Message::with_headers(from_properties(props), d.data.into()), reply };
            if sub.tx.send(incoming).is_err() {
                break;
            }
        }
    });
    Ok(())
}

struct AmqpReply {
    inner: Weak<Inner>,
    to: ShortString,
    correlation_id: ShortString,
}

impl ReplySink for AmqpReply {
    fn send(self: Box<Self>, message: Message) -> BoxFuture<'static, Result<()>> {
        async move {
            let link = self.inner.upgrade().and_then(|i| i.link.load_full()).ok_or_else(down)?;
            let props = to_properties(&message.headers)?.with_correlation_id(self.correlation_id);
            // No confirm is awaited: the reply channel is not in confirm mode, and a requester
            // that went away simply never sees it.
            link.reply
                .basic_publish("".into(), self.to, BasicPublishOptions::default(), &message.body, props)
                .await
                .map_err(lapin_err)?;
            Ok(())
        }
        .boxed()
    }
}

/// A subscription's hold on its consumer: draining or dropping it cancels the consumer.
struct SubGuard {
    inner: Arc<Inner>,
    id: u64,
    removed: bool,
}

impl SubGuard {
    /// Forgets the subscription (no re-creation on reconnect) and cancels its consumer.
    fn remove(&mut self) -> Option<(Arc<Link>, String)> {
        if self.removed {
            return None;
        }
        self.removed = true;
        let sub = self.inner.subs.lock().remove(&self.id)?;
        let (generation, tag) = sub.consumer.lock().take()?;
        let link = self.inner.link.load_full().filter(|l| l.generation == generation)?;
        Some((link, tag))
    }
}

impl Stop for SubGuard {
    fn drain(&mut self) -> BoxFuture<'_, Result<()>> {
        async move {
            // Cancelling the consumer ends its delivery stream after what was already received;
            // the forwarder then drops the last sender and this stream ends.
            if let Some((link, tag)) = self.remove() {
                link.consume
                    .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
                    .await
                    .map_err(lapin_err)?;
            }
            Ok(())
        }
        .boxed()
    }
}

impl Drop for SubGuard {
    fn drop(&mut self) {
        if let Some((link, tag)) = self.remove() {
            kit::spawn_if_running(async move {
                let _ = link.consume.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
            });
        }
    }
}
