//! The smallest service, served and called in one process on the embedded memory transport.
//!
//! ```text
//! cargo run --example hello_world
//! ```
#[path = "common/log.rs"]
mod log;

use micro::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Request {
    name: String,
}

#[derive(Serialize, Deserialize, Debug)]
struct Response {
    msg: String,
}

/// The endpoint, typed: `handle` accepts only a handler of these types, `call` infers the reply.
const SAY_HELLO: Endpoint<Request, Response> = Endpoint::new("Say.Hello");

async fn hello(Req(req): Req<Request>) -> Result<Response, Status> {
    if req.name.is_empty() {
        return Err(Status::bad_request("name is required"));
    }
    Ok(Response { msg: format!("Hello {}", req.name) })
}

#[micro::main]
async fn main() -> Result<(), micro::Report> {
    let _telemetry = log::init("warn");
    let service = Service::builder("go.micro.srv.greeter").version("1.0.0").handle(SAY_HELLO, hello).start().await?;

    let client = service.client();
    let rsp = client.call("go.micro.srv.greeter", SAY_HELLO, &Request { name: "John".into() }).await?;
    println!("{}", rsp.msg);

    let err = client.call("go.micro.srv.greeter", SAY_HELLO, &Request { name: "".into() }).await.unwrap_err();
    println!("empty name -> {err}");

    Ok(service.stop().await?)
}
