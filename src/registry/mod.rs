//! The registry: who serves what, where. [`Registry`] is a cheap handle over a
//! [`RegistryActor`] that gossips over any transport: nodes **announce** themselves on start
//! and on every **heartbeat**, records **expire** when their TTL passes without one, nodes
//! **deregister** on shutdown, and a starting registry **discovers** running nodes at once by
//! asking them to answer to its inbox. **Watch** streams the changes.
//!
//! Over a broker the registry follows the connection: nothing expires while it is down (no
//! heartbeat could arrive), and when it is restored our nodes announce themselves and the
//! registry discovers again at once. A lookup of a service it does not know asks that
//! service's nodes before it answers that there are none.
//!
//! Over `memory://` the gossip stays inside the process: that is the memory registry for a
//! single process. Over `nats://` it spans every process on the server or cluster.
//!
//! ```
//! # #[actix::main] async fn main() -> micro::Result<()> {
//! use micro::registry::{Registry, RegistryOptions};
//! let t = micro::transport::connect("memory://registry-doc").await?;
//! let registry = Registry::start(t, RegistryOptions::default()).await?;
//! assert!(registry.get_service("go.micro.srv.nobody").await?.is_empty());
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use arc_swap::ArcSwap;
use futures::Stream;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, ErrorKind, Result};
use crate::transport::Transport;

mod actor;
pub mod nats_micro;
mod record;

pub use actor::RegistryActor;
#[doc(hidden)] // the gossip messages, documented in `micro::dev`
pub use record::{Action, Announcement, Discover};
pub use record::{Endpoint, Node, ServiceRecord, WatchAction, WatchEvent};

/// Registry timings.
///
/// ```
/// use std::time::Duration;
/// let o = micro::registry::RegistryOptions::default()
///     .ttl(Duration::from_secs(6))
///     .heartbeat(Duration::from_secs(2));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RegistryOptions {
    pub(crate) ttl: Duration,
    pub(crate) heartbeat: Duration,
    pub(crate) discover_window: Duration,
    pub(crate) discover_known: bool,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            ttl: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
            discover_window: Duration::from_millis(300),
            discover_known: false,
        }
    }
}

impl RegistryOptions {
    /// How long our records stay valid at others without a heartbeat (default 30 s).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How often our nodes re-announce (default 10 s; keep it well under the TTL).
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every;
        self
    }

    /// How long after start (or a reconnect) the registry waits for discovery answers before it
    /// treats an unknown service as absent, and how long a lookup of an unknown service waits
    /// for its nodes to answer a discovery request for it (default 300 ms). A lookup of a
    /// service that answers returns as soon as its first node does.
    pub fn discover_window(mut self, window: Duration) -> Self {
        self.discover_window = window;
        self
    }

    /// Discovery asks every registry for every record it holds, not only for its own nodes
    /// (default false). A tool (`micro health`) then also learns of nodes that are registered
    /// but do not answer, hung or paused, for as long as their records live elsewhere.
    pub fn discover_known(mut self, yes: bool) -> Self {
        self.discover_known = yes;
        self
    }
}

/// Services by name, each with one record per version. Read without a message to the actor.
/// Read on every call (`Registry::cached`): hashed with foldhash, seeded per map, rather than
/// SipHash.
pub(crate) type Snapshot = HashMap<String, Arc<Vec<ServiceRecord>>, foldhash::fast::RandomState>;

/// A handle to a running [`RegistryActor`]. Cheap to clone. Every client and service has one
/// (`client.registry()`); start your own for a tool that only watches.
///
/// ```
/// use micro::prelude::*;
/// use micro::registry::WatchAction;
/// use futures::StreamExt;
///
/// # #[micro::main] async fn main() -> micro::Result<()> {
/// let client = Client::connect("memory://registry-handle-doc").await?;
/// let mut changes = client.registry().watch().await?;
/// let svc = Service::builder("go.micro.srv.watched").transport("memory://registry-handle-doc").start().await?;
/// let change = changes.next().await.unwrap();
/// assert_eq!((change.action, change.service.name.as_str()), (WatchAction::Added, "go.micro.srv.watched"));
/// let records = client.registry().get_service("go.micro.srv.watched").await?;
/// assert_eq!(records[0].nodes[0].id, svc.node_id());
/// svc.stop().await
/// # }
/// ```
#[derive(Clone)]
pub struct Registry {
    addr: Addr<RegistryActor>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    synced: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("services", &self.snapshot.load().len()).finish()
    }
}

