//! The audit trail example (`examples/audit_trail`), its own code: every event stored exactly
//! once across a stop, a SIGKILL mid-stream and redeliveries; poison events dead-lettered;
//! the history through the gateway.

#[path = "../examples/audit_trail/audit.rs"]
mod audit_app;
#[path = "../examples/audit_trail/names.rs"]
mod names;
#[path = "../examples/audit_trail/users.rs"]
mod users_app;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use micro::broker::{dlq_headers, Broker};
use micro::prelude::*;
use serde_json::json;

use crate::util::*;
use audit_app::{stored_count, stored_ids, AuditConfig, AuditEntry, HistoryRequest};
use names::Names;

over_brokers!(
    audit_stopped_then_started_gets_every_event,
    audit_killed_mid_stream_loses_and_doubles_nothing,
    poison_event_without_user_id_is_dead_lettered,
);

#[actix::test]
async fn poison_event_without_user_id_is_dead_lettered_in_memory() {
    poison_event_without_user_id_is_dead_lettered(memory_url()).await
}

const EVENTS: u64 = 10_000;
const IN_FLIGHT: usize = 256;
/// Bound for the audit service to catch up with 10 000 events.
const CATCH_UP: Duration = Duration::from_secs(120);
/// Bound for a child process to start serving.
const CHILD_START: Duration = Duration::from_secs(60);

/// The body of an audit child (see `child_node` in tests.rs): the example's audit service
/// until SIGTERM (exit 0) or an error (exit 3).
pub fn run_child(config: AuditChildConfig) -> ! {
    let code = actix_rt::System::new().block_on(async move {
        let names = Names::new(Some(&config.prefix)).expect("a valid prefix");
        let cfg = AuditConfig {
            names,
            db: config.db,
            ack_wait: config.ack_wait_ms.map(Duration::from_millis),
            // The broker removes what a test leaves behind.
            expire_after: Some(Duration::from_secs(300)),
        };
        let outcome = match audit_app::service(&cfg) {
            Ok(svc) => svc.transport(&config.url).run().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        outcome.map_or_else(
            |e| {
                eprintln!("audit child stopped: {e}");
                3
            },
            |()| 0,
        )
    });
    std::process::exit(code)
}

/// A database file in the temp dir, removed (with its WAL files) on drop.
struct TempDb(PathBuf);

impl TempDb {
    fn new() -> TempDb {
        TempDb(std::env::temp_dir().join(format!("{}.sqlite3", unique("audit-db"))))
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for ext in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{ext}", self.0.display()));
        }
    }
}

struct Trail {
    prefix: String,
    names: Names,
    db: TempDb,
}

impl Trail {
    fn new() -> Trail {
        let prefix = unique("audit");
        Trail { names: Names::new(Some(&prefix)).unwrap(), prefix, db: TempDb::new() }
    }

    fn config(&self) -> AuditConfig {
        AuditConfig {
            names: self.names.clone(),
            db: self.db.0.clone(),
            ack_wait: None,
            expire_after: Some(Duration::from_secs(300)),
        }
    }

    fn child(&self, url: &str, ack_wait_ms: Option<u64>) -> ChildNode {
        let config =
            AuditChildConfig { url: url.into(), db: self.db.0.clone(), prefix: self.prefix.clone(), ack_wait_ms };
        ChildNode::spawn_env(AUDIT_CHILD_ENV, &config)
    }

    /// Until the audit service answers `Audit.History` (so its durable group exists).
    async fn wait_serving(&self, client: &Client) {
        let query = HistoryRequest { user_id: "nobody".into(), ..Default::default() };
        wait_for("the audit service to answer", CHILD_START, || {
            let query = query.clone();
            async move {
                client.call::<_, Vec<AuditEntry>, _>(&self.names.audit_service(), "Audit.History", &query).await.ok()
            }
        })
        .await;
    }
}

async fn broker(url: &str) -> Broker {
    Broker::new(micro::transport::connect(url).await.unwrap(), "audit-test")
}

