//! Behaviours the docs promise, each checked where it applies: retries (only when safe, with the
//! same id and deadline), load shedding with `Debug.*` exempt, registry TTL expiry, the
//! blacklist's backoff, durable keep-alive, dead letters that cannot be stored, JetStream
//! deduplication, and headers that would break the wire.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use micro::broker::Broker;
use micro::message::{headers, Headers, Message};
use micro::prelude::*;
use micro::registry::WatchAction;
use micro::{Code, ErrorKind};

use crate::util::*;

over_transports!(
    a_timed_out_call_to_a_non_idempotent_endpoint_is_not_retried,
    retries_keep_the_same_id_and_deadline,
    above_max_in_flight_requests_get_503_and_debug_endpoints_still_answer,
    a_node_that_stops_announcing_expires_after_its_ttl,
    headers_with_line_breaks_are_refused,
);

mod durable {
    over_brokers!(a_durable_handler_slower_than_ack_wait_keeps_its_event);

    async fn a_durable_handler_slower_than_ack_wait_keeps_its_event(url: String) {
        super::a_durable_handler_slower_than_ack_wait_keeps_its_event(url).await
    }
}

/// `(handlers started, handlers finished)`.
#[derive(Clone, Default)]
struct Runs(Arc<(AtomicUsize, AtomicUsize)>);

async fn slow_once(Req(s): Req<Sleep>, State(runs): State<Runs>) -> Result<u64, Status> {
    runs.0 .0.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(s.ms)).await;
    runs.0 .1.fetch_add(1, Ordering::SeqCst);
    Ok(s.ms)
}

async fn a_timed_out_call_to_a_non_idempotent_endpoint_is_not_retried(url: String) {
    let name = unique("orders");
    let runs = Runs::default();
    let svc = Service::builder(&name)
        .transport(&url)
        .state(runs.clone())
        .handle("Order.Place", slow_once)
        .start()
        .await
        .unwrap();
    let client = Client::connect(&url).await.unwrap();
    // Retries allowed, but the endpoint is not idempotent: after a timeout it may have run.
    let opts = CallOptions::new().timeout(Duration::from_millis(300)).retry(RetryPolicy::default().max_retries(3));
    let e = client.call_with::<_, u64, _>(&name, "Order.Place", &Sleep { ms: 900 }, opts).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    // A retry would have started a second handler before the first one finished.
    wait_for("the one handler to finish", WAIT, || async { (runs.0 .1.load(Ordering::SeqCst) >= 1).then_some(()) })
        .await;
    assert_eq!(runs.0 .0.load(Ordering::SeqCst), 1, "the call ran once: not retried after its timeout");
    svc.stop().await.unwrap();
}

/// What a handler saw of one attempt: (`Micro-Id`, deadline in ms since the epoch).
type Attempt = (String, Option<u64>);

/// Every attempt a handler saw.
#[derive(Clone, Default)]
struct Attempts(Arc<Mutex<Vec<Attempt>>>);

