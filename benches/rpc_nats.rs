//! RPC over NATS: the framework (`Service` + `Client::call`) against a hand-written async-nats
//! request/reply baseline, measured in the same process and the same run.
//!
//! ```text
//! export CARGO_TARGET_DIR=~/.cache/actix-micro-target
//! BENCH_SECS=3 cargo bench --bench rpc_nats
//! ```
//!
//! What is compared:
//! - **framework**: a service started with `Service::builder(..).transport(nats).handle("Say.Hello", ..)`
//!   called through a standalone `micro::Client` (`Client::connect(nats)`), i.e. the realistic
//!   path: registry lookup, selector, node subject, envelope headers, task per request, codec.
//! - **raw**: a plain async-nats `subscribe(subject)` loop that decodes the same MessagePack
//!   request, builds the same reply and publishes its MessagePack encoding (the same payload
//!   bytes as the framework's reply body), called with `async_nats::Client::request` and the
//!   same MessagePack request payload, decoding the reply.
//!
//! Fairness: both responders and all callers run in this one process, on the same runtime kind:
//! the actix `System` arbiter (a current-thread tokio runtime), so the process uses at most one
//! core for client and server work alike (the NATS server gets the other core). Responder and
//! caller use separate NATS connections on both sides (the service's transport vs the client's;
//! two `async_nats::connect`s for raw). Every phase runs in rounds that alternate which side goes
//! first; the summary reports the **median over rounds** of every figure (per-round numbers
//! are printed too). At concurrency N, N tasks each loop call-after-call for the phase's
//! duration; throughput is completed calls divided by the time until the last one finished.
//! The raw responder answers inline in its subscribe loop; the framework spawns a task per
//! request: that is part of what is measured.
//!
//! Besides latency and throughput the table shows, per call, the CPU time of this process
//! (`/proc/self/stat`, caller and responder together; the NATS server is another process) and
//! the heap allocations (a counting wrapper around the system allocator, applied to both sides
//! alike). On a shared machine these are steadier than wall-clock figures.
//!
//! Environment:
//! - `BENCH_SECS` (default 3; 0.2 when not run by `cargo bench`): seconds per measured phase.
//! - `BENCH_ROUNDS` (default 3; 1 when not run by `cargo bench`): rounds of
//!   (c=1 raw/framework, c=N raw/framework).
//! - `BENCH_WARMUP_SECS` (default 1; 0.2 when not run by `cargo bench`): warm-up per side and
//!   concurrency.
//! - `BENCH_CONCURRENCY` (default 64): callers in flight in the throughput phase.
//! - `MICRO_TEST_NATS_URL` (default `nats://127.0.0.1:4222`).
//! - `BENCH_PROFILE=framework|raw`: after the warm-up, run only that side at c=N for
//!   `BENCH_SECS` and exit (for `perf record`; prints no ratio lines).
//!
//! The last two lines are machine-readable:
//! `rpc nats c=1 added_p50_us=<framework p50 - raw p50>` and
//! `rpc nats c=64 ratio=<framework / raw throughput>`.
//!
//! The idle memory of a process running one service is measured by the `idle_rss` example
//! (`cargo run --release --example idle_rss`), not here: this process also holds callers.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;
use micro::prelude::*;

mod common;
use common::*;

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// One way of making the call.
#[derive(Clone)]
enum Target {
    Framework { client: micro::Client, service: String },
    Raw { client: async_nats::Client, subject: async_nats::Subject },
}

