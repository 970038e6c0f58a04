//! HTTP → RPC over NATS: the API gateway against a bare actix-web handler making one raw
//! async-nats request, under the same HTTP load, in the same process and the same run.
//!
//! `cargo bench --features gateway --bench gateway_nats` (uses `wrk` when installed). What is
//! compared, how, the environment variables and the machine-readable output: `benches/README.md`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use bytes::Bytes;
use hdrhistogram::Histogram;
use micro::api;
use micro::gateway::{Gateway, GatewayConfig, GATEWAY_ID};
use micro::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;
use common::*;

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

// ---------------------------------------------------------------------------------------------
// The services: the srv greeter and the api greeter (examples/common/{greeter,api_greeter}.rs).

/// The srv greeter's `Say.Hello`.
async fn srv_say_hello(Req(req): Req<HelloRequest>) -> Result<HelloReply, Status> {
    if req.name.trim().is_empty() {
        return Err(Status::bad_request("name is required"));
    }
    Ok(greet(req))
}

/// The srv service the api service calls (the examples' fixed name, made unique here).
#[derive(Clone)]
struct Backend(String);

/// The api greeter's `Say.Hello`: `api::Request` in, one call to the srv greeter, `api::Response`
/// out.
async fn api_say_hello(
    Req(req): Req<api::Request>,
    client: Client,
    State(Backend(srv)): State<Backend>,
) -> Result<api::Response, Status> {
    let name = req
        .query("name")
        .or_else(|| req.form("name"))
        .ok_or_else(|| Status::bad_request("the name parameter is required"))?;
    let rsp: HelloReply = client
        .call(&srv, "Say.Hello", &HelloRequest { name: name.to_string() })
        .await
        .map_err(|e| e.to_status("api"))?;
    Ok(api::Response::json(200, &serde_json::json!({ "message": rsp.msg })))
}

// ---------------------------------------------------------------------------------------------
// The bare limit: actix-web + one raw async-nats request.

struct Bare {
    nats: async_nats::Client,
    subject: async_nats::Subject,
    /// For the diagnostic (d): a framework client and the srv greeter it calls.
    client: micro::Client,
    srv: String,
}

#[derive(Deserialize)]
struct NameQuery {
    name: String,
}

#[derive(Serialize)]
struct Greeting<'a> {
    message: &'a str,
}

async fn bare_hello(bare: web::Data<Bare>, query: web::Query<NameQuery>) -> HttpResponse {
    raw_hello(&bare, query.into_inner().name, None).await
}

/// The diagnostic (e): the bare handler, but its raw request carries the three envelope headers
/// the gateway's call carries (`Micro-Deadline`, `Micro-Id` with a fresh request id,
/// `Micro-Caller`; protocol §3): what async-nats charges for them on both sides, apart from
/// the framework.
async fn bare_headers_hello(bare: web::Data<Bare>, query: web::Query<NameQuery>) -> HttpResponse {
    let deadline = std::time::SystemTime::now() + GATEWAY_TIMEOUT;
    let millis = deadline.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Micro-Deadline", itoa::Buffer::new().format(millis));
    headers.insert("Micro-Id", micro::message::new_id());
    headers.insert("Micro-Caller", GATEWAY_ID);
    raw_hello(&bare, query.into_inner().name, Some(headers)).await
}

/// One raw async-nats request to the raw responder, with `headers` if given, answered as JSON.
async fn raw_hello(bare: &Bare, name: String, headers: Option<async_nats::HeaderMap>) -> HttpResponse {
    let payload = match rmp_serde::to_vec_named(&HelloRequest { name }) {
        Ok(p) => Bytes::from(p),
        Err(e) => return HttpResponse::InternalServerError().body(e.to_string()),
    };
    let sent = match headers {
        Some(headers) => bare.nats.request_with_headers(bare.subject.clone(), headers, payload).await,
        None => bare.nats.request(bare.subject.clone(), payload).await,
    };
    match sent {
        Ok(msg) => match rmp_serde::from_slice::<HelloReply>(&msg.payload) {
            Ok(reply) => HttpResponse::Ok().json(Greeting { message: &reply.msg }),
            Err(e) => HttpResponse::BadGateway().body(e.to_string()),
        },
        Err(e) => HttpResponse::BadGateway().body(e.to_string()),
    }
}

