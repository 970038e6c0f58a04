//! Durable publishes: persistent, mandatory, confirmed, and each told whether it came back.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation};
use tokio::sync::{mpsc, oneshot};

use super::down;
use super::properties::short;
use crate::error::{Error, ErrorKind, Result};

/// Publishes durably on one confirm-mode channel. One task sends every message and collects
/// the confirms, so that it knows them in delivery-tag order (see [`run`]). The channel
/// closes once every holder of its publisher is gone.
pub(super) struct DurablePublisher {
    channel: Channel,
    requests: mpsc::UnboundedSender<PublishRequest>,
}

struct PublishRequest {
    exchange: &'static str,
    routing_key: ShortString,
    body: Bytes,
    properties: BasicProperties,
    done: oneshot::Sender<Result<()>>,
}

impl DurablePublisher {
    /// Starts the publishing task on a channel in confirm mode.
    pub(super) fn start(channel: Channel) -> DurablePublisher {
        let (requests, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(channel.clone(), rx));
        DurablePublisher { channel, requests }
    }

    pub(super) fn is_open(&self) -> bool {
        self.channel.status().connected() && !self.requests.is_closed()
    }

    /// Publishes persistently and `mandatory`; resolves with the confirm. A message no queue
    /// is bound for is an `Unavailable` error, a nack a `Broker` error.
    pub(super) async fn publish(
        &self,
        exchange: &'static str,
        routing_key: &str,
        body: Bytes,
        properties: BasicProperties,
    ) -> Result<()> {
        let routing_key = short("the subject", routing_key)?;
        let (done, outcome) = oneshot::channel();
        let request = PublishRequest { exchange, routing_key, body, properties, done };
        self.requests.send(request).map_err(|_| down())?;
        outcome.await.unwrap_or_else(|_| Err(down()))
    }
}

/// The durable publishing task of one channel.
///
/// Nobody can publish or settle on the channel any more once every holder of the publisher
/// (a durable subscription's ackers included, whose settle futures hold it until their frame
/// is written) is gone: then the channel closes, after everything it was asked to send.
async fn run(channel: Channel, mut requests: mpsc::UnboundedReceiver<PublishRequest>) {
    let channel = Arc::new(channel);
    let mut tracker = Tracker::default();
    let mut next_id: u64 = 0;
    let mut open = true;
    while open || !tracker.is_empty() {
        tokio::select! {
            request = requests.recv(), if open => match request {
                Some(request) => {
                    next_id += 1;
                    send(&channel, next_id, request, &mut tracker);
                    // Take what else is waiting before looking at confirms again.
                    for _ in 0..64 {
                        let Ok(request) = requests.try_recv() else { break };
                        next_id += 1;
                        send(&channel, next_id, request, &mut tracker);
                    }
                }
                None => open = false,
            },
            () = tracker.oldest() => tracker.decide(),
        }
    }
    let _ = channel.close(200, "bye".into()).await;
}

/// Hands one message to lapin and tracks it, without waiting for its frames to be written:
/// the messages of a burst go out together, as they would from concurrent publishers.
///
/// lapin gives a publish its delivery tag and queues its frames on the future's first poll,
/// which happens here, so the tracker holds the messages in delivery-tag order.
fn send(channel: &Arc<Channel>, id: u64, request: PublishRequest, tracker: &mut Tracker) {
    let PublishRequest { exchange, routing_key, body, properties, done } = request;
    let properties = properties.with_delivery_mode(2).with_correlation_id(itoa::Buffer::new().format(id).into());
    let opts = BasicPublishOptions { mandatory: true, ..Default::default() };
    let (channel, key) = (channel.clone(), routing_key.clone());
    let mut publish = async move {
        match channel.basic_publish(exchange.into(), key, opts, &body, properties).await {
            Ok(confirm) => Resolved::from(confirm.await),
            Err(e) => Resolved { verdict: Verdict::NotSent(e), returned: None },
        }
    }
    .boxed();
    let first = (&mut publish).now_or_never();
    tracker.push(id, routing_key, publish, done);
    if let Some(resolved) = first {
        tracker.resolve_newest(resolved);
    }
}

