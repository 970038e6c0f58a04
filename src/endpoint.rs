//! Typed endpoints: one descriptor, shared by the service that serves an endpoint and the
//! clients that call it, fixes the endpoint's name and its request and response types. No
//! code generation: it is a `const`.
//!
//! ```
//! use micro::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)] pub struct Request { pub name: String }
//! #[derive(Serialize, Deserialize)] pub struct Response { pub msg: String }
//!
//! pub const SERVICE: &str = "go.micro.srv.greeter";
//! pub const SAY_HELLO: Endpoint<Request, Response> = Endpoint::new("Say.Hello");
//!
//! async fn hello(Req(r): Req<Request>) -> Result<Response, Status> {
//!     Ok(Response { msg: format!("Hello {}", r.name) })
//! }
//!
//! # #[micro::main] async fn main() -> micro::Result<()> {
//! let svc = Service::builder(SERVICE)
//!     .transport("memory://endpoint-doc")
//!     .handle(SAY_HELLO, hello)                   // a handler of other types does not compile
//!     .start().await?;
//! let client = Client::connect("memory://endpoint-doc").await?;
//! let rsp = client.call(SERVICE, SAY_HELLO, &Request { name: "John".into() }).await?; // rsp: Response
//! assert_eq!(rsp.msg, "Hello John");
//! svc.stop().await?;
//! # Ok(()) }
//! ```
//!
//! A handler whose types do not match the descriptor is a compile error, not a 400 at run time:
//!
//! ```compile_fail
//! use micro::prelude::*;
//! # #[derive(serde::Serialize, serde::Deserialize)] pub struct Request { pub name: String }
//! # #[derive(serde::Serialize, serde::Deserialize)] pub struct Response { pub msg: String }
//! const SAY_HELLO: Endpoint<Request, Response> = Endpoint::new("Say.Hello");
//! async fn count(Req(n): Req<u64>) -> Result<u64, Status> { Ok(n + 1) }
//! let _ = Service::builder("go.micro.srv.greeter").handle(SAY_HELLO, count);
//! ```
//!
//! The string forms stay for dynamic callers (the gateway, the CLI, tools): `.handle("Say.Hello",
//! hello)` and `client.call::<_, Response, _>(SERVICE, "Say.Hello", &req)`.

use std::fmt;
use std::marker::PhantomData;

/// An endpoint's name with its request type `Req` and response type `Rsp`.
///
/// Serve it with `ServiceBuilder::handle(ENDPOINT, handler)` and call it with
/// [`Client::call`](crate::Client::call); the reply type is inferred. See the
/// [module documentation](self) for a full example.
pub struct Endpoint<Req, Rsp> {
    name: &'static str,
    _types: PhantomData<fn(Req) -> Rsp>,
}

impl<Req, Rsp> Endpoint<Req, Rsp> {
    /// A descriptor for the endpoint `name` (`Handler.Method`).
    ///
    /// ```
    /// # #[derive(serde::Serialize, serde::Deserialize)] pub struct Add { by: u64 }
    /// pub const COUNTER_ADD: micro::Endpoint<Add, u64> = micro::Endpoint::new("Counter.Add");
    /// assert_eq!(COUNTER_ADD.name(), "Counter.Add");
    /// ```
    pub const fn new(name: &'static str) -> Self {
        Endpoint { name, _types: PhantomData }
    }

    /// The endpoint's name on the wire.
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

impl<Req, Rsp> Clone for Endpoint<Req, Rsp> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<Req, Rsp> Copy for Endpoint<Req, Rsp> {}

impl<Req, Rsp> fmt::Debug for Endpoint<Req, Rsp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Endpoint<{}, {}>({:?})", std::any::type_name::<Req>(), std::any::type_name::<Rsp>(), self.name)
    }
}

impl<Req, Rsp> AsRef<str> for Endpoint<Req, Rsp> {
    fn as_ref(&self) -> &str {
        self.name
    }
}

impl<Req, Rsp> fmt::Display for Endpoint<Req, Rsp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// What a client can name an endpoint with: a typed [`Endpoint`] (which fixes the request and
/// reply types) or a string (any types, for dynamic callers).
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not name an endpoint taking `{Req}` and answering `{Rsp}`",
    note = "pass an `Endpoint<{Req}, {Rsp}>` descriptor, or the endpoint's name as a string"
)]
pub trait EndpointName<Req: ?Sized, Rsp> {
    /// The endpoint's name on the wire.
    fn endpoint_name(&self) -> &str;
}

impl<Req, Rsp> EndpointName<Req, Rsp> for Endpoint<Req, Rsp> {
    fn endpoint_name(&self) -> &str {
        self.name
    }
}

impl<Req: ?Sized, Rsp> EndpointName<Req, Rsp> for &str {
    fn endpoint_name(&self) -> &str {
        self
    }
}

impl<Req: ?Sized, Rsp> EndpointName<Req, Rsp> for String {
    fn endpoint_name(&self) -> &str {
        self
    }
}

impl<Req: ?Sized, Rsp> EndpointName<Req, Rsp> for &String {
    fn endpoint_name(&self) -> &str {
        self
    }
}
