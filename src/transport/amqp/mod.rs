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

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Confirmation, Connection, ExchangeKind};
use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::kit;
use super::{ConnectionState, DurableSpec, DurableSubscription, Subscription, Transport};
use crate::error::{Error, ErrorKind, Result};
use crate::message::Message;

mod acks;
mod confirm;
mod consume;
mod durable;
mod endpoint;
mod naming;
mod properties;

use confirm::DurablePublisher;
use consume::{start_consumer, SubState};
use durable::{start_durable, DurableState, Settling};
use endpoint::Endpoint;
use naming::request_route;
use properties::{from_properties, short, to_properties};

/// The topic exchange every subject is routed through.
pub const EXCHANGE: &str = "micro";
const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";
/// How long `close` waits for the acks under way to be written.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest wait between two attempts to reconnect: a broker that is back is found again
/// within this.
const RECONNECT_MAX_DELAY: Duration = Duration::from_millis(500);

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
            .field("url", &self.inner.endpoint.shown)
            .field("connected", &self.inner.link.load().is_some())
            .finish()
    }
}

struct Inner {
    endpoint: Endpoint,
    link: ArcSwapOption<Link>,
    subs: Mutex<HashMap<u64, Arc<SubState>>>,
    durables: Mutex<HashMap<u64, Arc<DurableState>>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Result<Message>>>>,
    next_id: AtomicU64,
    generation: AtomicU64,
    closed: AtomicBool,
    /// Acks and nacks under way on the durable channels.
    settling: Arc<Settling>,
    /// Up or down, and how many times restored (see [`Transport::connection`]).
    state: tokio::sync::watch::Sender<ConnectionState>,
    /// Dropped with the transport: tells the supervisor to stop.
    _alive: oneshot::Sender<()>,
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

/// Why the first connection failed, as a person can act on it: a broker that answered and
/// refused the login or the virtual host says so (it is up: no advice to start one); only a
/// broker that did not answer is unreachable.
fn connect_error(url: &str, e: Error) -> Error {
    if matches!(e.kind(), ErrorKind::Tls | ErrorKind::Config) {
        // Already says what failed and where.
        return e;
    }
    let text = e.to_string();
    // The broker's own words, from the reply code on (e.g. `NOT_ALLOWED - vhost x not found`).
    let said = |code: &str| text.rfind(code).map(|at| text[at..].to_string()).unwrap_or_else(|| text.clone());
    let message = if text.contains("ACCESS_REFUSED") && text.contains("vhost") {
        format!("RabbitMQ at {url} refused this user access to the virtual host: {}", said("ACCESS_REFUSED"))
    } else if text.contains("ACCESS_REFUSED") {
        let text = format!(
            "RabbitMQ at {url} refused the authentication: check the user name and password ({})",
            said("ACCESS_REFUSED")
        );
        return Error::new(ErrorKind::BrokerAuth, text);
    } else if text.contains("NOT_ALLOWED") && text.contains("vhost") {
        format!("RabbitMQ at {url} refused the virtual host: {}", said("NOT_ALLOWED"))
    } else {
        format!(
            "RabbitMQ at {url} is unreachable: {text} (start one with `rabbitmq-server -detached`, or `docker compose up -d rabbitmq`)"
        )
    };
    Error::new(ErrorKind::Connect, message)
}

fn down() -> Error {
    Error::unavailable("the RabbitMQ connection is down; reconnecting")
}

impl AmqpTransport {
    /// Connects; fails with [`ErrorKind::Connect`] naming the URL when the broker is
    /// unreachable, [`ErrorKind::BrokerAuth`] when it refuses the login and [`ErrorKind::Tls`]
    /// when the TLS handshake fails (`amqps://`), at once. Later connection losses are repaired
    /// in the background.
    ///
    /// The user and password come in the URL (`amqp://user:password@host:5672/%2f`), TLS settings
    /// in its query (`amqps://host:5671/%2f?tls_ca=/etc/micro/ca.pem`), and both from the
    /// environment; see [`ConnectOptions`](crate::transport::ConnectOptions) and `docs/tls.md`.
    pub async fn connect(url: &str) -> Result<AmqpTransport> {
        AmqpTransport::connect_with(url, &crate::transport::ConnectOptions::default()).await
    }

    /// As [`connect`](AmqpTransport::connect), with TLS and login settings given in code (they
    /// come before the URL's and the environment's).
    pub async fn connect_with(url: &str, options: &crate::transport::ConnectOptions) -> Result<AmqpTransport> {
        let endpoint = Endpoint::new(url, options)?;
        let shown = endpoint.shown.clone();
        let (alive, gone) = oneshot::channel();
        let inner = Arc::new(Inner {
            endpoint,
            link: ArcSwapOption::empty(),
            subs: Mutex::new(HashMap::new()),
            durables: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            generation: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            settling: Arc::default(),
            state: tokio::sync::watch::Sender::new(ConnectionState::default()),
            _alive: alive,
        });
        let (link, events) = open_link(&inner).await.map_err(|e| connect_error(&shown, e))?;
        inner.link.store(Some(link.clone()));
        inner.state.send_modify(|s| s.connected = true);
        tokio::spawn(supervise(Arc::downgrade(&inner), link, events, gone));
        Ok(AmqpTransport { inner })
    }

