//! RPC over RabbitMQ: the framework (`Service` + `Client::call` on `amqp://`) against a
//! hand-written lapin request/reply baseline with direct reply-to, measured in the same process
//! and the same run.
//!
//! ```text
//! export CARGO_TARGET_DIR=~/.cache/actix-micro-target
//! BENCH_SECS=3 cargo bench --bench rpc_amqp
//! ```
//!
//! What is compared:
//! - **framework**: a service started with `Service::builder(..).transport(amqp).handle("Say.Hello", ..)`
//!   called through a standalone `micro::Client` (`Client::connect(amqp)`), i.e. the realistic
//!   path: registry lookup, selector, node subject as a routing key on the `micro` topic
//!   exchange, envelope headers in the AMQP headers table, per-message `expiration`, task per
//!   request, codec (`docs/protocol.md` §10).
//! - **raw**: what a competent engineer writes with lapin. A responder connection declares an
//!   exclusive auto-delete queue, consumes it with `no_ack`, decodes the same MessagePack
//!   request, builds the same reply and publishes its MessagePack encoding (the same payload
//!   bytes as the framework's reply body) to the request's `reply_to` through the default
//!   exchange with the request's `correlation_id`. A caller connection publishes the same
//!   MessagePack request to that queue through the default exchange with
//!   `reply_to = amq.rabbitmq.reply-to` and a decimal `correlation_id`, consumes the
//!   direct reply-to pseudo-queue (`no_ack`) on the same channel, and matches replies to
//!   waiting calls by correlation id (a mutex-guarded map of oneshots, a 5 s timeout per call).
//!   Each reply publish is spawned rather than awaited inline: lapin's `basic_publish` resolves
//!   only once its IO thread has written the frames, so awaiting it in the consume loop would
//!   serialise the responder on that thread hop.
//!
//! **Feature cost, not overhead:** the raw side uses neither publisher confirms nor the
//! `mandatory` flag. The framework publishes every request `mandatory` on a channel in confirm
//! mode, so that a request no queue is bound for comes back (basic.return + confirm) as an
//! immediate `Unavailable` instead of a timeout: that is how it detects "no responders" and
//! knows a retry is safe. The broker therefore sends one more frame (the confirm) per request
//! on the framework side, and the client waits on it alongside the reply. To show that cost in
//! the same run, a third, diagnostic side **raw+confirm** is measured too: the raw caller on a
//! connection of its own whose channel is in confirm mode, publishing `mandatory` and waiting
//! for whichever comes first, reply or confirm (then the reply), as the framework does. It
//! calls the same raw responder. The headline ratio stays framework / raw.
//!
//! Fairness: both responders and all callers run in this one process, on the same runtime kind:
//! the actix `System` arbiter (a current-thread tokio runtime). lapin runs one IO thread per
//! connection on both sides alike. Responder and caller use separate connections on both sides
//! (the service's transport vs the client's; two `Connection::connect`s for raw). Every phase
//! runs in rounds that alternate which side goes first; the summary reports the **median over
//! rounds** of every figure (per-round numbers are printed too). At concurrency N, N tasks each
//! loop call-after-call for the phase's duration; throughput is completed calls divided by the
//! time until the last one finished.
//!
//! Besides latency and throughput the table shows, per call, the CPU time of this process
//! (`/proc/self/stat`, caller and responder together), the heap allocations (a counting wrapper
//! around the system allocator, applied to every side alike) and the CPU time of the RabbitMQ
//! server (`/proc/<pid>/stat` of the one local `beam.smp`, when there is exactly one; on a shared
//! broker it includes whatever else the broker serves meanwhile). On a shared two-core machine
//! the throughput follows the CPU left over, so these per-call costs are the steadier figures.
//!
//! Environment:
//! - `BENCH_SECS` (default 3; 0.2 when not run by `cargo bench`): seconds per measured phase.
//! - `BENCH_ROUNDS` (default 3; 1 when not run by `cargo bench`): rounds of
//!   (c=1 raw/framework/raw+confirm, c=N the same).
//! - `BENCH_WARMUP_SECS` (default 1; 0.2 when not run by `cargo bench`): warm-up per side and
//!   concurrency.
//! - `BENCH_CONCURRENCY` (default 64): callers in flight in the throughput phase.
//! - `MICRO_TEST_AMQP_URL` (default `amqp://guest:guest@127.0.0.1:5672/%2f`).
//! - `BENCH_RAW_CONFIRM_EXTRAS` (default empty): a comma-separated subset of `topic`, `headers`,
//!   `expiration`: more of the framework's wire features for the diagnostic raw+confirm side
//!   (a private topic exchange instead of the default one; the framework's envelope as
//!   `message_id` plus five headers; a per-message `expiration`), to attribute the difference.
//! - `BENCH_PROFILE=framework|raw|raw-confirm`: after the warm-up, run only that side at c=N for
//!   `BENCH_SECS` and exit (for `perf record`; prints no ratio lines).
//!
//! The last two lines are machine-readable:
//! `rpc amqp c=1 added_p50_us=<framework p50 - raw p50>` and
//! `rpc amqp c=64 ratio=<framework / raw throughput>`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind};
use micro::prelude::*;
use tokio::sync::oneshot;

