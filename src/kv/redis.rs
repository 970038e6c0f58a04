//! The Redis store. Each write is one Lua script, so checking the expected revision, writing,
//! setting the TTL and logging the change happen atomically:
//!
//! - `{ns}:e:{key}` is a string, the revision in decimal, `:`, then the value (`42:hello`), so a
//!   read is one `GET` and a write one `SET` (which also sets or clears the TTL: Redis's own, so
//!   an expired entry is gone for every reader at once);
//! - `{ns}:rev` is the revision counter (`INCR` on every write of the namespace);
//! - `{ns}:log` is a stream of changes (`op`, `k`, `v`, `r`), capped near 10 000 entries, that
//!   watches read with `XREAD BLOCK` from the last id they saw: they see every change in order
//!   and need nothing configured on the server (keyspace notifications stay off).

use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use redis::aio::ConnectionManager;
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, AsyncConnectionConfig, Script, Value};
use tokio::sync::mpsc;

use super::{conflict, ttl_ms, Change, Entry, Expect, Store, Watch};
use crate::error::{Error, ErrorKind, Result};

/// The namespace used when the URL names none.
pub(crate) const DEFAULT_NAMESPACE: &str = "micro-kv";

/// How many changes the log keeps (approximately): a watch that falls further behind errs.
const LOG_LEN: u64 = 10_000;

// The scripts read an entry's revision as the digits before its first `:`.
const PUT: &str = include_str!("redis_put.lua");

const DELETE: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur then cur = string.match(cur, '^%d+') end
local expect = ARGV[1]
if expect == 'absent' then
  if cur then return -1 end
  return 0
elseif expect ~= 'any' then
  if (not cur) or cur ~= expect then return -1 end
end
if not cur then return 0 end
redis.call('DEL', KEYS[1])
local rev = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'op', 'del', 'k', ARGV[2], 'r', rev)
return rev
"#;

/// Redis as a kv store (`redis://host:6379/0?namespace=name`); see the module text for the
/// layout. Revisions come from one counter per namespace.
///
/// ```no_run
/// # #[micro::main] async fn main() -> micro::Result<()> {
/// let kv = micro::kv::Kv::open("redis://127.0.0.1:6379/0?namespace=orders").await?;
/// kv.put("order.42", "paid").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    client: redis::Client,
    conn: ConnectionManager,
    ns: String,
    url: String,
    put: Script,
    delete: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("url", &self.url).field("namespace", &self.ns).finish()
    }
}

fn redis_error(what: &str, e: redis::RedisError) -> Error {
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else if e.is_connection_refusal() || e.is_connection_dropped() {
        ErrorKind::Connect
    } else {
        ErrorKind::Transport
    };
    Error::new(kind, format!("Redis {what} failed: {e}")).with_source(e)
}

fn expect_arg(expect: Expect) -> String {
    match expect {
        Expect::Any => "any".into(),
        Expect::Absent => "absent".into(),
        Expect::Revision(r) => r.to_string(),
    }
}

impl RedisStore {
    /// Connects to the server in the URL; `?namespace=` prefixes every key (default `micro-kv`).
    pub async fn connect(url: &str) -> Result<RedisStore> {
        let (server, query) = url.split_once('?').unwrap_or((url, ""));
        let mut ns = DEFAULT_NAMESPACE.to_string();
        for (k, v) in query.split('&').filter(|p| !p.is_empty()).map(|p| p.split_once('=').unwrap_or((p, ""))) {
            match k {
                "namespace" if !v.is_empty() && !v.contains(['*', '?', '[', ']', '\\']) => ns = v.to_string(),
                "namespace" => return Err(Error::config(format!("bad kv namespace {v:?}: no glob characters"))),
                other => return Err(Error::config(format!("unknown kv URL parameter {other:?}; use namespace"))),
            }
        }
        let shown = crate::transport::redact(server);
        let client = redis::Client::open(server)
            .map_err(|e| Error::config(format!("bad Redis URL {shown}: {e}")).with_source(e))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_connection_timeout(Some(Duration::from_secs(5)));
        let conn = ConnectionManager::new_with_config(client.clone(), config).await.map_err(|e| {
            Error::new(
                ErrorKind::Connect,
                format!("Redis at {shown} is unreachable: {e} (start one with `redis-server`)"),
            )
            .with_source(e)
        })?;
        Ok(RedisStore { client, conn, ns, url: shown, put: Script::new(PUT), delete: Script::new(DELETE) })
    }

    fn data_key(&self, key: &str) -> String {
        format!("{}:e:{key}", self.ns)
    }

    fn rev_key(&self) -> String {
        format!("{}:rev", self.ns)
    }

    fn log_key(&self) -> String {
        format!("{}:log", self.ns)
    }

