//! An audit trail: a `users` service publishes durable events (`user.login`,
//! `user.profile.updated`, `order.placed`); an `audit` service subscribes durably to `user.>`
//! and `order.>`, stores each event exactly once in SQLite, and answers `Audit.History`,
//! which the gateway serves as `GET /audit/history?user_id=..`.
//!
//! ```text
//! # everything in one process on the embedded memory bus (nothing durable there):
//! cargo run --features gateway,config --example audit_trail
//!
//! # the same over NATS (JetStream keeps the events while the audit service is down):
//! MICRO_TRANSPORT=nats://127.0.0.1:4222 cargo run --features gateway,config --example audit_trail
//!
//! # as separate processes, over NATS or RabbitMQ (build first, and wait for the gateway to
//! # answer before publishing: examples/README.md has the exact commands):
//! export MICRO_TRANSPORT=nats://127.0.0.1:4222    # or amqp://guest:guest@127.0.0.1:5672/%2f
//! cargo run --features gateway,config --example audit_trail -- audit --db /tmp/audit.sqlite3 &
//! cargo run --features gateway,config --example audit_trail -- users &
//! cargo run --features gateway,config --example audit_trail -- gateway --http 127.0.0.1:8080 &
//! cargo run --features gateway,config --example audit_trail -- publish --count 1000 --user ada
//! curl 'http://127.0.0.1:8080/audit/history?user_id=ada&limit=5'
//! ```
//!
//! Options: `--transport URL` (else `MICRO_TRANSPORT`, else `memory://`), `--prefix P` (topics
//! `P.user.login`.., services `go.micro.srv.audit.P`..), `--db PATH` (default: a new file per run,
//! `$TMPDIR/audit_trail-<transport>-<run>.sqlite3`, so runs and transports never mix their events;
//! give a path to keep one across runs), `--http ADDR`, `--ack-wait-ms N`, `--count N`, `--user U`,
//! `--config FILE` (TOML/YAML/JSON settings: `retention_days`, `digest_every_secs`).
//!
//! Each audit instance also campaigns for the leader-elected daily digest (digest.rs): only the
//! leader counts the day's events and prunes those past the retention, which it reads from
//! `micro::config` (defaults < `--config` < `MICRO__RETENTION_DAYS` < the kv document
//! `config.audit_trail` in the store named by `MICRO_KV`, e.g. `micro config set audit_trail
//! retention_days 30`). Run two audit instances with `MICRO_KV=nats://127.0.0.1:4222` and kill the
//! leader: the other takes the digest over.
#[path = "../common/log.rs"]
mod log;

mod audit;
mod digest;
mod names;
mod users;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use micro::gateway::{Gateway, GatewayConfig, HandlerKind, GATEWAY_ID};
use micro::Client;

use audit::{AuditConfig, HistoryRequest, AUDIT_HISTORY};
use names::Names;
use users::{Login, Order, ProfileUpdate, ORDERS_PLACE, USERS_LOGIN, USERS_UPDATE_PROFILE};

type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

const USAGE: &str = "usage: audit_trail [demo|audit|users|gateway|publish] [--transport URL] [--prefix P] \
                     [--db PATH] [--http ADDR] [--ack-wait-ms N] [--count N] [--user U] [--config FILE]";

struct Args {
    command: String,
    url: String,
    names: Names,
    db: PathBuf,
    http: Option<SocketAddr>,
    ack_wait: Option<Duration>,
    count: usize,
    user: Option<String>,
    config: Option<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let mut args = std::env::args().skip(1);
    let (mut command, mut url, mut prefix, mut db, mut http, mut ack_wait, mut count, mut user) =
        (None, None, None, None, None, None, 100, None);
    let mut config = None;
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || inline.clone().or_else(|| args.next()).ok_or(format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0)
            }
            "--transport" => url = Some(value()?),
            "--prefix" => prefix = Some(value()?),
            "--db" => db = Some(PathBuf::from(value()?)),
            "--http" => http = Some(value()?.parse()?),
            "--ack-wait-ms" => ack_wait = Some(Duration::from_millis(value()?.parse()?)),
            "--count" => count = value()?.parse()?,
            "--user" => user = Some(value()?),
            "--config" => config = Some(PathBuf::from(value()?)),
            c if !c.starts_with('-') && command.is_none() => command = Some(c.to_string()),
            other => return Err(format!("unexpected argument {other:?}\n{USAGE}").into()),
        }
    }
    let url = micro::transport::resolve_url(url.as_deref());
    let db = db.unwrap_or_else(|| default_db(&url));
    Ok(Args {
        url,
        db,
        command: command.unwrap_or_else(|| "demo".into()),
        names: Names::new(prefix.as_deref())?,
        http,
        ack_wait,
        count,
        user,
        config,
    })
}

/// A database of this run's own: `$TMPDIR/audit_trail-<transport scheme>-<start time in ms>.sqlite3`.
fn default_db(url: &str) -> PathBuf {
    let scheme = url.split_once("://").map_or("memory", |(s, _)| s);
    let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    std::env::temp_dir().join(format!("audit_trail-{scheme}-{run}.sqlite3"))
}

