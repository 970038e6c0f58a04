//! `micro subscriptions` and `micro groups` against real services on NATS and RabbitMQ.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use assert_cmd::assert::Assert;
use micro::broker::SubscribeOptions;
use micro::prelude::*;
use serde_json::Value;

use crate::util::*;

over_brokers!(subscriptions_shows_each_nodes_subscriptions, groups_lists_and_deletes_durable_groups);

const BIN: &str = env!("CARGO_BIN_EXE_micro");

/// Runs `micro` from a blocking task, so the services of the test keep being served meanwhile.
async fn micro(args: &[&str]) -> Assert {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        assert_cmd::Command::new(BIN)
            .args(&args)
            .env_remove("MICRO_TRANSPORT")
            .env_remove("MICRO_OUTPUT")
            .env("NO_COLOR", "1")
            .timeout(Duration::from_secs(30))
            .assert()
    })
    .await
    .unwrap()
}

fn stdout(a: &Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stdout).into_owned()
}

fn stdout_json(a: &Assert) -> Value {
    serde_json::from_str(&stdout(a)).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", stdout(a)))
}

#[derive(Clone, Default)]
struct Count(Arc<Mutex<u32>>);

async fn count(Req(_): Req<Value>, State(c): State<Count>) -> Result<(), Status> {
    *c.0.lock().unwrap() += 1;
    Ok(())
}

fn durable(group: &str) -> SubscribeOptions {
    SubscribeOptions::durable(group).expire_after(Duration::from_secs(120))
}

async fn subscriptions_shows_each_nodes_subscriptions(url: String) {
    let name = unique("subs-cli");
    let plain = format!("{}.seen", unique("plain"));
    let kept = format!("{}.seen", unique("kept"));
    let group = unique("kept-group");
    let c = Count::default();
    let svc = Service::builder(&name)
        .transport(&url)
        .state(c.clone())
        .subscribe(&plain, count)
        .subscribe_with(&kept, durable(&group), count)
        .start()
        .await
        .unwrap();
    svc.broker().publish_durable(&kept, &serde_json::json!({"n": 1})).await.unwrap();
    wait_for("the event to be handled", WAIT, || async { (*c.0.lock().unwrap() == 1).then_some(()) }).await;

    let a = micro(&["subscriptions", &name, "--transport", &url]).await.success();
    let nodes = stdout_json(&a);
    let nodes = nodes.as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert_eq!(nodes[0]["node"], svc.node_id());
    let subs = nodes[0]["subscriptions"].as_array().unwrap();
    assert_eq!(subs.len(), 2, "{subs:?}");
    assert_eq!((subs[0]["topic"].as_str(), subs[0]["group"].as_str()), (Some(plain.as_str()), Some(name.as_str())));
    assert_eq!((subs[0]["durable"].as_bool(), subs[0]["pending"].is_null()), (Some(false), true));
    assert_eq!((subs[1]["topic"].as_str(), subs[1]["group"].as_str()), (Some(kept.as_str()), Some(group.as_str())));
    assert_eq!((subs[1]["durable"].as_bool(), subs[1]["handled"].as_u64()), (Some(true), Some(1)));
    assert!(subs[1]["pending"].is_u64(), "the broker tells what the group holds: {}", subs[1]);

    let table = micro(&["subscriptions", &name, "--transport", &url, "-o", "table"]).await.success();
    let text = stdout(&table);
    assert!(text.starts_with(&format!("node {}", svc.node_id())), "{text}");
    for word in ["TOPIC", "GROUP", "DURABLE", "HANDLED", "RESTARTS", "PENDING", &plain, &kept, &group] {
        assert!(text.contains(word), "{word} in {text}");
    }
    svc.stop().await.unwrap();

    micro(&["subscriptions", &unique("nobody"), "--transport", &url]).await.code(1);
}

async fn groups_lists_and_deletes_durable_groups(url: String) {
    let name = unique("groups-cli");
    let topic = format!("{}.seen", unique("kept"));
    let group = unique("kept-group");
    let svc = Service::builder(&name)
        .transport(&url)
        .state(Count::default())
        .subscribe_with(&topic, durable(&group), count)
        .start()
        .await
        .unwrap();
    svc.stop().await.unwrap();
    // The group keeps what is published while no member runs.
    let b = micro::broker::Broker::new(micro::transport::connect(&url).await.unwrap(), "groups-test");
    for n in 0..3 {
        b.publish_durable(&topic, &n).await.unwrap();
    }

    if url.starts_with("nats") {
        let listed = |a: &Assert| {
            let rows = stdout_json(a);
            rows.as_array().unwrap().iter().find(|r| r["group"] == group.as_str()).cloned()
        };
        let a = micro(&["groups", "--transport", &url]).await.success();
        let row = listed(&a).unwrap_or_else(|| panic!("{group} listed in {}", stdout(&a)));
        assert_eq!((row["topic"].as_str(), row["pending"].as_u64()), (Some(topic.as_str()), Some(3)), "{row}");
        let table = micro(&["groups", "--transport", &url, "-o", "table"]).await.success();
        assert!(stdout(&table).contains("PENDING") && stdout(&table).contains(&group), "{}", stdout(&table));

        micro(&["groups", "delete", &group, &topic, "--transport", &url]).await.success();
        let a = micro(&["groups", "--transport", &url]).await.success();
        assert!(listed(&a).is_none(), "{group} deleted: {}", stdout(&a));
    } else {
        // AMQP cannot list queues: the command says how to see them instead.
        #[cfg(feature = "rabbitmq")]
        amqp_groups(&url, &group, &topic).await;
    }
}

#[cfg(feature = "rabbitmq")]
async fn amqp_groups(url: &str, group: &str, topic: &str) {
    let a = micro(&["groups", "--transport", url]).await.code(1);
    assert!(String::from_utf8_lossy(&a.get_output().stderr).contains("rabbitmqctl"));
    let queue = format!("durable:{group}@micro.event.{topic}");
    assert!(rabbitmqctl_list(&["list_queues", "name"]).contains(&queue));
    micro(&["groups", "delete", group, topic, "--transport", url]).await.success();
    assert!(!rabbitmqctl_list(&["list_queues", "name"]).contains(&queue));
}
