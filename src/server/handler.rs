//! User handlers: async fns whose arguments are extractors ([`Req`], [`Meta`], [`State`],
//! [`CallContext`]) and whose result is `Result<T: Serialize, Status>`.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::rc::Rc;

use bytes::Bytes;
use futures::future::LocalBoxFuture;
use serde::{de::DeserializeOwned, Serialize};

use crate::codec::Codec;
use crate::context::CallContext;
use crate::message::Metadata;
use crate::status::Status;

/// A request as the server hands it to extractors.
#[derive(Debug)]
pub struct Request {
    pub(crate) ctx: std::sync::Arc<CallContext>,
    pub(crate) body: Bytes,
    pub(crate) codec: Codec,
    pub(crate) state: Rc<Extensions>,
}

impl Request {
    /// The request's context.
    pub fn context(&self) -> &CallContext {
        &self.ctx
    }

    /// The encoded body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The codec the body is in.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// The endpoint (`Say.Hello`), or the topic for an event.
    pub fn endpoint(&self) -> &str {
        &self.ctx.endpoint
    }

    /// The caller's metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.ctx.metadata
    }

    /// True when this is an event for a subscription rather than a request.
    pub fn is_event(&self) -> bool {
        self.ctx.event.is_some()
    }
}

/// Shared values registered with the service builder's `state(..)`, looked up by type.
#[derive(Default)]
pub(crate) struct Extensions(HashMap<TypeId, Box<dyn Any>>);

impl Extensions {
    pub(crate) fn insert<T: Clone + 'static>(&mut self, value: T) {
        self.0.insert(TypeId::of::<T>(), Box::new(value));
    }

    pub(crate) fn get<T: 'static>(&self) -> Option<&T> {
        self.0.get(&TypeId::of::<T>()).and_then(|b| b.downcast_ref())
    }

    pub(crate) fn contains(&self, id: TypeId) -> bool {
        self.0.contains_key(&id)
    }
}

/// A state type a handler needs: its id and its name for error messages.
pub(crate) type StateNeed = (TypeId, &'static str);

impl std::fmt::Debug for Extensions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Extensions({} values)", self.0.len())
    }
}

/// Something a handler argument can be built from.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a handler argument",
    note = "handler arguments are extractors: `Req<T>` (the decoded body), `Meta` (metadata), `State<S>` (shared state), `CallContext`, `Client`"
)]
pub trait FromRequest: Sized {
    /// Builds the value, or fails with the status the caller gets.
    fn from_request(req: &Request) -> Result<Self, Status>;

    /// The state this extractor needs registered, checked when the service starts.
    #[doc(hidden)]
    fn required_state() -> Option<StateNeed> {
        None
    }
}

/// The decoded request (or event) body.
///
/// ```
/// # use micro::prelude::*;
/// #[derive(serde::Deserialize)] struct Hello { name: String }
/// async fn hello(Req(h): Req<Hello>) -> Result<String, Status> { Ok(format!("Hello {}", h.name)) }
/// ```
#[derive(Debug, Clone)]
pub struct Req<T>(pub T);

impl<T: DeserializeOwned> FromRequest for Req<T> {
    fn from_request(req: &Request) -> Result<Self, Status> {
        req.codec.decode(&req.body).map(Req).map_err(|e| {
            Status::bad_request(format!("cannot decode {} request: {}", req.ctx.endpoint, e.message().unwrap_or("")))
        })
    }
}

/// The caller's metadata.
#[derive(Debug, Clone)]
pub struct Meta(pub Metadata);

impl FromRequest for Meta {
    fn from_request(req: &Request) -> Result<Self, Status> {
        Ok(Meta(req.ctx.metadata.clone()))
    }
}

/// Shared state registered with `ServiceBuilder::state`.
///
/// ```
/// # use micro::prelude::*;
/// # use std::sync::{Arc, atomic::{AtomicU64, Ordering}};
/// async fn count(State(n): State<Arc<AtomicU64>>) -> Result<u64, Status> {
///     Ok(n.fetch_add(1, Ordering::Relaxed) + 1)
/// }
/// ```
#[derive(Debug, Clone)]
pub struct State<S>(pub S);

impl<S: Clone + 'static> FromRequest for State<S> {
    fn from_request(req: &Request) -> Result<Self, Status> {
        req.state
            .get::<S>()
            .cloned()
            .map(State)
            .ok_or_else(|| Status::internal(format!("no state of type {} registered", std::any::type_name::<S>())))
    }

    fn required_state() -> Option<StateNeed> {
        Some((TypeId::of::<S>(), std::any::type_name::<S>()))
    }
}

