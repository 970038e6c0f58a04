//! The selector: picks a node per call from the registry's records. Strategies: random
//! (default) and round robin; filters: version and metadata labels; nodes whose health checks
//! fail (`health: unhealthy` in their metadata) are skipped; and a blacklist: a node
//! whose call failed at the transport level is excluded at once and tried again only after a
//! backoff that doubles with each further failure, so a crashed node stops getting traffic
//! long before its registry TTL runs out.
//!
//! The hot path reads shared state directly (no actor hop per call); the [`SelectorActor`]
//! keeps that state tidy, dropping the record of nodes the registry reports removed.
//!
//! ```
//! use micro::selector::{Filter, Selector, Strategy};
//! use micro::registry::{Node, ServiceRecord};
//! let mut svc = ServiceRecord::new("go.micro.srv.greeter", "1.0.0");
//! for id in ["a", "b"] {
//!     svc.nodes.push(Node { id: id.into(), address: format!("micro.node.{id}"), ..Default::default() });
//! }
//! let selector = Selector::new(Strategy::RoundRobin);
//! let first = selector.select(std::slice::from_ref(&svc), &Filter::default()).unwrap();
//! selector.failed(&first.node_id);
//! // the failed node is out until its backoff passes
//! for _ in 0..4 {
//!     let next = selector.select(std::slice::from_ref(&svc), &Filter::default()).unwrap();
//!     assert_ne!(next.node_id, first.node_id);
//! }
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::registry::{Node, Registry, ServiceRecord, WatchAction, WatchEvent};

/// How a node is chosen among the eligible ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Strategy {
    /// Uniformly at random (default).
    #[default]
    Random,
    /// In turn.
    RoundRobin,
}

/// Which nodes are eligible: a version and metadata labels that must all match.
///
/// ```
/// let f = micro::selector::Filter::default().version("2.0.0").label("zone", "eu");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Filter {
    pub(crate) version: Option<String>,
    pub(crate) labels: Vec<(String, String)>,
}

impl Filter {
    /// Only nodes of this service version.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Only nodes whose metadata (node's, or else the service's) has `key = value`.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.push((key.into(), value.into()));
        self
    }

    /// True when the filter lets everything through.
    pub fn is_empty(&self) -> bool {
        self.version.is_none() && self.labels.is_empty()
    }

    /// Adds the other filter's conditions to this one.
    pub(crate) fn and(&self, other: &Filter) -> Filter {
        let mut f = self.clone();
        if other.version.is_some() {
            f.version = other.version.clone();
        }
        f.labels.extend(other.labels.iter().cloned());
        f
    }

    fn version_ok(&self, s: &ServiceRecord) -> bool {
        self.version.as_ref().is_none_or(|v| *v == s.version)
    }

    fn node_ok(&self, s: &ServiceRecord, n: &Node) -> bool {
        self.labels.iter().all(|(k, v)| n.metadata.get(k).or_else(|| s.metadata.get(k)).is_some_and(|x| x == v))
    }
}

/// False for a node whose health checks fail (`health: unhealthy` in its metadata): selectors
/// skip it until it announces that they pass again.
fn serving(n: &Node) -> bool {
    n.metadata.get("health").is_none_or(|h| h != "unhealthy")
}

/// Backoff of blacklisted nodes: `base` after the first failure, doubling up to `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Blacklist {
    base: Duration,
    max: Duration,
}

impl Blacklist {
    /// A blacklist with these bounds.
    pub fn new(base: Duration, max: Duration) -> Blacklist {
        Blacklist { base, max: max.max(base) }
    }
}

impl Default for Blacklist {
    /// 1 s, doubling to 30 s.
    fn default() -> Self {
        Blacklist::new(Duration::from_secs(1), Duration::from_secs(30))
    }
}

/// The node a call goes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selected {
    /// Node id (report outcomes with it).
    pub node_id: String,
    /// The node's subject.
    pub address: String,
    /// The service version the node runs.
    pub version: String,
}

#[derive(Debug)]
struct Penalty {
    until: Instant,
    failures: u32,
}

#[derive(Debug)]
struct Inner {
    strategy: Strategy,
    blacklist: Blacklist,
    turn: AtomicUsize,
    any_penalty: AtomicBool,
    penalties: Mutex<HashMap<String, Penalty>>,
    /// The process-wide blacklist gauge: this selector adds its entries to it.
    blacklisted: metrics::Gauge,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.blacklisted.decrement(self.penalties.get_mut().len() as f64);
    }
}

