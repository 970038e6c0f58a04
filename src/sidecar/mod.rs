//! The sidecar: the toolkit over HTTP for an app in any language, running next to it.
//!
//! - **The app as a service.** The sidecar registers the app under a service name with the
//!   endpoints it declares (by configuration, or in `GET {app}/.well-known/micro`), through the
//!   ordinary [`Service`](crate::Service) machinery. A request for `Handler.Method` becomes
//!   `POST {app}/Handler.Method` with the JSON body and the deadline, trace and metadata as
//!   headers; an HTTP error status becomes that code with the app's body as detail, an app
//!   that cannot be reached a 503. While the app's health check fails the service is deregistered.
//! - **Durable events to the app.** Each [`SidecarConfig::subscribe_durable`] topic is delivered
//!   to an app path: a 2xx acknowledges, anything else retries or dead-letters as
//!   [`ServiceBuilder::subscribe_durable`](crate::ServiceBuilder::subscribe_durable) does.
//! - **The app's HTTP API** (127.0.0.1 by default): `POST /rpc` (the gateway's),
//!   `GET /registry`, `GET /registry/{name}`, `POST /publish/{topic}` (`?durable=true`), and the
//!   WebSocket `GET /subscribe?topic=..&group=..`, with the gateway's limits and an optional
//!   shared token.
//!
//! The HTTP contract is in `docs/sidecar.md`.
//!
//! ```no_run
//! use std::time::Duration;
//! use micro::sidecar::{Sidecar, SidecarConfig};
//! # #[micro::main] async fn main() -> micro::Result<()> {
//! let config = SidecarConfig::new("go.micro.srv.py-greeter", "http://127.0.0.1:5000")
//!     .transport("nats://127.0.0.1:4222")
//!     .health("/health", Duration::from_secs(5))
//!     .endpoint("Say.Hello");
//! Sidecar::new(config).run().await // until SIGINT/SIGTERM, then deregisters
//! # }
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use actix_web::{web, HttpServer};
use tokio::sync::watch;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::gateway::Gateway;

mod app;
mod config;
mod conns;
mod http;
mod json;
mod register;

pub use config::SidecarConfig;

/// A sidecar for one app; [`start`](Self::start) it, or [`run`](Self::run) it until a signal.
///
/// ```
/// use micro::sidecar::{Sidecar, SidecarConfig};
/// # #[micro::main] async fn main() -> micro::Result<()> {
/// let config = SidecarConfig::new("go.micro.srv.py", "http://127.0.0.1:9")
///     .transport("memory://sidecar-doc")
///     .address("127.0.0.1:0".parse().unwrap())
///     .endpoint("Say.Hello");
/// let sidecar = Sidecar::new(config).start().await?;
/// println!("the app calls http://{}/rpc", sidecar.address());
/// sidecar.stop().await
/// # }
/// ```
#[derive(Debug)]
pub struct Sidecar {
    config: SidecarConfig,
}

/// A running sidecar. [`stop`](Self::stop) deregisters the app and closes the HTTP API.
#[derive(Debug)]
pub struct SidecarHandle {
    address: SocketAddr,
    server: actix_web::dev::ServerHandle,
    stop_tx: watch::Sender<bool>,
    registered: watch::Receiver<bool>,
    keeper: actix_rt::task::JoinHandle<()>,
    client: Client,
}

impl Sidecar {
    /// A sidecar with these settings.
    pub fn new(config: SidecarConfig) -> Sidecar {
        Sidecar { config }
    }

    /// Checks the settings, connects, serves the HTTP API and starts registering the app (at
    /// once, or once its health check passes).
    pub async fn start(self) -> Result<SidecarHandle> {
        let config = self.config;
        config.check()?;
        let app = app::AppClient::new(&config.app, &config.name, config.timeout)?;
        let health = config.health.as_deref().map(|p| app.path(p)).transpose()?;
        let client = Client::builder().name(config.name.clone()).transport(config.transport.clone()).connect().await?;
        let gateway = Gateway::new(client.clone(), config.gateway());
        let (stop_tx, stop_rx) = watch::channel(false);
        let api = web::Data::new(http::Api {
            client: client.clone(),
            token: config.token.clone(),
            origins: config.origins.clone(),
            stopping: stop_rx.clone(),
        });
        let server = HttpServer::new(move || http::app(&gateway, api.clone()))
            .workers(config.workers)
            .client_request_timeout(Duration::from_secs(10))
            .shutdown_timeout(config.timeout.as_secs().max(1))
            .disable_signals()
            .bind(config.address)
            .map_err(|e| Error::config(format!("cannot listen on {}: {e}", config.address)))?;
        let address = server.addrs().first().copied().unwrap_or(config.address);
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!(error = %e, "the sidecar's HTTP server failed");
            }
        });
        tracing::info!(%address, service = %config.name, app = %config.app, "sidecar listening");
        let (registered_tx, registered) = watch::channel(false);
        let keeper = actix_rt::spawn(register::keep_registered(config, app, health, stop_rx, registered_tx));
        Ok(SidecarHandle { address, server: handle, stop_tx, registered, keeper, client })
    }

    /// Starts, serves until SIGINT or SIGTERM, then stops (deregisters the app first).
    pub async fn run(self) -> Result<()> {
        let handle = self.start().await?;
        let signal = crate::service::shutdown_signal().await;
        handle.stop().await?;
        signal
    }
}

impl SidecarHandle {
    /// Where the HTTP API listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Whether the app is registered now (healthy, and its endpoints known).
    pub fn is_registered(&self) -> bool {
        *self.registered.borrow()
    }

    /// Resolves once the app's registration is `registered` (true: registered; false: not).
    pub async fn wait_registered(&mut self, registered: bool) {
        let _ = self.registered.wait_for(|r| *r == registered).await;
    }

    /// Deregisters the app, then closes the HTTP API (open requests finish first).
    pub async fn stop(self) -> Result<()> {
        self.stop_tx.send_replace(true);
        let _ = self.keeper.await;
        self.server.stop(true).await;
        self.client.registry().stop();
        let _ = self.client.transport().close().await;
        Ok(())
    }
}
