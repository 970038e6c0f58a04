//! What the benchmarks share: the counting allocator, the greeter request and reply with their
//! handler, and small measuring helpers; [`rpc`] holds what the two RPC benches share. Each bench
//! includes it with `mod common;`. How the benches measure: `benches/README.md`.
#![allow(dead_code)]

pub mod callgrind;
pub mod rpc;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use micro::prelude::*;
use serde::{Deserialize, Serialize};

/// Sendable, so that load-generator threads can hand errors back too.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The system allocator, counting allocations (one relaxed atomic add each, on both sides alike)
/// so the table can show heap allocations per call: deterministic where timings are noisy.
/// Install it in each bench with `#[global_allocator]`.
pub struct CountingAlloc;

pub static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards to `System` unchanged; the counter has no effect on memory.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[derive(Clone, Serialize, Deserialize)]
pub struct HelloRequest {
    pub name: String,
}

#[derive(Serialize, Deserialize)]
pub struct HelloReply {
    pub msg: String,
}

pub fn greet(r: HelloRequest) -> HelloReply {
    HelloReply { msg: format!("Hello {}", r.name) }
}

pub async fn say_hello(Req(r): Req<HelloRequest>) -> Result<HelloReply, Status> {
    Ok(greet(r))
}

pub const ENDPOINT: &str = "Say.Hello";

/// CPU time of this process (all threads), from `/proc/self/stat` (zero elsewhere).
pub fn process_cpu() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return Duration::ZERO };
    // Fields after the `(comm)`: state is field 3, utime 14 and stime 15, in clock ticks (100 Hz).
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok())).sum();
    Duration::from_millis(ticks * 10)
}

/// The median (`NaN` of nothing).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The phases of one side over rounds, for medians.
pub struct Series<P>(pub Vec<P>);

impl<P> Default for Series<P> {
    fn default() -> Self {
        Series(Vec::new())
    }
}

impl<P> Series<P> {
    pub fn med(&self, f: impl Fn(&P) -> f64) -> f64 {
        median(self.0.iter().map(f).collect())
    }
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// CPU time (utime + stime) of the process `pid`, from `/proc/<pid>/stat`.
pub fn pid_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the `(comm)`: state is field 3, utime 14 and stime 15, in clock ticks (100 Hz).
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok())).sum();
    Some(Duration::from_millis(ticks * 10))
}

/// The broker process, for its CPU time: for a local URL the process listening on its port,
/// else the one process named `name` (`nats-server`, `beam.smp`) if exactly one runs; none for a
/// remote broker.
pub fn broker_pid(url: &str, default_port: u16, name: &str) -> Option<u32> {
    let hostport = url.rsplit('@').next().unwrap_or(url);
    let hostport = hostport.split_once("://").map_or(hostport, |(_, r)| r);
    let hostport = hostport.split('/').next().unwrap_or(hostport);
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().unwrap_or(default_port)),
        None => (hostport, default_port),
    };
    if !matches!(host, "127.0.0.1" | "localhost" | "[::1]" | "0.0.0.0") {
        return None;
    }
    listener_pid(port).or_else(|| single_pid(name))
}

/// The CPU time `pid` spent since `start` (a [`pid_cpu`] reading), if both readings exist.
pub fn cpu_since(pid: Option<u32>, start: Option<Duration>) -> Option<Duration> {
    start.zip(pid.and_then(pid_cpu)).map(|(a, b)| b.saturating_sub(a))
}

/// The pid of the one local process whose `comm` is `name` (`nats-server`, `beam.smp`), if
/// exactly one is visible: a broker elsewhere, or several, give `None`.
pub fn single_pid(name: &str) -> Option<u32> {
    let pids: Vec<u32> = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name))
        .collect();
    (pids.len() == 1).then(|| pids[0])
}

/// The pid of the local process listening on TCP `port` (from `/proc/net/tcp{,6}` and the
/// processes' socket fds; needs the rights to read them), e.g. the broker a bench talks to
/// when several run on this machine.
pub fn listener_pid(port: u16) -> Option<u32> {
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|t| {
            t.lines()
                .skip(1)
                .filter_map(|l| {
                    // sl local_address rem_address st ... inode (field 9)
                    let f: Vec<&str> = l.split_whitespace().collect();
                    let local_port = f.get(1)?.rsplit_once(':')?.1;
                    let listening = f.get(3)? == &"0A";
                    (listening && u16::from_str_radix(local_port, 16).ok()? == port)
                        .then(|| f.get(9).map(|s| s.to_string()))?
                })
                .collect::<Vec<_>>()
        })
        .collect();
    if inodes.is_empty() {
        return None;
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    std::fs::read_dir("/proc").ok()?.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()).find(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
            fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
                .any(|link| link.to_str().is_some_and(|l| wanted.iter().any(|w| w == l)))
        })
    })
}

/// The raw side's NATS responder: a connection of its own subscribed to a fresh subject under
/// `bench.raw.`, a plain loop that decodes each MessagePack greeter request and publishes the
/// MessagePack reply inline. Returns the subject and the loop's task (abort it at the end).
#[cfg(feature = "nats")]
pub async fn start_raw_nats_responder(
    url: &str,
    name: &str,
) -> Result<(String, actix_rt::task::JoinHandle<()>), BoxError> {
    use futures::StreamExt;
    let subject = format!("bench.raw.{}", micro::test_util::unique(name));
    let responder = async_nats::connect(url).await?;
    let mut sub = responder.subscribe(subject.clone()).await?;
    responder.flush().await?;
    let task = actix_rt::spawn(async move {
        while let Some(msg) = sub.next().await {
            let Some(reply_to) = msg.reply else { continue };
            let Ok(req) = rmp_serde::from_slice::<HelloRequest>(&msg.payload) else { continue };
            let body = rmp_serde::to_vec_named(&greet(req)).expect("encode reply");
            if let Err(e) = responder.publish(reply_to, body.into()).await {
                eprintln!("raw responder: publish failed: {e}");
            }
        }
    });
    Ok((subject, task))
}
