//! The NATS transport (async-nats): core request/reply with the client's muxed inbox, queue
//! groups for shared subjects, headers for the envelope.
//!
//! Durable events use JetStream: one stream `MICRO_EVENTS` stores every subject under
//! `micro.event.>` (created by the first durable publisher or subscriber); a durable
//! subscription is a durable pull consumer with explicit acks, one per (group, pattern). The
//! event id is the `Nats-Msg-Id`, so the stream drops duplicates within its window.

use std::time::Duration;

use async_nats::client::RequestErrorKind;
use async_nats::{HeaderMap, HeaderName, HeaderValue};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::AckKind;
use tokio::sync::{mpsc, watch};

use super::kit::{self, Fed, Stop};
use super::{
    AckSink, Acker, Delivery, DurableSpec, DurableSubscription, Incoming, Reply, ReplySink, Subscription,
    SubscriptionStream, Transport,
};
use crate::error::{Error, ErrorKind, Result};
use crate::message::{Headers, Message};

/// A NATS connection.
///
/// ```no_run
/// # #[actix::main] async fn main() -> micro::Result<()> {
/// let t = micro::transport::NatsTransport::connect("nats://127.0.0.1:4222").await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct NatsTransport {
    client: async_nats::Client,
    url: String,
    js: async_nats::jetstream::Context,
    stream_ready: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl NatsTransport {
    /// Connects; fails with [`ErrorKind::Connect`] naming the URL when the server is unreachable.
    pub async fn connect(url: &str) -> Result<NatsTransport> {
        let opts = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(3))
            .name(format!("actix-micro/{}", env!("CARGO_PKG_VERSION")))
            // Reconnects are forever (with async-nats' backoff); subscriptions are restored.
            .max_reconnects(None::<usize>);
        let client = opts.connect(url).await.map_err(|e| {
            Error::new(
                ErrorKind::Connect,
                format!(
                    "NATS at {url} is unreachable: {e} (start one with `nats-server -js`, or `docker compose up -d nats`)"
                ),
            )
            .with_source(e)
        })?;
        let js = async_nats::jetstream::new(client.clone());
        Ok(NatsTransport { client, url: url.to_string(), js, stream_ready: Default::default() })
    }

    /// The underlying async-nats client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The JetStream consumer a durable group on a subject pattern uses (its naming rule is in
    /// `docs/protocol.md` §6.1).
    ///
    /// ```
    /// let name = micro::transport::NatsTransport::durable_consumer_name("audit", "micro.event.user.>");
    /// assert!(name.starts_with("audit__user__"));
    /// ```
    pub fn durable_consumer_name(group: &str, subject: &str) -> String {
        consumer_name(group, subject)
    }

    /// The URL this transport connected to.
    pub fn url(&self) -> &str {
        &self.url
    }
}

pub(crate) fn to_header_map(headers: &Headers) -> Result<HeaderMap> {
    let mut map = HeaderMap::new();
    for (name, value) in headers.pairs() {
        if name.is_empty() || name.contains(|c: char| !c.is_ascii_graphic() || c == ':') {
            return Err(Error::config(format!("invalid header name {name:?}")));
        }
        if value.contains(['\r', '\n']) {
            return Err(Error::config(format!("header {name} has a line break in its value")));
        }
        // Names were checked above: the protocol's own (static) ones cost no allocation.
        let name = match name {
            std::borrow::Cow::Borrowed(s) => HeaderName::from_static(s),
            std::borrow::Cow::Owned(s) => s.parse().map_err(|_| Error::config(format!("invalid header name {s:?}")))?,
        };
        map.insert(name, HeaderValue::from(value.as_str()));
    }
    Ok(map)
}

fn from_nats(msg: async_nats::Message) -> (Message, Option<async_nats::Subject>) {
    let mut headers = Headers::with_capacity(msg.headers.as_ref().map_or(0, HeaderMap::len));
    if let Some(map) = &msg.headers {
        for (name, values) in map.iter() {
            if let Some(v) = values.first() {
                headers.push(crate::message::headers::intern(name.as_ref()), v.as_str());
            }
        }
    }
    (Message { headers, body: msg.payload }, msg.reply)
}

