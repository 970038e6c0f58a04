//! Durable events, end to end (published → stored → handled → acknowledged), on NATS JetStream
//! and on RabbitMQ: the framework (`Broker::publish_durable` + a service's durable
//! subscription) against a hand-written raw-client baseline, measured in the same process and
//! the same run.
//!
//! `cargo bench --bench events_durable`. What is compared, how, the environment variables and
//! the machine-readable output: `benches/README.md`.

use std::cell::RefCell;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, message::PublishMessage};
use futures::{stream, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use micro::broker::Broker;
use micro::prelude::*;
use micro::transport::Transport;
use micro::ServiceHandle;
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};

mod common;
use common::*;

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// The event both sides publish and decode.
#[derive(Serialize, Deserialize)]
struct UserEvent {
    user_id: String,
    n: u64,
    action: String,
}

fn user_event(n: u64) -> UserEvent {
    UserEvent { user_id: "user-0193f0e0-a1b2-7c3d-8e5f-60718293a4b5".into(), n, action: "login.password.web".into() }
}

/// The JetStream stream the framework stores events in (`src/transport/nats.rs`).
const NATS_STREAM: &str = "MICRO_EVENTS";

/// The stream as the framework makes it (`NatsTransport::ensure_stream`), for the raw side to
/// create it the same way if it is missing.
fn stream_config() -> jetstream::stream::Config {
    jetstream::stream::Config {
        name: NATS_STREAM.to_string(),
        subjects: vec!["micro.event.>".to_string()],
        storage: jetstream::stream::StorageType::File,
        max_age: Duration::from_secs(7 * 24 * 3600),
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    }
}

fn broker_cpu_note(pid: Option<u32>, name: &str) -> String {
    match pid {
        Some(pid) => format!("broker µs/ev = CPU of pid {pid} ({name}, shared: includes whatever else it serves)"),
        None => format!("no local {name} process found: broker CPU not shown"),
    }
}

/// A UUID v7 in its hyphenated form, without a heap allocation.
fn uuid_v7(buf: &mut [u8; uuid::fmt::Hyphenated::LENGTH]) -> &str {
    uuid::Uuid::now_v7().hyphenated().encode_lower(buf)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Raw,
    Framework,
}

impl Side {
    fn label(self) -> &'static str {
        match self {
            Side::Raw => "raw",
            Side::Framework => "framework",
        }
    }
}

struct Config {
    /// Run by `cargo bench` (else a smoke run, e.g. `cargo test --benches`).
    full: bool,
    /// Events per phase, if fixed (`BENCH_EVENTS`, or the default when `BENCH_SECS` is unset).
    events: Option<u64>,
    /// Target seconds per phase (`BENCH_SECS`), used when `events` is not fixed.
    secs: f64,
    rounds: usize,
    warmup_events: u64,
    concurrency: usize,
    window: usize,
    nats: bool,
    amqp: bool,
    profile: Option<Side>,
    split: bool,
}

impl Config {
    fn from_env() -> Config {
        // `cargo bench` passes `--bench`; `cargo test --benches` does not: keep that a smoke run.
        let full = std::env::args().any(|a| a == "--bench");
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let int =
            |name: &str, default: u64| var(name).and_then(|s| s.trim().parse::<u64>().ok()).unwrap_or(default).max(1);
        // A smoke run stays small whatever BENCH_SECS says.
        let secs = var("BENCH_SECS").and_then(|s| s.trim().parse::<f64>().ok()).filter(|s| *s > 0.0 && full);
        let events = match (var("BENCH_EVENTS"), secs) {
            (Some(_), _) | (None, None) => Some(int("BENCH_EVENTS", if full { 20_000 } else { 500 })),
            (None, Some(_)) => None,
        };
        let brokers = var("BENCH_BROKERS").unwrap_or_else(|| "nats,amqp".into());
        let has = |b: &str| brokers.split(',').any(|x| x.trim() == b);
        Config {
            full,
            events,
            secs: secs.unwrap_or(0.0),
            rounds: int("BENCH_ROUNDS", if full { 3 } else { 1 }) as usize,
            warmup_events: int("BENCH_WARMUP_EVENTS", if full { 2000 } else { 100 }),
            concurrency: int("BENCH_CONCURRENCY", 64) as usize,
            window: int("BENCH_WINDOW", 256) as usize,
            nats: has("nats"),
            amqp: has("amqp"),
            profile: match var("BENCH_PROFILE").as_deref() {
                Some("raw") => Some(Side::Raw),
                Some(_) => Some(Side::Framework),
                None => None,
            },
            split: var("BENCH_SPLIT").is_some_and(|v| v != "0"),
        }
    }

