//! The broker: publish events on topics; subscribe in a **queue group** (each event goes to one
//! member of the group, so every subscribing service handles it once) or as a **broadcast**
//! subscriber (every subscriber gets every event). Events carry id, topic, timestamp, publisher
//! and metadata (see `docs/protocol.md`).
//!
//! Publishing goes straight to the transport from the cheap [`Broker`] handle. Subscriptions of
//! a service are declared on its builder and owned by its broker actor, which subscribes them,
//! restarts a serve loop that dies, drains them on stop and reports them in `Debug.Stats`; they
//! are served like requests: one task per event, panics caught and counted. [`Broker::subscribe`] also gives a raw [`EventStream`] for tools.
//!
//! Plain subscriptions are at most once: a handler error is logged and counted, not
//! redelivered. **Durable** subscriptions ([`SubscribeOptions::durable`],
//! [`Broker::subscribe_durable`]) are at least once: the broker keeps the group's events while
//! it is offline, a handler error redelivers with backoff, and after `max_attempts` the event
//! goes to the dead-letter topic `<group>.dlq` (see `docs/events.md`).
//! [`Broker::publish_durable`] resolves only once the broker has stored the event.
//!
//! ```
//! # #[actix::main] async fn main() -> micro::Result<()> {
//! use futures::StreamExt;
//! use micro::broker::{Broker, SubscribeOptions};
//! let t = micro::transport::connect("memory://broker-doc").await?;
//! let broker = Broker::new(t, "doc");
//! let mut events = broker.subscribe("user.*", SubscribeOptions::broadcast()).await?;
//! broker.publish("user.login", &serde_json::json!({"user": "ada"})).await?;
//! let e = events.next().await.unwrap();
//! assert_eq!(e.topic, "user.login");
//! assert_eq!(e.decode::<serde_json::Value>()?["user"], "ada");
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::{de::DeserializeOwned, Serialize};

use crate::codec::Codec;
use crate::context::{CallContext, EventInfo};
use crate::error::{Error, Result};
use crate::message::{headers, new_id, now_millis, Headers, Message, Metadata, TraceParent};
use crate::middleware::{Answer, ClientLayers, Outgoing, SendFn, Target};
use crate::subject;
use crate::telemetry::{self, sampling, spans};
use crate::transport::{Incoming, Subscription, Transport};
use tracing::Instrument;

mod actor;
mod durable;

#[cfg(any(test, feature = "test-util"))]
pub(crate) use actor::KillLoop;
pub(crate) use actor::{BrokerActor, Declared, Drained, Subscriptions};

pub(crate) use durable::Durability;
pub use durable::{dlq_headers, DurableEvent, DurableEvents, Settled};

/// An event as delivered.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Event {
    /// Unique id (UUID v7).
    pub id: String,
    /// The topic it was published on.
    pub topic: String,
    /// Publication time, milliseconds since the Unix epoch.
    pub timestamp: u64,
    /// Who published it.
    pub publisher: Option<String>,
    /// User metadata.
    pub metadata: Metadata,
    /// Trace context.
    pub trace: Option<TraceParent>,
    /// The payload's codec.
    pub codec: Codec,
    /// The encoded payload.
    pub body: Bytes,
}