struct NatsReply {
    client: async_nats::Client,
    subject: async_nats::Subject,
}

impl ReplySink for NatsReply {
    fn send(self: Box<Self>, message: Message) -> BoxFuture<'static, Result<()>> {
        async move {
            let sent = if message.headers.is_empty() {
                self.client.publish(self.subject, message.body).await
            } else {
                self.client.publish_with_headers(self.subject, to_header_map(&message.headers)?, message.body).await
            };
            sent.map_err(|e| Error::transport(format!("reply failed: {e}")).with_source(e))
        }
        .boxed()
    }
}

struct NatsSubscription {
    sub: async_nats::Subscriber,
    client: async_nats::Client,
}

impl futures::Stream for NatsSubscription {
    type Item = Incoming;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Incoming>> {
        self.sub.poll_next_unpin(cx).map(|m| {
            m.map(|msg| {
                let subject = msg.subject.to_string();
                let (message, reply) = from_nats(msg);
                let reply = reply.map(|subject| Reply::new(NatsReply { client: self.client.clone(), subject }));
                Incoming { subject, message, reply }
            })
        })
    }
}

impl SubscriptionStream for NatsSubscription {
    fn drain(&mut self) -> BoxFuture<'_, Result<()>> {
        async move { self.sub.drain().await.map_err(|e| Error::transport(format!("drain failed: {e}"))) }.boxed()
    }
}

impl Transport for NatsTransport {
    fn name(&self) -> &'static str {
        "nats"
    }

    fn request<'a>(
        &'a self,
        subject: &'a str,
        message: &'a Message,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Message>> {
        async move {
            let headers = to_header_map(&message.headers)?;
            let req = async_nats::Request::new().payload(message.body.clone()).headers(headers).timeout(Some(timeout));
            match self.client.send_request(subject.to_string(), req).await {
                Ok(msg) => Ok(from_nats(msg).0),
                Err(e) => Err(match e.kind() {
                    RequestErrorKind::NoResponders => Error::unavailable(format!("no responders on {subject}")),
                    RequestErrorKind::TimedOut => Error::timeout(format!("no reply on {subject} within {timeout:?}")),
                    _ => Error::transport(format!("request on {subject} failed: {e}")),
                }
                .with_source(e)),
            }
        }
        .boxed()
    }

    fn publish<'a>(&'a self, subject: &'a str, message: Message) -> BoxFuture<'a, Result<()>> {
        async move {
            let headers = to_header_map(&message.headers)?;
            self.client
                .publish_with_headers(subject.to_string(), headers, message.body)
                .await
                .map_err(|e| Error::new(ErrorKind::Broker, format!("publish on {subject} failed: {e}")).with_source(e))
        }
        .boxed()
    }

    fn subscribe<'a>(&'a self, subject: &'a str, queue: Option<&'a str>) -> BoxFuture<'a, Result<Subscription>> {
        async move {
            kit::check_subject(subject, true)?;
            let sub = match queue {
                Some(q) => self.client.queue_subscribe(subject.to_string(), q.to_string()).await,
                None => self.client.subscribe(subject.to_string()).await,
            }
            .map_err(|e| Error::new(ErrorKind::Broker, format!("subscribe to {subject} failed: {e}")).with_source(e))?;
            Ok(Subscription::new(NatsSubscription { sub, client: self.client.clone() }))
        }
        .boxed()
    }

    fn publish_durable<'a>(&'a self, subject: &'a str, message: Message) -> BoxFuture<'a, Result<()>> {
        async move {
            if !self.stream_ready.load(std::sync::atomic::Ordering::Relaxed) {
                Box::pin(self.ensure_stream()).await?;
            }
            let dedup = dedup_id(&message.headers);
            let headers = to_header_map(&message.headers)?;
            let mut m = PublishMessage::build().payload(message.body.clone()).headers(headers);
            if let Some(id) = &dedup {
                m = m.message_id(id);
            }
            let outcome = match self.js.send_publish(subject.to_string(), m).await {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(_) => Ok(()),
                // Someone deleted the stream since we made sure of it: make it again, once.
                Err(e) if e.kind() == PublishErrorKind::StreamNotFound => {
                    Box::pin(self.republish_without_stream(subject, message)).await
                }
                Err(e) => Err(publish_error(subject, e)),
            }
        }
        .boxed()
    }

    fn subscribe_durable<'a>(&'a self, spec: &'a DurableSpec) -> BoxFuture<'a, Result<DurableSubscription>> {
        async move {
            kit::check_durable(spec)?;
            self.ensure_stream().await?;
            let consumer = self.consumer(spec).await?;
            let (tx, rx) = mpsc::channel(spec.concurrency);
            let (stop_tx, stop_rx) = watch::channel(false);
            tokio::spawn(pump(self.clone(), spec.clone(), consumer, tx, stop_rx));
            Ok(DurableSubscription::new(Fed::new(rx, StopPump(stop_tx))))
        }
        .boxed()
    }

    fn close(&self) -> BoxFuture<'_, Result<()>> {
        // Drain: subscriptions stop, what was published is flushed, then the connection closes
        // (for every clone of this transport). Unacknowledged durable events go back to their group.
        async move {
            self.client.drain().await.map_err(|e| Error::transport(format!("closing failed: {e}")).with_source(e))
        }
        .boxed()
    }

    fn delete_durable<'a>(&'a self, spec: &'a DurableSpec) -> BoxFuture<'a, Result<()>> {
        async move {
            let name = consumer_name(&spec.group, &spec.subject);
            let stream = match self.js.get_stream(EVENTS_STREAM).await {
                Ok(s) => s,
                Err(e) if e.to_string().contains("not found") => return Ok(()),
                Err(e) => return Err(Error::new(ErrorKind::Broker, format!("JetStream stream {EVENTS_STREAM}: {e}"))),
            };
            match stream.delete_consumer(&name).await {
                Ok(_) => Ok(()),
                Err(e) if e.to_string().contains("not found") => Ok(()),
                Err(e) => {
                    Err(Error::new(ErrorKind::Broker, format!("deleting consumer {name} failed: {e}")).with_source(e))
                }
            }
        }
        .boxed()
    }

    fn flush(&self) -> BoxFuture<'_, Result<()>> {
        async move {
            self.client
                .flush()
                .await
                .map_err(|e| Error::transport(format!("flush failed: {e}")).with_source(e))
        }
        .boxed()
    }
}

