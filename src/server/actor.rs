//! Actor endpoints: a pool of actix actors made by a factory serves one or more endpoints (or
//! topics). A panicking actor is replaced by a fresh one from the factory.

use std::cell::{Cell, OnceCell, RefCell};
use std::rc::Rc;

use actix::dev::ToEnvelope;
use actix::{Actor, Addr, Context, Handler, MailboxError, Message};
use bytes::Bytes;
use futures::future::LocalBoxFuture;
use serde::{de::DeserializeOwned, Serialize};

use super::handler::{Dispatch, Request};
use super::Runtime;
use crate::status::Status;

/// A message an actor endpoint accepts: deserializable, answered with `Result<Reply, Status>`.
///
/// Implemented for every `M: Message<Result = Result<R, Status>> + DeserializeOwned + Send`.
///
/// ```
/// use micro::Status;
/// #[derive(serde::Deserialize, actix::Message)]
/// #[rtype(result = "Result<u64, Status>")]
/// struct Add { n: u64 }
/// fn takes<M: micro::server::EndpointMessage>() {}
/// takes::<Add>();
/// ```
pub trait EndpointMessage: Message<Result = Result<Self::Reply, Status>> + DeserializeOwned + Send + 'static {
    /// What the actor answers on success.
    type Reply: Serialize + Send + 'static;
}

impl<M, R> EndpointMessage for M
where
    M: Message<Result = Result<R, Status>> + DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
{
    type Reply = R;
}

struct Slot<A: Actor> {
    addr: Addr<A>,
    generation: u64,
}

pub(crate) struct ActorPool<A: Actor<Context = Context<A>>> {
    factory: Box<dyn Fn() -> A>,
    size: Cell<usize>,
    slots: RefCell<Vec<Slot<A>>>,
    next: Cell<usize>,
    runtime: OnceCell<Runtime>,
}

impl<A: Actor<Context = Context<A>>> ActorPool<A> {
    fn start(&self, runtime: &Runtime) {
        if self.runtime.get().is_some() {
            return;
        }
        let _ = self.runtime.set(Runtime { supervisor: runtime.supervisor.clone(), stats: runtime.stats.clone() });
        let mut slots = self.slots.borrow_mut();
        for _ in 0..self.size.get().max(1) {
            slots.push(Slot { addr: (self.factory)().start(), generation: 0 });
        }
    }

    fn pick(&self) -> (usize, Addr<A>, u64) {
        let slots = self.slots.borrow();
        let i = self.next.get() % slots.len();
        self.next.set(i.wrapping_add(1));
        (i, slots[i].addr.clone(), slots[i].generation)
    }

    /// Replaces a dead actor, once per generation however many requests saw it die.
    fn restart(&self, i: usize, generation: u64) {
        let mut slots = self.slots.borrow_mut();
        if slots[i].generation != generation {
            return;
        }
        slots[i] = Slot { addr: (self.factory)().start(), generation: generation + 1 };
        drop(slots);
        tracing::warn!(
            actor = std::any::type_name::<A>(),
            slot = i,
            "actor stopped (panic); restarted from its factory"
        );
        if let Some(rt) = self.runtime.get() {
            rt.stats.panicked();
            rt.supervisor.record_restart();
        }
    }
}

