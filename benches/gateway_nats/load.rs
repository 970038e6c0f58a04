//! HTTP/1.1 load for `gateway_nats`: the built-in load generator over raw TCP, `wrk` when it is
//! installed, and the one-off response check.

use super::*;

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Sends one request on a keep-alive connection and reads its response (Content-Length bodies
/// only, which is what actix-web sends here). Returns the status and the body's range in `buf`.
async fn exchange(
    stream: &mut tokio::net::TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
) -> Result<(u16, std::ops::Range<usize>), BoxError> {
    stream.write_all(request).await?;
    buf.clear();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err("connection closed before the response head".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = std::str::from_utf8(&buf[..head_end])?;
    let status: u16 = head.get(9..12).and_then(|s| s.parse().ok()).ok_or("bad status line")?;
    let mut length = None;
    for line in head.split("\r\n").skip(1) {
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse::<usize>().ok();
            } else if k.eq_ignore_ascii_case("transfer-encoding") {
                return Err("chunked responses are not supported by the built-in load generator".into());
            }
        }
    }
    let length = length.ok_or("response without Content-Length")?;
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err("connection closed in the response body".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok((status, head_end..head_end + length))
}

/// The counted run of `BENCH_CALLGRIND=1` (`BENCH_PROFILE=<target> BENCH_CALLS=n`, under
/// callgrind): a warm-up, then `n` requests one after another on one keep-alive connection,
/// each checked; callgrind counts exactly those `n` (`common::callgrind`). The requests are sent
/// from this process, so their client side is counted too, alike for every target.
pub(crate) async fn counted_requests(target: &HttpTarget, side: &str, n: u64) -> Result<(), BoxError> {
    let mut stream = tokio::net::TcpStream::connect(target.addr).await?;
    stream.set_nodelay(true)?;
    let request = target.request_bytes();
    let mut buf = Vec::with_capacity(1024);
    for _ in 0..callgrind::WARMUP_CALLS {
        checked_exchange(&mut stream, &request, &mut buf, target).await?;
    }
    let counting = callgrind::Counting::start();
    for _ in 0..n {
        checked_exchange(&mut stream, &request, &mut buf, target).await?;
    }
    counting.finish(side, n);
    Ok(())
}

/// One exchange whose answer must be `target`'s expected one.
async fn checked_exchange(
    stream: &mut tokio::net::TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
    target: &HttpTarget,
) -> Result<(), BoxError> {
    match exchange(stream, request, buf).await? {
        (200, body) if buf[body.clone()] == *target.expect.as_bytes() => Ok(()),
        (status, body) => Err(format!("{}: {status} {}", target.label, String::from_utf8_lossy(&buf[body])).into()),
    }
}

/// One request on a fresh connection: the status and body, to check a target before loading it.
pub(crate) async fn fetch_once(target: &HttpTarget) -> Result<(u16, String), BoxError> {
    let mut stream = tokio::net::TcpStream::connect(target.addr).await?;
    let mut buf = Vec::new();
    let (status, body) = exchange(&mut stream, &target.request_bytes(), &mut buf).await?;
    Ok((status, String::from_utf8_lossy(&buf[body]).into_owned()))
}

/// The built-in load generator (blocking: run it on its own thread).
pub(crate) fn builtin_load(target: &HttpTarget, connections: usize, duration: Duration) -> Load {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("load generator runtime");
    rt.block_on(async {
        let start = Instant::now();
        let deadline = start + duration;
        let request: std::sync::Arc<[u8]> = target.request_bytes().into();
        let tasks: Vec<_> = (0..connections)
            .map(|_| {
                let request = request.clone();
                let target = target.clone();
                tokio::spawn(async move {
                    let mut hist = Histogram::<u64>::new(3).expect("histogram");
                    let (mut ok, mut errors, mut first_error) = (0u64, 0u64, None::<String>);
                    let mut stream = None;
                    let mut buf = Vec::with_capacity(1024);
                    while Instant::now() < deadline {
                        if stream.is_none() {
                            match tokio::net::TcpStream::connect(target.addr).await {
                                Ok(s) => {
                                    let _ = s.set_nodelay(true);
                                    stream = Some(s);
                                }
                                Err(e) => {
                                    errors += 1;
                                    first_error.get_or_insert_with(|| e.to_string());
                                    tokio::time::sleep(Duration::from_millis(10)).await;
                                    continue;
                                }
                            }
                        }
                        let s = stream.as_mut().expect("connected");
                        let t0 = Instant::now();
                        match exchange(s, &request, &mut buf).await {
                            Ok((200, body)) if buf[body.clone()] == *target.expect.as_bytes() => {
                                hist.record(t0.elapsed().as_nanos() as u64).expect("record latency");
                                ok += 1;
                            }
                            Ok((status, body)) => {
                                errors += 1;
                                first_error.get_or_insert_with(|| {
                                    format!("{status}: {}", String::from_utf8_lossy(&buf[body]))
                                });
                            }
                            Err(e) => {
                                errors += 1;
                                first_error.get_or_insert_with(|| e.to_string());
                                stream = None;
                            }
                        }
                    }
                    (ok, errors, first_error, hist)
                })
            })
            .collect();
        let mut hist = Histogram::<u64>::new(3).expect("histogram");
        let (mut requests, mut errors, mut first_error) = (0, 0, None);
        for t in tasks {
            let (ok, err, first, h) = t.await.expect("load task");
            requests += ok;
            errors += err;
            first_error = first_error.or(first);
            hist.add(&h).expect("histogram add");
        }
        let elapsed = start.elapsed();
        Load {
            requests,
            errors,
            elapsed,
            rps: requests as f64 / elapsed.as_secs_f64(),
            p50_us: hist.value_at_quantile(0.50) as f64 / 1e3,
            p99_us: hist.value_at_quantile(0.99) as f64 / 1e3,
            first_error,
        }
    })
}

/// A wrk duration (`3.00s`, `250.00ms`, `1.2m`) or latency in microseconds.
fn wrk_micros(s: &str) -> Option<f64> {
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().ok()?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => return None,
    };
    Some(n * scale)
}

