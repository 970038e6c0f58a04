//! `micro web`: the dashboard and the web-service proxy.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::parse_duration;
use crate::client::Client;
use crate::web::{Web, WebConfig, WEB_ID};

/// `micro web` options; every flag also reads a `MICRO_WEB_*` variable.
#[derive(Debug, Args)]
#[command(after_help = "\
Open http://127.0.0.1:8082/ for the services, their nodes (health, stats), a call form and an
event console. Any other path /NAME/... is proxied to the HTTP address registered by the service
NAMESPACE.NAME (HTTP and WebSocket).

The call form and the event console can act on the system: on a non-loopback --address they are
off unless --allow-actions turns them on (and then anyone who reaches the page can use them).")]
pub struct WebArgs {
    /// Address to listen on.
    #[arg(long, env = "MICRO_WEB_ADDRESS", default_value = "127.0.0.1:8082")]
    pub address: SocketAddr,
    /// Namespace of the web services /NAME/... is proxied to.
    #[arg(long, env = "MICRO_WEB_NAMESPACE", default_value = "go.micro.web")]
    pub namespace: String,
    /// Turn the call form and the event console on even on a non-loopback address.
    #[arg(long, env = "MICRO_WEB_ALLOW_ACTIONS")]
    pub allow_actions: bool,
    /// Time a call from the form, or a proxied request, may take (e.g. 10s, 500ms).
    #[arg(long, env = "MICRO_WEB_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Largest request body in bytes; larger ones get 413.
    #[arg(long, env = "MICRO_WEB_MAX_BODY", default_value_t = 1024 * 1024)]
    pub max_body: usize,
}

impl WebArgs {
    /// The dashboard configuration these flags describe.
    pub fn config(&self) -> WebConfig {
        WebConfig::default()
            .address(self.address)
            .namespace(&self.namespace)
            .allow_actions(self.allow_actions)
            .timeout(self.timeout)
            .max_body(self.max_body)
    }
}

pub(super) async fn run(transport: &str, args: WebArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let client = Client::builder().name(WEB_ID).transport(transport).connect().await?;
    let config = args.config();
    if !config.actions_enabled() {
        super::output::note(&format!(
            "{} is not a loopback address: the call form and the event console are off (--allow-actions turns them on)",
            config.address
        ));
    }
    Web::new(client, config).run().await?;
    Ok(ExitCode::SUCCESS)
}