    /// The entries of `keys`, in one round trip (`MGET`s of 500 keys at most, pipelined).
    async fn read(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>> {
        let mut pipe = redis::pipe();
        for chunk in keys.chunks(500) {
            pipe.cmd("MGET").arg(chunk);
        }
        let rows: Vec<Vec<Option<Vec<u8>>>> =
            pipe.query_async(&mut self.conn.clone()).await.map_err(|e| redis_error("get", e))?;
        Ok(rows.into_iter().flatten().collect())
    }
}

/// The revision and value of a stored entry (`42:hello`), without copying the value.
fn parse_entry(key: &str, raw: Vec<u8>) -> Result<(u64, Bytes)> {
    let revision = raw
        .iter()
        .position(|&b| b == b':')
        .and_then(|colon| Some((std::str::from_utf8(&raw[..colon]).ok()?.parse().ok()?, colon)));
    let Some((revision, colon)) = revision else {
        return Err(Error::new(ErrorKind::Codec, format!("kv entry {key:?} on Redis is not `revision:value`")));
    };
    Ok((revision, Bytes::from(raw).slice(colon + 1..)))
}

impl Store for RedisStore {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Entry>>> {
        Box::pin(async move {
            let raw: Option<Vec<u8>> = redis::cmd("GET")
                .arg(self.data_key(key))
                .query_async(&mut self.conn.clone())
                .await
                .map_err(|e| redis_error("get", e))?;
            let Some(raw) = raw else { return Ok(None) };
            let (revision, value) = parse_entry(key, raw)?;
            Ok(Some(Entry { key: key.to_string(), value, revision }))
        })
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        expect: Expect,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let ttl = ttl_ms(ttl)?.unwrap_or(0);
            let rev: i64 = self
                .put
                .key(self.data_key(key))
                .key(self.rev_key())
                .key(self.log_key())
                .arg(value.as_ref())
                .arg(ttl)
                .arg(expect_arg(expect))
                .arg(key)
                .arg(LOG_LEN)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(|e| redis_error("put", e))?;
            u64::try_from(rev).map_err(|_| conflict(key, expect))
        })
    }

    fn delete<'a>(&'a self, key: &'a str, expect: Expect) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let rev: i64 = self
                .delete
                .key(self.data_key(key))
                .key(self.rev_key())
                .key(self.log_key())
                .arg(expect_arg(expect))
                .arg(key)
                .arg(LOG_LEN)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(|e| redis_error("delete", e))?;
            if rev < 0 {
                return Err(conflict(key, expect));
            }
            Ok(())
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<Entry>>> {
        Box::pin(async move {
            // Keys are checked (no glob characters), so the prefix is a literal pattern.
            let pattern = format!("{}*", self.data_key(prefix));
            let strip = self.data_key("");
            let mut conn = self.conn.clone();
            let mut cursor: u64 = 0;
            let mut keys = Vec::new();
            loop {
                let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(500)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| redis_error("scan", e))?;
                keys.extend(batch);
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
            keys.sort();
            keys.dedup();
            let rows = if keys.is_empty() { Vec::new() } else { self.read(&keys).await? };
            let mut entries = Vec::with_capacity(keys.len());
            for (k, row) in keys.iter().zip(rows) {
                // Gone (deleted or expired) since the scan.
                let (Some(key), Some(raw)) = (k.strip_prefix(&strip), row) else { continue };
                let (revision, value) = parse_entry(key, raw)?;
                entries.push(Entry { key: key.to_string(), value, revision });
            }
            Ok(entries)
        })
    }

    fn watch<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Watch>> {
        Box::pin(async move {
            let log = self.log_key();
            // Start after the newest change now in the log, so nothing written after we return is missed.
            let newest: Vec<(String, Vec<(String, Value)>)> = redis::cmd("XREVRANGE")
                .arg(&log)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut self.conn.clone())
                .await
                .map_err(|e| redis_error("watch", e))?;
            let from = newest.into_iter().next().map_or_else(|| "0-0".to_string(), |(id, _)| id);
            let config = AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(10)));
            let conn = self
                .client
                .get_multiplexed_async_connection_with_config(&config)
                .await
                .map_err(|e| redis_error("watch", e))?;
            let (tx, rx) = mpsc::channel(256);
            tokio::spawn(follow_log(conn, log, from, prefix.to_string(), tx));
            let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
            Ok(Watch::new(stream))
        })
    }
}

/// Reads the change log from `from` on, sending changes under `prefix`, until the watch is dropped.
async fn follow_log(
    mut conn: redis::aio::MultiplexedConnection,
    log: String,
    mut from: String,
    prefix: String,
    tx: mpsc::Sender<Result<Change>>,
) {
    let opts = StreamReadOptions::default().block(2_000).count(500);
    loop {
        let keys = [log.as_str()];
        let ids = [from.clone()];
        let read: redis::RedisResult<Option<StreamReadReply>> = tokio::select! {
            r = conn.xread_options(&keys, &ids, &opts) => r,
            () = tx.closed() => return,
        };
        let reply = match read {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.send(Err(redis_error("watch", e))).await;
                return;
            }
        };
        for id in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
            from = id.id.clone();
            let Some(change) = to_change(&id.map) else { continue };
            if change.key().starts_with(&prefix) && tx.send(Ok(change)).await.is_err() {
                return;
            }
        }
    }
}

fn to_change(fields: &std::collections::HashMap<String, Value>) -> Option<Change> {
    let text = |name: &str| match fields.get(name)? {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    };
    let key = text("k")?;
    let revision = text("r")?.parse().ok()?;
    match text("op")?.as_str() {
        "put" => {
            let value = match fields.get("v")? {
                Value::BulkString(b) => Bytes::from(b.clone()),
                _ => Bytes::new(),
            };
            Some(Change::Put(Entry { key, value, revision }))
        }
        "del" => Some(Change::Delete { key, revision }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_a_revision_a_colon_and_the_value() {
        let (rev, value) = parse_entry("k", b"42:a:b".to_vec()).unwrap();
        assert_eq!((rev, value.as_ref()), (42, b"a:b".as_ref()));
        assert_eq!(parse_entry("k", b"7:".to_vec()).unwrap().1.len(), 0);
        for bad in [&b"no colon"[..], b":x", b"x1:y"] {
            assert_eq!(parse_entry("k", bad.to_vec()).unwrap_err().kind(), ErrorKind::Codec);
        }
    }
}
