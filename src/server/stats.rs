//! Counters behind `Debug.Stats` and the in-flight gauge that graceful shutdown waits on.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::message::now_millis;

#[derive(Debug)]
pub(crate) struct Stats {
    started: Instant,
    started_ms: u64,
    pub(crate) requests: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) panics: AtomicU64,
    pub(crate) restarts: AtomicU64,
    pub(crate) expired: AtomicU64,
    pub(crate) events: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) dead_letters: AtomicU64,
    in_flight: AtomicI64,
    idle: Notify,
    /// The service's metric handles (no-ops without a recorder).
    pub(crate) metrics: crate::metrics::ServiceMetrics,
}

/// A guard for one in-flight request or event; dropping it ends it.
pub(crate) struct InFlight(Arc<Stats>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.metrics.in_flight.decrement(1.0);
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Stats {
    pub(crate) fn new(service: &Arc<str>) -> Stats {
        Stats {
            metrics: crate::metrics::ServiceMetrics::new(service),
            started: Instant::now(),
            started_ms: now_millis(),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            events: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
            idle: Notify::new(),
        }
    }

    /// When the node started, ms since the Unix epoch.
    pub(crate) fn started_millis(&self) -> u64 {
        self.started_ms
    }

    /// Counts a request or event as in flight until the guard drops. Taken when the message
    /// is received, before its task is spawned, so a drain never misses a queued task.
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.metrics.in_flight.increment(1.0);
        InFlight(self.clone())
    }

    pub(crate) fn in_flight(&self) -> i64 {
        self.in_flight.load(Ordering::Acquire)
    }

    pub(crate) fn incr(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a handler panic and the restart that follows it.
    pub(crate) fn panicked(&self) {
        Stats::incr(&self.panics);
        self.metrics.panics.increment(1);
        self.restarted();
    }

    /// Counts a restart (a handler, an actor, a subscription loop).
    pub(crate) fn restarted(&self) {
        Stats::incr(&self.restarts);
        self.metrics.restarts.increment(1);
    }

    /// Counts a request dropped after its deadline.
    pub(crate) fn expired(&self) {
        Stats::incr(&self.expired);
        self.metrics.expired.increment(1);
    }

    /// Waits until nothing is in flight or `grace` passed; returns what is still in flight.
    pub(crate) async fn wait_idle(&self, grace: Duration) -> i64 {
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let idle = self.idle.notified();
            let n = self.in_flight();
            if n <= 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.in_flight();
            }
        }
    }

    pub(crate) fn snapshot(&self, service: &str, version: &str, node: &str) -> ServiceStats {
        ServiceStats {
            service: service.to_string(),
            version: version.to_string(),
            node: node.to_string(),
            started: self.started_ms,
            uptime: self.started.elapsed().as_secs(),
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            panics: self.panics.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
            expired: self.expired.load(Ordering::Relaxed),
            events: self.events.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            dead_letters: self.dead_letters.load(Ordering::Relaxed),
            in_flight: self.in_flight().max(0) as u64,
            memory: resident_memory_bytes(),
            subscriptions: Vec::new(),
        }
    }
}

/// The counters of one subscription, bumped in dispatch; the broker actor owns them.
#[derive(Debug)]
pub(crate) struct SubscriptionCounters {
    pub(crate) handled: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) dead_letters: AtomicU64,
    pub(crate) restarts: AtomicU64,
    pub(crate) metrics: crate::metrics::SubscriptionMetrics,
}

impl Default for SubscriptionCounters {
    fn default() -> Self {
        SubscriptionCounters::with_metrics(crate::metrics::SubscriptionMetrics::noop())
    }
}

impl SubscriptionCounters {
    pub(crate) fn with_metrics(metrics: crate::metrics::SubscriptionMetrics) -> SubscriptionCounters {
        SubscriptionCounters {
            handled: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            dead_letters: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            metrics,
        }
    }

    /// What one subscription reports in `Debug.Stats`.
    pub(crate) fn info(
        &self,
        topic: &str,
        group: Option<&str>,
        durable: bool,
        pending: Option<u64>,
    ) -> SubscriptionInfo {
        SubscriptionInfo {
            topic: topic.to_string(),
            group: group.map(str::to_string),
            durable,
            handled: self.handled.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            dead_letters: self.dead_letters.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
            pending,
        }
    }
}

