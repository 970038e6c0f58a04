//! The `micro` command line: each subcommand as a library function, so `bin/micro.rs` stays a
//! thin `main`.
//!
//! ```text
//! micro services                                          # what runs, which versions, how many nodes
//! micro service go.micro.srv.greeter                      # its nodes and endpoints
//! micro call go.micro.srv.greeter Say.Hello '{"name":"John"}'
//! micro health go.micro.srv.greeter                       # ask every node
//! micro api --handler api --address 127.0.0.1:8080        # the API gateway
//! micro web --address 127.0.0.1:8082                      # the web dashboard and proxy
//! micro sidecar --name go.micro.srv.py --app http://127.0.0.1:5000 --health /health
//! micro --proxy-address http://127.0.0.1:8081 services    # through a sidecar, no broker access
//! micro kv put greeter.motd hello --ttl 1h                # the kv store (--kv URL or MICRO_KV)
//! micro config set audit retention_days 30 --env prod     # config documents in the kv store
//! micro auth serve --http 127.0.0.1:8090                  # accounts, tokens, rules (docs/auth.md)
//! micro login --id admin                                  # a token, cached 0600 for `micro auth ...`
//! ```
//!
//! Exit codes: 0 success; 1 the command failed here (broker unreachable, unknown service, bad
//! JSON input, timeout); 2 bad usage (clap); 3 the service answered with an error (`call`), or
//! a node is unhealthy or silent (`health`, `stats`).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::gateway::{GatewayConfig, HandlerKind};

mod api;
mod auth;
mod bot;
mod call;
mod completions;
mod events;
mod input;
mod kv;
mod link;
mod nodes;
mod output;
mod proxy;
mod registry;
mod sidecar;
mod subscriptions;
mod suggest;
mod web;

pub use auth::{
    token_file, AccountsCommand, ApiKeysCommand, AuthArgs, AuthCommand, LoginArgs, RulesCommand, ServeArgs,
};
pub use bot::BotArgs;
pub use call::CallArgs;
pub use completions::CompletionsArgs;
pub use events::{PublishArgs, SubscribeArgs};
pub use input::ContentType;
pub use kv::{ConfigArgs, ConfigCommand, KvArgs, KvCommand, StoreArgs};
pub use link::LinkArgs;
pub use nodes::NodesArgs;
pub use output::OutputFormat;
pub use proxy::PROXY_TOKEN_ENV;
pub use registry::{ServiceArgs, WatchArgs};
pub use sidecar::{main as sidecar_main, SidecarArgs, SidecarCli};
pub use subscriptions::{GroupsArgs, GroupsCommand};
pub use web::WebArgs;

/// Default transport of the CLI: memory cannot see other processes, so NATS.
pub const DEFAULT_CLI_TRANSPORT: &str = "nats://127.0.0.1:4222";

/// The name the CLI calls and publishes as (`Micro-Caller`, `Micro-Publisher`).
pub const CLI_ID: &str = "go.micro.cli";

/// Exit code: the command could not do its work here (broker unreachable, unknown service, bad
/// JSON input, timeout).
pub const EXIT_FAILURE: u8 = 1;
/// Exit code: the service answered with an error (`call`), or a node is unhealthy or did not
/// answer (`health`, `stats`). (2 is clap's code for bad usage.)
pub const EXIT_REMOTE: u8 = 3;

const AFTER_HELP: &str = "\
Output: list commands (services, service, health, stats, watch) print tables on a terminal and
JSON when stdout is not a terminal (a pipe, a file); --output json|table overrides that. `call`
prints the reply as JSON; `subscribe` prints one JSON line per event. NO_COLOR turns colours off.

Exit codes: 0 success; 1 the command failed here (broker unreachable, unknown service, bad JSON
input, timeout); 2 bad usage; 3 the service answered with an error (call), or a node is
unhealthy or did not answer (health, stats).";

/// The `micro` command line.
#[derive(Debug, Parser)]
#[command(
    name = "micro",
    version,
    about = "Run and inspect actix-micro services",
    long_about = "Run and inspect actix-micro services: list them, call them, check their health, \
                  publish and subscribe to events, watch the registry.\n\n\
                  The transport defaults to NATS on this machine (nats://127.0.0.1:4222), not \
                  memory://, because memory:// cannot see other processes.",
    after_help = AFTER_HELP,
    propagate_version = true
)]
pub struct Cli {
    /// Transport URL: nats://host:port or amqp://user:pass@host:port/vhost [env: MICRO_TRANSPORT]
    /// [default: nats://127.0.0.1:4222, not memory://, which cannot see other processes].
    // MICRO_TRANSPORT is read in `run`, not by clap: clap counts an environment value as a
    // flag given, and would print `--transport <URL>` in every usage line as if it were required.
    #[arg(long, global = true, value_name = "URL")]
    pub transport: Option<String>,