    /// True while connected.
    pub fn is_connected(&self) -> bool {
        self.inner.link.load().as_ref().is_some_and(|l| l.conn.status().connected())
    }
}

/// What tells the supervisor a connection is gone: lapin's connection events (an error), and
/// the end of the direct reply-to consumer, which ends with its channel whatever closed it.
struct Events {
    lapin: futures::stream::BoxStream<'static, lapin::Event>,
    replies_ended: oneshot::Receiver<()>,
}

impl Events {
    /// Resolves when the connection is lost.
    async fn lost(&mut self) {
        loop {
            tokio::select! {
                ev = self.lapin.next() => match ev {
                    Some(lapin::Event::Error(e)) => {
                        tracing::warn!(error = %e, "RabbitMQ connection failed");
                        return;
                    }
                    None => return,
                    Some(_) => {}
                },
                _ = &mut self.replies_ended => return,
            }
        }
    }
}

/// Opens a connection, its channels and the exchange, and (re)creates every subscription.
async fn open_link(inner: &Arc<Inner>) -> Result<(Arc<Link>, Events)> {
    let conn = inner.endpoint.open().await?;
    let lapin_events = conn.events_listener().boxed();
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
    });
    let weak = Arc::downgrade(inner);
    let (ended, replies_ended) = oneshot::channel::<()>();
    tokio::spawn(replies.for_each(move |delivery| {
        // Dropped when the stream ends: the channel, and so the connection, is gone.
        let _ended = &ended;
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
    Ok((link, Events { lapin: lapin_events, replies_ended }))
}

/// Watches the connection; when it drops, fails what waits on it and reconnects with backoff.
async fn supervise(inner: Weak<Inner>, mut link: Arc<Link>, mut events: Events, mut gone: oneshot::Receiver<()>) {
    loop {
        tokio::select! {
            () = events.lost() => {}
            // The transport was dropped: its connection goes with this task's hold on it.
            _ = &mut gone => return,
        }
        let Some(strong) = inner.upgrade() else { return };
        if strong.closed.load(Ordering::SeqCst) {
            return;
        }
        strong.link.store(None);
        strong.state.send_modify(|s| s.connected = false);
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
                    strong.state.send_modify(|s| {
                        s.connected = true;
                        s.reconnects += 1;
                    });
                    link = new_link;
                    events = new_events;
                    break;
                }
                Err(e) => {
                    drop(strong);
                    let delay = kit::next_delay(&mut backoff).min(RECONNECT_MAX_DELAY);
                    tracing::debug!(error = %e, ?delay, "RabbitMQ reconnect failed");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = &mut gone => return,
                    }
                }
            }
        }
    }
}

fn lapin_err(e: lapin::Error) -> Error {
    Error::transport(format!("RabbitMQ: {e}")).with_source(e)
}

/// A returned request (no queue took it): the `Unavailable` error for its caller. lapin hands the
/// oldest waiting return to whichever confirm of the channel completes next, so it may be another
/// request's: its correlation id says whose. Returns the error when it is request `own`'s, else
/// hands it to its owner's pending call.
fn hand_back(inner: &Inner, returned: lapin::message::BasicReturnMessage, own: Option<u64>) -> Option<Error> {
    let owner = returned.delivery.properties.correlation_id().as_ref().and_then(|c| c.as_str().parse::<u64>().ok());
    let unroutable = Error::unavailable(format!("no responders on {}", returned.delivery.routing_key.as_str()));
    if owner.is_some() && owner == own {
        return Some(unroutable);
    }
    if let Some(other) = owner.and_then(|o| inner.pending.lock().remove(&o)) {
        let _ = other.send(Err(unroutable));
    }
    None
}

