//! The registry actor: owns the record cache, our own registrations, heartbeats, expiry,
//! discovery and watchers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use arc_swap::ArcSwap;
use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::record::{Action, Announcement, Discover, ServiceRecord, WatchAction, WatchEvent};
use super::{RegistryOptions, Snapshot, Waiter};
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::message::{headers, Headers, Message};
use crate::subject;
use crate::transport::{ConnectionState, Incoming, Transport};

struct Entry {
    service: ServiceRecord,
    expires: Instant,
    ttl: Duration,
}

/// The actor behind [`Registry`](super::Registry). Start it with `Registry::start`.
pub struct RegistryActor {
    transport: Arc<dyn Transport>,
    options: RegistryOptions,
    inbox: String,
    /// name -> node id -> record with that one node
    cache: HashMap<String, HashMap<String, Entry>>,
    /// our own nodes, by id
    local: HashMap<String, ServiceRecord>,
    watchers: Vec<mpsc::UnboundedSender<WatchEvent>>,
    snapshot: Arc<ArcSwap<Snapshot>>,
    /// False during a discovery window: at start, and after the connection came back.
    settled: bool,
    /// Counts discovery windows, so that only the last one to end settles.
    round: u64,
    waiters: Vec<(Option<String>, Waiter)>,
    /// Services a caller asked for that we did not know, until when we do not ask again.
    asked: HashMap<String, Instant>,
    /// The transport's connection: while it is down no heartbeat can arrive, so nothing expires.
    connection: ConnectionState,
    /// The process-wide size gauges, and what this registry added to them.
    sizes: crate::metrics::Sizes,
    counted: (usize, usize),
    /// Set once the first discovery window ended.
    synced: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for RegistryActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryActor").field("services", &self.cache.len()).field("local", &self.local.len()).finish()
    }
}

pub(super) struct Register(pub(super) ServiceRecord);
impl actix::Message for Register {
    type Result = Result<()>;
}

pub(super) struct Deregister(pub(super) String);
impl actix::Message for Deregister {
    type Result = Result<()>;
}

pub(super) struct Await {
    pub(super) name: Option<String>,
}
impl actix::Message for Await {
    type Result = oneshot::Receiver<()>;
}

pub(super) struct Watch;
impl actix::Message for Watch {
    type Result = mpsc::UnboundedReceiver<WatchEvent>;
}

pub(super) struct Stop;
impl actix::Message for Stop {
    type Result = ();
}

fn encode<T: Serialize>(value: &T) -> Result<Message> {
    let mut h = Headers::with_capacity(1);
    h.push(headers::CONTENT_TYPE, Codec::MsgPack.content_type());
    Ok(Message::with_headers(h, Codec::MsgPack.encode(value)?))
}

fn decode<T: DeserializeOwned>(m: &Message) -> Result<T> {
    let codec = match m.headers.get(headers::CONTENT_TYPE) {
        None => Codec::sniff(&m.body),
        Some(ct) => {
            Codec::from_content_type(ct).ok_or_else(|| Error::codec(format!("unsupported content type {ct}")))?
        }
    };
    codec.decode(&m.body)
}

impl RegistryActor {
    pub(super) async fn start_with(
        transport: Arc<dyn Transport>,
        options: RegistryOptions,
        snapshot: Arc<ArcSwap<Snapshot>>,
        synced: Arc<std::sync::atomic::AtomicBool>,
    ) -> Result<Addr<RegistryActor>> {
        let inbox = format!("{}{}", subject::REGISTRY_INBOX_PREFIX, uuid::Uuid::now_v7().simple());
        let announce = transport.subscribe(subject::REGISTRY_ANNOUNCE, None).await?;
        let discover = transport.subscribe(subject::REGISTRY_DISCOVER, None).await?;
        let answers = transport.subscribe(&inbox, None).await?;
        let states = transport.connection();
        let connection =
            states.as_ref().map_or(ConnectionState { connected: true, ..Default::default() }, |rx| *rx.borrow());
        // Make sure the server has our subscriptions before anyone answers the discovery.
        transport.flush().await?;
        let request = encode(&Discover { service: None, reply: inbox.clone(), known: options.discover_known })?;
        let addr = RegistryActor::create(|ctx| {
            ctx.add_stream(announce);
            ctx.add_stream(discover);
            ctx.add_stream(answers);
            if let Some(rx) = states {
                // Each change of the connection, as a message; ends with the transport.
                let changes = futures::stream::unfold(rx, |mut rx| async move {
                    rx.changed().await.ok()?;
                    let state = *rx.borrow_and_update();
                    Some((ConnectionChanged(state), rx))
                });
                ctx.add_message_stream(changes);
            }
            RegistryActor {
                transport: transport.clone(),
                options,
                inbox,
                cache: HashMap::new(),
                local: HashMap::new(),
                watchers: Vec::new(),
                snapshot,
                settled: false,
                round: 0,
                waiters: Vec::new(),
                asked: HashMap::new(),
                connection,
                sizes: crate::metrics::Sizes::new(),
                counted: (0, 0),
                synced,
            }
        });
        transport.publish(subject::REGISTRY_DISCOVER, request).await?;
        addr.do_send(Settle);
        Ok(addr)
    }

