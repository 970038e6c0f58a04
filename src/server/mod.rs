//! The server: an endpoint table bound to a node's subjects. Each request is decoded, checked
//! against its deadline, dispatched to an async fn or an actor, encoded and answered. A request
//! is handled in the loop that received it as far as it goes without waiting; one that waits
//! finishes in its own task on the service's arbiter, so many requests run at once. Panics are
//! caught at dispatch and counted against the [`RestartPolicy`].

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use tokio::sync::watch;

use crate::codec::Codec;
use crate::context::CallContext;
use crate::error::Result;
use crate::message::{headers, Deadline, Headers, Message, TraceParent};
use crate::status::Status;
use crate::telemetry::{self, sampling, spans};
use crate::transport::{Incoming, Reply, Subscription, Transport};
use tracing::Instrument;

mod actor;
mod handler;
mod inline;
mod nats_micro;
mod route;
mod stats;
mod stop;
mod supervision;

pub use actor::{ActorEndpoints, EndpointMessage};
pub use handler::{FromRequest, Handler, IntoReply, Meta, Req, Request, State};
pub use route::{ArgOf, BoundEndpoint, IntoEndpoint};

#[doc(hidden)] // documented in `micro::dev`
pub use handler::FromRequestTuple;
#[doc(hidden)] // documented in `micro::dev`
pub use route::ArgsOf;
pub use stats::SubscriptionInfo;
pub use stats::{resident_memory_bytes, HealthStatus, ServiceStats};
pub use supervision::RestartPolicy;

pub(crate) use handler::{Dispatch, Extensions, FnEndpoint, StateNeed};
pub(crate) use nats_micro::{serve as serve_nats_micro, Identity as NatsMicroIdentity};
pub(crate) use stats::Stats;
pub(crate) use stats::SubscriptionCounters;
pub(crate) use supervision::Supervisor;

/// A service's endpoints by name, looked up on every request: hashed with foldhash rather
/// than SipHash (the names are the service's own, not an attacker's).
pub(crate) type Routes = HashMap<Arc<str>, Route, foldhash::fast::RandomState>;

/// What endpoints need from the server at start.
pub(crate) struct Runtime {
    pub(crate) supervisor: Rc<Supervisor>,
    pub(crate) stats: Arc<Stats>,
}

/// Names the server and its limits.
#[derive(Clone, Debug)]
pub(crate) struct ServerInfo {
    pub(crate) service: String,
    pub(crate) version: String,
    pub(crate) node_id: String,
    /// Requests and events in flight above which endpoints answer 503 (not `Debug.*`).
    pub(crate) max_in_flight: usize,
    /// The transport's name (`nats`, `amqp`, `memory`), for the spans.
    pub(crate) transport: &'static str,
}

/// The running dispatch state, shared by the subscription loops and request tasks.
pub(crate) struct Server {
    info: ServerInfo,
    service: Arc<str>,
    endpoints: Routes,
    state: Rc<Extensions>,
    stats: Arc<Stats>,
    supervisor: Rc<Supervisor>,
}

impl Server {
    pub(crate) fn new(
        info: ServerInfo,
        mut endpoints: Routes,
        state: Extensions,
        stats: Arc<Stats>,
        supervisor: Rc<Supervisor>,
    ) -> Rc<Server> {
        let runtime = Runtime { supervisor: supervisor.clone(), stats: stats.clone() };
        let service: Arc<str> = Arc::from(info.service.as_str());
        for route in endpoints.values_mut() {
            route.dispatch.start(&runtime);
            route.metrics = crate::metrics::EndpointMetrics::new(&service, &route.name);
        }
        Rc::new(Server { info, service, endpoints, state: Rc::new(state), stats, supervisor })
    }

    /// Serves every subscription until `stop` turns true; then drains them (no new messages,
    /// those already received are still handled) and returns.
    pub(crate) fn serve(
        self: &Rc<Self>,
        subs: Vec<Subscription>,
        stop: watch::Receiver<bool>,
    ) -> Vec<actix_rt::task::JoinHandle<()>> {
        subs.into_iter()
            .map(|sub| {
                let server = self.clone();
                let stop = stop.clone();
                actix_rt::spawn(serve_loop(sub, stop, move |incoming| {
                    let in_flight = server.stats.begin();
                    inline::run_or_spawn(server.clone().dispatch(incoming, in_flight));
                }))
            })
            .collect()
    }

