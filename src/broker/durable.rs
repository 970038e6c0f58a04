//! Durable subscriptions: the retry policy and dead letters above the transport's
//! [`DurableSubscription`].
//!
//! A delivery is handled; `Ok` acknowledges it. A retryable error (5xx, 408, 429, a panic) hands
//! it back to the broker with an exponential backoff; after `max_attempts`, or at once for a
//! permanent error (any other 4xx, an event that cannot be read), it is published durably on the
//! group's dead-letter topic `<group>.dlq` with headers saying why, then acknowledged.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};

use super::Event;
use crate::error::{Error, Result};
use crate::message::Message;
use crate::status::{Code, Status};
use crate::subject;
use crate::transport::{Acker, Delivery, DurableSpec, DurableSubscription, Transport};

/// Headers a dead letter carries besides the original event's (the `DLQ_*` names of
/// [`message::headers`](crate::message::headers), under shorter names).
pub mod dlq_headers {
    pub use crate::message::headers::{
        DLQ_ATTEMPTS as ATTEMPTS, DLQ_CODE as CODE, DLQ_GROUP as GROUP, DLQ_REASON as REASON, DLQ_TOPIC as TOPIC,
    };
}

/// What [`DurableEvent::settle`] did with an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Settled {
    /// Acknowledged: handled.
    Acked,
    /// Handed back for another attempt after the backoff.
    Retried,
    /// Published on the dead-letter topic, then acknowledged.
    DeadLettered,
}

/// How a durable subscription retries. Part of
/// [`SubscribeOptions::durable`](super::SubscribeOptions::durable).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Durability {
    pub(crate) max_attempts: u32,
    pub(crate) backoff_min: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) concurrency: usize,
    pub(crate) ack_wait: Duration,
    pub(crate) expire_after: Duration,
}

impl Default for Durability {
    fn default() -> Self {
        Durability {
            max_attempts: 5,
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            concurrency: crate::transport::kit::DURABLE_CONCURRENCY,
            ack_wait: crate::transport::kit::DURABLE_ACK_WAIT,
            expire_after: crate::transport::kit::DURABLE_EXPIRY,
        }
    }
}

impl Durability {
    /// The wait before redelivering after `attempt` failed: doubling from `backoff_min`, capped
    /// at `backoff_max`, with ±20 % jitter so a burst of failures does not come back at once.
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let base = self.backoff_min.saturating_mul(1u32 << exp).min(self.backoff_max);
        let jitter = rand::random_range(0.8..1.2);
        base.mul_f64(jitter).min(self.backoff_max.max(self.backoff_min))
    }
}

/// True if an error with this code may go away on redelivery.
pub(crate) fn is_retryable(code: Code) -> bool {
    matches!(code, Code::TIMEOUT | Code::TOO_MANY_REQUESTS) || (code.as_u16() >= 500 && code != Code::NOT_IMPLEMENTED)
}

/// What one durable subscription needs to settle its events.
#[derive(Debug)]
pub(crate) struct Policy {
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) group: String,
    pub(crate) dead_letter: String,
    pub(crate) durability: Durability,
}

/// An event from a durable subscription, to be settled: [`ack`](Self::ack) when handled,
/// [`retry`](Self::retry) to have it again later, [`dead_letter`](Self::dead_letter) to give
/// up on it. Dropping it unsettled leaves it to the broker, which delivers it again.
///
/// ```
/// # #[actix::main] async fn main() -> micro::Result<()> {
/// use futures::StreamExt;
/// use micro::broker::{Broker, SubscribeOptions};
/// let t = micro::transport::connect("memory://durable-doc").await?;
/// let broker = Broker::new(t, "doc");
/// let mut events = broker.subscribe_durable("order.*", SubscribeOptions::durable("billing")).await?;
/// broker.publish_durable("order.placed", &serde_json::json!({"order": 7})).await?;
/// let e = events.next().await.unwrap();
/// assert_eq!((e.topic.as_str(), e.attempt()), ("order.placed", 1));
/// e.ack().await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct DurableEvent {
    event: Event,
    attempt: u32,
    acker: Acker,
    message: Message,
    policy: Arc<Policy>,
    /// One of the member's `concurrency` permits, held until the event is settled or dropped.
    _slot: OwnedSemaphorePermit,
}

impl std::ops::Deref for DurableEvent {
    type Target = Event;
    fn deref(&self) -> &Event {
        &self.event
    }
}

impl DurableEvent {
    /// Which delivery this is: 1 the first time.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The event.
    pub fn event(&self) -> &Event {
        &self.event
    }

    /// The headers as received: for a dead letter, [`dlq_headers`] say why it is one.
    pub fn headers(&self) -> &crate::message::Headers {
        &self.message.headers
    }

    /// True if this is the last attempt before the event is dead-lettered.
    pub fn is_last_attempt(&self) -> bool {
        self.attempt >= self.policy.durability.max_attempts
    }

