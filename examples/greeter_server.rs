//! The greeter server: serves `go.micro.srv.greeter` until SIGINT/SIGTERM, then deregisters,
//! drains and exits 0.
//!
//! ```text
//! MICRO_TRANSPORT=nats://127.0.0.1:4222 cargo run --example greeter_server
//! ```
//! Then, in another terminal, `greeter_client` with the same `MICRO_TRANSPORT`. Start several
//! servers to see calls spread over them.
#[path = "common/greeter.rs"]
mod greeter;

#[micro::main]
async fn main() -> Result<(), micro::Report> {
    let _telemetry = greeter::init_tracing();
    let url = micro::transport::resolve_url(None);
    if url.starts_with("memory://") {
        eprintln!("note: on memory:// only this process can reach the service; set MICRO_TRANSPORT=nats://127.0.0.1:4222 to serve other processes");
    }
    Ok(greeter::service().run().await?)
}
