//! The in-process transport: a subject bus shared by everything in the process that connects
//! to the same `memory://name`. Needs no server; nothing survives the process.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use super::kit::{self, Fed, Stop};
use super::{Incoming, Reply, ReplySink, Subscription, Transport};
use crate::error::{Error, Result};
use crate::message::Message;
use crate::subject;

/// The in-process transport. All `MemoryTransport`s with the same name share one bus.
///
/// ```
/// # #[actix::main] async fn main() -> micro::Result<()> {
/// use futures::StreamExt;
/// use micro::transport::{MemoryTransport, Transport};
/// use micro::message::Message;
/// let t = MemoryTransport::named("doc-bus");
/// let mut sub = t.subscribe("greet", None).await?;
/// t.publish("greet", Message::new("hi".into())).await?;
/// assert_eq!(&sub.next().await.unwrap().message.body[..], b"hi");
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct MemoryTransport {
    bus: Arc<Bus>,
}

#[derive(Debug, Default)]
struct Bus {
    subs: Mutex<Vec<Sub>>,
    next_id: AtomicU64,
}

#[derive(Debug)]
struct Sub {
    id: u64,
    pattern: String,
    queue: Option<String>,
    tx: mpsc::UnboundedSender<Incoming>,
}

fn buses() -> &'static Mutex<HashMap<String, Weak<Bus>>> {
    static BUSES: OnceLock<Mutex<HashMap<String, Weak<Bus>>>> = OnceLock::new();
    BUSES.get_or_init(Default::default)
}

impl MemoryTransport {
    /// Connects to the bus of this name (`""` is the default bus of `memory://`).
    pub fn named(name: &str) -> MemoryTransport {
        let mut map = buses().lock();
        if let Some(bus) = map.get(name).and_then(Weak::upgrade) {
            return MemoryTransport { bus };
        }
        // The default bus lives for the whole process, so services and clients that come and go
        // in one process keep finding each other; named buses go when their last user does.
        let bus = Arc::new(Bus::default());
        if name.is_empty() {
            std::mem::forget(bus.clone());
        }
        map.insert(name.to_string(), Arc::downgrade(&bus));
        MemoryTransport { bus }
    }

    fn deliver(&self, subj: &str, message: Message, mut reply: Option<Reply>) -> usize {
        static ROUND: AtomicUsize = AtomicUsize::new(0);
        let subs = self.bus.subs.lock();
        let mut delivered = 0;
        let mut groups: Vec<(&str, Vec<&Sub>)> = Vec::new();
        for s in subs.iter().filter(|s| subject::matches(&s.pattern, subj) && !s.tx.is_closed()) {
            match &s.queue {
                None => {
                    let incoming =
                        Incoming { subject: subj.to_string(), message: message.clone(), reply: reply.take() };
                    if s.tx.send(incoming).is_ok() {
                        delivered += 1;
                    }
                }
                Some(q) => match groups.iter_mut().find(|(g, _)| *g == q.as_str()) {
                    Some((_, members)) => members.push(s),
                    None => groups.push((q.as_str(), vec![s])),
                },
            }
        }
        for (_, members) in groups {
            let pick = members[ROUND.fetch_add(1, Ordering::Relaxed) % members.len()];
            let incoming = Incoming { subject: subj.to_string(), message: message.clone(), reply: reply.take() };
            if pick.tx.send(incoming).is_ok() {
                delivered += 1;
            }
        }
        delivered
    }
}

struct OneshotReply(oneshot::Sender<Message>);

impl ReplySink for OneshotReply {
    fn send(self: Box<Self>, message: Message) -> BoxFuture<'static, Result<()>> {
        // The requester may have timed out and gone; that is not the replier's failure.
        let _ = self.0.send(message);
        futures::future::ready(Ok(())).boxed()
    }
}

struct Unsubscribe {
    bus: Arc<Bus>,
    id: u64,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        self.remove();
    }
}

impl Stop for Unsubscribe {
    fn drain(&mut self) -> BoxFuture<'_, Result<()>> {
        // Removing the subscription drops the bus's sender: the receiver yields what is queued, then ends.
        self.remove();
        futures::future::ready(Ok(())).boxed()
    }
}

impl Unsubscribe {
    fn remove(&self) {
        self.bus.subs.lock().retain(|s| s.id != self.id);
    }
}

