//! RabbitMQ-specific behaviour: reconnection after a broker restart (on a private node),
//! nothing left behind after a graceful shutdown, and a bounded number of channels.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

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
        match client.call_with::<_, Greeting>(&name, "Say.Hello", &Hello { name: "down".into() }, opts.clone()).await {
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
        client.call::<_, Greeting>(&name, "Say.Hello", &Hello { name: "after".into() }).await.ok()
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
    let url = amqp_url();
    let name = unique("busy");
    let svc = greeter(&url, &name, "a").start().await.unwrap();
    let client = Client::connect(&url).await.unwrap();
    let calls = (0..300).map(|i| {
        let (c, n) = (client.clone(), name.clone());
        async move { c.call::<_, Greeting>(&n, "Say.Hello", &Hello { name: i.to_string() }).await }
    });
    for r in futures::future::join_all(calls).await {
        r.unwrap();
    }
    let listing = rabbitmqctl_list(&["list_connections", "client_properties", "channels"]);
    let ours: Vec<(String, usize)> = listing
        .lines()
        .filter(|l| l.contains("actix-micro"))
        .filter_map(|l| l.rsplit_once('\t').map(|(n, c)| (n.to_string(), c.trim().parse().unwrap_or(usize::MAX))))
        .collect();
    assert!(!ours.is_empty(), "our connections are listed: {listing}");
    assert!(ours.iter().all(|(_, c)| *c <= 4), "no connection uses more than 4 channels, whatever the load: {ours:?}");
    svc.stop().await.unwrap();
}