    /// Run services, call and publish through a sidecar's HTTP API (http://host:port) instead
    /// of the broker [env: MICRO_PROXY_ADDRESS]; its token, if any, from MICRO_PROXY_TOKEN.
    #[arg(long, global = true, value_name = "URL")]
    pub proxy_address: Option<String>,

    /// Output format of list commands; default: table on a terminal, JSON otherwise.
    #[arg(long, short = 'o', global = true, env = "MICRO_OUTPUT", value_enum)]
    pub output: Option<OutputFormat>,

    /// TLS and login files for the broker.
    #[command(flatten)]
    pub link: LinkArgs,

    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum Command {
    /// List services with their versions and node counts.
    #[command(after_help = "Waits for the discovery window (300 ms) so every running service answers.\n\
                            Prints a table on a terminal and JSON ([{name, version, nodes}]) otherwise.")]
    Services,
    /// Show one service: its nodes (id, address, metadata), versions and endpoints.
    #[command(after_help = "Prints tables on a terminal and the registry records as JSON otherwise:\n\
                            [{name, version, metadata, endpoints: [{name, metadata}], nodes: [{id, address, metadata}]}].")]
    Service(ServiceArgs),
    /// Call an endpoint and print the reply as JSON.
    Call(CallArgs),
    /// Publish an event on a topic.
    Publish(PublishArgs),
    /// Subscribe to a topic and print one JSON line per event.
    Subscribe(SubscribeArgs),
    /// Ask every node of a service for Debug.Health; exits 3 if any is unhealthy or silent.
    Health(NodesArgs),
    /// Ask every node of a service for Debug.Stats; exits 3 if any does not answer.
    Stats(NodesArgs),
    /// Print registry changes (nodes added, updated, removed) as they happen.
    Watch(WatchArgs),
    /// Ask every node of a service for its event subscriptions; a table per node.
    Subscriptions(NodesArgs),
    /// List the durable groups the broker keeps, or delete one (groups delete GROUP TOPIC).
    Groups(GroupsArgs),
    /// Read and write the kv store: get, put, del, ls, watch.
    Kv(KvArgs),
    /// Read and set config documents in the kv store (config.APP and config.APP.ENV).
    Config(ConfigArgs),
    /// Print a shell completion script.
    Completions(CompletionsArgs),
    /// Run the API gateway: HTTP in, RPC and events out.
    Api(ApiArgs),
    /// Run the web dashboard (services, nodes, call form, event console) and web-service proxy.
    Web(WebArgs),
    /// Run a sidecar: an app in any language as a service, and the toolkit over HTTP for it.
    Sidecar(SidecarArgs),
    /// Run the chat bot: these commands over IRC or a terminal, plus commands that are services.
    Bot(BotArgs),
    /// Run the auth service, or manage accounts, rules and API keys (see docs/auth.md).
    Auth(AuthArgs),
    /// Get a token by client credentials and keep it (0600) for the `micro auth` commands.
    Login(LoginArgs),
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
    /// Time an HTTP request may take; it becomes the RPC deadline (e.g. 10s, 500ms, 1m).
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
    /// Namespaces /rpc may call besides --namespace, comma separated (`*`: any service).
    #[arg(long, env = "MICRO_API_RPC_NAMESPACES", value_delimiter = ',')]
    pub rpc_namespaces: Vec<String>,
    /// Let HTTP callers reach the services' Debug.* endpoints (node ids, memory, counters).
    #[arg(long, env = "MICRO_API_EXPOSE_DEBUG")]
    pub expose_debug: bool,
    /// The gateway's account at the auth service: turns auth on (tokens, API keys, rules);
    /// required on an address other than loopback.
    #[arg(long, env = "MICRO_API_AUTH_ID")]
    pub auth_id: Option<String>,
    /// The secret of --auth-id [env: MICRO_API_AUTH_SECRET].
    #[arg(long, env = "MICRO_API_AUTH_SECRET", hide_env_values = true)]
    pub auth_secret: Option<String>,
    /// The auth service's name on the broker.
    #[arg(long, env = "MICRO_AUTH_SERVICE", default_value = crate::auth::AUTH_SERVICE)]
    pub auth_service: String,
    /// Rate limit per client address, as COUNT/PERIOD (e.g. 100/1s): 429 past it.
    #[arg(long, env = "MICRO_API_RATE_LIMIT", value_parser = parse_rate)]
    pub rate_limit: Option<(u32, Duration)>,
    /// Rate limit per credential (token subject or API key), as COUNT/PERIOD.
    #[arg(long, env = "MICRO_API_KEY_RATE_LIMIT", value_parser = parse_rate)]
    pub key_rate_limit: Option<(u32, Duration)>,
}

fn parse_rate(s: &str) -> Result<(u32, Duration), String> {
    let (n, period) = s.split_once('/').ok_or_else(|| format!("{s:?}: use COUNT/PERIOD, e.g. 100/1s"))?;
    let n: u32 = n.trim().parse().map_err(|_| format!("{n:?} is not a count"))?;
    if n == 0 {
        return Err("the count must be at least 1".into());
    }
    Ok((n, parse_duration(period)?))
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
            .workers(self.workers)
            .rpc_namespaces(self.rpc_namespaces.iter().filter(|s| !s.is_empty()).cloned())
            .expose_debug(self.expose_debug);
        for (prefix, h) in &self.routes {
            c = c.route(prefix.clone(), *h);
        }
        let mut limits = crate::gateway::RateLimit::default();
        if let Some((n, per)) = self.rate_limit {
            limits = limits.per_address(n, per);
        }
        if let Some((n, per)) = self.key_rate_limit {
            limits = limits.per_key(n, per);
        }
        c.rate_limit(limits)
    }
}