    /// How long a phase of `n` events may take before the bench gives up on it.
    fn phase_timeout(n: u64) -> Duration {
        Duration::from_secs(30) + Duration::from_millis(2 * n)
    }
}

/// What the subscriber of one phase has seen: which `n`s, how many, duplicates.
struct Tally {
    expected: u64,
    handled: AtomicU64,
    duplicates: AtomicU64,
    unexpected: AtomicU64,
    /// One bit per `n`.
    seen: Vec<AtomicU64>,
    done: Notify,
    /// Split mode: handlers wait until this is true.
    gate: watch::Sender<bool>,
    /// Split mode: how many deliveries have reached the closed gate.
    at_gate: watch::Sender<u64>,
}

impl Tally {
    fn new(expected: u64) -> Arc<Tally> {
        Arc::new(Tally {
            expected,
            handled: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            unexpected: AtomicU64::new(0),
            seen: (0..expected.div_ceil(64)).map(|_| AtomicU64::new(0)).collect(),
            done: Notify::new(),
            gate: watch::Sender::new(true),
            at_gate: watch::Sender::new(0),
        })
    }

    /// Like `new`, with handlers held until [`open`](Self::open).
    fn gated(expected: u64) -> Arc<Tally> {
        let t = Tally::new(expected);
        t.gate.send_replace(false);
        t
    }

    fn open(&self) {
        self.gate.send_replace(true);
    }

    async fn wait_open(&self) {
        self.at_gate.send_modify(|k| *k += 1);
        let _ = self.gate.subscribe().wait_for(|open| *open).await;
    }

    /// Waits (at most `within`) until `k` deliveries wait at the closed gate: the consumer is
    /// running and holds as many as it may, so the clock that starts at `open` sees it at work.
    async fn reached_gate(&self, k: u64, within: Duration) {
        let mut at_gate = self.at_gate.subscribe();
        if tokio::time::timeout(within, at_gate.wait_for(|&n| n >= k)).await.is_err() {
            eprintln!(
                "  only {} of {k} deliveries reached the gate within {within:?}; measuring anyway",
                *at_gate.borrow()
            );
        }
    }

    fn record(&self, n: u64) {
        let Some(word) = self.seen.get((n / 64) as usize).filter(|_| n < self.expected) else {
            self.unexpected.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let bit = 1u64 << (n % 64);
        if word.fetch_or(bit, Ordering::Relaxed) & bit != 0 {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        } else if self.handled.fetch_add(1, Ordering::Relaxed) + 1 == self.expected {
            self.done.notify_one();
        }
    }

    fn bad(&self) {
        self.unexpected.fetch_add(1, Ordering::Relaxed);
    }

    fn handled(&self) -> u64 {
        self.handled.load(Ordering::Relaxed)
    }

    async fn all_handled(&self) {
        // `notify_one` leaves a permit when nobody waits yet, so the last event is not missed.
        while self.handled() < self.expected {
            self.done.notified().await;
        }
    }
}

/// One measured phase.
#[derive(Default)]
struct Phase {
    events: u64,
    /// Publishes that failed.
    errors: u64,
    elapsed: Duration,
    /// CPU time (user + system) of this process in the phase: publisher and subscriber.
    cpu: Duration,
    /// CPU time of the broker process in the phase, if it is visible.
    server_cpu: Option<Duration>,
    /// Heap allocations (and reallocations) in this process during the phase.
    allocations: u64,
    /// Events handled more than once.
    duplicates: u64,
    /// Redeliveries the broker reports (NATS consumer info).
    redelivered: Option<u64>,
    /// Events that could not be decoded or had an unexpected number.
    unexpected: u64,
}

impl Phase {
    fn eps(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }
    fn cpu_us(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.events.max(1) as f64
    }
    fn allocs(&self) -> f64 {
        self.allocations as f64 / self.events.max(1) as f64
    }
    fn server_us(&self) -> f64 {
        self.server_cpu.map_or(f64::NAN, |c| c.as_secs_f64() * 1e6 / self.events.max(1) as f64)
    }
    fn with_tally(mut self, tally: &Tally) -> Phase {
        self.duplicates = tally.duplicates.load(Ordering::Relaxed);
        self.unexpected = tally.unexpected.load(Ordering::Relaxed);
        if self.unexpected > 0 {
            eprintln!("  {} events could not be decoded or had an unexpected n", self.unexpected);
        }
        self
    }
    /// What makes this phase unfit for a ratio: failed publishes, events handled twice or
    /// unreadable. `None` when it is clean.
    fn flaw(&self) -> Option<String> {
        (self.errors + self.duplicates + self.unexpected > 0).then(|| {
            format!(
                "{} failed publishes, {} duplicates, {} unexpected events",
                self.errors, self.duplicates, self.unexpected
            )
        })
    }
}

/// Starts the clocks of a phase.
struct Meter {
    t0: Instant,
    cpu0: Duration,
    allocs0: u64,
    server: Option<(u32, Duration)>,
}

impl Meter {
    fn start(server_pid: Option<u32>) -> Meter {
        Meter {
            server: server_pid.and_then(|pid| Some((pid, pid_cpu(pid)?))),
            cpu0: process_cpu(),
            allocs0: ALLOCATIONS.load(Ordering::Relaxed),
            t0: Instant::now(),
        }
    }

