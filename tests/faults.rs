//! Durable publishing across a broker restart, on private broker instances (never the shared
//! ones): every publish that resolved `Ok` is stored and delivered afterwards; the others
//! returned errors.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use micro::broker::{Broker, PublishOptions, SubscribeOptions};

use crate::util::*;

/// Publishes durably (32 at a time) until told to stop; records which ids resolved Ok.
struct Publisher {
    ok: Arc<Mutex<Vec<String>>>,
    failed: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    fn start(broker: Broker, topic: String) -> Publisher {
        let ok = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (ok2, failed2, stop2) = (ok.clone(), failed.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut n = 0u64;
            while !stop2.load(Ordering::SeqCst) {
                let batch = (0..32).map(|_| {
                    n += 1;
                    let id = uuid::Uuid::now_v7().to_string();
                    let b = broker.clone();
                    let topic = topic.clone();
                    async move {
                        let opts = PublishOptions::new().durable().id(id.clone());
                        (id, b.publish_with(&topic, &serde_json::json!({ "n": n }), opts).await)
                    }
                });
                for (id, outcome) in futures::future::join_all(batch).await {
                    match outcome {
                        Ok(_) => ok2.lock().unwrap().push(id),
                        Err(e) => {
                            if failed2.fetch_add(1, Ordering::SeqCst) % 200 == 0 {
                                eprintln!("publish failed (expected while the broker is away): {e}");
                            }
                        }
                    }
                }
                if failed2.load(Ordering::SeqCst) > 0 {
                    // While the broker is away, do not spin.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        Publisher { ok, failed, stop, task }
    }

    fn oks(&self) -> usize {
        self.ok.lock().unwrap().len()
    }

    async fn wait_oks(&self, at_least: usize, what: &str) {
        wait_for(what, Duration::from_secs(90), || async { (self.oks() >= at_least).then_some(()) }).await;
    }

    async fn finish(self) -> (Vec<String>, usize) {
        self.stop.store(true, Ordering::SeqCst);
        tokio::time::timeout(Duration::from_secs(60), self.task).await.expect("publisher stops").unwrap();
        (self.ok.lock().unwrap().clone(), self.failed.load(Ordering::SeqCst))
    }
}

/// Subscribes, publishes across `restart`, then checks that every Ok publish is delivered.
async fn ok_publishes_survive<F: std::future::Future<Output = ()>>(
    url: &str,
    restart: impl FnOnce(Arc<AtomicUsize>) -> F,
) {
    let topic = format!("{}.placed", unique("order"));
    let group = unique("audit");
    let transport = micro::transport::connect(url).await.unwrap();
    let broker = Broker::new(transport, "faults");
    let opts =
        SubscribeOptions::durable(&group).concurrency(256).backoff(Duration::from_millis(50), Duration::from_secs(1));
    let mut events = broker.subscribe_durable(&topic, opts).await.unwrap();

    let publisher = Publisher::start(broker.clone(), topic.clone());
    publisher.wait_oks(300, "publishes before the restart").await;
    restart(publisher.failed.clone()).await;
    let before = publisher.oks();
    publisher.wait_oks(before + 300, "publishes after the restart").await;
    let (ok, failed) = publisher.finish().await;
    eprintln!("{} publishes resolved Ok, {failed} returned errors", ok.len());

    let mut want: HashSet<String> = ok.into_iter().collect();
    let total = want.len();
    tokio::time::timeout(Duration::from_secs(120), async {
        while !want.is_empty() {
            let e = events.next().await.expect("the subscription keeps delivering");
            want.remove(&e.id);
            e.ack().await.ok();
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} of {total} acknowledged publishes never arrived", want.len()));
}

#[cfg(feature = "nats")]
#[actix::test]
async fn nats_ok_publishes_are_stored_across_a_server_crash() {
    let mut nats = PrivateNats::start().await;
    let url = nats.url();
    let nats_ref = &mut nats;
    ok_publishes_survive(&url, |failed| async move {
        nats_ref.kill();
        // Down until the publisher has seen it fail.
        wait_for("a publish to fail", Duration::from_secs(60), || async {
            (failed.load(Ordering::SeqCst) > 0).then_some(())
        })
        .await;
        nats_ref.restart().await;
    })
    .await;
}

#[cfg(feature = "rabbitmq")]
#[actix::test]
async fn amqp_ok_publishes_are_stored_across_a_broker_restart() {
    let rabbit = PrivateRabbit::start().await;
    let url = rabbit.url();
    let rabbit = &rabbit; // borrowed: the node must outlive the restart
    ok_publishes_survive(&url, |failed| async move {
        rabbit.stop_app().await;
        wait_for("a publish to fail", Duration::from_secs(60), || async {
            (failed.load(Ordering::SeqCst) > 0).then_some(())
        })
        .await;
        rabbit.start_app().await;
    })
    .await;
}
