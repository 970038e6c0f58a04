//! Durable events, the same cases over memory, NATS (JetStream) and RabbitMQ: at-least-once
//! delivery to a group, redelivery with backoff, dead letters after `max_attempts`, durable
//! publish that fails loudly instead of dropping.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use micro::broker::{dlq_headers, Broker, SubscribeOptions};
use micro::prelude::*;
use serde::{Deserialize, Serialize};

use crate::util::*;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Login {
    user_id: String,
    n: u32,
}

/// Fast retries so the cases run in a blink.
fn quick(group: &str) -> SubscribeOptions {
    SubscribeOptions::durable(group)
        // The broker removes what a test leaves behind.
        .expire_after(Duration::from_secs(120))
        .max_attempts(3)
        .backoff(Duration::from_millis(20), Duration::from_millis(100))
        .concurrency(8)
}

async fn broker(url: &str) -> Broker {
    Broker::new(micro::transport::connect(url).await.unwrap(), "events-test")
}

/// Once the member that acknowledged everything is gone (its connection closed, which makes
/// RabbitMQ requeue whatever that connection still held), the broker holds nothing for the
/// group: acknowledged events are not coming back. Memory cannot tell and is skipped.
async fn assert_broker_holds_nothing(url: &str, topic: &str, group: &str) {
    let t = micro::transport::connect(url).await.unwrap();
    let spec = micro::dev::DurableSpec::new(micro::subject::event(topic), group);
    if t.durable_pending(&spec).await.unwrap().is_none() {
        return;
    }
    let what = format!("the broker to hold nothing for group {group} (an acknowledgement was lost)");
    wait_for(&what, Duration::from_secs(5), || async {
        (t.durable_pending(&spec).await.ok().flatten() == Some(0)).then_some(())
    })
    .await;
    t.close().await.unwrap();
}

async fn durable_events_reach_the_group_once_and_are_acked(url: String) {
    let topic = format!("{}.login", unique("user"));
    let group = unique("audit");
    let t = micro::transport::connect(&url).await.unwrap();
    let b = Broker::new(t.clone(), "events-test");
    let mut events = b.subscribe_durable(&topic, quick(&group)).await.unwrap();
    for n in 0..20 {
        b.publish_durable(&topic, &Login { user_id: "ada".into(), n }).await.unwrap();
    }
    let mut seen = HashSet::new();
    while seen.len() < 20 {
        let e = tokio::time::timeout(WAIT, events.next()).await.expect("events arrive").unwrap();
        assert_eq!(e.attempt(), 1);
        assert_eq!(e.topic, topic);
        assert!(uuid::Uuid::parse_str(&e.id).is_ok(), "event ids are UUIDs: {}", e.id);
        let l: Login = e.decode().unwrap();
        assert!(seen.insert(l.n), "event {} delivered twice", l.n);
        e.ack().await.unwrap();
    }
    // Acked events do not come back.
    assert!(tokio::time::timeout(Duration::from_millis(300), events.next()).await.is_err());
    drop(events);
    t.close().await.unwrap();
    assert_broker_holds_nothing(&url, &topic, &group).await;
}

async fn failures_are_retried_with_growing_attempts_then_succeed(url: String) {
    let topic = format!("{}.placed", unique("order"));
    let group = unique("billing");
    let t = micro::transport::connect(&url).await.unwrap();
    let b = Broker::new(t.clone(), "events-test");
    let mut events = b.subscribe_durable(&topic, quick(&group).max_attempts(5)).await.unwrap();
    b.publish_durable(&topic, &Login { user_id: "bob".into(), n: 1 }).await.unwrap();
    let mut attempts = Vec::new();
    loop {
        let e = tokio::time::timeout(WAIT, events.next()).await.expect("the event comes back").unwrap();
        attempts.push(e.attempt());
        if e.attempt() < 3 {
            e.settle(Err(Status::unavailable("database is down"))).await.unwrap();
        } else {
            e.settle(Ok(())).await.unwrap();
            break;
        }
    }
    assert_eq!(attempts, [1, 2, 3]);
    assert!(tokio::time::timeout(Duration::from_millis(300), events.next()).await.is_err(), "acked: no more");
    drop(events);
    t.close().await.unwrap();
    assert_broker_holds_nothing(&url, &topic, &group).await;
}