fn parse_route(s: &str) -> Result<(String, HandlerKind), String> {
    let (prefix, handler) = s.split_once('=').ok_or_else(|| format!("{s:?}: use PREFIX=HANDLER"))?;
    Ok((prefix.to_string(), handler.parse()?))
}

/// Parses a duration flag: `500ms`, `10s`, `2m`, `1h 30m` (humantime's syntax), or a bare
/// number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration: {e} (try 500ms, 10s or 2m)"))
}

/// The command line's definition, as parsing, help and completions see it. `--transport` and
/// `--output` are global, but `completions` reaches no service and prints no list, so it gets
/// hidden stand-ins that keep the global ones off its help.
pub fn command() -> clap::Command {
    Cli::command().mut_subcommand("completions", |c| {
        c.arg(clap::Arg::new("transport").long("transport").hide(true))
            .arg(clap::Arg::new("proxy_address").long("proxy-address").hide(true))
            .arg(clap::Arg::new("output").long("output").short('o').hide(true))
            .args(link::FLAGS.iter().map(|(id, long)| clap::Arg::new(*id).long(*long).hide(true)))
    })
}

/// Runs the command line: parses arguments, runs the command, maps failure to an exit code.
pub fn main() -> ExitCode {
    let cli = match command().try_get_matches().and_then(|m| Cli::from_arg_matches(&m)) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // The gateway is a server and logs what it does; the other commands are tools whose
    // output is what they print, so only warnings reach stderr unless MICRO_LOG asks for more.
    // lapin logs a refused login or virtual host as three raw ERROR lines before the error it
    // returns, which says it once and plainly.
    let server = matches!(
        cli.command,
        Command::Api(_)
            | Command::Web(_)
            | Command::Sidecar(_)
            | Command::Bot(_)
            | Command::Auth(AuthArgs { command: AuthCommand::Serve(_), .. })
    );
    let _telemetry = crate::telemetry::init_with_default(if server { "info,lapin=off" } else { "warn,lapin=off" });
    match run_as_task(run(cli)) {
        Ok(code) => code,
        // The reader went away (`micro services | head -1`): nothing left to say to anyone.
        Err(e) if e.downcast_ref::<std::io::Error>().is_some_and(output::is_broken_pipe) => ExitCode::SUCCESS,
        Err(e) => {
            output::print_error(&*e);
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Runs `command` in a new actix system, as a task: the future `block_on` drives is polled again
/// on every wake-up of any task (a server's every request), so it holds nothing but the wait for
/// this one.
fn run_as_task(
    command: impl std::future::Future<Output = Result<ExitCode, Box<dyn std::error::Error>>> + 'static,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    actix_rt::System::new().block_on(async move {
        actix_rt::spawn(command).await.unwrap_or_else(|e| Err(CliError(format!("the command stopped: {e}")).into()))
    })
}

/// The broker URL: `flag`, else `MICRO_TRANSPORT`, else [`DEFAULT_CLI_TRANSPORT`], with the
/// TLS and login flags' `query` added.
fn transport_url(flag: Option<&str>, query: &str) -> String {
    let env = std::env::var(crate::transport::TRANSPORT_ENV).ok();
    let url = flag.or(env.as_deref()).filter(|u| !u.is_empty()).unwrap_or(DEFAULT_CLI_TRANSPORT);
    link::with_query(url, query)
}

/// Runs a parsed command.
pub async fn run(cli: Cli) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let out = output::Output::new(cli.output);
    let link = cli.link.query();
    let url = &transport_url(cli.transport.as_deref(), &link);
    let proxy_env = std::env::var("MICRO_PROXY_ADDRESS").ok();
    if let Some(proxy) = cli.proxy_address.as_deref().or(proxy_env.as_deref()).filter(|p| !p.is_empty()) {
        if !matches!(cli.command, Command::Completions(_)) {
            return proxy::run(proxy, &out, cli.command).await;
        }
    }
    match cli.command {
        Command::Api(args) => api::run(url, args).await,
        Command::Web(args) => web::run(url, args).await,
        Command::Services => registry::services(url, &out).await,
        Command::Service(args) => registry::service(url, &out, args).await,
        Command::Call(args) => call::run(url, &out, args).await,
        Command::Publish(args) => events::publish(url, args).await,
        Command::Subscribe(args) => events::subscribe(url, args).await,
        Command::Health(args) => nodes::health(url, &out, args).await,
        Command::Stats(args) => nodes::stats(url, &out, args).await,
        Command::Watch(args) => registry::watch(url, &out, args).await,
        Command::Subscriptions(args) => subscriptions::subscriptions(url, &out, args).await,
        Command::Groups(args) => subscriptions::groups(url, &out, args).await,
        Command::Kv(mut args) => {
            args.store.link = link;
            kv::run(&out, args).await
        }
        Command::Config(mut args) => {
            args.store.link = link;
            kv::config(&out, args).await
        }
        Command::Completions(args) => completions::run(args),
        Command::Sidecar(args) => sidecar::run(url, args).await,
        Command::Bot(args) => bot::run(url, args).await,
        Command::Auth(args) => auth::run(url, args).await,
        Command::Login(args) => auth::login(url, args).await,
    }
}

