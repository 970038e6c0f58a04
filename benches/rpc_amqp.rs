//! RPC over RabbitMQ: the framework (`Service` + `Client::call` on `amqp://`) against a
//! hand-written lapin request/reply baseline with direct reply-to (and a diagnostic raw side with
//! publisher confirms), measured in the same process and the same run.
//!
//! `cargo bench --bench rpc_amqp`. What is compared, how, the environment variables and the
//! machine-readable output: `benches/README.md`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind};
use micro::prelude::*;
use tokio::sync::oneshot;

mod common;
use common::rpc::{run_phase, Caller, Config, Phase};
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
    /// The framework's request envelope: the endpoint in the `type` property (a plain call
    /// carries no header).
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
            props = props.with_type(ENDPOINT.into());
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

impl Caller for Target {
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

#[actix::main]
async fn main() -> Result<(), BoxError> {
    let cfg = Config::from_env();
    let url = micro::test_util::amqp_url();
    let shown_url = match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.clone(),
    };
    let c = cfg.concurrency;
    let broker = broker_pid(&url, 5672, "beam.smp");

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
    match broker {
        Some(pid) => println!(
            "rpc_amqp: broker µs/call = CPU of the RabbitMQ process (pid {pid}) per call; the broker is shared, so \
             it includes whatever else it serves meanwhile"
        ),
        None => println!("rpc_amqp: no local RabbitMQ process found: broker CPU not shown"),
    }

    // Counted run (a child under callgrind, see `common::callgrind`).
    if let Some(calls) = callgrind::counted_calls() {
        let side = std::env::var("BENCH_PROFILE").unwrap_or_default();
        let target = match side.as_str() {
            "raw" => &raw,
            "raw-confirm" => &raw_confirm,
            _ => &framework,
        };
        callgrind::counted_run(target, calls).await?;
        service.stop().await?;
        raw_task.abort();
        return Ok(());
    }
    // Instructions per call (`BENCH_CALLGRIND=1`): this binary again under callgrind, per side.
    if std::env::var("BENCH_CALLGRIND").is_ok_and(|v| v != "0") {
        service.stop().await?;
        raw_task.abort();
        let full = cfg.full;
        let measure = move |side: &str| callgrind::measure(side, full).map_err(|e| e.to_string());
        let (raw_cost, confirm_cost, fw_cost) = tokio::task::spawn_blocking(move || {
            Ok::<_, String>((measure("raw")?, measure("raw-confirm")?, measure("framework")?))
        })
        .await??;
        println!("callgrind, c=1, caller and responder in one process (lapin's threads included), per call:");
        println!("{:<12} {:>14} {:>12}", "side", "instructions", "allocations");
        for (label, c) in [("raw", &raw_cost), ("raw+confirm", &confirm_cost), ("framework", &fw_cost)] {
            println!("{label:<12} {:>14.0} {:>12.1}", c.instructions, c.allocations);
        }
        println!(
            "rpc amqp instructions_ratio={:.2} instructions_ratio_confirm={:.2} instructions_framework={:.0} \
             allocs_framework={:.1} allocs_raw={:.1}",
            fw_cost.instructions / raw_cost.instructions,
            fw_cost.instructions / confirm_cost.instructions,
            fw_cost.instructions,
            fw_cost.allocations,
            raw_cost.allocations
        );
        return Ok(());
    }

    let rss_before = micro::server::resident_memory_bytes();
    for target in [&raw, &raw_confirm, &framework] {
        run_phase(target, 1, cfg.warmup, broker).await;
        run_phase(target, c, cfg.warmup, broker).await;
    }

    // Profiling aid: `BENCH_PROFILE=framework|raw|raw-confirm` runs only that side at c=N for
    // BENCH_SECS after the warm-up, so `perf record` sees one side's hot path only.
    if let Ok(side) = std::env::var("BENCH_PROFILE") {
        let target = match side.as_str() {
            "raw" => &raw,
            "raw-confirm" | "raw+confirm" => &raw_confirm,
            _ => &framework,
        };
        let p = run_phase(target, c, cfg.secs, broker).await;
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
    let mut series: [[Series<Phase>; 3]; 2] = Default::default();
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
                let p = run_phase(target, conc, cfg.secs, broker).await;
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
    let row = |conc: usize, metric: &str, s: [&Series<Phase>; 3], f: fn(&Phase) -> f64| {
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

    common::rpc::finish("rpc amqp", c, (raw1, fw1), (rawc, fwc))?;
    Ok(())
}
