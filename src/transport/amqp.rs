//! The RabbitMQ transport (lapin): NATS-like subjects over one topic exchange.
//!
//! - Every subject is a routing key on the durable topic exchange `micro`. A subscription is a
//!   queue bound to it: a queue group maps to one shared auto-delete queue per (group, pattern)
//!   with competing consumers; a broadcast subscription to an exclusive auto-delete queue of
//!   its own. Wildcards: `*` is the same, NATS `>` becomes AMQP `#`.
//! - Requests are published `mandatory` with `reply_to = amq.rabbitmq.reply-to` (direct
//!   reply-to), a `correlation_id`, and the timeout as per-message `expiration`. A request no
//!   queue is bound for comes back as a return: an immediate `Unavailable`.
//! - Publishes wait for the publisher confirm.
//! - One connection uses four channels (requests, publishes, replies, consumers), whatever the
//!   load. When the connection drops, calls fail fast with `Unavailable` while a supervisor
//!   reconnects with backoff and re-declares every subscription behind the same stream.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::{mpsc, oneshot};

use super::{Incoming, Reply, ReplySink, Subscription, SubscriptionStream, Transport};
use crate::error::{Error, ErrorKind, Result};
use crate::message::{headers, Headers, Message};

/// The topic exchange every subject is routed through.
pub const EXCHANGE: &str = "micro";
const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// A RabbitMQ connection that reconnects by itself.
///
/// ```no_run
/// # #[actix::main] async fn main() -> micro::Result<()> {
/// let t = micro::transport::AmqpTransport::connect("amqp://guest:guest@127.0.0.1:5672/%2f").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AmqpTransport {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AmqpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpTransport")
            .field("url", &redact(&self.inner.url))
            .field("connected", &self.inner.link.load().is_some())
            .finish()
    }
}

struct Inner {
    url: String,
    link: ArcSwapOption<Link>,
    subs: Mutex<HashMap<u64, Arc<SubState>>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Result<Message>>>>,
    next_id: AtomicU64,
    generation: AtomicU64,
    closed: AtomicBool,
}

struct Link {
    generation: u64,
    conn: Connection,
    rpc: Channel,
    publish: Channel,
    reply: Channel,
    consume: Channel,
}

struct SubState {
    id: u64,
    pattern: String,
    group: Option<String>,
    tx: mpsc::UnboundedSender<Incoming>,
    /// (link generation, consumer tag) of the consumer currently feeding `tx`
    consumer: Mutex<Option<(u64, String)>>,
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

fn down() -> Error {
    Error::unavailable("the RabbitMQ connection is down; reconnecting")
}

impl AmqpTransport {
    /// Connects; fails with [`ErrorKind::Connect`] naming the URL when the broker is
    /// unreachable. Later connection losses are repaired in the background.
    pub async fn connect(url: &str) -> Result<AmqpTransport> {
        let inner = Arc::new(Inner {
            url: url.to_string(),
            link: ArcSwapOption::empty(),
            subs: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            generation: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        });
        let (link, events) = open_link(&inner).await.map_err(|e| {
            Error::new(
                ErrorKind::Connect,
                format!(
                    "RabbitMQ at {} is unreachable: {e} (start one with `rabbitmq-server -detached`, or `docker compose up -d rabbitmq`)",
                    redact(url)
                ),
            )
        })?;
        inner.link.store(Some(link.clone()));
        tokio::spawn(supervise(Arc::downgrade(&inner), link, events));
        Ok(AmqpTransport { inner })
    }