impl Transport for MemoryTransport {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn request<'a>(&'a self, subj: &'a str, message: &'a Message, timeout: Duration) -> BoxFuture<'a, Result<Message>> {
        if let Err(e) = message.headers.check() {
            return futures::future::ready(Err(e)).boxed();
        }
        let (tx, rx) = oneshot::channel();
        let delivered = self.deliver(subj, message.clone(), Some(Reply::new(OneshotReply(tx))));
        async move {
            if delivered == 0 {
                return Err(Error::unavailable(format!("no responders on {subj}")));
            }
            let deadline = tokio::time::Instant::now() + timeout;
            match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(m)) => return Ok(m),
                // The responder dropped the request without answering (an expired deadline, say).
                // As on NATS, the requester cannot tell: it waits out its timeout.
                Ok(Err(_)) => tokio::time::sleep_until(deadline).await,
                Err(_) => {}
            }
            Err(Error::timeout(format!("no reply on {subj} within {timeout:?}")))
        }
        .boxed()
    }

    fn publish<'a>(&'a self, subj: &'a str, message: Message) -> BoxFuture<'a, Result<()>> {
        if let Err(e) = message.headers.check() {
            return futures::future::ready(Err(e)).boxed();
        }
        self.deliver(subj, message, None);
        futures::future::ready(Ok(())).boxed()
    }

    fn publish_durable<'a>(&'a self, subj: &'a str, message: Message) -> BoxFuture<'a, Result<()>> {
        if let Err(e) = message.headers.check() {
            return futures::future::ready(Err(e)).boxed();
        }
        let delivered = self.deliver(subj, message, None);
        let out = if delivered == 0 {
            Err(Error::unavailable(format!("no subscriber would keep the event on {subj}")))
        } else {
            Ok(())
        };
        futures::future::ready(out).boxed()
    }

    fn subscribe<'a>(&'a self, pattern: &'a str, queue: Option<&'a str>) -> BoxFuture<'a, Result<Subscription>> {
        async move {
            kit::check_subject(pattern, true)?;
            let (tx, rx) = mpsc::unbounded_channel();
            let id = self.bus.next_id.fetch_add(1, Ordering::Relaxed);
            self.bus.subs.lock().push(Sub { id, pattern: pattern.to_string(), queue: queue.map(str::to_string), tx });
            Ok(Subscription::new(Fed::new(rx, Unsubscribe { bus: self.bus.clone(), id })))
        }
        .boxed()
    }

    fn flush(&self) -> BoxFuture<'_, Result<()>> {
        futures::future::ready(Ok(())).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[tokio::test]
    async fn queue_groups_get_one_copy_broadcast_gets_all() {
        let t = MemoryTransport::named("unit-queue");
        let mut a = t.subscribe("x.y", Some("g")).await.unwrap();
        let mut b = t.subscribe("x.y", Some("g")).await.unwrap();
        let mut c = t.subscribe("x.*", None).await.unwrap();
        for _ in 0..10 {
            t.publish("x.y", Message::new("e".into())).await.unwrap();
        }
        // A last message for the group, after which any extra copy of the first ten would
        // have been queued too.
        t.publish("x.y", Message::new("last".into())).await.unwrap();
        let (mut got, mut last) = (0, 0);
        for _ in 0..11 {
            let m = tokio::select! {
                Some(m) = a.next() => m,
                Some(m) = b.next() => m,
            };
            match &m.message.body[..] {
                b"last" => last += 1,
                _ => got += 1,
            }
        }
        assert_eq!(last, 1);
        assert_eq!(got, 10, "one copy of each message for the group");
        let extra = tokio::time::timeout(Duration::from_millis(50), async {
            tokio::select! {
                Some(_) = a.next() => (),
                Some(_) = b.next() => (),
            }
        });
        assert!(extra.await.is_err(), "no extra copy in the queue group");
        for _ in 0..11 {
            c.next().await.unwrap();
        }
        let extra = tokio::time::timeout(Duration::from_millis(50), c.next()).await;
        assert!(extra.is_err(), "one copy of each for the broadcast subscriber");
    }

    #[tokio::test]
    async fn request_without_subscriber_is_unavailable_and_dropping_unsubscribes() {
        let t = MemoryTransport::named("unit-req");
        let e = t.request("nobody", &Message::default(), Duration::from_secs(1)).await.unwrap_err();
        assert!(e.is_unavailable());
        let sub = t.subscribe("somebody", None).await.unwrap();
        drop(sub);
        let e = t.request("somebody", &Message::default(), Duration::from_secs(1)).await.unwrap_err();
        assert!(e.is_unavailable());
    }
}
