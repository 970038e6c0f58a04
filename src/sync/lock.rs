//! [`Lock`]: a lease on a kv key, renewed while held, with a fencing token per acquisition.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::error::{Error, ErrorKind, Result};
use crate::kv::{check_key, Change, Expect, Kv};

/// The lease when none is set.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// The shortest lease accepted.
pub const MIN_TTL: Duration = Duration::from_millis(30);

/// A named mutual-exclusion lease on a kv store, shared by every process using the same store
/// and name.
///
/// Acquiring writes the key `micro.lock.<name>` only if no live lease is there (create-if-absent
/// with the TTL); the revision of that write is the **fencing token**: revisions only grow, so
/// each acquisition's token is higher than every earlier one. While held, a background task
/// renews the lease every third of the TTL with a compare-and-set on the revision it last
/// wrote; a failed renewal, a change to the key by anyone else, or the TTL running out before a
/// renewal got through ends the lease, and [`LockGuard::lost`] resolves at once. Dropping the
/// guard releases the lease (delete only if still at our revision).
///
/// ```
/// use std::time::Duration;
/// use micro::kv::Kv;
/// use micro::sync::Lock;
///
/// # #[micro::main] async fn main() -> micro::Result<()> {
/// let kv = Kv::open("memory://lock-doc").await?;
/// let lock = Lock::new(&kv, "billing-run")?.ttl(Duration::from_secs(5));
/// let guard = lock.acquire().await?;
/// // pass the token to the resource, which rejects any lower than the highest it has seen
/// let token = guard.token();
/// assert!(lock.try_acquire().await?.is_none());
/// guard.release().await?;
/// assert!(lock.try_acquire().await?.unwrap().token() > token);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Lock {
    kv: Kv,
    key: String,
    ttl: Duration,
    owner: String,
}

impl Lock {
    /// A lock named `name` (kv key characters) on `kv`, with a 10 s lease and a random owner id.
    pub fn new(kv: &Kv, name: &str) -> Result<Lock> {
        Lock::with_key(kv, format!("micro.lock.{name}"))
    }

    pub(crate) fn with_key(kv: &Kv, key: String) -> Result<Lock> {
        check_key(&key)?;
        Ok(Lock { kv: kv.clone(), key, ttl: DEFAULT_TTL, owner: uuid::Uuid::now_v7().simple().to_string() })
    }

    /// The lease (default 10 s, at least 30 ms): how long the lock outlives a holder that died.
    pub fn ttl(mut self, ttl: Duration) -> Lock {
        self.ttl = ttl.max(MIN_TTL);
        self
    }

    /// The holder's id stored in the key (default a random id).
    pub fn owner(mut self, owner: impl Into<String>) -> Lock {
        self.owner = owner.into();
        self
    }

    /// The kv key holding the lease.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The lease.
    pub fn lease(&self) -> Duration {
        self.ttl
    }