    /// True while connected.
    pub fn is_connected(&self) -> bool {
        self.inner.link.load().as_ref().is_some_and(|l| l.conn.status().connected())
    }
}

type Events = futures::stream::BoxStream<'static, lapin::Event>;

/// Opens a connection, its channels and the exchange, and (re)creates every subscription.
async fn open_link(inner: &Arc<Inner>) -> Result<(Arc<Link>, Events)> {
    let props = ConnectionProperties::default().with_connection_name("actix-micro".into());
    let conn = tokio::time::timeout(Duration::from_secs(5), Connection::connect(&inner.url, props))
        .await
        .map_err(|_| Error::new(ErrorKind::Connect, "connection attempt timed out"))?
        .map_err(lapin_err)?;
    let events = conn.events_listener().boxed();
    let rpc = conn.create_channel().await.map_err(lapin_err)?;
    let publish = conn.create_channel().await.map_err(lapin_err)?;
    let reply = conn.create_channel().await.map_err(lapin_err)?;
    let consume = conn.create_channel().await.map_err(lapin_err)?;
    rpc.confirm_select(ConfirmSelectOptions::default()).await.map_err(lapin_err)?;
    publish.confirm_select(ConfirmSelectOptions::default()).await.map_err(lapin_err)?;
    publish
        .exchange_declare(
            EXCHANGE.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .map_err(lapin_err)?;
    // Direct reply-to: replies to our requests arrive on this pseudo-queue of the rpc channel.
    let replies = rpc
        .basic_consume(
            DIRECT_REPLY_TO.into(),
            "micro-replies".into(),
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .map_err(lapin_err)?;
    let generation = inner.generation.fetch_add(1, Ordering::SeqCst) + 1;
    let link = Arc::new(Link { generation, conn, rpc, publish, reply, consume });
    let weak = Arc::downgrade(inner);
    tokio::spawn(replies.for_each(move |delivery| {
        if let (Ok(d), Some(inner)) = (delivery, weak.upgrade()) {
            let id = d.properties.correlation_id().as_ref().and_then(|c| c.as_str().parse::<u64>().ok());
            if let Some(tx) = id.and_then(|id| inner.pending.lock().unwrap().remove(&id)) {
                let _ = tx.send(Ok(Message::with_headers(from_properties(&d.properties), d.data.into())));
            }
        }
        futures::future::ready(())
    }));
    let subs: Vec<Arc<SubState>> = inner.subs.lock().unwrap().values().cloned().collect();
    for sub in subs {
        start_consumer(inner, &link, &sub).await?;
    }
    Ok((link, events))
}

/// Watches the connection; when it drops, fails what waits on it and reconnects with backoff.
async fn supervise(inner: Weak<Inner>, mut link: Arc<Link>, mut events: Events) {
    use backon::BackoffBuilder;
    loop {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                ev = events.next() => match ev {
                    Some(lapin::Event::Error(e)) => {
                        tracing::warn!(error = %e, "RabbitMQ connection failed");
                        break;
                    }
                    None => break,
                    Some(_) => {}
                },
                _ = tick.tick() => {
                    if !link.conn.status().connected() {
                        break;
                    }
                }
            }
            if inner.upgrade().is_none_or(|i| i.closed.load(Ordering::SeqCst)) {
                return;
            }
        }
        let Some(strong) = inner.upgrade() else { return };
        if strong.closed.load(Ordering::SeqCst) {
            return;
        }
        strong.link.store(None);
        let waiting: Vec<_> = strong.pending.lock().unwrap().drain().collect();
        for (_, tx) in waiting {
            let _ = tx.send(Err(Error::transport("the RabbitMQ connection dropped while waiting for the reply")));
        }
        drop(strong);
        tracing::warn!(generation = link.generation, "RabbitMQ connection lost; reconnecting");
        let mut backoff = backon::ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(5))
            .without_max_times()
            .build();
        loop {
            let Some(strong) = inner.upgrade() else { return };
            if strong.closed.load(Ordering::SeqCst) {
                return;
            }
            match open_link(&strong).await {
                Ok((new_link, new_events)) => {
                    tracing::info!(generation = new_link.generation, "RabbitMQ connection restored");
                    strong.link.store(Some(new_link.clone()));
                    link = new_link;
                    events = new_events;
                    break;
                }
                Err(e) => {
                    drop(strong);
                    let delay = backoff.next().unwrap_or(Duration::from_secs(5));
                    tracing::debug!(error = %e, ?delay, "RabbitMQ reconnect failed");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

fn lapin_err(e: lapin::Error) -> Error {
    Error::transport(format!("RabbitMQ: {e}")).with_source(e)
}

/// The protocol's request subjects (a service's shared one, a node's own) are also the names of
/// the queues that take them, so requests to them can use the default exchange.
fn is_point_to_point(subject: &str) -> bool {
    (subject.starts_with(super::subject::RPC_PREFIX) || subject.starts_with(super::subject::NODE_PREFIX))
        && subject.len() <= 255
        && !subject.split('.').any(|t| t == "*" || t == ">")
}

/// The routing key pattern of a subject pattern: NATS `>` becomes AMQP `#`.
pub(crate) fn binding_key(pattern: &str) -> String {
    pattern.split('.').map(|t| if t == ">" { "#" } else { t }).collect::<Vec<_>>().join(".")
}

/// The queue of a queue group: one per (group, pattern), so a group on two patterns gets two
/// queues, as NATS queue groups are per subject.
pub(crate) fn group_queue(group: &str, pattern: &str) -> String {
    let name = if group == pattern { group.to_string() } else { format!("{group}@{pattern}") };
    if name.len() <= 255 {
        name
    } else {
        format!("{}~{:016x}", &name[..200], fxhash(&name))
    }
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3))
}

async fn start_consumer(inner: &Arc<Inner>, link: &Link, sub: &Arc<SubState>) -> Result<()> {
    let ch = &link.consume;
    let queue = match &sub.group {
        Some(g) => {
            let q = group_queue(g, &sub.pattern);
            let opts = QueueDeclareOptions { auto_delete: true, ..Default::default() };
            ch.queue_declare(q.as_str().into(), opts, FieldTable::default()).await.map_err(lapin_err)?;
            q
        }
        None => {
            // A node's own subject names its queue, so requests can go straight to it through
            // the default exchange; other broadcast queues get a unique suffix.
            let mut q = if is_point_to_point(&sub.pattern) && sub.pattern.starts_with(super::subject::NODE_PREFIX) {
                sub.pattern.clone()
            } else {
                format!("{}~{}", sub.pattern, uuid::Uuid::now_v7().simple())
            };
            q.truncate(255);
            let opts = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
            ch.queue_declare(q.as_str().into(), opts, FieldTable::default()).await.map_err(lapin_err)?;
            q
        }
    };
    ch.queue_bind(
        queue.as_str().into(),
        EXCHANGE.into(),
        binding_key(&sub.pattern).into(),
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
    *sub.consumer.lock().unwrap() = Some((link.generation, tag));
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
            let incoming = Incoming {
                subject: d.routing_key.as_str().to_string(),
                message: Message::with_headers(from_properties(props), d.data.into()),
                reply,
            };
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
            let props = to_properties(&message.headers).with_correlation_id(self.correlation_id);
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

pub(crate) fn to_properties(h: &Headers) -> BasicProperties {
    let mut table = FieldTable::default();
    let mut props = BasicProperties::default();
    for (k, v) in h.iter() {
        if k.eq_ignore_ascii_case(headers::CONTENT_TYPE) {
            props = props.with_content_type(v.into());
        } else if k.eq_ignore_ascii_case(headers::ID) {
            props = props.with_message_id(v.into());
        } else {
            table.insert(k.into(), AMQPValue::LongString(v.into()));
        }
    }
    props.with_headers(table)
}

pub(crate) fn from_properties(p: &BasicProperties) -> Headers {
    let table = p.headers().as_ref();
    let mut h = Headers::with_capacity(2 + table.map_or(0, |t| t.inner().len()));
    if let Some(ct) = p.content_type() {
        h.push(headers::CONTENT_TYPE, ct.as_str());
    }
    if let Some(id) = p.message_id() {
        h.push(headers::ID, id.as_str());
    }
    if let Some(table) = table {
        for (k, v) in table.inner() {
            let value = match v {
                AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                AMQPValue::ShortString(s) => s.as_str().to_string(),
                AMQPValue::Boolean(b) => b.to_string(),
                AMQPValue::ShortShortInt(n) => n.to_string(),
                AMQPValue::ShortShortUInt(n) => n.to_string(),
                AMQPValue::ShortInt(n) => n.to_string(),
                AMQPValue::ShortUInt(n) => n.to_string(),
                AMQPValue::LongInt(n) => n.to_string(),
                AMQPValue::LongUInt(n) => n.to_string(),
                AMQPValue::LongLongInt(n) => n.to_string(),
                AMQPValue::Timestamp(n) => n.to_string(),
                _ => continue,
            };
            h.push(crate::message::headers::intern(k.as_str()), value);
        }
    }
    h
}

struct PendingGuard<'a> {
    inner: &'a Inner,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.inner.pending.lock().unwrap().remove(&self.id);
    }
}

struct AmqpSubscription {
    rx: mpsc::UnboundedReceiver<Incoming>,
    inner: Arc<Inner>,
    id: u64,
    removed: bool,
}

impl AmqpSubscription {
    /// Forgets the subscription (no re-creation on reconnect) and cancels its consumer.
    fn remove(&mut self) -> Option<(Arc<Link>, String)> {
        if self.removed {
            return None;
        }
        self.removed = true;
        let sub = self.inner.subs.lock().unwrap().remove(&self.id)?;
        let (generation, tag) = sub.consumer.lock().unwrap().take()?;
        let link = self.inner.link.load_full().filter(|l| l.generation == generation)?;
        Some((link, tag))
    }
}

impl futures::Stream for AmqpSubscription {
    type Item = Incoming;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Incoming>> {
        self.rx.poll_recv(cx)
    }
}

impl SubscriptionStream for AmqpSubscription {
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

impl Drop for AmqpSubscription {
    fn drop(&mut self) {
        if let Some((link, tag)) = self.remove() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = link.consume.basic_cancel(tag.as_str().into(), BasicCancelOptions::default()).await;
                });
            }
        }
    }
}

