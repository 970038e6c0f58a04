//! The Prometheus recorder (`metrics-exporter-prometheus`), installed once per process, and a
//! small `/metrics` listener for services.
//!
//! ```
//! # #[actix::main] async fn main() -> micro::Result<()> {
//! let handle = micro::metrics::prometheus::install()?; // a second call returns the same handle
//! let text = handle.render();
//! assert!(micro::metrics::enabled());
//! # let _ = text;
//! # Ok(()) }
//! ```

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{Error, ErrorKind, Result};

/// The `Content-Type` of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Histogram buckets of the `*_duration_seconds` metrics: 100 µs to 10 s.
pub const DURATION_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
static INSTALL: Mutex<()> = Mutex::new(());

/// The recorder [`install`] installs (the duration histograms with [`DURATION_BUCKETS`]),
/// not installed: for a recorder scoped to a thread or a test, or behind a recorder of your
/// own. Handles made while it is in scope record to it (see [`metrics::set_default_local_recorder`]);
/// call [`enable`](super::enable) too, so clients count their calls. Histogram samples wait in
/// the recorder until its handle's `run_upkeep` (or `render`) folds them into the buckets: run
/// it every few seconds, as [`install`] does.
///
/// ```
/// # #[cfg(feature = "prometheus")] {
/// let recorder = micro::metrics::prometheus::recorder().unwrap();
/// let handle = recorder.handle();
/// {
///     let _scoped = metrics::set_default_local_recorder(&recorder);
///     metrics::counter!("jobs_total").increment(1);
/// }
/// assert!(handle.render().contains("jobs_total 1"));
/// # }
/// ```
pub fn recorder() -> Result<PrometheusRecorder> {
    Ok(PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), DURATION_BUCKETS)
        .map_err(|e| Error::config(format!("prometheus buckets: {e}")))?
        .build_recorder())
}

/// Installs the Prometheus recorder as the process's global recorder, unless it already is,
/// and returns its handle (render it with [`PrometheusHandle::render`]). Every caller shares
/// the one installation. Fails only when another recorder was installed first.
pub fn install() -> Result<PrometheusHandle> {
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let _one = INSTALL.lock();
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let recorder = recorder()?;
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|_| {
        Error::new(ErrorKind::Config, "another metrics recorder is installed already; the Prometheus one cannot be")
    })?;
    let _ = HANDLE.set(handle.clone());
    spawn_upkeep(handle.clone());
    super::enable();
    Ok(handle)
}

/// How often the installed recorder folds histogram samples into its buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Folds histogram samples into buckets every [`UPKEEP_EVERY`], on a thread of its own (the
/// recorder is the process's, and may be installed outside any runtime). Without it, every
/// sample since the last scrape would stay in memory.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new().name("micro-metrics-upkeep".into()).spawn(move || loop {
        std::thread::sleep(UPKEEP_EVERY);
        handle.run_upkeep();
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no upkeep thread for the metrics recorder: histograms fold only when scraped");
    }
}

/// The installed handle, if [`install`] ran.
pub fn handle() -> Option<PrometheusHandle> {
    HANDLE.get().cloned()
}

/// The metrics in the Prometheus text format (installing the recorder if needed).
pub fn render() -> Result<String> {
    let h = install()?;
    h.run_upkeep();
    Ok(h.render())
}

/// Addresses this process serves `/metrics` on already (services sharing an address share
/// the listener).
static LISTENING: Mutex<Option<HashSet<SocketAddr>>> = Mutex::new(None);

/// A `/metrics` listener started by [`serve`]; stops when dropped.
///
/// ```
/// # #[actix::main] async fn main() -> micro::Result<()> {
/// let listener = micro::metrics::prometheus::serve(([127, 0, 0, 1], 0).into()).await?;
/// println!("metrics at http://{}/metrics", listener.local_addr());
/// drop(listener); // stops serving
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct MetricsListener {
    addr: SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl MetricsListener {
    /// The address bound (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsListener {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            if let Some(set) = LISTENING.lock().as_mut() {
                set.remove(&self.addr);
            }
        }
    }
}

/// Installs the recorder and serves `GET /metrics` on `addr` (on the current runtime) until
/// the returned listener is dropped. When this process serves that address already, the
/// existing listener answers for both and the returned one holds nothing.
pub async fn serve(addr: SocketAddr) -> Result<MetricsListener> {
    let handle = install()?;
    if LISTENING.lock().get_or_insert_with(HashSet::new).contains(&addr) {
        return Ok(MetricsListener { addr, task: None });
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::config(format!("cannot serve metrics on {addr}: {e}")))?;
    let bound = listener.local_addr().map_err(|e| Error::config(format!("metrics listener: {e}")))?;
    LISTENING.lock().get_or_insert_with(HashSet::new).insert(bound);
    let task = actix_rt::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, say: do not spin.
                    tracing::debug!(error = %e, "metrics listener accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let handle = handle.clone();
            actix_rt::spawn(async move {
                let _ = answer(stream, &handle).await;
            });
        }
    });
    tracing::info!(address = %bound, "serving metrics at /metrics");
    Ok(MetricsListener { addr: bound, task: Some(task) })
}

/// Reads one request head (bounded) and answers it: the metrics for `GET /metrics`, 404 else.
async fn answer(mut stream: tokio::net::TcpStream, handle: &PrometheusHandle) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), read)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") => {
            handle.run_upkeep();
            ("200 OK", CONTENT_TYPE, handle.render())
        }
        ("GET", _) => ("404 Not Found", "text/plain", "not found; metrics are at /metrics\n".to_string()),
        _ => ("405 Method Not Allowed", "text/plain", "use GET /metrics\n".to_string()),
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(reply.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}
