//! What `ServiceBuilder::handle` binds a handler to: a typed [`Endpoint`] descriptor, whose
//! request and response types the handler must match (checked by the compiler), or a name.

use std::rc::Rc;

use serde::Serialize;

use super::handler::{Dispatch, FnEndpoint, FromRequestTuple, Handler, IntoReply};
use super::{Meta, Req, State};
use crate::context::CallContext;
use crate::endpoint::Endpoint;
use crate::status::Status;

/// A handler bound to its endpoint, ready for the service builder.
pub struct BoundEndpoint {
    pub(crate) name: String,
    pub(crate) dispatch: Rc<dyn Dispatch>,
}

impl std::fmt::Debug for BoundEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundEndpoint").field("name", &self.name).finish()
    }
}

/// Names an endpoint for `ServiceBuilder::handle`: an [`Endpoint<Req, Rsp>`] (the handler must
/// take `Req<Req>` and return `Result<Rsp, Status>`) or a string (any handler).
#[diagnostic::on_unimplemented(
    message = "this handler does not match the endpoint `{Self}`",
    note = "a handler of an `Endpoint<Req, Rsp>` takes `Req<Req>` (besides `Meta`, `State<_>`, `CallContext`, `Client`) and returns `Result<Rsp, Status>`"
)]
pub trait IntoEndpoint<H, Args> {
    /// Binds the handler.
    fn bind(self, handler: H) -> BoundEndpoint;
}

impl<H, Args> IntoEndpoint<H, Args> for &str
where
    H: Handler<Args>,
    H::Output: IntoReply,
    Args: FromRequestTuple + 'static,
{
    fn bind(self, handler: H) -> BoundEndpoint {
        BoundEndpoint { name: self.to_string(), dispatch: Rc::new(FnEndpoint::new(handler)) }
    }
}

impl<H, Args> IntoEndpoint<H, Args> for String
where
    H: Handler<Args>,
    H::Output: IntoReply,
    Args: FromRequestTuple + 'static,
{
    fn bind(self, handler: H) -> BoundEndpoint {
        BoundEndpoint { name: self, dispatch: Rc::new(FnEndpoint::new(handler)) }
    }
}

impl<H, Args, Rq, Rs> IntoEndpoint<H, Args> for Endpoint<Rq, Rs>
where
    H: Handler<Args, Output = Result<Rs, Status>>,
    Rs: Serialize,
    Args: FromRequestTuple + ArgsOf<Rq> + 'static,
{
    fn bind(self, handler: H) -> BoundEndpoint {
        BoundEndpoint { name: self.name().to_string(), dispatch: Rc::new(FnEndpoint::new(handler)) }
    }
}

/// An extractor allowed in the handler of an endpoint whose request type is `Rq`: `Req<Rq>`
/// itself, and every extractor that does not read the body. Implement it for your own
/// extractors that do not read the body: `impl<Rq> ArgOf<Rq> for MyExtractor {}`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an argument of a handler for an endpoint taking `{Rq}`",
    note = "the body argument must be `Req<{Rq}>`"
)]
pub trait ArgOf<Rq> {}

impl<Rq> ArgOf<Rq> for Req<Rq> {}
impl<Rq> ArgOf<Rq> for Meta {}
impl<Rq, S> ArgOf<Rq> for State<S> {}
impl<Rq> ArgOf<Rq> for CallContext {}
impl<Rq> ArgOf<Rq> for crate::client::Client {}

/// A tuple of extractors each allowed for request type `Rq`.
pub trait ArgsOf<Rq> {}

macro_rules! args_of {
    ($($a:ident),*) => {
        impl<Rq, $($a: ArgOf<Rq>),*> ArgsOf<Rq> for ($($a,)*) {}
    };
}

args_of!();
args_of!(A1);
args_of!(A1, A2);
args_of!(A1, A2, A3);
args_of!(A1, A2, A3, A4);
args_of!(A1, A2, A3, A4, A5);
args_of!(A1, A2, A3, A4, A5, A6);
