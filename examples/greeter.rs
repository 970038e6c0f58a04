//! The greeter server and a client in one process, on the embedded memory transport (no
//! broker needed).
//!
//! ```text
//! cargo run --example greeter
//! ```
#[path = "common/greeter.rs"]
mod greeter;

#[micro::main]
async fn main() -> Result<(), micro::Report> {
    let _telemetry = greeter::init_tracing();
    let service = greeter::service().transport("memory://").start().await?;
    let client = micro::Client::connect("memory://").await?;
    greeter::exercise(&client).await?;
    Ok(service.stop().await?)
}