    fn publish(&self, ctx: &mut Context<Self>, subject: String, message: Message) {
        let t = self.transport.clone();
        ctx.spawn(
            async move {
                if let Err(e) = t.publish(&subject, message).await {
                    tracing::warn!(error = %e, subject, "registry publish failed");
                }
            }
            .into_actor(self),
        );
    }

    fn announcement(&self, action: Action, service: &ServiceRecord) -> Announcement {
        Announcement { action, ttl: self.options.ttl.as_millis() as u64, service: service.clone() }
    }

    fn apply(&mut self, a: Announcement) {
        let Some(node) = a.service.nodes.first() else {
            return;
        };
        let name = a.service.name.clone();
        let node_id = node.id.clone();
        match a.action {
            Action::Register => {
                let ttl = Duration::from_millis(a.ttl.max(1000));
                let nodes = self.cache.entry(name.clone()).or_default();
                let event = match nodes.get_mut(&node_id) {
                    None => {
                        let expires = Instant::now() + ttl;
                        nodes.insert(node_id, Entry { service: a.service.clone(), expires, ttl });
                        Some(WatchAction::Added)
                    }
                    Some(entry) => {
                        entry.expires = Instant::now() + ttl;
                        entry.ttl = ttl;
                        if entry.service != a.service {
                            entry.service = a.service.clone();
                            Some(WatchAction::Updated)
                        } else {
                            None
                        }
                    }
                };
                if let Some(action) = event {
                    tracing::debug!(service = %name, node = %node.id, ?action, "registry: node announced");
                    self.rebuild(&name);
                    self.notify(action, a.service);
                }
                self.wake(&name);
            }
            Action::Deregister => {
                let removed = self.cache.get_mut(&name).and_then(|nodes| nodes.remove(&node_id));
                if let Some(entry) = removed {
                    tracing::debug!(service = %name, node = %node_id, "registry: node deregistered");
                    self.rebuild(&name);
                    self.notify(WatchAction::Removed, entry.service);
                }
            }
        }
    }

    /// Rebuilds the snapshot entry of one service: its nodes grouped by version.
    fn rebuild(&mut self, name: &str) {
        let mut versions: Vec<ServiceRecord> = Vec::new();
        if let Some(nodes) = self.cache.get(name) {
            let mut entries: Vec<&Entry> = nodes.values().collect();
            entries.sort_by(|a, b| a.service.nodes[0].id.cmp(&b.service.nodes[0].id));
            for e in entries {
                match versions.iter_mut().find(|v| v.version == e.service.version) {
                    Some(v) => v.nodes.extend(e.service.nodes.iter().cloned()),
                    None => versions.push(e.service.clone()),
                }
            }
        }
        if versions.is_empty() {
            self.cache.remove(name);
        }
        let mut snap = Snapshot::clone(&self.snapshot.load());
        if versions.is_empty() {
            snap.remove(name);
        } else {
            snap.insert(name.to_string(), Arc::new(versions));
        }
        let nodes = snap.values().flat_map(|v| v.iter()).map(|s| s.nodes.len()).sum::<usize>();
        self.count((snap.len(), nodes));
        self.snapshot.store(Arc::new(snap));
    }

    /// Moves the size gauges by the change of what this registry holds.
    fn count(&mut self, now: (usize, usize)) {
        let (services, nodes) = self.counted;
        self.sizes.services.increment(now.0 as f64 - services as f64);
        self.sizes.nodes.increment(now.1 as f64 - nodes as f64);
        self.counted = now;
    }

    fn notify(&mut self, action: WatchAction, service: ServiceRecord) {
        self.watchers.retain(|w| w.send(WatchEvent { action, service: service.clone() }).is_ok());
    }

    fn wake(&mut self, name: &str) {
        let waiters = std::mem::take(&mut self.waiters);
        for (want, tx) in waiters {
            if want.as_deref() == Some(name) {
                let _ = tx.send(());
            } else {
                self.waiters.push((want, tx));
            }
        }
    }