/// How long the gateway waits for a call, and the deadline the diagnostic (e) sends.
const GATEWAY_TIMEOUT: Duration = Duration::from_secs(10);

/// The diagnostic (d): the bare handler, but the one RPC goes through a framework `Client` to the
/// srv greeter service (registry, selector, envelope, server dispatch) instead of raw async-nats.
async fn bare_client_hello(bare: web::Data<Bare>, query: web::Query<NameQuery>) -> HttpResponse {
    let req = HelloRequest { name: query.into_inner().name };
    match bare.client.call::<_, HelloReply, _>(&bare.srv, "Say.Hello", &req).await {
        Ok(reply) => HttpResponse::Ok().json(Greeting { message: &reply.msg }),
        Err(e) => HttpResponse::BadGateway().body(e.to_string()),
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration and measurement.

#[derive(Clone, Debug)]
enum LoadGen {
    Wrk(PathBuf),
    Builtin,
}

impl LoadGen {
    fn describe(&self) -> String {
        match self {
            LoadGen::Wrk(p) => format!("wrk ({}) -t2, whole seconds per phase", p.display()),
            LoadGen::Builtin => {
                "built-in (raw TCP keep-alive HTTP/1.1 on a separate 2-thread tokio runtime in this process; \
                 wrk not found or BENCH_LOADGEN=builtin)"
                    .into()
            }
        }
    }
}

struct Config {
    /// Run by `cargo bench` (else a smoke run, e.g. `cargo test --benches`).
    full: bool,
    secs: Duration,
    rounds: usize,
    warmup: Duration,
    concurrency: usize,
    workers: usize,
    loadgen: LoadGen,
    /// The NATS server, for its CPU time (see `broker_pid`).
    nats_pid: Option<u32>,
}

fn find_wrk() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("wrk")).find(|p| p.is_file())
}

impl Config {
    fn from_env() -> Config {
        let full = std::env::args().any(|a| a == "--bench");
        let secs = |var: &str, full_default: f64, smoke_default: f64| {
            let v = std::env::var(var).ok().and_then(|s| s.parse::<f64>().ok());
            Duration::from_secs_f64(v.unwrap_or(if full { full_default } else { smoke_default }).max(0.01))
        };
        let int = |var: &str, default: usize| {
            std::env::var(var).ok().and_then(|s| s.parse::<usize>().ok()).unwrap_or(default).max(1)
        };
        let loadgen = match std::env::var("BENCH_LOADGEN").as_deref() {
            Ok("builtin") => LoadGen::Builtin,
            Ok("wrk") => LoadGen::Wrk(find_wrk().expect("BENCH_LOADGEN=wrk but wrk is not on the PATH")),
            _ => find_wrk().map_or(LoadGen::Builtin, LoadGen::Wrk),
        };
        Config {
            full,
            secs: secs("BENCH_SECS", 3.0, 1.0),
            rounds: int("BENCH_ROUNDS", if full { 3 } else { 1 }),
            warmup: secs("BENCH_WARMUP_SECS", 1.0, 1.0),
            concurrency: int("BENCH_CONCURRENCY", 64),
            workers: int("BENCH_WORKERS", 1),
            loadgen,
            nats_pid: broker_pid(&micro::test_util::nats_url(), 4222, "nats-server"),
        }
    }
}

/// One HTTP request to load a server with.
#[derive(Clone, Debug)]
struct HttpTarget {
    label: &'static str,
    addr: SocketAddr,
    method: &'static str,
    path: String,
    /// A JSON body (POST only).
    body: Option<String>,
    /// The exact response body expected.
    expect: String,
}

impl HttpTarget {
    fn request_bytes(&self) -> Vec<u8> {
        let mut r = format!("{} {} HTTP/1.1\r\nHost: {}\r\n", self.method, self.path, self.addr);
        if let Some(b) = &self.body {
            r.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}", b.len()));
        } else {
            r.push_str("\r\n");
        }
        r.into_bytes()
    }

    fn url(&self) -> String {
        format!("http://{}{}", self.addr, self.path)
    }
}

/// What a load phase reports.
struct Load {
    requests: u64,
    errors: u64,
    elapsed: Duration,
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    first_error: Option<String>,
}

struct Phase {
    load: Load,
    /// CPU time (user + system) this process spent in the phase.
    cpu: Duration,
    /// CPU time the NATS server process spent in the phase, if it is visible.
    nats_cpu: Option<Duration>,
    allocations: u64,
    /// Largest RSS sampled during the phase.
    peak_rss: u64,
}

