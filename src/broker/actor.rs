//! The broker actor: owns a service's event subscriptions (plain, group, broadcast, durable).
//!
//! It subscribes them at start and runs one `serve_loop` per subscription. A loop that ends or
//! dies while the service is not stopping is subscribed again with backoff and counted as a
//! restart of that subscription (and against the restart policy). On stop it lets the loops
//! drain (what the broker delivered is still handled) and says when they all have. It answers
//! what it holds: per subscription its counters and, for durable ones, what the broker still
//! holds for the group. Publishing does not go through it: [`Broker`](super::Broker) publishes
//! straight to the transport.

use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_rt::task::JoinHandle;
use tokio::sync::{oneshot, watch};

use super::{durable, subscribe_durable_events, subscribe_events, SubscribeOptions};
use crate::error::Result;
use crate::server::{serve_loop, Dispatch, Server, SubscriptionCounters, SubscriptionInfo};
use crate::transport::kit;
use crate::transport::Transport;

/// A loop that served this long before it ended starts again without the backoff it had built up.
const STABLE: Duration = Duration::from_secs(30);

/// How long `Debug.Stats` waits for the broker to say what a durable group holds.
const PENDING_TIMEOUT: Duration = Duration::from_secs(2);

/// A subscription a service declared: what it listens to, and its handler (middleware included).
pub(crate) struct Declared {
    pub(crate) topic: String,
    pub(crate) options: SubscribeOptions,
    pub(crate) endpoint: Rc<dyn Dispatch>,
}

/// A subscription the actor owns.
struct Owned {
    topic: String,
    options: SubscribeOptions,
    endpoint: Rc<dyn Dispatch>,
    counters: Arc<SubscriptionCounters>,
    /// Aborts the running loop; none while it is being subscribed again.
    abort: Option<tokio::task::AbortHandle>,
    since: Instant,
    backoff: backon::ExponentialBackoff,
}

impl Owned {
    /// Subscribes and spawns the serve loop: the future owns all it needs.
    fn open(
        &self,
        transport: &Arc<dyn Transport>,
        server: &Rc<Server>,
        stop: &watch::Receiver<bool>,
    ) -> impl Future<Output = Result<JoinHandle<()>>> + 'static {
        let (transport, server, stop) = (transport.clone(), server.clone(), stop.clone());
        let (topic, options, ep, counters) =
            (self.topic.clone(), self.options.clone(), self.endpoint.clone(), self.counters.clone());
        async move {
            if options.is_durable() {
                let sub = subscribe_durable_events(&transport, &topic, &options).await?;
                Ok(actix_rt::spawn(serve_loop(sub, stop, move |event| server.spawn_durable(&ep, &counters, event))))
            } else {
                let sub = subscribe_events(&transport, &topic, &options).await?;
                Ok(actix_rt::spawn(serve_loop(sub, stop, move |incoming| server.spawn_event(&ep, &counters, incoming))))
            }
        }
    }

    /// What the broker still holds for a durable group, where it can tell.
    fn pending(&self, transport: &Arc<dyn Transport>) -> impl Future<Output = Option<u64>> + 'static {
        let spec = match (&self.options.group, &self.options.durable) {
            (Some(group), Some(d)) if self.options.is_durable() => Some(durable::spec(&self.topic, group, d)),
            _ => None,
        };
        let transport = transport.clone();
        async move {
            let spec = spec?;
            match tokio::time::timeout(PENDING_TIMEOUT, transport.durable_pending(&spec)).await {
                Ok(Ok(pending)) => pending,
                Ok(Err(e)) => {
                    tracing::debug!(group = %spec.group, subject = %spec.subject, error = %e, "pending count unknown");
                    None
                }
                Err(_) => None,
            }
        }
    }
}

/// The actor behind a service's subscriptions. Started by `ServiceBuilder::start` on the
/// service's arbiter.
pub(crate) struct BrokerActor {
    transport: Arc<dyn Transport>,
    server: Rc<Server>,
    stop: watch::Receiver<bool>,
    subs: Vec<Owned>,
    /// Subscriptions whose loop runs or is being started again.
    live: usize,
    drained: Vec<oneshot::Sender<()>>,
}

impl std::fmt::Debug for BrokerActor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerActor").field("subscriptions", &self.subs.len()).field("live", &self.live).finish()
    }
}

impl Actor for BrokerActor {
    type Context = Context<Self>;
}

impl BrokerActor {
    /// Subscribes every declared subscription (an error fails the start, as a bad subscription
    /// should) and starts the actor that serves and supervises them.
    pub(crate) async fn start(
        transport: Arc<dyn Transport>,
        server: Rc<Server>,
        stop: watch::Receiver<bool>,
        declared: Vec<Declared>,
    ) -> Result<Addr<BrokerActor>> {
        let mut subs = Vec::with_capacity(declared.len());
        let mut loops = Vec::with_capacity(declared.len());
        for d in declared {
            let metrics =
                crate::metrics::SubscriptionMetrics::new(&server.info().service, &d.topic, d.options.is_durable());
            let owned = Owned {
                topic: d.topic,
                options: d.options,
                endpoint: d.endpoint,
                counters: Arc::new(SubscriptionCounters::with_metrics(metrics)),
                abort: None,
                since: Instant::now(),
                backoff: kit::reconnect_backoff(),
            };
            loops.push(owned.open(&transport, &server, &stop).await?);
            subs.push(owned);
        }
        Ok(BrokerActor::create(move |ctx| {
            let live = subs.len();
            let mut actor = BrokerActor { transport, server, stop, subs, live, drained: Vec::new() };
            for (i, l) in loops.into_iter().enumerate() {
                actor.watch(i, l, ctx);
            }
            actor
        }))
    }

