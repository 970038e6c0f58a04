//! The sidecar's overhead: a Rust client calling a Python app's `Say.Hello` through
//! the sidecar (client → NATS → sidecar process → HTTP → app) against the same client calling
//! the same app directly over HTTP, in the same run. Reports the added p50/p99 at c=1 and c=16,
//! the sidecar process's CPU time per call and its resident memory. The sidecar is the
//! `micro-sidecar` binary; `BENCH_SIDECAR=micro` runs the whole CLI's `micro sidecar` instead.
//!
//! `cargo bench --features cli --bench sidecar`. How the benches measure: `benches/README.md`.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

mod common;
use common::rpc::{run_phase, Caller, Config, Phase};
use common::*;

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

const APP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sidecar_app.py");
const CONCURRENCY: usize = 16;

#[derive(Clone)]
enum Target {
    Sidecar { client: micro::Client, service: String },
    Direct { http: awc::Client, url: String },
}

impl Caller for Target {
    fn label(&self) -> &'static str {
        match self {
            Target::Sidecar { .. } => "sidecar",
            Target::Direct { .. } => "direct",
        }
    }

    async fn call(&self, req: &HelloRequest) -> Result<HelloReply, BoxError> {
        match self {
            Target::Sidecar { client, service } => Ok(client.call(service, ENDPOINT, req).await?),
            Target::Direct { http, url } => {
                let mut rsp = http.post(url).send_json(req).await.map_err(|e| e.to_string())?;
                if !rsp.status().is_success() {
                    return Err(format!("the app answered {}", rsp.status()).into());
                }
                Ok(rsp.json::<HelloReply>().await.map_err(|e| e.to_string())?)
            }
        }
    }
}

/// A child process, killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A process's resident memory in bytes: the whole (`VmRSS`), its heap and stacks (`RssAnon`)
/// and the pages of its files, its binary first among them (`RssFile`).
#[derive(Clone, Copy)]
struct Rss {
    total: u64,
    anon: u64,
    file: u64,
}

impl Rss {
    fn of(pid: u32) -> Rss {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            let kb = status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.split_whitespace().next());
            kb.and_then(|k| k.parse::<u64>().ok()).unwrap_or(0) * 1024
        };
        Rss { total: field("VmRSS:"), anon: field("RssAnon:"), file: field("RssFile:") }
    }
}

fn free_port() -> Result<u16, BoxError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

