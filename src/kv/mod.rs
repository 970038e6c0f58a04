//! A small distributed key-value store for sharing fast bits of data between instances of a
//! service: get, put with an optional TTL, delete, list by prefix, compare-and-set on a revision,
//! and watch a key or a prefix as a stream of changes.
//!
//! Backends are chosen by URL, like transports:
//!
//! | URL | backend | feature |
//! |---|---|---|
//! | `memory://` or `memory://name` | [`MemoryStore`]: in this process (a name shares one store) | `kv` |
//! | `nats://host:4222?bucket=name` | [`NatsStore`]: a NATS JetStream KV bucket (default `micro-kv`) | `kv` + `nats` |
//! | `redis://host:6379/0?namespace=name` | [`RedisStore`]: Redis hashes, a revision counter and a change stream | `redis` |
//!
//! [`Kv::from_env`] reads `MICRO_KV` (default `memory://`). Handlers get the service's store as
//! the [`Kv`] extractor once it is registered with `ServiceBuilder::state`.
//!
//! ```
//! use std::time::Duration;
//! use micro::kv::Kv;
//!
//! # #[micro::main] async fn main() -> micro::Result<()> {
//! let kv = Kv::open("memory://kv-mod-doc").await?;
//! let rev = kv.put("greeter.motd", "hello").await?;
//! let entry = kv.get("greeter.motd").await?.expect("just written");
//! assert_eq!(entry.value(), b"hello");
//! // compare-and-set: only if nobody wrote since `rev`
//! kv.compare_and_set("greeter.motd", "hi", rev).await?;
//! assert!(kv.compare_and_set("greeter.motd", "late", rev).await.unwrap_err().is_conflict());
//! kv.put_ttl("greeter.session.1", "x", Duration::from_secs(30)).await?;
//! assert_eq!(kv.list("greeter.session.").await?.len(), 1);
//! # Ok(()) }
//! ```
//!
//! **Revisions** increase with every write in a store (a NATS stream sequence, a Redis counter),
//! so a later write always has a higher revision, whatever its key. [`crate::sync`] uses that for
//! fencing tokens. **TTL**: an entry past its TTL reads as absent and is left out of lists; the
//! watch reports puts and deletes, not expiries (NATS 2.9 cannot). How each backend keeps TTL is
//! on its type.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::Stream;

use crate::error::{Error, ErrorKind, Result};

mod extract;
mod memory;
#[cfg(feature = "nats")]
#[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
mod nats;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
mod redis;

pub use memory::MemoryStore;
#[cfg(feature = "nats")]
pub use nats::{NatsStore, DEFAULT_HISTORY};
#[cfg(feature = "redis")]
pub use redis::RedisStore;

/// The environment variable naming the store: `MICRO_KV=nats://127.0.0.1:4222`.
pub const KV_ENV: &str = "MICRO_KV";

/// The store when nothing is configured.
pub const DEFAULT_URL: &str = "memory://";

/// The longest key accepted.
pub const MAX_KEY_LEN: usize = 256;

/// A stored value with its revision.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Entry {
    /// The key.
    pub key: String,
    /// The value as written.
    pub value: Bytes,
    /// The revision of the write that stored it.
    pub revision: u64,
}

impl Entry {
    /// The value's bytes.
    pub fn value(&self) -> &[u8] {
        &self.value
    }

    /// The value as UTF-8, if it is.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.value).ok()
    }
}

/// One change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Change {
    /// A value was written.
    Put(Entry),
    /// A key was deleted.
    Delete {
        /// The key.
        key: String,
        /// The revision of the delete.
        revision: u64,
    },
}

impl Change {
    /// The key that changed.
    pub fn key(&self) -> &str {
        match self {
            Change::Put(e) => &e.key,
            Change::Delete { key, .. } => key,
        }
    }

    /// The revision of the change.
    pub fn revision(&self) -> u64 {
        match self {
            Change::Put(e) => e.revision,
            Change::Delete { revision, .. } => *revision,
        }
    }
}

/// What a write expects to find: anything, no live entry, or exactly this revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Expect {
    /// Write whatever is there.
    Any,
    /// Write only if the key has no live entry (absent, deleted or expired).
    Absent,
    /// Write only if the live entry has this revision.
    Revision(u64),
}

/// A stream of changes under a prefix, in revision order; ends when the store closes it.
pub struct Watch {
    inner: Pin<Box<dyn Stream<Item = Result<Change>> + Send>>,
}

impl Watch {
    /// Wraps a backend's stream of changes.
    pub fn new(inner: impl Stream<Item = Result<Change>> + Send + 'static) -> Watch {
        Watch { inner: Box::pin(inner) }
    }
}

