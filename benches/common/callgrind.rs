//! Instructions per call, counted by `valgrind --tool=callgrind`: the figure that does not move
//! with the machine's load. The bench runs itself under callgrind once per side and call count
//! (`BENCH_CALLS`), in "counted" mode: setup, a fixed warm-up, then exactly that many calls at
//! c=1, then exit. The run zeroes callgrind's counters after the warm-up and has them dumped
//! right after the counted calls (callgrind client requests), so neither setup, with its
//! one-off lazy work (the metrics recorder's clock calibrates by spinning for a fixed time, a
//! count that follows valgrind's speed), nor teardown is counted. Two counts per side still
//! cancel what the requests themselves cost: `(I(n2) - I(n1)) / (n2 - n1)`. Allocations per
//! call come from the counting allocator the same way.

use std::process::Command;
use std::sync::atomic::Ordering;

use super::{BoxError, HelloRequest, ALLOCATIONS};
use crate::common::rpc::Caller;

/// Calls the counted runs make: a short and a long run per side.
pub fn call_counts(full: bool) -> (u64, u64) {
    if full {
        (300, 1300)
    } else {
        (20, 60)
    }
}

/// Calls made before counting starts (connections, registry, caches and JIT-free warm paths).
pub const WARMUP_CALLS: u64 = 100;

/// In a counted run (`BENCH_CALLS=n` with `BENCH_PROFILE=side`): the number of calls to make.
pub fn counted_calls() -> Option<u64> {
    std::env::var("BENCH_CALLS").ok().and_then(|s| s.parse().ok())
}

/// The counted run's body: a warm-up, then `n` sequential calls; prints the allocations they
/// made on a line the parent reads.
pub async fn counted_run<C: Caller>(target: &C, n: u64) -> Result<(), BoxError> {
    let req = HelloRequest { name: "John".into() };
    for _ in 0..WARMUP_CALLS {
        check(target.call(&req).await?.msg)?;
    }
    let counting = Counting::start();
    for _ in 0..n {
        check(target.call(&req).await?.msg)?;
    }
    counting.finish(target.label(), n);
    Ok(())
}

/// What a counted run counts: from [`start`](Self::start) (callgrind's counters zeroed) to
/// [`finish`](Self::finish) (counters dumped, allocations printed on a line
/// [`measure`] reads).
pub struct Counting {
    allocations: u64,
}

impl Counting {
    pub fn start() -> Counting {
        client_request(ZERO_STATS);
        Counting { allocations: ALLOCATIONS.load(Ordering::Relaxed) }
    }

    pub fn finish(self, side: &str, calls: u64) {
        let allocations = ALLOCATIONS.load(Ordering::Relaxed) - self.allocations;
        client_request(DUMP_STATS);
        println!("counted side={side} calls={calls} allocations={allocations}");
    }
}

/// callgrind's client requests (callgrind.h): write the counters to `<out file>.1`, reset them.
const DUMP_STATS: u64 = ((b'C' as u64) << 24) | ((b'T' as u64) << 16);
const ZERO_STATS: u64 = DUMP_STATS + 1;

/// Makes a callgrind client request (`DUMP_STATS`, `ZERO_STATS`). Outside valgrind it does
/// nothing.
fn client_request(code: u64) {
    #[cfg(target_arch = "x86_64")]
    {
        // valgrind.h's client request on amd64: rdi rotated by 128 bits in all (unchanged),
        // then `xchg rbx, rbx`, which valgrind takes as the request `[code, args..]` that rax
        // points at (the result, unused, comes back in rdx). Natively a no-op.
        let request: [u64; 6] = [code, 0, 0, 0, 0, 0];
        // SAFETY: the instructions change no register but rdi and rdx (both declared) and read
        // nothing but `request`, which outlives them.
        unsafe {
            std::arch::asm!(
                "rol rdi, 3",
                "rol rdi, 13",
                "rol rdi, 61",
                "rol rdi, 51",
                "xchg rbx, rbx",
                in("rax") request.as_ptr(),
                inout("rdx") 0u64 => _,
                inout("rdi") 0u64 => _,
                options(nostack),
            );
        }
    }
}

fn check(msg: String) -> Result<(), BoxError> {
    if msg == "Hello John" {
        Ok(())
    } else {
        Err(format!("unexpected reply {msg:?}").into())
    }
}

/// What one side costs per call.
pub struct PerCall {
    pub instructions: f64,
    pub allocations: f64,
}

/// Runs this bench binary under callgrind for `side` with both call counts and returns the
/// per-call costs. Fails with the install command when valgrind is missing.
pub fn measure(side: &str, full: bool) -> Result<PerCall, BoxError> {
    let (n1, n2) = call_counts(full);
    let (i1, a1) = run_counted(side, n1)?;
    let (i2, a2) = run_counted(side, n2)?;
    let calls = (n2 - n1) as f64;
    Ok(PerCall {
        instructions: i2.saturating_sub(i1) as f64 / calls,
        allocations: a2.saturating_sub(a1) as f64 / calls,
    })
}

/// One counted run under callgrind: (instructions of the whole process, allocations of the
/// counted calls).
fn run_counted(side: &str, calls: u64) -> Result<(u64, u64), BoxError> {
    let exe = std::env::current_exe()?;
    let out_file = std::env::temp_dir().join(format!("callgrind.{}.{side}.{calls}.out", std::process::id()));
    let output = Command::new("valgrind")
        .args(["--tool=callgrind", "--quiet"])
        .arg(format!("--callgrind-out-file={}", out_file.display()))
        .arg(&exe)
        .env("BENCH_PROFILE", side)
        .env("BENCH_CALLS", calls.to_string())
        .output()
        .map_err(|e| format!("cannot run valgrind ({e}); install it with `apt-get install -y valgrind`"))?;
    if !output.status.success() {
        return Err(format!(
            "the counted {side} run under callgrind failed: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let allocations = stdout
        .lines()
        .find_map(|l| l.strip_prefix("counted ")?.split_whitespace().find_map(|kv| kv.strip_prefix("allocations=")))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("the counted {side} run printed no allocation count:\n{stdout}"))?;
    // The dump the run requested right after its counted calls (`<out file>.1`): the cost
    // since the counters were zeroed after the warm-up (`totals:`; `summary:` is the whole
    // run's). The file written at exit holds the teardown only.
    let dumped = out_file.with_extension("out.1");
    let profile = std::fs::read_to_string(&dumped)
        .map_err(|e| format!("no callgrind dump after the counted calls at {} ({e})", dumped.display()))?;
    let _ = std::fs::remove_file(&out_file);
    let _ = std::fs::remove_file(&dumped);
    let instructions = profile
        .lines()
        .find_map(|l| l.strip_prefix("totals:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or("no instruction total in the callgrind dump")?;
    Ok((instructions, allocations))
}