impl Event {
    /// Decodes the payload.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        self.codec.decode(&self.body)
    }

    pub(crate) fn from_incoming(incoming: Incoming) -> Result<Event> {
        Event::from_message(&incoming.subject, incoming.message)
    }

    pub(crate) fn from_message(subject: &str, message: Message) -> Result<Event> {
        Event::from_parts(subject, &message.headers, message.body)
    }

    /// Reads an event from its headers (borrowed: they stay with the caller) and body.
    pub(crate) fn from_parts(subject: &str, h: &Headers, body: Bytes) -> Result<Event> {
        let codec = match h.get(headers::CONTENT_TYPE) {
            None => Codec::sniff(&body),
            Some(ct) => Codec::from_content_type(ct)
                .ok_or_else(|| Error::codec(format!("event has unsupported content type {ct}")))?,
        };
        let topic = topic_of(subject);
        // On NATS a durable event's id travels as JetStream's dedup id only.
        let id = h.get(headers::ID).or_else(|| h.get(headers::NATS_MSG_ID)).unwrap_or_default();
        // A UUID v7 id carries the publish time; other ids come with `Micro-Timestamp`.
        let timestamp = match h.get(headers::TIMESTAMP) {
            Some(t) => t.trim().parse().unwrap_or(0),
            None => crate::message::id_timestamp(id).unwrap_or(0),
        };
        Ok(Event {
            id: id.to_string(),
            topic,
            timestamp,
            publisher: h.get(headers::PUBLISHER).map(str::to_string),
            metadata: h.metadata(),
            trace: h.get(headers::TRACEPARENT).and_then(TraceParent::parse),
            codec,
            body,
        })
    }

    /// The context of a handler of this event, `trace` its identity (see `Server::run_event`).
    pub(crate) fn context(&self, service: &Arc<str>, trace: TraceParent) -> CallContext {
        CallContext {
            service: service.clone(),
            endpoint: self.topic.as_str().into(),
            id: self.id.clone(),
            caller: self.publisher.clone(),
            deadline: None,
            trace: Some(trace),
            trace_state: None,
            metadata: self.metadata.clone(),
            event: Some(EventInfo {
                topic: self.topic.clone(),
                timestamp: self.timestamp,
                publisher: self.publisher.clone(),
            }),
            authorization: None,
            identity: Default::default(),
        }
    }
}

/// An event's topic: the subject without `micro.event.`.
pub(crate) fn topic_of(subject: &str) -> String {
    subject.strip_prefix(subject::EVENT_PREFIX).unwrap_or(subject).to_string()
}

/// Options for one publish.
///
/// ```
/// let o = micro::broker::PublishOptions::new().metadata("tenant", "acme").codec(micro::Codec::Json);
/// ```
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct PublishOptions {
    pub(crate) metadata: Metadata,
    pub(crate) codec: Option<Codec>,
    pub(crate) id: Option<String>,
    pub(crate) durable: bool,
    /// The trace a publish made outside any handler continues (the gateway's HTTP request).
    pub(crate) trace: Option<TraceParent>,
}

impl PublishOptions {
    /// Defaults: MessagePack, a fresh UUID v7 id, no metadata.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds metadata.
    pub fn metadata(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.metadata.insert(k, v);
        self
    }

    /// The payload encoding.
    pub fn codec(mut self, c: Codec) -> Self {
        self.codec = Some(c);
        self
    }

    /// Uses this event id instead of a fresh one.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Resolve only once the broker has stored the event (see [`Broker::publish_durable`]).
    pub fn durable(mut self) -> Self {
        self.durable = true;
        self
    }
}

/// How a subscription shares events, and whether it is durable.
///
/// ```
/// use std::time::Duration;
/// use micro::broker::SubscribeOptions;
/// let each_service_once = SubscribeOptions::group("audit");
/// let every_subscriber = SubscribeOptions::broadcast();
/// let at_least_once = SubscribeOptions::durable("audit")
///     .max_attempts(5)
///     .backoff(Duration::from_secs(1), Duration::from_secs(60))
///     .concurrency(32);
/// assert!(at_least_once.is_durable());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscribeOptions {
    pub(crate) group: Option<String>,
    pub(crate) durable: Option<Durability>,
    /// Durable settings given to a subscription that is not durable: an error at subscribe.
    misplaced: Option<&'static str>,
}

impl SubscribeOptions {
    /// A queue group: each event goes to one member of the group.
    pub fn group(name: impl Into<String>) -> Self {
        SubscribeOptions { group: Some(name.into()), ..Default::default() }
    }

    /// Every subscriber gets every event.
    pub fn broadcast() -> Self {
        SubscribeOptions::default()
    }

    /// A durable group: at-least-once delivery. The broker keeps the group's events while no
    /// member runs (a JetStream durable consumer, a durable RabbitMQ queue); a handler error
    /// redelivers with backoff; after [`max_attempts`](Self::max_attempts) (default 5), or at
    /// once for a permanent error (a 4xx status other than 408/429), the event moves to the
    /// dead-letter topic `<group>.dlq`. The group starts with the events published after it
    /// was first created.
    pub fn durable(group: impl Into<String>) -> Self {
        SubscribeOptions { group: Some(group.into()), durable: Some(Durability::default()), misplaced: None }
    }