impl Phase {
    fn rps(&self) -> f64 {
        self.load.rps
    }
    fn p50_ms(&self) -> f64 {
        self.load.p50_us / 1e3
    }
    fn p99_ms(&self) -> f64 {
        self.load.p99_us / 1e3
    }
    fn cpu_us_per_req(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.load.requests.max(1) as f64
    }
    fn nats_us_per_req(&self) -> f64 {
        self.nats_cpu.map_or(f64::NAN, |c| c.as_secs_f64() * 1e6 / self.load.requests.max(1) as f64)
    }
    fn allocs_per_req(&self) -> f64 {
        self.allocations as f64 / self.load.requests.max(1) as f64
    }
    fn peak_rss_mib(&self) -> f64 {
        mib(self.peak_rss)
    }
}

/// A `kB` field of `/proc/self/status` (`VmHWM`, `VmRSS`), in bytes.
fn proc_status_bytes(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
                .and_then(|r| r.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
        })
        .map_or(0, |kb| kb * 1024)
}

#[path = "gateway_nats/load.rs"]
mod load;
use load::{builtin_load, counted_requests, fetch_once, wrk_load};

/// Loads `target` for `duration` from another thread, while this arbiter keeps serving and
/// samples the RSS.
async fn run_phase(cfg: &Config, target: &HttpTarget, duration: Duration) -> Phase {
    let cpu_start = process_cpu();
    let nats_start = cfg.nats_pid.and_then(pid_cpu);
    let allocations_start = ALLOCATIONS.load(Ordering::Relaxed);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (loadgen, t, c) = (cfg.loadgen.clone(), target.clone(), cfg.concurrency);
    std::thread::spawn(move || {
        let load = match &loadgen {
            LoadGen::Wrk(wrk) => wrk_load(wrk, &t, c, duration),
            LoadGen::Builtin => builtin_load(&t, c, duration),
        };
        let _ = tx.send(load);
    });
    let mut peak_rss = micro::server::resident_memory_bytes();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tokio::pin!(rx);
    let load = loop {
        tokio::select! {
            load = &mut rx => break load.expect("load generator thread panicked"),
            _ = tick.tick() => peak_rss = peak_rss.max(micro::server::resident_memory_bytes()),
        }
    };
    let phase = Phase {
        load,
        cpu: process_cpu().saturating_sub(cpu_start),
        nats_cpu: cpu_since(cfg.nats_pid, nats_start),
        allocations: ALLOCATIONS.load(Ordering::Relaxed) - allocations_start,
        peak_rss,
    };
    if let Some(e) = &phase.load.first_error {
        eprintln!("  {}: {} errors, first: {e}", target.label, phase.load.errors);
    }
    phase
}

impl Series<Phase> {
    fn max(&self, f: impl Fn(&Phase) -> f64) -> f64 {
        self.0.iter().map(f).fold(f64::NAN, f64::max)
    }
}