async fn slow_first_time(
    Req(_): Req<serde_json::Value>,
    ctx: CallContext,
    State(seen): State<Attempts>,
) -> Result<u32, Status> {
    let n = {
        let mut s = seen.0.lock().unwrap();
        s.push((ctx.id().to_string(), ctx.deadline().map(|d| d.as_millis())));
        s.len()
    };
    if n == 1 {
        // Longer than the first attempt's share of the deadline: the client times out.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    Ok(n as u32)
}

async fn retries_keep_the_same_id_and_deadline(url: String) {
    let name = unique("catalog");
    let seen = Attempts::default();
    let svc = Service::builder(&name)
        .transport(&url)
        .state(seen.clone())
        .handle("Catalog.Get", slow_first_time)
        .idempotent("Catalog.Get")
        .start()
        .await
        .unwrap();
    let client = Client::connect(&url).await.unwrap();
    let opts = CallOptions::new()
        .timeout(Duration::from_millis(2400))
        .retry(RetryPolicy::default().max_retries(2))
        .id(micro::message::new_id());
    let n: u32 = client.call_with(&name, "Catalog.Get", &serde_json::json!({}), opts).await.unwrap();
    assert!(n >= 2, "answered by a retry");
    let seen = seen.0.lock().unwrap().clone();
    assert!(seen.len() >= 2, "{seen:?}");
    let (id, deadline) = &seen[0];
    assert!(!id.is_empty() && deadline.is_some(), "{seen:?}");
    for (i, d) in &seen[1..] {
        assert_eq!((i, d), (id, deadline), "a retry resends the same message: same Micro-Id, same deadline");
    }
    svc.stop().await.unwrap();
}

async fn above_max_in_flight_requests_get_503_and_debug_endpoints_still_answer(url: String) {
    let name = unique("busy");
    let runs = Runs::default();
    let svc = Service::builder(&name)
        .transport(&url)
        .state(runs.clone())
        .state(Label("a".into()))
        .handle("Work.Slow", slow_once)
        .handle("Say.Hello", say_hello)
        .max_in_flight(2)
        .start()
        .await
        .unwrap();
    let client = Client::connect(&url).await.unwrap();
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let (c, n) = (client.clone(), name.clone());
            actix_rt::spawn(async move { c.call::<_, u64, _>(&n, "Work.Slow", &Sleep { ms: 1500 }).await })
        })
        .collect();
    // Counted by the handlers, not by a probe: a probe is a request in flight too.
    wait_for("2 requests in flight", WAIT, || async { (runs.0 .0.load(Ordering::SeqCst) == 2).then_some(()) }).await;
    let no_retry = CallOptions::new().retry(RetryPolicy::none());
    let e = client
        .call_with::<_, Greeting, _>(&name, "Say.Hello", &Hello { name: "x".into() }, no_retry.clone())
        .await
        .unwrap_err();
    assert_eq!(e.status().map(|s| s.code()), Some(Code::UNAVAILABLE), "{e}");
    // Debug.* are exempt, so probes still answer under load.
    let h: micro::server::HealthStatus =
        client.call_with(&name, "Debug.Health", &(), no_retry.clone()).await.expect("Debug.Health is exempt");
    assert_eq!(h.status, "ok");
    let s: micro::server::ServiceStats =
        client.call_with(&name, "Debug.Stats", &(), no_retry.clone()).await.expect("Debug.Stats is exempt");
    assert_eq!(s.in_flight, 3, "the 2 slow requests and the Stats request itself");
    for c in slow {
        assert_eq!(c.await.unwrap().unwrap(), 1500);
    }
    let g: Greeting = client.call_with(&name, "Say.Hello", &Hello { name: "x".into() }, no_retry).await.unwrap();
    assert_eq!(g.msg, "Hello x", "served again once the load is gone");
    svc.stop().await.unwrap();
}

async fn a_node_that_stops_announcing_expires_after_its_ttl(url: String) {
    let name = unique("quiet");
    let client = Client::connect(&url).await.unwrap();
    let mut watch = client.registry().watch().await.unwrap();
    // One announcement by hand with a TTL of 1 s, never repeated: only the TTL removes it.
    let node = format!("{name}-1");
    let announcement = serde_json::json!({
        "action": "register",
        "ttl": 1000,
        "service": {"name": name, "version": "1.0.0",
            "nodes": [{"id": node, "address": format!("micro.node.{node}"), "metadata": {}}]},
    });
    let mut h = Headers::new();
    h.insert(headers::CONTENT_TYPE, Codec::Json.content_type());
    let t = micro::transport::connect(&url).await.unwrap();
    t.publish(micro::subject::REGISTRY_ANNOUNCE, Message::with_headers(h, announcement.to_string().into()))
        .await
        .unwrap();
    async fn next(watch: &mut micro::registry::Watcher, name: &str) -> micro::registry::WatchEvent {
        loop {
            let ev = watch.next().await.unwrap();
            if ev.service.name == name {
                return ev;
            }
        }
    }
    let added = tokio::time::timeout(WAIT, next(&mut watch, &name)).await.expect("the node is announced");
    assert_eq!(added.action, WatchAction::Added);
    let seen = Instant::now();
    let removed = tokio::time::timeout(WAIT, next(&mut watch, &name)).await.expect("the node expires");
    let after = seen.elapsed();
    assert_eq!(removed.action, WatchAction::Removed);
    assert!(after >= Duration::from_millis(900), "not before its TTL: removed after {after:?}");
    assert!(after < Duration::from_secs(5), "soon after its TTL (checked every 100 ms to 1 s): {after:?}");
    assert!(client.registry().get_service(&name).await.unwrap().is_empty());
}