impl Target {
    fn label(&self) -> &'static str {
        match self {
            Target::Framework { .. } => "framework",
            Target::Raw { .. } => "raw",
        }
    }

    async fn call(&self, req: &HelloRequest) -> Result<HelloReply, BoxError> {
        match self {
            Target::Framework { client, service } => Ok(client.call(service, ENDPOINT, req).await?),
            Target::Raw { client, subject } => {
                let payload = Bytes::from(rmp_serde::to_vec_named(req)?);
                let msg = client.request(subject.clone(), payload).await?;
                Ok(rmp_serde::from_slice(&msg.payload)?)
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
}

impl Config {
    fn from_env() -> Config {
        // `cargo bench` passes `--bench`; `cargo test --benches` does not: keep that a smoke run.
        let full = std::env::args().any(|a| a == "--bench");
        let secs = |var: &str, full_default: f64| {
            let v = std::env::var(var).ok().and_then(|s| s.parse::<f64>().ok());
            Duration::from_secs_f64(v.unwrap_or(if full { full_default } else { 0.2 }).max(0.01))
        };
        let int = |var: &str, default: usize| {
            std::env::var(var).ok().and_then(|s| s.parse::<usize>().ok()).unwrap_or(default).max(1)
        };
        Config {
            full,
            secs: secs("BENCH_SECS", 3.0),
            rounds: int("BENCH_ROUNDS", if full { 3 } else { 1 }),
            warmup: secs("BENCH_WARMUP_SECS", 1.0),
            concurrency: int("BENCH_CONCURRENCY", 64),
        }
    }
}

struct Phase {
    requests: u64,
    errors: u64,
    elapsed: Duration,
    /// CPU time (user + system) this process spent in the phase: client and server work.
    cpu: Duration,
    /// Heap allocations (and reallocations) in this process during the phase.
    allocations: u64,
    /// Latencies in nanoseconds.
    hist: Histogram<u64>,
}

impl Phase {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    fn p50_us(&self) -> f64 {
        self.hist.value_at_quantile(0.50) as f64 / 1e3
    }
    fn p99_us(&self) -> f64 {
        self.hist.value_at_quantile(0.99) as f64 / 1e3
    }
    fn cpu_us_per_call(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.requests.max(1) as f64
    }
    fn allocs_per_call(&self) -> f64 {
        self.allocations as f64 / self.requests.max(1) as f64
    }
}

/// `concurrency` tasks call back-to-back until `duration` has passed.
async fn run_phase(target: &Target, concurrency: usize, duration: Duration) -> Phase {
    let start = Instant::now();
    let cpu_start = process_cpu();
    let allocations_start = ALLOCATIONS.load(Ordering::Relaxed);
    let deadline = start + duration;
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let target = target.clone();
            actix_rt::spawn(async move {
                let req = HelloRequest { name: "John".into() };
                let mut hist = Histogram::<u64>::new(3).expect("histogram");
                let (mut ok, mut errors) = (0u64, 0u64);
                let mut first_error = None;
                while Instant::now() < deadline {
                    let t0 = Instant::now();
                    match target.call(&req).await {
                        Ok(reply) if reply.msg == "Hello John" => {
                            // Auto-resizing histogram: `record` grows it (`saturating_record` would clamp).
                            hist.record(t0.elapsed().as_nanos() as u64).expect("record latency");
                            ok += 1;
                        }
                        Ok(reply) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| format!("unexpected reply {:?}", reply.msg));
                        }
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| e.to_string());
                        }
                    }
                }
                (ok, errors, first_error, hist)
            })
        })
        .collect();
    let mut phase = Phase {
        requests: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        cpu: Duration::ZERO,
        allocations: 0,
        hist: Histogram::<u64>::new(3).expect("histogram"),
    };
    let mut first_error = None;
    for w in workers {
        let (ok, errors, err, hist) = w.await.expect("worker task");
        phase.requests += ok;
        phase.errors += errors;
        phase.hist.add(&hist).expect("histogram add");
        first_error = first_error.or(err);
    }
    phase.elapsed = start.elapsed();
    phase.cpu = process_cpu().saturating_sub(cpu_start);
    phase.allocations = ALLOCATIONS.load(Ordering::Relaxed) - allocations_start;
    if let Some(e) = first_error {
        eprintln!("  {} c={concurrency}: {} errors, first: {e}", target.label(), phase.errors);
    }
    phase
}

/// Results of one side (framework or raw) at one concurrency, over rounds.
#[derive(Default)]
struct Series(Vec<Phase>);