impl Stream for Watch {
    type Item = Result<Change>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl fmt::Debug for Watch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Watch")
    }
}

/// A key-value backend. Keys are validated by [`Kv`] before they reach it (see [`check_key`]).
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// The backend's name: `memory`, `nats` or `redis`.
    fn name(&self) -> &'static str;

    /// The live entry of `key`, if any.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Entry>>>;

    /// Writes `value` if `expect` holds, living `ttl` if given; returns the new revision, or an
    /// [`ErrorKind::Conflict`] error when `expect` does not hold.
    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        expect: Expect,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<u64>>;

    /// Deletes `key` if `expect` holds ([`ErrorKind::Conflict`] otherwise). Deleting an absent key
    /// with [`Expect::Any`] succeeds and changes nothing.
    fn delete<'a>(&'a self, key: &'a str, expect: Expect) -> BoxFuture<'a, Result<()>>;

    /// The live entries whose key starts with `prefix`, sorted by key.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<Entry>>>;

    /// The changes to keys starting with `prefix` from now on, in revision order. Every change
    /// made after this returns is seen.
    fn watch<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Watch>>;
}

/// Checks a key: 1 to [`MAX_KEY_LEN`] characters of `A-Z a-z 0-9 - _ / = .`, not starting or
/// ending with `.` (what NATS KV accepts, so a key works on every backend).
///
/// ```
/// assert!(micro::kv::check_key("orders.eu/42").is_ok());
/// assert!(micro::kv::check_key("has space").is_err());
/// ```
pub fn check_key(key: &str) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '/' | '=' | '.');
    if key.is_empty() || key.len() > MAX_KEY_LEN || key.starts_with('.') || key.ends_with('.') {
        return Err(Error::invalid(format!(
            "invalid key {key:?}: 1 to {MAX_KEY_LEN} characters, not starting or ending with '.'"
        )));
    }
    if let Some(c) = key.chars().find(|c| !ok_char(*c)) {
        return Err(Error::invalid(format!("invalid key {key:?}: {c:?} is not allowed; use A-Z a-z 0-9 - _ / = .")));
    }
    Ok(())
}

/// Checks a prefix: empty (everything) or the start of a valid key (may end with `.`).
pub fn check_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() {
        return Ok(());
    }
    check_key(prefix.trim_end_matches('.')).map_err(|_| {
        Error::invalid(format!("invalid prefix {prefix:?}: use A-Z a-z 0-9 - _ / = . and do not start with '.'"))
    })
}

pub(crate) fn conflict(key: &str, expect: Expect) -> Error {
    let what = match expect {
        Expect::Absent => "to be absent".to_string(),
        Expect::Revision(r) => format!("at revision {r}"),
        Expect::Any => "anything".to_string(),
    };
    Error::new(ErrorKind::Conflict, format!("key {key:?} was not {what}"))
}

pub(crate) fn ttl_ms(ttl: Option<Duration>) -> Result<Option<u64>> {
    match ttl {
        None => Ok(None),
        Some(t) if t < Duration::from_millis(1) => Err(Error::invalid("a TTL must be at least 1 ms")),
        Some(t) => Ok(Some(u64::try_from(t.as_millis()).unwrap_or(u64::MAX))),
    }
}

/// A handle on a store: cheap to clone, checks keys, takes values as anything byte-like.
/// Also a handler extractor: register one with `ServiceBuilder::state(kv)` and take `kv: Kv`.
///
/// ```
/// # use micro::prelude::*;
/// use micro::kv::Kv;
///
/// async fn visits(kv: Kv) -> Result<u64, Status> {
///     let n = kv.get("visits").await.map_err(|e| e.to_status("counter"))?
///         .and_then(|e| e.as_str()?.parse().ok()).unwrap_or(0u64) + 1;
///     kv.put("visits", n.to_string()).await.map_err(|e| e.to_status("counter"))?;
///     Ok(n)
/// }
/// # #[micro::main] async fn main() -> micro::Result<()> {
/// let svc = Service::builder("go.micro.srv.counter")
///     .transport("memory://kv-extract-doc")
///     .state(Kv::open("memory://kv-extract-doc").await?)
///     .handle("Counter.Visit", visits)
///     .start().await?;
/// # svc.stop().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Kv {
    store: Arc<dyn Store>,
}

impl fmt::Debug for Kv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Kv").field(&self.store).finish()
    }
}