/// A resolved confirm: the broker's verdict, and whose message a return it carries is (lapin
/// hands a return to whichever confirm completes next; the correlation id says whose it is).
pub(super) struct Resolved {
    verdict: Verdict,
    returned: Option<u64>,
}

enum Verdict {
    Acked,
    Nacked,
    Failed(lapin::Error),
    /// lapin did not hand the message to the broker: it provably was not published.
    NotSent(lapin::Error),
}

impl From<lapin::Result<Confirmation>> for Resolved {
    fn from(confirmation: lapin::Result<Confirmation>) -> Resolved {
        let (verdict, message) = match confirmation {
            Ok(Confirmation::Ack(message)) => (Verdict::Acked, message),
            Ok(Confirmation::Nack(message)) => (Verdict::Nacked, message),
            Ok(Confirmation::NotRequested) => (Verdict::Acked, None),
            Err(e) => (Verdict::Failed(e), None),
        };
        let returned = message.and_then(|message| {
            let props = &message.delivery.properties;
            let owner = props.correlation_id().as_ref().and_then(|c| c.as_str().parse::<u64>().ok());
            if owner.is_none() {
                tracing::warn!(routing_key = %message.delivery.routing_key, "a returned message without correlation id");
            }
            owner
        });
        Resolved { verdict, returned }
    }
}

/// A durable publish sent and not yet decided.
struct Unconfirmed {
    /// Its correlation id: a return names its message by it.
    id: u64,
    routing_key: ShortString,
    state: State,
    done: oneshot::Sender<Result<()>>,
}

enum State {
    Waiting(BoxFuture<'static, Resolved>),
    Resolved(Verdict),
}

/// The confirms of one channel, in delivery-tag order, and the returns seen so far.
///
/// lapin attaches a returned message to whichever confirm completes next (on a multiple ack, in
/// hash-map order), so the confirm a return arrives on says nothing about whose it is. One task
/// sends every message, so the queue is in delivery-tag order and holds every confirm lapin has
/// registered, and every message carries a correlation id. When the oldest confirm resolves,
/// [`decide`](Self::decide) looks at every confirm held, notes the correlation ids of all
/// returns found, and decides the resolved ones at the front: returned iff its id was noted.
/// RabbitMQ sends a message's basic.return before its basic.ack, and lapin hands out returns in
/// arrival order, so a message's return is attached to a confirm resolved no later than its
/// own: one seen by the time that message is decided (a second look after the first catches
/// confirms that resolved while the first was under way).
#[derive(Default)]
pub(super) struct Tracker {
    unconfirmed: VecDeque<Unconfirmed>,
    returned: HashSet<u64>,
}

impl Tracker {
    fn is_empty(&self) -> bool {
        self.unconfirmed.is_empty()
    }

    fn push(
        &mut self,
        id: u64,
        routing_key: ShortString,
        confirm: BoxFuture<'static, Resolved>,
        done: oneshot::Sender<Result<()>>,
    ) {
        self.unconfirmed.push_back(Unconfirmed { id, routing_key, state: State::Waiting(confirm), done });
    }

    /// The newest publish resolved on its first poll (it could not be sent).
    fn resolve_newest(&mut self, resolved: Resolved) {
        let verdict = self.note(resolved);
        if let Some(newest) = self.unconfirmed.back_mut() {
            newest.state = State::Resolved(verdict);
        }
    }

    fn note(&mut self, resolved: Resolved) -> Verdict {
        if let Some(id) = resolved.returned {
            self.returned.insert(id);
        }
        resolved.verdict
    }