#[actix::main]
async fn main() -> Result<(), BoxError> {
    let cfg = Config::from_env();
    let url = micro::test_util::nats_url();
    let c = cfg.concurrency;
    let workers = cfg.workers;
    let rss_start = micro::server::resident_memory_bytes();

    // The two services of the walkthrough, under names nothing else on the shared NATS uses:
    // the gateway resolves `/greeter/say/hello` to `<namespace>.greeter`.
    let namespace = micro::test_util::unique("gwbench");
    let srv_name = format!("{namespace}-srv.greeter");
    let api_name = format!("{namespace}.greeter");
    let srv = Service::builder(srv_name.clone())
        .version("1.0.0")
        .transport(url.clone())
        .handle("Say.Hello", srv_say_hello)
        .idempotent("Say.Hello")
        .start()
        .await?;
    let api_svc = Service::builder(api_name.clone())
        .version("1.0.0")
        .transport(url.clone())
        .state(Backend(srv_name.clone()))
        .handle("Say.Hello", api_say_hello)
        .start()
        .await?;

    // The gateway, as `micro api` runs it but on a free port and with `workers` workers.
    let gw_client = micro::Client::builder().name(GATEWAY_ID).transport(url.clone()).connect().await?;
    let gateway = Gateway::new(
        gw_client,
        GatewayConfig::default()
            .namespace(namespace.clone())
            .rpc_namespaces([srv_name.clone()])
            .workers(workers)
            .timeout(GATEWAY_TIMEOUT),
    );
    let gw_server = HttpServer::new(move || gateway.app())
        .workers(workers)
        .client_request_timeout(Duration::from_secs(10))
        .max_connection_rate(1024)
        .shutdown_timeout(1)
        .disable_signals()
        .bind("127.0.0.1:0")?;
    let gw_addr = gw_server.addrs()[0];
    let gw_server = gw_server.run();
    let gw_handle = gw_server.handle();
    actix_rt::spawn(gw_server);

    // The bare limit: a raw responder connection, a caller connection, the same server settings.
    let (raw_subject, raw_task) = start_raw_nats_responder(&url, "gwgreeter").await?;
    let bare = web::Data::new(Bare {
        nats: async_nats::connect(&url).await?,
        subject: raw_subject.clone().into(),
        client: micro::Client::connect(&url).await?,
        srv: srv_name.clone(),
    });
    let bare_server = HttpServer::new(move || {
        App::new()
            .app_data(bare.clone())
            .route("/hello", web::get().to(bare_hello))
            .route("/client/hello", web::get().to(bare_client_hello))
            .route("/headers/hello", web::get().to(bare_headers_hello))
    })
    .workers(workers)
    .client_request_timeout(Duration::from_secs(10))
    .max_connection_rate(1024)
    .shutdown_timeout(1)
    .disable_signals()
    .bind("127.0.0.1:0")?;
    let bare_addr = bare_server.addrs()[0];
    let bare_server = bare_server.run();
    let bare_handle = bare_server.handle();
    actix_rt::spawn(bare_server);

    let api = HttpTarget {
        label: "gateway api",
        addr: gw_addr,
        method: "GET",
        path: "/greeter/say/hello?name=John".into(),
        body: None,
        expect: r#"{"message":"Hello John"}"#.into(),
    };
    let rpc = HttpTarget {
        label: "gateway /rpc",
        addr: gw_addr,
        method: "POST",
        path: "/rpc".into(),
        body: Some(format!(r#"{{"service":"{srv_name}","endpoint":"Say.Hello","request":{{"name":"John"}}}}"#)),
        expect: r#"{"msg":"Hello John"}"#.into(),
    };
    let limit = HttpTarget {
        label: "bare limit",
        addr: bare_addr,
        method: "GET",
        path: "/hello?name=John".into(),
        body: None,
        expect: r#"{"message":"Hello John"}"#.into(),
    };
    let client = HttpTarget {
        label: "bare+client",
        addr: bare_addr,
        method: "GET",
        path: "/client/hello?name=John".into(),
        body: None,
        expect: r#"{"message":"Hello John"}"#.into(),
    };
    let headers = HttpTarget {
        label: "bare+headers",
        addr: bare_addr,
        method: "GET",
        path: "/headers/hello?name=John".into(),
        body: None,
        expect: r#"{"message":"Hello John"}"#.into(),
    };
    // [0 = gateway api (a), 1 = gateway /rpc (c), 2 = bare limit (b), 3 = bare+client (d),
    //  4 = bare+headers (e)]
    let targets = [&api, &rpc, &limit, &client, &headers];

    // Every target answers what it should before it is measured (the first call also lets the
    // gateway's and the api service's clients discover their services).
    for t in targets {
        let (status, body) = fetch_once(t).await?;
        if status != 200 || body != t.expect {
            return Err(
                format!("{} ({}) answered {status} {body:?}, expected 200 {:?}", t.label, t.url(), t.expect).into()
            );
        }
    }
    let rss_ready = micro::server::resident_memory_bytes();

    if !cfg.full {
        println!("gateway_nats: smoke run (not started by `cargo bench`): short phases, figures not meaningful");
    }
    println!(
        "gateway_nats: {url}; {} round(s) x {:.1} s per phase, warm-up {:.1} s per target; {c} connections; \
         {workers} actix-web worker(s) per server (gateway and bare app alike)",
        cfg.rounds,
        cfg.secs.as_secs_f64(),
        cfg.warmup.as_secs_f64()
    );
    println!("gateway_nats: load generator: {}", cfg.loadgen.describe());
    println!("  (a) gateway api:  GET {}  -> api service -> srv service (two RPCs per request)", api.url());
    println!("  (c) gateway /rpc: POST {} {}  -> srv service (one RPC)", rpc.url(), rpc.body.as_deref().unwrap_or(""));
    println!("  (b) bare limit:   GET {}  -> one raw async-nats request (one RPC)", limit.url());
    println!(
        "  (d) bare+client:  GET {}  -> the bare handler with a framework Client -> srv service (one RPC; \
         diagnostic: splits (c)'s cost into framework RPC and gateway layer)",
        client.url()
    );
    println!(
        "  (e) bare+headers: GET {}  -> the bare handler's raw request with the three envelope headers (c) \
         sends (deadline, request id, caller) (one RPC; diagnostic: what async-nats charges for them)",
        headers.url()
    );

    let pick = |which: &str| match which {
        "rpc" => &rpc,
        "bare" => &limit,
        "client" | "bare-client" => &client,
        "headers" | "bare-headers" => &headers,
        _ => &api,
    };
    // A counted run (`BENCH_CALLGRIND=1` starts this binary so, under callgrind): no timed phase.
    if let (Ok(which), Some(n)) = (std::env::var("BENCH_PROFILE"), callgrind::counted_calls()) {
        return counted_requests(pick(&which), &which, n).await;
    }
    // Instructions per request (`BENCH_CALLGRIND=1`): this binary again under callgrind, per target.
    if std::env::var("BENCH_CALLGRIND").is_ok_and(|v| v != "0") {
        let full = cfg.full;
        let costs = tokio::task::spawn_blocking(move || {
            ["bare", "headers", "client", "rpc", "api"]
                .map(|side| callgrind::measure(side, full).map(|c| (side, c)).map_err(|e| e.to_string()))
        })
        .await?;
        let mut sides = Vec::new();
        for cost in costs {
            sides.push(cost?);
        }
        println!("callgrind, c=1, one keep-alive connection, per HTTP request (difference of two counted runs;");
        println!("the process's own requests and responses are counted too, alike for every target):");
        println!("{:<8} {:>14} {:>12}", "target", "instructions", "allocations");
        for (side, c) in &sides {
            println!("{side:<8} {:>14.0} {:>12.1}", c.instructions, c.allocations);
        }
        let of = |name: &str| &sides.iter().find(|(s, _)| *s == name).expect("measured").1;
        let (bare, rpc, api, headers) = (of("bare"), of("rpc"), of("api"), of("headers"));
        println!(
            "gateway nats instructions_ratio={:.3} api_instructions_ratio={:.3} headers_instructions_ratio={:.3} {}",
            rpc.instructions / bare.instructions,
            api.instructions / bare.instructions,
            headers.instructions / bare.instructions,
            sides
                .iter()
                .map(|(s, c)| format!("instructions_{s}={:.0} allocs_{s}={:.1}", c.instructions, c.allocations))
                .collect::<Vec<_>>()
                .join(" ")
        );
        return Ok(());
    }

    for t in targets {
        run_phase(&cfg, t, cfg.warmup).await;
    }

    if let Ok(which) = std::env::var("BENCH_PROFILE") {
        let t = pick(&which);
        let p = run_phase(&cfg, t, cfg.secs).await;
        println!(
            "profile {}: {} requests, {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, cpu {:.1} µs/req, NATS {:.1} µs/req, \
             {:.1} allocs/req",
            t.label,
            p.load.requests,
            p.rps(),
            p.p50_ms(),
            p.p99_ms(),
            p.cpu_us_per_req(),
            p.nats_us_per_req(),
            p.allocs_per_req()
        );
        return Ok(());
    }

    let mut series: [Series<Phase>; 5] = Default::default();
    println!();
    println!(
        "{:>5} {:<13} {:>9} {:>6} {:>9} {:>8} {:>8} {:>10} {:>11} {:>11} {:>8}",
        "round",
        "target",
        "requests",
        "errors",
        "req/s",
        "p50 ms",
        "p99 ms",
        "cpu µs/req",
        "NATS µs/req",
        "allocs/req",
        "RSS MiB"
    );
    for round in 0..cfg.rounds {
        // Alternate the order, so drift on the shared machine hits every target alike.
        let order: [usize; 5] = if round % 2 == 0 { [0, 1, 2, 3, 4] } else { [4, 3, 2, 1, 0] };
        for i in order {
            let p = run_phase(&cfg, targets[i], cfg.secs).await;
            println!(
                "{:>5} {:<13} {:>9} {:>6} {:>9.0} {:>8.2} {:>8.2} {:>10.1} {:>11.1} {:>11.1} {:>8.1}",
                round + 1,
                targets[i].label,
                p.load.requests,
                p.load.errors,
                p.rps(),
                p.p50_ms(),
                p.p99_ms(),
                p.cpu_us_per_req(),
                p.nats_us_per_req(),
                p.allocs_per_req(),
                p.peak_rss_mib()
            );
            series[i].0.push(p);
        }
    }
    let hwm = proc_status_bytes("VmHWM");

    let [sa, sc, sb, sd, se] = &series;
    let paired = |s: &Series<Phase>| -> String {
        s.0.iter().zip(&sb.0).map(|(x, b)| format!("{:.2}", x.rps() / b.rps())).collect::<Vec<_>>().join(" ")
    };
    println!();
    println!("summary: median over {} round(s), {c} connections, {workers} worker(s) per server", cfg.rounds);
    println!(
        "{:<13} {:>9} {:>8} {:>8} {:>10} {:>11} {:>11} {:>12} {:>9}",
        "target", "req/s", "p50 ms", "p99 ms", "cpu µs/req", "NATS µs/req", "allocs/req", "peak RSS MiB", "/ limit"
    );
    let bare_rps = sb.med(Phase::rps);
    for (t, s) in targets.iter().zip([sa, sc, sb, sd, se]) {
        println!(
            "{:<13} {:>9.0} {:>8.2} {:>8.2} {:>10.1} {:>11.1} {:>11.1} {:>12.1} {:>9.2}",
            t.label,
            s.med(Phase::rps),
            s.med(Phase::p50_ms),
            s.med(Phase::p99_ms),
            s.med(Phase::cpu_us_per_req),
            s.med(Phase::nats_us_per_req),
            s.med(Phase::allocs_per_req),
            s.max(Phase::peak_rss_mib),
            s.med(Phase::rps) / bare_rps
        );
    }
    println!(
        "(cpu µs, allocs: CPU time and heap allocations of this process per HTTP request: HTTP workers, gateway, \
         services, raw responder{}; NATS µs: CPU time of the nats-server process per HTTP request; {})",
        if matches!(cfg.loadgen, LoadGen::Builtin) { " and the built-in load generator" } else { "" },
        if matches!(cfg.loadgen, LoadGen::Wrk(_)) {
            "NATS and wrk are other processes"
        } else {
            "NATS is another process"
        }
    );
    println!(
        "per round (paired): api/limit {}; rpc/limit {}; bare+client/limit {}; bare+headers/limit {}",
        paired(sa),
        paired(sc),
        paired(sd),
        paired(se)
    );
    println!(
        "memory of this process (gateway + api and srv services + bare app + raw responder{}): RSS {:.1} MiB at \
         start, {:.1} MiB ready, peak sampled {:.1} MiB under gateway load, {:.1} MiB under bare load; VmHWM {:.1} MiB",
        if matches!(cfg.loadgen, LoadGen::Builtin) { " + load generator" } else { "" },
        mib(rss_start),
        mib(rss_ready),
        sa.max(Phase::peak_rss_mib).max(sc.max(Phase::peak_rss_mib)),
        sb.max(Phase::peak_rss_mib).max(sd.max(Phase::peak_rss_mib)).max(se.max(Phase::peak_rss_mib)),
        mib(hwm)
    );

    gw_handle.stop(true).await;
    bare_handle.stop(true).await;
    api_svc.stop().await?;
    srv.stop().await?;
    raw_task.abort();

    // Only correct answers count: a target that answered anything else has no ratio.
    let errors: u64 = series.iter().flat_map(|s| s.0.iter()).map(|p| p.load.errors).sum();
    if errors > 0 {
        println!("gateway nats c={c} rpc_ratio=none");
        println!("gateway nats c={c} ratio=none");
        return Err(format!("{errors} requests failed or got a wrong answer: no ratio").into());
    }
    let ratio = sa.med(Phase::rps) / bare_rps;
    let rpc_ratio = sc.med(Phase::rps) / bare_rps;
    println!("gateway nats c={c} rpc_ratio={rpc_ratio:.2}");
    println!("gateway nats c={c} ratio={ratio:.2}");
    Ok(())
}
