//! The NATS JetStream KV store. Revisions are the bucket stream's sequence numbers, so
//! compare-and-set is JetStream's expected-last-subject-sequence check.
//!
//! **TTL**: nats-server 2.9 has no per-message TTL, so each value is stored behind an 8-byte
//! big-endian expiry (Unix milliseconds; 0 for none) and an entry past it reads as absent: `get`
//! and `list` skip it, a create over it updates on its revision, and a compare-and-set on its
//! revision fails. The bucket's `max_age` (`?max_age=1h` in the URL; none by default) removes old
//! values for good. Expiry compares the writer's and the reader's clocks, so keep them in sync
//! (NTP) well within your shortest TTL.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use async_nats::jetstream::stream;
use bytes::{BufMut, Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};

use super::{conflict, Change, Entry, Expect, Store, Watch};
use crate::error::{Error, ErrorKind, Result};

/// The bucket used when the URL names none.
pub(crate) const DEFAULT_BUCKET: &str = "micro-kv";

/// Values kept per key in a bucket this store creates (`?history=` in the URL). A watch reads
/// the bucket's stream, so a watcher that falls more than this many writes of one key behind
/// misses the older ones: with one, a slow watcher sees only the latest value of a busy key.
pub const DEFAULT_HISTORY: i64 = 64;

/// A NATS JetStream KV bucket (`nats://host:4222?bucket=name&max_age=1h&history=64`), created
/// on first use keeping [`DEFAULT_HISTORY`] values per key, so that watches see every change.
///
/// ```no_run
/// # #[micro::main] async fn main() -> micro::Result<()> {
/// let kv = micro::kv::Kv::open("nats://127.0.0.1:4222?bucket=orders").await?;
/// kv.put("order.42", "paid").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct NatsStore {
    kv: kv::Store,
    url: String,
}

impl std::fmt::Debug for NatsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsStore").field("url", &self.url).field("bucket", &self.kv.name).finish()
    }
}

fn kv_error(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::new(ErrorKind::Transport, format!("NATS KV {what} failed: {e}")).with_source(e)
}

impl NatsStore {
    /// Connects and opens (or creates) the bucket named in the URL.
    pub async fn connect(url: &str) -> Result<NatsStore> {
        // TLS and login settings in the query are the transport's (`tls_ca=...`); the rest is ours.
        let (url, from_query) = crate::transport::options::split_url(url, true)?;
        let (server, query) = url.split_once('?').unwrap_or((&url, ""));
        let mut bucket = DEFAULT_BUCKET.to_string();
        let mut max_age = Duration::ZERO;
        let mut history = DEFAULT_HISTORY;
        for (k, v) in query.split('&').filter(|p| !p.is_empty()).map(|p| p.split_once('=').unwrap_or((p, ""))) {
            match k {
                "bucket" => bucket = v.to_string(),
                "max_age" => {
                    max_age = humantime_lite(v).ok_or_else(|| {
                        Error::config(format!("bad max_age {v:?} in the kv URL; use e.g. 90s, 10m, 1h"))
                    })?
                }
                "history" => {
                    history = v.parse().ok().filter(|h| (1..=64).contains(h)).ok_or_else(|| {
                        Error::config(format!("bad history {v:?} in the kv URL: 1 to 64 values kept per key"))
                    })?
                }
                other => {
                    return Err(Error::config(format!(
                        "unknown kv URL parameter {other:?}; use bucket, max_age or history (or {})",
                        crate::transport::options::query_keys()
                    )))
                }
            }
        }
        // Reconnects like the transport's connection, with the same TLS and login settings.
        let ((client, _), shown) = crate::transport::nats_connect_client(server, &from_query).await?;
        NatsStore::with_client(client, &bucket, max_age, history, shown).await
    }

    /// Opens (or creates) `bucket` on an existing connection; `max_age` zero keeps values
    /// forever; `history` values are kept per key (1 to 64; see [`DEFAULT_HISTORY`]).
    pub async fn with_client(
        client: async_nats::Client,
        bucket: &str,
        max_age: Duration,
        history: i64,
        url: String,
    ) -> Result<NatsStore> {
        let js = async_nats::jetstream::new(client);
        if let Ok(kv) = js.get_key_value(bucket).await {
            return Ok(NatsStore { kv, url });
        }
        // The bucket's stream as `create_key_value` makes it, created directly: that call first
        // asks for the account's info, whose reply nats-server 2.9 words differently.
        let stream = stream::Config {
            name: format!("KV_{bucket}"),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: history,
            max_age,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            num_replicas: 1,
            ..Default::default()
        };
        js.get_or_create_stream(stream).await.map_err(|e| {
            Error::config(format!("cannot create the KV bucket {bucket:?} (is JetStream on? -js): {e}"))
        })?;
        let kv = js
            .get_key_value(bucket)
            .await
            .map_err(|e| Error::config(format!("cannot open the KV bucket {bucket:?}: {e}")))?;
        Ok(NatsStore { kv, url })
    }

    /// The underlying bucket handle.
    pub fn bucket(&self) -> &kv::Store {
        &self.kv
    }