/// Waits out a request's confirm its caller no longer waits for (the reply came first, or the
/// deadline passed): a return lapin attaches to it still reaches its owner. Dropped unresolved, the
/// confirm would keep that return, and itself, inside lapin until the channel closes.
fn follow_confirm(inner: Weak<Inner>, confirm: lapin::PublisherConfirm) {
    kit::spawn_if_running(async move {
        if let Ok(Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned))) = confirm.await {
            if let Some(inner) = inner.upgrade() {
                hand_back(&inner, returned, None);
            }
        }
    });
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
            message.headers.check()?;
            let link = self.inner.link.load_full().ok_or_else(down)?;
            let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            self.inner.pending.lock().insert(id, tx);
            let _guard = PendingGuard { inner: &self.inner, id };
            let deadline = tokio::time::Instant::now() + timeout;
            let mut props = to_properties(&message.headers)?
                .with_correlation_id(itoa::Buffer::new().format(id).into())
                .with_reply_to(DIRECT_REPLY_TO.into())
                .with_expiration(itoa::Buffer::new().format(timeout.as_millis().max(1)).into());
            let opts = BasicPublishOptions { mandatory: true, ..Default::default() };
            // Requests go to their queue through the default exchange, without the topic
            // exchange's pattern matching (about a third of the broker's work per call); the
            // endpoint travels in the `type` property.
            let (exchange, routing_key) = match request_route(subject) {
                Some((queue, endpoint)) => {
                    props = props.with_type(short("the endpoint", endpoint)?);
                    ("", queue)
                }
                None => (EXCHANGE, subject),
            };
            let routing_key = short("the subject", routing_key)?;
            let mut confirm = link
                .rpc
                .basic_publish(exchange.into(), routing_key, opts, &message.body, props)
                .await
                .map_err(|e| Error::unavailable(format!("request on {subject} not sent: {e}")))?;
            let timed_out = || Error::timeout(format!("no reply on {subject} within {timeout:?}"));
            let mut rx = rx;
            tokio::select! {
                reply = &mut rx => {
                    // The reply beat the broker's confirm, which may yet carry another
                    // request's return.
                    follow_confirm(Arc::downgrade(&self.inner), confirm);
                    return reply.unwrap_or_else(|_| Err(down()));
                }
                confirmed = &mut confirm => match confirmed {
                    Ok(Confirmation::Ack(Some(returned))) | Ok(Confirmation::Nack(Some(returned))) => {
                        if let Some(own) = hand_back(&self.inner, returned, Some(id)) {
                            return Err(own);
                        }
                    }
                    Ok(Confirmation::Nack(None)) => {
                        return Err(Error::unavailable(format!("RabbitMQ refused the request on {subject}")));
                    }
                    Ok(_) => {}
                    Err(e) => return Err(lapin_err(e)),
                },
                _ = tokio::time::sleep_until(deadline) => {
                    follow_confirm(Arc::downgrade(&self.inner), confirm);
                    return Err(timed_out());
                }
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
            message.headers.check()?;
            let link = self.inner.link.load_full().ok_or_else(down)?;
            let props = to_properties(&message.headers)?;
            let routing_key = short("the subject", subject)?;
            let confirm = link
                .publish
                .basic_publish(EXCHANGE.into(), routing_key, BasicPublishOptions::default(), &message.body, props)
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
        consume::subscribe(&self.inner, pattern, queue).boxed()
    }

    fn publish_durable<'a>(&'a self, subject: &'a str, message: Message) -> BoxFuture<'a, Result<()>> {
        async move {
            message.headers.check()?;
            durable::publish(&self.inner, subject, message).await
        }
        .boxed()
    }

    fn delete_durable<'a>(&'a self, spec: &'a DurableSpec) -> BoxFuture<'a, Result<()>> {
        durable::delete(&self.inner, spec).boxed()
    }

    fn durable_pending<'a>(&'a self, spec: &'a DurableSpec) -> BoxFuture<'a, Result<Option<u64>>> {
        durable::pending(&self.inner, spec).boxed()
    }

    fn durable_groups(&self) -> BoxFuture<'_, Result<Vec<super::DurableGroup>>> {
        // AMQP 0-9-1 has no way to list queues; RabbitMQ lists them through its management API.
        let e = Error::config(
            "RabbitMQ cannot list queues over AMQP: use its management API or \
             `rabbitmqctl list_queues name messages` (durable groups are the queues named durable:<group>@<pattern>)",
        );
        futures::future::ready(Err(e)).boxed()
    }

    fn subscribe_durable<'a>(&'a self, spec: &'a DurableSpec) -> BoxFuture<'a, Result<DurableSubscription>> {
        durable::subscribe(&self.inner, spec).boxed()
    }

    fn connection(&self) -> Option<tokio::sync::watch::Receiver<ConnectionState>> {
        Some(self.inner.state.subscribe())
    }

    fn flush(&self) -> BoxFuture<'_, Result<()>> {
        // Every publish already waited for its confirm; nothing is buffered here.
        futures::future::ready(Ok(())).boxed()
    }

    fn close(&self) -> BoxFuture<'_, Result<()>> {
        async move {
            self.inner.closed.store(true, Ordering::SeqCst);
            if let Some(link) = self.inner.link.swap(None) {
                // The acks under way go out before the connection closes; what is unacked then
                // goes back to its queue.
                if !self.inner.settling.idle(SETTLE_TIMEOUT).await {
                    tracing::warn!("closing with durable acks still under way; their events come again");
                }
                link.conn.close(200, "bye".into()).await.map_err(lapin_err)?;
            }
            Ok(())
        }
        .boxed()
    }
}