    fn stop(self, events: u64, errors: u64) -> Phase {
        let elapsed = self.t0.elapsed();
        Phase {
            events,
            errors,
            elapsed,
            cpu: process_cpu().saturating_sub(self.cpu0),
            allocations: ALLOCATIONS.load(Ordering::Relaxed) - self.allocs0,
            server_cpu: self.server.and_then(|(pid, c0)| Some(pid_cpu(pid)?.saturating_sub(c0))),
            ..Default::default()
        }
    }
}

/// Publishes events `0..n` with `window` publishes in flight; the number of failures.
async fn publish_all<F, Fut, E>(n: u64, window: usize, publish: F) -> u64
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut results = stream::iter(0..n).map(publish).buffer_unordered(window);
    let (mut errors, mut first) = (0u64, None);
    while let Some(r) = results.next().await {
        if let Err(e) = r {
            errors += 1;
            first.get_or_insert_with(|| e.to_string());
        }
    }
    if let Some(e) = first {
        eprintln!("  {errors} publishes failed, first: {e}");
    }
    errors
}

/// Publishes `0..n` while the subscriber handles them; resolves once all `n` are handled.
async fn publish_and_handle<F, Fut, E>(tally: &Tally, window: usize, publish: F) -> Result<u64, BoxError>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let n = tally.expected;
    let timeout = Config::phase_timeout(n);
    let (errors, handled) =
        tokio::join!(publish_all(n, window, publish), tokio::time::timeout(timeout, tally.all_handled()));
    if handled.is_err() {
        return Err(format!(
            "only {} of {n} events handled within {timeout:?} ({errors} publishes failed)",
            tally.handled()
        )
        .into());
    }
    Ok(errors)
}

/// The framework's publish: `Broker::publish_durable` (encode, envelope, stored-ack).
async fn fw_publish(broker: &Broker, topic: &str, i: u64) -> micro::Result<()> {
    broker.publish_durable(topic, &user_event(i)).await.map(drop)
}

/// The framework's subscriber: a service with one durable subscription whose handler decodes
/// the event (`Req<UserEvent>`) and counts it.
async fn start_service(
    url: &str,
    name: &str,
    topic: &str,
    group: &str,
    concurrency: usize,
    tally: &Arc<Tally>,
) -> Result<ServiceHandle, BoxError> {
    let options = SubscribeOptions::durable(group).concurrency(concurrency);
    let builder = Service::builder(name).transport(url);
    let t = tally.clone();
    let service = if *tally.gate.borrow() {
        builder
            .subscribe_with(topic, options, move |Req(e): Req<UserEvent>| {
                t.record(e.n);
                std::future::ready(Ok::<(), Status>(()))
            })
            .start()
            .await?
    } else {
        builder
            .subscribe_with(topic, options, move |Req(e): Req<UserEvent>| {
                let t = t.clone();
                async move {
                    t.wait_open().await;
                    t.record(e.n);
                    Ok::<(), Status>(())
                }
            })
            .start()
            .await?
    };
    Ok(service)
}

