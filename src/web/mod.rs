//! The web dashboard: what runs, seen in a browser, and a reverse proxy to web services.
//!
//! Pages (server-rendered, with small scripts compiled into the binary; nothing is fetched from
//! elsewhere):
//! - `/` — every service with its versions and node count, updated live as nodes come and go
//!   (server-sent events fed by the registry watch; only changes travel).
//! - `/service/{name}` — its nodes with their `Debug.Health` and `Debug.Stats`, refreshed live;
//!   its endpoints with their metadata; a call form.
//! - `/events` — the event console: publish to a topic, subscribe to a pattern and watch events
//!   arrive with their headers.
//! - `/{name}/...` — any other path is proxied to the HTTP address registered by the service
//!   `{namespace}.{name}` (default namespace `go.micro.web`), HTTP and WebSocket, with the rules
//!   and limits of the gateway's proxy. The first path segments `service`, `events`, `static`,
//!   `api`, `live` and `health` belong to the dashboard.
//!
//! The call form and the event console are on only on a loopback address unless
//! [`WebConfig::allow_actions`] says otherwise.
//!
//! ```no_run
//! # #[actix::main] async fn main() -> std::io::Result<()> {
//! use micro::web::{Web, WebConfig};
//! let client = micro::Client::builder().name("go.micro.web").transport("nats://127.0.0.1:4222")
//!     .connect().await.map_err(std::io::Error::other)?;
//! Web::new(client, WebConfig::default()).run().await
//! # }
//! ```

use std::sync::Arc;

use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::{web, App, HttpResponse};

use crate::client::Client;
use crate::gateway::{Gateway, GatewayError};
use crate::status::Code;

mod actions;
mod config;
mod live;
mod nodes;
mod pages;

pub use config::WebConfig;

/// The id dashboard-made errors and calls carry (`Micro-Caller`).
pub const WEB_ID: &str = "go.micro.web";

/// What every dashboard worker shares.
pub(crate) struct WebState {
    pub(crate) client: Client,
    pub(crate) config: WebConfig,
    /// Turns true when the live streams must end (see [`Web::close_streams`]).
    pub(crate) closing: tokio::sync::watch::Sender<bool>,
}

impl WebState {
    /// `Ok` when the call form and the event console may act, else the 403 that says how to
    /// turn them on.
    pub(crate) fn may_act(&self) -> Result<(), GatewayError> {
        if self.config.actions_enabled() {
            return Ok(());
        }
        Err(GatewayError::new(
            Code::FORBIDDEN,
            "the call form and the event console are off on a non-loopback address: start with --allow-actions",
        ))
    }
}

/// The dashboard: a [`Client`] and a [`WebConfig`]. Mount it in your own actix-web app with
/// [`configure`](Self::configure), or serve it with [`run`](Self::run).
///
/// ```
/// use actix_web::test;
/// use micro::prelude::*;
/// use micro::web::{Web, WebConfig};
///
/// # #[micro::main] async fn main() -> micro::Result<()> {
/// let svc = Service::builder("go.micro.srv.greeter").transport("memory://web-type-doc").start().await?;
/// let web = Web::new(Client::connect("memory://web-type-doc").await?, WebConfig::default());
/// let app = test::init_service(web.app()).await;
/// let page = test::call_and_read_body(&app, test::TestRequest::get().uri("/").to_request()).await;
/// assert!(String::from_utf8_lossy(&page).contains("go.micro.srv.greeter"));
/// svc.stop().await
/// # }
/// ```
#[derive(Clone)]
pub struct Web {
    state: Arc<WebState>,
    gateway: Gateway,
}

impl std::fmt::Debug for Web {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Web").field("config", &self.state.config).finish()
    }
}

impl Web {
    /// A dashboard watching and calling with `client`.
    pub fn new(client: Client, config: WebConfig) -> Web {
        let gateway = Gateway::new(client.clone(), config.gateway());
        let closing = tokio::sync::watch::channel(false).0;
        Web { state: Arc::new(WebState { client, config, closing }), gateway }
    }

    /// Ends the live streams of every open page (registry changes, console subscriptions), so
    /// that a graceful shutdown does not wait for them to end by themselves, which they never
    /// do. Call it before stopping a server that mounts the dashboard; [`run`](Self::run) does.
    /// Streams opened afterwards end at once.
    pub fn close_streams(&self) {
        self.state.closing.send_replace(true);
    }

    /// Adds the dashboard's pages, its live streams and the proxy (for every path the
    /// dashboard does not claim) to an app. The gateway's request checks (path tricks,
    /// declared length, cross-site origin) and body deadline come with [`app`](Self::app),
    /// not with this.
    pub fn configure(&self, cfg: &mut web::ServiceConfig) {
        cfg.app_data(web::Data::from(self.state.clone()))
            .route("/", web::get().to(pages::services))
            .route("/service/{name}", web::get().to(pages::service))
            .route("/events", web::get().to(pages::console))
            .route("/static/app.css", web::get().to(pages::css))
            .route("/static/app.js", web::get().to(pages::js))
            .route("/api/services", web::get().to(live::snapshot))
            .route("/api/nodes/{name}", web::get().to(nodes::probe))
            .route("/api/health", web::get().to(nodes::health))
            .route("/api/call", web::post().to(actions::call))
            .route("/api/publish", web::post().to(actions::publish))
            .route("/live/registry", web::get().to(live::registry))
            .route("/live/events", web::get().to(live::events));
        self.gateway.configure(cfg);
    }

    /// The whole app: pages, proxy, and the gateway's checks and JSON error bodies.
    pub fn app(
        &self,
    ) -> App<
        impl actix_web::dev::ServiceFactory<
            ServiceRequest,
            Config = (),
            Response = ServiceResponse<impl actix_web::body::MessageBody>,
            Error = actix_web::Error,
            InitError = (),
        >,
    > {
        let this = self.clone();
        App::new().wrap_fn(crate::gateway::guard_and_tag).configure(move |cfg| this.configure(cfg))
    }

    /// Serves on the configured address until SIGINT/SIGTERM, then drains open requests.
    pub async fn run(self) -> std::io::Result<()> {
        let config = self.state.config.clone();
        let this = self.clone();
        let streams = self.clone();
        let listen = crate::gateway::Listen {
            address: config.address,
            workers: config.workers,
            shutdown_timeout: config.shutdown_timeout,
        };
        // Live streams never end by themselves: closed first, so the drain does not wait them out.
        let server = crate::gateway::serve_until_signal(
            move || this.app(),
            listen,
            "dashboard",
            move || streams.close_streams(),
        )?;
        tracing::info!(
            address = %config.address,
            namespace = %config.namespace,
            actions = config.actions_enabled(),
            "dashboard listening"
        );
        server.await
    }
}

/// An HTML response.
pub(crate) fn html(status: actix_web::http::StatusCode, markup: maud::Markup) -> HttpResponse {
    HttpResponse::build(status).content_type("text/html; charset=utf-8").body(markup.into_string())
}