/// The serving service's own client: calls made with it carry the service's name as caller and
/// inherit the request's deadline, trace and metadata.
///
/// ```
/// # use micro::prelude::*;
/// async fn relay(client: Client, Req(v): Req<serde_json::Value>) -> Result<serde_json::Value, Status> {
///     client.call("go.micro.srv.other", "Other.Do", &v).await.map_err(|e| e.to_status("relay"))
/// }
/// ```
impl FromRequest for crate::client::Client {
    fn from_request(req: &Request) -> Result<Self, Status> {
        req.state.get::<crate::client::Client>().cloned().ok_or_else(|| Status::internal("no client in this context"))
    }
}

impl FromRequest for CallContext {
    fn from_request(req: &Request) -> Result<Self, Status> {
        Ok(CallContext::clone(&req.ctx))
    }
}

/// What a handler returns: `Result<T, Status>` with `T: Serialize`.
#[diagnostic::on_unimplemented(message = "a handler must return `Result<T, Status>` with `T: Serialize`, not `{Self}`")]
pub trait IntoReply {
    /// Encodes the reply in the request's codec.
    fn into_reply(self, codec: Codec) -> Result<Bytes, Status>;
}

impl<T: Serialize> IntoReply for Result<T, Status> {
    fn into_reply(self, codec: Codec) -> Result<Bytes, Status> {
        let value = self?;
        codec.encode(&value).map_err(|e| Status::internal(format!("cannot encode reply: {e}")))
    }
}

/// An async fn usable as an endpoint or event handler: `async fn(A1, .., An) -> Result<T, Status>`
/// where every argument is a [`FromRequest`] extractor (up to six).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a handler",
    note = "a handler is an `async fn` taking extractors (`Req<T>`, `Meta`, `State<S>`, `CallContext`) and returning `Result<T, Status>`"
)]
pub trait Handler<Args>: Clone + 'static {
    /// The handler's result.
    type Output;
    /// Its future.
    type Future: Future<Output = Self::Output>;
    /// Calls the handler.
    fn call(&self, args: Args) -> Self::Future;
}

/// A tuple of extractors.
pub trait FromRequestTuple: Sized {
    /// Extracts every element.
    fn extract(req: &Request) -> Result<Self, Status>;
    /// Adds the state every element needs.
    #[doc(hidden)]
    fn required_state(out: &mut Vec<StateNeed>);
}

macro_rules! handler_tuple {
    ($($a:ident),*) => {
        impl<$($a: FromRequest),*> FromRequestTuple for ($($a,)*) {
            #[allow(unused_variables)]
            fn extract(req: &Request) -> Result<Self, Status> {
                Ok(($($a::from_request(req)?,)*))
            }

            #[allow(unused_variables)]
            fn required_state(out: &mut Vec<StateNeed>) {
                $(out.extend($a::required_state());)*
            }
        }

        impl<Func, Fut, $($a),*> Handler<($($a,)*)> for Func
        where
            Func: Fn($($a),*) -> Fut + Clone + 'static,
            Fut: Future,
        {
            type Output = Fut::Output;
            type Future = Fut;
            #[allow(non_snake_case)]
            fn call(&self, ($($a,)*): ($($a,)*)) -> Fut {
                (self)($($a),*)
            }
        }
    };
}

handler_tuple!();
handler_tuple!(A1);
handler_tuple!(A1, A2);
handler_tuple!(A1, A2, A3);
handler_tuple!(A1, A2, A3, A4);
handler_tuple!(A1, A2, A3, A4, A5);
handler_tuple!(A1, A2, A3, A4, A5, A6);

/// A type-erased endpoint: decodes, runs, encodes.
pub(crate) trait Dispatch: 'static {
    /// Starts whatever the endpoint needs (actor pools) on the serving arbiter.
    fn start(&self, _runtime: &super::Runtime) {}
    /// The state its extractors need, checked at start.
    fn required_state(&self) -> Vec<StateNeed> {
        Vec::new()
    }
    fn call(&self, req: Request) -> LocalBoxFuture<'static, Result<Bytes, Status>>;
}

pub(crate) struct FnEndpoint<H, Args> {
    handler: H,
    _args: PhantomData<fn(Args)>,
}

impl<H, Args> FnEndpoint<H, Args> {
    pub(crate) fn new(handler: H) -> Self {
        FnEndpoint { handler, _args: PhantomData }
    }
}

impl<H, Args> Dispatch for FnEndpoint<H, Args>
where
    H: Handler<Args>,
    H::Output: IntoReply,
    Args: FromRequestTuple + 'static,
{
    fn required_state(&self) -> Vec<StateNeed> {
        let mut out = Vec::new();
        Args::required_state(&mut out);
        out
    }

    fn call(&self, req: Request) -> LocalBoxFuture<'static, Result<Bytes, Status>> {
        let codec = req.codec;
        match Args::extract(&req) {
            Ok(args) => {
                let fut = self.handler.call(args);
                Box::pin(async move { fut.await.into_reply(codec) })
            }
            Err(status) => Box::pin(futures::future::ready(Err(status))),
        }
    }
}