impl Kv {
    /// Opens the store at `url` (see the module docs for the schemes).
    pub async fn open(url: &str) -> Result<Kv> {
        let (scheme, _) = url.split_once("://").unwrap_or(("", url));
        let store: Arc<dyn Store> = match scheme {
            "memory" => Arc::new(MemoryStore::named(url.trim_start_matches("memory://"))),
            #[cfg(feature = "nats")]
            "nats" | "tls" => Arc::new(NatsStore::connect(url).await?),
            #[cfg(not(feature = "nats"))]
            "nats" | "tls" => return Err(Error::config(format!("kv store {url:?} needs the `nats` cargo feature"))),
            #[cfg(feature = "redis")]
            "redis" | "rediss" => Arc::new(RedisStore::connect(url).await?),
            #[cfg(not(feature = "redis"))]
            "redis" | "rediss" => {
                return Err(Error::config(format!(
                    "kv store {} needs the `redis` cargo feature",
                    crate::transport::redact(url)
                )))
            }
            _ => {
                return Err(Error::config(format!(
                    "unknown kv store URL {}; use memory://, nats://host:port or redis://host:port",
                    crate::transport::redact(url)
                )))
            }
        };
        Ok(Kv { store })
    }

    /// Opens the store named by `MICRO_KV`, else `memory://`.
    pub async fn from_env() -> Result<Kv> {
        let url = std::env::var(KV_ENV).ok().filter(|s| !s.is_empty()).unwrap_or_else(|| DEFAULT_URL.into());
        Kv::open(&url).await
    }

    /// A handle on a store you built.
    pub fn with_store(store: Arc<dyn Store>) -> Kv {
        Kv { store }
    }

    /// The backend.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The live entry of `key`, if any.
    pub async fn get(&self, key: &str) -> Result<Option<Entry>> {
        check_key(key)?;
        self.store.get(key).await
    }

    /// Writes `value`; returns its revision.
    pub async fn put(&self, key: &str, value: impl Into<Bytes>) -> Result<u64> {
        check_key(key)?;
        self.store.put(key, value.into(), Expect::Any, None).await
    }

    /// Writes `value` to live `ttl` (at least 1 ms); returns its revision.
    pub async fn put_ttl(&self, key: &str, value: impl Into<Bytes>, ttl: Duration) -> Result<u64> {
        check_key(key)?;
        ttl_ms(Some(ttl))?;
        self.store.put(key, value.into(), Expect::Any, Some(ttl)).await
    }

    /// Writes `value` only if the key has no live entry; [`ErrorKind::Conflict`] otherwise.
    pub async fn create(&self, key: &str, value: impl Into<Bytes>) -> Result<u64> {
        check_key(key)?;
        self.store.put(key, value.into(), Expect::Absent, None).await
    }

    /// Writes `value` only if the live entry is at `revision`; [`ErrorKind::Conflict`] otherwise.
    pub async fn compare_and_set(&self, key: &str, value: impl Into<Bytes>, revision: u64) -> Result<u64> {
        check_key(key)?;
        self.store.put(key, value.into(), Expect::Revision(revision), None).await
    }

    /// The general write: `expect` and an optional `ttl`.
    pub async fn put_with(
        &self,
        key: &str,
        value: impl Into<Bytes>,
        expect: Expect,
        ttl: Option<Duration>,
    ) -> Result<u64> {
        check_key(key)?;
        ttl_ms(ttl)?;
        self.store.put(key, value.into(), expect, ttl).await
    }

    /// Deletes `key` (nothing happens if it is absent).
    pub async fn delete(&self, key: &str) -> Result<()> {
        check_key(key)?;
        self.store.delete(key, Expect::Any).await
    }

    /// Deletes `key` only if `expect` holds.
    pub async fn delete_with(&self, key: &str, expect: Expect) -> Result<()> {
        check_key(key)?;
        self.store.delete(key, expect).await
    }

    /// The live entries whose key starts with `prefix` (`""` for all), sorted by key.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Entry>> {
        check_prefix(prefix)?;
        self.store.list(prefix).await
    }

    /// The changes under `prefix` (`""` for all) from now on, in order.
    pub async fn watch(&self, prefix: &str) -> Result<Watch> {
        check_prefix(prefix)?;
        self.store.watch(prefix).await
    }

    /// The changes to exactly `key` from now on, in order.
    pub async fn watch_key(&self, key: &str) -> Result<Watch> {
        use futures::StreamExt;
        check_key(key)?;
        let key = key.to_string();
        let w = self.store.watch(&key).await?;
        Ok(Watch::new(w.filter(move |c| futures::future::ready(c.as_ref().map_or(true, |c| c.key() == key)))))
    }
}