    /// Waits until no request is in flight, at most `grace`; returns how many were cut off.
    pub(crate) async fn drain(&self, grace: Duration) -> i64 {
        self.stats.wait_idle(grace).await
    }

    async fn dispatch(self: Rc<Self>, incoming: Incoming, _in_flight: stats::InFlight) {
        let Incoming { subject, message, reply } = incoming;
        let Some(reply) = reply else {
            tracing::debug!(%subject, "request without a reply subject ignored");
            return;
        };
        Stats::incr(&self.stats.requests);
        let Message { headers: h, body } = message;
        let codec = match h.get(headers::CONTENT_TYPE) {
            None => Codec::sniff(&body),
            Some(ct) => match Codec::from_content_type(ct) {
                Some(c) => c,
                None => {
                    let s = Status::bad_request(format!(
                        "unsupported content type {ct:?}; use application/msgpack or application/json"
                    ));
                    return self.answer(reply, Codec::Json, Err(s)).await;
                }
            },
        };
        let deadline = h.get(headers::DEADLINE).and_then(Deadline::parse);
        if deadline.is_some_and(Deadline::is_expired) {
            self.stats.expired();
            tracing::debug!(%subject, "request arrived after its deadline; dropped");
            return;
        }
        // The endpoint is the subject's last two tokens: the node subscribed to `<base>.*.*`.
        let endpoint = crate::subject::endpoint_of(&subject).unwrap_or_default();
        let Some(route) = self.endpoints.get(endpoint) else {
            let s = Status::not_found(format!("endpoint {endpoint} not found on {}", self.info.service));
            return self.answer(reply, codec, Err(s)).await;
        };
        // Load shedding: above the limit an endpoint answers 503 without running (the
        // toolkit's `Debug.*` probes still answer, so an overloaded node can be inspected).
        if route.shed && self.stats.in_flight() > i64::try_from(self.info.max_in_flight).unwrap_or(i64::MAX) {
            let s = Status::unavailable(format!(
                "{} is overloaded ({} requests in flight)",
                self.info.service, self.info.max_in_flight
            ));
            return self.answer(reply, codec, Err(s)).await;
        }
        let started = std::time::Instant::now();
        // The handling's span, parented by the caller's traceparent; the handler's context
        // carries the span's own identity, so the calls it makes are the span's children. A
        // request that came without a trace starts one here (no header was paid for).
        let parent = h.get(headers::TRACEPARENT).and_then(TraceParent::parse);
        let unsampled = sampling::unsampled(parent);
        let span = sampling::making(unsampled, || spans::server(&self.service, &route.name));
        let trace = if span.is_disabled() {
            parent.unwrap_or_else(TraceParent::new_root)
        } else {
            telemetry::identify(&span, parent, spans::Parent::Remote)
        };
        let ctx = Arc::new(context_from(&self.service, route.name.clone(), h, deadline, trace));
        let result = match route.admit(&ctx).await {
            Err(refused) => Err(refused),
            Ok(()) => {
                let req = Request { ctx: ctx.clone(), body, codec, state: self.state.clone() };
                // Built inside the future: extractors and a handler's synchronous part run as the
                // handler is called, and they too must run inside the span and the context, with
                // their panics caught.
                let run = AssertUnwindSafe(async { route.dispatch.call(req).await }).catch_unwind();
                let handled = CallContext::scope_shared(ctx, run).instrument(span.clone());
                sampling::follow(unsampled, handled).await.unwrap_or_else(|panic| {
                    let _in = span.enter();
                    self.record_panic(&route.name, &panic);
                    Err(Status::internal("handler panicked"))
                })
            }
        };
        let took = started.elapsed();
        route.stats.record(took, result.as_ref().err());
        route.metrics.record(took, result.as_ref().err());
        spans::record_status(&span, result.as_ref().err());
        self.answer(reply, codec, result).await
    }

    /// The endpoints with their counters, for the NATS services API's `INFO` and `STATS`.
    pub(crate) fn routes(&self) -> impl Iterator<Item = &Route> {
        self.endpoints.values()
    }

