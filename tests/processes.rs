//! Nodes in child processes, over every broker: a SIGKILLed node stops getting calls while
//! calls keep succeeding; SIGTERM drains in-flight requests and exits 0; a flapping node exits
//! non-zero.

use std::collections::HashMap;

use futures::StreamExt;
use micro::prelude::*;
use micro::registry::WatchAction;
use micro::{Code, ErrorKind};

use crate::util::*;

over_brokers!(
    sigkilled_node_stops_receiving_calls_and_calls_keep_succeeding,
    sigterm_deregisters_drains_in_flight_requests_and_exits_zero,
    restart_intensity_makes_the_node_deregister_and_exit_non_zero,
);

fn child(url: &str, service: &str, label: &str) -> ChildConfig {
    ChildConfig { url: url.into(), service: service.into(), label: label.into(), max_restarts: 100, grace_ms: 10_000 }
}

async fn wait_for_nodes(client: &Client, name: &str, n: usize) {
    wait_for(&format!("{n} nodes of {name}"), WAIT, || async {
        let s = client.registry().get_service(name).await.ok()?;
        (s.iter().map(|s| s.nodes.len()).sum::<usize>() == n).then_some(())
    })
    .await
}

async fn sigkilled_node_stops_receiving_calls_and_calls_keep_succeeding(url: String) {
    let name = unique("greeter");
    let local = greeter(&url, &name, "local").start().await.unwrap();
    let mut remote = ChildNode::spawn(&child(&url, &name, "remote"));
    let client = Client::connect(&url).await.unwrap();
    wait_for_nodes(&client, &name, 2).await;

    let mut seen: HashMap<String, usize> = HashMap::new();
    while seen.len() < 2 {
        let g: Greeting = client.call(&name, "Say.Hello", &Hello { name: "before".into() }).await.unwrap();
        *seen.entry(g.node).or_default() += 1;
    }

    remote.kill().await;
    // Its registry record lives on until the TTL (30 s), yet no call may fail and none may
    // reach the dead node: the first no-responders blacklists it and the call is retried.
    // (Should a request still reach the dying connection, Say.Hello is idempotent, so its
    // timeout is retried within the call's budget too.)
    let mut after: HashMap<String, usize> = HashMap::new();
    for i in 0..200 {
        let g: Greeting = client
            .call(&name, "Say.Hello", &Hello { name: i.to_string() })
            .await
            .unwrap_or_else(|e| panic!("call {i} after the kill failed: {e}"));
        *after.entry(g.node).or_default() += 1;
    }
    assert_eq!(after.keys().collect::<Vec<_>>(), ["local"], "{after:?}");
    let dead = client
        .registry()
        .get_service(&name)
        .await
        .unwrap()
        .into_iter()
        .flat_map(|s| s.nodes)
        .find(|n| n.id != local.node_id())
        .expect("the dead node is still registered (TTL not yet passed)");
    assert!(client.selector().is_blacklisted(&dead.id), "the dead node is blacklisted");
    local.stop().await.unwrap();
}

async fn sigterm_deregisters_drains_in_flight_requests_and_exits_zero(url: String) {
    let name = unique("draining");
    let client = Client::connect(&url).await.unwrap();
    let mut watch = client.registry().watch().await.unwrap();
    let mut node = ChildNode::spawn(&child(&url, &name, "remote"));
    wait_for_nodes(&client, &name, 1).await;

    let calls: Vec<_> = (0..20)
        .map(|_| {
            let (c, n) = (client.clone(), name.clone());
            actix_rt::spawn(async move { c.call::<_, u64, _>(&n, "Say.Slow", &Sleep { ms: 1000 }).await })
        })
        .collect();
    wait_for("20 requests in flight in the child", WAIT, || async {
        let s: micro::server::ServiceStats = client.call(&name, "Debug.Stats", &()).await.ok()?;
        // The Stats request counts itself.
        (s.in_flight > 20).then_some(())
    })
    .await;

    node.signal("TERM");
    for c in calls {
        assert_eq!(c.await.unwrap().unwrap(), 1000, "an in-flight request was dropped");
    }
    assert_eq!(node.exit_code().await, Some(0));
    let removed = tokio::time::timeout(WAIT, async {
        loop {
            let ev = watch.next().await.unwrap();
            if ev.service.name == name && ev.action == WatchAction::Removed {
                return ev;
            }
        }
    })
    .await
    .expect("deregistration seen");
    assert_eq!(removed.service.nodes.len(), 1);
    let e = client.call::<_, Greeting, _>(&name, "Say.Hello", &Hello { name: "late".into() }).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
}

async fn restart_intensity_makes_the_node_deregister_and_exit_non_zero(url: String) {
    let name = unique("flappy");
    let client = Client::connect(&url).await.unwrap();
    let mut node = ChildNode::spawn(&ChildConfig { max_restarts: 2, ..child(&url, &name, "remote") });
    wait_for_nodes(&client, &name, 1).await;
    // Actor panics count as restarts: the actor is replaced each time until the limit.
    for _ in 0..3 {
        let e = client.call::<_, u64, _>(&name, "Counter.Crash", &Crash {}).await.unwrap_err();
        assert_eq!(e.status().map(|s| s.code()), Some(Code::INTERNAL), "{e}");
    }
    assert_eq!(node.exit_code().await, Some(3), "exit status of a node that gave up");
    wait_for("deregistration", WAIT, || async {
        client.registry().get_service(&name).await.ok()?.is_empty().then_some(())
    })
    .await;
}