    /// Waits until the oldest unconfirmed publish has its confirm (forever while there is none).
    async fn oldest(&mut self) {
        match self.unconfirmed.front_mut() {
            Some(Unconfirmed { state: State::Waiting(confirm), .. }) => {
                let resolved = confirm.await;
                let verdict = self.note(resolved);
                if let Some(oldest) = self.unconfirmed.front_mut() {
                    oldest.state = State::Resolved(verdict);
                }
            }
            Some(_) => {}
            None => std::future::pending().await,
        }
    }

    /// Notes every confirm that has resolved by now.
    fn look(&mut self) {
        for i in 0..self.unconfirmed.len() {
            let resolved = match &mut self.unconfirmed[i].state {
                State::Waiting(confirm) => confirm.now_or_never(),
                State::Resolved(_) => None,
            };
            if let Some(resolved) = resolved {
                let verdict = self.note(resolved);
                self.unconfirmed[i].state = State::Resolved(verdict);
            }
        }
    }

    /// Looks at every confirm (twice, see [`Tracker`]) and settles the resolved ones at the
    /// front that were resolved before the second look.
    fn decide(&mut self) {
        self.look();
        let ready = self.unconfirmed.iter().take_while(|u| matches!(u.state, State::Resolved(_))).count();
        self.look();
        for u in self.unconfirmed.drain(..ready) {
            let was_returned = self.returned.remove(&u.id);
            let subject = u.routing_key.as_str();
            let outcome = match u.state {
                State::Resolved(Verdict::Acked) if was_returned => {
                    Err(Error::unavailable(format!("no durable subscription would keep the event on {subject}")))
                }
                State::Resolved(Verdict::Acked) => Ok(()),
                State::Resolved(Verdict::Nacked) => Err(Error::new(
                    ErrorKind::Broker,
                    format!("RabbitMQ did not store the durable publish on {subject}"),
                )),
                State::Resolved(Verdict::NotSent(e)) => {
                    Err(Error::unavailable(format!("durable publish on {subject} not sent: {e}")).with_source(e))
                }
                State::Resolved(Verdict::Failed(e)) => {
                    Err(Error::new(ErrorKind::Broker, format!("durable publish on {subject} unconfirmed: {e}"))
                        .with_source(e))
                }
                // Only resolved confirms are in the decided range.
                State::Waiting(_) => {
                    Err(Error::new(ErrorKind::Broker, format!("durable publish on {subject} undecided")))
                }
            };
            let _ = u.done.send(outcome);
        }
        if self.unconfirmed.is_empty() && !self.returned.is_empty() {
            // Cannot happen if returns come no later than their confirm; never let it accumulate.
            tracing::warn!(count = self.returned.len(), "returns of already decided durable publishes");
            self.returned.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A confirm the test resolves by hand.
    fn confirm() -> (oneshot::Sender<Resolved>, BoxFuture<'static, Resolved>) {
        let (tx, rx) = oneshot::channel();
        let fut = async move { rx.await.unwrap_or(Resolved { verdict: Verdict::Nacked, returned: None }) }.boxed();
        (tx, fut)
    }

    fn acked(returned: Option<u64>) -> Resolved {
        Resolved { verdict: Verdict::Acked, returned }
    }

    /// Publishes `n` messages (ids 1..=n) into a tracker; returns their confirms and outcomes.
    #[allow(clippy::type_complexity)]
    fn publish(tracker: &mut Tracker, n: u64) -> (Vec<oneshot::Sender<Resolved>>, Vec<oneshot::Receiver<Result<()>>>) {
        let (mut confirms, mut outcomes) = (Vec::new(), Vec::new());
        for id in 1..=n {
            let (tx, fut) = confirm();
            let (done, outcome) = oneshot::channel();
            tracker.push(id, format!("micro.event.t{id}").into(), fut, done);
            confirms.push(tx);
            outcomes.push(outcome);
        }
        (confirms, outcomes)
    }

    /// Runs the tracker until it holds nothing undecided.
    async fn settle(tracker: &mut Tracker) {
        while !tracker.is_empty() {
            tracker.oldest().await;
            tracker.decide();
        }
    }

    fn outcome(rx: &mut oneshot::Receiver<Result<()>>) -> Option<std::result::Result<(), crate::ErrorKind>> {
        rx.try_recv().ok().map(|r| r.map_err(|e| e.kind()))
    }

    #[tokio::test]
    async fn out_of_order_acks_are_decided_in_delivery_tag_order() {
        let mut tracker = Tracker::default();
        let (confirms, mut outcomes) = publish(&mut tracker, 3);
        let mut confirms = confirms.into_iter();
        let (c1, c2, c3) = (confirms.next().unwrap(), confirms.next().unwrap(), confirms.next().unwrap());
        // The third and second come first: nothing is decided while the first is waiting.
        let _ = c3.send(acked(None));
        let _ = c2.send(acked(None));
        tracker.look();
        tracker.decide();
        assert!(outcomes.iter_mut().all(|o| outcome(o).is_none()));
        let _ = c1.send(acked(None));
        settle(&mut tracker).await;
        for o in &mut outcomes {
            assert_eq!(outcome(o), Some(Ok(())));
        }
    }

    #[tokio::test]
    async fn a_multiple_ack_decides_them_all_and_nacks_are_broker_errors() {
        let mut tracker = Tracker::default();
        let (confirms, mut outcomes) = publish(&mut tracker, 4);
        // A multiple ack resolves every confirm up to its tag at once, in any order.
        for (i, c) in confirms.into_iter().enumerate().rev() {
            let resolved = if i == 2 { Resolved { verdict: Verdict::Nacked, returned: None } } else { acked(None) };
            let _ = c.send(resolved);
        }
        settle(&mut tracker).await;
        let got: Vec<_> = outcomes.iter_mut().map(outcome).collect();
        assert_eq!(got, vec![Some(Ok(())), Some(Ok(())), Some(Err(crate::ErrorKind::Broker)), Some(Ok(()))]);
    }

    #[tokio::test]
    async fn a_return_is_attributed_to_its_own_message_whichever_confirm_carries_it() {
        let mut tracker = Tracker::default();
        let (confirms, mut outcomes) = publish(&mut tracker, 3);
        let mut confirms = confirms.into_iter();
        let (c1, c2, c3) = (confirms.next().unwrap(), confirms.next().unwrap(), confirms.next().unwrap());
        // Message 2 came back; lapin hands its return to the confirm of message 1.
        let _ = c1.send(acked(Some(2)));
        let _ = c2.send(acked(None));
        // Message 3's return rides on its own confirm.
        let _ = c3.send(acked(Some(3)));
        settle(&mut tracker).await;
        let got: Vec<_> = outcomes.iter_mut().map(outcome).collect();
        let unavailable = Some(Err(crate::ErrorKind::Unavailable));
        assert_eq!(got, vec![Some(Ok(())), unavailable, unavailable]);
        assert!(tracker.returned.is_empty());
    }

    #[tokio::test]
    async fn a_return_seen_before_its_message_is_decided_waits_for_it() {
        let mut tracker = Tracker::default();
        let (confirms, mut outcomes) = publish(&mut tracker, 2);
        let mut confirms = confirms.into_iter();
        let (c1, c2) = (confirms.next().unwrap(), confirms.next().unwrap());
        // The first is decided while the second (returned, noted on the first's confirm) waits.
        let _ = c1.send(acked(Some(2)));
        tracker.oldest().await;
        tracker.decide();
        assert_eq!(outcome(&mut outcomes[0]), Some(Ok(())));
        assert_eq!(outcome(&mut outcomes[1]), None);
        let _ = c2.send(acked(None));
        settle(&mut tracker).await;
        assert_eq!(outcome(&mut outcomes[1]), Some(Err(crate::ErrorKind::Unavailable)));
    }
}