    /// Deliveries of one event before it is dead-lettered (durable; default 5).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.durability("max_attempts").max_attempts = n.max(1);
        self
    }

    /// Redelivery backoff: `min` after the first failure, doubling up to `max`, ±20 % jitter
    /// (durable; default 1 s to 60 s).
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        let d = self.durability("backoff");
        d.backoff_min = min;
        d.backoff_max = max.max(min);
        self
    }

    /// Events handled at once by one member: the broker's prefetch / max unacknowledged
    /// (durable; default 32).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.durability("concurrency").concurrency = n.max(1);
        self
    }

    /// How long an event may be handled before NATS hands it out again (durable; default 30 s).
    /// A running handler extends it by itself; this bounds how late a crashed member's events
    /// come back.
    pub fn ack_wait(mut self, d: Duration) -> Self {
        self.durability("ack_wait").ack_wait = d.max(Duration::from_millis(100));
        self
    }

    /// How long the broker keeps the group once no member uses it, events and all (durable;
    /// default 7 days, the NATS stream's retention). Short values suit tools and tests.
    pub fn expire_after(mut self, d: Duration) -> Self {
        self.durability("expire_after").expire_after = d.max(Duration::from_secs(1));
        self
    }

    /// The durable settings to change; on options that are not durable, the change is noted
    /// and refused when subscribing (durability is never switched on by a tuning call).
    fn durability(&mut self, setting: &'static str) -> &mut Durability {
        if self.durable.is_none() {
            self.misplaced.get_or_insert(setting);
        }
        self.durable.get_or_insert_with(Durability::default)
    }

    /// Refuses durable settings on a subscription that is not durable.
    pub(crate) fn check(&self, topic: &str) -> Result<()> {
        match self.misplaced {
            Some(setting) => Err(Error::config(format!(
                "{setting} is a durable setting, but the subscription to {topic:?} is not durable: \
                 start from SubscribeOptions::durable(group)"
            ))),
            None => Ok(()),
        }
    }

    /// The queue group, if any.
    pub fn queue_group(&self) -> Option<&str> {
        self.group.as_deref()
    }

    /// True for at-least-once subscriptions.
    pub fn is_durable(&self) -> bool {
        self.durable.is_some() && self.misplaced.is_none()
    }

    /// The most deliveries of one event (durable subscriptions).
    pub fn attempts_limit(&self) -> Option<u32> {
        self.durable.as_ref().map(|d| d.max_attempts)
    }
}

/// A publish/subscribe handle. Cheap to clone. Every client has one (`client.broker()`), and
/// so does every service (`service.broker()`); publishing goes straight to the transport.
///
/// ```
/// use futures::StreamExt;
/// use micro::prelude::*;
///
/// # #[micro::main] async fn main() -> micro::Result<()> {
/// let client = Client::connect("memory://broker-doc").await?;
/// let broker = client.broker();
/// // Every subscriber gets every event; SubscribeOptions::group(..) shares them out instead.
/// let mut events = broker.subscribe("user.*", SubscribeOptions::broadcast()).await?;
/// let id = broker.publish("user.login", &serde_json::json!({"user": "ada"})).await?;
/// let event = events.next().await.unwrap();
/// assert_eq!((event.id.as_str(), event.topic.as_str()), (id.as_str(), "user.login"));
/// let body: serde_json::Value = event.decode()?;
/// assert_eq!(body["user"], "ada");
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Broker {
    transport: Arc<dyn Transport>,
    publisher: Arc<str>,
    layers: ClientLayers,
}

impl Broker {
    /// A broker over a transport; `publisher` names us in the events we publish.
    pub fn new(transport: Arc<dyn Transport>, publisher: impl Into<String>) -> Broker {
        Broker { transport, publisher: publisher.into().into(), layers: ClientLayers::default() }
    }

    /// The same broker with a client's middleware around every publish.
    pub(crate) fn with_layers(mut self, layers: ClientLayers) -> Broker {
        self.layers = layers;
        self
    }

    /// Publishes an event (MessagePack); returns its id.
    pub async fn publish<T: Serialize + ?Sized>(&self, topic: &str, event: &T) -> Result<String> {
        self.publish_with(topic, event, PublishOptions::default()).await
    }

