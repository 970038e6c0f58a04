//! `micro sidecar`: an app in any language as a service, and the toolkit over HTTP for it.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser};

use super::link::LinkArgs;
use super::{parse_duration, CliError, EXIT_FAILURE};
use crate::sidecar::{Sidecar, SidecarConfig};

/// `micro sidecar` options; every flag also reads a `MICRO_SIDECAR_*` variable.
#[derive(Debug, Args)]
#[command(after_help = "\
The app is registered as the service --name with the endpoints given by --endpoint, or else those
its GET <app>/.well-known/micro lists ({\"version\": \"1.0.0\", \"endpoints\": [\"Say.Hello\"]}). A request
for Say.Hello becomes POST <app>/Say.Hello with the JSON body; see docs/sidecar.md for the headers
and the HTTP API the app calls (POST /rpc, GET /registry, POST /publish/TOPIC, WebSocket /subscribe).

Examples:
  micro sidecar --name go.micro.srv.py-greeter --app http://127.0.0.1:5000 --health /health
  micro sidecar --name shop.orders --app http://127.0.0.1:5000 --endpoint Orders.Create \\
      --subscribe-durable 'order.>=/events/order' --token \"$SIDECAR_TOKEN\"")]
pub struct SidecarArgs {
    /// The service name the app is registered as, e.g. go.micro.srv.py-greeter.
    #[arg(long, env = "MICRO_SIDECAR_NAME")]
    pub name: String,
    /// The app's base URL, e.g. http://127.0.0.1:5000.
    #[arg(long, env = "MICRO_SIDECAR_APP")]
    pub app: String,
    /// The app's health path, e.g. /health: while it fails the service is deregistered.
    #[arg(long, env = "MICRO_SIDECAR_HEALTH")]
    pub health: Option<String>,
    /// How often the health path is asked.
    #[arg(long, env = "MICRO_SIDECAR_HEALTH_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub health_interval: Duration,
    /// An endpoint the app serves (repeatable); none: read GET {app}/.well-known/micro.
    #[arg(long = "endpoint", env = "MICRO_SIDECAR_ENDPOINTS", value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// Deliver a topic's events durably to an app path, as TOPIC=/path (repeatable).
    #[arg(long = "subscribe-durable", value_name = "TOPIC=PATH", value_parser = parse_durable)]
    pub durable: Vec<(String, String)>,
    /// Deliveries of a durable event before it is dead-lettered.
    #[arg(long, env = "MICRO_SIDECAR_DURABLE_ATTEMPTS", default_value_t = 5)]
    pub durable_attempts: u32,
    /// First redelivery delay of a durable event (it doubles up to a minute).
    #[arg(long, env = "MICRO_SIDECAR_DURABLE_BACKOFF", default_value = "1s", value_parser = parse_duration)]
    pub durable_backoff: Duration,
    /// The version registered (a .well-known/micro version wins).
    #[arg(long = "service-version", env = "MICRO_SIDECAR_VERSION", default_value = "latest")]
    pub service_version: String,
    /// Address of the HTTP API the app calls.
    #[arg(long, env = "MICRO_SIDECAR_ADDRESS", default_value = "127.0.0.1:8081")]
    pub address: SocketAddr,
    /// A shared token the app must send as `Authorization: Bearer <token>`.
    #[arg(long, env = "MICRO_SIDECAR_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Browser origins allowed to call the API and open /subscribe, comma separated.
    #[arg(long = "allow-origin", env = "MICRO_SIDECAR_ORIGINS", value_delimiter = ',')]
    pub origins: Vec<String>,
    /// Time a call may take either way (to the app, and the app's /rpc calls).
    #[arg(long, env = "MICRO_SIDECAR_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Largest request body of the HTTP API in bytes.
    #[arg(long, env = "MICRO_SIDECAR_MAX_BODY", default_value_t = 1024 * 1024)]
    pub max_body: usize,
}

