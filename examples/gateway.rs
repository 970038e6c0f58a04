//! The whole original Micro flow in one process, on the embedded memory transport:
//! HTTP → gateway → `go.micro.api.greeter` (api service) → `go.micro.srv.greeter` (srv service)
//! → back.
//!
//! ```text
//! cargo run --features gateway --example gateway
//! curl 'http://127.0.0.1:8080/greeter/say/hello?name=John'          # {"message":"Hello John"}
//! curl -d 'service=go.micro.srv.greeter' -d 'method=Say.Hello' -d 'request={"name": "John"}' \
//!      http://127.0.0.1:8080/rpc                                    # {"msg":"Hello John"}
//! ```
//! Set `MICRO_TRANSPORT` to run the same three parts over NATS or RabbitMQ (or run them as
//! separate processes: `greeter_server`, `api_greeter`, `micro api`).
#[path = "common/api_greeter.rs"]
mod api_greeter;
#[path = "common/greeter.rs"]
mod greeter;

use micro::gateway::{Gateway, GatewayConfig, GATEWAY_ID};

#[micro::main]
async fn main() -> Result<(), micro::Report> {
    let _telemetry = greeter::init_tracing();
    let url = micro::transport::resolve_url(None);
    let srv = greeter::service().transport(&url).start().await?;
    let api = api_greeter::service().transport(&url).start().await?;
    let client = micro::Client::builder().name(GATEWAY_ID).transport(&url).connect().await?;
    let address = std::env::var("MICRO_API_ADDRESS").unwrap_or_else(|_| "127.0.0.1:8080".into()).parse()?;
    println!("gateway on http://{address}: try curl 'http://{address}/greeter/say/hello?name=John'");
    Gateway::new(client, GatewayConfig::default().address(address).rpc_namespaces(["go.micro.srv"])).run().await?;
    api.stop().await?;
    srv.stop().await?;
    Ok(())
}
