//! Health checks: named async probes (a database ping, a disk check) run periodically with a
//! timeout; their last results are cached, so `Debug.Health`, the registry and the gateway's
//! `/ready` read them without running anything per probe.
//!
//! A service adds them with [`ServiceBuilder::health_check`](crate::ServiceBuilder::health_check);
//! while one fails, `Debug.Health` answers `unhealthy` with the check's reason, the node's
//! registry metadata says `health: unhealthy` (announced at once on each change) and selectors
//! skip the node until it passes again.
//!
//! ```
//! use std::time::Duration;
//! use micro::health::HealthChecks;
//!
//! # #[actix::main] async fn main() {
//! let checks = HealthChecks::new()
//!     .check("disk", || async { Ok::<_, String>(()) })
//!     .check("db", || async { Err::<(), _>("connection refused") })
//!     .interval(Duration::from_secs(10))
//!     .timeout(Duration::from_secs(2));
//! let health = checks.start().await; // runs them once, then every interval
//! assert!(!health.healthy());
//! let failing: Vec<_> = health.report().into_iter().filter(|c| !c.healthy).collect();
//! assert_eq!((failing[0].name.as_str(), failing[0].reason.as_deref()), ("db", Some("connection refused")));
//! health.stop();
//! # }
//! ```

use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::LocalBoxFuture;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::message::now_millis;

type CheckFn = Rc<dyn Fn() -> LocalBoxFuture<'static, Result<(), String>>>;

/// A set of named checks with how often they run and how long each may take. Nothing runs
/// until [`start`](Self::start).
#[derive(Clone)]
pub struct HealthChecks {
    checks: Vec<(String, CheckFn)>,
    interval: Duration,
    timeout: Duration,
}

impl std::fmt::Debug for HealthChecks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthChecks")
            .field("checks", &self.checks.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>())
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Default for HealthChecks {
    fn default() -> Self {
        HealthChecks::new()
    }
}

impl HealthChecks {
    /// No checks; they run every 10 s, each for at most 5 s.
    pub fn new() -> HealthChecks {
        HealthChecks { checks: Vec::new(), interval: Duration::from_secs(10), timeout: Duration::from_secs(5) }
    }

    /// Adds a check: `Ok(())` passes, `Err(reason)` fails with that reason, and so does taking
    /// longer than the timeout or panicking.
    pub fn check<F, Fut, E>(mut self, name: impl Into<String>, check: F) -> Self
    where
        F: Fn() -> Fut + 'static,
        Fut: Future<Output = Result<(), E>> + 'static,
        E: std::fmt::Display,
    {
        let f: CheckFn = Rc::new(move || {
            let fut = check();
            Box::pin(async move { fut.await.map_err(|e| e.to_string()) })
        });
        self.checks.push((name.into(), f));
        self
    }

    /// How often the checks run (default 10 s).
    pub fn interval(mut self, every: Duration) -> Self {
        self.interval = every.max(Duration::from_millis(10));
        self
    }

    /// How long one check may take before it counts as failed (default 5 s).
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = limit;
        self
    }

    /// True when no check was added.
    pub fn is_empty(&self) -> bool {
        self.checks.is_empty()
    }

    /// Runs every check once, then again every interval on the current arbiter until
    /// [`Health::stop`] (or until every [`Health`] handle is dropped).
    pub async fn start(self) -> Health {
        let first = run_all(&self.checks, self.timeout).await;
        let healthy = first.iter().all(|c| c.healthy);
        let (changed, _) = watch::channel(healthy);
        let shared = Arc::new(Shared { report: RwLock::new(first), changed, stopped: Default::default() });
        let health = Health { shared: shared.clone() };
        if !self.checks.is_empty() {
            let weak = Arc::downgrade(&shared);
            drop(shared);
            actix_rt::spawn(async move {
                loop {
                    tokio::time::sleep(self.interval).await;
                    match weak.upgrade() {
                        Some(s) if !s.stopped.load(std::sync::atomic::Ordering::Acquire) => {}
                        _ => return,
                    }
                    let report = run_all(&self.checks, self.timeout).await;
                    let Some(s) = weak.upgrade() else { return };
                    let healthy = report.iter().all(|c| c.healthy);
                    for c in report.iter().filter(|c| !c.healthy) {
                        tracing::debug!(check = %c.name, reason = c.reason.as_deref().unwrap_or(""), "health check failing");
                    }
                    *s.report.write() = report;
                    s.changed.send_if_modified(|h| std::mem::replace(h, healthy) != healthy);
                }
            });
        }
        health
    }
}

async fn run_all(checks: &[(String, CheckFn)], timeout: Duration) -> Vec<CheckStatus> {
    let runs = checks.iter().map(|(name, f)| {
        let f = f.clone();
        async move {
            let started = Instant::now();
            let run = std::panic::AssertUnwindSafe(async move { f().await });
            let outcome = tokio::time::timeout(timeout, futures::FutureExt::catch_unwind(run)).await;
            let reason = match outcome {
                Ok(Ok(Ok(()))) => None,
                Ok(Ok(Err(reason))) => Some(reason),
                Ok(Err(_)) => Some("the check panicked".to_string()),
                Err(_) => Some(format!("timed out after {}", humantime::format_duration(timeout))),
            };
            CheckStatus {
                name: name.clone(),
                healthy: reason.is_none(),
                reason,
                checked: now_millis(),
                took_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            }
        }
    });
    futures::future::join_all(runs).await
}

struct Shared {
    report: RwLock<Vec<CheckStatus>>,
    changed: watch::Sender<bool>,
    stopped: std::sync::atomic::AtomicBool,
}

/// The running checks: their last results. Cheap to clone, `Send + Sync`.
///
/// ```
/// # #[actix::main] async fn main() {
/// let health = micro::health::HealthChecks::new().check("cache", || async { Ok::<_, String>(()) }).start().await;
/// let mut changes = health.watch(); // sees each flip of `healthy`
/// assert!(health.healthy() && *changes.borrow_and_update());
/// assert_eq!(health.report()[0].name, "cache");
/// health.stop();
/// # }
/// ```
#[derive(Clone)]
pub struct Health {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health").field("healthy", &self.healthy()).finish()
    }
}

impl Health {
    /// True while every check passed its last run (and with no checks at all).
    pub fn healthy(&self) -> bool {
        *self.shared.changed.borrow()
    }

    /// The last result of each check, in the order they were added.
    pub fn report(&self) -> Vec<CheckStatus> {
        self.shared.report.read().clone()
    }

    /// Follows [`healthy`](Self::healthy): the receiver sees each change.
    pub fn watch(&self) -> watch::Receiver<bool> {
        self.shared.changed.subscribe()
    }

    /// Stops running the checks (the last results stay).
    pub fn stop(&self) {
        self.shared.stopped.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// One check's last result, as `Debug.Health` reports it.
///
/// ```
/// let c: micro::health::CheckStatus =
///     serde_json::from_str(r#"{"name": "db", "healthy": false, "reason": "connection refused"}"#).unwrap();
/// assert_eq!((c.healthy, c.reason.as_deref()), (false, Some("connection refused")));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct CheckStatus {
    /// The check's name (`db`).
    pub name: String,
    /// True when it passed.
    pub healthy: bool,
    /// Why it failed: its error, `timed out after 5s`, or `the check panicked`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it last ran, milliseconds since the Unix epoch.
    pub checked: u64,
    /// How long it took, in milliseconds.
    pub took_ms: u64,
}
