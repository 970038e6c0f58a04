//! The greeter client: discovers `go.micro.srv.greeter` and calls it.
//!
//! ```text
//! MICRO_TRANSPORT=nats://127.0.0.1:4222 cargo run --example greeter_client
//! ```
#[path = "common/greeter.rs"]
mod greeter;

#[micro::main]
async fn main() -> Result<(), micro::Report> {
    let _telemetry = greeter::init_tracing();
    let client = micro::Client::connect(&micro::transport::resolve_url(None)).await?;
    Ok(greeter::exercise(&client).await?)
}