/// The blacklist backs a failing node off for `base`, doubling per failure up to `max`; a
/// success forgives it at once.
#[actix::test]
async fn blacklist_backoff_doubles_up_to_its_cap_and_a_success_clears_it() {
    use micro::selector::{Blacklist, Selector, Strategy};
    let base = Duration::from_millis(300);
    let selector = Selector::with_blacklist(Strategy::Random, Blacklist::new(base, Duration::from_millis(800)));
    let out_for = |selector: &Selector| {
        let selector = selector.clone();
        async move {
            selector.failed("n1");
            let t = Instant::now();
            wait_for("the node to be back", WAIT, || async { (!selector.is_blacklisted("n1")).then_some(()) }).await;
            t.elapsed()
        }
    };
    let first = out_for(&selector).await;
    let second = out_for(&selector).await;
    let third = out_for(&selector).await;
    assert!(first >= base && first < 2 * base, "first failure: {first:?}");
    assert!(second >= 2 * base && second < 4 * base, "second failure doubles: {second:?}");
    assert!(third >= Duration::from_millis(800) && third < 4 * base, "third capped at 800 ms: {third:?}");
    selector.failed("n1");
    assert!(selector.is_blacklisted("n1"));
    selector.succeeded("n1");
    assert!(!selector.is_blacklisted("n1"), "a success clears it at once");
    let after_clear = out_for(&selector).await;
    assert!(after_clear < 2 * base, "and the doubling starts over: {after_clear:?}");
}

/// A handler that runs longer than `ack_wait` reports progress, so the broker does not hand its
/// event to anyone again meanwhile.
async fn a_durable_handler_slower_than_ack_wait_keeps_its_event(url: String) {
    let topic = format!("{}.exported", unique("report"));
    let runs = Runs::default();
    async fn export(Req(_): Req<serde_json::Value>, State(runs): State<Runs>) -> Result<(), Status> {
        runs.0 .0.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(2000)).await;
        runs.0 .1.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    let name = unique("exporter");
    let opts =
        SubscribeOptions::durable(&name).ack_wait(Duration::from_millis(400)).expire_after(Duration::from_secs(120));
    let svc = Service::builder(&name)
        .transport(&url)
        .state(runs.clone())
        .subscribe_with(&topic, opts, export)
        .start()
        .await
        .unwrap();
    svc.broker().publish_durable(&topic, &serde_json::json!({"report": 1})).await.unwrap();
    wait_for("the export to finish", WAIT, || async { (runs.0 .1.load(Ordering::SeqCst) == 1).then_some(()) }).await;
    assert_eq!(runs.0 .0.load(Ordering::SeqCst), 1, "handed out once in 2 s, with an ack wait of 400 ms");
    let stats: micro::server::ServiceStats = svc.client().call(&name, "Debug.Stats", &()).await.unwrap();
    assert_eq!((stats.events, stats.retries), (1, 0));
    svc.stop().await.unwrap();
}