#[micro::main]
async fn main() -> Result<(), micro::Report> {
    let _telemetry = log::init("warn");
    let args = parse_args()?;
    let audit =
        || AuditConfig { names: args.names.clone(), db: args.db.clone(), ack_wait: args.ack_wait, expire_after: None };
    match args.command.as_str() {
        "demo" => Ok(demo(&args).await?),
        "audit" => {
            println!("audit service on {}, storing into {}", args.url, args.db.display());
            let svc = audit::service(&audit())?.transport(&args.url);
            let kv = micro::kv::Kv::from_env().await?;
            let settings = digest::settings(&kv, args.config.as_deref()).await?;
            let id = format!("audit-{}", std::process::id());
            let db = args.db.clone();
            actix_rt::spawn(async move {
                if let Err(e) = digest::run(kv, id, db, settings).await {
                    eprintln!("the daily digest stopped: {e}");
                }
            });
            Ok(svc.run().await?)
        }
        "users" => Ok(users::service(&args.names).transport(&args.url).run().await?),
        "gateway" => {
            let address = args.http.unwrap_or_else(|| ([127, 0, 0, 1], 8080).into());
            println!("gateway on http://{address}: curl 'http://{address}{}?user_id=ada'", args.names.history_path());
            Ok(Gateway::new(gateway_client(&args.url).await?, gateway_config().address(address)).run().await?)
        }
        "publish" => {
            let client = Client::builder().name("audit_trail.publish").transport(&args.url).connect().await?;
            let started = Instant::now();
            let results =
                users::publish_many(client.broker(), &args.names, args.count, args.user.as_deref(), 256).await;
            let stored = results.iter().filter(|r| r.is_ok()).count();
            println!("{stored} of {} events stored by the broker in {:.2?}", args.count, started.elapsed());
            if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
                return Err(format!("{} events were not stored, e.g.: {e}", args.count - stored).into());
            }
            Ok(())
        }
        other => Err(format!("unknown command {other:?}\n{USAGE}").into()),
    }
}

fn gateway_config() -> GatewayConfig {
    GatewayConfig::default().handler(HandlerKind::Rpc).namespace("go.micro.srv")
}

async fn gateway_client(url: &str) -> micro::Result<Client> {
    Client::builder().name(GATEWAY_ID).transport(url).connect().await
}

/// Audit, users and a gateway in one process: a few calls, then the history they left.
async fn demo(args: &Args) -> Result<()> {
    if args.url.starts_with("memory://") {
        println!("note: memory:// keeps nothing: events published while the audit service is down are lost.");
        println!("      Set MICRO_TRANSPORT=nats://127.0.0.1:4222 for a durable trail.");
    }
    let names = &args.names;
    let audit = audit::service(&AuditConfig {
        names: names.clone(),
        db: args.db.clone(),
        ack_wait: args.ack_wait,
        expire_after: None,
    })?
    .transport(&args.url)
    .start()
    .await?;
    let users = users::service(names).transport(&args.url).start().await?;
    let client = gateway_client(&args.url).await?;
    let gateway = Gateway::new(client.clone(), gateway_config());
    let server = actix_web::HttpServer::new(move || gateway.app())
        .workers(1)
        .bind(args.http.unwrap_or_else(|| ([127, 0, 0, 1], 0).into()))?;
    let address = server.addrs()[0];
    let server = server.run();
    let http = server.handle();
    actix_rt::spawn(server);
    println!("gateway on http://{address}, audit database {}", args.db.display());

    let svc = names.users_service();
    let login = Login { user_id: "ada".into() };
    let profile = ProfileUpdate { user_id: "ada".into(), name: Some("Ada Lovelace".into()), ..Default::default() };
    let order = Order { user_id: "ada".into(), order_id: micro::message::new_id(), total_cents: 4200 };
    let mut ids = Vec::new();
    ids.push(client.call(&svc, USERS_LOGIN, &login).await?.event_id);
    ids.push(client.call(&svc, USERS_UPDATE_PROFILE, &profile).await?.event_id);
    ids.push(client.call(&svc, ORDERS_PLACE, &order).await?.event_id);
    client.call(&svc, USERS_LOGIN, &Login { user_id: "grace".into() }).await?;
    println!("published {} events for ada: {ids:?}", ids.len());

    // The audit service stores them asynchronously: ask until it has them all.
    let query = HistoryRequest { user_id: "ada".into(), limit: Some(10), ..Default::default() };
    let deadline = Instant::now() + Duration::from_secs(10);
    let history = loop {
        let h = client.call(&names.audit_service(), AUDIT_HISTORY, &query).await?;
        if ids.iter().all(|id| h.iter().any(|e| &e.id == id)) {
            break h;
        }
        if Instant::now() > deadline {
            return Err("the audit service did not store the events within 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!("\nAudit.History for ada over RPC (newest first):");
    for e in &history {
        println!("  {} {:<22} {} {}", e.timestamp_ms, e.topic, e.id, e.payload);
    }

    // The daily digest: this process is the only candidate, so it leads at once.
    let kv = micro::kv::Kv::from_env().await?;
    let settings = digest::settings(&kv, args.config.as_deref()).await?;
    let leader = micro::sync::Leader::new(&kv, "audit_trail.digest", "demo")?;
    if let Some(term) = leader.try_campaign().await? {
        let d = digest::run_once(&args.db, &settings.get(), term.token())?;
        println!(
            "\ndaily digest (leader, token {}): {} events in the last day, retention {} days, {} pruned",
            d.token, d.events_last_day, d.retention_days, d.pruned
        );
        term.resign().await?;
    }

    let url = format!("http://{address}{}?user_id=ada&limit=3", names.history_path());
    let mut rsp = awc::Client::default().get(&url).send().await?;
    let body = rsp.body().await?;
    println!("\nGET {url} -> {}\n{}", rsp.status(), String::from_utf8_lossy(&body));

    http.stop(true).await;
    users.stop().await?;
    audit.stop().await?;
    Ok(())
}
