//! The greeter api service on its own: put it behind `micro api`.
//!
//! ```text
//! export MICRO_TRANSPORT=nats://127.0.0.1:4222        # or amqp://guest:guest@127.0.0.1:5672/%2f
//! cargo run --example greeter_server &
//! cargo run --example api_greeter &
//! cargo run --features cli --bin micro -- api &
//! curl 'http://127.0.0.1:8080/greeter/say/hello?name=John'
//! ```
#[path = "common/api_greeter.rs"]
mod api_greeter;
#[path = "common/greeter.rs"]
mod greeter;

#[micro::main]
async fn main() -> Result<(), micro::Report> {
    let _telemetry = greeter::init_tracing();
    Ok(api_greeter::service().run().await?)
}