mod common;
use common::*;

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";
const RAW_TIMEOUT: Duration = Duration::from_secs(5);

/// Wire features of the framework's AMQP mapping the diagnostic raw+confirm side can add
/// (`BENCH_RAW_CONFIRM_EXTRAS=topic,headers,expiration`), to attribute the difference.
#[derive(Clone, Copy, Default)]
struct Extras {
    /// Publish through a topic exchange (a private one, bound to the raw queue) instead of the
    /// default exchange, as the framework publishes through `micro`.
    topic: bool,
    /// The framework's request envelope: `message_id` plus five long-string headers (service,
    /// endpoint, deadline, caller, traceparent).
    headers: bool,
    /// A per-message `expiration` (the call timeout), as the framework sets.
    expiration: bool,
}

impl Extras {
    fn from_env() -> Extras {
        let v = std::env::var("BENCH_RAW_CONFIRM_EXTRAS").unwrap_or_default();
        let has = |w: &str| v.split(',').any(|x| x.trim() == w);
        Extras { topic: has("topic"), headers: has("headers"), expiration: has("expiration") }
    }

    fn describe(&self) -> String {
        let names: Vec<&str> =
            [(self.topic, "topic exchange"), (self.headers, "envelope headers"), (self.expiration, "expiration")]
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, n)| *n)
                .collect();
        names.join(", ")
    }
}

/// The raw lapin caller: one connection, one channel that publishes requests and consumes
/// direct reply-to; replies are matched to waiting calls by correlation id.
#[derive(Clone)]
struct RawCaller {
    channel: Channel,
    queue: ShortString,
    pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>>,
    next_id: Arc<AtomicU64>,
    /// The diagnostic variant: requests published `mandatory` on a confirm-mode channel, the
    /// confirm awaited alongside the reply, as the framework does.
    confirms: bool,
    /// The exchange requests go through: `""` (the default exchange) unless `Extras::topic`.
    exchange: ShortString,
    extras: Extras,
}

impl RawCaller {
    async fn connect(
        url: &str,
        queue: &str,
        confirms: bool,
        extras: Extras,
        exchange: &str,
    ) -> Result<(RawCaller, Connection), BoxError> {
        let conn = Connection::connect(url, ConnectionProperties::default()).await?;
        let channel = conn.create_channel().await?;
        if confirms {
            channel.confirm_select(ConfirmSelectOptions::default()).await?;
        }
        let mut replies = channel
            .basic_consume(
                DIRECT_REPLY_TO.into(),
                "raw-replies".into(),
                BasicConsumeOptions { no_ack: true, ..Default::default() },
                FieldTable::default(),
            )
            .await?;
        let pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>> = Arc::default();
        let map = pending.clone();
        actix_rt::spawn(async move {
            while let Some(Ok(d)) = replies.next().await {
                let id = d.properties.correlation_id().as_ref().and_then(|c| c.as_str().parse::<u64>().ok());
                if let Some(tx) = id.and_then(|id| map.lock().unwrap().remove(&id)) {
                    let _ = tx.send(d.data);
                }
            }
        });
        let caller = RawCaller {
            channel,
            queue: queue.into(),
            pending,
            next_id: Arc::new(AtomicU64::new(1)),
            confirms,
            exchange: exchange.into(),
            extras,
        };
        Ok((caller, conn))
    }