fn gone(_: MailboxError) -> Error {
    Error::new(ErrorKind::Unavailable, "the registry actor has stopped")
}

impl Registry {
    /// Starts a registry actor gossiping over `transport` on the current arbiter, and sends a
    /// discovery request.
    pub async fn start(transport: Arc<dyn Transport>, options: RegistryOptions) -> Result<Registry> {
        let snapshot = Arc::new(ArcSwap::from_pointee(Snapshot::default()));
        let synced = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let addr = RegistryActor::start_with(transport, options, snapshot.clone(), synced.clone()).await?;
        Ok(Registry { addr, snapshot, synced })
    }

    /// Announces a service node (a record with exactly one node) now and on every heartbeat
    /// until it is deregistered. Resolves once the announcement is sent.
    pub async fn register(&self, service: ServiceRecord) -> Result<()> {
        if service.nodes.len() != 1 {
            return Err(Error::config("register takes a service record with exactly one node"));
        }
        self.addr.send(actor::Register(service)).await.map_err(gone)?
    }

    /// Deregisters one of our nodes: announces its removal and stops its heartbeat.
    pub async fn deregister(&self, node_id: &str) -> Result<()> {
        self.addr.send(actor::Deregister(node_id.to_string())).await.map_err(gone)?
    }

    /// The records of a service, one per version. Right after start this waits for discovery
    /// answers (at most the discovery window), so a fresh client sees running services at once;
    /// later, a service it does not know is asked for (again at most the window).
    pub async fn get_service(&self, name: &str) -> Result<Vec<ServiceRecord>> {
        if let Some(found) = self.cached(name) {
            return Ok(found.as_ref().clone());
        }
        let rx = self.addr.send(actor::Await { name: Some(name.to_string()) }).await.map_err(gone)?;
        let _ = rx.await;
        Ok(self.cached(name).map(|s| s.as_ref().clone()).unwrap_or_default())
    }

    /// Every known service, one record per name and version. Waits for the discovery window
    /// right after start.
    pub async fn list_services(&self) -> Result<Vec<ServiceRecord>> {
        let rx = self.addr.send(actor::Await { name: None }).await.map_err(gone)?;
        let _ = rx.await;
        let snap = self.snapshot.load();
        let mut all: Vec<ServiceRecord> = snap.values().flat_map(|v| v.iter().cloned()).collect();
        all.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
        Ok(all)
    }

    /// True once the first discovery window has ended: what running nodes answered is known.
    /// (A gateway is not ready before.)
    pub fn is_synced(&self) -> bool {
        self.synced.load(std::sync::atomic::Ordering::Acquire)
    }

    /// A stream of changes from now on.
    pub async fn watch(&self) -> Result<Watcher> {
        let rx = self.addr.send(actor::Watch).await.map_err(gone)?;
        Ok(Watcher(rx))
    }

    /// Stops the actor (without deregistering anything).
    pub fn stop(&self) {
        self.addr.do_send(actor::Stop);
    }

    /// What the registry knows about a service now, without waiting.
    pub(crate) fn cached(&self, name: &str) -> Option<Arc<Vec<ServiceRecord>>> {
        self.snapshot.load().get(name).cloned()
    }

    pub(crate) async fn settled(&self, name: &str) -> Result<()> {
        let rx = self.addr.send(actor::Await { name: Some(name.to_string()) }).await.map_err(gone)?;
        let _ = rx.await;
        Ok(())
    }
}

/// A stream of [`WatchEvent`]s.
#[derive(Debug)]
pub struct Watcher(mpsc::UnboundedReceiver<WatchEvent>);

impl Stream for Watcher {
    type Item = WatchEvent;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<WatchEvent>> {
        self.0.poll_recv(cx)
    }
}

pub(crate) type Waiter = oneshot::Sender<()>;