async fn a_dropped_unsettled_event_comes_back_at_once(url: String) {
    let topic = format!("{}.login", unique("user"));
    let group = unique("audit");
    let b = broker(&url).await;
    let mut events = b.subscribe_durable(&topic, quick(&group)).await.unwrap();
    b.publish_durable(&topic, &Login { user_id: "eve".into(), n: 7 }).await.unwrap();
    let first = tokio::time::timeout(WAIT, events.next()).await.unwrap().unwrap();
    let id = first.id.clone();
    drop(first);
    let again = tokio::time::timeout(WAIT, events.next()).await.expect("redelivered").unwrap();
    assert_eq!((again.id.as_str(), again.attempt()), (id.as_str(), 2));
    again.ack().await.unwrap();
}

async fn a_poison_event_is_dead_lettered_after_max_attempts_and_the_rest_flow(url: String) {
    let topic = format!("{}.login", unique("user"));
    let group = unique("audit");
    let b = broker(&url).await;
    let mut dead = b.subscribe_durable(&format!("{group}.dlq"), quick(&unique("ops"))).await.unwrap();

    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<(u32, u32)>>>);
    async fn handle(Req(l): Req<Login>, ctx: CallContext, State(seen): State<Seen>) -> Result<(), Status> {
        let _ = ctx;
        seen.0.lock().unwrap().push((l.n, 0));
        if l.n == 0 {
            return Err(Status::internal("poison (part of a test)"));
        }
        Ok(())
    }
    let seen = Seen::default();
    let svc = Service::builder(unique("audit-svc"))
        .transport(&url)
        .state(seen.clone())
        .subscribe_with(&topic, quick(&group).max_attempts(4), handle)
        .start()
        .await
        .unwrap();
    for n in 0..50 {
        b.publish_durable(&topic, &Login { user_id: "mallory".into(), n }).await.unwrap();
    }
    let dlq = tokio::time::timeout(WAIT, dead.next()).await.expect("the poison event is dead-lettered").unwrap();
    let poison: Login = dlq.decode().unwrap();
    assert_eq!(poison.n, 0);
    assert_eq!(dlq.topic, format!("{group}.dlq"));
    let h = |k: &str| dlq_header(&dlq, k);
    assert_eq!(h(dlq_headers::ATTEMPTS).as_deref(), Some("4"));
    assert_eq!(h(dlq_headers::GROUP).as_deref(), Some(group.as_str()));
    assert_eq!(h(dlq_headers::TOPIC).as_deref(), Some(topic.as_str()));
    assert_eq!(h(dlq_headers::CODE).as_deref(), Some("500"));
    assert!(h(dlq_headers::REASON).unwrap().contains("poison"), "{:?}", h(dlq_headers::REASON));
    dlq.ack().await.unwrap();
    wait_for("the other 49 events", WAIT, || async {
        let s = seen.0.lock().unwrap();
        (s.iter().filter(|(n, _)| *n != 0).count() >= 49).then_some(())
    })
    .await;
    let s = seen.0.lock().unwrap().clone();
    assert_eq!(s.iter().filter(|(n, _)| *n == 0).count(), 4, "handled exactly max_attempts times");
    assert_eq!(s.iter().filter(|(n, _)| *n != 0).count(), 49, "every other event exactly once");
    let stats: micro::server::ServiceStats = svc.client().call(svc.name(), "Debug.Stats", &()).await.unwrap();
    assert_eq!((stats.retries, stats.dead_letters), (3, 1), "3 retries, then the dead letter");
    svc.stop().await.unwrap();
}