#[actix::main]
async fn main() -> Result<(), BoxError> {
    let cfg = Config::from_env();
    let url = micro::test_util::nats_url();

    // The app: the Python test app (standard library only).
    let mut child = Command::new("python3")
        .arg(APP)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run python3 ({e}); install it with: apt-get install -y python3"))?;
    let mut line = String::new();
    let stdout = child.stdout.take().ok_or("the app's stdout")?;
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    let _app = Proc(child);
    let port: u16 =
        line.trim().strip_prefix("LISTENING ").and_then(|p| p.parse().ok()).ok_or("the app did not start")?;
    let app_url = format!("http://127.0.0.1:{port}");

    // The sidecar, its own process: the `micro-sidecar` binary (what is deployed next to an
    // app), or with `BENCH_SIDECAR=micro` the whole CLI's `micro sidecar`.
    let service = micro::test_util::unique("bench-py");
    let sidecar_port = free_port()?;
    let whole_cli = std::env::var("BENCH_SIDECAR").is_ok_and(|b| b == "micro");
    let (binary, command) = if whole_cli {
        (env!("CARGO_BIN_EXE_micro"), "micro sidecar")
    } else {
        (env!("CARGO_BIN_EXE_micro-sidecar"), "micro-sidecar")
    };
    let mut sidecar = Command::new(binary);
    sidecar.args(["--transport", &url]);
    if whole_cli {
        sidecar.arg("sidecar");
    }
    let sidecar = sidecar
        .args(["--name", &service, "--app", &app_url, "--endpoint", ENDPOINT])
        .args(["--address", &format!("127.0.0.1:{sidecar_port}")])
        .env("MICRO_LOG", "warn")
        .spawn()?;
    let sidecar_pid = sidecar.id();
    let _sidecar = Proc(sidecar);

    let client = micro::Client::connect(&url).await?;
    let registered = async {
        loop {
            if !client.registry().get_service(&service).await?.is_empty() {
                return Ok::<_, micro::Error>(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), registered).await.map_err(|_| "the sidecar did not register")??;
    let rss_idle = Rss::of(sidecar_pid);

    let via_sidecar = Target::Sidecar { client: client.clone(), service: service.clone() };
    // Diagnostic: the same client calling a Rust service (in this process) over NATS, no HTTP:
    // the share of the broker hop in what the sidecar side adds.
    let rust_name = micro::test_util::unique("bench-rust");
    let rust =
        micro::Service::builder(rust_name.clone()).transport(url.clone()).handle(ENDPOINT, say_hello).start().await?;
    let nats_only = Target::Sidecar { client: client.clone(), service: rust_name };
    run_phase(&nats_only, 1, cfg.warmup, None).await;
    let http = awc::Client::builder().timeout(Duration::from_secs(10)).finish();
    let direct = Target::Direct { http, url: format!("{app_url}/{ENDPOINT}") };

    if !cfg.full {
        println!("sidecar: smoke run (not started by `cargo bench`): short phases, figures not meaningful");
    }
    println!(
        "sidecar: {url}; Python app {app_url}; sidecar `{command}`, pid {sidecar_pid}; {} round(s) x {:.1} s \
         per phase, warm-up {:.1} s per side and concurrency",
        cfg.rounds,
        cfg.secs.as_secs_f64(),
        cfg.warmup.as_secs_f64()
    );
    for target in [&direct, &via_sidecar] {
        run_phase(target, 1, cfg.warmup, None).await;
        run_phase(target, CONCURRENCY, cfg.warmup, None).await;
    }

    // [concurrency index][0 = direct, 1 = sidecar]
    let mut series: [[Series<Phase>; 2]; 2] = Default::default();
    println!();
    println!(
        "{:>5} {:>5} {:<8} {:>8} {:>6} {:>9} {:>9} {:>9} {:>14}",
        "round", "conc", "side", "calls", "errors", "calls/s", "p50 µs", "p99 µs", "sidecar cpu µs"
    );
    for round in 0..cfg.rounds {
        let order: [(usize, &Target); 2] =
            if round % 2 == 0 { [(0, &direct), (1, &via_sidecar)] } else { [(1, &via_sidecar), (0, &direct)] };
        for (ci, conc) in [(0, 1), (1, CONCURRENCY)] {
            for (side, target) in order {
                // The sidecar's CPU is read as the "broker" process of the phase.
                let p = run_phase(target, conc, cfg.secs, Some(sidecar_pid)).await;
                println!(
                    "{:>5} {:>5} {:<8} {:>8} {:>6} {:>9.0} {:>9.1} {:>9.1} {:>14.1}",
                    round + 1,
                    conc,
                    target.label(),
                    p.requests,
                    p.errors,
                    p.rps(),
                    p.p50_us(),
                    p.p99_us(),
                    p.broker_us_per_call()
                );
                series[ci][side].0.push(p);
            }
        }
    }
    let rss_loaded = Rss::of(sidecar_pid);
    let mut hop = (Vec::new(), Vec::new());
    for _ in 0..cfg.rounds {
        hop.0.push(run_phase(&nats_only, 1, cfg.secs, None).await.p50_us());
        hop.1.push(run_phase(&nats_only, CONCURRENCY, cfg.secs, None).await.p50_us());
    }
    let (hop1, hopc) = (median(hop.0), median(hop.1));
    rust.stop().await?;

    let [s1, sc] = &series;
    println!();
    println!("summary: median over {} round(s)", cfg.rounds);
    println!("{:>5} {:<10} {:>10} {:>10} {:>10} {:>8}", "conc", "metric", "direct", "sidecar", "added", "ratio");
    let mut added = Vec::new();
    for (conc, s) in [(1, s1), (CONCURRENCY, sc)] {
        for (metric, f) in
            [("p50 µs", Phase::p50_us as fn(&Phase) -> f64), ("p99 µs", Phase::p99_us), ("calls/s", Phase::rps)]
        {
            let (d, v) = (s[0].med(f), s[1].med(f));
            println!("{conc:>5} {metric:<10} {d:>10.1} {v:>10.1} {:>10.1} {:>8.2}", v - d, v / d);
            if metric != "calls/s" {
                added.push(v - d);
            }
        }
    }
    let cpu1 = s1[1].med(Phase::broker_us_per_call);
    let cpuc = sc[1].med(Phase::broker_us_per_call);
    println!(
        "sidecar process: {cpu1:.1} µs CPU per call at c=1, {cpuc:.1} at c={CONCURRENCY}; RSS {:.1} MiB registered \
         and idle, {:.1} MiB after the load (targets: added p50 ≤ 250 µs, RSS ≤ 15 MiB)",
        mib(rss_idle.total),
        mib(rss_loaded.total)
    );
    println!(
        "(RSS in pages of files, mostly the binary's, and anonymous memory: {:.1} + {:.1} MiB idle, {:.1} + {:.1} \
         MiB after the load)",
        mib(rss_idle.file),
        mib(rss_idle.anon),
        mib(rss_loaded.file),
        mib(rss_loaded.anon)
    );
    println!(
        "(the sidecar side adds the client's NATS hop and the sidecar; the direct side is one keep-alive HTTP \
         connection per caller to the same Python app)"
    );
    println!(
        "diagnostic: the same client calling a Rust Say.Hello over NATS (no HTTP, no sidecar): p50 {hop1:.1} µs \
         at c=1, {hopc:.1} µs at c={CONCURRENCY}; the sidecar's own share of the added p50 is about {:.1} µs \
         at c=1",
        s1[1].med(Phase::p50_us) - s1[0].med(Phase::p50_us) - hop1
    );

    let errors: u64 = series.iter().flatten().flat_map(|s| s.0.iter()).map(|p| p.errors).sum();
    println!(
        "sidecar c=1 added_p50_us={:.1} added_p99_us={:.1} c={CONCURRENCY} added_p50_us={:.1} added_p99_us={:.1} \
         cpu_us_per_call={cpu1:.1} rss_mib={:.1}",
        added[0],
        added[1],
        added[2],
        added[3],
        mib(rss_loaded.total)
    );
    let ratio = |s: &[Series<Phase>; 2]| s[1].med(Phase::p50_us) / s[0].med(Phase::p50_us);
    if errors > 0 {
        println!("sidecar c=1 ratio=none c={CONCURRENCY} ratio=none ({errors} errors)");
        return Err(format!("{errors} calls failed").into());
    }
    println!("sidecar c=1 p50_ratio={:.2} c={CONCURRENCY} p50_ratio={:.2}", ratio(s1), ratio(sc));
    client.registry().stop();
    Ok(())
}
