//! The kv store against the raw clients, in the same process and the same run: `micro::kv` on
//! NATS JetStream KV against async-nats's `jetstream::kv::Store`, and on Redis against the
//! `redis` crate's `GET`/`SET` on a `ConnectionManager`.
//!
//! `cargo bench --bench kv` (`BENCH_SECS`, `BENCH_ROUNDS`, `BENCH_CONCURRENCY`). Per backend
//! and operation: sequential latency (p50, one op at a time) and throughput (`BENCH_CONCURRENCY`
//! ops in flight, default 32), each round alternating which side goes first; the summary is
//! the median over rounds, then the ratio framework/raw of throughput. Only correct answers count: a
//! `get` must return the value written. Without `--bench` (e.g. `cargo test --benches`) it makes
//! a smoke run: short phases, one round.
//!
//! What each raw side does: on NATS, `kv::Store::put`/`get` on the same bucket; on Redis, a
//! plain `SET key value` and `GET key` on a `ConnectionManager` (one multiplexed connection, as
//! the framework's).
//!
//! What the framework adds: on NATS, the 8-byte expiry in front of each value (TTL on a 2.9
//! server) and its check on read; on Redis, a Lua script per write (`EVALSHA`) that also bumps the
//! revision counter and appends to the change log (what makes revisions, CAS and watch work), and
//! on read the `revision:` prefix taken off the `GET`. Redis runs a script far slower than a
//! `SET` (a Lua call, four commands, a stream entry), so a third comparison, `redis-script`, has
//! the raw client run the framework's own script (`src/kv/redis_put.lua`) by `EVALSHA` and `GET`
//! the entry: that ratio is the framework's own cost, the first one the price of the semantics.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use micro::kv::Kv;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Config {
    phase: Duration,
    rounds: usize,
    concurrency: usize,
}