    /// Handled: the broker forgets it.
    pub async fn ack(self) -> Result<()> {
        self.acker.ack().await
    }

    /// Have it delivered again after the subscription's backoff (dead-letters it instead if this
    /// was the last attempt).
    pub async fn retry(self, reason: &str) -> Result<()> {
        if self.is_last_attempt() {
            let reason = format!("gave up after {} attempts: {reason}", self.attempt);
            return self.dead_letter_coded(&reason, None).await;
        }
        let delay = self.policy.durability.backoff(self.attempt);
        self.acker.retry(delay).await
    }

    /// Gives up on it: publishes it on the group's dead-letter topic, then acknowledges it.
    pub async fn dead_letter(self, reason: &str) -> Result<()> {
        self.dead_letter_coded(reason, None).await
    }

    /// Settles by a handler's outcome: `Ok` acks; a retryable error retries (or dead-letters on
    /// the last attempt); a permanent one dead-letters at once. Says which it did.
    pub async fn settle(self, outcome: std::result::Result<(), Status>) -> Result<Settled> {
        match outcome {
            Ok(()) => self.ack().await.map(|()| Settled::Acked),
            Err(s) if is_retryable(s.code()) && !self.is_last_attempt() => {
                let delay = self.policy.durability.backoff(self.attempt);
                tracing::debug!(topic = %self.event.topic, event = %self.event.id, attempt = self.attempt, ?delay, status = %s, "event will be retried");
                self.acker.retry(delay).await.map(|()| Settled::Retried)
            }
            Err(s) => {
                let reason = if is_retryable(s.code()) {
                    format!("gave up after {} attempts: {s}", self.attempt)
                } else {
                    format!("permanent error: {s}")
                };
                self.dead_letter_coded(&reason, Some(s.code())).await.map(|()| Settled::DeadLettered)
            }
        }
    }

    /// Keeps the broker from handing it out again while it is being handled.
    pub(crate) fn progress(&self) -> BoxFuture<'static, Result<()>> {
        self.acker.progress()
    }

    pub(crate) fn ack_wait(&self) -> Duration {
        self.policy.durability.ack_wait
    }

    async fn dead_letter_coded(self, reason: &str, code: Option<Code>) -> Result<()> {
        let DurableEvent { event, attempt, acker, message, policy, _slot } = self;
        tracing::warn!(topic = %event.topic, event = %event.id, group = %policy.group, attempt, reason, "event dead-lettered");
        dead_letter(&policy, message, &event.topic, attempt, reason, code, acker).await
    }
}

/// Publishes `message` on the dead-letter topic, then acks; if that publish fails, the event
/// goes back to the broker to be tried again rather than be lost.
async fn dead_letter(
    policy: &Policy,
    message: Message,
    topic: &str,
    attempts: u32,
    reason: &str,
    code: Option<Code>,
    acker: Acker,
) -> Result<()> {
    let Message { headers: mut h, body } = message;
    h.insert(dlq_headers::TOPIC, topic.to_string());
    h.insert(dlq_headers::REASON, reason.replace(['\r', '\n'], " "));
    h.insert(dlq_headers::ATTEMPTS, attempts.to_string());
    h.insert(dlq_headers::GROUP, policy.group.clone());
    if let Some(c) = code {
        h.insert(dlq_headers::CODE, c.as_u16().to_string());
    }
    match policy.transport.publish_durable(&policy.dead_letter, Message::with_headers(h, body)).await {
        Ok(()) => acker.ack().await,
        Err(e) => {
            let delay = policy.durability.backoff(attempts);
            tracing::error!(error = %e, dead_letter = %policy.dead_letter, ?delay, "dead letter not stored; the event goes back to the broker");
            acker.retry(delay).await?;
            Err(e)
        }
    }
}

/// The events of a durable subscription from [`Broker::subscribe_durable`](super::Broker::subscribe_durable).
/// Events that cannot be read (no id, unknown content type) are dead-lettered on the way and
/// never yielded.
pub struct DurableEvents {
    sub: DurableSubscription,
    policy: Arc<Policy>,
    /// At most `concurrency` events in hand: each holds a permit.
    slots: Arc<Semaphore>,
    /// The permit the next event will hold, taken before asking the broker for it.
    next_slot: Option<OwnedSemaphorePermit>,
    /// Waiting for a permit while every slot is in hand.
    waiting: Option<BoxFuture<'static, std::result::Result<OwnedSemaphorePermit, AcquireError>>>,
}

impl std::fmt::Debug for DurableEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableEvents")
            .field("sub", &self.sub)
            .field("free_slots", &self.slots.available_permits())
            .finish()
    }
}