    pub(crate) fn record_panic(&self, what: &str, panic: &Box<dyn std::any::Any + Send>) {
        let msg = supervision::panic_message(panic.as_ref());
        tracing::error!(service = %self.info.service, handler = what, panic = %msg, "handler panicked");
        self.stats.panicked();
        self.supervisor.record_restart();
    }

    async fn answer(&self, reply: Reply, codec: Codec, result: std::result::Result<Bytes, Status>) {
        let mut h = Headers::new();
        let body = match result {
            Ok(body) => body,
            Err(status) => {
                Stats::incr(&self.stats.errors);
                let status = status.or_id(&self.info.service);
                error_headers(&mut h, &status);
                codec.encode(&status).unwrap_or_default()
            }
        };
        // A success reply whose body sniffs right needs no header at all; an error reply
        // always says its codec.
        if let Some(ct) = codec.content_type_for(&body) {
            h.push(headers::CONTENT_TYPE, ct);
        } else if !h.is_empty() {
            h.push(headers::CONTENT_TYPE, codec.content_type());
        }
        if let Err(e) = reply.send(Message::with_headers(h, body)).await {
            tracing::warn!(error = %e, "could not send reply");
        }
    }

    pub(crate) fn info(&self) -> &ServerInfo {
        &self.info
    }

    /// Counts a subscription loop that ended or died while serving and is started again:
    /// a restart against the restart policy, like a handler's.
    pub(crate) fn record_loop_restart(&self, counters: &SubscriptionCounters) {
        Stats::incr(&counters.restarts);
        self.stats.restarted();
        self.supervisor.record_restart();
    }
}

/// The headers of an error reply: the code and the detail, named as the NATS services API
/// (ADR-32) names them so that its clients read our errors too. A line break in the detail
/// becomes a space (a header value is one line).
pub(crate) fn error_headers(h: &mut Headers, status: &Status) {
    h.push(headers::ERROR, status.code().as_u16().to_string());
    let detail = status.detail();
    let detail =
        if crate::message::has_line_break(detail) { detail.replace(['\r', '\n'], " ") } else { detail.to_string() };
    h.push(headers::ERROR_TEXT, detail);
}

/// An endpoint of the server: its name (shared by every request's context), its handler (with
/// the middleware around it) and its counters.
pub(crate) struct Route {
    pub(crate) name: Arc<str>,
    pub(crate) dispatch: Rc<dyn Dispatch>,
    pub(crate) metadata: std::collections::BTreeMap<String, String>,
    pub(crate) stats: stats::EndpointStats,
    /// Its metric handles, made when the server starts.
    pub(crate) metrics: crate::metrics::EndpointMetrics,
    /// Answers 503 while the node is over its in-flight limit (user endpoints, not `Debug.*`).
    pub(crate) shed: bool,
    /// The auth check its requests pass before anything else runs (user endpoints of a
    /// service behind auth).
    #[cfg(feature = "auth")]
    pub(crate) gate: Option<crate::auth::AuthLayer>,
}

impl Route {
    pub(crate) fn new(
        name: &str,
        dispatch: Rc<dyn Dispatch>,
        metadata: std::collections::BTreeMap<String, String>,
    ) -> Route {
        Route {
            name: name.into(),
            dispatch,
            metadata,
            stats: Default::default(),
            metrics: crate::metrics::EndpointMetrics::noop(),
            shed: false,
            #[cfg(feature = "auth")]
            gate: None,
        }
    }

    /// Checks auth before anything else runs.
    #[cfg(feature = "auth")]
    pub(crate) fn gated(mut self, gate: Option<crate::auth::AuthLayer>) -> Route {
        self.gate = gate;
        self
    }

    /// Lets a request through, or answers why not (the auth check, when there is one).
    async fn admit(&self, ctx: &CallContext) -> std::result::Result<(), Status> {
        #[cfg(feature = "auth")]
        if let Some(gate) = &self.gate {
            return gate.admit(ctx).await;
        }
        let _ = ctx;
        Ok(())
    }

    /// Sheds load: 503 above the node's in-flight limit.
    pub(crate) fn shed_load(mut self) -> Route {
        self.shed = true;
        self
    }
}