impl Config {
    fn from_env() -> Config {
        let full = std::env::args().any(|a| a == "--bench");
        let env = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
        if full {
            Config {
                phase: Duration::from_secs(env("BENCH_SECS", 2)),
                rounds: env("BENCH_ROUNDS", 3) as usize,
                concurrency: env("BENCH_CONCURRENCY", 32) as usize,
            }
        } else {
            println!("smoke run (not started by `cargo bench`): short phases, one round; figures not meaningful");
            Config { phase: Duration::from_millis(200), rounds: 1, concurrency: 8 }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Op {
    Get,
    Put,
}

/// One side of the comparison.
#[derive(Clone)]
enum Side {
    Framework(Kv),
    RawNats(Box<async_nats::jetstream::kv::Store>),
    RawRedis(redis::aio::ConnectionManager),
    /// The raw client running the framework's write script, in namespace `.1`.
    RawRedisScript(redis::aio::ConnectionManager, Arc<redis::Script>, String),
}

/// The framework's write script, run by the raw client.
const KV_PUT_SCRIPT: &str = include_str!("../src/kv/redis_put.lua");

const VALUE: &[u8] = b"a value of about sixty-four bytes, the size of a small setting....";

impl Side {
    fn label(&self) -> &'static str {
        match self {
            Side::Framework(_) => "framework",
            _ => "raw",
        }
    }

    async fn put(&self, key: &str) -> Result<(), BoxError> {
        match self {
            Side::Framework(kv) => {
                kv.put(key, Bytes::from_static(VALUE)).await?;
            }
            Side::RawNats(kv) => {
                kv.put(key, Bytes::from_static(VALUE)).await?;
            }
            Side::RawRedis(c) => {
                redis::cmd("SET").arg(key).arg(VALUE).query_async::<()>(&mut c.clone()).await?;
            }
            Side::RawRedisScript(c, script, ns) => {
                let rev: i64 = script
                    .key(format!("{ns}:e:{key}"))
                    .key(format!("{ns}:rev"))
                    .key(format!("{ns}:log"))
                    .arg(VALUE)
                    .arg(0)
                    .arg("any")
                    .arg(key)
                    .arg(10_000)
                    .invoke_async(&mut c.clone())
                    .await?;
                if rev <= 0 {
                    return Err(format!("the script refused {key}").into());
                }
            }
        }
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<(), BoxError> {
        let v: Option<Vec<u8>> = match self {
            Side::Framework(kv) => kv.get(key).await?.map(|e| e.value.to_vec()),
            Side::RawNats(kv) => kv.get(key).await?.map(|b| b.to_vec()),
            Side::RawRedis(c) => redis::cmd("GET").arg(key).query_async(&mut c.clone()).await?,
            Side::RawRedisScript(c, _, ns) => {
                let raw: Option<Vec<u8>> =
                    redis::cmd("GET").arg(format!("{ns}:e:{key}")).query_async(&mut c.clone()).await?;
                raw.and_then(|r| Some(r[r.iter().position(|&b| b == b':')? + 1..].to_vec()))
            }
        };
        if v.as_deref() != Some(VALUE) {
            return Err(format!("wrong value for {key}: {v:?}").into());
        }
        Ok(())
    }

    async fn run(&self, op: Op, key: &str) -> Result<(), BoxError> {
        match op {
            Op::Get => self.get(key).await,
            Op::Put => self.put(key).await,
        }
    }
}

#[derive(Default, Clone, Copy)]
struct Figures {
    p50_us: f64,
    ops_per_sec: f64,
    errors: u64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

/// Sequential latency, then throughput with `c` ops in flight, for `phase` each.
async fn measure(side: &Side, op: Op, keys: &[String], cfg: &Config) -> Figures {
    let mut lat = Vec::new();
    let mut errors = 0;
    let end = Instant::now() + cfg.phase;
    let mut i = 0;
    while Instant::now() < end {
        let t = Instant::now();
        if side.run(op, &keys[i % keys.len()]).await.is_err() {
            errors += 1;
        }
        lat.push(t.elapsed().as_secs_f64() * 1e6);
        i += 1;
    }
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let workers: Vec<_> = (0..cfg.concurrency)
        .map(|w| {
            let (side, keys, done, failed, stop) =
                (side.clone(), keys.to_vec(), done.clone(), failed.clone(), stop.clone());
            actix_rt::spawn(async move {
                let mut i = w;
                while !stop.load(Ordering::Relaxed) {
                    match side.run(op, &keys[i % keys.len()]).await {
                        Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                    i += 7;
                }
            })
        })
        .collect();
    tokio::time::sleep(cfg.phase).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    let secs = started.elapsed().as_secs_f64();
    Figures {
        p50_us: median(lat),
        ops_per_sec: done.load(Ordering::Relaxed) as f64 / secs,
        errors: errors + failed.load(Ordering::Relaxed),
    }
}

/// Runs both sides for each op over the rounds, prints per-round and median figures and the ratio
/// lines; returns false if a side had errors.
async fn compare<F, Fut>(backend: &str, framework: Side, raw: Side, cfg: &Config, prefix: F) -> bool
where
    F: Fn(&Side) -> Fut,
    Fut: Future<Output = Vec<String>>,
{
    let mut ok = true;
    let fw_keys = prefix(&framework).await;
    let raw_keys = prefix(&raw).await;
    // warm-up, unrecorded
    let warm = Config { phase: Duration::from_millis(100), rounds: 1, concurrency: cfg.concurrency };
    for side in [&framework, &raw] {
        let keys = if side.label() == "raw" { &raw_keys } else { &fw_keys };
        measure(side, Op::Put, keys, &warm).await;
    }
    for op in [Op::Put, Op::Get] {
        let mut fw = Vec::new();
        let mut rw = Vec::new();
        for round in 0..cfg.rounds {
            let order: [(&Side, &Vec<String>); 2] = if round % 2 == 0 {
                [(&framework, &fw_keys), (&raw, &raw_keys)]
            } else {
                [(&raw, &raw_keys), (&framework, &fw_keys)]
            };
            for (side, keys) in order {
                let f = measure(side, op, keys, cfg).await;
                println!(
                    "  {backend} {op:?} round {round} {:<9} p50 {:>8.1} us  {:>9.0} ops/s  errors {}",
                    side.label(),
                    f.p50_us,
                    f.ops_per_sec,
                    f.errors
                );
                if side.label() == "raw" {
                    rw.push(f)
                } else {
                    fw.push(f)
                }
            }
        }
        let med = |v: &Vec<Figures>, g: fn(&Figures) -> f64| median(v.iter().map(g).collect());
        let errors = fw.iter().chain(&rw).map(|f| f.errors).sum::<u64>();
        let (fp, rp) = (med(&fw, |f| f.p50_us), med(&rw, |f| f.p50_us));
        let (ft, rt) = (med(&fw, |f| f.ops_per_sec), med(&rw, |f| f.ops_per_sec));
        let op_name = format!("{op:?}").to_lowercase();
        if errors > 0 {
            ok = false;
            println!("kv {backend} {op_name} ratio=none errors={errors}");
        } else {
            println!(
                "kv {backend} {op_name} c={} framework_ops={ft:.0} raw_ops={rt:.0} ratio={:.2} p50_us={fp:.1} raw_p50_us={rp:.1} latency_ratio={:.2}",
                cfg.concurrency,
                ft / rt,
                rp / fp
            );
        }
    }
    ok
}

#[actix::main]
async fn main() -> Result<(), BoxError> {
    let cfg = Config::from_env();
    let run = micro::test_util::unique("bench");
    let keys = move |side: &Side| {
        let side = side.clone();
        let run = run.clone();
        async move {
            let keys: Vec<String> = (0..64).map(|i| format!("{run}.{}.k{i}", side.label())).collect();
            for k in &keys {
                side.put(k).await.expect("seed the keys");
            }
            keys
        }
    };
    let mut ok = true;

    let nats = micro::test_util::nats_url();
    let bucket = "micro-kv-bench2";
    let framework = Kv::open(&format!("{nats}?bucket={bucket}&max_age=1h")).await?;
    let js = async_nats::jetstream::new(async_nats::connect(&nats).await?);
    let raw = js.get_key_value(bucket).await?;
    println!("kv on NATS JetStream KV (bucket {bucket}): framework micro::kv vs raw async-nats kv::Store");
    ok &= compare("nats", Side::Framework(framework), Side::RawNats(Box::new(raw)), &cfg, &keys).await;

    let redis_url = micro::test_util::redis_url();
    let framework = Kv::open(&format!("{redis_url}?namespace=micro-kv-bench")).await?;
    let raw = redis::aio::ConnectionManager::new(redis::Client::open(redis_url.as_str())?).await?;
    println!("kv on Redis: framework micro::kv vs raw redis GET/SET");
    ok &= compare("redis", Side::Framework(framework.clone()), Side::RawRedis(raw.clone()), &cfg, &keys).await;
    println!("kv on Redis: framework micro::kv vs the raw client running the same script (EVALSHA) and GET");
    let script =
        Side::RawRedisScript(raw.clone(), Arc::new(redis::Script::new(KV_PUT_SCRIPT)), "micro-kv-bench-raw".into());
    ok &= compare("redis-script", Side::Framework(framework), script, &cfg, &keys).await;
    // leave nothing behind on the shared server: the raw side's keys and the bench's namespace
    let mut c = raw.clone();
    for pattern in ["test.bench.*", "micro-kv-bench:*", "micro-kv-bench-raw:*"] {
        let _: Result<(), _> = redis::cmd("EVAL")
            .arg("for _,k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end")
            .arg(0)
            .arg(pattern)
            .query_async(&mut c)
            .await;
    }

    if !ok {
        return Err("a side had errors; no ratio for it".into());
    }
    Ok(())
}
