//! The audit service: durable subscriptions to `user.>` and `order.>` that store every event
//! once in SQLite, and `Audit.History` to read a user's events back, newest first.
//!
//! SQLite is blocking, so one `SyncActor` on its own thread owns the connection and the async
//! handlers reach it with `addr.send(..)`. A row is keyed by the event id and inserted with
//! `ON CONFLICT(id) DO NOTHING`: a redelivered event (at-least-once) never makes a second row.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use actix::prelude::*;
use micro::prelude::*;
use rusqlite::{params, Connection, OpenFlags};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::names::{Names, AUDITED};

/// History answers at most this many events.
pub const MAX_LIMIT: u64 = 1000;
pub const DEFAULT_LIMIT: u64 = 50;

/// `Audit.History`: a user's stored events, newest first.
pub const AUDIT_HISTORY: Endpoint<HistoryRequest, Vec<AuditEntry>> = Endpoint::new("Audit.History");

#[derive(Clone, Debug)]
pub struct AuditConfig {
    pub names: Names,
    pub db: PathBuf,
    /// How soon the broker hands out again what a crashed member had (default 30 s).
    pub ack_wait: Option<Duration>,
    /// How long the broker keeps the audit's groups while it is down (default 7 days).
    pub expire_after: Option<Duration>,
}

/// One stored event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: String,
    pub topic: String,
    pub user_id: String,
    pub timestamp_ms: u64,
    pub publisher: Option<String>,
    pub payload: Value,
}

/// `Audit.History`: `since` (ms since the epoch, inclusive) and `limit` take a number or, as
/// the gateway sends query parameters, a numeric string.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HistoryRequest {
    pub user_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "number_or_string")]
    pub since: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "number_or_string")]
    pub limit: Option<u64>,
}

fn number_or_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Number {
        N(u64),
        S(String),
    }
    match Option::<Number>::deserialize(d)? {
        None => Ok(None),
        Some(Number::N(n)) => Ok(Some(n)),
        Some(Number::S(s)) => {
            s.trim().parse().map(Some).map_err(|_| serde::de::Error::custom(format!("expected a number, not {s:?}")))
        }
    }
}

/// The audit service on `cfg.db`. Starts the store's thread, so call it inside an actix system.
pub fn service(cfg: &AuditConfig) -> rusqlite::Result<micro::ServiceBuilder> {
    let store = Store::open(&cfg.db)?;
    let name = cfg.names.audit_service();
    let mut durable = SubscribeOptions::durable(&name).concurrency(64);
    if let Some(d) = cfg.ack_wait {
        durable = durable.ack_wait(d);
    }
    if let Some(d) = cfg.expire_after {
        durable = durable.expire_after(d);
    }
    let builder = Service::builder(&name).version("1.0.0").state(store).handle(AUDIT_HISTORY, history);
    Ok(AUDITED.iter().fold(builder, |b, pattern| b.subscribe_with(&cfg.names.topic(pattern), durable.clone(), record)))
}

/// Stores one event. A missing `user_id` can never succeed: 400, dead-lettered at once. A store
/// failure is 503: the broker delivers the event again.
async fn record(Req(payload): Req<Value>, ctx: CallContext, State(store): State<Store>) -> Result<(), Status> {
    let user_id = match payload.get("user_id") {
        Some(Value::String(u)) if !u.is_empty() => u.clone(),
        _ => return Err(Status::bad_request("the event has no user_id")),
    };
    let event = ctx.event().ok_or_else(|| Status::internal("not an event"))?;
    let entry = AuditEntry {
        id: ctx.id().to_string(),
        topic: event.topic.clone(),
        user_id,
        timestamp_ms: event.timestamp,
        publisher: event.publisher.clone(),
        payload,
    };
    store.send(Insert(entry)).await
}

async fn history(Req(q): Req<HistoryRequest>, State(store): State<Store>) -> Result<Vec<AuditEntry>, Status> {
    if q.user_id.is_empty() {
        return Err(Status::bad_request("user_id is required"));
    }
    store.send(q).await
}

/// The handle the handlers share: the address of the thread that owns the connection.
#[derive(Clone)]
pub struct Store(Addr<Db>);