/// The dead letter's extra headers, read back from the event's metadata-free header set.
fn dlq_header(e: &micro::broker::DurableEvent, name: &str) -> Option<String> {
    e.headers().get(name).map(str::to_string)
}

async fn a_permanent_error_is_dead_lettered_at_once(url: String) {
    let topic = format!("{}.updated", unique("profile"));
    let group = unique("audit");
    let b = broker(&url).await;
    let mut dead = b.subscribe_durable(&format!("{group}.dlq"), quick(&unique("ops"))).await.unwrap();
    let mut events = b.subscribe_durable(&topic, quick(&group)).await.unwrap();
    b.publish_durable(&topic, &serde_json::json!({"no": "user id"})).await.unwrap();
    let e = tokio::time::timeout(WAIT, events.next()).await.unwrap().unwrap();
    e.settle(Err(Status::bad_request("user_id is required"))).await.unwrap();
    let d = tokio::time::timeout(WAIT, dead.next()).await.expect("dead-lettered").unwrap();
    assert_eq!(dlq_header(&d, dlq_headers::ATTEMPTS).as_deref(), Some("1"));
    assert_eq!(dlq_header(&d, dlq_headers::CODE).as_deref(), Some("400"));
    d.ack().await.unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(300), events.next()).await.is_err(), "not retried");
}

async fn a_panicking_durable_handler_is_retried(url: String) {
    let topic = format!("{}.placed", unique("order"));
    #[derive(Clone, Default)]
    struct Calls(Arc<Mutex<u32>>);
    async fn flaky(Req(_): Req<serde_json::Value>, State(calls): State<Calls>) -> Result<(), Status> {
        let n = {
            let mut c = calls.0.lock().unwrap();
            *c += 1;
            *c
        };
        if n == 1 {
            panic!("first try panics (part of a test)");
        }
        Ok(())
    }
    let calls = Calls::default();
    let name = unique("billing");
    let svc = Service::builder(&name)
        .transport(&url)
        .state(calls.clone())
        .subscribe_with(&topic, quick(&name), flaky)
        .start()
        .await
        .unwrap();
    svc.broker().publish_durable(&topic, &serde_json::json!({"order": 1})).await.unwrap();
    wait_for("the retry after the panic", WAIT, || async { (*calls.0.lock().unwrap() >= 2).then_some(()) }).await;
    svc.stop().await.unwrap();
}

