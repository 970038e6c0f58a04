//! # actix-micro
//!
//! A microservices toolkit on actix actors, in the spirit of Micro / go-micro: services are
//! supervised actor systems that serve endpoints (`Say.Hello`) and subscribe to topics; requests
//! and events travel over NATS, RabbitMQ or in memory; a gossip registry, a selector and a broker do
//! discovery, client-side load balancing and pub/sub.
//!
//! ```
//! use micro::prelude::*;
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Request { name: String }
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Response { msg: String }
//!
//! async fn hello(Req(r): Req<Request>) -> Result<Response, Status> {
//!     Ok(Response { msg: format!("Hello {}", r.name) })
//! }
//!
//! # #[micro::main] async fn main() -> micro::Result<()> {
//! let svc = Service::builder("go.micro.srv.greeter")
//!     .transport("memory://lib-doc")            // the embedded default; or nats://127.0.0.1:4222
//!     .handle("Say.Hello", hello)
//!     .start().await?;                           // or .run().await to serve until SIGTERM
//! let client = Client::connect("memory://lib-doc").await?;
//! let rsp: Response = client.call("go.micro.srv.greeter", "Say.Hello", &Request { name: "John".into() }).await?;
//! assert_eq!(rsp.msg, "Hello John");
//! svc.stop().await?;
//! # Ok(()) }
//! ```
//!
//! ## Features
//!
//! | feature | default | what |
//! |---|---|---|
//! | `nats` | yes | the `nats://` transport (async-nats) |
//! | `rabbitmq` | yes | the `amqp://` transport (lapin; `amqps://` with `tls`) |
//! | `gateway` | no | the actix-web API gateway (`micro::gateway`) |
//! | `web` | no | the web dashboard and web-service proxy (`micro::web`; implies `gateway`) |
//! | `sidecar` | no | `micro::sidecar`: the toolkit over HTTP for apps in any language (implies `gateway`) |
//! | `kv` | no | `micro::kv` (memory, NATS JetStream KV) and `micro::sync` (locks, leader election) |
//! | `redis` | no | the Redis backend of `micro::kv` and `micro::sync` |
//! | `config` | no | `micro::config`: typed layered config (defaults, TOML/YAML/JSON, env, kv), hot reload |
//! | `prometheus` | no | the Prometheus recorder and `/metrics` (`micro::metrics::prometheus`, `ServiceBuilder::metrics_addr`) |
//! | `bot` | no | `micro::bot`: the CLI over IRC, XMPP, Slack and a terminal |
//! | `tls` | no | `amqps://` RabbitMQ over rustls (NATS TLS needs no feature) |
//! | `nkeys` | no | NATS NKey and `.creds` logins |
//! | `cli` | no | the `micro` binary and `micro::cli` (implies every feature above but `test-util`) |
//! | `telemetry` | no | `micro::telemetry::init()`: log lines for binaries (human or JSON with trace ids) |
//! | `otel` | no | OTLP export of the spans through `telemetry::init()` (implies `telemetry`) |
//! | `test-util` | no | helpers for tests: broker URLs that fail loudly, unique names, wait-for |
//!
//! A service needs only the defaults; the gateway and the command line pull in actix-web, clap
//! and the terminal crates, so they are opt-in. Install the `micro` binary with
//! `cargo install actix-micro --features cli` (from a checkout: `cargo install --path . --features cli`,
//! or run it in place with `cargo run --features cli --bin micro -- ...`).
//!
//! The wire protocol is in `docs/protocol.md`; the parts and flows in `ARCHITECTURE.md`.
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms, unreachable_pub)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod api;
#[cfg(feature = "auth")]
#[cfg_attr(docsrs, doc(cfg(feature = "auth")))]
pub mod auth;
#[cfg(feature = "bot")]
#[cfg_attr(docsrs, doc(cfg(feature = "bot")))]
pub mod bot;
pub mod broker;
#[cfg(feature = "cli")]
#[cfg_attr(docsrs, doc(cfg(feature = "cli")))]
pub mod cli;
pub mod client;
pub mod codec;
#[cfg(feature = "config")]
#[cfg_attr(docsrs, doc(cfg(feature = "config")))]
pub mod config;
pub mod context;
pub mod dev;
pub mod endpoint;
pub mod error;
#[cfg(feature = "gateway")]
#[cfg_attr(docsrs, doc(cfg(feature = "gateway")))]
pub mod gateway;
pub mod health;
#[cfg(feature = "kv")]
#[cfg_attr(docsrs, doc(cfg(feature = "kv")))]
pub mod kv;
pub mod message;
pub mod metrics;
pub mod middleware;
pub mod registry;
pub mod selector;
pub mod server;
pub mod service;
#[cfg(feature = "sidecar")]
#[cfg_attr(docsrs, doc(cfg(feature = "sidecar")))]
pub mod sidecar;
pub mod status;
pub mod subject;
#[cfg(feature = "kv")]
#[cfg_attr(docsrs, doc(cfg(feature = "kv")))]
pub mod sync;
pub mod telemetry;
pub mod transport;
#[cfg(feature = "web")]
#[cfg_attr(docsrs, doc(cfg(feature = "web")))]
pub mod web;

#[cfg(test)]
mod wire_properties;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

#[cfg(any(test, feature = "test-util"))]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod test_util;

pub use actix_micro_macros::{main, test};

/// The wire protocol version a node announces in its registry metadata (`protocol`), as
/// described in `docs/protocol.md`.
pub const PROTOCOL: &str = "micro/2";
pub use broker::{Broker, Event, PublishOptions, SubscribeOptions};
pub use client::{CallOptions, Client, RetryPolicy};
pub use codec::Codec;
pub use context::{CallContext, Identity};
pub use endpoint::Endpoint;
pub use error::{Error, ErrorKind, Report, Result};
pub use message::{Metadata, TraceParent};
pub use server::{ActorEndpoints, Meta, Req, RestartPolicy, State};
pub use service::{Service, ServiceBuilder, ServiceHandle};
pub use status::{Code, Status};

#[doc(hidden)]
pub mod __private {
    //! What `#[micro::main]` and `#[micro::test]` expand to.
    pub use actix::__private::{main, test};
    pub use actix::System;
}

/// What a service author needs: `use micro::prelude::*;`.
pub mod prelude {
    pub use crate::broker::Broker;
    pub use crate::broker::{PublishOptions, SubscribeOptions};
    pub use crate::client::{CallOptions, Client, RetryPolicy};
    pub use crate::context::CallContext;
    pub use crate::endpoint::Endpoint;
    pub use crate::error::Error;
    pub use crate::message::Metadata;
    pub use crate::server::{ActorEndpoints, Meta, Req, RestartPolicy, State};
    pub use crate::service::Service;
    pub use crate::service::ServiceHandle;
    pub use crate::status::{Code, Status};
    pub use crate::Codec;
}

/// The README's Rust blocks compile (those not marked `ignore`), so its quickstart is code a
/// newcomer can paste.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