/// The JetStream stream that stores every event subject.
pub const EVENTS_STREAM: &str = "MICRO_EVENTS";

/// How long the events stream keeps an event (acknowledged or not).
const EVENTS_MAX_AGE: Duration = kit::DURABLE_EXPIRY;

/// The broker's dedup id of a durable publish: the event id; a dead letter (same id, on the
/// group's `.dlq` topic) gets its own.
fn dedup_id(h: &Headers) -> Option<String> {
    let id = h.get(crate::message::headers::ID)?;
    Some(match h.get(crate::message::headers::DLQ_GROUP) {
        Some(group) => format!("{id}:dlq:{group}"),
        None => id.to_string(),
    })
}

/// The durable consumer name of a (group, pattern): readable, unique, valid for JetStream.
pub(crate) fn consumer_name(group: &str, subject: &str) -> String {
    let pattern = subject.strip_prefix(crate::subject::EVENT_PREFIX).unwrap_or(subject);
    let clean = |s: &str| -> String {
        s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).take(90).collect()
    };
    let hash = kit::fnv1a(format!("{group}\0{subject}").as_bytes());
    format!("{}__{}__{:08x}", clean(group), clean(pattern), hash as u32)
}

fn publish_error(subject: &str, e: async_nats::jetstream::context::PublishError) -> Error {
    match e.kind() {
        PublishErrorKind::StreamNotFound => Error::unavailable(format!("no JetStream stream stores {subject}: {e}")),
        PublishErrorKind::TimedOut => {
            Error::timeout(format!("JetStream did not acknowledge the publish on {subject} in time"))
        }
        PublishErrorKind::BrokenPipe => Error::unavailable(format!("publish on {subject} not sent: {e}")),
        _ => Error::new(ErrorKind::Broker, format!("durable publish on {subject} failed: {e}")),
    }
    .with_source(e)
}