/// The example's bulk publisher; every publish must be stored by the broker.
async fn publish_all(broker: &Broker, names: &Names) -> HashSet<String> {
    let results = users_app::publish_many(broker, names, EVENTS as usize, None, IN_FLIGHT).await;
    let mut ids = HashSet::new();
    for r in results {
        let id = r.unwrap_or_else(|e| panic!("a durable publish failed: {e}"));
        assert!(ids.insert(id), "the publisher made one id twice");
    }
    ids
}

/// Waits (up to `CATCH_UP`) until the table has `n` rows; fails with the count it got to.
async fn wait_rows(db: &Path, n: u64) {
    let deadline = Instant::now() + CATCH_UP;
    let got = wait_for(&format!("{n} rows in the audit table"), CATCH_UP + Duration::from_secs(5), || async move {
        let rows = stored_count(db).unwrap_or(0);
        (rows >= n || Instant::now() > deadline).then_some(rows)
    })
    .await;
    assert_eq!(got, n, "rows in the audit table after {CATCH_UP:?}");
}

/// The table holds exactly the published ids. (That no id is stored twice is the table's
/// primary key; what the tests check beyond it is how often the handler ran: see
/// `handled_by`.)
fn assert_stored_exactly(db: &Path, published: &HashSet<String>) {
    let ids = stored_ids(db).unwrap();
    assert_eq!(ids.len() as u64, EVENTS, "one row per event");
    let stored: HashSet<String> = ids.into_iter().collect();
    assert!(&stored == published, "the stored ids are the published ones");
}

/// The durable concurrency of the example's audit service: what one member holds at once.
const AUDIT_CONCURRENCY: u64 = 64;

/// How many deliveries the broker leaves unacknowledged to the audit service at most
/// (docs/protocol.md): per durable subscription, JetStream's `max_ack_pending` (8 × the
/// concurrency, at least 256) or a RabbitMQ channel's prefetch (the concurrency); the service
/// has one subscription per audited pattern (`user.>` and `order.>`), each with its own.
fn max_unacknowledged(url: &str) -> u64 {
    let per_subscription = if url.starts_with("nats") { (8 * AUDIT_CONCURRENCY).max(256) } else { AUDIT_CONCURRENCY };
    per_subscription * names::AUDITED.len() as u64
}

/// How many events the audit service handled (its handler calls), once it stops growing for a
/// moment; each call beyond the rows it added was an insert the primary key turned away.
async fn handled_by(client: &Client, trail: &Trail, at_least: u64) -> u64 {
    let events = || async {
        let stats: serde_json::Value =
            client.call(&trail.names.audit_service(), "Debug.Stats", &json!({})).await.ok()?;
        stats["events"].as_u64()
    };
    let seen = wait_for("the audit service to count its handler calls", WAIT, || async {
        events().await.filter(|n| *n >= at_least)
    })
    .await;
    // Late redeliveries would come within a few of the broker's round trips: look again.
    let mut last = seen;
    for _ in 0..5 {
        last = events().await.unwrap_or(last);
    }
    last
}

async fn audit_stopped_then_started_gets_every_event(url: String) {
    let trail = Trail::new();
    let client = Client::connect(&url).await.unwrap();
    let mut audit = trail.child(&url, None);
    trail.wait_serving(&client).await;
    assert_eq!(audit.terminate().await, Some(0), "SIGTERM stops the audit service cleanly");

    let t = Instant::now();
    let published = publish_all(&broker(&url).await, &trail.names).await;
    let publishing = t.elapsed();
    assert_eq!(stored_count(&trail.db.0).unwrap(), 0, "nothing is stored while the audit service is down");

    let t = Instant::now();
    let mut audit = trail.child(&url, None);
    wait_rows(&trail.db.0, EVENTS).await;
    eprintln!(
        "[{url}] stopped/started: published {EVENTS} in {publishing:.2?}, stored after restart in {:.2?}",
        t.elapsed()
    );
    assert_stored_exactly(&trail.db.0, &published);
    // Nothing was in hand when the service stopped: each event was handled exactly once, and
    // no insert met a row already there.
    let handled = handled_by(&client, &trail, EVENTS).await;
    assert_eq!(handled, EVENTS, "handler calls after the restart ({} conflicting inserts)", handled - EVENTS);
    assert_eq!(audit.terminate().await, Some(0));
}