/// An event whose dead letter cannot be stored goes back to the broker instead of being lost:
/// here the group's dead-letter queue is deleted under it (RabbitMQ returns what no queue takes).
#[cfg(feature = "rabbitmq")]
#[actix::test]
async fn a_dead_letter_that_cannot_be_stored_goes_back_to_the_broker() {
    let url = amqp_url();
    let topic = format!("{}.updated", unique("profile"));
    let group = unique("audit");
    let b = Broker::new(micro::transport::connect(&url).await.unwrap(), "promises");
    let opts = SubscribeOptions::durable(&group)
        .max_attempts(5)
        .backoff(Duration::from_millis(20), Duration::from_millis(100))
        .expire_after(Duration::from_secs(120));
    let mut events = b.subscribe_durable(&topic, opts).await.unwrap();
    let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_delete(format!("{group}.dlq").as_str().into(), lapin::options::QueueDeleteOptions::default())
        .await
        .unwrap();
    b.publish_durable(&topic, &serde_json::json!({"no": "user id"})).await.unwrap();
    let e = tokio::time::timeout(WAIT, events.next()).await.unwrap().unwrap();
    let id = e.id.clone();
    let outcome = e.settle(Err(Status::bad_request("user_id is required"))).await;
    assert!(outcome.is_err(), "the dead letter was not stored: {outcome:?}");
    let again = tokio::time::timeout(WAIT, events.next()).await.expect("the event came back").unwrap();
    assert_eq!((again.id.as_str(), again.attempt()), (id.as_str(), 2));
    again.ack().await.unwrap();
    let _ = conn.close(200, "bye".into()).await;
}

/// JetStream keeps one copy of an event published twice with the same id (within the stream's
/// duplicate window): the event id is the `Nats-Msg-Id`.
#[cfg(feature = "nats")]
#[actix::test]
async fn jetstream_stores_a_repeated_event_id_once() {
    let url = nats_url();
    let topic = format!("{}.placed", unique("order"));
    let group = unique("billing");
    let t = micro::transport::connect(&url).await.unwrap();
    let b = Broker::new(t.clone(), "promises");
    let mut events = b
        .subscribe_durable(&topic, SubscribeOptions::durable(&group).expire_after(Duration::from_secs(120)))
        .await
        .unwrap();
    let event = |id: &str| {
        let mut h = Headers::new();
        h.insert(headers::CONTENT_TYPE, Codec::Json.content_type());
        h.insert(headers::ID, id.to_string());
        h.insert(headers::TIMESTAMP, "1700000000000");
        Message::with_headers(h, br#"{"order":1}"#.to_vec().into())
    };
    let (repeated, last) = (uuid::Uuid::now_v7().to_string(), uuid::Uuid::now_v7().to_string());
    let subject = micro::subject::event(&topic);
    for id in [&repeated, &repeated, &last] {
        t.publish_durable(&subject, event(id)).await.unwrap();
    }
    let first = tokio::time::timeout(WAIT, events.next()).await.unwrap().unwrap();
    assert_eq!(first.id, repeated);
    first.ack().await.unwrap();
    let next = tokio::time::timeout(WAIT, events.next()).await.unwrap().unwrap();
    assert_eq!(next.id, last, "the repeated id was stored once");
    next.ack().await.unwrap();
}

/// A header value with CR or LF (or a name with `:`) could forge headers on the wire (NATS'
/// header block is text): the call fails on every transport before anything is sent.
async fn headers_with_line_breaks_are_refused(url: String) {
    let name = unique("greeter");
    let runs = Runs::default();
    async fn hello(Req(h): Req<Hello>, State(runs): State<Runs>) -> Result<Greeting, Status> {
        runs.0 .0.fetch_add(1, Ordering::SeqCst);
        Ok(Greeting { msg: format!("Hello {}", h.name), node: "a".into() })
    }
    let svc =
        Service::builder(&name).transport(&url).state(runs.clone()).handle("Say.Hello", hello).start().await.unwrap();
    let client = Client::connect(&url).await.unwrap();
    let hi = Hello { name: "x".into() };
    let call = |opts: CallOptions| client.call_with::<_, Greeting, _>(&name, "Say.Hello", &hi, opts);
    for (key, value) in [("note", "a\r\nMicro-Service: other"), ("note", "a\nb"), ("bad:key", "v")] {
        let e = call(CallOptions::new().metadata(key, value)).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config, "{key:?}: {value:?}: {e}");
    }
    assert_eq!(runs.0 .0.load(Ordering::SeqCst), 0, "nothing reached the service");
    call(CallOptions::new().metadata("note", "fine")).await.unwrap();
    assert_eq!(runs.0 .0.load(Ordering::SeqCst), 1);
    svc.stop().await.unwrap();
}