    /// Publishes with options.
    pub async fn publish_with<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        event: &T,
        opts: PublishOptions,
    ) -> Result<String> {
        let codec = opts.codec.unwrap_or_default();
        let body = codec.encode(event)?;
        self.publish_raw(topic, body, codec, opts).await
    }

    /// Publishes durably (MessagePack): resolves once the broker has stored the event (JetStream
    /// PubAck, RabbitMQ publisher confirm); an event no durable subscription or stream would
    /// keep is an error. Its id (UUID v7, or [`PublishOptions::id`]) is the broker's dedup id,
    /// so publishing again with the same id after an error does not store it twice (NATS).
    pub async fn publish_durable<T: Serialize + ?Sized>(&self, topic: &str, event: &T) -> Result<String> {
        self.publish_with(topic, event, PublishOptions::new().durable()).await
    }

    /// Publishes an already encoded payload; returns the event id.
    pub async fn publish_raw(&self, topic: &str, body: Bytes, codec: Codec, opts: PublishOptions) -> Result<String> {
        let durable = opts.durable;
        let result = self.publish_prepared(topic, body, codec, opts).await;
        crate::metrics::published(topic, durable, &result);
        result
    }

    async fn publish_prepared(&self, topic: &str, body: Bytes, codec: Codec, opts: PublishOptions) -> Result<String> {
        if !subject::is_valid(topic, false) {
            return Err(Error::config(format!("invalid topic {topic:?}: use dotted names without wildcards")));
        }
        let mut metadata = opts.metadata;
        let mut parent = opts.trace;
        CallContext::with_current(|ctx| {
            metadata.merge_missing(&ctx.metadata);
            parent = parent.or(ctx.trace);
        });
        let generated = opts.id.is_none();
        let id = opts.id.unwrap_or_else(new_id);
        // The publish's span; the traceparent sent is its context. With no one recording, a
        // child of the current trace, if any.
        let span = sampling::making(sampling::unsampled(parent), || {
            spans::publish(self.transport.name(), topic, &id, opts.durable)
        });
        let trace = if span.is_disabled() {
            parent.map(|t| t.child())
        } else {
            Some(telemetry::identify(&span, parent, spans::Parent::Local))
        };
        // The topic travels in the subject; a trace only when the publisher is inside one, a
        // publisher only when it has a name.
        let mut h = Headers::with_capacity(4 + usize::from(trace.is_some()) + metadata.len());
        if let Some(ct) = codec.content_type_for(&body) {
            h.push(headers::CONTENT_TYPE, ct);
        }
        h.push(headers::ID, id.clone());
        // A UUID v7 id (the default, made here) carries the publish time: no header for it.
        if !generated && crate::message::id_timestamp(&id).is_none() {
            h.push(headers::TIMESTAMP, itoa::Buffer::new().format(now_millis()).to_string());
        }
        if *self.publisher != *crate::client::CLIENT_ID {
            h.push(headers::PUBLISHER, String::from(&*self.publisher));
        }
        if let Some(trace) = trace {
            h.push(headers::TRACEPARENT, trace.header_value());
        }
        h.set_metadata(&metadata);
        let message = Message::with_headers(h, body);
        let sent = self.send(topic, message, opts.durable, &span).await;
        spans::record_error(&span, &sent);
        sent.map(|()| id)
    }

    /// Sends a prepared event through the client's middleware (if any), then to the transport.
    /// The publish's span is entered only around middleware, the way a call's is
    /// (`Client::send_call`): nothing else inside reads the current span.
    async fn send(&self, topic: &str, message: Message, durable: bool, span: &tracing::Span) -> Result<()> {
        if self.layers.is_empty() {
            return send_event(&*self.transport, topic, message, durable).await;
        }
        let out = Outgoing { target: Target::Publish { topic: topic.to_string(), durable }, message };
        let transport = self.transport.clone();
        let send: SendFn = Box::new(move |out: Outgoing| {
            Box::pin(async move {
                let Target::Publish { topic, durable } = &out.target else {
                    return Err(Error::config("a client middleware turned a publish into a call"));
                };
                send_event(&*transport, topic, out.message, *durable).await?;
                Ok(Answer::Published)
            })
        });
        // Built inside the instrumented future: the first layer runs as it is built.
        async { self.layers.run(out, send).await }.instrument(span.clone()).await?;
        Ok(())
    }

    /// Subscribes to a topic or pattern (`user.*`, `order.>`) and returns the raw event stream.
    pub async fn subscribe(&self, topic: &str, opts: SubscribeOptions) -> Result<EventStream> {
        if opts.is_durable() {
            return Err(Error::config("durable options need Broker::subscribe_durable"));
        }
        let sub = subscribe_events(&self.transport, topic, &opts).await?;
        Ok(EventStream(sub))
    }

    /// Removes a durable group's subscription to `topic` from the broker, with the events it
    /// still holds (not its dead letters). Its members must have stopped.
    pub async fn delete_durable(&self, topic: &str, group: &str) -> Result<()> {
        let spec = durable::spec(topic, group, &Durability::default());
        self.transport.delete_durable(&spec).await
    }

    /// The durable groups the broker keeps (NATS: the consumers of the JetStream stream
    /// `MICRO_EVENTS`), each with its topic pattern and what it still holds. Transports that
    /// cannot list them (memory, RabbitMQ over AMQP) answer with an error saying so.
    pub async fn durable_groups(&self) -> Result<Vec<crate::transport::DurableGroup>> {
        self.transport.durable_groups().await
    }

    /// Subscribes durably (see [`SubscribeOptions::durable`]) and returns the events to settle
    /// one by one ([`DurableEvent::ack`], [`retry`](DurableEvent::retry),
    /// [`settle`](DurableEvent::settle)). Services use the builder's `subscribe_durable` instead,
    /// which settles by the handler's result.
    pub async fn subscribe_durable(&self, topic: &str, opts: SubscribeOptions) -> Result<DurableEvents> {
        subscribe_durable_events(&self.transport, topic, &opts).await
    }
}

