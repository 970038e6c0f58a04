//! Helpers for tests of services built with the toolkit: broker URLs that fail loudly when the
//! broker is down, unique names so tests run in parallel, and wait-for-condition.
//!
//! ```
//! let name = micro::test_util::unique("greeter");
//! assert!(name.starts_with("test.greeter."));
//! ```

use std::future::Future;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The NATS URL for tests: `MICRO_TEST_NATS_URL`, else `nats://127.0.0.1:4222`.
///
/// # Panics
/// When nothing listens there, with the command that starts NATS: a test that needs a broker
/// must fail, not skip.
pub fn nats_url() -> String {
    let url = std::env::var("MICRO_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    if !reachable(url.trim_start_matches("nats://")) {
        panic!(
            "NATS is not reachable at {url}. Start it with\n  \
             start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log\n\
             or `docker compose up -d nats`, or point MICRO_TEST_NATS_URL at one."
        );
    }
    url
}

/// The RabbitMQ URL for tests: `MICRO_TEST_AMQP_URL`, else `amqp://guest:guest@127.0.0.1:5672/%2f`.
///
/// # Panics
/// When nothing listens there, with the command that starts RabbitMQ.
pub fn amqp_url() -> String {
    let url = std::env::var("MICRO_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let hostport = url.rsplit('@').next().unwrap_or(&url).trim_start_matches("amqp://");
    let hostport = hostport.split('/').next().unwrap_or(hostport).to_string();
    if !reachable(&hostport) {
        panic!(
            "RabbitMQ is not reachable at {hostport}. Start it with\n  rabbitmq-server -detached\n\
             or `docker compose up -d rabbitmq`, or point MICRO_TEST_AMQP_URL at one."
        );
    }
    url
}

/// The Redis URL for tests: `MICRO_TEST_REDIS_URL`, else `redis://127.0.0.1:6379/0`.
///
/// # Panics
/// When nothing listens there, with the command that starts Redis.
pub fn redis_url() -> String {
    let url = std::env::var("MICRO_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into());
    let hostport = url.rsplit('@').next().unwrap_or(&url).trim_start_matches("redis://");
    let hostport = hostport.split('/').next().unwrap_or(hostport).to_string();
    if !reachable(&hostport) {
        panic!(
            "Redis is not reachable at {hostport}. Install and start it with\n  \
             apt-get install -y redis-server && redis-server --daemonize yes\n\
             or `docker compose up -d redis`, or point MICRO_TEST_REDIS_URL at one."
        );
    }
    url
}

/// True if something accepts TCP connections at `host:port` within 2 s.
fn reachable(hostport: &str) -> bool {
    hostport
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok())
}

/// A name unique to this process and call: `test.<prefix>.<uuid>`.
pub fn unique(prefix: &str) -> String {
    format!("test.{prefix}.{}", uuid::Uuid::now_v7().simple())
}

/// A `memory://` URL of a bus private to the caller.
pub fn memory_url() -> String {
    format!("memory://{}", uuid::Uuid::now_v7().simple())
}

/// Polls `check` until it returns `Some`, or panics after `timeout` with `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
