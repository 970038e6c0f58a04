//! The `micro` command line: each subcommand as a library function, so `bin/micro.rs` stays a
//! thin `main`.
//!
//! ```text
//! micro api --handler api --address 127.0.0.1:8080      # the API gateway
//! ```

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::gateway::{GatewayConfig, HandlerKind};

mod api;

/// Default transport of the CLI: memory cannot see other processes, so NATS.
pub const DEFAULT_CLI_TRANSPORT: &str = "nats://127.0.0.1:4222";

/// The `micro` command line.
#[derive(Debug, Parser)]
#[command(name = "micro", version, about = "Run and inspect actix-micro services", propagate_version = true)]
pub struct Cli {
    /// Transport URL: nats://host:port or amqp://user:pass@host:port/vhost. The default is NATS
    /// on this machine, because memory:// cannot see other processes.
    #[arg(long, global = true, env = "MICRO_TRANSPORT", default_value = DEFAULT_CLI_TRANSPORT)]
    pub transport: String,

    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum Command {
    /// Run the API gateway: HTTP in, RPC and events out.
    Api(ApiArgs),
}

/// `micro api` options; every flag also reads a `MICRO_API_*` variable.
#[derive(Debug, Args)]
pub struct ApiArgs {
    /// Address to listen on.
    #[arg(long, env = "MICRO_API_ADDRESS", default_value = "127.0.0.1:8080")]
    pub address: SocketAddr,
    /// Namespace of the services paths resolve to.
    #[arg(long, env = "MICRO_API_NAMESPACE", default_value = "go.micro.api")]
    pub namespace: String,
    /// Handler for paths no --route claims: api, rpc, proxy or event.
    #[arg(long, env = "MICRO_API_HANDLER", default_value = "api")]
    pub handler: HandlerKind,
    /// A handler for a path prefix, as PREFIX=HANDLER (repeatable), e.g. --route /rpcapi=rpc.
    #[arg(long = "route", env = "MICRO_API_ROUTES", value_delimiter = ',', value_parser = parse_route)]
    pub routes: Vec<(String, HandlerKind)>,
    /// Prefix of the event handler (`POST <prefix>/<topic>`); empty turns it off.
    #[arg(long, env = "MICRO_API_EVENT_PREFIX", default_value = "/event")]
    pub event_prefix: String,
    /// Path of the /rpc endpoint; empty turns it off.
    #[arg(long, env = "MICRO_API_RPC_PATH", default_value = "/rpc")]
    pub rpc_path: String,
    /// Time an HTTP request may take; it becomes the RPC deadline (e.g. 10s, 500ms).
    #[arg(long, env = "MICRO_API_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Largest request body in bytes; larger ones get 413.
    #[arg(long, env = "MICRO_API_MAX_BODY", default_value_t = 1024 * 1024)]
    pub max_body: usize,
    /// Origins allowed for CORS, comma separated (`*` allows any origin, without credentials).
    #[arg(long, env = "MICRO_API_CORS", value_delimiter = ',')]
    pub cors: Vec<String>,
    /// HTTP headers copied into RPC metadata, comma separated (X-Request-Id always is).
    #[arg(long, env = "MICRO_API_METADATA_HEADERS", value_delimiter = ',')]
    pub metadata_headers: Vec<String>,
    /// HTTP worker threads (0: one per core).
    #[arg(long, env = "MICRO_API_WORKERS", default_value_t = 0)]
    pub workers: usize,
}

impl ApiArgs {
    /// The gateway configuration these flags describe.
    pub fn config(&self) -> GatewayConfig {
        let nonempty = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let mut c = GatewayConfig::default()
            .address(self.address)
            .namespace(&self.namespace)
            .handler(self.handler)
            .event_prefix(nonempty(&self.event_prefix))
            .rpc_path(nonempty(&self.rpc_path))
            .timeout(self.timeout)
            .max_body(self.max_body)
            .cors(self.cors.iter().filter(|s| !s.is_empty()).cloned())
            .metadata_headers(self.metadata_headers.iter().filter(|s| !s.is_empty()).cloned())
            .workers(self.workers);
        for (prefix, h) in &self.routes {
            c = c.route(prefix.clone(), *h);
        }
        c
    }
}

fn parse_route(s: &str) -> Result<(String, HandlerKind), String> {
    let (prefix, handler) = s.split_once('=').ok_or_else(|| format!("{s:?}: use PREFIX=HANDLER"))?;
    Ok((prefix.to_string(), handler.parse()?))
}

/// Parses `500ms`, `10s`, `2m`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len()));
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration (try 500ms, 10s, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s or m)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// Runs the command line: parses arguments, runs the command, maps failure to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = actix_rt::System::new().block_on(run(cli));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MICRO_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// Runs a parsed command.
pub async fn run(cli: Cli) -> Result<ExitCode, Box<dyn std::error::Error>> {
    match cli.command {
        Command::Api(args) => api::run(&cli.transport, args).await,
    }
}
