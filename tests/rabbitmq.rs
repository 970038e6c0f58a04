//! RabbitMQ-specific behaviour: reconnection after a broker restart (on a private node),
//! nothing left behind after a graceful shutdown, a bounded number of channels, and durable
//! delivery (durable queues, publisher confirms and returns, retries, dead letters).

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use micro::broker::{dlq_headers, Broker};
use micro::dev::DurableSpec;
use micro::message::{headers, Headers, Message};
use micro::prelude::*;
use micro::ErrorKind;

use crate::util::*;

#[actix::test]
async fn service_and_client_reconnect_after_a_broker_restart() {
    let rabbit = PrivateRabbit::start().await;
    let url = rabbit.url();
    let name = unique("greeter");
    let topic = format!("{}.login", unique("user"));
    #[derive(Clone, Default)]
    struct Seen(Arc<AtomicUsize>);
    async fn on_login(State(Seen(n)): State<Seen>, Req(_): Req<serde_json::Value>) -> Result<(), Status> {
        n.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    let seen = Seen::default();
    let svc = greeter(&url, &name, "a").state(seen.clone()).subscribe(&topic, on_login).start().await.unwrap();
    let client = Client::connect(&url).await.unwrap();
    let g: Greeting = client.call(&name, "Say.Hello", &Hello { name: "before".into() }).await.unwrap();
    assert_eq!(g.msg, "Hello before");

    rabbit.stop_app().await;
    // While the broker is away calls fail fast with Unavailable; none hangs to its timeout. (A
    // call racing the connection's close may fail mid-flight instead: that one is not retried.)
    let opts = CallOptions::new().timeout(std::time::Duration::from_secs(30)).retry(RetryPolicy::none());
    wait_for("calls to fail fast", WAIT, || async {
        match client.call_with::<_, Greeting, _>(&name, "Say.Hello", &Hello { name: "down".into() }, opts.clone()).await
        {
            Err(e) if e.kind() == ErrorKind::Unavailable => Some(()),
            Err(e) if e.is_timeout() => panic!("a call hung until its timeout: {e}"),
            Err(e) if e.kind() == ErrorKind::Transport => None,
            other => panic!("unexpected outcome while the broker is down: {other:?}"),
        }
    })
    .await;
    let e = client.publish(&topic, &serde_json::json!({"user": "down"})).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");

    rabbit.start_app().await;
    // Both sides reconnect with backoff, re-declare queues and consumers, and serve again.
    let g = wait_for("calls to succeed again", WAIT, || async {
        client.call::<_, Greeting, _>(&name, "Say.Hello", &Hello { name: "after".into() }).await.ok()
    })
    .await;
    assert_eq!(g.msg, "Hello after");
    wait_for("events to flow again", WAIT, || async {
        client.publish(&topic, &serde_json::json!({"user": "after"})).await.ok()?;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        (seen.0.load(Ordering::SeqCst) >= 1).then_some(())
    })
    .await;
    svc.stop().await.unwrap();
}

#[actix::test]
async fn graceful_shutdown_leaves_no_queue_binding_or_consumer_behind() {
    let url = amqp_url();
    let name = unique("tidy");
    let topic = format!("{}.placed", unique("order"));
    async fn ignore(Req(_): Req<serde_json::Value>) -> Result<(), Status> {
        Ok(())
    }
    let svc = greeter(&url, &name, "a")
        .subscribe(&topic, ignore)
        .subscribe_with(&topic, SubscribeOptions::broadcast(), ignore)
        .start()
        .await
        .unwrap();
    let node = svc.node_id().to_string();
    let client = Client::connect(&url).await.unwrap();
    let _: Greeting = client.call(&name, "Say.Hello", &Hello { name: "x".into() }).await.unwrap();
    let queues = rabbitmqctl_list(&["list_queues", "name"]);
    assert!(queues.contains(&format!("micro.rpc.{name}")), "the shared queue exists while serving");
    assert!(queues.contains(&node), "the node queue exists while serving");

    svc.stop().await.unwrap();
    let leftovers = |listing: &str| -> Vec<String> {
        listing
            .lines()
            .filter(|l| l.contains(&name) || l.contains(&node) || l.contains(&topic))
            .map(str::to_string)
            .collect()
    };
    wait_for("the node's queues to go", WAIT, || async {
        leftovers(&rabbitmqctl_list(&["list_queues", "name"])).is_empty().then_some(())
    })
    .await;
    assert_eq!(
        leftovers(&rabbitmqctl_list(&["list_bindings", "destination_name", "routing_key"])),
        Vec::<String>::new()
    );
    assert_eq!(leftovers(&rabbitmqctl_list(&["list_consumers", "queue_name"])), Vec::<String>::new());
}

#[actix::test]
async fn channels_stay_bounded_under_load() {
    // A private node: only this test's connections are listed (durable subscriptions elsewhere
    // legitimately add a channel each).
    let rabbit = PrivateRabbit::start().await;
    let url = rabbit.url();
    let name = unique("busy");
    let svc = greeter(&url, &name, "a").start().await.unwrap();
    let client = Client::connect(&url).await.unwrap();
    let calls = (0..300).map(|i| {
        let (c, n) = (client.clone(), name.clone());
        async move { c.call::<_, Greeting, _>(&n, "Say.Hello", &Hello { name: i.to_string() }).await }
    });
    for r in futures::future::join_all(calls).await {
        r.unwrap();
    }
    let listing = rabbit.ctl_list(&["list_connections", "client_properties", "channels"]);
    let ours: Vec<(String, usize)> = listing
        .lines()
        .filter(|l| l.contains("actix-micro"))
        .filter_map(|l| l.rsplit_once('\t').map(|(n, c)| (n.to_string(), c.trim().parse().unwrap_or(usize::MAX))))
        .collect();
    assert!(!ours.is_empty(), "our connections are listed: {listing}");
    assert!(ours.iter().all(|(_, c)| *c <= 4), "no connection uses more than 4 channels, whatever the load: {ours:?}");
    svc.stop().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Durable delivery.

/// An event message with an id, as the broker layer sends it.
fn event(body: &str) -> Message {
    let mut h = Headers::new();
    h.push(headers::ID, uuid::Uuid::now_v7().to_string());
    h.push(headers::CONTENT_TYPE, "text/plain");
    Message::with_headers(h, bytes::Bytes::from(body.to_string()))
}

/// The next item, or a panic naming `what` after `WAIT`.
async fn next<S: Stream + Unpin>(stream: &mut S, what: &str) -> S::Item {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .unwrap_or_else(|| panic!("the stream ended waiting for {what}"))
}

fn body(m: &Message) -> String {
    String::from_utf8_lossy(&m.body).into_owned()
}

/// The durable queues a test declared on the shared broker are not auto-deleted: remove them.
async fn delete_queues(queues: &[&str]) {
    let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    for q in queues {
        ch.queue_delete((*q).into(), lapin::options::QueueDeleteOptions::default()).await.unwrap();
    }
    let _ = conn.close(200, "bye".into()).await;
}

/// The headers of a message read straight from a queue (long strings only, as the transport
/// sends them; the id is the AMQP message id).
fn dead_letter_headers(p: &lapin::BasicProperties) -> Headers {
    let mut h = Headers::new();
    if let Some(id) = p.message_id() {
        h.push(headers::ID, id.as_str().to_string());
    }
    for (k, v) in p.headers().as_ref().map(|t| t.inner().clone()).unwrap_or_default() {
        if let lapin::types::AMQPValue::LongString(s) = v {
            h.push(k.as_str().to_string(), String::from_utf8_lossy(s.as_bytes()).into_owned());
        }
    }
    h
}

/// `rabbitmqctl list_queues` lines of one queue (tab-separated columns after the name).
fn queue_line(columns: &[&str], queue: &str) -> Option<String> {
    let mut args = vec!["list_queues", "name"];
    args.extend_from_slice(columns);
    rabbitmqctl_list(&args).lines().find(|l| l.split('\t').next() == Some(queue)).map(str::to_string)
}

#[actix::test]
async fn durable_publish_fails_until_a_durable_subscription_would_keep_the_event() {
    let t = micro::transport::connect(&amqp_url()).await.unwrap();
    let subject = format!("micro.event.{}.placed", unique("order"));
    let group = unique("billing");
    let e = t.publish_durable(&subject, event("lost")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.to_string().contains("no durable subscription would keep the event"), "{e}");

    let mut sub = t.subscribe_durable(&DurableSpec::new(&subject, &group)).await.unwrap();
    t.publish_durable(&subject, event("kept")).await.unwrap();
    let d = next(&mut sub, "the kept event").await;
    assert_eq!((d.subject.as_str(), d.attempt, body(&d.message).as_str()), (subject.as_str(), 1, "kept"));
    assert!(d.message.headers.get(headers::ID).is_some(), "the id comes through as message_id");
    d.acker.ack().await.unwrap();
    drop(sub);
    t.close().await.unwrap();
    delete_queues(&[&format!("durable:{group}@{subject}"), &format!("{group}.dlq")]).await;
}

#[actix::test]
async fn drained_durable_subscription_yields_what_it_received_and_can_still_ack_it() {
    let t = micro::transport::connect(&amqp_url()).await.unwrap();
    let subject = format!("micro.event.{}.drained", unique("stock"));
    let group = unique("inventory");
    let spec = DurableSpec::new(&subject, &group).concurrency(10);
    let mut sub = t.subscribe_durable(&spec).await.unwrap();
    for i in 0..5 {
        t.publish_durable(&subject, event(&i.to_string())).await.unwrap();
    }
    let first = next(&mut sub, "the first event").await;
    sub.drain().await.unwrap();
    let mut received = vec![first];
    while let Some(d) = tokio::time::timeout(WAIT, sub.next()).await.expect("a drained stream ends") {
        received.push(d);
    }
    let mut got = HashSet::new();
    for d in received {
        got.insert(body(&d.message));
        d.acker.ack().await.expect("what was received before the drain can still be acked");
    }
    drop(sub);
    // What the drained subscription never received is still in the queue for the group.
    let mut sub = t.subscribe_durable(&spec).await.unwrap();
    while got.len() < 5 {
        let d = next(&mut sub, "the events the drained subscription did not take").await;
        assert!(got.insert(body(&d.message)), "an acked event came again: {}", body(&d.message));
        d.acker.ack().await.unwrap();
    }
    drop(sub);
    t.close().await.unwrap();
    delete_queues(&[&format!("durable:{group}@{subject}"), &format!("{group}.dlq")]).await;
}

#[actix::test]
async fn concurrent_durable_publishes_each_learn_whether_their_own_event_was_kept() {
    let t = micro::transport::connect(&amqp_url()).await.unwrap();
    let routed = format!("micro.event.{}.kept", unique("mixed"));
    let unrouted = format!("micro.event.{}.lost", unique("mixed"));
    let group = unique("mixed");
    let mut sub = t.subscribe_durable(&DurableSpec::new(&routed, &group).concurrency(200)).await.unwrap();
    const N: usize = 2000;
    let publishes = (0..N).map(|i| {
        let (t, subject) = (t.clone(), if i.is_multiple_of(2) { routed.clone() } else { unrouted.clone() });
        async move { (i, t.publish_durable(&subject, event(&i.to_string())).await) }
    });
    let outcomes = tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(publishes))
        .await
        .expect("durable publishes hung");
    for (i, outcome) in outcomes {
        match outcome {
            Ok(()) => assert!(i.is_multiple_of(2), "publish {i} on the unrouted topic was confirmed as kept"),
            Err(e) => {
                assert!(!i.is_multiple_of(2), "publish {i} on the routed topic failed: {e}");
                assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
            }
        }
    }
    let mut seen = HashSet::new();
    while seen.len() < N / 2 {
        let d = next(&mut sub, "the routed events").await;
        let i: usize = body(&d.message).parse().unwrap();
        assert!(i.is_multiple_of(2), "event {i} came from the unrouted topic");
        seen.insert(i);
        d.acker.ack().await.unwrap();
    }
    drop(sub);
    t.close().await.unwrap();
    delete_queues(&[&format!("durable:{group}@{routed}"), &format!("{group}.dlq")]).await;
}

#[actix::test]
async fn durable_queue_is_a_quorum_queue_that_keeps_events_while_nobody_consumes() {
    let url = amqp_url();
    let subject = format!("micro.event.{}.created", unique("user"));
    let group = unique("audit");
    let queue = format!("durable:{group}@{subject}");
    let spec = DurableSpec::new(&subject, &group).concurrency(4);

    let first = micro::transport::connect(&url).await.unwrap();
    let mut sub = first.subscribe_durable(&spec).await.unwrap();
    let line = queue_line(&["type", "durable"], &queue).expect("the durable queue is declared");
    assert_eq!(line, format!("{queue}\tquorum\ttrue"));
    // Received but never settled when its consumer goes: delivered again, one attempt later.
    first.publish_durable(&subject, event("unsettled")).await.unwrap();
    let d = next(&mut sub, "the first delivery").await;
    assert_eq!((d.attempt, body(&d.message).as_str()), (1, "unsettled"));
    drop(d);
    drop(sub);
    first.close().await.unwrap();
    wait_for("the consumer to go", WAIT, || async {
        (!rabbitmqctl_list(&["list_consumers", "queue_name"]).lines().any(|l| l.trim() == queue)).then_some(())
    })
    .await;
    assert!(queue_line(&["type"], &queue).is_some(), "the durable queue outlives its consumers");

    let publisher = micro::transport::connect(&url).await.unwrap();
    for i in 0..3 {
        publisher.publish_durable(&subject, event(&format!("offline-{i}"))).await.unwrap();
    }

    let second = micro::transport::connect(&url).await.unwrap();
    let mut sub = second.subscribe_durable(&spec).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 4 {
        let d = next(&mut sub, "the events kept while nobody consumed").await;
        got.push((body(&d.message), d.attempt));
        assert!(d.message.headers.get("x-delivery-count").is_none(), "transport headers are stripped");
        d.acker.ack().await.unwrap();
    }
    got.sort();
    assert_eq!(
        got,
        vec![
            ("offline-0".to_string(), 1),
            ("offline-1".to_string(), 1),
            ("offline-2".to_string(), 1),
            ("unsettled".to_string(), 2)
        ]
    );
    drop(sub);
    second.close().await.unwrap();
    publisher.close().await.unwrap();
    delete_queues(&[&queue, &format!("{group}.dlq")]).await;
}

#[actix::test]
async fn retries_come_back_one_attempt_later_then_go_to_the_dead_letter_queue() {
    let t = micro::transport::connect(&amqp_url()).await.unwrap();
    let broker = Broker::new(t.clone(), "retry-test");
    let topic = format!("{}.charged", unique("card"));
    let group = unique("ledger");
    let dlq = format!("{group}.dlq");
    let opts =
        SubscribeOptions::durable(&group).max_attempts(3).backoff(Duration::from_millis(10), Duration::from_millis(50));
    let mut events = broker.subscribe_durable(&topic, opts).await.unwrap();
    let line = queue_line(&["type", "durable"], &dlq).expect("the dead-letter queue is declared");
    assert_eq!(line, format!("{dlq}\tquorum\ttrue"));

    broker.publish_durable(&topic, &serde_json::json!({"amount": 12})).await.unwrap();
    let mut id = None;
    for attempt in 1..=3 {
        let e = next(&mut events, &format!("attempt {attempt}")).await;
        assert_eq!(e.attempt(), attempt);
        assert_eq!(e.topic, topic, "a retry keeps its topic");
        assert_eq!(*id.get_or_insert_with(|| e.id.clone()), e.id, "a retry keeps its id");
        assert_eq!(e.decode::<serde_json::Value>().unwrap(), serde_json::json!({"amount": 12}));
        // The third is the last attempt: this retry dead-letters it.
        e.retry("not yet").await.unwrap();
    }
    let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let dead = wait_for("the dead letter to be kept", WAIT, || async {
        let get = lapin::options::BasicGetOptions { no_ack: true };
        ch.basic_get(dlq.as_str().into(), get).await.unwrap()
    })
    .await;
    let dead = dead_letter_headers(&dead.delivery.properties);
    assert_eq!(dead.get(dlq_headers::ATTEMPTS), Some("3"));
    assert_eq!(dead.get(dlq_headers::GROUP), Some(group.as_str()));
    assert_eq!(dead.get(dlq_headers::TOPIC), Some(topic.as_str()));
    assert!(dead.get(dlq_headers::REASON).unwrap().contains("not yet"), "{dead:?}");
    assert_eq!(dead.get(headers::ID), id.as_deref());
    let _ = conn.close(200, "bye".into()).await;
    drop(events);
    t.close().await.unwrap();
    delete_queues(&[&format!("durable:{group}@micro.event.{topic}"), &dlq]).await;
}

#[actix::test]
async fn durable_subscription_survives_a_broker_restart_and_gets_what_was_not_acked() {
    let rabbit = PrivateRabbit::start().await;
    let t = micro::transport::connect(&rabbit.url()).await.unwrap();
    let subject = format!("micro.event.{}.shipped", unique("parcel"));
    let mut sub = t.subscribe_durable(&DurableSpec::new(&subject, unique("tracking"))).await.unwrap();
    t.publish_durable(&subject, event("before")).await.unwrap();
    let unacked = next(&mut sub, "the event before the restart").await;
    assert_eq!(body(&unacked.message), "before");

    rabbit.stop_app().await;
    wait_for("durable publishes to fail fast", WAIT, || async {
        match t.publish_durable(&subject, event("down")).await {
            Err(e) if e.kind() == ErrorKind::Unavailable => Some(()),
            // One racing the connection's close may fail mid-flight instead.
            Err(e) if e.kind() == ErrorKind::Broker => None,
            other => panic!("unexpected outcome while the broker is down: {other:?}"),
        }
    })
    .await;
    // Its channel is gone with the connection: it cannot be acked, RabbitMQ delivers it again.
    assert!(unacked.acker.ack().await.is_err(), "an ack on a lost channel is an error");
    rabbit.start_app().await;

    wait_for("durable publishes to succeed again", WAIT, || async {
        t.publish_durable(&subject, event("after")).await.ok()
    })
    .await;
    let mut got = HashSet::new();
    while !(got.contains("before") && got.contains("after")) {
        let d = next(&mut sub, "the events after the restart").await;
        got.insert(body(&d.message));
        d.acker.ack().await.unwrap();
    }
    drop(sub);
    t.close().await.unwrap();
}

/// `what` was refused as too long for AMQP, with a typed error.
fn refused_as_too_long(e: Option<micro::Error>, what: &str) {
    let e = e.unwrap_or_else(|| panic!("{what}: accepted"));
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{what}: {e}");
    assert!(e.to_string().contains("at most 255"), "{what}: {e}");
}

/// AMQP short strings (routing keys, binding keys, message ids, header names) hold at most 255
/// bytes. Longer ones are refused with a typed error before anything is sent, and the
/// connection goes on working.
#[actix::test]
async fn names_longer_than_amqp_allows_are_refused_and_the_connection_keeps_working() {
    let t = micro::transport::connect(&amqp_url()).await.unwrap();
    let long = format!("micro.event.{}.{}", unique("long"), "x".repeat(260));
    let group = unique("long-group");
    refused_as_too_long(t.publish(&long, event("x")).await.err(), "publish");
    refused_as_too_long(t.publish_durable(&long, event("x")).await.err(), "durable publish");
    let service = format!("micro.rpc.{}.Say.Hello", "s".repeat(260));
    refused_as_too_long(t.request(&service, &event("x"), Duration::from_secs(2)).await.err(), "request");
    let endpoint = format!("micro.rpc.{}.Say.{}", unique("svc"), "H".repeat(260));
    refused_as_too_long(t.request(&endpoint, &event("x"), Duration::from_secs(2)).await.err(), "request endpoint");
    refused_as_too_long(t.subscribe(&long, None).await.err(), "subscribe");
    refused_as_too_long(t.subscribe(&long, Some(&group)).await.err(), "group subscribe");
    refused_as_too_long(t.subscribe_durable(&DurableSpec::new(&long, &group)).await.err(), "durable subscribe");

    let subject = format!("micro.event.{}", unique("short"));
    let mut long_id = event("x");
    long_id.headers.insert(headers::ID, "i".repeat(300));
    refused_as_too_long(t.publish(&subject, long_id).await.err(), "message id");
    let mut long_name = event("x");
    long_name.headers.insert(format!("Micro-Meta-{}", "k".repeat(250)), "v");
    refused_as_too_long(t.publish(&subject, long_name).await.err(), "header name");
    let broker = Broker::new(t.clone(), "long-names");
    refused_as_too_long(broker.publish(&"t".repeat(300), &1u8).await.err(), "Broker::publish");

    // Nothing broke: the same connection still subscribes, publishes and delivers.
    let mut sub = t.subscribe(&subject, None).await.unwrap();
    t.publish(&subject, event("still here")).await.unwrap();
    assert_eq!(body(&next(&mut sub, "the event after the refusals").await.message), "still here");
    drop(sub);
    t.close().await.unwrap();
}

/// Handlers that finish together have their acks coalesced (one `basic.ack` with `multiple`
/// for a run of deliveries). Settled newest first and mixed with hand-backs, every event is
/// still settled as asked: each acked once, each handed back delivered again, and no tag acked
/// twice (RabbitMQ would close the channel and deliver everything unacked again).
#[actix::test]
async fn acks_that_finish_together_settle_each_event_once() {
    use futures::FutureExt;
    let t = micro::transport::connect(&amqp_url()).await.unwrap();
    let subject = format!("micro.event.{}.batch", unique("acks"));
    let group = unique("acks");
    let queue = format!("durable:{group}@{subject}");
    let mut sub = t.subscribe_durable(&DurableSpec::new(&subject, &group).concurrency(50)).await.unwrap();
    const N: usize = 400;
    let publishes = (0..N).map(|i| {
        let (t, subject) = (t.clone(), subject.clone());
        async move { t.publish_durable(&subject, event(&i.to_string())).await }
    });
    for published in futures::future::join_all(publishes).await {
        published.unwrap();
    }
    let (mut acked, mut handed_back) = (HashSet::new(), HashSet::new());
    while acked.len() < N {
        // Whatever has arrived (up to the prefetch), settled together, the newest first.
        let mut batch = vec![next(&mut sub, "the next deliveries").await];
        while let Some(Some(d)) = sub.next().now_or_never() {
            batch.push(d);
        }
        let mut acks = Vec::new();
        for d in batch.into_iter().rev() {
            let i: usize = body(&d.message).parse().unwrap();
            if i % 7 == 3 && d.attempt == 1 {
                assert!(handed_back.insert(i), "event {i} came back twice");
                drop(d);
            } else {
                assert!(acked.insert(i), "event {i} came again after its ack (attempt {})", d.attempt);
                acks.push(d.acker.ack());
            }
        }
        for settled in futures::future::join_all(acks).await {
            settled.unwrap();
        }
    }
    assert_eq!(handed_back.len(), (0..N).filter(|i| i % 7 == 3).count());
    drop(sub);
    wait_for("the queue to hold nothing, ready or unacked, once its consumer is gone", WAIT, || async {
        let line = queue_line(&["messages", "consumers"], &queue)?;
        (line.split('\t').skip(1).collect::<Vec<_>>() == ["0", "0"]).then_some(())
    })
    .await;
    t.close().await.unwrap();
    delete_queues(&[&queue, &format!("{group}.dlq")]).await;
}
