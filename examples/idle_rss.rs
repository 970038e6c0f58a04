//! Resident memory of an idle process running one service on NATS: starts a greeter, waits,
//! prints its RSS (from `/proc/self/statm`) and exits.
//!
//! ```text
//! export CARGO_TARGET_DIR=~/.cache/actix-micro-target
//! cargo run --release --example idle_rss
//! ```
//!
//! Environment: `MICRO_TRANSPORT` (default `nats://127.0.0.1:4222`), `IDLE_SECS` (default 2).
use std::time::Duration;

use micro::prelude::*;
use micro::server::resident_memory_bytes;
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Request {
    name: String,
}

#[derive(Serialize)]
struct Response {
    msg: String,
}

async fn hello(Req(req): Req<Request>) -> Result<Response, Status> {
    Ok(Response { msg: format!("Hello {}", req.name) })
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[micro::main]
async fn main() -> Result<(), micro::Report> {
    let url = std::env::var("MICRO_TRANSPORT").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let idle = std::env::var("IDLE_SECS").ok().and_then(|s| s.parse::<f64>().ok()).unwrap_or(2.0);
    let baseline = resident_memory_bytes();

    let name = format!("bench.idle.greeter.{}", std::process::id());
    let service = Service::builder(name.as_str()).transport(url.as_str()).handle("Say.Hello", hello).start().await?;
    tokio::time::sleep(Duration::from_secs_f64(idle)).await;
    let rss = resident_memory_bytes();

    println!("idle_rss: one service ({name}) on {url}, idle {idle:.1} s");
    println!("idle_rss: RSS before start {:.2} MiB", mib(baseline));
    println!("idle_rss rss_mib={:.2}", mib(rss));
    Ok(service.stop().await?)
}
