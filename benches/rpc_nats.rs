//! RPC over NATS: the framework (`Service` + `Client::call`) against a hand-written async-nats
//! request/reply baseline, measured in the same process and the same run. With the `auth`
//! feature also the framework with token verification on (a service behind `auth`, cached keys,
//! one rule, a client sending its token) against the same framework with it off.
//!
//! `cargo bench --bench rpc_nats`. What is compared, how, the environment variables and the
//! machine-readable output: `benches/README.md`.

use bytes::Bytes;
use micro::prelude::*;

mod common;
use common::rpc::{run_phase, Caller, Config, Phase};
use common::*;

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// One way of making the call.
#[derive(Clone)]
enum Target {
    Framework {
        client: micro::Client,
        service: String,
    },
    Raw {
        client: async_nats::Client,
        subject: async_nats::Subject,
    },
    /// The raw client again, each request carrying one header (a `traceparent`, 55 bytes),
    /// built per call as any caller builds it: what async-nats itself charges for a header.
    RawHeader {
        client: async_nats::Client,
        subject: async_nats::Subject,
    },
    /// The framework with auth on: the service checks the token `ClientBuilder::auth` sends.
    #[cfg(feature = "auth")]
    Auth {
        client: micro::Client,
        service: String,
    },
}

impl Caller for Target {
    fn label(&self) -> &'static str {
        match self {
            Target::Framework { .. } => "framework",
            Target::Raw { .. } => "raw",
            Target::RawHeader { .. } => "raw+header",
            #[cfg(feature = "auth")]
            Target::Auth { .. } => "auth",
        }
    }

    async fn call(&self, req: &HelloRequest) -> Result<HelloReply, BoxError> {
        match self {
            Target::Framework { client, service } => Ok(client.call(service, ENDPOINT, req).await?),
            #[cfg(feature = "auth")]
            Target::Auth { client, service } => Ok(client.call(service, ENDPOINT, req).await?),
            Target::Raw { client, subject } => {
                let payload = Bytes::from(rmp_serde::to_vec_named(req)?);
                let msg = client.request(subject.clone(), payload).await?;
                Ok(rmp_serde::from_slice(&msg.payload)?)
            }
            Target::RawHeader { client, subject } => {
                let payload = Bytes::from(rmp_serde::to_vec_named(req)?);
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(TRACEPARENT, ONE_HEADER_VALUE);
                let msg = client.request_with_headers(subject.clone(), headers, payload).await?;
                Ok(rmp_serde::from_slice(&msg.payload)?)
            }
        }
    }
}

/// The header the "raw+header" side sends: a `traceparent`, the header a traced call carries.
const TRACEPARENT: async_nats::HeaderName = async_nats::HeaderName::from_static("traceparent");
const ONE_HEADER_VALUE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The auth side: an auth service, a greeter behind `auth` with one rule, and a client whose
/// layer sends its account's token (all on `url`); returns the side and what to stop.
#[cfg(feature = "auth")]
async fn auth_side(url: &str) -> Result<(Target, Vec<micro::ServiceHandle>), BoxError> {
    use micro::auth::{AuthClient, AuthConfig, AuthService, NewAccount, Rule};
    let auth_name = micro::test_util::unique("bench-auth");
    let auth = AuthService::open(AuthConfig::default().name(&auth_name))?;
    let auth_node = auth.start(url).await?;
    let service = micro::test_util::unique("bench-greeter-auth");
    let creds = auth.create_account(NewAccount::service("bench-caller").scopes(["greeter"]))?;
    auth.create_rule(Rule::new(&service, ENDPOINT, "greeter")).await?;
    let plain = micro::Client::connect(url).await?;
    let verify = AuthClient::builder().service(&auth_name).connect(&plain).await?;
    let node =
        Service::builder(service.clone()).transport(url).auth(verify).handle(ENDPOINT, say_hello).start().await?;
    let me = AuthClient::builder().service(&auth_name).credentials(creds).connect(&plain).await?;
    let client = micro::Client::builder().transport(url).auth(me).connect().await?;
    Ok((Target::Auth { client, service }, vec![node, auth_node]))
}