impl NatsTransport {
    /// The cold path of a durable publish: the stream went away; make it and publish once more.
    async fn republish_without_stream(&self, subject: &str, message: Message) -> Result<()> {
        self.stream_ready.store(false, std::sync::atomic::Ordering::Relaxed);
        self.ensure_stream().await?;
        let mut m = PublishMessage::build().payload(message.body).headers(to_header_map(&message.headers)?);
        if let Some(id) = dedup_id(&message.headers) {
            m = m.message_id(id);
        }
        let ack = self.js.send_publish(subject.to_string(), m).await.map_err(|e| publish_error(subject, e))?;
        ack.await.map(|_| ()).map_err(|e| publish_error(subject, e))
    }

    /// Makes sure the events stream exists (once per connection).
    async fn ensure_stream(&self) -> Result<()> {
        use std::sync::atomic::Ordering;
        if self.stream_ready.load(Ordering::Relaxed) {
            return Ok(());
        }
        let config = async_nats::jetstream::stream::Config {
            name: EVENTS_STREAM.to_string(),
            subjects: vec![format!("{}>", crate::subject::EVENT_PREFIX)],
            storage: async_nats::jetstream::stream::StorageType::File,
            max_age: EVENTS_MAX_AGE,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        };
        self.js.get_or_create_stream(config).await.map_err(|e| {
            Error::new(
                ErrorKind::Broker,
                format!(
                    "JetStream stream {EVENTS_STREAM} unavailable on {}: {e} (is the server started with -js?)",
                    self.url
                ),
            )
            .with_source(e)
        })?;
        self.stream_ready.store(true, Ordering::Relaxed);
        Ok(())
    }

    async fn consumer(&self, spec: &DurableSpec) -> Result<async_nats::jetstream::consumer::Consumer<pull::Config>> {
        let name = consumer_name(&spec.group, &spec.subject);
        let config = pull::Config {
            durable_name: Some(name.clone()),
            description: Some(format!("actix-micro durable group {} on {}", spec.group, spec.subject)),
            filter_subject: spec.subject.clone(),
            ack_policy: AckPolicy::Explicit,
            ack_wait: spec.ack_wait,
            deliver_policy: DeliverPolicy::New,
            // Shared by the group's members; each member holds at most `concurrency` itself.
            max_ack_pending: (spec.concurrency * 8).max(256) as i64,
            // Retries are counted and dead-lettered above; the server never gives up by itself.
            max_deliver: -1,
            inactive_threshold: spec.expire_after,
            ..Default::default()
        };
        let stream = self.js.get_stream(EVENTS_STREAM).await.map_err(|e| {
            Error::new(ErrorKind::Broker, format!("JetStream stream {EVENTS_STREAM}: {e}")).with_source(e)
        })?;
        // Create, or update an existing group's settings (concurrency, ack wait, expiry).
        match stream.create_consumer(config).await {
            Ok(c) => Ok(c),
            Err(e) => {
                // Settings the server cannot change in place: go on with the group as it is.
                tracing::warn!(consumer = %name, error = %e, "durable consumer not updated; using it as it is");
                stream.get_consumer(&name).await.map_err(|e| {
                    Error::new(ErrorKind::Broker, format!("durable consumer {name} for {} failed: {e}", spec.subject))
                        .with_source(e)
                })
            }
        }
    }
}