impl Transport for AmqpTransport {
    fn name(&self) -> &'static str {
        "rabbitmq"
    }

    fn request<'a>(
        &'a self,
        subject: &'a str,
        message: &'a Message,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Message>> {
        async move {
            let link = self.inner.link.load_full().ok_or_else(down)?;
            let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            self.inner.pending.lock().unwrap().insert(id, tx);
            let _guard = PendingGuard { inner: &self.inner, id };
            let deadline = tokio::time::Instant::now() + timeout;
            let props = to_properties(&message.headers)
                .with_correlation_id(id.to_string().into())
                .with_reply_to(DIRECT_REPLY_TO.into())
                .with_expiration(timeout.as_millis().max(1).to_string().into());
            let opts = BasicPublishOptions { mandatory: true, ..Default::default() };
            // Request subjects are queue names: the default exchange routes them without the
            // topic exchange's pattern matching (about a third of the broker's work per call).
            let exchange = if is_point_to_point(subject) { "" } else { EXCHANGE };
            let confirm = link
                .rpc
                .basic_publish(exchange.into(), subject.into(), opts, &message.body, props)
                .await
                .map_err(|e| Error::unavailable(format!("request on {subject} not sent: {e}")))?;
            let timed_out = || Error::timeout(format!("no reply on {subject} within {timeout:?}"));
            let mut rx = rx;
            tokio::select! {
                reply = &mut rx => return reply.unwrap_or_else(|_| Err(down())),
                confirmed = confirm => match confirmed {
                    Ok(Confirmation::Ack(Some(returned))) | Ok(Confirmation::Nack(Some(returned))) => {
                        // lapin hands the oldest waiting return to whichever confirm completes
                        // next: it may be another request's. Its correlation id says whose.
                        let props = &returned.delivery.properties;
                        let owner = props.correlation_id().as_ref().and_then(|c| c.as_str().parse::<u64>().ok());
                        let unroutable = || {
                            Error::unavailable(format!("no responders on {}", returned.delivery.routing_key.as_str()))
                        };
                        if owner == Some(id) {
                            return Err(unroutable());
                        }
                        if let Some(other) = owner.and_then(|o| self.inner.pending.lock().unwrap().remove(&o)) {
                            let _ = other.send(Err(unroutable()));
                        }
                    }
                    Ok(Confirmation::Nack(None)) => {
                        return Err(Error::unavailable(format!("RabbitMQ refused the request on {subject}")));
                    }
                    Ok(_) => {}
                    Err(e) => return Err(lapin_err(e)),
                },
                _ = tokio::time::sleep_until(deadline) => return Err(timed_out()),
            }
            match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(reply)) => reply,
                Ok(Err(_)) => Err(down()),
                Err(_) => Err(timed_out()),
            }
        }
        .boxed()
    }

    fn publish<'a>(&'a self, subject: &'a str, message: Message) -> BoxFuture<'a, Result<()>> {
        async move {
            let link = self.inner.link.load_full().ok_or_else(down)?;
            let props = to_properties(&message.headers);
            let confirm = link
                .publish
                .basic_publish(EXCHANGE.into(), subject.into(), BasicPublishOptions::default(), &message.body, props)
                .await
                // Not handed to the broker at all: the event provably was not published.
                .map_err(|e| Error::unavailable(format!("publish on {subject} not sent: {e}")).with_source(e))?;
            match confirm.await {
                Ok(Confirmation::Nack(_)) => {
                    Err(Error::new(ErrorKind::Broker, format!("RabbitMQ did not accept the publish on {subject}")))
                }
                Ok(_) => Ok(()),
                Err(e) => {
                    Err(Error::new(ErrorKind::Broker, format!("publish on {subject} unconfirmed: {e}")).with_source(e))
                }
            }
        }
        .boxed()
    }

    fn subscribe<'a>(&'a self, pattern: &'a str, queue: Option<&'a str>) -> BoxFuture<'a, Result<Subscription>> {
        async move {
            if !super::subject::is_valid(pattern, true) {
                return Err(Error::config(format!("invalid subject {pattern:?}")));
            }
            let link = self.inner.link.load_full().ok_or_else(down)?;
            let (tx, rx) = mpsc::unbounded_channel();
            let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
            let sub = Arc::new(SubState {
                id,
                pattern: pattern.to_string(),
                group: queue.map(str::to_string),
                tx,
                consumer: Mutex::new(None),
            });
            self.inner.subs.lock().unwrap().insert(id, sub.clone());
            let mut subscription = AmqpSubscription { rx, inner: self.inner.clone(), id, removed: false };
            if let Err(e) = start_consumer(&self.inner, &link, &sub).await {
                subscription.remove();
                return Err(Error::new(ErrorKind::Broker, format!("subscribe to {pattern} failed: {e}")));
            }
            Ok(Subscription::new(subscription))
        }
        .boxed()
    }

    fn flush(&self) -> BoxFuture<'_, Result<()>> {
        // Every publish already waited for its confirm; nothing is buffered here.
        futures::future::ready(Ok(())).boxed()
    }

    fn close(&self) -> BoxFuture<'_, Result<()>> {
        async move {
            self.inner.closed.store(true, Ordering::SeqCst);
            if let Some(link) = self.inner.link.swap(None) {
                link.conn.close(200, "bye".into()).await.map_err(lapin_err)?;
            }
            Ok(())
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_subjects_go_point_to_point() {
        assert!(is_point_to_point("micro.rpc.go.micro.srv.greeter"));
        assert!(is_point_to_point("micro.node.go.micro.srv.greeter-0193"));
        assert!(!is_point_to_point("micro.event.user.login"));
        assert!(!is_point_to_point("micro.rpc.*"));
        assert!(!is_point_to_point(&format!("micro.node.{}", "x".repeat(300))));
    }

    #[test]
    fn wildcards_map_to_amqp() {
        assert_eq!(binding_key("micro.event.order.>"), "micro.event.order.#");
        assert_eq!(binding_key("micro.event.*.login"), "micro.event.*.login");
    }

    #[test]
    fn group_queues_are_per_pattern_and_bounded() {
        assert_eq!(group_queue("micro.rpc.greeter", "micro.rpc.greeter"), "micro.rpc.greeter");
        assert_eq!(group_queue("audit", "micro.event.user.login"), "audit@micro.event.user.login");
        assert!(group_queue("g", &"x.".repeat(200)).len() <= 255);
    }

    #[test]
    fn headers_round_trip_through_properties() {
        let mut h = Headers::new();
        h.push(headers::CONTENT_TYPE, "application/json");
        h.push(headers::ID, "abc");
        h.push(headers::ENDPOINT, "Say.Hello");
        h.push("Micro-Meta-tenant", "acme");
        let back = from_properties(&to_properties(&h));
        for (k, v) in h.iter() {
            assert_eq!(back.get(k), Some(v), "{k}");
        }
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redact("amqp://guest:secret@host:5672/%2f"), "amqp://***@host:5672/%2f");
    }
}