/// One subscription of a node, as `Debug.Stats` reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct SubscriptionInfo {
    /// The topic or pattern (`user.*`, `order.>`).
    pub topic: String,
    /// The queue group or durable group; none for a broadcast subscription.
    pub group: Option<String>,
    /// True for an at-least-once subscription.
    pub durable: bool,
    /// Events handed to the handler.
    pub handled: u64,
    /// Events whose handler failed or panicked, or that were malformed.
    pub errors: u64,
    /// Durable events handed back to the broker for another attempt.
    pub retries: u64,
    /// Durable events published to the group's dead-letter topic.
    pub dead_letters: u64,
    /// Times its serve loop ended or died while the service ran, and was subscribed again.
    pub restarts: u64,
    /// Events the broker holds for the group, not yet acknowledged (durable; where the broker
    /// can tell: JetStream's pending plus unacknowledged, RabbitMQ's ready messages).
    pub pending: Option<u64>,
}

/// The reply of `Debug.Stats`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ServiceStats {
    /// Service name.
    pub service: String,
    /// Service version.
    pub version: String,
    /// Node id.
    pub node: String,
    /// Start time, milliseconds since the Unix epoch.
    pub started: u64,
    /// Seconds since start.
    pub uptime: u64,
    /// Requests received.
    pub requests: u64,
    /// Requests answered with an error, plus events whose handler failed or that were malformed.
    pub errors: u64,
    /// Handler panics (async fns and actors).
    pub panics: u64,
    /// Handler restarts (fn handler panics, actor restarts and subscription loop restarts).
    pub restarts: u64,
    /// Requests dropped because their deadline had passed on arrival.
    pub expired: u64,
    /// Events handled.
    pub events: u64,
    /// Durable events handed back to the broker for another attempt.
    #[serde(default)]
    pub retries: u64,
    /// Durable events given up on: published to the group's dead-letter topic.
    #[serde(default)]
    pub dead_letters: u64,
    /// Requests and events being handled now.
    pub in_flight: u64,
    /// Resident memory in bytes (0 where unknown).
    pub memory: u64,
    /// The node's event subscriptions (absent from older nodes).
    #[serde(default)]
    pub subscriptions: Vec<SubscriptionInfo>,
}

/// The reply of `Debug.Health`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HealthStatus {
    /// `ok`; `unhealthy` while a health check fails; `draining` while shutting down.
    pub status: String,
    /// Service name.
    pub service: String,
    /// Service version.
    pub version: String,
    /// Node id.
    pub node: String,
    /// The last result of each of the node's health checks (absent from older nodes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<crate::health::CheckStatus>,
}

impl HealthStatus {
    /// True when the node says `ok`.
    pub fn is_ok(&self) -> bool {
        self.status == "ok"
    }

    /// The failing checks as `name: reason`, joined with `; ` (empty when none fails).
    pub fn failing(&self) -> String {
        let failing = self.checks.iter().filter(|c| !c.healthy);
        failing
            .map(|c| format!("{}: {}", c.name, c.reason.as_deref().unwrap_or("failed")))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Resident set size of this process, from `VmRSS` in `/proc/self/status` (0 elsewhere).
pub fn resident_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status").ok().and_then(|s| vm_rss_bytes(&s)).unwrap_or(0)
}

/// The `VmRSS:   1234 kB` line of a `/proc/<pid>/status` text, in bytes. The kernel reports it
/// in KiB whatever the page size.
fn vm_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib = line.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_is_read_in_kib_from_proc_status() {
        assert_eq!(
            vm_rss_bytes("Name:\tmicro\nVmPeak:\t  9000 kB\nVmRSS:\t   5120 kB\nThreads:\t4\n"),
            Some(5120 * 1024)
        );
        assert_eq!(vm_rss_bytes("Name:\tmicro\n"), None);
        if cfg!(target_os = "linux") {
            assert!(resident_memory_bytes() > 0);
        }
    }
}

/// One endpoint's counters, as the NATS services API's `STATS` reports them. They live on the
/// serving arbiter with the endpoint, so plain cells do.
#[derive(Debug, Default)]
pub(crate) struct EndpointStats {
    pub(crate) requests: std::cell::Cell<u64>,
    pub(crate) errors: std::cell::Cell<u64>,
    /// Total time spent handling requests, in nanoseconds.
    pub(crate) processing_ns: std::cell::Cell<u64>,
    pub(crate) last_error: std::cell::RefCell<String>,
}

impl EndpointStats {
    /// Counts one handled request, and its error if it failed.
    pub(crate) fn record(&self, took: Duration, error: Option<&crate::status::Status>) {
        self.requests.set(self.requests.get() + 1);
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.processing_ns.set(self.processing_ns.get().saturating_add(ns));
        if let Some(status) = error {
            self.errors.set(self.errors.get() + 1);
            *self.last_error.borrow_mut() = format!("{}:{}", status.code().as_u16(), status.detail());
        }
    }
}