/// One broker's pair of sides.
trait Bench {
    fn name(&self) -> &'static str;
    /// One phase of `n` events on `side`; `tag` makes its names unique.
    async fn phase(&self, cfg: &Config, side: Side, tag: &str, n: u64) -> Result<Phase, BoxError>;
    /// Publish path and consume path apart: (publish, consume), if this broker supports it.
    async fn split(&self, _cfg: &Config, _side: Side, _tag: &str, _n: u64) -> Result<Option<(Phase, Phase)>, BoxError> {
        Ok(None)
    }
    /// Deletes what the bench made on the broker (best effort).
    async fn cleanup(&self);
}

#[path = "events_durable/amqp.rs"]
mod amqp;
#[path = "events_durable/nats.rs"]
mod nats;
use amqp::AmqpBench;
use nats::NatsBench;

fn print_header() {
    println!(
        "{:>5} {:<10} {:>7} {:>6} {:>9} {:>10} {:>10} {:>12} {:>5} {:>8}",
        "round", "side", "events", "errors", "events/s", "cpu µs/ev", "allocs/ev", "broker µs/ev", "dups", "redeliv"
    );
}

fn print_row(round: &str, side: &str, p: &Phase) {
    println!(
        "{:>5} {:<10} {:>7} {:>6} {:>9.0} {:>10.1} {:>10.1} {:>12.1} {:>5} {:>8}",
        round,
        side,
        p.events,
        p.errors,
        p.eps(),
        p.cpu_us(),
        p.allocs(),
        p.server_us(),
        p.duplicates,
        p.redelivered.map_or("-".to_string(), |r| r.to_string())
    );
}

fn med(series: &[Phase], f: fn(&Phase) -> f64) -> f64 {
    median(series.iter().map(f).collect())
}

/// Warm-up, rounds, split (if asked), summary; the framework/raw ratio of median throughputs,
/// or `None` when a phase had failures (then no ratio is printed).
async fn run_broker<B: Bench>(cfg: &Config, b: &B) -> Result<Option<f64>, BoxError> {
    let name = b.name();
    let (c, w) = (cfg.concurrency, cfg.window);
    println!();
    println!("== {name}: durable events, C={c} deliveries outstanding, W={w} publishes in flight");

    let mut warm_rate = f64::INFINITY;
    for side in [Side::Raw, Side::Framework] {
        let p = b.phase(cfg, side, &format!("warm-{}", side.label()), cfg.warmup_events).await?;
        warm_rate = warm_rate.min(p.eps());
    }
    let n = cfg.events.unwrap_or_else(|| ((cfg.secs * warm_rate) as u64).clamp(200, 2_000_000));
    println!(
        "{name}: {n} events per phase{}, {} round(s)",
        if cfg.events.is_some() { String::new() } else { format!(" (about {:.1} s at the warm-up rate)", cfg.secs) },
        cfg.rounds
    );

    if let Some(side) = cfg.profile {
        let p = b.phase(cfg, side, &format!("profile-{}", side.label()), n).await?;
        println!(
            "profile {name} {}: {} events, {:.0} events/s, cpu {:.1} µs/event, {:.1} allocs/event, broker {:.1} µs/event",
            side.label(),
            p.events,
            p.eps(),
            p.cpu_us(),
            p.allocs(),
            p.server_us()
        );
        return Ok(None);
    }

    let mut series: [Vec<Phase>; 2] = Default::default();
    print_header();
    for round in 0..cfg.rounds {
        // Alternate which side goes first, so drift on the shared machine hits both alike.
        let order = if round % 2 == 0 { [Side::Raw, Side::Framework] } else { [Side::Framework, Side::Raw] };
        for side in order {
            let p = b.phase(cfg, side, &format!("{}-r{}", side.label(), round + 1), n).await?;
            print_row(&(round + 1).to_string(), side.label(), &p);
            series[side as usize].push(p);
        }
    }

    if cfg.split {
        let mut rows = Vec::new();
        for side in [Side::Raw, Side::Framework] {
            if let Some(pc) = b.split(cfg, side, &format!("split-{}", side.label()), n).await? {
                rows.push((side, pc));
            }
        }
        if !rows.is_empty() {
            println!();
            println!("{name} split (one run each): publish only (consumer idle), then consume the stored backlog");
            print_header();
            for (side, (publish, consume)) in &rows {
                print_row("pub", side.label(), publish);
                print_row("cons", side.label(), consume);
            }
        }
    }

    let [raw, fw] = &series;
    let paired: Vec<f64> = raw.iter().zip(fw).map(|(r, f)| f.eps() / r.eps()).collect();
    let shown: Vec<String> = paired.iter().map(|r| format!("{r:.2}")).collect();
    println!();
    println!("{name} summary: median over {} round(s)", cfg.rounds);
    println!("{:<14} {:>10} {:>10} {:>10} {:>8}", "metric", "raw", "framework", "fw - raw", "fw/raw");
    let row = |metric: &str, f: fn(&Phase) -> f64| {
        let (r, x) = (med(raw, f), med(fw, f));
        println!("{metric:<14} {r:>10.1} {x:>10.1} {:>10.1} {:>8.2}", x - r, x / r);
    };
    row("events/s", Phase::eps);
    row("cpu µs/event", Phase::cpu_us);
    row("allocs/event", Phase::allocs);
    row("broker µs/ev", Phase::server_us);
    println!(
        "(cpu µs, allocs: CPU time and heap allocations of this process per event, publisher and subscriber \
         together; broker µs: CPU time of the broker process per event)"
    );
    let flaws: Vec<String> = [Side::Raw, Side::Framework]
        .iter()
        .flat_map(|&side| {
            series[side as usize].iter().filter_map(move |p| p.flaw().map(|f| format!("{}: {f}", side.label())))
        })
        .collect();
    if !flaws.is_empty() {
        println!("{name}: no ratio, phases had failures: {}", flaws.join("; "));
        return Ok(None);
    }
    let ratio = median(paired);
    println!("{name} framework/raw events/s per round (paired): {} -> median {ratio:.2}", shown.join(" "));
    Ok(Some(ratio))
}