async fn audit_killed_mid_stream_loses_and_doubles_nothing(url: String) {
    let trail = Trail::new();
    let client = Client::connect(&url).await.unwrap();
    // A short ack wait: what the killed process had in hand comes back within 2 s.
    let mut audit = trail.child(&url, Some(2000));
    trail.wait_serving(&client).await;

    let t = Instant::now();
    let (b, names) = (broker(&url).await, trail.names.clone());
    let publisher = actix_rt::spawn(async move { publish_all(&b, &names).await });
    let db = trail.db.0.clone();
    // Well into the stream, while events are still coming.
    wait_for("a tenth of the events to be stored", CATCH_UP, || {
        let db = db.clone();
        async move { stored_count(&db).ok().filter(|n| *n >= EVENTS / 10) }
    })
    .await;
    audit.kill().await;
    let on_disk = stored_count(&db).unwrap();
    assert!(on_disk < EVENTS, "killed mid-stream ({on_disk} rows)");
    let published = publisher.await.unwrap();
    let publishing = t.elapsed();

    let t = Instant::now();
    let mut audit = trail.child(&url, Some(2000));
    wait_rows(&trail.db.0, EVENTS).await;
    let catch_up = t.elapsed();
    assert_stored_exactly(&trail.db.0, &published);
    // Events the new process handled beyond the missing rows were already stored: redeliveries
    // of what the killed process had stored but whose acknowledgement had not reached the
    // broker (still in its client's write buffer when the kill came). The broker bounds how
    // many deliveries it leaves unacknowledged: more conflicts than that means events already
    // acknowledged came back.
    let handled = handled_by(&client, &trail, EVENTS - on_disk).await;
    let conflicts = handled - (EVENTS - on_disk);
    let bound = max_unacknowledged(&url);
    assert!(
        conflicts <= bound,
        "{conflicts} conflicting inserts (at most {bound} deliveries are ever unacknowledged): events already \
         stored and acknowledged came back"
    );
    eprintln!(
        "[{url}] killed at {on_disk} rows: published {EVENTS} in {publishing:.2?}; after the restart all stored in \
         {catch_up:.2?}, {handled} events handled, {} of them already stored",
        handled - (EVENTS - on_disk)
    );
    assert_eq!(audit.terminate().await, Some(0));
}

async fn poison_event_without_user_id_is_dead_lettered(url: String) {
    let trail = Trail::new();
    let broker = Broker::new(micro::transport::connect(&url).await.unwrap(), "audit-test");
    let dlq = trail.names.dead_letters();
    let mut dead = broker.subscribe_durable(&dlq, SubscribeOptions::durable(unique("dlq"))).await.unwrap();
    let audit = audit_app::service(&trail.config()).unwrap().transport(&url).start().await.unwrap();

    let poison = uuid::Uuid::now_v7().to_string();
    let login = trail.names.topic(names::LOGIN);
    let opts = PublishOptions::new().durable().id(&poison);
    broker.publish_with(&login, &json!({"name": "nobody's"}), opts).await.unwrap();
    let after: HashSet<String> = users_app::publish_many(&broker, &trail.names, 3, Some("ada"), 3)
        .await
        .into_iter()
        .map(|r| r.expect("stored"))
        .collect();

    let d = tokio::time::timeout(WAIT, dead.next()).await.expect("a dead letter").unwrap();
    assert_eq!((d.id.as_str(), d.topic.as_str()), (poison.as_str(), dlq.as_str()));
    assert_eq!(d.decode::<serde_json::Value>().unwrap(), json!({"name": "nobody's"}));
    let h = d.headers();
    let reason = h.get(dlq_headers::REASON).expect("Micro-Dlq-Reason");
    assert!(reason.contains("user_id"), "{reason}");
    assert_eq!(h.get(dlq_headers::CODE), Some("400"));
    assert_eq!(h.get(dlq_headers::ATTEMPTS), Some("1"), "a permanent error is not retried");
    assert_eq!(h.get(dlq_headers::TOPIC), Some(login.as_str()));
    d.ack().await.unwrap();

    let db = trail.db.0.clone();
    wait_for("the events after the poison one to be stored", WAIT, || {
        let (db, after) = (db.clone(), after.clone());
        async move {
            let ids: HashSet<String> = stored_ids(&db).ok()?.into_iter().collect();
            after.is_subset(&ids).then_some(())
        }
    })
    .await;
    let ids = stored_ids(&db).unwrap();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(!ids.contains(&poison));
    audit.stop().await.unwrap();
}

