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
        .max_attempts(3)
        .backoff(Duration::from_millis(20), Duration::from_millis(100))
        .concurrency(8)
}

async fn broker(url: &str) -> Broker {
    Broker::new(micro::transport::connect(url).await.unwrap(), "events-test")
}

async fn durable_events_reach_the_group_once_and_are_acked(url: String) {
    let topic = format!("{}.login", unique("user"));
    let group = unique("audit");
    let b = broker(&url).await;
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
}

over_transports!(durable_events_reach_the_group_once_and_are_acked);
