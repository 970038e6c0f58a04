//! The broker: publish events on topics; subscribe in a **queue group** (each event goes to one
//! member of the group, so every subscribing service handles it once) or as a **broadcast**
//! subscriber (every subscriber gets every event). Events carry id, topic, timestamp, publisher
//! and metadata (see `docs/protocol.md`).
//!
//! Publishing goes straight to the transport from the cheap [`Broker`] handle. Subscriptions of
//! a service are declared on its builder and served like requests: one task per event, panics
//! caught and counted. [`Broker::subscribe`] also gives a raw [`EventStream`] for tools.
//!
//! Core NATS and memory delivery is at most once: a handler error is logged and counted, not
//! redelivered.
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

use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::{de::DeserializeOwned, Serialize};

use crate::codec::Codec;
use crate::context::{CallContext, EventInfo};
use crate::error::{Error, Result};
use crate::message::{headers, new_id, now_millis, Headers, Message, Metadata, TraceParent};
use crate::transport::{subject, Incoming, Subscription, Transport};

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
        let h = &incoming.message.headers;
        let codec = match h.get(headers::CONTENT_TYPE) {
            None => Codec::sniff(&incoming.message.body),
            Some(ct) => Codec::from_content_type(ct)
                .ok_or_else(|| Error::codec(format!("event has unsupported content type {ct}")))?,
        };
        let topic = h.get(headers::TOPIC).map(str::to_string).unwrap_or_else(|| {
            incoming.subject.strip_prefix(subject::EVENT_PREFIX).unwrap_or(&incoming.subject).to_string()
        });
        Ok(Event {
            id: h.get(headers::ID).unwrap_or_default().to_string(),
            topic,
            timestamp: h.get(headers::TIMESTAMP).and_then(|t| t.parse().ok()).unwrap_or(0),
            publisher: h.get(headers::PUBLISHER).map(str::to_string),
            metadata: h.metadata(),
            trace: h.get(headers::TRACEPARENT).and_then(TraceParent::parse),
            codec,
            body: incoming.message.body,
        })
    }

    pub(crate) fn context(&self, service: &Arc<str>) -> CallContext {
        CallContext {
            service: service.clone(),
            endpoint: self.topic.clone(),
            id: self.id.clone(),
            caller: self.publisher.clone(),
            deadline: None,
            trace: self.trace,
            trace_state: None,
            metadata: self.metadata.clone(),
            event: Some(EventInfo {
                topic: self.topic.clone(),
                timestamp: self.timestamp,
                publisher: self.publisher.clone(),
            }),
        }
    }
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
}

/// How a subscription shares events.
///
/// ```
/// use micro::broker::SubscribeOptions;
/// let each_service_once = SubscribeOptions::group("audit");
/// let every_subscriber = SubscribeOptions::broadcast();
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscribeOptions {
    pub(crate) group: Option<String>,
}

impl SubscribeOptions {
    /// A queue group: each event goes to one member of the group.
    pub fn group(name: impl Into<String>) -> Self {
        SubscribeOptions { group: Some(name.into()) }
    }

    /// Every subscriber gets every event.
    pub fn broadcast() -> Self {
        SubscribeOptions { group: None }
    }

    /// The queue group, if any.
    pub fn queue_group(&self) -> Option<&str> {
        self.group.as_deref()
    }
}

/// A publish/subscribe handle. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Broker {
    transport: Arc<dyn Transport>,
    publisher: Arc<str>,
}

impl Broker {
    /// A broker over a transport; `publisher` names us in the events we publish.
    pub fn new(transport: Arc<dyn Transport>, publisher: impl Into<String>) -> Broker {
        Broker { transport, publisher: publisher.into().into() }
    }

    /// Publishes an event (MessagePack).
    pub async fn publish<T: Serialize + ?Sized>(&self, topic: &str, event: &T) -> Result<()> {
        self.publish_with(topic, event, PublishOptions::default()).await
    }

    /// Publishes with options.
    pub async fn publish_with<T: Serialize + ?Sized>(
        &self,
        topic: &str,
        event: &T,
        opts: PublishOptions,
    ) -> Result<()> {
        let codec = opts.codec.unwrap_or_default();
        let body = codec.encode(event)?;
        self.publish_raw(topic, body, codec, opts).await
    }

    /// Publishes an already encoded payload.
    pub async fn publish_raw(&self, topic: &str, body: Bytes, codec: Codec, opts: PublishOptions) -> Result<()> {
        if !subject::is_valid(topic, false) {
            return Err(Error::config(format!("invalid topic {topic:?}: use dotted names without wildcards")));
        }
        let mut metadata = opts.metadata;
        let mut trace = None;
        CallContext::with_current(|ctx| {
            metadata.merge_missing(&ctx.metadata);
            trace = ctx.trace.map(|t| t.child());
        });
        let mut h = Headers::with_capacity(7);
        if let Some(ct) = codec.content_type_for(&body) {
            h.push(headers::CONTENT_TYPE, ct);
        }
        h.push(headers::ID, opts.id.unwrap_or_else(new_id));
        h.push(headers::TOPIC, topic.to_string());
        h.push(headers::TIMESTAMP, now_millis().to_string());
        h.push(headers::PUBLISHER, self.publisher.to_string());
        h.push(headers::TRACEPARENT, trace.unwrap_or_else(TraceParent::new_root).to_string());
        h.set_metadata(&metadata);
        self.transport.publish(&subject::event(topic), Message::with_headers(h, body)).await
    }

    /// Subscribes to a topic or pattern (`user.*`, `order.>`) and returns the raw event stream.
    pub async fn subscribe(&self, topic: &str, opts: SubscribeOptions) -> Result<EventStream> {
        let sub = subscribe_events(&self.transport, topic, &opts).await?;
        Ok(EventStream(sub))
    }
}

pub(crate) async fn subscribe_events(
    transport: &Arc<dyn Transport>,
    topic: &str,
    opts: &SubscribeOptions,
) -> Result<Subscription> {
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
