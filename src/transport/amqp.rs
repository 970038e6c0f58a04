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
//! - Durable publishes are persistent (`delivery_mode = 2`) and `mandatory`, with the event id
//!   as `message_id`, on a confirm-mode channel of their own, opened on first use. They resolve
//!   with the publisher confirm; a message no queue is bound for comes back as a return and is
//!   an `Unavailable` error. lapin hands a return to whichever confirm completes next, so every
//!   durable publish carries a correlation id and one task per channel publishes and collects
//!   the confirms in delivery-tag order, telling each publish whether its own message came
//!   back.
//! - A durable subscription is a durable queue `durable:<group>@<pattern>` (a quorum queue,
//!   a classic durable one where quorum queues are unavailable or the queue already exists as
//!   classic) bound to the pattern, and the group's dead-letter queue `<group>.dlq` bound to
//!   `micro.event.<group>.dlq`. Each durable subscription consumes on a channel of its own:
//!   prefetch = its concurrency, manual acks, confirm mode for its retries. A retry is a
//!   persistent copy sent (after the delay, confirmed like a durable publish) to the queue by
//!   name through the default exchange, so only this group gets it again, with the attempt in
//!   the `Micro-Attempt` header and the original subject in `Micro-Subject`; then the original
//!   is acked (nacked back to the queue if the copy was not stored). A delivery's attempt is
//!   `Micro-Attempt` (1 when absent) plus the quorum queue's `x-delivery-count` (deliveries
//!   that were never settled). Neither header is handed up.
//! - One connection uses four channels (requests, publishes, replies, consumers), one more for
//!   durable publishes once used, and one per durable subscription, whatever the load. When the
//!   connection drops, calls fail fast with `Unavailable` while a supervisor reconnects with
//!   backoff and re-declares every subscription, durable ones included, behind the same stream.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind, PublisherConfirm};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use super::kit::{self, Fed, Stop};
use super::{
    AckSink, Acker, Delivery, DurableSpec, DurableSubscription, Incoming, Reply, ReplySink, Subscription, Transport,
};
use crate::error::{Error, ErrorKind, Result};
use crate::message::{headers, Headers, Message};

/// The topic exchange every subject is routed through.
pub const EXCHANGE: &str = "micro";
const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";
/// The attempt a retried copy of a durable message is on (absent: 1).
const ATTEMPT_HEADER: &str = "Micro-Attempt";
/// The subject a retried copy was first published on (the copy goes to its queue by name).
const SUBJECT_HEADER: &str = "Micro-Subject";
/// Quorum queues count the deliveries of a message that were not settled in this header.
const DELIVERY_COUNT_HEADER: &str = "x-delivery-count";

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
    durables: Mutex<HashMap<u64, Arc<DurableState>>>,
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
    /// The confirm-mode channel of durable publishes, opened on first use.
    durable: Mutex<Option<Arc<DurablePublisher>>>,
    durable_open: tokio::sync::Mutex<()>,
    /// Set once a durable subscription consumed on this connection.
    durable_consumers: AtomicBool,
}