/// A subscriber that records every span: the registry, and with the `otel` feature
/// OpenTelemetry's layer over a provider with no exporter (spans are built, then dropped).
/// Spans opened under the recording subscribers: the check that a "traced" phase traced.
static SPANS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counts the spans it sees opened (into [`SPANS`]).
struct CountSpans;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CountSpans {
    fn on_new_span(
        &self,
        _: &tracing::span::Attributes<'_>,
        _: &tracing::span::Id,
        _: tracing_subscriber::layer::Context<'_, S>,
    ) {
        SPANS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Spans opened so far under the recording subscribers.
fn spans_opened() -> u64 {
    SPANS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Has tracing ask the thread's default subscriber again which callsites it wants. Each
/// callsite caches the answer when first hit; with one subscriber in the process that answer
/// comes from the thread's default at that moment, so callsites first hit outside a scoped
/// subscriber stay off inside it until asked again.
fn interested() {
    tracing::callsite::rebuild_interest_cache();
}

/// `sampled`: OTel's default sampler (parent-based, always on); otherwise parent-based always
/// off, so every call's trace is dropped at its root (the client's span) and the service sees a
/// `traceparent` saying so.
fn recording(sampled: bool) -> tracing::Dispatch {
    use tracing_subscriber::layer::SubscriberExt;
    // `info` and above, like every layer `micro::telemetry::init` installs: unfiltered, the
    // counter would have the libraries' debug and trace events dispatched too. A global level
    // (not a per-layer filter, which looks the span up on every enter and exit) keeps the
    // bench's own counter out of the cost.
    let registry = tracing_subscriber::registry().with(tracing_subscriber::filter::LevelFilter::INFO).with(CountSpans);
    #[cfg(feature = "otel")]
    {
        use opentelemetry::trace::TracerProvider as _;
        use opentelemetry_sdk::trace::Sampler;
        use tracing_subscriber::filter::FilterExt as _;
        use tracing_subscriber::Layer as _;
        let mut provider = opentelemetry_sdk::trace::SdkTracerProvider::builder();
        if !sampled {
            provider = provider.with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)));
        }
        let provider = provider.build();
        // As `micro::telemetry::init` installs it: `info` and above (the toolkit's spans; not
        // the debug events of the libraries underneath), sampled traces only.
        let otel = micro::telemetry::otel::layer(provider.tracer("bench"))
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO.and(micro::telemetry::otel::Sampled));
        tracing::Dispatch::new(registry.with(otel))
    }
    #[cfg(not(feature = "otel"))]
    {
        let _ = sampled;
        tracing::Dispatch::new(registry)
    }
}

/// `rpc nats <what> instructions_ratio=<a / b> instructions_<a>=… instructions_<b>=…
/// allocs_<a>=… allocs_<b>=…`: one side's counted cost against another's.
fn cost_line(what: &str, (a, ca): (&str, &callgrind::PerCall), (b, cb): (&str, &callgrind::PerCall)) {
    println!(
        "rpc nats {what} instructions_ratio={:.3} instructions_{a}={:.0} instructions_{b}={:.0} allocs_{a}={:.1} \
         allocs_{b}={:.1}",
        ca.instructions / cb.instructions,
        ca.instructions,
        cb.instructions,
        ca.allocations,
        cb.allocations
    );
}

fn callgrind_side(side: &str, full: bool) -> Result<callgrind::PerCall, String> {
    callgrind::measure(side, full).map_err(|e| e.to_string())
}