    /// The service stops (or its handle was dropped without stopping it).
    fn is_stopping(&self) -> bool {
        *self.stop.borrow() || self.stop.has_changed().is_err()
    }

    /// Follows a running loop: when it ends, `ended` decides what comes next.
    fn watch(&mut self, i: usize, serving: JoinHandle<()>, ctx: &mut Context<Self>) {
        let sub = &mut self.subs[i];
        sub.abort = Some(serving.abort_handle());
        sub.since = Instant::now();
        ctx.spawn(serving.into_actor(self).map(move |ended, act, ctx| act.ended(i, ended, ctx)));
    }

    fn ended(&mut self, i: usize, ended: std::result::Result<(), actix_rt::task::JoinError>, ctx: &mut Context<Self>) {
        self.subs[i].abort = None;
        if self.is_stopping() {
            return self.done();
        }
        let sub = &mut self.subs[i];
        match ended {
            Ok(()) => tracing::warn!(topic = %sub.topic, "subscription ended; subscribing again"),
            Err(e) if e.is_panic() => {
                tracing::error!(topic = %sub.topic, "subscription loop panicked; subscribing again")
            }
            Err(_) => tracing::warn!(topic = %sub.topic, "subscription loop cancelled; subscribing again"),
        }
        self.server.record_loop_restart(&sub.counters);
        if sub.since.elapsed() >= STABLE {
            sub.backoff = kit::reconnect_backoff();
        }
        let delay = kit::next_delay(&mut sub.backoff);
        self.reopen(i, delay, ctx);
    }

    /// Subscribes again after `delay`, and again with backoff until it works or the service stops.
    fn reopen(&mut self, i: usize, delay: Duration, ctx: &mut Context<Self>) {
        let open = self.subs[i].open(&self.transport, &self.server, &self.stop);
        let mut stop = self.stop.clone();
        let attempt = async move {
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => return None,
                _ = tokio::time::sleep(delay) => {}
            }
            Some(open.await)
        };
        ctx.spawn(attempt.into_actor(self).map(move |opened, act, ctx| match opened {
            Some(Ok(serving)) => {
                tracing::info!(topic = %act.subs[i].topic, "subscription restarted");
                act.watch(i, serving, ctx);
            }
            Some(Err(e)) if !act.is_stopping() => {
                let delay = kit::next_delay(&mut act.subs[i].backoff);
                tracing::warn!(topic = %act.subs[i].topic, error = %e, ?delay, "subscribing again failed; will retry");
                act.reopen(i, delay, ctx);
            }
            _ => act.done(),
        }));
    }

    /// One subscription is done for good (the service stops).
    fn done(&mut self) {
        self.live = self.live.saturating_sub(1);
        if self.live == 0 {
            for tx in self.drained.drain(..) {
                let _ = tx.send(());
            }
        }
    }
}

/// Resolves once every subscription loop has drained and ended; send it after the stop watch
/// turned true.
pub(crate) struct Drained;
impl actix::Message for Drained {
    type Result = oneshot::Receiver<()>;
}

impl Handler<Drained> for BrokerActor {
    type Result = MessageResult<Drained>;
    fn handle(&mut self, _: Drained, _: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = oneshot::channel();
        if self.live == 0 {
            let _ = tx.send(());
        } else {
            self.drained.push(tx);
        }
        MessageResult(rx)
    }
}

/// What the actor holds: one entry per subscription, in the order they were declared.
pub(crate) struct Subscriptions;
impl actix::Message for Subscriptions {
    type Result = Vec<SubscriptionInfo>;
}

impl Handler<Subscriptions> for BrokerActor {
    type Result = ResponseFuture<Vec<SubscriptionInfo>>;
    fn handle(&mut self, _: Subscriptions, _: &mut Context<Self>) -> Self::Result {
        let pending: Vec<_> = self.subs.iter().map(|s| s.pending(&self.transport)).collect();
        let infos: Vec<_> = self
            .subs
            .iter()
            .map(|s| (s.topic.clone(), s.options.group.clone(), s.options.is_durable(), s.counters.clone()))
            .collect();
        Box::pin(async move {
            let pending = futures::future::join_all(pending).await;
            infos
                .into_iter()
                .zip(pending)
                .map(|((topic, group, durable, counters), pending)| {
                    counters.info(&topic, group.as_deref(), durable, pending)
                })
                .collect()
        })
    }
}

/// Aborts the serve loop of the subscription to `topic`, as if it had died; true if one ran.
#[cfg(any(test, feature = "test-util"))]
pub(crate) struct KillLoop(pub(crate) String);
#[cfg(any(test, feature = "test-util"))]
impl actix::Message for KillLoop {
    type Result = bool;
}

#[cfg(any(test, feature = "test-util"))]
impl Handler<KillLoop> for BrokerActor {
    type Result = bool;
    fn handle(&mut self, KillLoop(topic): KillLoop, _: &mut Context<Self>) -> bool {
        match self.subs.iter_mut().find(|s| s.topic == topic).and_then(|s| s.abort.take()) {
            Some(abort) => {
                abort.abort();
                true
            }
            None => false,
        }
    }
}