    async fn request(&self, payload: &[u8]) -> Result<Vec<u8>, BoxError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        let mut props =
            BasicProperties::default().with_reply_to(DIRECT_REPLY_TO.into()).with_correlation_id(id.to_string().into());
        if self.extras.headers {
            props = props.with_headers(envelope_headers()).with_message_id(uuid::Uuid::now_v7().to_string().into());
        }
        if self.extras.expiration {
            props = props.with_expiration(RAW_TIMEOUT.as_millis().to_string().into());
        }
        let opts = BasicPublishOptions { mandatory: self.confirms, ..Default::default() };
        let confirm =
            match self.channel.basic_publish(self.exchange.clone(), self.queue.clone(), opts, payload, props).await {
                Ok(confirm) => confirm,
                Err(e) => {
                    self.pending.lock().unwrap().remove(&id);
                    return Err(e.into());
                }
            };
        let deadline = tokio::time::Instant::now() + RAW_TIMEOUT;
        let mut rx = rx;
        if self.confirms {
            // Whichever comes first: the reply, or the confirm (a return means no queue).
            tokio::select! {
                reply = &mut rx => return reply.map_err(|_| "raw caller: reply dispatcher ended".into()),
                confirmed = confirm => match confirmed {
                    Ok(Confirmation::Ack(Some(_)) | Confirmation::Nack(_)) => {
                        self.pending.lock().unwrap().remove(&id);
                        return Err("raw caller: request returned or refused".into());
                    }
                    Ok(_) => {}
                    Err(e) => {
                        self.pending.lock().unwrap().remove(&id);
                        return Err(e.into());
                    }
                },
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(body)) => Ok(body),
            Ok(Err(_)) => Err("raw caller: reply dispatcher ended".into()),
            Err(_) => {
                self.pending.lock().unwrap().remove(&id);
                Err(format!("raw caller: no reply within {RAW_TIMEOUT:?}").into())
            }
        }
    }
}

/// The headers table of a framework request (same names, values of the same shape).
fn envelope_headers() -> FieldTable {
    let deadline = std::time::SystemTime::now() + RAW_TIMEOUT;
    let deadline = deadline.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis().to_string();
    let mut t = FieldTable::default();
    for (k, v) in [
        ("Micro-Service", "test.bench-greeter.0193f0e0a1b2c3d4e5f60718293a4b5c"),
        ("Micro-Endpoint", ENDPOINT),
        ("Micro-Deadline", deadline.as_str()),
        ("Micro-Caller", "go.micro.client"),
        ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    ] {
        t.insert(k.into(), AMQPValue::LongString(v.into()));
    }
    t
}

/// The raw lapin responder: its own connection, an exclusive auto-delete queue consumed with
/// `no_ack`, replies published to `reply_to` through the default exchange. With `topic`, the
/// queue is also bound (key = queue name) to that private auto-delete topic exchange.
async fn start_raw_responder(
    url: &str,
    queue: &str,
    topic: Option<&str>,
) -> Result<(Connection, actix_rt::task::JoinHandle<()>), BoxError> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?;
    if let Some(exchange) = topic {
        let opts = ExchangeDeclareOptions { auto_delete: true, ..Default::default() };
        channel.exchange_declare(exchange.into(), ExchangeKind::Topic, opts, FieldTable::default()).await?;
        // An auto-delete exchange goes with its last binding; one that never got one would stay.
        let bound = channel
            .queue_bind(queue.into(), exchange.into(), queue.into(), QueueBindOptions::default(), FieldTable::default())
            .await;
        if let Err(e) = bound {
            let _ = conn.create_channel().await?.exchange_delete(exchange.into(), Default::default()).await;
            return Err(e.into());
        }
    }
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "raw-responder".into(),
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?;
    let task = actix_rt::spawn(async move {
        while let Some(Ok(d)) = consumer.next().await {
            let (Some(reply_to), Some(corr)) = (d.properties.reply_to().clone(), d.properties.correlation_id().clone())
            else {
                continue;
            };
            let Ok(req) = rmp_serde::from_slice::<HelloRequest>(&d.data) else { continue };
            let body = rmp_serde::to_vec_named(&greet(req)).expect("encode reply");
            let channel = channel.clone();
            actix_rt::spawn(async move {
                let props = BasicProperties::default().with_correlation_id(corr);
                if let Err(e) =
                    channel.basic_publish("".into(), reply_to, BasicPublishOptions::default(), &body, props).await
                {
                    eprintln!("raw responder: publish failed: {e}");
                }
            });
        }
    });
    Ok((conn, task))
}