#[actix::main]
async fn main() -> Result<(), BoxError> {
    let cfg = Config::from_env();
    let url = micro::test_util::nats_url();
    // The counted run of the "metrics" side: the framework with the Prometheus recorder
    // installed before anything starts, so every handle records.
    #[cfg(feature = "prometheus")]
    if std::env::var("BENCH_PROFILE").is_ok_and(|s| matches!(s.as_str(), "metrics" | "observed" | "unsampled")) {
        micro::metrics::prometheus::install()?;
    }
    let c = cfg.concurrency;
    let recorder = recording(true);

    // Framework side: the service (its own NATS connection) and a standalone client (another).
    let service_name = micro::test_util::unique("bench-greeter");
    let service =
        Service::builder(service_name.clone()).transport(url.clone()).handle(ENDPOINT, say_hello).start().await?;
    let fw_client = micro::Client::connect(&url).await?;
    let framework = Target::Framework { client: fw_client.clone(), service: service_name.clone() };

    // Raw side: a responder connection with a plain subscribe loop, and a caller connection.
    let (raw_subject, raw_task) = start_raw_nats_responder(&url, "greeter").await?;
    let raw_caller = async_nats::connect(&url).await?;
    let raw = Target::Raw { client: raw_caller.clone(), subject: raw_subject.clone().into() };
    let raw_header = Target::RawHeader { client: raw_caller.clone(), subject: raw_subject.clone().into() };

    #[cfg(feature = "auth")]
    let (auth_target, auth_nodes) = auth_side(&url).await?;

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

    // Counted run (a child under callgrind, see `common::callgrind`): one side, a fixed number
    // of calls, no timed phases.
    if let Some(calls) = callgrind::counted_calls() {
        let side = std::env::var("BENCH_PROFILE").unwrap_or_default();
        #[cfg(feature = "auth")]
        if side == "auth" {
            callgrind::counted_run(&auth_target, calls).await?;
            return Ok(());
        }
        // "traced": the framework side with every span recorded; "observed": that, and the
        // Prometheus recorder installed above; "unsampled": "observed" with every trace
        // dropped by the sampler at its root.
        let _recording = matches!(side.as_str(), "traced" | "observed" | "unsampled")
            .then(|| tracing::dispatcher::set_default(&recording(side != "unsampled")));
        let target = match side.as_str() {
            "raw" => &raw,
            "raw+header" => &raw_header,
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
        let (raw_cost, header_cost, fw_cost, traced_cost, metrics_cost, auth_cost) =
            tokio::task::spawn_blocking(move || {
                // With the `prometheus` feature, the framework once more with the recorder installed,
                // then with the recorder and every span recorded.
                let metrics = if cfg!(feature = "prometheus") {
                    let unsampled =
                        if cfg!(feature = "otel") { Some(callgrind_side("unsampled", full)?) } else { None };
                    Some((callgrind_side("metrics", full)?, callgrind_side("observed", full)?, unsampled))
                } else {
                    None
                };
                let auth = if cfg!(feature = "auth") { Some(callgrind_side("auth", full)?) } else { None };
                Ok::<_, String>((
                    callgrind_side("raw", full)?,
                    callgrind_side("raw+header", full)?,
                    callgrind_side("framework", full)?,
                    callgrind_side("traced", full)?,
                    metrics,
                    auth,
                ))
            })
            .await??;
        println!("callgrind, c=1, caller and responder in one process, per call (difference of two counted runs):");
        println!("{:<10} {:>14} {:>12}", "side", "instructions", "allocations");
        println!("{:<10} {:>14.0} {:>12.1}", "raw", raw_cost.instructions, raw_cost.allocations);
        println!("{:<10} {:>14.0} {:>12.1}", "raw+header", header_cost.instructions, header_cost.allocations);
        println!("{:<10} {:>14.0} {:>12.1}", "framework", fw_cost.instructions, fw_cost.allocations);
        if let Some(auth) = &auth_cost {
            println!("{:<10} {:>14.0} {:>12.1}", "auth", auth.instructions, auth.allocations);
            println!(
                "rpc nats auth instructions_auth={:.0} instructions_off={:.0} added_instructions={:.0} allocs_auth={:.1}",
                auth.instructions,
                fw_cost.instructions,
                auth.instructions - fw_cost.instructions,
                auth.allocations
            );
        }
        if let Some((m, o, u)) = &metrics_cost {
            println!("{:<10} {:>14.0} {:>12.1}", "metrics", m.instructions, m.allocations);
            println!("{:<10} {:>14.0} {:>12.1}", "observed", o.instructions, o.allocations);
            if let Some(u) = u {
                println!("{:<10} {:>14.0} {:>12.1}", "unsampled", u.instructions, u.allocations);
            }
        }
        println!("{:<10} {:>14.0} {:>12.1}", "traced", traced_cost.instructions, traced_cost.allocations);
        println!(
            "(traced: the framework with a subscriber recording every span{})",
            if cfg!(feature = "otel") { ", OpenTelemetry's layer with no exporter" } else { " in the registry" }
        );
        println!(
            "rpc nats instructions_ratio={:.2} instructions_framework={:.0} instructions_raw={:.0} \
             allocs_framework={:.1} allocs_raw={:.1}",
            fw_cost.instructions / raw_cost.instructions,
            fw_cost.instructions,
            raw_cost.instructions,
            fw_cost.allocations,
            raw_cost.allocations
        );
        if let Some((m, o, u)) = metrics_cost {
            // Spans and metrics both on against both off.
            cost_line("observability", ("observed", &o), ("off", &fw_cost));
            // The framework with the Prometheus recorder against the same without a recorder.
            cost_line("metrics", ("metrics", &m), ("off", &fw_cost));
            // Observability on, every trace dropped at its root: the client's span is built
            // and dropped by the sampler, the service's carries no OTel span.
            if let Some(u) = u {
                cost_line("observability unsampled", ("unsampled", &u), ("off", &fw_cost));
            }
        }
        // What async-nats charges for one header: the floor under anything that must put one
        // on every request (a token, a traceparent).
        cost_line("one_header", ("header", &header_cost), ("raw", &raw_cost));
        println!(
            "rpc nats spans instructions_traced={:.0} instructions_ratio_traced_vs_framework={:.2} allocs_traced={:.1}",
            traced_cost.instructions,
            traced_cost.instructions / fw_cost.instructions,
            traced_cost.allocations
        );
        return Ok(());
    }

    let rss_before = micro::server::resident_memory_bytes();
    for target in [&raw, &framework] {
        run_phase(target, 1, cfg.warmup, None).await;
        run_phase(target, c, cfg.warmup, None).await;
    }

    // Profiling aid: `BENCH_PROFILE=framework|raw|auth` runs only that side at c=N for BENCH_SECS
    // after the warm-up, so `perf record` sees one side's hot path only.
    if let Ok(side) = std::env::var("BENCH_PROFILE") {
        let target = match side.as_str() {
            "raw" => &raw,
            "raw+header" => &raw_header,
            #[cfg(feature = "auth")]
            "auth" => &auth_target,
            _ => &framework,
        };
        let p = run_phase(target, c, cfg.secs, None).await;
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
    let mut series: [[Series<Phase>; 2]; 2] = Default::default();
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
                let p = run_phase(target, conc, cfg.secs, None).await;
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
    // Spans recorded against spans off: the framework side again, with a recording subscriber
    // for the traced phases (everything runs on this thread, so a thread default covers the
    // client and the service), paired per round.
    let mut traced_ratios = Vec::new();
    for _ in 0..cfg.rounds {
        let off = run_phase(&framework, c, cfg.secs, None).await;
        let opened = spans_opened();
        let on = {
            let _recording = tracing::dispatcher::set_default(&recorder);
            interested();
            run_phase(&framework, c, cfg.secs, None).await
        };
        if off.errors + on.errors > 0 {
            return Err("calls failed in the traced phases".into());
        }
        // A client and a server span per call at least.
        if spans_opened() - opened < 2 * on.requests {
            return Err(
                format!("the traced phase opened {} spans for {} calls", spans_opened() - opened, on.requests).into()
            );
        }
        traced_ratios.push(on.rps() / off.rps());
    }
    let paired: Vec<String> = traced_ratios.iter().map(|r| format!("{r:.2}")).collect();
    println!("c={c} traced/framework throughput per round (paired): {}", paired.join(" "));
    println!("rpc nats c={c} spans_ratio={:.2}", median(traced_ratios));
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

    one_header_versus_raw(&raw, &raw_header, &cfg).await?;
    #[cfg(feature = "auth")]
    auth_versus_off(&framework, &auth_target, &cfg, fw1, fwc).await?;
    #[cfg(feature = "prometheus")]
    observed_versus_off(&framework, &url, &cfg, &|| recording(true)).await?;
    #[cfg(feature = "auth")]
    for node in auth_nodes {
        node.stop().await?;
    }

    service.stop().await?;
    raw_task.abort();

    common::rpc::finish("rpc nats", c, (raw1, fw1), (rawc, fwc))?;
    Ok(())
}

/// The raw client with one header on every request against without, paired per round at c=N:
/// the share of throughput async-nats itself gives up to a header, which auth (a token) and
/// traces (a `traceparent`) cannot get below.
async fn one_header_versus_raw(raw: &Target, with_header: &Target, cfg: &Config) -> Result<(), BoxError> {
    let c = cfg.concurrency;
    run_phase(with_header, c, cfg.warmup, None).await;
    let mut paired = Vec::new();
    for round in 0..cfg.rounds {
        let (a, b) = if round % 2 == 0 {
            (run_phase(with_header, c, cfg.secs, None).await, run_phase(raw, c, cfg.secs, None).await)
        } else {
            let b = run_phase(raw, c, cfg.secs, None).await;
            (run_phase(with_header, c, cfg.secs, None).await, b)
        };
        if a.errors + b.errors > 0 {
            return Err(format!("{} raw calls failed", a.errors + b.errors).into());
        }
        paired.push(a.rps() / b.rps());
    }
    let shown: Vec<String> = paired.iter().map(|r| format!("{r:.2}")).collect();
    println!();
    println!("c={c} raw+header/raw throughput per round (paired): {}", shown.join(" "));
    println!("rpc nats one_header c={c} ratio={:.2}", median(paired));
    Ok(())
}

/// Auth on against auth off (the framework phases just measured, and one more pair per
/// round): throughput ratio at c=N, added p50 at c=1.
#[cfg(feature = "auth")]
async fn auth_versus_off(
    off: &Target,
    on: &Target,
    cfg: &Config,
    off1: &Series<Phase>,
    offc: &Series<Phase>,
) -> Result<(), BoxError> {
    let c = cfg.concurrency;
    run_phase(on, 1, cfg.warmup, None).await;
    run_phase(on, c, cfg.warmup, None).await;
    let (mut on1, mut onc, mut paired) = (Series::<Phase>::default(), Series::<Phase>::default(), Vec::new());
    for round in 0..cfg.rounds {
        let p1 = run_phase(on, 1, cfg.secs, None).await;
        // Pair each round's auth phase with an "off" phase run right next to it.
        let (a, b) = if round % 2 == 0 {
            (run_phase(on, c, cfg.secs, None).await, run_phase(off, c, cfg.secs, None).await)
        } else {
            let b = run_phase(off, c, cfg.secs, None).await;
            (run_phase(on, c, cfg.secs, None).await, b)
        };
        paired.push(a.rps() / b.rps());
        if a.errors + p1.errors > 0 {
            println!("rpc nats auth c={c} ratio=none");
            return Err(format!("{} calls with auth on failed", a.errors + p1.errors).into());
        }
        on1.0.push(p1);
        onc.0.push(a);
    }
    println!();
    println!(
        "auth on (cached keys, one rule, token sent by `ClientBuilder::auth`: whole once, then by reference) vs off:"
    );
    println!("{:>5} {:<10} {:>10} {:>10} {:>8}", "conc", "metric", "off", "on", "on/off");
    let row = |conc: usize, metric: &str, off: f64, on: f64| {
        println!("{conc:>5} {metric:<10} {off:>10.1} {on:>10.1} {:>8.2}", on / off)
    };
    row(1, "p50 µs", off1.med(Phase::p50_us), on1.med(Phase::p50_us));
    row(c, "calls/s", offc.med(Phase::rps), onc.med(Phase::rps));
    row(c, "cpu µs", offc.med(Phase::cpu_us_per_call), onc.med(Phase::cpu_us_per_call));
    row(c, "allocs", offc.med(Phase::allocs_per_call), onc.med(Phase::allocs_per_call));
    let shown: Vec<String> = paired.iter().map(|r| format!("{r:.2}")).collect();
    println!("c={c} auth/off throughput per round (paired): {}", shown.join(" "));
    println!("rpc nats auth c=1 added_p50_us={:.1}", on1.med(Phase::p50_us) - off1.med(Phase::p50_us));
    println!("rpc nats auth c={c} ratio={:.2}", median(paired));
    Ok(())
}

/// Observability on against off, paired per round at c=N: "on" is a second greeter and client
/// made with the Prometheus recorder in scope (every server and client handle records to it)
/// and run with a subscriber recording every span (`spans`); "off" is the framework side, whose
/// handles were made with no recorder (no-ops) and which runs with no subscriber. Both are in
/// this process on this thread, so the recorder and the subscriber are thread defaults, set
/// only around the "on" side.
#[cfg(feature = "prometheus")]
async fn observed_versus_off(
    off: &Target,
    url: &str,
    cfg: &Config,
    spans: &dyn Fn() -> tracing::Dispatch,
) -> Result<(), BoxError> {
    let c = cfg.concurrency;
    let recorder = micro::metrics::prometheus::recorder()?;
    let handle = recorder.handle();
    // Clients look their handles up per call once metrics are enabled; the "off" client finds
    // the no-op recorder, the "on" one the scoped Prometheus recorder.
    micro::metrics::enable();
    let spans = spans();
    let (on, node, service) = {
        let _metrics = metrics::set_default_local_recorder(&recorder);
        let service = micro::test_util::unique("bench-greeter-observed");
        let node = Service::builder(service.clone()).transport(url).handle(ENDPOINT, say_hello).start().await?;
        let client = micro::Client::connect(url).await?;
        (Target::Framework { client, service: service.clone() }, node, service)
    };
    let observed = |conc: usize, secs: std::time::Duration| {
        let (on, spans, recorder, handle) = (&on, &spans, &recorder, &handle);
        async move {
            let _metrics = metrics::set_default_local_recorder(recorder);
            let _spans = tracing::dispatcher::set_default(spans);
            interested();
            let opened = spans_opened();
            let p = run_phase(on, conc, secs, None).await;
            // What `install`'s upkeep thread does every few seconds: fold the phase's histogram
            // samples into their buckets (outside the timed phase, as that thread is).
            handle.run_upkeep();
            // A client and a server span per call at least.
            let opened = spans_opened() - opened;
            if opened < 2 * p.requests {
                return Err(format!("the observed phase opened {opened} spans for {} calls", p.requests));
            }
            Ok(p)
        }
    };
    observed(c, cfg.warmup).await?;
    run_phase(off, c, cfg.warmup, None).await;
    let (mut paired, mut cpu) = (Vec::new(), Vec::new());
    for round in 0..cfg.rounds {
        let (a, b) = if round % 2 == 0 {
            let a = observed(c, cfg.secs).await?;
            (a, run_phase(off, c, cfg.secs, None).await)
        } else {
            let b = run_phase(off, c, cfg.secs, None).await;
            (observed(c, cfg.secs).await?, b)
        };
        if a.errors + b.errors > 0 {
            println!("rpc nats observability c={c} ratio=none");
            return Err(format!("{} calls failed in the observability phases", a.errors + b.errors).into());
        }
        paired.push(a.rps() / b.rps());
        cpu.push(a.cpu_us_per_call() / b.cpu_us_per_call());
    }
    // The "on" side really recorded: its requests are in the exposition, client and server.
    let text = handle.render();
    for metric in [micro::metrics::names::SERVER_REQUESTS, micro::metrics::names::CLIENT_REQUESTS] {
        let counted = text.lines().any(|l| l.starts_with(metric) && l.contains(service.as_str()) && !l.ends_with(" 0"));
        if !counted {
            return Err(format!("the observed side recorded no {metric} for {service}").into());
        }
    }
    node.stop().await?;
    let shown: Vec<String> = paired.iter().map(|r| format!("{r:.2}")).collect();
    println!();
    println!(
        "observability on (every span recorded{}, the Prometheus recorder) vs off, c={c}, throughput per round \
         (paired): {}",
        if cfg!(feature = "otel") { " by OpenTelemetry's layer, no exporter" } else { " in the registry" },
        shown.join(" ")
    );
    println!("rpc nats observability c={c} cpu_ratio={:.2}", median(cpu));
    println!("rpc nats observability c={c} ratio={:.2}", median(paired));
    Ok(())
}
