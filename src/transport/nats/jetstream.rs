//! Durable events on JetStream: the events stream, durable pull consumers with explicit acks,
//! and the pump that feeds a durable subscription from one.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::AckKind;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, watch};

use super::{from_nats, header_map, NatsTransport};
use crate::error::{Error, ErrorKind, Result};
use crate::message::{Headers, Message};
use crate::transport::kit::{self, Fed, Stop};
use crate::transport::{AckSink, Acker, Delivery, DurableGroup, DurableSpec, DurableSubscription};

/// The JetStream stream that stores every event subject.
pub const EVENTS_STREAM: &str = "MICRO_EVENTS";

/// How a durable consumer's description starts; then `<group> on <subject>`.
const DESCRIPTION_PREFIX: &str = "actix-micro durable group ";

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

/// A durable publish of a message. The event id travels once, as the dedup id (`Nats-Msg-Id`),
/// which receivers read when `Micro-Id` is absent; a dead letter's dedup id is not its event id,
/// so it keeps `Micro-Id`.
fn js_message(message: &Message) -> Result<PublishMessage> {
    use crate::message::headers::{DLQ_GROUP, ID};
    let skip = message.headers.get(DLQ_GROUP).is_none().then_some(ID);
    let mut m = PublishMessage::build().payload(message.body.clone()).headers(header_map(&message.headers, skip)?);
    if let Some(id) = dedup_id(&message.headers) {
        m = m.message_id(id);
    }
    Ok(m)
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
    /// Publishes on the events stream; resolves with the PubAck.
    pub(super) async fn js_publish(&self, subject: &str, message: Message) -> Result<()> {
        if !self.stream_ready.load(std::sync::atomic::Ordering::Relaxed) {
            Box::pin(self.ensure_stream()).await?;
        }
        let m = js_message(&message)?;
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

    /// A durable pull consumer of the group on the pattern, pulled by a task of its own.
    pub(super) async fn js_subscribe(&self, spec: &DurableSpec) -> Result<DurableSubscription> {
        kit::check_durable(spec)?;
        self.ensure_stream().await?;
        let consumer = self.consumer(spec).await?;
        let (tx, rx) = mpsc::channel(spec.concurrency);
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(pump(self.clone(), spec.clone(), consumer, tx, stop_rx));
        Ok(DurableSubscription::new(Fed::new(rx, StopPump(stop_tx))))
    }

    /// Deletes the group's durable consumer.
    pub(super) async fn js_delete(&self, spec: &DurableSpec) -> Result<()> {
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

    /// What the group's consumer still holds: not yet delivered plus delivered and unacknowledged.
    pub(super) async fn js_pending(&self, spec: &DurableSpec) -> Result<Option<u64>> {
        let name = consumer_name(&spec.group, &spec.subject);
        let stream = self.js.get_stream(EVENTS_STREAM).await.map_err(|e| {
            Error::new(ErrorKind::Broker, format!("JetStream stream {EVENTS_STREAM}: {e}")).with_source(e)
        })?;
        let info = stream
            .consumer_info(&name)
            .await
            .map_err(|e| Error::new(ErrorKind::Broker, format!("durable consumer {name}: {e}")).with_source(e))?;
        Ok(Some(info.num_pending + info.num_ack_pending as u64))
    }

    /// The durable groups on the events stream: its consumers that this toolkit made.
    pub(super) async fn js_groups(&self) -> Result<Vec<DurableGroup>> {
        let stream = match self.js.get_stream(EVENTS_STREAM).await {
            Ok(s) => s,
            Err(e) if e.to_string().contains("not found") => return Ok(Vec::new()),
            Err(e) => return Err(Error::new(ErrorKind::Broker, format!("JetStream stream {EVENTS_STREAM}: {e}"))),
        };
        let mut consumers = stream.consumers();
        let mut groups = Vec::new();
        while let Some(info) = consumers.next().await {
            let info = info.map_err(|e| {
                Error::new(ErrorKind::Broker, format!("listing the consumers of {EVENTS_STREAM}: {e}")).with_source(e)
            })?;
            // Ours say whose they are in their description (see `consumer`).
            let Some((group, subject)) = info
                .config
                .description
                .as_deref()
                .and_then(|d| d.strip_prefix(DESCRIPTION_PREFIX))
                .and_then(|d| d.split_once(" on "))
            else {
                continue;
            };
            let pending = info.num_pending + info.num_ack_pending as u64;
            groups.push(DurableGroup::new(group, subject).pending(Some(pending)));
        }
        groups.sort_by(|a, b| (&a.group, &a.subject).cmp(&(&b.group, &b.subject)));
        Ok(groups)
    }

    /// The cold path of a durable publish: the stream went away; make it and publish once more.
    async fn republish_without_stream(&self, subject: &str, message: Message) -> Result<()> {
        self.stream_ready.store(false, std::sync::atomic::Ordering::Relaxed);
        self.ensure_stream().await?;
        let m = js_message(&message)?;
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
            description: Some(format!("{DESCRIPTION_PREFIX}{} on {}", spec.group, spec.subject)),
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

/// How many times JetStream has delivered a message, from its `$JS.ACK.` reply subject. After
/// the prefix come 7 tokens, `<stream>.<consumer>.<delivered>.…`, or 9 and more with a domain
/// and an account hash first (ADR-15). Only that token is read: `Message::info` parses every
/// token, timestamp included, for about 2,000 instructions a delivery.
fn delivered(reply: &str) -> Option<u64> {
    let rest = reply.strip_prefix("$JS.ACK.")?.as_bytes();
    let index = match memchr::memchr_iter(b'.', rest).count() + 1 {
        7 => 2,
        n if n >= 9 => 4,
        _ => return None,
    };
    let token = rest.split(|&b| b == b'.').nth(index)?;
    std::str::from_utf8(token).ok()?.parse().ok()
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
                        let attempt =
                            msg.reply.as_deref().and_then(delivered).map_or(1, |d| d.clamp(1, u32::MAX.into()) as u32);
                        let (msg, acker) = msg.split();
                        let subject = String::from(msg.subject.as_str());
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

#[cfg(test)]
mod tests {
    use super::delivered;

    #[test]
    fn the_delivery_count_is_read_from_either_ack_subject_format() {
        // Without a domain (7 tokens after the prefix), as nats-server 2.9 sends it.
        assert_eq!(delivered("$JS.ACK.MICRO_EVENTS.audit__user_x__0badf00d.3.1042.17.1733568000123456789.0"), Some(3));
        // With a domain and an account hash (9 tokens, and a trailing random one).
        assert_eq!(delivered("$JS.ACK._.ACCHASH.MICRO_EVENTS.c.12.1042.17.1733568000123456789.5"), Some(12));
        assert_eq!(delivered("$JS.ACK.hub.ACCHASH.MICRO_EVENTS.c.1.1042.17.1733568000123456789.5.xyz"), Some(1));
        // Anything else is not an ack subject to read.
        assert_eq!(delivered("_INBOX.abc.def"), None);
        assert_eq!(delivered("$JS.ACK.S.c.3.1"), None);
        assert_eq!(delivered("$JS.ACK.S.c.x.1.2.3.4"), None);
    }
}
