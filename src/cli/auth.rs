//! `micro auth serve|accounts|rules|keys|token` and `micro login`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

use super::{connect_client, parse_duration, CliError};
use crate::auth::{
    Access, AuthConfig, AuthService, ById, NewAccount, NewApiKey, Rule, TokenRequest, TokenResponse, AUTH_SERVICE,
};
use crate::client::{CallOptions, Client};

/// `micro auth` options.
#[derive(Debug, Args)]
pub struct AuthArgs {
    /// The auth service's name on the broker.
    #[arg(long, global = true, env = "MICRO_AUTH_SERVICE", default_value = AUTH_SERVICE)]
    pub service: String,
    /// What to do.
    #[command(subcommand)]
    pub command: AuthCommand,
}

/// `micro auth` subcommands.
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum AuthCommand {
    /// Run the auth service: accounts, tokens, rules and keys, on the broker and over HTTP.
    Serve(ServeArgs),
    /// List, create or delete accounts (needs a login with the admin scope).
    Accounts {
        /// list, create or delete.
        #[command(subcommand)]
        command: AccountsCommand,
    },
    /// List, create or delete rules (needs a login with the admin scope).
    Rules {
        /// list, create or delete.
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Create or delete API keys (needs a login with the admin scope).
    ApiKeys {
        /// create or delete.
        #[command(subcommand)]
        command: ApiKeysCommand,
    },
    /// Start a signing key rotation (needs a login with the admin scope).
    Rotate,
    /// Print the access token of the last `micro login`, refreshed first when it expired.
    Token,
}

/// `micro auth serve` options.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// SQLite file of accounts, rules and keys (created 0600).
    #[arg(long, env = "MICRO_AUTH_DATABASE", default_value = "micro-auth.db")]
    pub database: PathBuf,
    /// Also serve POST /token and GET /.well-known/jwks.json on this address.
    #[arg(long, env = "MICRO_AUTH_HTTP")]
    pub http: Option<std::net::SocketAddr>,
    /// Access-token lifetime.
    #[arg(long, env = "MICRO_AUTH_TOKEN_TTL", default_value = "15m", value_parser = parse_duration)]
    pub token_ttl: Duration,
    /// How long a new signing key is published before it signs.
    #[arg(long, env = "MICRO_AUTH_KEY_OVERLAP", default_value = "60s", value_parser = parse_duration)]
    pub key_overlap: Duration,
    /// The account made (with a printed secret) when no account has the admin scope.
    #[arg(long, env = "MICRO_AUTH_ADMIN_ID", default_value = "admin")]
    pub admin_id: String,
}

/// `micro auth accounts` subcommands.
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum AccountsCommand {
    /// Print every account as JSON.
    List,
    /// Create an account; prints its id and secret (shown this once).
    Create {
        /// The account id.
        id: String,
        /// user or service.
        #[arg(long, default_value = "service")]
        kind: String,
        /// Scopes, comma separated.
        #[arg(long, value_delimiter = ',')]
        scopes: Vec<String>,
        /// The secret (default: a random one) [env: MICRO_AUTH_NEW_SECRET].
        #[arg(long, env = "MICRO_AUTH_NEW_SECRET", hide_env_values = true)]
        secret: Option<String>,
    },
    /// Delete an account.
    Delete {
        /// The account id.
        id: String,
    },
}

/// `micro auth rules` subcommands.
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum RulesCommand {
    /// Print every rule as JSON.
    List,
    /// Create a rule.
    Create {
        /// Service pattern (`*` wildcards).
        #[arg(long)]
        service: String,
        /// Endpoint pattern (`*` wildcards).
        #[arg(long, default_value = "*")]
        endpoint: String,
        /// Who: public, `*` (any account), account:ID, or a scope.
        #[arg(long)]
        who: String,
        /// allow or deny.
        #[arg(long, default_value = "allow")]
        access: Access,
        /// Higher wins.
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        priority: i32,
        /// An id (default: made up).
        #[arg(long)]
        id: Option<String>,
    },
    /// Delete a rule.
    Delete {
        /// The rule id.
        id: String,
    },
}

