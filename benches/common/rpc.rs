//! What the RPC benches (`rpc_nats`, `rpc_amqp`) share: their configuration, one measured phase
//! of callers in flight, and its figures.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::{cpu_since, pid_cpu, process_cpu, BoxError, HelloReply, HelloRequest, Series, ALLOCATIONS};

/// One way of making the greeter call (a bench's framework or raw side).
pub trait Caller: Clone + 'static {
    /// The side's name in the tables.
    fn label(&self) -> &'static str;
    /// One call.
    async fn call(&self, req: &HelloRequest) -> Result<HelloReply, BoxError>;
}

pub struct Config {
    /// Run by `cargo bench` (else a smoke run, e.g. `cargo test --benches`).
    pub full: bool,
    pub secs: Duration,
    pub rounds: usize,
    pub warmup: Duration,
    pub concurrency: usize,
}

impl Config {
    pub fn from_env() -> Config {
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

pub struct Phase {
    pub requests: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// CPU time (user + system) this process spent in the phase: client and server work.
    pub cpu: Duration,
    /// CPU time the broker process spent in the phase, if it is visible.
    pub broker_cpu: Option<Duration>,
    /// Heap allocations (and reallocations) in this process during the phase.
    pub allocations: u64,
    /// Latencies in nanoseconds.
    pub hist: Histogram<u64>,
}

impl Phase {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    pub fn p50_us(&self) -> f64 {
        self.hist.value_at_quantile(0.50) as f64 / 1e3
    }
    pub fn p99_us(&self) -> f64 {
        self.hist.value_at_quantile(0.99) as f64 / 1e3
    }
    pub fn cpu_us_per_call(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.requests.max(1) as f64
    }
    pub fn allocs_per_call(&self) -> f64 {
        self.allocations as f64 / self.requests.max(1) as f64
    }
    pub fn broker_us_per_call(&self) -> f64 {
        self.broker_cpu.map_or(f64::NAN, |c| c.as_secs_f64() * 1e6 / self.requests.max(1) as f64)
    }
}

/// `concurrency` tasks call back-to-back until `duration` has passed; `broker` is the broker's
/// pid, for its CPU time (see `broker_pid`).
pub async fn run_phase<C: Caller>(target: &C, concurrency: usize, duration: Duration, broker: Option<u32>) -> Phase {
    let start = Instant::now();
    let cpu_start = process_cpu();
    let broker_start = broker.and_then(pid_cpu);
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
    phase.broker_cpu = cpu_since(broker, broker_start);
    phase.allocations = ALLOCATIONS.load(Ordering::Relaxed) - allocations_start;
    if let Some(e) = first_error {
        eprintln!("  {} c={concurrency}: {} errors, first: {e}", target.label(), phase.errors);
    }
    phase
}

/// Prints the machine-readable result lines (`<name> c=1 added_p50_us=…`, `<name> c=<c> ratio=…`)
/// from the measured phases of the raw and framework sides, or, when any measured phase had a
/// failed or wrong call, `none` in their place, and then fails: throughput counts only correct
/// answers, and a side that erred has no ratio.
pub fn finish(
    name: &str,
    c: usize,
    (raw1, fw1): (&Series<Phase>, &Series<Phase>),
    (rawc, fwc): (&Series<Phase>, &Series<Phase>),
) -> Result<(), BoxError> {
    let errors: u64 = [raw1, fw1, rawc, fwc].iter().flat_map(|s| s.0.iter()).map(|p| p.errors).sum();
    if errors > 0 {
        println!("{name} c=1 added_p50_us=none");
        println!("{name} c={c} ratio=none");
        return Err(format!("{errors} calls failed or got a wrong answer: no ratio").into());
    }
    let added_p50 = fw1.med(Phase::p50_us) - raw1.med(Phase::p50_us);
    let ratio = fwc.med(Phase::rps) / rawc.med(Phase::rps);
    println!("{name} c=1 added_p50_us={added_p50:.1}");
    println!("{name} c={c} ratio={ratio:.2}");
    Ok(())
}