impl Series {
    fn med(&self, f: impl Fn(&Phase) -> f64) -> f64 {
        median(self.0.iter().map(f).collect())
    }
}

#[actix::main]
async fn main() -> Result<(), BoxError> {
    let cfg = Config::from_env();
    let url = micro::test_util::nats_url();
    let c = cfg.concurrency;

    // Framework side: the service (its own NATS connection) and a standalone client (another).
    let service_name = micro::test_util::unique("bench-greeter");
    let service =
        Service::builder(service_name.clone()).transport(url.clone()).handle(ENDPOINT, say_hello).start().await?;
    let fw_client = micro::Client::connect(&url).await?;
    let framework = Target::Framework { client: fw_client.clone(), service: service_name.clone() };

    // Raw side: a responder connection with a plain subscribe loop, and a caller connection.
    let raw_subject = format!("bench.raw.{}", micro::test_util::unique("greeter"));
    let responder = async_nats::connect(&url).await?;
    let mut sub = responder.subscribe(raw_subject.clone()).await?;
    responder.flush().await?;
    let raw_task = actix_rt::spawn(async move {
        while let Some(msg) = sub.next().await {
            let Some(reply_to) = msg.reply else { continue };
            let Ok(req) = rmp_serde::from_slice::<HelloRequest>(&msg.payload) else { continue };
            let body = rmp_serde::to_vec_named(&greet(req)).expect("encode reply");
            if let Err(e) = responder.publish(reply_to, body.into()).await {
                eprintln!("raw responder: publish failed: {e}");
            }
        }
    });
    let raw_caller = async_nats::connect(&url).await?;
    let raw = Target::Raw { client: raw_caller.clone(), subject: raw_subject.clone().into() };

    // Same request bytes on both sides; check the reply bodies are the same size too.
    let req = HelloRequest { name: "John".into() };
    let req_bytes = Bytes::from(rmp_serde::to_vec_named(&req)?);
    let fw_reply =
        fw_client.call_raw(&service_name, ENDPOINT, req_bytes.clone(), Codec::MsgPack, CallOptions::default()).await?;
    let raw_reply = raw_caller.request(raw_subject.clone(), req_bytes.clone()).await?;
    assert_eq!(fw_reply.body, raw_reply.payload, "framework and raw reply bodies differ");

    if !cfg.full {
        println!("rpc_nats: smoke run (not started by `cargo bench`): short phases, figures not meaningful");
    }
    println!(
        "rpc_nats: {url}; request {} B, reply {} B (msgpack, both sides); {} round(s) x {:.1} s per phase, \
         warm-up {:.1} s per side and concurrency; one current-thread actix arbiter for everything",
        req_bytes.len(),
        fw_reply.body.len(),
        cfg.rounds,
        cfg.secs.as_secs_f64(),
        cfg.warmup.as_secs_f64()
    );

    let rss_before = micro::server::resident_memory_bytes();
    for target in [&raw, &framework] {
        run_phase(target, 1, cfg.warmup).await;
        run_phase(target, c, cfg.warmup).await;
    }

    // Profiling aid: `BENCH_PROFILE=framework|raw` runs only that side at c=N for BENCH_SECS
    // after the warm-up, so `perf record` sees one side's hot path only.
    if let Ok(side) = std::env::var("BENCH_PROFILE") {
        let target = if side == "raw" { &raw } else { &framework };
        let p = run_phase(target, c, cfg.secs).await;
        println!(
            "profile {} c={c}: {} calls, {:.0} calls/s, p50 {:.1} µs, p99 {:.1} µs, cpu {:.1} µs/call, \
             {:.1} allocs/call",
            target.label(),
            p.requests,
            p.rps(),
            p.p50_us(),
            p.p99_us(),
            p.cpu_us_per_call(),
            p.allocs_per_call()
        );
        service.stop().await?;
        raw_task.abort();
        return Ok(());
    }

    // [concurrency index][0 = raw, 1 = framework]
    let mut series: [[Series; 2]; 2] = Default::default();
    println!();
    println!(
        "{:>5} {:>5} {:<10} {:>9} {:>6} {:>10} {:>9} {:>9} {:>11} {:>11}",
        "round", "conc", "side", "calls", "errors", "calls/s", "p50 µs", "p99 µs", "cpu µs/call", "allocs/call"
    );
    for round in 0..cfg.rounds {
        // Alternate which side goes first, so drift on the shared machine hits both alike.
        let order: [(usize, &Target); 2] =
            if round % 2 == 0 { [(0, &raw), (1, &framework)] } else { [(1, &framework), (0, &raw)] };
        for (ci, conc) in [(0, 1), (1, c)] {
            for (side, target) in order {
                let p = run_phase(target, conc, cfg.secs).await;
                println!(
                    "{:>5} {:>5} {:<10} {:>9} {:>6} {:>10.0} {:>9.1} {:>9.1} {:>11.1} {:>11.1}",
                    round + 1,
                    conc,
                    target.label(),
                    p.requests,
                    p.errors,
                    p.rps(),
                    p.p50_us(),
                    p.p99_us(),
                    p.cpu_us_per_call(),
                    p.allocs_per_call()
                );
                series[ci][side].0.push(p);
            }
        }
    }
    let rss_after = micro::server::resident_memory_bytes();

    let [s1, sc] = &series;
    let (raw1, fw1) = (&s1[0], &s1[1]);
    let (rawc, fwc) = (&sc[0], &sc[1]);
    let paired: Vec<String> = rawc.0.iter().zip(&fwc.0).map(|(r, f)| format!("{:.2}", f.rps() / r.rps())).collect();

    println!();
    println!("summary: median over {} round(s)", cfg.rounds);
    println!("{:>5} {:<10} {:>10} {:>10} {:>10} {:>8}", "conc", "metric", "raw", "framework", "fw - raw", "fw/raw");
    let row = |conc: usize, metric: &str, r: f64, f: f64| {
        println!("{conc:>5} {metric:<10} {r:>10.1} {f:>10.1} {:>10.1} {:>8.2}", f - r, f / r);
    };
    row(1, "p50 µs", raw1.med(Phase::p50_us), fw1.med(Phase::p50_us));
    row(1, "p99 µs", raw1.med(Phase::p99_us), fw1.med(Phase::p99_us));
    row(1, "calls/s", raw1.med(Phase::rps), fw1.med(Phase::rps));
    row(1, "cpu µs", raw1.med(Phase::cpu_us_per_call), fw1.med(Phase::cpu_us_per_call));
    row(c, "calls/s", rawc.med(Phase::rps), fwc.med(Phase::rps));
    row(c, "p50 µs", rawc.med(Phase::p50_us), fwc.med(Phase::p50_us));
    row(c, "p99 µs", rawc.med(Phase::p99_us), fwc.med(Phase::p99_us));
    row(c, "cpu µs", rawc.med(Phase::cpu_us_per_call), fwc.med(Phase::cpu_us_per_call));
    row(c, "allocs", rawc.med(Phase::allocs_per_call), fwc.med(Phase::allocs_per_call));
    println!(
        "(cpu µs, allocs: CPU time and heap allocations of this process per call, caller and responder \
         together; the NATS server is another process)"
    );
    println!("c={c} framework/raw throughput per round (paired): {}", paired.join(" "));
    println!(
        "bench process RSS: {:.1} MiB before load, {:.1} MiB after (holds both sides and callers; \
         for one idle service see `cargo run --release --example idle_rss`)",
        mib(rss_before),
        mib(rss_after)
    );

    service.stop().await?;
    raw_task.abort();

    let added_p50 = fw1.med(Phase::p50_us) - raw1.med(Phase::p50_us);
    let ratio = fwc.med(Phase::rps) / rawc.med(Phase::rps);
    println!("rpc nats c=1 added_p50_us={added_p50:.1}");
    println!("rpc nats c={c} ratio={ratio:.2}");
    Ok(())
}