impl DurableEvents {
    /// Stops new deliveries; the stream yields what was already received, then ends.
    pub fn drain(&mut self) -> BoxFuture<'_, Result<()>> {
        self.sub.drain()
    }

    /// Dead-letters a delivery that is not handed to the handler (in the background).
    fn give_up(&self, d: Delivery, reason: String, attempts: u32, code: Option<Code>) {
        let policy = self.policy.clone();
        let Delivery { subject, message, acker, .. } = d;
        let topic = super::topic_of(&subject);
        tokio::spawn(async move {
            let _ = dead_letter(&policy, message, &topic, attempts, &reason, code, acker).await;
        });
    }

    fn read(&mut self, d: Delivery, slot: OwnedSemaphorePermit) -> Option<DurableEvent> {
        let Delivery { subject, message, attempt, acker } = d;
        let parsed = Event::from_parts(&subject, &message.headers, message.body.clone()).and_then(|e| {
            if e.id.is_empty() {
                Err(Error::codec("event has no Micro-Id"))
            } else {
                Ok(e)
            }
        });
        match parsed {
            Ok(event) => {
                Some(DurableEvent { event, attempt, acker, message, policy: self.policy.clone(), _slot: slot })
            }
            Err(e) => {
                self.next_slot = Some(slot);
                tracing::warn!(%subject, error = %e, "malformed durable event dead-lettered");
                let d = Delivery { subject, message, attempt, acker };
                self.give_up(d, format!("malformed event: {e}"), attempt, Some(Code::BAD_REQUEST));
                None
            }
        }
    }
}

impl Stream for DurableEvents {
    type Item = DurableEvent;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<DurableEvent>> {
        let this = &mut *self;
        loop {
            // At most `concurrency` events in hand: the next waits for a slot to free up.
            if this.next_slot.is_none() {
                let slot = match this.slots.clone().try_acquire_owned() {
                    Ok(slot) => slot,
                    Err(_) => {
                        let slots = this.slots.clone();
                        let waiting = this.waiting.get_or_insert_with(|| Box::pin(slots.acquire_owned()));
                        let acquired = std::task::ready!(waiting.as_mut().poll(cx));
                        this.waiting = None;
                        match acquired {
                            Ok(slot) => slot,
                            Err(_) => return std::task::Poll::Ready(None), // never closed
                        }
                    }
                };
                this.next_slot = Some(slot);
            }
            match std::task::ready!(this.sub.poll_next_unpin(cx)) {
                None => return std::task::Poll::Ready(None),
                Some(d) => {
                    if d.attempt > this.policy.durability.max_attempts {
                        // Handed out more often than allowed without being settled (the
                        // handler's process died each time): do not run it again.
                        let reason = format!("delivered {} times without being settled", d.attempt);
                        let attempts = d.attempt - 1;
                        this.give_up(d, reason, attempts, None);
                        continue;
                    }
                    let Some(slot) = this.next_slot.take() else { continue };
                    if let Some(e) = this.read(d, slot) {
                        return std::task::Poll::Ready(Some(e));
                    }
                }
            }
        }
    }
}

/// The subject a group's dead letters are published on: the topic `<group>.dlq`.
pub(crate) fn dead_letter_subject(group: &str) -> String {
    subject::event(&format!("{group}.dlq"))
}

pub(crate) fn spec(topic: &str, group: &str, durability: &Durability) -> DurableSpec {
    DurableSpec::new(subject::event(topic), group)
        .dead_letter(dead_letter_subject(group))
        .concurrency(durability.concurrency)
        .ack_wait(durability.ack_wait)
        .expire_after(durability.expire_after)
}

pub(crate) async fn subscribe(
    transport: &Arc<dyn Transport>,
    topic: &str,
    group: &str,
    durability: &Durability,
) -> Result<DurableEvents> {
    let spec = spec(topic, group, durability);
    let sub = transport.subscribe_durable(&spec).await?;
    let policy = Arc::new(Policy {
        transport: transport.clone(),
        group: group.to_string(),
        dead_letter: dead_letter_subject(group),
        durability: durability.clone(),
    });
    let slots = Arc::new(Semaphore::new(durability.concurrency));
    Ok(DurableEvents { sub, policy, slots, next_slot: None, waiting: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let d = Durability {
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            ..Default::default()
        };
        for (attempt, base) in [(1u32, 100u64), (2, 200), (3, 400), (4, 800)] {
            let got = d.backoff(attempt).as_millis() as u64;
            assert!(got >= base * 8 / 10 && got <= base * 12 / 10, "attempt {attempt}: {got} ms");
        }
        assert!(d.backoff(30) <= Duration::from_secs(1));
        assert!(d.backoff(u32::MAX) <= Duration::from_secs(1));
    }

    #[test]
    fn server_side_and_overload_errors_are_retried_client_errors_are_not() {
        for c in [Code::INTERNAL, Code::UNAVAILABLE, Code::TIMEOUT, Code::TOO_MANY_REQUESTS, Code::BAD_GATEWAY] {
            assert!(is_retryable(c), "{c:?}");
        }
        for c in [Code::BAD_REQUEST, Code::NOT_FOUND, Code::FORBIDDEN, Code::CONFLICT, Code::NOT_IMPLEMENTED] {
            assert!(!is_retryable(c), "{c:?}");
        }
    }
}