/// One way of making the call.
#[derive(Clone)]
enum Target {
    Framework { client: micro::Client, service: String },
    Raw(RawCaller),
}

impl Target {
    fn label(&self) -> &'static str {
        match self {
            Target::Framework { .. } => "framework",
            Target::Raw(c) if c.confirms => "raw+confirm",
            Target::Raw(_) => "raw",
        }
    }

    async fn call(&self, req: &HelloRequest) -> Result<HelloReply, BoxError> {
        match self {
            Target::Framework { client, service } => Ok(client.call(service, ENDPOINT, req).await?),
            Target::Raw(caller) => {
                let payload = rmp_serde::to_vec_named(req)?;
                let reply = caller.request(&payload).await?;
                Ok(rmp_serde::from_slice(&reply)?)
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
    /// CPU time the RabbitMQ server process (`beam.smp`) spent in the phase, if it is visible.
    broker_cpu: Option<Duration>,
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
    fn broker_us_per_call(&self) -> f64 {
        self.broker_cpu.map_or(f64::NAN, |c| c.as_secs_f64() * 1e6 / self.requests.max(1) as f64)
    }
}

/// CPU time of this process (all threads), from `/proc/self/stat` (zero elsewhere).
fn process_cpu() -> Duration {
    stat_cpu("/proc/self/stat").unwrap_or_default()
}

/// The RabbitMQ server's pid: the one `beam.smp` process on this machine, if exactly one is
/// visible (a broker elsewhere, or several nodes, leave the broker column empty).
fn broker_pid() -> Option<u32> {
    static PID: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *PID.get_or_init(|| {
        let pids: Vec<u32> = std::fs::read_dir("/proc")
            .ok()?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "beam.smp"))
            .collect();
        (pids.len() == 1).then(|| pids[0])
    })
}

fn broker_cpu() -> Option<Duration> {
    stat_cpu(&format!("/proc/{}/stat", broker_pid()?))
}

/// utime + stime of a `/proc/<pid>/stat`.
fn stat_cpu(path: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the `(comm)`: state is field 3, utime 14 and stime 15, in clock ticks (100 Hz).
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok())).sum();
    Some(Duration::from_millis(ticks * 10))
}