/// Runs wrk (blocking: run it on its own thread) and parses its report.
pub(crate) fn wrk_load(wrk: &PathBuf, target: &HttpTarget, connections: usize, duration: Duration) -> Load {
    let secs = duration.as_secs_f64().ceil().max(1.0) as u64;
    let threads = connections.min(2);
    let mut cmd = std::process::Command::new(wrk);
    cmd.arg(format!("-c{connections}"))
        .arg(format!("-t{threads}"))
        .arg(format!("-d{secs}s"))
        .arg("--timeout")
        .arg("10s")
        .arg("--latency");
    // Every target gets the same script: it checks each answer (status 200 and the exact body)
    // and reports the wrong ones, which then do not count as throughput.
    let script = {
        let name: String = target.label.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
        let path = std::env::temp_dir().join(format!("gateway_nats-{}-{name}.lua", std::process::id()));
        let mut lua = String::new();
        if let Some(body) = &target.body {
            lua += &format!(
                "wrk.method = \"{}\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = [[{body}]]\n",
                target.method
            );
        }
        lua += &format!(
            "local expected = [[{}]]\nlocal threads = {{}}\nwrong = 0\n\
             function setup(thread) table.insert(threads, thread) end\n\
             function response(status, headers, body)\n  \
               if status ~= 200 or body ~= expected then wrong = wrong + 1 end\nend\n\
             function done(summary, latency, requests)\n  local n = 0\n  \
               for _, t in ipairs(threads) do n = n + t:get(\"wrong\") end\n  \
               io.write(string.format(\"Wrong answers: %d\\n\", n))\nend\n",
            target.expect
        );
        std::fs::write(&path, lua).expect("write the wrk script");
        path
    };
    cmd.arg("-s").arg(&script);
    cmd.arg(target.url());
    let out = cmd.output().expect("run wrk");
    let _ = std::fs::remove_file(&script);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let fail = |why: &str| -> ! {
        panic!("wrk: {why}\nstdout:\n{text}\nstderr:\n{}", String::from_utf8_lossy(&out.stderr));
    };
    if !out.status.success() {
        fail("exited with an error");
    }
    let mut wrong_reported = false;
    let mut load = Load {
        requests: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        rps: f64::NAN,
        p50_us: f64::NAN,
        p99_us: f64::NAN,
        first_error: None,
    };
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", n] => load.rps = n.parse().unwrap_or(f64::NAN),
            ["50%", t] => load.p50_us = wrk_micros(t).unwrap_or(f64::NAN),
            ["99%", t] => load.p99_us = wrk_micros(t).unwrap_or(f64::NAN),
            [n, "requests", "in", t, ..] => {
                load.requests = n.parse().unwrap_or(0);
                let t = t.trim_end_matches(',');
                load.elapsed = Duration::from_secs_f64(wrk_micros(t).unwrap_or(0.0) / 1e6);
            }
            // Non-2xx responses are among the wrong answers the script counts.
            ["Wrong", "answers:", n] => {
                let n: u64 = n.parse().unwrap_or(0);
                load.errors += n;
                if n > 0 {
                    load.first_error.get_or_insert_with(|| format!("{n} answers not 200 with the expected body"));
                }
                wrong_reported = true;
            }
            ["Socket", "errors:", rest @ ..] => {
                let n: u64 = rest.iter().filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok()).sum();
                if n > 0 {
                    load.errors += n;
                    load.first_error.get_or_insert_with(|| line.trim().to_string());
                }
            }
            _ => {}
        }
    }
    if load.rps.is_nan() {
        fail("no Requests/sec in the report");
    }
    if !wrong_reported {
        fail("no count of wrong answers from the script");
    }
    // wrk counts every response among its requests (and in Requests/sec): keep only the good
    // ones, over the measured time.
    load.requests = load.requests.saturating_sub(load.errors);
    if load.elapsed > Duration::ZERO {
        load.rps = load.requests as f64 / load.elapsed.as_secs_f64();
    }
    load
}