#[cfg(feature = "gateway")]
#[actix::test]
async fn history_through_the_gateway_is_newest_first() {
    use actix_web::http::StatusCode;
    use micro::gateway::{GatewayConfig, HandlerKind};
    use users_app::{Login, Order, ProfileUpdate, Published};

    let url = memory_url();
    let names = Names::default();
    let db = TempDb::new();
    let cfg = AuditConfig { names: names.clone(), db: db.0.clone(), ack_wait: None, expire_after: None };
    let audit = audit_app::service(&cfg).unwrap().transport(&url).start().await.unwrap();
    let users = users_app::service(&names).transport(&url).start().await.unwrap();
    let gw =
        TestGateway::start(&url, GatewayConfig::default().handler(HandlerKind::Rpc).namespace("go.micro.srv")).await;
    let client = Client::connect(&url).await.unwrap();

    let now_ms = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    let (svc, user) = (names.users_service(), "ada".to_string());
    let mut ids = Vec::new();
    for n in 0..3 {
        let published: Published = match n {
            0 => client.call(&svc, "Users.Login", &Login { user_id: user.clone() }).await,
            1 => {
                let p = ProfileUpdate {
                    user_id: user.clone(),
                    email: Some("ada@example.com".into()),
                    ..Default::default()
                };
                client.call(&svc, "Users.UpdateProfile", &p).await
            }
            _ => {
                let o = Order { user_id: user.clone(), order_id: "o-1".into(), total_cents: 1999 };
                client.call(&svc, "Orders.Place", &o).await
            }
        }
        .unwrap();
        ids.push(published.event_id);
        // The next event gets a later timestamp, so "newest" does not hang on the id.
        let published_at = now_ms();
        wait_for("the clock to tick", WAIT, || async move { (now_ms() > published_at).then_some(()) }).await;
    }

    let http = awc::Client::builder().timeout(Duration::from_secs(20)).finish();
    let get = |query: String| {
        let http = http.clone();
        let url = gw.url(&format!("/audit/history{query}"));
        async move {
            let mut rsp = http.get(&url).send().await.unwrap();
            let body = rsp.body().await.unwrap();
            let json: serde_json::Value = serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&body)));
            (rsp.status(), json)
        }
    };
    wait_for("the three events in the history", WAIT, || async {
        let (status, json) = get(format!("?user_id={user}")).await;
        (status == StatusCode::OK && json.as_array()?.len() == 3).then_some(())
    })
    .await;

    let (status, json) = get(format!("?user_id={user}&limit=2")).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let newest: Vec<AuditEntry> = serde_json::from_value(json).unwrap();
    let got: Vec<&str> = newest.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(got, [ids[2].as_str(), ids[1].as_str()], "the two newest, newest first");
    assert!(newest[0].timestamp_ms > newest[1].timestamp_ms);
    assert_eq!(newest[0].topic, "order.placed");
    assert_eq!(newest[0].publisher.as_deref(), Some("go.micro.srv.users"));
    assert_eq!(newest[0].payload, json!({"user_id": "ada", "order_id": "o-1", "total_cents": 1999}));
    assert_eq!(newest[1].topic, "user.profile.updated");

    // `since` as the gateway sends it: a string.
    let (status, json) = get(format!("?user_id={user}&since={}", newest[1].timestamp_ms)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json.as_array().unwrap().len(), 2, "{json}");

    let (status, json) = get("?user_id=nobody".into()).await;
    assert_eq!((status, json), (StatusCode::OK, json!([])));
    let (status, json) = get(String::new()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{json}");
    assert_eq!(json["code"], 400, "{json}");
    let (status, _) = get(format!("?user_id={user}&limit=many")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    drop(gw);
    users.stop().await.unwrap();
    audit.stop().await.unwrap();
}