/// A failure the person can act on, with the text that says how (printed as `error: ...`).
#[derive(Debug)]
pub(crate) struct CliError(pub(crate) String);

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CliError {}

/// Connects a client for a CLI command, with a note on stderr when the URL is memory://.
async fn connect_client(url: &str) -> crate::Result<crate::Client> {
    warn_memory(url);
    // Every registry tells what it holds: nodes that are registered but hung are seen too.
    let registry = crate::registry::RegistryOptions::default().discover_known(true);
    crate::Client::builder().name(CLI_ID).transport(url).registry_options(registry).connect().await
}

fn warn_memory(url: &str) {
    if url.starts_with("memory://") {
        output::note(
            "memory:// cannot see other processes; use --transport nats://127.0.0.1:4222 (or MICRO_TRANSPORT)",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_flags_reach_the_gateway_config() {
        let cli =
            Cli::try_parse_from(["micro", "api", "--rpc-namespaces", "go.micro.srv,ops", "--expose-debug"]).unwrap();
        let Command::Api(args) = cli.command else { panic!("not the api command") };
        let config = args.config();
        assert_eq!(config.rpc_namespaces, ["go.micro.srv", "ops"]);
        assert!(config.expose_debug);
        let Command::Api(args) = Cli::try_parse_from(["micro", "api"]).unwrap().command else { panic!() };
        let config = args.config();
        assert!(config.rpc_namespaces.is_empty() && !config.expose_debug, "safe defaults");
    }

    #[test]
    fn web_flags_reach_the_dashboard_config() {
        let Command::Web(args) = Cli::try_parse_from(["micro", "web"]).unwrap().command else { panic!("not web") };
        assert!(args.config().actions_enabled(), "loopback by default: actions on");
        let cli = Cli::try_parse_from(["micro", "web", "--address", "0.0.0.0:9000"]).unwrap();
        let Command::Web(args) = cli.command else { panic!("not web") };
        assert!(!args.config().actions_enabled(), "off on a non-loopback address");
        let cli = Cli::try_parse_from(["micro", "web", "--address", "0.0.0.0:9000", "--allow-actions"]).unwrap();
        let Command::Web(args) = cli.command else { panic!("not web") };
        assert!(args.config().actions_enabled());
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        let e = parse_duration("5 parsecs").unwrap_err();
        assert!(e.contains("\"5 parsecs\" is not a duration") && e.contains("try 500ms"), "{e}");
    }
}
