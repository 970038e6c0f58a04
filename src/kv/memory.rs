//! The in-process store: a sorted map under a mutex. Watchers are fed under the same lock as
//! the write, so each sees every change in revision order.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{conflict, Change, Entry, Expect, Store, Watch};
use crate::error::Result;

/// The embedded store (`memory://name`): values live in this process; every handle opened with
/// the same name shares one store while any is alive. TTL is a deadline checked on every read.
///
/// ```
/// use micro::kv::{Kv, MemoryStore};
/// # #[micro::main] async fn main() -> micro::Result<()> {
/// let kv = Kv::with_store(std::sync::Arc::new(MemoryStore::new()));
/// kv.put("a", "1").await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: BTreeMap<String, Slot>,
    revision: u64,
    watchers: Vec<(String, mpsc::UnboundedSender<Result<Change>>)>,
}

#[derive(Debug)]
struct Slot {
    entry: Entry,
    expires: Option<Instant>,
}

impl Slot {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|e| e > now)
    }
}

static NAMED: LazyLock<Mutex<HashMap<String, Weak<Mutex<Inner>>>>> = LazyLock::new(Default::default);

impl MemoryStore {
    /// A fresh, private store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// The store shared under `name` in this process (`""` is a name too).
    pub fn named(name: &str) -> MemoryStore {
        let mut named = NAMED.lock();
        named.retain(|_, w| w.strong_count() > 0);
        if let Some(inner) = named.get(name).and_then(Weak::upgrade) {
            return MemoryStore { inner };
        }
        let store = MemoryStore::new();
        named.insert(name.to_string(), Arc::downgrade(&store.inner));
        store
    }
}

impl Inner {
    fn live(&self, key: &str) -> Option<&Slot> {
        self.entries.get(key).filter(|s| s.live(Instant::now()))
    }

    fn check(&self, key: &str, expect: Expect) -> Result<()> {
        let ok = match (expect, self.live(key)) {
            (Expect::Any, _) | (Expect::Absent, None) => true,
            (Expect::Revision(r), Some(s)) => s.entry.revision == r,
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(conflict(key, expect))
        }
    }

    fn notify(&mut self, change: Change) {
        self.watchers
            .retain(|(prefix, tx)| !change.key().starts_with(prefix.as_str()) || tx.send(Ok(change.clone())).is_ok());
    }
}

impl Store for MemoryStore {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Entry>>> {
        let found = self.inner.lock().live(key).map(|s| s.entry.clone());
        Box::pin(async move { Ok(found) })
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Bytes,
        expect: Expect,
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<u64>> {
        let result = (|| {
            let mut inner = self.inner.lock();
            inner.check(key, expect)?;
            inner.revision += 1;
            let entry = Entry { key: key.to_string(), value, revision: inner.revision };
            let expires = ttl.map(|t| Instant::now() + t);
            inner.entries.insert(key.to_string(), Slot { entry: entry.clone(), expires });
            inner.notify(Change::Put(entry));
            Ok(inner.revision)
        })();
        Box::pin(async move { result })
    }

    fn delete<'a>(&'a self, key: &'a str, expect: Expect) -> BoxFuture<'a, Result<()>> {
        let result = (|| {
            let mut inner = self.inner.lock();
            inner.check(key, expect)?;
            let was_live = inner.live(key).is_some();
            if inner.entries.remove(key).is_some() && was_live {
                inner.revision += 1;
                let revision = inner.revision;
                inner.notify(Change::Delete { key: key.to_string(), revision });
            }
            Ok(())
        })();
        Box::pin(async move { result })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<Entry>>> {
        let now = Instant::now();
        let mut inner = self.inner.lock();
        inner.entries.retain(|_, s| s.live(now));
        let found = inner
            .entries
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, s)| s.entry.clone())
            .collect();
        Box::pin(async move { Ok(found) })
    }

    fn watch<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Watch>> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.inner.lock().watchers.push((prefix.to_string(), tx));
        let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
        Box::pin(async move { Ok(Watch::new(stream)) })
    }
}
