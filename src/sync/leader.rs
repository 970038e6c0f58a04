//! [`Leader`]: election as a lease on `micro.leader.<name>`, plus observing who leads.

use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::watch;

use super::lock::{Lock, LockGuard};
use crate::error::Result;
use crate::kv::{Change, Kv};

/// Leader election among the instances that campaign under one name: at most one holds the
/// lease at a time (see [`Lock`] for the lease and its fencing token), and every instance can
/// [`observe`](Leader::observe) who leads.
///
/// ```
/// use std::time::Duration;
/// use futures::StreamExt;
/// use micro::kv::Kv;
/// use micro::sync::Leader;
///
/// # #[micro::main] async fn main() -> micro::Result<()> {
/// let kv = Kv::open("memory://leader-doc").await?;
/// let me = Leader::new(&kv, "daily-digest", "node-1")?.ttl(Duration::from_secs(5));
/// let mut leaders = me.observe().await?;
/// assert_eq!(leaders.next().await, Some(None)); // nobody yet
/// let leadership = me.campaign().await?;       // waits until elected
/// assert_eq!(leaders.next().await, Some(Some("node-1".to_string())));
/// // ... do the leader's job while leadership.is_leader(), passing leadership.token() along
/// leadership.resign().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Leader {
    lock: Lock,
    kv: Kv,
    id: String,
}

impl Leader {
    /// A candidate `id` in the election `name` on `kv` (10 s lease).
    pub fn new(kv: &Kv, name: &str, id: &str) -> Result<Leader> {
        let lock = Lock::with_key(kv, format!("micro.leader.{name}"))?.owner(id);
        Ok(Leader { lock, kv: kv.clone(), id: id.to_string() })
    }

    /// The lease (default 10 s): how soon a crashed leader is replaced.
    pub fn ttl(mut self, ttl: Duration) -> Leader {
        self.lock = self.lock.ttl(ttl);
        self
    }

    /// This candidate's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Waits until this candidate is elected.
    pub async fn campaign(&self) -> Result<Leadership> {
        Ok(Leadership { guard: self.lock.acquire().await? })
    }

    /// Becomes leader now if nobody is.
    pub async fn try_campaign(&self) -> Result<Option<Leadership>> {
        Ok(self.lock.try_acquire().await?.map(|guard| Leadership { guard }))
    }

    /// The current leader's id, if any.
    pub async fn leader(&self) -> Result<Option<String>> {
        Ok(self.kv.get(self.lock.key()).await?.map(|e| String::from_utf8_lossy(e.value()).into_owned()))
    }

    /// The current leader (or `None`), then each change of leader. A leader that crashed shows
    /// as `None` once its lease expires (checked every quarter lease, as expiry sends no change).
    pub async fn observe(&self) -> Result<BoxStream<'static, Option<String>>> {
        let changes = self.kv.watch_key(self.lock.key()).await?;
        let poll = (ttl_of(&self.lock) / 4).min(Duration::from_secs(1));
        let this = self.clone();
        let first = this.leader().await.ok().flatten();
        let state = (this, changes, None::<Option<String>>, Some(first));
        Ok(Box::pin(futures::stream::unfold(state, move |(this, mut changes, last, pending)| async move {
            if let Some(first) = pending {
                return Some((first.clone(), (this, changes, Some(first), None)));
            }
            loop {
                match tokio::time::timeout(poll, changes.next()).await {
                    Ok(None) | Ok(Some(Err(_))) => return None,
                    Ok(Some(Ok(Change::Put(_)))) | Ok(Some(Ok(_))) | Err(_) => {}
                }
                let now = this.leader().await.ok().flatten();
                if last.as_ref() != Some(&now) {
                    return Some((now.clone(), (this, changes, Some(now), None)));
                }
            }
        })))
    }
}

fn ttl_of(lock: &Lock) -> Duration {
    lock.lease()
}

/// Being the leader: lasts until [`resign`](Leadership::resign), drop, or the lease is lost
/// ([`lost`](Leadership::lost) resolves at once then).
#[derive(Debug)]
pub struct Leadership {
    guard: LockGuard,
}

impl Leadership {
    /// The fencing token of this term: higher than every earlier term's.
    pub fn token(&self) -> u64 {
        self.guard.token()
    }

    /// True while the lease is held.
    pub fn is_leader(&self) -> bool {
        self.guard.is_held()
    }

    /// Resolves when the leadership is lost.
    pub async fn lost(&self) {
        self.guard.lost().await
    }

    /// A receiver that turns `false` when the leadership is lost.
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.guard.watch()
    }

    /// Fails with [`crate::ErrorKind::LeaseLost`] if no longer leader.
    pub fn check(&self) -> Result<()> {
        self.guard.check()
    }

    /// Steps down: the next candidate is elected at once.
    pub async fn resign(self) -> Result<()> {
        self.guard.release().await
    }
}
