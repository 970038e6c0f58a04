//! The greeter service shared by the greeter examples: `Say.Hello` (an async fn) and a stateful
//! `Counter` actor serving `Counter.Add` and `Counter.Get`.
#![allow(dead_code)]

#[path = "log.rs"]
mod log;

use actix::prelude::*;
use micro::prelude::*;
use serde::{Deserialize, Serialize};

pub const SERVICE: &str = "go.micro.srv.greeter";

/// The endpoints, typed: the server binds handlers of exactly these types and clients get
/// replies of these types, with no strings to mistype.
pub const SAY_HELLO: Endpoint<Request, Response> = Endpoint::new("Say.Hello");
pub const COUNTER_ADD: Endpoint<Add, u64> = Endpoint::new("Counter.Add");
pub const COUNTER_GET: Endpoint<Get, u64> = Endpoint::new("Counter.Get");

#[derive(Serialize, Deserialize, Debug)]
pub struct Request {
    pub name: String,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct Response {
    pub msg: String,
}

/// `Say.Hello`: a plain async fn; many run at once.
pub async fn say_hello(Req(req): Req<Request>, ctx: CallContext) -> Result<Response, Status> {
    if req.name.trim().is_empty() {
        return Err(Status::bad_request("name is required"));
    }
    tracing::info!(caller = ?ctx.caller(), trace = ?ctx.trace().map(|t| t.trace_id()), "Say.Hello");
    Ok(Response { msg: format!("Hello {}", req.name) })
}

/// A stateful actor: one instance, so every request sees the same count. If it panicked it
/// would be restarted from `Counter::default` (and the count would start over).
#[derive(Default)]
pub struct Counter {
    total: u64,
}

impl Actor for Counter {
    type Context = Context<Self>;
}

#[derive(Serialize, Deserialize, Message)]
#[rtype(result = "Result<u64, Status>")]
pub struct Add {
    pub by: u64,
}

#[derive(Serialize, Deserialize, Message)]
#[rtype(result = "Result<u64, Status>")]
pub struct Get {}

impl Handler<Add> for Counter {
    type Result = Result<u64, Status>;
    fn handle(&mut self, msg: Add, _: &mut Context<Self>) -> Self::Result {
        self.total = self.total.checked_add(msg.by).ok_or_else(|| Status::bad_request("counter overflow"))?;
        Ok(self.total)
    }
}

impl Handler<Get> for Counter {
    type Result = Result<u64, Status>;
    fn handle(&mut self, _: Get, _: &mut Context<Self>) -> Self::Result {
        Ok(self.total)
    }
}

/// The greeter service description.
pub fn service() -> micro::ServiceBuilder {
    Service::builder(SERVICE)
        .version("1.0.0")
        .handle(SAY_HELLO, say_hello)
        .idempotent(SAY_HELLO)
        .actors(ActorEndpoints::new(Counter::default).route::<Add>(COUNTER_ADD.name()).route::<Get>(COUNTER_GET.name()))
}

/// What the client does: greet, count, and show an error.
pub async fn exercise(client: &Client) -> micro::Result<()> {
    let rsp = client.call(SERVICE, SAY_HELLO, &Request { name: "John".into() }).await?;
    println!("Say.Hello      -> {}", rsp.msg);
    for by in [1, 2, 3] {
        let total = client.call(SERVICE, COUNTER_ADD, &Add { by }).await?;
        println!("Counter.Add {by}  -> {total}");
    }
    match client.call(SERVICE, SAY_HELLO, &Request { name: "".into() }).await {
        Err(e) => {
            println!("Say.Hello \"\"   -> {}", serde_json::to_string(e.status().expect("a service error")).unwrap())
        }
        Ok(r) => println!("unexpected: {r:?}"),
    }
    Ok(())
}

/// Logs to stderr, filtered by `MICRO_LOG` or `RUST_LOG` (default `info`), coloured only on a
/// terminal.
#[must_use = "keep it until main ends: dropping it flushes the trace exporter"]
pub fn init_tracing() -> log::Telemetry {
    log::init("info")
}