/// `concurrency` tasks call back-to-back until `duration` has passed.
async fn run_phase(target: &Target, concurrency: usize, duration: Duration) -> Phase {
    let start = Instant::now();
    let cpu_start = process_cpu();
    let broker_start = broker_cpu();
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
        broker_cpu: None,
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
    phase.broker_cpu = broker_start.zip(broker_cpu()).map(|(a, b)| b.saturating_sub(a));
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
    let url = micro::test_util::amqp_url();
    let shown_url = match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.clone(),
    };
    let c = cfg.concurrency;

    // Framework side: the service (its own connection) and a standalone client (another).
    let service_name = micro::test_util::unique("bench-greeter");
    let service =
        Service::builder(service_name.clone()).transport(url.clone()).handle(ENDPOINT, say_hello).start().await?;
    let fw_client = micro::Client::connect(&url).await?;
    let framework = Target::Framework { client: fw_client.clone(), service: service_name.clone() };

    // Raw side: a responder connection consuming its own queue, and a caller connection; the
    // diagnostic raw+confirm caller has a connection of its own and calls the same responder.
    let raw_queue = format!("bench.raw.{}", micro::test_util::unique("greeter"));
    let extras = Extras::from_env();
    let topic = extras.topic.then(|| format!("bench.topic.{}", micro::test_util::unique("greeter")));
    let (responder_conn, raw_task) = start_raw_responder(&url, &raw_queue, topic.as_deref()).await?;
    let (raw_caller, caller_conn) = RawCaller::connect(&url, &raw_queue, false, Extras::default(), "").await?;
    let (confirm_caller, confirm_conn) =
        RawCaller::connect(&url, &raw_queue, true, extras, topic.as_deref().unwrap_or("")).await?;
    let raw = Target::Raw(raw_caller.clone());
    let raw_confirm = Target::Raw(confirm_caller.clone());

    // Same request bytes on every side; check the reply bodies are the same too.
    let req = HelloRequest { name: "John".into() };
    let req_bytes = Bytes::from(rmp_serde::to_vec_named(&req)?);
    let fw_reply =
        fw_client.call_raw(&service_name, ENDPOINT, req_bytes.clone(), Codec::MsgPack, CallOptions::default()).await?;
    let raw_reply = raw_caller.request(&req_bytes).await?;
    let confirm_reply = confirm_caller.request(&req_bytes).await?;
    assert_eq!(fw_reply.body[..], raw_reply[..], "framework and raw reply bodies differ");
    assert_eq!(confirm_reply, raw_reply, "raw and raw+confirm reply bodies differ");

    if !cfg.full {
        println!("rpc_amqp: smoke run (not started by `cargo bench`): short phases, figures not meaningful");
    }
    println!(
        "rpc_amqp: {shown_url}; request {} B, reply {} B (msgpack, every side); {} round(s) x {:.1} s per phase, \
         warm-up {:.1} s per side and concurrency; one current-thread actix arbiter for everything \
         (plus lapin's IO thread per connection, every side alike)",
        req_bytes.len(),
        fw_reply.body.len(),
        cfg.rounds,
        cfg.secs.as_secs_f64(),
        cfg.warmup.as_secs_f64()
    );
    println!(
        "rpc_amqp: raw = lapin, default exchange -> exclusive queue, direct reply-to, no_ack, no publisher \
         confirms, not mandatory.\n          framework = topic exchange `micro`, direct reply-to, no_ack, \
         envelope headers, per-message expiration, and requests published mandatory on a confirm-mode channel: \
         that detects 'no queue' as Unavailable, a feature cost, not overhead.\n          raw+confirm = raw \
         plus mandatory + publisher confirms (diagnostic only: shows that feature cost; the ratio is \
         framework/raw)"
    );
    if !extras.describe().is_empty() {
        println!("rpc_amqp: BENCH_RAW_CONFIRM_EXTRAS: raw+confirm also uses the framework's {}", extras.describe());
    }
    match broker_pid() {
        Some(pid) => println!(
            "rpc_amqp: broker µs/call = CPU of beam.smp (pid {pid}) per call; the broker is shared, so it \
             includes whatever else it serves meanwhile"
        ),
        None => println!("rpc_amqp: no single local beam.smp process found: broker CPU not shown"),
    }

    let rss_before = micro::server::resident_memory_bytes();
    for target in [&raw, &raw_confirm, &framework] {
        run_phase(target, 1, cfg.warmup).await;
        run_phase(target, c, cfg.warmup).await;
    }

    // Profiling aid: `BENCH_PROFILE=framework|raw|raw-confirm` runs only that side at c=N for
    // BENCH_SECS after the warm-up, so `perf record` sees one side's hot path only.
    if let Ok(side) = std::env::var("BENCH_PROFILE") {
        let target = match side.as_str() {
            "raw" => &raw,
            "raw-confirm" | "raw+confirm" => &raw_confirm,
            _ => &framework,
        };
        let p = run_phase(target, c, cfg.secs).await;
        println!(
            "profile {} c={c}: {} calls, {:.0} calls/s, p50 {:.1} µs, p99 {:.1} µs, cpu {:.1} µs/call, \
             broker {:.1} µs/call, {:.1} allocs/call",
            target.label(),
            p.requests,
            p.rps(),
            p.p50_us(),
            p.p99_us(),
            p.cpu_us_per_call(),
            p.broker_us_per_call(),
            p.allocs_per_call()
        );
        service.stop().await?;
        raw_task.abort();
        return Ok(());
    }

    // [concurrency index][0 = raw, 1 = framework, 2 = raw+confirm]
    let mut series: [[Series; 3]; 2] = Default::default();
    println!();
    println!(
        "{:>5} {:>5} {:<11} {:>9} {:>6} {:>10} {:>9} {:>9} {:>11} {:>11} {:>14}",
        "round",
        "conc",
        "side",
        "calls",
        "errors",
        "calls/s",
        "p50 µs",
        "p99 µs",
        "cpu µs/call",
        "allocs/call",
        "broker µs/call"
    );
    for round in 0..cfg.rounds {
        // Alternate the order (raw before the framework, then after), so drift on the shared
        // machine hits both alike.
        let order: [(usize, &Target); 3] = if round % 2 == 0 {
            [(0, &raw), (1, &framework), (2, &raw_confirm)]
        } else {
            [(2, &raw_confirm), (1, &framework), (0, &raw)]
        };
        for (ci, conc) in [(0, 1), (1, c)] {
            for (side, target) in order {
                let p = run_phase(target, conc, cfg.secs).await;
                println!(
                    "{:>5} {:>5} {:<11} {:>9} {:>6} {:>10.0} {:>9.1} {:>9.1} {:>11.1} {:>11.1} {:>14.1}",
                    round + 1,
                    conc,
                    target.label(),
                    p.requests,
                    p.errors,
                    p.rps(),
                    p.p50_us(),
                    p.p99_us(),
                    p.cpu_us_per_call(),
                    p.allocs_per_call(),
                    p.broker_us_per_call()
                );
                series[ci][side].0.push(p);
            }
        }
    }
    let rss_after = micro::server::resident_memory_bytes();

    let [s1, sc] = &series;
    let (raw1, fw1, rc1) = (&s1[0], &s1[1], &s1[2]);
    let (rawc, fwc, rcc) = (&sc[0], &sc[1], &sc[2]);
    let paired: Vec<String> = rawc.0.iter().zip(&fwc.0).map(|(r, f)| format!("{:.2}", f.rps() / r.rps())).collect();

    println!();
    println!("summary: median over {} round(s)", cfg.rounds);
    println!(
        "{:>5} {:<10} {:>10} {:>10} {:>10} {:>8} {:>12} {:>9}",
        "conc", "metric", "raw", "framework", "fw - raw", "fw/raw", "raw+confirm", "fw/r+c"
    );
    let row = |conc: usize, metric: &str, s: [&Series; 3], f: fn(&Phase) -> f64| {
        let (r, fw, rc) = (s[0].med(f), s[1].med(f), s[2].med(f));
        println!(
            "{conc:>5} {metric:<10} {r:>10.1} {fw:>10.1} {:>10.1} {:>8.2} {rc:>12.1} {:>9.2}",
            fw - r,
            fw / r,
            fw / rc
        );
    };
    let one = [raw1, fw1, rc1];
    let many = [rawc, fwc, rcc];
    row(1, "p50 µs", one, Phase::p50_us);
    row(1, "p99 µs", one, Phase::p99_us);
    row(1, "calls/s", one, Phase::rps);
    row(1, "cpu µs", one, Phase::cpu_us_per_call);
    row(1, "broker µs", one, Phase::broker_us_per_call);
    row(c, "calls/s", many, Phase::rps);
    row(c, "p50 µs", many, Phase::p50_us);
    row(c, "p99 µs", many, Phase::p99_us);
    row(c, "cpu µs", many, Phase::cpu_us_per_call);
    row(c, "broker µs", many, Phase::broker_us_per_call);
    row(c, "allocs", many, Phase::allocs_per_call);
    println!(
        "(cpu µs, allocs: CPU time and heap allocations of this process per call, caller and responder \
         together; broker µs: CPU time of the RabbitMQ process per call)"
    );
    println!(
        "(the framework's requests are mandatory + publisher-confirmed, the raw ones are not: part of the \
         difference is the cost of detecting 'no queue' as Unavailable; the raw+confirm column shows that part)"
    );
    println!("c={c} framework/raw throughput per round (paired): {}", paired.join(" "));
    println!(
        "bench process RSS: {:.1} MiB before load, {:.1} MiB after (holds every side and the callers)",
        mib(rss_before),
        mib(rss_after)
    );

    service.stop().await?;
    raw_task.abort();
    for conn in [caller_conn, confirm_conn, responder_conn] {
        let _ = conn.close(200, "bye".into()).await;
    }

    let added_p50 = fw1.med(Phase::p50_us) - raw1.med(Phase::p50_us);
    let ratio = fwc.med(Phase::rps) / rawc.med(Phase::rps);
    println!("rpc amqp c=1 added_p50_us={added_p50:.1}");
    println!("rpc amqp c={c} ratio={ratio:.2}");
    Ok(())
}
