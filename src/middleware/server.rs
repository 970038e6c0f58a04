//! Server middleware: [`Middleware`], [`Next`] and [`from_fn`].

use std::future::Future;
use std::rc::Rc;

use bytes::Bytes;
use futures::future::LocalBoxFuture;

use crate::server::{Dispatch, Request};
use crate::status::Status;

/// What a handler (and so every middleware) answers: the encoded reply, or a status.
pub type Outcome = Result<Bytes, Status>;

/// Wraps every endpoint and subscription handler of a service ([`ServiceBuilder::wrap`]).
///
/// A middleware sees the request ([`Request::context`], [`Request::endpoint`],
/// [`Request::metadata`], [`Request::body`], [`Request::is_event`]) and decides: pass it on with
/// `next.run(req)` (and look at or change the outcome), or answer at once with a [`Status`]
/// without running the handler. It runs on the service's arbiter, so it need not be `Send`;
/// it runs inside the request's [`CallContext`](crate::CallContext) scope, so calls it makes
/// inherit the deadline, trace and metadata, and a panic in it is caught like a handler's.
///
/// Most middleware is written with [`from_fn`]; implement the trait for one that holds state:
///
/// ```
/// use std::cell::Cell;
/// use std::rc::Rc;
/// use micro::middleware::{Middleware, Next, Outcome};
/// use micro::server::Request;
///
/// /// Counts the requests that failed.
/// #[derive(Clone, Default)]
/// struct CountErrors(Rc<Cell<u64>>);
///
/// impl Middleware for CountErrors {
///     fn call(&self, req: Request, next: Next) -> futures::future::LocalBoxFuture<'static, Outcome> {
///         let errors = self.0.clone();
///         Box::pin(async move {
///             let outcome = next.run(req).await;
///             if outcome.is_err() {
///                 errors.set(errors.get() + 1);
///             }
///             outcome
///         })
///     }
/// }
/// let service = micro::Service::builder("go.micro.srv.greeter").wrap(CountErrors::default());
/// ```
///
/// [`ServiceBuilder::wrap`]: crate::ServiceBuilder::wrap
pub trait Middleware: 'static {
    /// Handles one request or event: usually `next.run(req)` with something around it.
    fn call(&self, req: Request, next: Next) -> LocalBoxFuture<'static, Outcome>;
}

/// The rest of the chain: the middleware after this one, then the handler.
pub struct Next {
    chain: Rc<Chain>,
    at: usize,
}

impl Next {
    /// Runs the rest of the chain on `req`.
    pub fn run(self, req: Request) -> LocalBoxFuture<'static, Outcome> {
        let Next { chain, at } = self;
        match chain.layers.get(at) {
            Some(layer) => {
                let layer = layer.clone();
                layer.call(req, Next { chain, at: at + 1 })
            }
            None => chain.handler.call(req),
        }
    }
}

impl std::fmt::Debug for Next {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Next").field("remaining", &(self.chain.layers.len() - self.at)).finish()
    }
}

/// A middleware from an async closure: `from_fn(|req, next| async move { next.run(req).await })`.
///
/// A logging middleware:
///
/// ```
/// use micro::middleware::from_fn;
///
/// let service = micro::Service::builder("go.micro.srv.greeter").wrap(from_fn(|req, next| async move {
///     let (endpoint, started) = (req.endpoint().to_string(), std::time::Instant::now());
///     let outcome = next.run(req).await;
///     tracing::info!(%endpoint, ok = outcome.is_ok(), took = ?started.elapsed(), "handled");
///     outcome
/// }));
/// ```
///
/// One that rejects calls without a metadata key, before the handler runs:
///
/// ```
/// use micro::middleware::from_fn;
/// use micro::Status;
///
/// let service = micro::Service::builder("go.micro.srv.greeter").wrap(from_fn(|req, next| async move {
///     if req.metadata().get("tenant").is_none() {
///         return Err(Status::unauthorized("metadata key `tenant` is required"));
///     }
///     next.run(req).await
/// }));
/// ```
pub fn from_fn<F, Fut>(f: F) -> FromFn<F>
where
    F: Fn(Request, Next) -> Fut + 'static,
    Fut: Future<Output = Outcome> + 'static,
{
    FromFn(f)
}

/// A middleware made by [`from_fn`].
#[derive(Clone)]
pub struct FromFn<F>(F);

impl<F> std::fmt::Debug for FromFn<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FromFn")
    }
}

impl<F, Fut> Middleware for FromFn<F>
where
    F: Fn(Request, Next) -> Fut + 'static,
    Fut: Future<Output = Outcome> + 'static,
{
    fn call(&self, req: Request, next: Next) -> LocalBoxFuture<'static, Outcome> {
        Box::pin((self.0)(req, next))
    }
}

/// Middleware around one handler.
struct Chain {
    layers: Rc<[Rc<dyn Middleware>]>,
    handler: Rc<dyn Dispatch>,
}

/// A handler with its middleware: what the server dispatches to.
pub(crate) struct Wrapped(Rc<Chain>);

impl Wrapped {
    /// Wraps `handler` in `layers` (the first is the outermost), or returns it as it is when
    /// there are none.
    pub(crate) fn around(layers: &Rc<[Rc<dyn Middleware>]>, handler: Rc<dyn Dispatch>) -> Rc<dyn Dispatch> {
        if layers.is_empty() {
            return handler;
        }
        Rc::new(Wrapped(Rc::new(Chain { layers: layers.clone(), handler })))
    }
}

impl Dispatch for Wrapped {
    fn start(&self, runtime: &crate::server::Runtime) {
        self.0.handler.start(runtime)
    }

    fn required_state(&self) -> Vec<crate::server::StateNeed> {
        self.0.handler.required_state()
    }

    fn call(&self, req: Request) -> LocalBoxFuture<'static, Outcome> {
        Next { chain: self.0.clone(), at: 0 }.run(req)
    }
}