/// Publishes an event message on its topic's subject, durably or not.
async fn send_event(transport: &dyn Transport, topic: &str, message: Message, durable: bool) -> Result<()> {
    if durable {
        transport.publish_durable(&subject::event(topic), message).await
    } else {
        transport.publish(&subject::event(topic), message).await
    }
}

pub(crate) async fn subscribe_events(
    transport: &Arc<dyn Transport>,
    topic: &str,
    opts: &SubscribeOptions,
) -> Result<Subscription> {
    opts.check(topic)?;
    if !subject::is_valid(topic, true) {
        return Err(Error::config(format!("invalid topic pattern {topic:?}")));
    }
    if let Some(g) = &opts.group {
        if !subject::is_valid(g, false) {
            return Err(Error::config(format!("invalid queue group {g:?}")));
        }
    }
    transport.subscribe(&subject::event(topic), opts.group.as_deref()).await
}

pub(crate) async fn subscribe_durable_events(
    transport: &Arc<dyn Transport>,
    topic: &str,
    opts: &SubscribeOptions,
) -> Result<DurableEvents> {
    opts.check(topic)?;
    let (Some(group), Some(durability)) = (&opts.group, &opts.durable) else {
        return Err(Error::config("a durable subscription needs SubscribeOptions::durable(group)"));
    };
    if !subject::is_valid(topic, true) {
        return Err(Error::config(format!("invalid topic pattern {topic:?}")));
    }
    if !subject::is_valid(group, false) || group.contains(['*', '>']) {
        return Err(Error::config(format!("invalid durable group {group:?}")));
    }
    durable::subscribe(transport, topic, group, durability).await
}

/// A stream of events from [`Broker::subscribe`]. Malformed events are skipped (and logged).
#[derive(Debug)]
pub struct EventStream(Subscription);

impl Stream for EventStream {
    type Item = Event;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Event>> {
        loop {
            match std::task::ready!(self.0.poll_next_unpin(cx)) {
                None => return std::task::Poll::Ready(None),
                Some(incoming) => match Event::from_incoming(incoming) {
                    Ok(e) => return std::task::Poll::Ready(Some(e)),
                    Err(e) => tracing::warn!(error = %e, "malformed event skipped"),
                },
            }
        }
    }
}