/// Pulls a consumer's messages into the subscription's channel until the subscription stops;
/// when the pull stream ends (consumer deleted, server restarted without it), makes the
/// consumer again with backoff.
async fn pump(
    transport: NatsTransport,
    spec: DurableSpec,
    mut consumer: async_nats::jetstream::consumer::Consumer<pull::Config>,
    tx: mpsc::Sender<Delivery>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = kit::reconnect_backoff();
    loop {
        let messages = consumer
            .stream()
            .max_messages_per_batch(spec.concurrency.clamp(1, 256))
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await;
        match messages {
            Ok(mut messages) => loop {
                let next = tokio::select! {
                    biased;
                    _ = stop.changed() => return hand_back(messages).await,
                    next = messages.next() => next,
                };
                match next {
                    Some(Ok(msg)) => {
                        let attempt = msg.info().map(|i| i.delivered.max(1) as u32).unwrap_or(1);
                        let (msg, acker) = msg.split();
                        let subject = msg.subject.to_string();
                        let (message, _) = from_nats(msg);
                        let delivery = Delivery {
                            subject,
                            message,
                            attempt,
                            acker: Acker::new(JsAcker(std::sync::Arc::new(acker))),
                        };
                        // (A delivery dropped unsent naks itself.)
                        tokio::select! {
                            biased;
                            _ = stop.changed() => return hand_back(messages).await,
                            sent = tx.send(delivery) => if sent.is_err() { return hand_back(messages).await },
                        }
                    }
                    Some(Err(e)) => match e.kind() {
                        // Reported while the connection is away; the stream pulls again by itself.
                        async_nats::jetstream::consumer::pull::MessagesErrorKind::MissingHeartbeat => {
                            tracing::debug!(consumer = %consumer_name(&spec.group, &spec.subject), error = %e, "JetStream heartbeat missed")
                        }
                        async_nats::jetstream::consumer::pull::MessagesErrorKind::ConsumerDeleted => {
                            tracing::warn!(group = %spec.group, subject = %spec.subject, "durable consumer deleted; making it again");
                            break;
                        }
                        _ => tracing::debug!(error = %e, "JetStream pull error"),
                    },
                    None => break,
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, group = %spec.group, subject = %spec.subject, "cannot pull from the durable consumer")
            }
        }
        // Make stream and consumer again (the server may have lost them), until it works.
        loop {
            let delay = kit::next_delay(&mut backoff);
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            transport.stream_ready.store(false, std::sync::atomic::Ordering::Relaxed);
            match async {
                transport.ensure_stream().await?;
                transport.consumer(&spec).await
            }
            .await
            {
                Ok(c) => {
                    consumer = c;
                    break;
                }
                Err(e) => tracing::debug!(error = %e, "durable consumer not restored yet"),
            }
        }
    }
}

/// Stopping: what was pulled and not handed out goes back to the group now, not after the ack
/// wait.
async fn hand_back(mut messages: pull::Stream) {
    while let Some(Some(Ok(msg))) = messages.next().now_or_never() {
        let _ = msg.ack_with(AckKind::Nak(None)).await;
    }
}

/// Settles a JetStream message.
struct JsAcker(std::sync::Arc<async_nats::jetstream::message::Acker>);

fn ack_err(e: async_nats::Error) -> Error {
    Error::transport(format!("JetStream ack failed: {e}"))
}

impl AckSink for JsAcker {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        async move { self.0.ack().await.map_err(ack_err) }.boxed()
    }

    fn retry(self: Box<Self>, delay: Duration) -> BoxFuture<'static, Result<()>> {
        async move { self.0.ack_with(AckKind::Nak(Some(delay))).await.map_err(ack_err) }.boxed()
    }

    fn hand_back(self: Box<Self>) -> BoxFuture<'static, Result<()>> {
        async move { self.0.ack_with(AckKind::Nak(None)).await.map_err(ack_err) }.boxed()
    }

    fn progress(&self) -> BoxFuture<'static, Result<()>> {
        let acker = self.0.clone();
        async move { acker.ack_with(AckKind::Progress).await.map_err(ack_err) }.boxed()
    }
}

/// Stops a durable subscription's pump.
struct StopPump(watch::Sender<bool>);

impl Stop for StopPump {
    fn drain(&mut self) -> BoxFuture<'_, Result<()>> {
        // The pump stops pulling and drops its sender: what is in the channel is still yielded;
        // what the server sent after that comes back to the group after the ack wait.
        self.0.send_replace(true);
        futures::future::ready(Ok(())).boxed()
    }
}

impl Drop for StopPump {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}