impl Link {
    /// The durable publisher of this connection, opening its channel the first time (and again
    /// if the broker closed it).
    async fn durable_publisher(&self) -> Result<Arc<DurablePublisher>> {
        let live = || self.durable.lock().as_ref().filter(|p| p.is_open()).cloned();
        if let Some(p) = live() {
            return Ok(p);
        }
        let _opening = self.durable_open.lock().await;
        if let Some(p) = live() {
            return Ok(p);
        }
        let not_open =
            |e: lapin::Error| Error::unavailable(format!("RabbitMQ durable publish channel: {e}")).with_source(e);
        let channel = self.conn.create_channel().await.map_err(not_open)?;
        channel.confirm_select(ConfirmSelectOptions::default()).await.map_err(not_open)?;
        let publisher = Arc::new(DurablePublisher::start(channel));
        *self.durable.lock() = Some(publisher.clone());
        Ok(publisher)
    }
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
            durables: Mutex::new(HashMap::new()),
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
    let link = Arc::new(Link {
        generation,
        conn,
        rpc,
        publish,
        reply,
        consume,
        durable: Mutex::new(None),
        durable_open: tokio::sync::Mutex::new(()),
        durable_consumers: AtomicBool::new(false),
    });
    let weak = Arc::downgrade(inner);
    tokio::spawn(replies.for_each(move |delivery| {
        if let (Ok(d), Some(inner)) = (delivery, weak.upgrade()) {
            let id = d.properties.correlation_id().as_ref().and_then(|c| c.as_str().parse::<u64>().ok());
            if let Some(tx) = id.and_then(|id| inner.pending.lock().remove(&id)) {
                let _ = tx.send(Ok(Message::with_headers(from_properties(&d.properties), d.data.into())));
            }
        }
        futures::future::ready(())
    }));
    let subs: Vec<Arc<SubState>> = inner.subs.lock().values().cloned().collect();
    for sub in subs {
        start_consumer(inner, &link, &sub).await?;
    }
    let durables: Vec<Arc<DurableState>> = inner.durables.lock().values().cloned().collect();
    for durable in durables {
        start_durable(inner, &link, &durable).await?;
    }
    Ok((link, events))
}

/// Watches the connection; when it drops, fails what waits on it and reconnects with backoff.
async fn supervise(inner: Weak<Inner>, mut link: Arc<Link>, mut events: Events) {
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
        let waiting: Vec<_> = strong.pending.lock().drain().collect();
        for (_, tx) in waiting {
            let _ = tx.send(Err(Error::transport("the RabbitMQ connection dropped while waiting for the reply")));
        }
        drop(strong);
        tracing::warn!(generation = link.generation, "RabbitMQ connection lost; reconnecting");
        let mut backoff = kit::reconnect_backoff();
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
                    let delay = kit::next_delay(&mut backoff);
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
    (subject.starts_with(crate::subject::RPC_PREFIX) || subject.starts_with(crate::subject::NODE_PREFIX))
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
    bounded(if group == pattern { group.to_string() } else { format!("{group}@{pattern}") })
}

/// The durable queue of a durable group on a pattern.
pub(crate) fn durable_queue(group: &str, pattern: &str) -> String {
    bounded(format!("durable:{group}@{pattern}"))
}

/// The queue that keeps a group's dead letters: the dead-letter subject without `micro.event.`.
pub(crate) fn dead_letter_queue(dead_letter: &str) -> String {
    bounded(dead_letter.strip_prefix(crate::subject::EVENT_PREFIX).unwrap_or(dead_letter).to_string())
}