/// Builds a handler's context from request headers, moving their values out.
pub(crate) fn context_from(
    service: &Arc<str>,
    endpoint: Arc<str>,
    mut h: Headers,
    deadline: Option<Deadline>,
    trace: TraceParent,
) -> CallContext {
    CallContext {
        service: service.clone(),
        endpoint,
        id: h.take(headers::ID).unwrap_or_default(),
        caller: h.take(headers::CALLER),
        deadline,
        trace: Some(trace),
        trace_state: h.take(headers::TRACESTATE),
        metadata: h.metadata(),
        event: None,
        authorization: h.take(headers::AUTHORIZATION),
        identity: Default::default(),
    }
}

/// A subscription the serve loop can read and drain.
pub(crate) trait Source: futures::Stream + Unpin {
    fn drain(&mut self) -> futures::future::BoxFuture<'_, Result<()>>;
}

impl Source for Subscription {
    fn drain(&mut self) -> futures::future::BoxFuture<'_, Result<()>> {
        Subscription::drain(self)
    }
}

impl Source for crate::broker::DurableEvents {
    fn drain(&mut self) -> futures::future::BoxFuture<'_, Result<()>> {
        crate::broker::DurableEvents::drain(self)
    }
}

/// Reads a subscription until `stop`, then drains it and handles what was already delivered.
pub(crate) async fn serve_loop<S: Source>(mut sub: S, stop: watch::Receiver<bool>, mut handle: impl FnMut(S::Item)) {
    let mut stop = stop::StopSignal::new(stop);
    loop {
        let next = std::future::poll_fn(|cx| {
            if stop.asked() {
                return std::task::Poll::Ready(None);
            }
            match sub.poll_next_unpin(cx) {
                std::task::Poll::Ready(next) => std::task::Poll::Ready(Some(next)),
                std::task::Poll::Pending => stop.poll_asked(cx).map(|()| None),
            }
        })
        .await;
        match next {
            Some(Some(incoming)) => handle(incoming),
            Some(None) => return,
            None => break,
        }
    }
    if let Err(e) = sub.drain().await {
        tracing::debug!(error = %e, "drain failed; dropping the subscription");
        return;
    }
    // What the broker had already delivered is still ours to answer: a drained subscription
    // yields it, then ends. The bound only guards against a backend that never ends it.
    let rest = async {
        while let Some(incoming) = sub.next().await {
            handle(incoming);
        }
    };
    if tokio::time::timeout(DRAIN_BOUND, rest).await.is_err() {
        tracing::warn!(bound = ?DRAIN_BOUND, "a drained subscription did not end; dropping it");
    }
}

/// The longest a drained subscription may take to hand over what it had received.
const DRAIN_BOUND: Duration = Duration::from_secs(30);

/// Subscribes a node's request subjects: every endpoint under its own address, and under its
/// service's shared subject in the queue group of that name.
pub(crate) async fn subscribe_node(
    transport: &Arc<dyn Transport>,
    service: &str,
    node_id: &str,
) -> Result<Vec<Subscription>> {
    let shared = crate::subject::service(service);
    let own = crate::subject::endpoints(&crate::subject::node(node_id));
    Ok(vec![
        transport.subscribe(&own, None).await?,
        transport.subscribe(&crate::subject::endpoints(&shared), Some(&shared)).await?,
    ])
}

impl Server {
    /// Handles one event with a subscription's handler, counted on the subscription too.
    /// Counts an event in flight and handles it (in its own task once it waits).
    pub(crate) fn spawn_event(
        self: &Rc<Self>,
        ep: &Rc<dyn Dispatch>,
        counters: &Arc<SubscriptionCounters>,
        incoming: Incoming,
    ) {
        let in_flight = self.stats.begin();
        inline::run_or_spawn(self.clone().dispatch_event(ep.clone(), counters.clone(), incoming, in_flight));
    }

    async fn dispatch_event(
        self: Rc<Self>,
        ep: Rc<dyn Dispatch>,
        counters: Arc<SubscriptionCounters>,
        incoming: Incoming,
        _in_flight: stats::InFlight,
    ) {
        Stats::incr(&self.stats.events);
        Stats::incr(&counters.handled);
        let event = match crate::broker::Event::from_incoming(incoming) {
            Ok(e) => e,
            Err(e) => {
                Stats::incr(&self.stats.errors);
                Stats::incr(&counters.errors);
                counters.metrics.errors.increment(1);
                tracing::warn!(service = %self.info.service, error = %e, "malformed event dropped");
                return;
            }
        };
        if let Err(status) = self.run_event(&ep, &counters, &event, None).await {
            tracing::warn!(service = %self.info.service, topic = %event.topic, event = %event.id, %status, "event handler failed");
        }
    }

