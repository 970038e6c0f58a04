//! A web service: `go.micro.web.hello` serves a page and a WebSocket echo over HTTP, and
//! registers its HTTP address so that `micro web` proxies `/hello/` to it.
//!
//! ```text
//! MICRO_TRANSPORT=nats://127.0.0.1:4222 cargo run --features web --example web_hello
//! cargo run --features cli --bin micro -- web          # then open http://127.0.0.1:8082/hello/
//! ```
//!
//! `HELLO_ADDRESS` picks the HTTP address (default `127.0.0.1:0`: any free port).

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use futures::StreamExt;
use micro::prelude::*;

/// The service the dashboard's proxy finds for `/hello/...`.
pub const SERVICE: &str = "go.micro.web.hello";

const PAGE: &str = include_str!("page.html");

async fn page() -> HttpResponse {
    HttpResponse::Ok().content_type("text/html; charset=utf-8").body(PAGE)
}

/// Echoes every text message back, prefixed with `echo: `.
async fn echo(req: HttpRequest, body: web::Payload) -> Result<HttpResponse, actix_web::Error> {
    let (rsp, mut session, stream) = actix_ws::handle(&req, body)?;
    let mut stream = stream.max_frame_size(64 * 1024);
    actix_rt::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            let sent = match msg {
                actix_ws::Message::Text(t) => session.text(format!("echo: {t}")).await,
                actix_ws::Message::Ping(p) => session.pong(&p).await,
                actix_ws::Message::Close(reason) => {
                    let _ = session.close(reason).await;
                    return;
                }
                _ => Ok(()),
            };
            if sent.is_err() {
                return;
            }
        }
    });
    Ok(rsp)
}

#[micro::main]
async fn main() -> Result<(), micro::Report> {
    let address = std::env::var("HELLO_ADDRESS").unwrap_or_else(|_| "127.0.0.1:0".into());
    let server = HttpServer::new(|| App::new().route("/", web::get().to(page)).route("/ws", web::get().to(echo)))
        .workers(1)
        .disable_signals()
        .bind(&address)?;
    let http = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);

    // The node's `http` metadata is the address the dashboard's proxy may reach: only addresses
    // from the registry are ever proxied to.
    let service = Service::builder(SERVICE)
        .version("1.0.0")
        .metadata(micro::gateway::HTTP_ADDRESS_KEY, http.to_string())
        .start()
        .await?;
    println!("{SERVICE} serves http://{http}/ (through micro web: http://127.0.0.1:8082/hello/)");
    let served = service.serve().await;
    handle.stop(true).await;
    Ok(served?)
}