async fn a_member_handles_at_most_its_concurrency_at_once(url: String) {
    let topic = format!("{}.placed", unique("order"));
    #[derive(Clone, Default)]
    struct Load(Arc<Mutex<(u32, u32, u32)>>); // (running, most running, done)
    async fn slow(Req(_): Req<serde_json::Value>, State(load): State<Load>) -> Result<(), Status> {
        {
            let mut l = load.0.lock().unwrap();
            l.0 += 1;
            l.1 = l.1.max(l.0);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut l = load.0.lock().unwrap();
        l.0 -= 1;
        l.2 += 1;
        Ok(())
    }
    let load = Load::default();
    let name = unique("billing");
    let svc = Service::builder(&name)
        .transport(&url)
        .state(load.clone())
        .subscribe_with(&topic, quick(&name).concurrency(3), slow)
        .start()
        .await
        .unwrap();
    let b = svc.broker().clone();
    futures::future::try_join_all((0..30).map(|n| {
        let (b, topic) = (b.clone(), topic.clone());
        async move { b.publish_durable(&topic, &serde_json::json!({ "n": n })).await }
    }))
    .await
    .unwrap();
    wait_for("all 30 handled", WAIT, || async { (load.0.lock().unwrap().2 == 30).then_some(()) }).await;
    let most = load.0.lock().unwrap().1;
    assert_eq!(most, 3, "3 at once (the concurrency), never more: saw {most}");
    svc.stop().await.unwrap();
}

async fn durable_subscriptions_need_a_group(url: String) {
    let b = broker(&url).await;
    let e = b.subscribe_durable("x.y", SubscribeOptions::broadcast().max_attempts(2)).await.unwrap_err();
    assert_eq!(e.kind(), micro::ErrorKind::Config, "{e}");
    let e = b.subscribe("x.y", SubscribeOptions::durable("g")).await.unwrap_err();
    assert_eq!(e.kind(), micro::ErrorKind::Config, "{e}");
}

over_transports!(
    durable_events_reach_the_group_once_and_are_acked,
    failures_are_retried_with_growing_attempts_then_succeed,
    a_dropped_unsettled_event_comes_back_at_once,
    a_poison_event_is_dead_lettered_after_max_attempts_and_the_rest_flow,
    a_permanent_error_is_dead_lettered_at_once,
    a_panicking_durable_handler_is_retried,
    durable_subscriptions_need_a_group,
    a_member_handles_at_most_its_concurrency_at_once,
);

mod crash {
    use super::*;

    /// A member that goes away holding an event (its process died): the broker gives the event to
    /// the group again, after the ack wait on NATS, when the channel closes on RabbitMQ.
    async fn a_crashed_members_event_goes_to_the_next_member(url: String) {
        let topic = format!("{}.login", unique("user"));
        let group = unique("audit");
        let opts = quick(&group).ack_wait(Duration::from_millis(500));
        let crashed = micro::transport::connect(&url).await.unwrap();
        let b = broker(&url).await;
        let mut events =
            Broker::new(crashed.clone(), "crashing").subscribe_durable(&topic, opts.clone()).await.unwrap();
        b.publish_durable(&topic, &Login { user_id: "eve".into(), n: 7 }).await.unwrap();
        let first = tokio::time::timeout(WAIT, events.next()).await.unwrap().unwrap();
        let id = first.id.clone();
        // Nothing is settled and nothing handed back: the connection just goes.
        std::mem::forget(first);
        std::mem::forget(events);
        crashed.close().await.unwrap();
        let mut events = b.subscribe_durable(&topic, opts).await.unwrap();
        let again = tokio::time::timeout(WAIT, events.next()).await.expect("redelivered").unwrap();
        assert_eq!(again.id, id);
        assert!(again.attempt() >= 2, "counted as another attempt: {}", again.attempt());
        again.ack().await.unwrap();
    }

    /// A member stopped gracefully hands back what it had pulled but not handled: the next
    /// member gets it at once, not after the ack wait (30 s by default).
    async fn a_stopped_member_hands_back_what_it_had_not_handled(url: String) {
        let topic = format!("{}.placed", unique("order"));
        let group = unique("billing");
        #[derive(Clone, Default)]
        struct Done(Arc<Mutex<Vec<u32>>>);
        async fn slow(Req(l): Req<Login>, State(done): State<Done>) -> Result<(), Status> {
            tokio::time::sleep(Duration::from_millis(20)).await;
            done.0.lock().unwrap().push(l.n);
            Ok(())
        }
        let done = Done::default();
        let distinct = |d: &Done| d.0.lock().unwrap().iter().collect::<HashSet<_>>().len();
        let member = |done: Done| {
            Service::builder(unique("billing-node")).transport(&url).state(done).subscribe_with(
                &topic,
                SubscribeOptions::durable(&group).concurrency(4).expire_after(Duration::from_secs(120)),
                slow,
            )
        };
        let first = member(done.clone()).start().await.unwrap();
        let b = broker(&url).await;
        futures::future::try_join_all((0..200).map(|n| {
            let (b, topic) = (b.clone(), topic.clone());
            async move { b.publish_durable(&topic, &Login { user_id: "ada".into(), n }).await }
        }))
        .await
        .unwrap();
        wait_for("the first member to be busy", WAIT, || async { (distinct(&done) > 0).then_some(()) }).await;
        // A graceful stop: what it handled is acknowledged, the rest goes back.
        first.stop().await.unwrap();
        let second = member(done.clone()).start().await.unwrap();
        wait_for("every event handled by one member or the other", WAIT, || async {
            (distinct(&done) == 200).then_some(())
        })
        .await;
        second.stop().await.unwrap();
        let handled = done.0.lock().unwrap().len();
        assert_eq!(handled, 200, "a graceful stop hands nothing handled back: {} handled twice", handled - 200);
    }

    /// A deleted group starts afresh: what it held is gone.
    async fn a_deleted_group_starts_afresh(url: String) {
        let topic = format!("{}.login", unique("user"));
        let group = unique("audit");
        let b = broker(&url).await;
        let events = b.subscribe_durable(&topic, quick(&group)).await.unwrap();
        b.publish_durable(&topic, &Login { user_id: "old".into(), n: 1 }).await.unwrap();
        drop(events);
        b.delete_durable(&topic, &group).await.unwrap();
        b.delete_durable(&topic, &group).await.expect("deleting what is gone is fine");
        let mut events = b.subscribe_durable(&topic, quick(&group)).await.unwrap();
        b.publish_durable(&topic, &Login { user_id: "new".into(), n: 2 }).await.unwrap();
        let e = tokio::time::timeout(WAIT, events.next()).await.unwrap().unwrap();
        assert_eq!(e.decode::<Login>().unwrap().user_id, "new", "the deleted group's event is gone");
        e.ack().await.unwrap();
        drop(events);
        b.delete_durable(&topic, &group).await.unwrap();
    }

    /// A group nobody uses for `expire_after` is removed by the broker.
    async fn an_unused_group_expires(url: String) {
        let topic = format!("{}.login", unique("user"));
        let group = unique("audit");
        let t = micro::transport::connect(&url).await.unwrap();
        let b = Broker::new(t.clone(), "events-test");
        let events = b.subscribe_durable(&topic, quick(&group).expire_after(Duration::from_secs(1))).await.unwrap();
        drop(events);
        t.close().await.unwrap();
        let b = broker(&url).await;
        #[cfg(feature = "nats")]
        if url.starts_with("nats") {
            let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
            let mine = format!("group {group} on");
            wait_for("the consumer to expire", WAIT, || {
                let (js, mine) = (js.clone(), mine.clone());
                async move {
                    let stream = js.get_stream(micro::transport::NATS_EVENTS_STREAM).await.ok()?;
                    let mut consumers = stream.consumers();
                    while let Some(c) = consumers.next().await {
                        if c.ok()?.config.description.is_some_and(|d| d.contains(&mine)) {
                            return None;
                        }
                    }
                    Some(())
                }
            })
            .await;
            return;
        }
        // RabbitMQ: once the queue is gone, nothing would keep a durable publish.
        wait_for("the queue to expire", WAIT, || async {
            b.publish_durable(&topic, &Login { user_id: "x".into(), n: 0 }).await.err().filter(|e| e.is_unavailable())
        })
        .await;
    }

    over_brokers!(
        a_deleted_group_starts_afresh,
        an_unused_group_expires,
        a_crashed_members_event_goes_to_the_next_member,
        a_stopped_member_hands_back_what_it_had_not_handled,
    );
}

/// On memory nobody may be listening on the dead-letter topic: a poison event is still given
/// up after `max_attempts` instead of bouncing forever.
#[actix::test]
async fn memory_dead_letters_without_a_dlq_subscriber() {
    let url = memory_url();
    let topic = format!("{}.login", unique("user"));
    let group = unique("audit");
    let b = broker(&url).await;
    let mut events = b.subscribe_durable(&topic, quick(&group)).await.unwrap();
    b.publish_durable(&topic, &Login { user_id: "x".into(), n: 0 }).await.unwrap();
    for attempt in 1..=3 {
        let e = tokio::time::timeout(WAIT, events.next()).await.unwrap().unwrap();
        assert_eq!(e.attempt(), attempt);
        e.settle(Err(Status::internal("poison"))).await.unwrap();
    }
    assert!(tokio::time::timeout(Duration::from_millis(500), events.next()).await.is_err(), "given up");
}