/// `micro auth api-keys` subcommands.
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum ApiKeysCommand {
    /// Create an API key acting as an account; prints it (shown this once).
    Create {
        /// The account.
        account: String,
        /// Scopes, space separated (default: all of the account's).
        #[arg(long)]
        scope: Option<String>,
    },
    /// Delete an API key by id.
    Delete {
        /// The key id.
        id: String,
    },
}

/// `micro login` options.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The account id (client id).
    #[arg(long, env = "MICRO_AUTH_ID")]
    pub id: String,
    /// The secret [env: MICRO_AUTH_SECRET]; read from stdin when absent.
    #[arg(long, env = "MICRO_AUTH_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Scopes to ask for, space separated (default: all of the account's).
    #[arg(long)]
    pub scope: Option<String>,
    /// The auth service's name on the broker.
    #[arg(long, env = "MICRO_AUTH_SERVICE", default_value = AUTH_SERVICE)]
    pub service: String,
}

/// What `micro login` keeps: the token response and when it was fetched.
#[derive(Serialize, Deserialize)]
struct Saved {
    service: String,
    token: TokenResponse,
    /// Seconds since the Unix epoch.
    fetched: u64,
}

/// The file `micro login` writes: `$MICRO_CONFIG_DIR/token.json`, else
/// `$XDG_CONFIG_HOME/micro/token.json`, else `~/.config/micro/token.json`.
pub fn token_file() -> Option<PathBuf> {
    let dir = std::env::var_os("MICRO_CONFIG_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CONFIG_HOME").map(|d| PathBuf::from(d).join("micro")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config").join("micro")))?;
    Some(dir.join("token.json"))
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn save(saved: &Saved) -> Result<PathBuf, Box<dyn std::error::Error>> {
    let path = token_file().ok_or_else(|| CliError("no config directory: set MICRO_CONFIG_DIR or HOME".into()))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let text = serde_json::to_vec_pretty(saved)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    std::io::Write::write_all(&mut file, &text)?;
    Ok(path)
}

async fn grant(
    client: &Client,
    service: &str,
    req: &TokenRequest,
) -> Result<TokenResponse, Box<dyn std::error::Error>> {
    let opts = CallOptions::new().retry(crate::RetryPolicy::none());
    client.call_with(service, "Auth.Token", req, opts).await.map_err(|e| match e.status() {
        Some(s) => CliError(format!("login refused: {}", crate::auth::OAuthError::from_status(s))).into(),
        None => e.into(),
    })
}

/// `micro login`.
pub(super) async fn login(url: &str, args: LoginArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let secret = match args.secret {
        Some(s) => s,
        None => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            line.trim_end_matches(['\r', '\n']).to_string()
        }
    };
    let client = connect_client(url).await?;
    let mut req = TokenRequest::client_credentials(&args.id, secret);
    req.scope = args.scope;
    let token = grant(&client, &args.service, &req).await?;
    let path = save(&Saved { service: args.service, token, fetched: now() })?;
    eprintln!("logged in as {}; token saved in {}", args.id, path.display());
    Ok(ExitCode::SUCCESS)
}

/// The saved token, refreshed (and saved again) when it expired.
pub(crate) async fn current_token(client: &Client) -> Result<String, Box<dyn std::error::Error>> {
    let path = token_file().ok_or_else(|| CliError("no config directory: set MICRO_CONFIG_DIR or HOME".into()))?;
    let text = std::fs::read(&path)
        .map_err(|_| CliError(format!("not logged in (no {}): run micro login", path.display())))?;
    let saved: Saved =
        serde_json::from_slice(&text).map_err(|e| CliError(format!("{} is damaged: {e}", path.display())))?;
    if now() + 10 < saved.fetched + saved.token.expires_in {
        return Ok(saved.token.access_token);
    }
    let refresh =
        saved.token.refresh_token.clone().ok_or_else(|| CliError("the token expired: run micro login".into()))?;
    let token = grant(client, &saved.service, &TokenRequest::refresh(refresh)).await?;
    let access = token.access_token.clone();
    save(&Saved { service: saved.service, token, fetched: now() })?;
    Ok(access)
}

fn print_json<T: Serialize>(v: &T) -> Result<ExitCode, Box<dyn std::error::Error>> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(ExitCode::SUCCESS)
}