impl Store {
    /// Opens (creating if need be) the database, then starts its thread.
    pub fn open(path: &Path) -> rusqlite::Result<Store> {
        drop(Db::connect(path)?); // report a bad path here rather than panic in the thread
        let path = path.to_path_buf();
        Ok(Store(SyncArbiter::start(
            1,
            move || Db(Db::connect(&path).expect("the audit database opened a moment ago")),
        )))
    }

    async fn send<M, T>(&self, msg: M) -> Result<T, Status>
    where
        M: Message<Result = rusqlite::Result<T>> + Send + 'static,
        T: Send + 'static,
        Db: Handler<M>,
    {
        match self.0.send(msg).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Status::unavailable(format!("audit store: {e}"))),
            Err(e) => Err(Status::unavailable(format!("audit store is gone: {e}"))),
        }
    }
}

/// Owns the SQLite connection, on a thread of its own.
pub struct Db(Connection);

impl Db {
    fn connect(path: &Path) -> rusqlite::Result<Connection> {
        let conn = Connection::open(path)?;
        // WAL: readers never wait for the writer. NORMAL: a commit survives a crash of this
        // process (not of the machine) without an fsync per event.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS audit_events (
                 id           TEXT PRIMARY KEY,
                 topic        TEXT NOT NULL,
                 user_id      TEXT NOT NULL,
                 timestamp_ms INTEGER NOT NULL,
                 publisher    TEXT,
                 payload      TEXT NOT NULL
             );
             CREATE INDEX IF NOT EXISTS audit_events_by_user ON audit_events (user_id, timestamp_ms, id);",
        )?;
        Ok(conn)
    }
}

impl Actor for Db {
    type Context = SyncContext<Self>;
}

#[derive(Message)]
#[rtype(result = "rusqlite::Result<()>")]
struct Insert(AuditEntry);

impl Handler<Insert> for Db {
    type Result = rusqlite::Result<()>;
    fn handle(&mut self, Insert(e): Insert, _: &mut SyncContext<Self>) -> Self::Result {
        self.0
            .prepare_cached(
                "INSERT INTO audit_events (id, topic, user_id, timestamp_ms, publisher, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(id) DO NOTHING",
            )?
            .execute(params![e.id, e.topic, e.user_id, e.timestamp_ms as i64, e.publisher, e.payload.to_string()])?;
        Ok(())
    }
}

impl Message for HistoryRequest {
    type Result = rusqlite::Result<Vec<AuditEntry>>;
}

impl Handler<HistoryRequest> for Db {
    type Result = rusqlite::Result<Vec<AuditEntry>>;
    fn handle(&mut self, q: HistoryRequest, _: &mut SyncContext<Self>) -> Self::Result {
        let mut stmt = self.0.prepare_cached(
            "SELECT id, topic, user_id, timestamp_ms, publisher, payload FROM audit_events
             WHERE user_id = ?1 AND timestamp_ms >= ?2
             ORDER BY timestamp_ms DESC, id DESC LIMIT ?3",
        )?;
        let since = q.since.unwrap_or(0).min(i64::MAX as u64) as i64;
        let limit = q.limit.unwrap_or(DEFAULT_LIMIT).min(MAX_LIMIT) as i64;
        let rows = stmt.query_map(params![q.user_id, since, limit], |r| {
            let payload: String = r.get(5)?;
            Ok(AuditEntry {
                id: r.get(0)?,
                topic: r.get(1)?,
                user_id: r.get(2)?,
                timestamp_ms: r.get::<_, i64>(3)? as u64,
                publisher: r.get(4)?,
                payload: serde_json::from_str(&payload).unwrap_or(Value::String(payload)),
            })
        })?;
        rows.collect()
    }
}

/// Opens the database read-only, for looking at it while the service writes (WAL allows that).
pub fn open_read_only(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

/// Every stored event id (read-only).
pub fn stored_ids(path: &Path) -> rusqlite::Result<Vec<String>> {
    let conn = open_read_only(path)?;
    let mut stmt = conn.prepare("SELECT id FROM audit_events")?;
    let ids = stmt.query_map([], |r| r.get(0))?.collect();
    ids
}

/// How many events are stored (read-only).
pub fn stored_count(path: &Path) -> rusqlite::Result<u64> {
    let n: i64 = open_read_only(path)?.query_row("SELECT COUNT(*) FROM audit_events", [], |r| r.get(0))?;
    Ok(n as u64)
}