/// A selector handle. Cheap to clone; clones share their blacklist. A client picks a node per
/// call with it; a failed node sits out for a while.
///
/// ```
/// use micro::registry::{Node, ServiceRecord};
/// use micro::selector::{Filter, Selector, Strategy};
///
/// let mut record = ServiceRecord::new("go.micro.srv.greeter", "1.0.0");
/// for id in ["a", "b"] {
///     record.nodes.push(Node { id: id.into(), address: format!("micro.node.{id}"), metadata: Default::default() });
/// }
/// let selector = Selector::new(Strategy::RoundRobin);
/// let first = selector.select(&[record.clone()], &Filter::default()).unwrap();
/// selector.failed(&first.node_id); // blacklisted: the next picks skip it
/// for _ in 0..3 {
///     let next = selector.select(&[record.clone()], &Filter::default()).unwrap();
///     assert_ne!(next.node_id, first.node_id);
/// }
/// assert!(selector.select(&[record], &Filter::default().version("2.0.0")).is_none());
/// ```
#[derive(Clone, Debug)]
pub struct Selector {
    inner: Arc<Inner>,
}

impl Default for Selector {
    fn default() -> Self {
        Selector::new(Strategy::default())
    }
}

impl Selector {
    /// A selector with a strategy and the default blacklist.
    pub fn new(strategy: Strategy) -> Selector {
        Selector::with_blacklist(strategy, Blacklist::default())
    }

    /// A selector with a strategy and blacklist bounds.
    pub fn with_blacklist(strategy: Strategy, blacklist: Blacklist) -> Selector {
        Selector {
            inner: Arc::new(Inner {
                strategy,
                blacklist,
                turn: AtomicUsize::new(0),
                any_penalty: AtomicBool::new(false),
                penalties: Mutex::new(HashMap::new()),
                blacklisted: metrics::gauge!(crate::metrics::names::SELECTOR_BLACKLISTED),
            }),
        }
    }

    /// The strategy.
    pub fn strategy(&self) -> Strategy {
        self.inner.strategy
    }

    /// Picks a node among `services`' nodes that pass `filter`, skipping blacklisted ones.
    /// If every eligible node is blacklisted, the one whose backoff ends first is tried, so a
    /// service whose nodes all failed briefly is not cut off for the whole backoff.
    pub fn select(&self, services: &[ServiceRecord], filter: &Filter) -> Option<Selected> {
        self.pick(services, filter).map(|(s, n)| Selected {
            node_id: n.id.clone(),
            address: n.address.clone(),
            version: s.version.clone(),
        })
    }

    /// [`select`](Self::select) without copying: the chosen record and node.
    pub(crate) fn pick<'a>(
        &self,
        services: &'a [ServiceRecord],
        filter: &Filter,
    ) -> Option<(&'a ServiceRecord, &'a Node)> {
        let eligible = || {
            services
                .iter()
                .filter(|s| filter.version_ok(s))
                .flat_map(|s| s.nodes.iter().filter(|n| filter.node_ok(s, n) && serving(n)).map(move |n| (s, n)))
        };
        let penalties =
            if self.inner.any_penalty.load(Ordering::Relaxed) { Some(self.inner.penalties.lock()) } else { None };
        // The clock is read only when some node is blacklisted.
        let now = penalties.as_ref().map(|_| Instant::now());
        let healthy =
            |n: &Node| penalties.as_ref().zip(now).is_none_or(|(p, now)| p.get(&n.id).is_none_or(|p| p.until <= now));
        let count = eligible().filter(|(_, n)| healthy(n)).count();
        let chosen = if count > 0 {
            let k = match self.inner.strategy {
                _ if count == 1 => 0,
                Strategy::Random => rand::random_range(0..count),
                Strategy::RoundRobin => self.inner.turn.fetch_add(1, Ordering::Relaxed) % count,
            };
            eligible().filter(|(_, n)| healthy(n)).nth(k)
        } else {
            let p = penalties.as_ref()?;
            eligible().min_by_key(|(_, n)| p.get(&n.id).map(|p| p.until))
        };
        chosen
    }

    /// Reports a transport-level failure of a call to this node: it is blacklisted now.
    pub fn failed(&self, node_id: &str) {
        let mut p = self.inner.penalties.lock();
        if !p.contains_key(node_id) {
            self.inner.blacklisted.increment(1.0);
        }
        let entry = p.entry(node_id.to_string()).or_insert(Penalty { until: Instant::now(), failures: 0 });
        entry.failures = entry.failures.saturating_add(1);
        let backoff = self
            .inner
            .blacklist
            .base
            .saturating_mul(1u32 << (entry.failures - 1).min(16))
            .min(self.inner.blacklist.max);
        entry.until = Instant::now() + backoff;
        tracing::debug!(node = node_id, failures = entry.failures, ?backoff, "node blacklisted");
        self.inner.any_penalty.store(true, Ordering::Relaxed);
    }

    /// Reports a call that reached this node: it is forgiven.
    pub fn succeeded(&self, node_id: &str) {
        if !self.inner.any_penalty.load(Ordering::Relaxed) {
            return;
        }
        let mut p = self.inner.penalties.lock();
        if p.remove(node_id).is_some() {
            tracing::debug!(node = node_id, "node answered again: off the blacklist");
            self.inner.blacklisted.decrement(1.0);
            if p.is_empty() {
                self.inner.any_penalty.store(false, Ordering::Relaxed);
            }
        }
    }

    /// True while a node is excluded.
    pub fn is_blacklisted(&self, node_id: &str) -> bool {
        self.inner.penalties.lock().get(node_id).is_some_and(|p| p.until > Instant::now())
    }

    fn forget(&self, node_id: &str) {
        let mut p = self.inner.penalties.lock();
        if p.remove(node_id).is_some() {
            self.inner.blacklisted.decrement(1.0);
            if p.is_empty() {
                self.inner.any_penalty.store(false, Ordering::Relaxed);
            }
        }
    }

    /// Forgets penalties that ended long ago (the node may have recovered or gone).
    fn prune(&self) {
        let horizon = self.inner.blacklist.max * 2;
        let now = Instant::now();
        let mut p = self.inner.penalties.lock();
        let before = p.len();
        p.retain(|_, pen| pen.until + horizon > now);
        self.inner.blacklisted.decrement((before - p.len()) as f64);
        if p.is_empty() {
            self.inner.any_penalty.store(false, Ordering::Relaxed);
        }
    }
}