/// `micro auth ...`.
pub(super) async fn run(url: &str, args: AuthArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    if let AuthCommand::Serve(serve) = args.command {
        return run_server(url, &args.service, serve).await;
    }
    let client = connect_client(url).await?;
    let token = current_token(&client).await?;
    if matches!(args.command, AuthCommand::Token) {
        println!("{token}");
        return Ok(ExitCode::SUCCESS);
    }
    let opts = || CallOptions::new().token(token.clone()).retry(crate::RetryPolicy::none());
    let svc = args.service.as_str();
    macro_rules! call {
        ($endpoint:expr, $req:expr, $resp:ty) => {
            client.call_with::<_, $resp, _>(svc, $endpoint, $req, opts()).await?
        };
    }
    match args.command {
        AuthCommand::Accounts { command: AccountsCommand::List } => {
            print_json(&call!("Accounts.List", &(), serde_json::Value))
        }
        AuthCommand::Accounts { command: AccountsCommand::Create { id, kind, scopes, secret } } => {
            let new = NewAccount { id, kind, scopes, secret, metadata: Default::default() };
            print_json(&call!("Accounts.Create", &new, serde_json::Value))
        }
        AuthCommand::Accounts { command: AccountsCommand::Delete { id } } => {
            print_json(&call!("Accounts.Delete", &ById { id }, bool))
        }
        AuthCommand::Rules { command: RulesCommand::List } => print_json(&call!("Rules.List", &(), serde_json::Value)),
        AuthCommand::Rules { command: RulesCommand::Create { service, endpoint, who, access, priority, id } } => {
            let rule = Rule::new(service, endpoint, who).access(access).priority(priority).id(id.unwrap_or_default());
            print_json(&call!("Rules.Create", &rule, serde_json::Value))
        }
        AuthCommand::Rules { command: RulesCommand::Delete { id } } => {
            print_json(&call!("Rules.Delete", &ById { id }, bool))
        }
        AuthCommand::ApiKeys { command: ApiKeysCommand::Create { account, scope } } => {
            print_json(&call!("ApiKeys.Create", &NewApiKey { account, scope }, serde_json::Value))
        }
        AuthCommand::ApiKeys { command: ApiKeysCommand::Delete { id } } => {
            print_json(&call!("ApiKeys.Delete", &ById { id }, bool))
        }
        AuthCommand::Rotate => print_json(&call!("Keys.Rotate", &(), serde_json::Value)),
        AuthCommand::Serve(_) | AuthCommand::Token => unreachable!("handled above"),
    }
}

async fn run_server(url: &str, name: &str, args: ServeArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let config = AuthConfig::default()
        .name(name)
        .database(&args.database)
        .token_ttl(args.token_ttl)
        .key_overlap(args.key_overlap);
    let auth = AuthService::open(config)?;
    if let Some(admin) = auth.bootstrap_admin(&args.admin_id)? {
        eprintln!("created the account {} with the admin scope; its secret (shown once): {}", admin.id, admin.secret);
    }
    let handle = auth.start(url).await?;
    tracing::info!(service = name, database = %args.database.display(), "auth service running");
    if let Some(address) = args.http {
        let http = auth.clone();
        actix_rt::spawn(async move {
            if let Err(e) = http.serve_http(address).await {
                tracing::error!(error = %e, "the token endpoint stopped");
            }
        });
    }
    handle.until_stopped().await?;
    handle.stop().await?;
    Ok(ExitCode::SUCCESS)
}