impl SidecarArgs {
    /// The sidecar configuration these flags describe, on `transport`.
    pub fn config(&self, transport: &str) -> SidecarConfig {
        let mut c = SidecarConfig::new(&self.name, &self.app)
            .transport(transport)
            .version(&self.service_version)
            .address(self.address)
            .origins(self.origins.iter().filter(|s| !s.is_empty()).cloned())
            .timeout(self.timeout)
            .max_body(self.max_body)
            .durable_attempts(self.durable_attempts)
            .durable_backoff(self.durable_backoff, Duration::from_secs(60));
        if let Some(h) = &self.health {
            c = c.health(h, self.health_interval);
        }
        if let Some(t) = &self.token {
            c = c.token(t);
        }
        for e in self.endpoints.iter().filter(|e| !e.is_empty()) {
            c = c.endpoint(e);
        }
        for (topic, path) in &self.durable {
            c = c.subscribe_durable(topic, path);
        }
        c
    }
}

fn parse_durable(s: &str) -> Result<(String, String), String> {
    let (topic, path) = s.rsplit_once('=').ok_or_else(|| format!("{s:?}: use TOPIC=/path"))?;
    if topic.is_empty() || !path.starts_with('/') {
        return Err(format!("{s:?}: use TOPIC=/path, e.g. order.>=/events/order"));
    }
    Ok((topic.to_string(), path.to_string()))
}

/// The `micro-sidecar` command line: `micro sidecar`'s flags, the broker's and nothing else.
///
/// ```
/// use clap::Parser;
/// use micro::cli::SidecarCli;
/// let cli = SidecarCli::parse_from(["micro-sidecar", "--name", "go.micro.srv.py", "--app", "http://127.0.0.1:5000"]);
/// let config = cli.sidecar.config("nats://127.0.0.1:4222");
/// assert_eq!((cli.sidecar.name.as_str(), cli.transport), ("go.micro.srv.py", None));
/// # let _ = config;
/// ```
#[derive(Debug, Parser)]
#[command(
    name = "micro-sidecar",
    version,
    about = "The toolkit over HTTP for an app in any language (`micro sidecar` as a binary of its own)",
    long_about = "The toolkit over HTTP for an app in any language: `micro sidecar` as a binary of its own, \
                  without the rest of the CLI, to deploy next to each app."
)]
pub struct SidecarCli {
    /// Transport URL: nats://host:port or amqp://user:pass@host:port/vhost [env: MICRO_TRANSPORT]
    /// [default: nats://127.0.0.1:4222].
    #[arg(long, value_name = "URL")]
    pub transport: Option<String>,
    /// TLS and login files for the broker.
    #[command(flatten)]
    pub link: LinkArgs,
    /// The sidecar's own flags.
    #[command(flatten)]
    pub sidecar: SidecarArgs,
}

/// `micro-sidecar`'s `main`: parses [`SidecarCli`], logs as `micro sidecar` does, serves until
/// SIGINT or SIGTERM. The binary links only the sidecar's part of the toolkit, so it is a
/// fraction of `micro`'s size and memory.
pub fn main() -> ExitCode {
    let cli = SidecarCli::parse();
    let _telemetry = crate::telemetry::init_with_default("info,lapin=off");
    let url = super::transport_url(cli.transport.as_deref(), &cli.link.query());
    match super::run_as_task(async move { run(&url, cli.sidecar).await }) {
        Ok(code) => code,
        Err(e) => {
            super::output::print_error(&*e);
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

pub(super) async fn run(transport: &str, args: SidecarArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    if !args.address.ip().is_loopback() && args.token.is_none() {
        return Err(CliError(format!(
            "--address {} is reachable from other machines: set --token so only the app can use the sidecar",
            args.address
        ))
        .into());
    }
    Sidecar::new(args.config(transport)).run().await?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durable_flags_split_at_the_last_equals() {
        assert_eq!(parse_durable("order.>=/events/order"), Ok(("order.>".into(), "/events/order".into())));
        assert!(parse_durable("order.>").is_err());
        assert!(parse_durable("order.>=events").is_err());
    }
}