/// A queue name within AMQP's 255 bytes: a long one is cut and made unique by a hash.
fn bounded(name: String) -> String {
    if name.len() <= 255 {
        name
    } else {
        let mut cut = 200;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}~{:016x}", &name[..cut], kit::fnv1a(name.as_bytes()))
    }
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
            let mut q = if is_point_to_point(&sub.pattern) && sub.pattern.starts_with(crate::subject::NODE_PREFIX) {
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
        self.inner.pending.lock().remove(&self.id);
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

// ---------------------------------------------------------------------------------------------
// Durable publishes: persistent, mandatory, confirmed, and each told whether it came back.

/// Publishes durably on one confirm-mode channel. One task sends every message and collects
/// the confirms, so that it knows them in delivery-tag order (see [`run_durable_publisher`]).
struct DurablePublisher {
    channel: Channel,
    requests: mpsc::UnboundedSender<PublishRequest>,
}

struct PublishRequest {
    exchange: String,
    routing_key: String,
    body: Bytes,
    properties: BasicProperties,
    done: oneshot::Sender<Result<()>>,
}

/// A durable publish sent and not yet decided.
struct Unconfirmed {
    /// Its correlation id: a return names its message by it.
    id: u64,
    routing_key: String,
    state: ConfirmState,
    done: oneshot::Sender<Result<()>>,
}

enum ConfirmState {
    Waiting(PublisherConfirm),
    Acked,
    Nacked,
    Failed(lapin::Error),
}

impl DurablePublisher {
    /// Starts the publishing task on a channel in confirm mode.
    fn start(channel: Channel) -> DurablePublisher {
        let (requests, rx) = mpsc::unbounded_channel();
        tokio::spawn(run_durable_publisher(channel.clone(), rx));
        DurablePublisher { channel, requests }
    }

    fn is_open(&self) -> bool {
        self.channel.status().connected() && !self.requests.is_closed()
    }

    /// Publishes persistently and `mandatory`; resolves with the confirm. A message no queue
    /// is bound for is an `Unavailable` error, a nack a `Broker` error.
    async fn publish(&self, exchange: &str, routing_key: &str, body: Bytes, properties: BasicProperties) -> Result<()> {
        let (done, outcome) = oneshot::channel();
        let request = PublishRequest {
            exchange: exchange.to_string(),
            routing_key: routing_key.to_string(),
            body,
            properties,
            done,
        };
        self.requests.send(request).map_err(|_| down())?;
        outcome.await.unwrap_or_else(|_| Err(down()))
    }
}

/// The durable publishing task of one channel.
///
/// lapin attaches a returned message to whichever confirm completes next (on a multiple ack, in
/// hash-map order), so the confirm a return arrives on says nothing about whose it is. Here one
/// task sends every message, so its queue is in delivery-tag order and holds every confirm lapin
/// has registered, and every message carries a correlation id. When the oldest confirm resolves,
/// the task looks at every confirm it holds, notes the correlation ids of all returns it finds,
/// and decides the resolved ones at the front: returned iff its id was noted. RabbitMQ sends a
/// message's basic.return before its basic.ack, and lapin hands out returns in arrival order, so
/// a message's return is attached to a confirm resolved no later than its own: one the task has
/// seen by the time it decides that message (a second look after the first catches confirms
/// that resolved while the first was under way).
async fn run_durable_publisher(channel: Channel, mut requests: mpsc::UnboundedReceiver<PublishRequest>) {
    let mut unconfirmed: VecDeque<Unconfirmed> = VecDeque::new();
    let mut returned: HashSet<u64> = HashSet::new();
    let mut next_id: u64 = 0;
    let mut open = true;
    while open || !unconfirmed.is_empty() {
        tokio::select! {
            request = requests.recv(), if open => match request {
                Some(request) => {
                    next_id += 1;
                    send_durable(&channel, next_id, request, &mut unconfirmed).await;
                    // Take what else is waiting before looking at confirms again.
                    for _ in 0..64 {
                        let Ok(request) = requests.try_recv() else { break };
                        next_id += 1;
                        send_durable(&channel, next_id, request, &mut unconfirmed).await;
                    }
                }
                None => open = false,
            },
            () = oldest_confirm(&mut unconfirmed, &mut returned) => decide_confirmed(&mut unconfirmed, &mut returned),
        }
    }
    // Nobody can publish or settle on this channel any more (every holder of the publisher,
    // a durable subscription's ackers included, is gone): close it. RabbitMQ applies acks to a
    // quorum queue asynchronously; closing at once can hand just-acked messages back, so wait a
    // moment first.
    tokio::time::sleep(ACK_SETTLE).await;
    let _ = channel.close(200, "bye".into()).await;
}

/// How long to let RabbitMQ apply the last acks before a channel or connection with durable
/// consumers closes.
const ACK_SETTLE: Duration = Duration::from_millis(300);

async fn send_durable(channel: &Channel, id: u64, request: PublishRequest, unconfirmed: &mut VecDeque<Unconfirmed>) {
    let PublishRequest { exchange, routing_key, body, properties, done } = request;
    let properties = properties.with_delivery_mode(2).with_correlation_id(id.to_string().into());
    let opts = BasicPublishOptions { mandatory: true, ..Default::default() };
    match channel.basic_publish(exchange.into(), routing_key.as_str().into(), opts, &body, properties).await {
        Ok(confirm) => {
            unconfirmed.push_back(Unconfirmed { id, routing_key, state: ConfirmState::Waiting(confirm), done })
        }
        // Not handed to the broker: the message provably was not published.
        Err(e) => {
            let _ = done.send(Err(
                Error::unavailable(format!("durable publish on {routing_key} not sent: {e}")).with_source(e)
            ));
        }
    }
}

/// Waits until the oldest unconfirmed publish has its confirm (forever while there is none).
async fn oldest_confirm(unconfirmed: &mut VecDeque<Unconfirmed>, returned: &mut HashSet<u64>) {
    match unconfirmed.front_mut() {
        Some(Unconfirmed { state: ConfirmState::Waiting(confirm), .. }) => {
            let confirmation = confirm.await;
            let state = resolved(confirmation, returned);
            if let Some(oldest) = unconfirmed.front_mut() {
                oldest.state = state;
            }
        }
        Some(_) => {}
        None => std::future::pending().await,
    }
}

/// The state of a resolved confirm; notes whose message a return it carries is.
fn resolved(confirmation: lapin::Result<Confirmation>, returned: &mut HashSet<u64>) -> ConfirmState {
    let (state, message) = match confirmation {
        Ok(Confirmation::Ack(message)) => (ConfirmState::Acked, message),
        Ok(Confirmation::Nack(message)) => (ConfirmState::Nacked, message),
        Ok(Confirmation::NotRequested) => (ConfirmState::Acked, None),
        Err(e) => (ConfirmState::Failed(e), None),
    };
    if let Some(message) = message {
        let owner = message.delivery.properties.correlation_id().as_ref().and_then(|c| c.as_str().parse::<u64>().ok());
        match owner {
            Some(id) => {
                returned.insert(id);
            }
            None => {
                tracing::warn!(routing_key = %message.delivery.routing_key, "a returned message without correlation id")
            }
        }
    }
    state
}

/// Looks at every confirm (twice, see [`run_durable_publisher`]) and settles the resolved ones at
/// the front that were resolved before the second look.
fn decide_confirmed(unconfirmed: &mut VecDeque<Unconfirmed>, returned: &mut HashSet<u64>) {
    let mut look = |unconfirmed: &mut VecDeque<Unconfirmed>| {
        for u in unconfirmed.iter_mut() {
            if let ConfirmState::Waiting(confirm) = &mut u.state {
                if let Some(confirmation) = confirm.now_or_never() {
                    u.state = resolved(confirmation, returned);
                }
            }
        }
    };
    look(unconfirmed);
    let ready = unconfirmed.iter().take_while(|u| !matches!(u.state, ConfirmState::Waiting(_))).count();
    look(unconfirmed);
    for u in unconfirmed.drain(..ready) {
        let was_returned = returned.remove(&u.id);
        let subject = &u.routing_key;
        let outcome = match u.state {
            ConfirmState::Acked if was_returned => {
                Err(Error::unavailable(format!("no durable subscription would keep the event on {subject}")))
            }
            ConfirmState::Acked => Ok(()),
            ConfirmState::Nacked => {
                Err(Error::new(ErrorKind::Broker, format!("RabbitMQ did not store the durable publish on {subject}")))
            }
            ConfirmState::Failed(e) => {
                Err(Error::new(ErrorKind::Broker, format!("durable publish on {subject} unconfirmed: {e}"))
                    .with_source(e))
            }
            // Only resolved confirms are in the decided range.
            ConfirmState::Waiting(_) => {
                Err(Error::new(ErrorKind::Broker, format!("durable publish on {subject} undecided")))
            }
        };
        let _ = u.done.send(outcome);
    }
    if unconfirmed.is_empty() && !returned.is_empty() {
        // Cannot happen if returns come no later than their confirm; never let it accumulate.
        tracing::warn!(count = returned.len(), "returns of already decided durable publishes");
        returned.clear();
    }
}

// ---------------------------------------------------------------------------------------------
// Durable subscriptions.

/// A durable subscription, re-created on every connection until its stream drains or drops.
struct DurableState {
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
struct DurableConsumer {
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

async fn start_durable(inner: &Arc<Inner>, link: &Link, state: &Arc<DurableState>) -> Result<()> {
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
                key.into(),
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
    link.durable_consumers.store(true, Ordering::Relaxed);
    let publisher = Arc::new(DurablePublisher::start(channel));
    let queue: Arc<str> = state.queue.as_str().into();
    let tx = state.tx.clone();
    tokio::spawn(async move {
        while let Some(Ok(d)) = consumer.next().await {
            if tx.send(durable_delivery(d, &queue, &publisher)).is_err() {
                break;
            }
        }
    });
    Ok(())
}

/// A lapin delivery as a [`Delivery`]: the attempt and the original subject read, and the
/// transport's own headers stripped.
fn durable_delivery(d: lapin::message::Delivery, queue: &Arc<str>, publisher: &Arc<DurablePublisher>) -> Delivery {
    let mut headers = from_properties(&d.properties);
    let first = headers.take(ATTEMPT_HEADER).and_then(|v| v.trim().parse::<u32>().ok()).unwrap_or(1).max(1);
    let unsettled = headers.take(DELIVERY_COUNT_HEADER).and_then(|v| v.trim().parse::<u32>().ok()).unwrap_or(0);
    let attempt = first.saturating_add(unsettled);
    let subject = headers.take(SUBJECT_HEADER).unwrap_or_else(|| d.routing_key.as_str().to_string());
    let body = Bytes::from(d.data);
    let acker = AmqpAcker {
        acker: d.acker,
        publisher: publisher.clone(),
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
    publisher: Arc<DurablePublisher>,
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
// written: the channel closes only after its last settle went out.
impl AckSink for AmqpAcker {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        async move { settled("ack", self.acker.ack(BasicAckOptions::default()).await) }.boxed()
    }

    fn hand_back(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        let requeue = BasicNackOptions { requeue: true, multiple: false };
        async move { settled("nack", self.acker.nack(requeue).await) }.boxed()
    }

    fn retry(self: Box<Self>, delay: Duration) -> BoxFuture<'static, Result<()>> {
        // The message stays unacked (holding a prefetch slot) while it waits; a lost channel
        // meanwhile hands it back to RabbitMQ, and the copy is then not sent.
        kit::after(delay, async move {
            let acker = &self.acker;
            let properties = retry_properties(&self.properties, self.attempt.saturating_add(1), &self.subject);
            match self.publisher.publish("", &self.queue, self.body.clone(), properties).await {
                Ok(()) => {
                    if let Err(e) = settled("ack", acker.ack(BasicAckOptions::default()).await) {
                        tracing::debug!(queue = %self.queue, error = %e, "retry copy sent, original not acked: it comes twice");
                    }
                }
                Err(e) => {
                    tracing::warn!(queue = %self.queue, error = %e, "retry copy not stored; the original goes back to its queue");
                    let requeue = BasicNackOptions { requeue: true, multiple: false };
                    if let Err(e) = settled("nack", acker.nack(requeue).await) {
                        tracing::debug!(queue = %self.queue, error = %e, "nack failed");
                    }
                }
            }
        });
        futures::future::ready(Ok(())).boxed()
    }
}

/// A durable subscription's hold on its consumer: draining or dropping it cancels the consumer.
struct DurableGuard {
    inner: Arc<Inner>,
    id: u64,
    removed: bool,
}

impl DurableGuard {
    /// Forgets the subscription (no re-creation on reconnect) and takes its current consumer.
    fn remove(&mut self) -> Option<DurableConsumer> {
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
        // closes once the last of them is settled or dropped (see `run_durable_publisher`);
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
            self.inner.pending.lock().insert(id, tx);
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
                        if let Some(other) = owner.and_then(|o| self.inner.pending.lock().remove(&o)) {
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
            kit::check_subject(pattern, true)?;
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
            self.inner.subs.lock().insert(id, sub.clone());
            let mut guard = SubGuard { inner: self.inner.clone(), id, removed: false };
            if let Err(e) = start_consumer(&self.inner, &link, &sub).await {
                guard.remove();
                return Err(Error::new(ErrorKind::Broker, format!("subscribe to {pattern} failed: {e}")));
            }
            Ok(Subscription::new(Fed::new(rx, guard)))
        }
        .boxed()
    }

    fn publish_durable<'a>(&'a self, subject: &'a str, message: Message) -> BoxFuture<'a, Result<()>> {
        async move {
            let link = self.inner.link.load_full().ok_or_else(down)?;
            let publisher = link.durable_publisher().await?;
            let properties = to_properties(&message.headers);
            publisher.publish(EXCHANGE, subject, message.body, properties).await
        }
        .boxed()
    }

    fn delete_durable<'a>(&'a self, spec: &'a DurableSpec) -> BoxFuture<'a, Result<()>> {
        async move {
            let link = self.inner.link.load_full().ok_or_else(down)?;
            // A channel of its own: deleting is rare, and an error closes the channel.
            let channel = link.conn.create_channel().await.map_err(lapin_err)?;
            let queue = durable_queue(&spec.group, &spec.subject);
            let deleted =
                channel.queue_delete(queue.as_str().into(), lapin::options::QueueDeleteOptions::default()).await;
            let _ = channel.close(200, "bye".into()).await;
            deleted.map(|_| ()).map_err(|e| {
                Error::new(ErrorKind::Broker, format!("deleting durable queue {queue} failed: {e}")).with_source(e)
            })
        }
        .boxed()
    }

    fn subscribe_durable<'a>(&'a self, spec: &'a DurableSpec) -> BoxFuture<'a, Result<DurableSubscription>> {
        async move {
            kit::check_durable(spec)?;
            let link = self.inner.link.load_full().ok_or_else(down)?;
            let (tx, rx) = mpsc::unbounded_channel();
            let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
            let state = Arc::new(DurableState {
                id,
                spec: spec.clone(),
                queue: durable_queue(&spec.group, &spec.subject),
                dead_letter: spec.dead_letter.as_ref().map(|d| (dead_letter_queue(d), d.clone())),
                tx,
                consumer: Mutex::new(None),
            });
            self.inner.durables.lock().insert(id, state.clone());
            let mut guard = DurableGuard { inner: self.inner.clone(), id, removed: false };
            if let Err(e) = start_durable(&self.inner, &link, &state).await {
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
                if link.durable_consumers.load(Ordering::Relaxed) {
                    // Let RabbitMQ apply the last acks (see `ACK_SETTLE`).
                    tokio::time::sleep(ACK_SETTLE).await;
                }
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
    fn durable_queues_are_named_after_group_and_pattern_and_bounded() {
        assert_eq!(durable_queue("audit", "micro.event.user.>"), "durable:audit@micro.event.user.>");
        assert_eq!(dead_letter_queue("micro.event.audit.dlq"), "audit.dlq");
        assert!(durable_queue("g", &"x.".repeat(200)).len() <= 255);
        assert!(durable_queue("g", &"é.".repeat(200)).len() <= 255);
        assert_ne!(durable_queue("g", &"x.".repeat(200)), durable_queue("g", &"x.".repeat(201)));
    }

    #[test]
    fn retry_copies_count_the_attempt_and_keep_the_subject() {
        let mut h = Headers::new();
        h.push(headers::ID, "abc");
        h.push("Micro-Meta-tenant", "acme");
        let mut table = to_properties(&h).headers().clone().unwrap_or_default();
        table.insert(DELIVERY_COUNT_HEADER.into(), AMQPValue::LongLongInt(2));
        let original = to_properties(&h).with_headers(table);
        let copy = retry_properties(&original, 4, "micro.event.user.login");
        assert_eq!(copy.delivery_mode(), &Some(2));
        let mut back = from_properties(&copy);
        assert_eq!(back.take(ATTEMPT_HEADER).as_deref(), Some("4"));
        assert_eq!(back.take(SUBJECT_HEADER).as_deref(), Some("micro.event.user.login"));
        assert_eq!(back.get(DELIVERY_COUNT_HEADER), None);
        assert_eq!((back.get(headers::ID), back.get("Micro-Meta-tenant")), (Some("abc"), Some("acme")));
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