    /// The live, decoded entry of `key` and, when a dead one (deleted or expired) is there, its revision.
    async fn lookup(&self, key: &str) -> Result<(Option<Entry>, Option<u64>)> {
        let Some(e) = self.kv.entry(key).await.map_err(|e| kv_error("get", e))? else {
            return Ok((None, None));
        };
        if e.operation != Operation::Put {
            return Ok((None, Some(e.revision)));
        }
        match unwrap_value(&e.value) {
            Some(value) => Ok((Some(Entry { key: e.key, value, revision: e.revision }), None)),
            None => Ok((None, Some(e.revision))),
        }
    }
}

/// `90s`, `10m`, `1h`, `500ms`: the forms a URL needs, without a dependency.
fn humantime_lite(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let n: u64 = s[..split].parse().ok()?;
    match &s[split..] {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n * 60)),
        "h" => Some(Duration::from_secs(n * 3600)),
        "d" => Some(Duration::from_secs(n * 86400)),
        _ => None,
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn wrap_value(value: &[u8], ttl: Option<Duration>) -> Bytes {
    let expiry = ttl.map_or(0, |t| now_ms().saturating_add(u64::try_from(t.as_millis()).unwrap_or(u64::MAX)));
    let mut b = BytesMut::with_capacity(8 + value.len());
    b.put_u64(expiry);
    b.put_slice(value);
    b.freeze()
}

/// The value if it is live; `None` if expired or not in our format.
fn unwrap_value(raw: &Bytes) -> Option<Bytes> {
    let expiry = u64::from_be_bytes(raw.get(..8)?.try_into().ok()?);
    (expiry == 0 || expiry > now_ms()).then(|| raw.slice(8..))
}

impl Store for NatsStore {
    fn name(&self) -> &'static str {
        "nats"
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Entry>>> {
        Box::pin(async move { Ok(self.lookup(key).await?.0) })
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        expect: Expect,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let raw = wrap_value(&value, ttl);
            let expected = match expect {
                Expect::Any => return self.kv.put(key, raw).await.map_err(|e| kv_error("put", e)),
                Expect::Absent => match self.kv.create(key, raw.clone()).await {
                    Ok(rev) => return Ok(rev),
                    Err(e) if e.kind() == CreateErrorKind::AlreadyExists => match self.lookup(key).await? {
                        (None, Some(dead)) => dead,
                        _ => return Err(conflict(key, expect)),
                    },
                    Err(e) => return Err(kv_error("create", e)),
                },
                Expect::Revision(rev) => match self.lookup(key).await? {
                    (Some(live), _) if live.revision == rev => rev,
                    _ => return Err(conflict(key, expect)),
                },
            };
            self.kv.update(key, raw, expected).await.map_err(|e| match e.kind() {
                UpdateErrorKind::WrongLastRevision => conflict(key, expect),
                _ => kv_error("update", e),
            })
        })
    }

    fn delete<'a>(&'a self, key: &'a str, expect: Expect) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let (live, _) = self.lookup(key).await?;
            let revision = match (expect, &live) {
                (Expect::Any, None) => return Ok(()),
                (Expect::Any, Some(e)) => e.revision,
                (Expect::Absent, None) => return Ok(()),
                (Expect::Revision(r), Some(e)) if e.revision == r => r,
                _ => return Err(conflict(key, expect)),
            };
            let checked = if expect == Expect::Any { None } else { Some(revision) };
            self.kv.delete_expect_revision(key, checked).await.map_err(|e| {
                if e.to_string().contains("wrong last sequence") {
                    conflict(key, expect)
                } else {
                    kv_error("delete", e)
                }
            })
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<Entry>>> {
        Box::pin(async move {
            let keys: Vec<String> = self
                .kv
                .keys()
                .await
                .map_err(|e| kv_error("keys", e))?
                .try_filter(|k| futures::future::ready(k.starts_with(prefix)))
                .try_collect()
                .await
                .map_err(|e| kv_error("keys", e))?;
            let mut found: Vec<Entry> = futures::stream::iter(keys)
                .map(|k: String| async move { self.lookup(&k).await.map(|(e, _)| e) })
                .buffer_unordered(32)
                .try_filter_map(|e| futures::future::ready(Ok(e)))
                .try_collect()
                .await?;
            found.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(found)
        })
    }

    fn watch<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Watch>> {
        Box::pin(async move {
            let subject = if prefix.ends_with('.') { format!("{prefix}>") } else { ">".to_string() };
            let watch = self.kv.watch(&subject).await.map_err(|e| kv_error("watch", e))?;
            let prefix = prefix.to_string();
            let changes =
                watch.try_filter(move |e| futures::future::ready(e.key.starts_with(&prefix))).map(|e| match e {
                    Ok(e) if e.operation == Operation::Put => {
                        let value = e.value.get(8..).map_or_else(Bytes::new, |_| e.value.slice(8..));
                        Ok(Change::Put(Entry { key: e.key, value, revision: e.revision }))
                    }
                    Ok(e) => Ok(Change::Delete { key: e.key, revision: e.revision }),
                    Err(e) => Err(kv_error("watch", e)),
                });
            Ok(Watch::new(changes))
        })
    }
}