/// Keeps a [`Selector`]'s blacklist in step with the registry: removed nodes are forgotten,
/// stale penalties pruned.
#[derive(Debug)]
pub struct SelectorActor {
    selector: Selector,
}

impl SelectorActor {
    /// Starts the actor on the current arbiter, fed by the registry's watch.
    pub async fn start(selector: Selector, registry: &Registry) -> crate::Result<Addr<SelectorActor>> {
        let watch = registry.watch().await?;
        Ok(SelectorActor::create(|ctx| {
            ctx.add_stream(watch);
            SelectorActor { selector }
        }))
    }
}

impl Actor for SelectorActor {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(Duration::from_secs(5), |act, _| act.selector.prune());
    }
}

impl StreamHandler<WatchEvent> for SelectorActor {
    fn handle(&mut self, ev: WatchEvent, _ctx: &mut Context<Self>) {
        if matches!(ev.action, WatchAction::Removed | WatchAction::Added) {
            for n in &ev.service.nodes {
                self.selector.forget(&n.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(version: &str, ids: &[&str]) -> ServiceRecord {
        let mut s = ServiceRecord::new("s", version);
        for id in ids {
            let mut n = Node { id: id.to_string(), address: format!("micro.node.{id}"), ..Default::default() };
            n.metadata.insert("zone".into(), if id.starts_with('e') { "eu" } else { "us" }.into());
            s.nodes.push(n);
        }
        s
    }

    #[test]
    fn round_robin_visits_every_node() {
        let s = [svc("1", &["a", "b", "c"])];
        let sel = Selector::new(Strategy::RoundRobin);
        let mut seen: Vec<String> = (0..3).map(|_| sel.select(&s, &Filter::default()).unwrap().node_id).collect();
        seen.sort();
        assert_eq!(seen, ["a", "b", "c"]);
    }

    #[test]
    fn filters_by_version_and_label() {
        let s = [svc("1", &["a", "e1"]), svc("2", &["b", "e2"])];
        let sel = Selector::default();
        for _ in 0..20 {
            let n = sel.select(&s, &Filter::default().version("2").label("zone", "eu")).unwrap();
            assert_eq!(n.node_id, "e2");
        }
        assert!(sel.select(&s, &Filter::default().version("3")).is_none());
    }

    #[test]
    fn blacklisted_nodes_are_skipped_until_all_are() {
        let s = [svc("1", &["a", "b"])];
        let sel = Selector::new(Strategy::Random);
        sel.failed("a");
        for _ in 0..50 {
            assert_eq!(sel.select(&s, &Filter::default()).unwrap().node_id, "b");
        }
        sel.failed("b");
        sel.failed("b");
        // all out: the one back soonest is probed
        assert_eq!(sel.select(&s, &Filter::default()).unwrap().node_id, "a");
        sel.succeeded("a");
        assert!(!sel.is_blacklisted("a"));
    }
}