    fn expire(&mut self) {
        let now = Instant::now();
        self.asked.retain(|_, until| *until > now);
        if !self.connection.connected {
            // No heartbeat can reach us now: silence says nothing about the nodes.
            return;
        }
        let mut gone = Vec::new();
        for (name, nodes) in &self.cache {
            for (id, e) in nodes {
                if e.expires <= now && !self.local.contains_key(id) {
                    gone.push((name.clone(), id.clone()));
                }
            }
        }
        for (name, id) in gone {
            if let Some(e) = self.cache.get_mut(&name).and_then(|n| n.remove(&id)) {
                tracing::info!(service = %name, node = %id, "registry record expired");
                self.rebuild(&name);
                self.notify(WatchAction::Removed, e.service);
            }
        }
    }

    fn heartbeat(&mut self, ctx: &mut Context<Self>) {
        let records: Vec<ServiceRecord> = self.local.values().cloned().collect();
        if !records.is_empty() {
            tracing::trace!(services = records.len(), "registry: heartbeat");
        }
        for s in records {
            if let Ok(m) = encode(&self.announcement(Action::Register, &s)) {
                self.publish(ctx, subject::REGISTRY_ANNOUNCE.to_string(), m);
            }
        }
    }

    /// Asks every node (of `service`, or of all) to answer to our inbox, and starts a discovery
    /// window: until it ends (or the service answers), lookups of unknown services wait.
    fn discover(&mut self, ctx: &mut Context<Self>, service: Option<String>) {
        let known = self.options.discover_known;
        tracing::debug!(service = ?service, known, "registry: discovering");
        if let Ok(m) = encode(&Discover { service: service.clone(), reply: self.inbox.clone(), known }) {
            self.publish(ctx, subject::REGISTRY_DISCOVER.to_string(), m);
        }
        let window = self.options.discover_window;
        match service {
            None => self.unsettle(ctx),
            // Only the callers of this service wait, at most the window.
            Some(name) => {
                self.asked.insert(name.clone(), Instant::now() + window * 2);
                ctx.run_later(window, move |act, _| {
                    act.wake(&name);
                });
            }
        }
    }

    /// Starts a discovery window.
    fn unsettle(&mut self, ctx: &mut Context<Self>) {
        self.settled = false;
        self.round += 1;
        let round = self.round;
        ctx.run_later(self.options.discover_window, move |act, _| {
            if act.round == round {
                act.settled = true;
                act.synced.store(true, std::sync::atomic::Ordering::Release);
                for (_, tx) in act.waiters.drain(..) {
                    let _ = tx.send(());
                }
            }
        });
    }

    /// The connection went down or came back. Back after a loss: the records kept meanwhile
    /// get a fresh TTL, our nodes announce themselves at once and we ask who is there, so that
    /// neither side waits for the next heartbeat.
    fn connection_changed(&mut self, ctx: &mut Context<Self>, state: ConnectionState) {
        let restored = state.connected && state.reconnects > self.connection.reconnects;
        self.connection = state;
        if !restored {
            return;
        }
        tracing::info!(reconnects = state.reconnects, "connection restored: announcing and rediscovering");
        let now = Instant::now();
        for nodes in self.cache.values_mut() {
            for e in nodes.values_mut() {
                e.expires = e.expires.max(now + e.ttl);
            }
        }
        self.heartbeat(ctx);
        self.discover(ctx, None);
    }

    fn answer_discover(&mut self, ctx: &mut Context<Self>, d: Discover) {
        if d.reply == self.inbox || !subject::is_valid(&d.reply, false) {
            return;
        }
        let wanted = |name: &str| d.service.as_ref().is_none_or(|n| n == name);
        let announcements: Vec<Announcement> = if d.known {
            // Every record we hold, each with what is left of its TTL.
            let now = Instant::now();
            let remaining = |e: &Entry| e.expires.saturating_duration_since(now).as_millis() as u64;
            self.cache
                .iter()
                .filter(|(name, _)| wanted(name))
                .flat_map(|(_, nodes)| nodes.values())
                .map(|e| Announcement {
                    action: Action::Register,
                    ttl: remaining(e).max(1000),
                    service: e.service.clone(),
                })
                .collect()
        } else {
            self.local.values().filter(|s| wanted(&s.name)).map(|s| self.announcement(Action::Register, s)).collect()
        };
        if !announcements.is_empty() {
            tracing::debug!(asked = ?d.service, answers = announcements.len(), known = d.known, "registry: answering a discovery");
        }
        for a in announcements {
            if let Ok(m) = encode(&a) {
                self.publish(ctx, d.reply.clone(), m);
            }
        }
    }
}

