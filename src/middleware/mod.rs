//! Middleware: code that wraps every handler of a service ([`Middleware`], added with
//! [`ServiceBuilder::wrap`](crate::ServiceBuilder::wrap)) or every call and publish of a client
//! ([`ClientMiddleware`], added with [`ClientBuilder::wrap`](crate::client::ClientBuilder::wrap)
//! or, for a service's own client, `ServiceBuilder::wrap_client`). Logging, auth, tracing and
//! metrics plug in here.
//!
//! Both kinds work the same way: a middleware gets the request and a `next` handle, and either
//! passes the request on (`next.run(req).await`, looking at the outcome on the way back) or
//! answers at once. Layers run in the order they were added: the first added is the outermost,
//! first to see the request and last to see the outcome.
//!
//! ```
//! use micro::middleware::from_fn;
//! use micro::prelude::*;
//!
//! # #[derive(serde::Serialize, serde::Deserialize)] struct Hello { name: String }
//! async fn hello(Req(h): Req<Hello>) -> Result<String, Status> { Ok(format!("Hello {}", h.name)) }
//!
//! # #[micro::main] async fn main() -> micro::Result<()> {
//! let svc = Service::builder("go.micro.srv.greeter")
//!     .transport("memory://middleware-doc")
//!     .wrap(from_fn(|req, next| async move {          // log every request and event
//!         let endpoint = req.endpoint().to_string();
//!         let outcome = next.run(req).await;
//!         tracing::info!(%endpoint, ok = outcome.is_ok(), "handled");
//!         outcome
//!     }))
//!     .wrap(from_fn(|req, next| async move {          // then: reject calls without a tenant
//!         if !req.is_event() && req.metadata().get("tenant").is_none() {
//!             return Err(Status::unauthorized("metadata key `tenant` is required"));
//!         }
//!         next.run(req).await
//!     }))
//!     .handle("Say.Hello", hello)
//!     .start().await?;
//!
//! let client = Client::connect("memory://middleware-doc").await?;
//! let err = client.call::<_, String, _>("go.micro.srv.greeter", "Say.Hello", &Hello { name: "A".into() })
//!     .await.unwrap_err();
//! assert_eq!(err.status().map(|s| s.code().as_u16()), Some(401));
//! let opts = CallOptions::new().metadata("tenant", "acme");
//! let ok: String = client.call_with("go.micro.srv.greeter", "Say.Hello", &Hello { name: "A".into() }, opts).await?;
//! assert_eq!(ok, "Hello A");
//! svc.stop().await?;
//! # Ok(()) }
//! ```
//!
//! Why not tower's `Service`: the server runs many requests at once on one single-threaded
//! arbiter, and tower's `&mut self` + `poll_ready` would need the whole stack cloned per request
//! and `Send` futures for most of its stock layers. A `next`-style chain over `&self` (as
//! actix-web's `wrap_fn`, axum's `from_fn` and go-micro's wrappers) costs one boxed future per
//! layer, nothing when there are none, and lets server middleware hold `Rc` state.
//!
//! `Debug.Health` and `Debug.Stats` are answered by the toolkit outside the service's
//! middleware, so probes work whatever a middleware rejects.

mod client;
mod server;

pub use client::{client_fn, Answer, ClientFromFn, ClientMiddleware, ClientNext, Outgoing};
pub use server::{from_fn, FromFn, Middleware, Next, Outcome};

pub(crate) use client::{ClientLayers, SendFn, Target};
pub(crate) use server::Wrapped;