    /// Takes the lock now if it is free.
    pub async fn try_acquire(&self) -> Result<Option<LockGuard>> {
        let started = Instant::now();
        match self.kv.put_with(&self.key, self.owner.clone(), Expect::Absent, Some(self.ttl)).await {
            Ok(token) => Ok(Some(LockGuard::start(self.clone(), started, token))),
            Err(e) if e.is_conflict() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Waits until the lock is free and takes it. Wakes on the holder's release, and checks
    /// every quarter of the TTL for a lease that expired (expiry sends no change).
    pub async fn acquire(&self) -> Result<LockGuard> {
        if let Some(guard) = self.try_acquire().await? {
            return Ok(guard);
        }
        let poll = (self.ttl / 4).min(Duration::from_secs(1));
        // One watch for the whole wait, opened before the next try: no release is missed.
        let mut changes = self.kv.watch_key(&self.key).await?;
        loop {
            if let Some(guard) = self.try_acquire().await? {
                return Ok(guard);
            }
            loop {
                match tokio::time::timeout(poll, changes.next()).await {
                    Ok(Some(Ok(Change::Put(_)))) => continue,
                    Ok(Some(Ok(_))) | Err(_) => break,
                    Ok(Some(Err(e))) => return Err(e),
                    Ok(None) => {
                        changes = self.kv.watch_key(&self.key).await?;
                        break;
                    }
                }
            }
        }
    }
}

/// A held lock. The lease is renewed in the background until [`release`](LockGuard::release)
/// or drop.
#[derive(Debug)]
pub struct LockGuard {
    token: u64,
    key: String,
    revision: Arc<AtomicU64>,
    held: watch::Receiver<bool>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl LockGuard {
    fn start(lock: Lock, started: Instant, token: u64) -> LockGuard {
        let (held_tx, held) = watch::channel(true);
        let (stop, stop_rx) = oneshot::channel();
        let revision = Arc::new(AtomicU64::new(token));
        let key = lock.key.clone();
        let task = tokio::spawn(keep(lock, started, revision.clone(), held_tx, stop_rx));
        LockGuard { token, key, revision, held, stop: Some(stop), task: Some(task) }
    }

    /// The fencing token: the revision of the write that acquired the lease, higher than every
    /// earlier acquisition's.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// The kv key holding the lease.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The revision of the latest renewal.
    pub fn revision(&self) -> u64 {
        self.revision.load(Ordering::Acquire)
    }

    /// True until the lease is lost or released.
    pub fn is_held(&self) -> bool {
        *self.held.borrow()
    }

    /// Resolves when the lease is lost (or released); never before.
    pub async fn lost(&self) {
        let mut held = self.held.clone();
        let _ = held.wait_for(|h| !*h).await;
    }

    /// A receiver that turns `false` when the lease is lost, for `select!` loops.
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.held.clone()
    }

    /// Fails with [`ErrorKind::LeaseLost`] if the lease is no longer held.
    pub fn check(&self) -> Result<()> {
        if self.is_held() {
            Ok(())
        } else {
            Err(Error::new(ErrorKind::LeaseLost, format!("the lease on {} was lost", self.key)))
        }
    }

    /// Stops renewing and deletes the lease if it is still ours.
    pub async fn release(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        Ok(())
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // The renewal task sees the stop and deletes the lease on its own.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Renews the lease until stopped or lost; on stop, deletes it if still at our revision.
async fn keep(
    lock: Lock,
    started: Instant,
    revision: Arc<AtomicU64>,
    held: watch::Sender<bool>,
    mut stop: oneshot::Receiver<()>,
) {
    let every = lock.ttl / 3;
    // Time runs from before the acquiring write, less a tenth for clock drift, so the lease is
    // over no later than we think.
    let mut deadline = started + lock.ttl * 9 / 10;
    let mut changes = match lock.kv.watch_key(&lock.key).await {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(key = %lock.key, "cannot watch the lease; relying on renewals: {e}");
            None
        }
    };
    let mut next = Instant::now() + every;
    loop {
        let current = revision.load(Ordering::Acquire);
        tokio::select! {
            _ = &mut stop => {
                let _ = held.send(false);
                if let Err(e) = lock.kv.delete_with(&lock.key, Expect::Revision(current)).await {
                    if !e.is_conflict() {
                        tracing::warn!(key = %lock.key, "cannot release the lease (it expires on its own): {e}");
                    }
                }
                return;
            }
            () = tokio::time::sleep_until(deadline) => {
                tracing::warn!(key = %lock.key, "lease expired before a renewal got through");
                let _ = held.send(false);
                return;
            }
            change = next_change(&mut changes) => {
                match change {
                    // Our own writes are at or below `current`; anything newer is someone else's.
                    Some(Ok(c)) if c.revision() > current => {
                        tracing::warn!(key = %lock.key, "lease taken over or deleted");
                        let _ = held.send(false);
                        return;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => changes = None,
                }
            }
            () = tokio::time::sleep_until(next) => {
                let started = Instant::now();
                let renew = lock.kv.put_with(&lock.key, lock.owner.clone(), Expect::Revision(current), Some(lock.ttl));
                match tokio::time::timeout_at(deadline, renew).await.unwrap_or_else(|_| Err(Error::timeout("renewal"))) {
                    Ok(rev) => {
                        revision.store(rev, Ordering::Release);
                        deadline = started + lock.ttl * 9 / 10;
                        next = started + every;
                    }
                    Err(e) if e.is_conflict() || Instant::now() >= deadline => {
                        tracing::warn!(key = %lock.key, "lease lost: {e}");
                        let _ = held.send(false);
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(key = %lock.key, "lease renewal failed, retrying: {e}");
                        next = Instant::now() + (every / 4).max(Duration::from_millis(5));
                    }
                }
            }
        }
    }
}

async fn next_change(changes: &mut Option<crate::kv::Watch>) -> Option<Result<Change>> {
    match changes {
        Some(w) => w.next().await,
        None => futures::future::pending().await,
    }
}