/// Starts the first discovery window (the request is already sent).
struct Settle;
impl actix::Message for Settle {
    type Result = ();
}

impl Handler<Settle> for RegistryActor {
    type Result = ();
    fn handle(&mut self, _: Settle, ctx: &mut Context<Self>) {
        self.unsettle(ctx);
    }
}

struct ConnectionChanged(ConnectionState);
impl actix::Message for ConnectionChanged {
    type Result = ();
}

impl Handler<ConnectionChanged> for RegistryActor {
    type Result = ();
    fn handle(&mut self, ConnectionChanged(state): ConnectionChanged, ctx: &mut Context<Self>) {
        self.connection_changed(ctx, state);
    }
}

impl Actor for RegistryActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.options.heartbeat, |act, ctx| act.heartbeat(ctx));
        let tick = (self.options.ttl / 10).clamp(Duration::from_millis(100), Duration::from_secs(1));
        ctx.run_interval(tick, |act, _| act.expire());
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.count((0, 0));
    }
}

impl StreamHandler<Incoming> for RegistryActor {
    fn handle(&mut self, incoming: Incoming, ctx: &mut Context<Self>) {
        if incoming.subject == subject::REGISTRY_DISCOVER {
            match decode::<Discover>(&incoming.message) {
                Ok(d) => self.answer_discover(ctx, d),
                Err(e) => tracing::debug!(error = %e, "malformed discovery request ignored"),
            }
            return;
        }
        match decode::<Announcement>(&incoming.message) {
            Ok(a) if a.service.nodes.len() == 1 && !a.service.name.is_empty() => self.apply(a),
            Ok(_) => tracing::debug!("announcement without exactly one node ignored"),
            Err(e) => tracing::debug!(error = %e, "malformed announcement ignored"),
        }
    }

    fn finished(&mut self, _ctx: &mut Context<Self>) {
        // A subscription ended (the transport is closing); keep what we know.
        tracing::debug!("registry subscription ended");
    }
}

impl Handler<Register> for RegistryActor {
    type Result = ResponseFuture<Result<()>>;
    fn handle(&mut self, Register(service): Register, _ctx: &mut Context<Self>) -> Self::Result {
        let id = service.nodes[0].id.clone();
        self.local.insert(id, service.clone());
        let announcement = self.announcement(Action::Register, &service);
        self.apply(announcement.clone());
        let t = self.transport.clone();
        Box::pin(async move { t.publish(subject::REGISTRY_ANNOUNCE, encode(&announcement)?).await })
    }
}

impl Handler<Deregister> for RegistryActor {
    type Result = ResponseFuture<Result<()>>;
    fn handle(&mut self, Deregister(id): Deregister, _ctx: &mut Context<Self>) -> Self::Result {
        let Some(service) = self.local.remove(&id) else {
            return Box::pin(async { Ok(()) });
        };
        let announcement = self.announcement(Action::Deregister, &service);
        self.apply(announcement.clone());
        let t = self.transport.clone();
        Box::pin(async move {
            t.publish(subject::REGISTRY_ANNOUNCE, encode(&announcement)?).await?;
            t.flush().await
        })
    }
}

impl Handler<Await> for RegistryActor {
    type Result = MessageResult<Await>;
    fn handle(&mut self, msg: Await, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        let known = msg.name.as_ref().is_some_and(|n| self.cache.contains_key(n));
        if known {
            let _ = tx.send(());
            return MessageResult(rx);
        }
        match msg.name {
            // A service we do not know: ask its nodes before the caller hears it is not there
            // (once per window; a second caller joins the first one's question).
            Some(name) if self.settled => {
                let asking = self.waiters.iter().any(|(w, _)| w.as_ref() == Some(&name));
                if asking {
                    self.waiters.push((Some(name), tx));
                } else if self.asked.get(&name).is_some_and(|until| *until > Instant::now())
                    || !self.connection.connected
                {
                    let _ = tx.send(());
                } else {
                    self.waiters.push((Some(name.clone()), tx));
                    self.discover(ctx, Some(name));
                }
            }
            Some(name) => self.waiters.push((Some(name), tx)),
            None if self.settled => {
                let _ = tx.send(());
            }
            None => self.waiters.push((None, tx)),
        }
        MessageResult(rx)
    }
}

impl Handler<Watch> for RegistryActor {
    type Result = MessageResult<Watch>;
    fn handle(&mut self, _: Watch, _ctx: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = mpsc::unbounded_channel();
        self.watchers.push(tx);
        MessageResult(rx)
    }
}

impl Handler<Stop> for RegistryActor {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}