/// Runs one broker's bench and cleans up after it, whatever happened.
async fn run_and_clean<B: Bench>(cfg: &Config, b: B) -> Result<Option<f64>, BoxError> {
    let result = run_broker(cfg, &b).await;
    b.cleanup().await;
    result
}

#[actix::main]
async fn main() -> Result<(), BoxError> {
    let cfg = Config::from_env();
    let run = uuid::Uuid::now_v7().simple().to_string();
    // Both sides publish the same bytes: the framework's codec is named MessagePack.
    assert_eq!(Codec::MsgPack.encode(&user_event(1))?[..], rmp_serde::to_vec_named(&user_event(1))?[..]);

    if !cfg.full {
        println!("events_durable: smoke run (not started by `cargo bench`): small phases, figures not meaningful");
    }
    println!(
        "events_durable: published -> stored -> handled -> acked, framework vs raw client, same payload; \
         one current-thread actix arbiter for this process; run {run}"
    );

    let (mut nats_ratio, mut amqp_ratio) = (None, None);
    if cfg.nats {
        let b = NatsBench::connect(&run).await?;
        println!("nats: {}; {}; {}", b.url, b.header_note, broker_cpu_note(b.server_pid, "nats-server"));
        nats_ratio = run_and_clean(&cfg, b).await?;
    }
    if cfg.amqp {
        let b = AmqpBench::connect(&run).await?;
        let shown = match (b.url.find("://"), b.url.rfind('@')) {
            (Some(s), Some(at)) if at > s => format!("{}://***@{}", &b.url[..s], &b.url[at + 1..]),
            _ => b.url.clone(),
        };
        println!();
        let raw = if b.raw_as_framework {
            "raw = like the framework (topic exchange `micro`, the envelope's headers), to a durable quorum queue"
        } else {
            "raw = persistent mandatory publishes with message_id to a durable quorum queue"
        };
        println!("amqp: {shown}; {raw}; {}", broker_cpu_note(b.server_pid, "beam.smp"));
        amqp_ratio = run_and_clean(&cfg, b).await?;
    }

    if cfg.profile.is_some() {
        return Ok(());
    }
    println!();
    // A broker not run, or a run with failures, prints no number: nothing to compare.
    let shown = |r: Option<f64>| r.map_or_else(|| "none".to_string(), |r| format!("{r:.2}"));
    println!("events durable nats ratio={}", shown(nats_ratio));
    println!("events durable amqp ratio={}", shown(amqp_ratio));
    if cfg.nats && nats_ratio.is_none() || cfg.amqp && amqp_ratio.is_none() {
        return Err("a broker's phases had failures: no ratio".into());
    }
    Ok(())
}