/// Endpoints served by a pool of actors from one factory. Use it when one actor handles several
/// endpoints and keeps state across them.
///
/// ```
/// use actix::prelude::*;
/// use micro::{ActorEndpoints, Status};
///
/// #[derive(Default)] struct Counter { n: u64 }
/// impl Actor for Counter { type Context = Context<Self>; }
///
/// #[derive(serde::Deserialize, Message)] #[rtype(result = "Result<u64, Status>")] struct Add { by: u64 }
/// #[derive(serde::Deserialize, Message)] #[rtype(result = "Result<u64, Status>")] struct Get {}
/// impl Handler<Add> for Counter { type Result = Result<u64, Status>;
///     fn handle(&mut self, m: Add, _: &mut Context<Self>) -> Self::Result { self.n += m.by; Ok(self.n) } }
/// impl Handler<Get> for Counter { type Result = Result<u64, Status>;
///     fn handle(&mut self, _: Get, _: &mut Context<Self>) -> Self::Result { Ok(self.n) } }
///
/// let counter = ActorEndpoints::new(Counter::default)
///     .route::<Add>("Counter.Add")
///     .route::<Get>("Counter.Get");
/// let service = micro::Service::builder("go.micro.srv.counter").actors(counter);
/// ```
pub struct ActorEndpoints<A: Actor<Context = Context<A>>> {
    pool: Rc<ActorPool<A>>,
    pub(crate) routes: Vec<(String, Rc<dyn Dispatch>)>,
}

impl<A: Actor<Context = Context<A>>> std::fmt::Debug for ActorEndpoints<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorEndpoints")
            .field("actor", &std::any::type_name::<A>())
            .field("pool", &self.pool.size.get())
            .field("routes", &self.routes.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>())
            .finish()
    }
}

impl<A: Actor<Context = Context<A>>> ActorEndpoints<A> {
    /// Endpoints served by actors made by `factory` (one actor unless [`pool`](Self::pool)).
    pub fn new(factory: impl Fn() -> A + 'static) -> Self {
        ActorEndpoints {
            pool: Rc::new(ActorPool {
                factory: Box::new(factory),
                size: Cell::new(1),
                slots: RefCell::new(Vec::new()),
                next: Cell::new(0),
                runtime: OnceCell::new(),
            }),
            routes: Vec::new(),
        }
    }

    /// Runs `n` actor instances and spreads requests over them round robin (default 1). Each
    /// instance has its own state; use 1 for actors whose state must be shared by all requests.
    pub fn pool(self, n: usize) -> Self {
        self.pool.size.set(n.max(1));
        self
    }

    /// Binds an endpoint (or, for subscriptions, a topic) to the actor's `Handler<M>`.
    pub fn route<M>(mut self, name: &str) -> Self
    where
        M: EndpointMessage,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        self.routes
            .push((name.to_string(), Rc::new(ActorRoute::<A, M> { pool: self.pool.clone(), _m: Default::default() })));
        self
    }
}

struct ActorRoute<A: Actor<Context = Context<A>>, M> {
    pool: Rc<ActorPool<A>>,
    _m: std::marker::PhantomData<fn(M)>,
}

impl<A, M> Dispatch for ActorRoute<A, M>
where
    A: Actor<Context = Context<A>> + Handler<M>,
    A::Context: ToEnvelope<A, M>,
    M: EndpointMessage,
{
    fn start(&self, runtime: &Runtime) {
        self.pool.start(runtime);
    }

    fn call(&self, req: Request) -> LocalBoxFuture<'static, Result<Bytes, Status>> {
        let codec = req.codec;
        let msg: M = match codec.decode(&req.body) {
            Ok(m) => m,
            Err(e) => {
                let detail = format!("cannot decode {} request: {}", req.ctx.endpoint, e.message().unwrap_or(""));
                return Box::pin(futures::future::ready(Err(Status::bad_request(detail))));
            }
        };
        let (slot, addr, generation) = self.pool.pick();
        let pool = self.pool.clone();
        Box::pin(async move {
            match addr.send(msg).await {
                Ok(Ok(reply)) => {
                    codec.encode(&reply).map_err(|e| Status::internal(format!("cannot encode reply: {e}")))
                }
                Ok(Err(status)) => Err(status),
                Err(MailboxError::Closed) => {
                    pool.restart(slot, generation);
                    Err(Status::internal("handler panicked; its actor was restarted"))
                }
                Err(MailboxError::Timeout) => Err(Status::timeout("actor did not answer in time")),
            }
        })
    }
}
