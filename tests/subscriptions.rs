//! A service's subscriptions belong to its broker actor: a serve loop that dies is subscribed
//! again and counted, and `Debug.Stats` reports each subscription.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use micro::broker::{Broker, SubscribeOptions};
use micro::prelude::*;
use micro::server::{ServiceStats, SubscriptionInfo};

use crate::util::*;

/// The event numbers a handler saw.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<u32>>>);

impl Seen {
    fn has(&self, n: u32) -> bool {
        self.0.lock().unwrap().contains(&n)
    }
}

#[derive(Clone)]
struct PlainSeen(Seen);

#[derive(Clone)]
struct KeptSeen(Seen);

async fn on_plain(Req(n): Req<u32>, State(PlainSeen(seen)): State<PlainSeen>) -> Result<(), Status> {
    seen.0.lock().unwrap().push(n);
    if n == 0 {
        return Err(Status::bad_request("zero is refused"));
    }
    Ok(())
}

async fn on_kept(Req(n): Req<u32>, State(KeptSeen(seen)): State<KeptSeen>) -> Result<(), Status> {
    seen.0.lock().unwrap().push(n);
    Ok(())
}

fn kept(group: &str) -> SubscribeOptions {
    SubscribeOptions::durable(group)
        .expire_after(Duration::from_secs(120))
        .max_attempts(3)
        .backoff(Duration::from_millis(20), Duration::from_millis(100))
}

/// Publishes numbered events until one is handled: a plain subscription misses what is
/// published while it is not subscribed, and memory's durable fallback refuses a publish then.
/// The events are numbered from `first` on.
async fn publish_until_handled(broker: &Broker, topic: &str, durable: bool, seen: &Seen, first: u32) -> u32 {
    let deadline = tokio::time::Instant::now() + WAIT;
    for n in first.. {
        let published = if durable { broker.publish_durable(topic, &n).await } else { broker.publish(topic, &n).await };
        if published.is_ok() {
            let handled = tokio::time::timeout(Duration::from_millis(300), async {
                while !seen.has(n) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
            if handled.await.is_ok() {
                return n;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(tokio::time::Instant::now() < deadline, "no event on {topic} was handled within {WAIT:?}");
    }
    unreachable!()
}

fn find<'a>(subs: &'a [SubscriptionInfo], topic: &str) -> &'a SubscriptionInfo {
    subs.iter().find(|s| s.topic == topic).unwrap_or_else(|| panic!("no subscription to {topic} in {subs:?}"))
}

async fn a_killed_loop_is_restarted_counted_and_serves_again(url: String) {
    let name = unique("subs");
    let plain = format!("{}.tick", unique("plain"));
    let durable = format!("{}.tick", unique("kept"));
    let group = unique("kept-group");
    let (p, k) = (Seen::default(), Seen::default());
    let svc = Service::builder(&name)
        .transport(&url)
        .state(PlainSeen(p.clone()))
        .state(KeptSeen(k.clone()))
        .subscribe(&plain, on_plain)
        .subscribe_with(&durable, kept(&group), on_kept)
        .start()
        .await
        .unwrap();
    let broker = svc.broker().clone();

    // Both serve before anything is killed.
    publish_until_handled(&broker, &plain, false, &p, 1).await;
    publish_until_handled(&broker, &durable, true, &k, 1).await;
    broker.publish(&plain, &0u32).await.unwrap();
    wait_for("the refused event", WAIT, || async { p.has(0).then_some(()) }).await;

    for (topic, is_durable, seen) in [(&plain, false, &p), (&durable, true, &k)] {
        assert!(svc.kill_subscription_loop(topic).await, "a loop serves {topic}");
        wait_for("the restart to be counted", WAIT, || async {
            let subs = svc.subscriptions().await.unwrap();
            (find(&subs, topic).restarts == 1).then_some(())
        })
        .await;
        publish_until_handled(&broker, topic, is_durable, seen, 1000).await;
    }
    assert!(!svc.kill_subscription_loop("no.such.topic").await);

    // Debug.Stats says what the broker actor holds.
    let stats: ServiceStats = svc.client().call(&name, "Debug.Stats", &()).await.unwrap();
    assert_eq!(stats.subscriptions.len(), 2, "{:?}", stats.subscriptions);
    let s = find(&stats.subscriptions, &plain);
    assert_eq!((s.group.as_deref(), s.durable, s.restarts, s.errors), (Some(name.as_str()), false, 1, 1));
    assert!(s.handled >= 3, "{s:?}");
    assert_eq!(s.pending, None);
    let d = find(&stats.subscriptions, &durable);
    assert_eq!((d.group.as_deref(), d.durable, d.restarts, d.errors), (Some(group.as_str()), true, 1, 0));
    assert!(d.handled >= 2, "{d:?}");
    if url.starts_with("memory://") {
        assert_eq!(d.pending, None, "memory cannot tell");
    } else {
        assert!(d.pending.is_some(), "the broker tells what it holds: {d:?}");
    }
    assert!(stats.restarts >= 2, "loop restarts count as restarts: {stats:?}");
    svc.stop().await.unwrap();
}

over_transports!(a_killed_loop_is_restarted_counted_and_serves_again);