    /// Handles one durable event (in its own task once it waits) and settles it by the
    /// handler's result.
    pub(crate) fn spawn_durable(
        self: &Rc<Self>,
        ep: &Rc<dyn Dispatch>,
        counters: &Arc<SubscriptionCounters>,
        event: crate::broker::DurableEvent,
    ) {
        let in_flight = self.stats.begin();
        inline::run_or_spawn(self.clone().dispatch_durable(ep.clone(), counters.clone(), event, in_flight));
    }

    async fn dispatch_durable(
        self: Rc<Self>,
        ep: Rc<dyn Dispatch>,
        counters: Arc<SubscriptionCounters>,
        event: crate::broker::DurableEvent,
        _in_flight: stats::InFlight,
    ) {
        Stats::incr(&self.stats.events);
        Stats::incr(&counters.handled);
        // While the handler runs, tell the broker so it does not hand the event to another member.
        let every = event.ack_wait() / 2;
        let keep_alive = async {
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = event.progress().await {
                    tracing::debug!(error = %e, "progress report failed");
                }
            }
        };
        let outcome = tokio::select! {
            // The handler first: one that is done at once never starts the keep-alive timer.
            biased;
            outcome = self.run_event(&ep, &counters, event.event(), Some(event.attempt())) => outcome,
            never = keep_alive => never,
        };
        if let Err(status) = &outcome {
            tracing::warn!(service = %self.info.service, topic = %event.topic, event = %event.id, attempt = event.attempt(), %status, "durable event handler failed");
        }
        match event.settle(outcome).await {
            Ok(crate::broker::Settled::Retried) => {
                Stats::incr(&self.stats.retries);
                Stats::incr(&counters.retries);
                counters.metrics.retried.increment(1);
            }
            Ok(crate::broker::Settled::DeadLettered) => {
                Stats::incr(&self.stats.dead_letters);
                Stats::incr(&counters.dead_letters);
                counters.metrics.dead_lettered.increment(1);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(service = %self.info.service, error = %e, "settling an event failed; the broker will deliver it again")
            }
        }
    }

    /// Runs a subscription's handler on an event: its result, a panic as 500 (counted).
    async fn run_event(
        &self,
        ep: &Rc<dyn Dispatch>,
        counters: &SubscriptionCounters,
        event: &crate::broker::Event,
        attempt: Option<u32>,
    ) -> std::result::Result<(), Status> {
        // As for requests: the span is parented by the publisher's traceparent, and an event
        // that came without a trace starts one for its handler.
        let unsampled = sampling::unsampled(event.trace);
        let span = sampling::making(unsampled, || {
            spans::process(self.info.transport, &self.service, &event.topic, &event.id, attempt.map(u64::from))
        });
        let trace = if span.is_disabled() {
            event.trace.unwrap_or_else(TraceParent::new_root)
        } else {
            telemetry::identify(&span, event.trace, spans::Parent::Remote)
        };
        let ctx = Arc::new(event.context(&self.service, trace));
        let req = Request { ctx: ctx.clone(), body: event.body.clone(), codec: event.codec, state: self.state.clone() };
        let ep = ep.clone();
        let started = std::time::Instant::now();
        let handled =
            CallContext::scope_shared(ctx, AssertUnwindSafe(async move { ep.call(req).await }).catch_unwind())
                .instrument(span.clone());
        let result = sampling::follow(unsampled, handled).await;
        counters.metrics.duration.record(started.elapsed().as_secs_f64());
        let _in = span.enter();
        let outcome = match result {
            Ok(Ok(_)) => {
                counters.metrics.ok.increment(1);
                Ok(())
            }
            Ok(Err(status)) => {
                Stats::incr(&self.stats.errors);
                Stats::incr(&counters.errors);
                counters.metrics.errors.increment(1);
                Err(status)
            }
            Err(panic) => {
                Stats::incr(&self.stats.errors);
                Stats::incr(&counters.errors);
                counters.metrics.errors.increment(1);
                self.record_panic(&event.topic, &panic);
                Err(Status::internal(format!("the handler of {} panicked", event.topic)))
            }
        };
        spans::record_status(&span, outcome.as_ref().err());
        outcome
    }
}
