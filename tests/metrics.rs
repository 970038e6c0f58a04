//! Metrics over NATS and RabbitMQ: a service given a metrics address serves `/metrics`; its
//! counters move by exactly the calls and events made (scraped before and after), and the
//! exposition passes `promtool check metrics`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use micro::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::util::*;

over_brokers!(
    metrics_move_by_exactly_the_calls_and_events_made,
    durable_events_count_retries_and_dead_letters,
    two_services_share_one_recorder,
);

/// `GET /metrics` over a plain TCP connection: the body.
pub async fn scrape(addr: SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    body.to_string()
}

/// The sum of the samples of `name` whose labels include all of `labels` (0 when none).
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
            if n != name {
                return None;
            }
            let found: BTreeMap<&str, &str> = rest
                .trim_end_matches('}')
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k, v.trim_matches('"')))
                .collect();
            labels.iter().all(|(k, v)| found.get(k) == Some(v)).then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// Runs `promtool check metrics` on the text; fails with the install command when it is missing.
pub fn promtool_check(text: &str) {
    use std::io::Write;
    let promtool = "/usr/bin/promtool";
    assert!(
        std::path::Path::new(promtool).exists(),
        "{promtool} is missing: install it with `apt-get install -y prometheus` (see .ci/run)"
    );
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- exposition ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn not_found(_: CallContext) -> Result<(), Status> {
    Err(Status::not_found("no such greeting"))
}

async fn metrics_move_by_exactly_the_calls_and_events_made(url: String) {
    micro::metrics::prometheus::install().unwrap();
    let name = unique("metrics");
    let topic = unique("metrics.topic");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let svc = greeter(&url, &name, "a")
        .handle("Say.Missing", not_found)
        .subscribe(&topic, move |_: CallContext| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(());
                Ok::<_, Status>(())
            }
        })
        .metrics_addr(([127, 0, 0, 1], 0).into())
        .start()
        .await
        .unwrap();
    let addr = svc.metrics_addr().expect("a metrics address");
    let client = Client::connect(&url).await.unwrap();
    let server = |endpoint: &'static str, code: &'static str| {
        let name = name.clone();
        move |t: &str| {
            sample(t, "micro_server_requests_total", &[("service", &name), ("endpoint", endpoint), ("code", code)])
        }
    };
    let client_calls = |endpoint: &'static str, code: &'static str| {
        let name = name.clone();
        move |t: &str| {
            sample(t, "micro_client_requests_total", &[("service", &name), ("endpoint", endpoint), ("code", code)])
        }
    };
    let before = scrape(addr).await;

    for i in 0..5 {
        let _: Greeting = client.call(&name, "Say.Hello", &Hello { name: i.to_string() }).await.unwrap();
    }
    for _ in 0..3 {
        let e = client.call::<_, (), _>(&name, "Say.Missing", &()).await.unwrap_err();
        assert_eq!(e.status().map(|s| s.code()), Some(Code::NOT_FOUND));
    }
    for i in 0..4 {
        client.publish(&topic, &i).await.unwrap();
    }
    for _ in 0..4 {
        tokio::time::timeout(WAIT, rx.recv()).await.expect("the event arrives").unwrap();
    }
    // The handler's send happens before dispatch counts the outcome: wait for the count.
    let handled =
        |t: &str| sample(t, "micro_events_handled_total", &[("service", &name), ("topic", &topic), ("outcome", "ok")]);
    let after = wait_for("4 events counted", WAIT, || async {
        let t = scrape(addr).await;
        (handled(&t) - handled(&before) == 4.0).then_some(t)
    })
    .await;

    let delta = |f: &dyn Fn(&str) -> f64| f(&after) - f(&before);
    assert_eq!(delta(&server("Say.Hello", "200")), 5.0, "{after}");
    assert_eq!(delta(&server("Say.Missing", "404")), 3.0, "{after}");
    assert_eq!(delta(&server("Say.Missing", "200")), 0.0);
    assert_eq!(delta(&client_calls("Say.Hello", "200")), 5.0);
    assert_eq!(delta(&client_calls("Say.Missing", "404")), 3.0);
    let published = |t: &str| sample(t, "micro_events_published_total", &[("topic", &topic), ("outcome", "ok")]);
    assert_eq!(delta(&published), 4.0);
    let latency =
        |t: &str| sample(t, "micro_server_duration_seconds_count", &[("service", &name), ("endpoint", "Say.Hello")]);
    assert_eq!(delta(&latency), 5.0);
    let buckets = |t: &str| {
        sample(
            t,
            "micro_server_duration_seconds_bucket",
            &[("service", &name), ("endpoint", "Say.Hello"), ("le", "+Inf")],
        )
    };
    assert_eq!(delta(&buckets), 5.0, "a histogram with buckets, not a summary");
    assert_eq!(sample(&after, "micro_server_in_flight", &[("service", &name)]), 0.0);
    assert!(sample(&after, "micro_registry_nodes", &[]) >= 1.0);
    promtool_check(&after);

    // A handler panic counts as a panic and a restart.
    let panics = |t: &str| sample(t, "micro_server_panics_total", &[("service", &name)]);
    let e = client.call::<_, (), _>(&name, "Say.Boom", &serde_json::json!({})).await.unwrap_err();
    assert_eq!(e.status().map(|s| s.code()), Some(Code::INTERNAL));
    let t = scrape(addr).await;
    assert_eq!(panics(&t) - panics(&after), 1.0);
    assert_eq!(
        sample(&t, "micro_server_requests_total", &[("service", &name), ("endpoint", "Say.Boom"), ("code", "500")]),
        1.0
    );
    svc.stop().await.unwrap();
}

async fn two_services_share_one_recorder(url: String) {
    let (a, b) = (unique("metrics-a"), unique("metrics-b"));
    let one = greeter(&url, &a, "a").metrics_addr(([127, 0, 0, 1], 0).into()).start().await.unwrap();
    // A second service in the same process: installing again must not fail it.
    let two = greeter(&url, &b, "b").metrics_addr(([127, 0, 0, 1], 0).into()).start().await.unwrap();
    let client = Client::connect(&url).await.unwrap();
    let _: Greeting = client.call(&b, "Say.Hello", &Hello { name: "x".into() }).await.unwrap();
    let served = |t: &str| sample(t, "micro_server_requests_total", &[("service", &b), ("endpoint", "Say.Hello")]);
    for addr in [one.metrics_addr().unwrap(), two.metrics_addr().unwrap()] {
        let text = wait_for("the call counted", Duration::from_secs(5), || async {
            let t = scrape(addr).await;
            (served(&t) == 1.0).then_some(t)
        })
        .await;
        assert!(text.contains("# TYPE micro_server_requests_total counter"), "{text}");
    }
    one.stop().await.unwrap();
    two.stop().await.unwrap();
}

async fn durable_events_count_retries_and_dead_letters(url: String) {
    micro::metrics::prometheus::install().unwrap();
    let (name, topic, group) = (unique("metrics-durable"), unique("metrics.durable"), unique("metrics-group"));
    let quick = |group: &str| {
        SubscribeOptions::durable(group)
            .expire_after(Duration::from_secs(120))
            .max_attempts(3)
            .backoff(Duration::from_millis(20), Duration::from_millis(100))
    };
    // Something must hold the dead letters (RabbitMQ refuses a durable publish nobody keeps).
    let broker = Broker::new(micro::transport::connect(&url).await.unwrap(), "metrics-test");
    let _dead = broker.subscribe_durable(&format!("{group}.dlq"), quick(&unique("ops"))).await.unwrap();
    async fn handle(Req(n): Req<u32>) -> Result<(), Status> {
        if n == 0 {
            return Err(Status::internal("poison (part of a test)"));
        }
        Ok(())
    }
    let svc = Service::builder(&name)
        .transport(&url)
        .subscribe_with(&topic, quick(&group), handle)
        .metrics_addr(([127, 0, 0, 1], 0).into())
        .start()
        .await
        .unwrap();
    let addr = svc.metrics_addr().unwrap();
    for n in [0u32, 1, 2] {
        broker.publish_durable(&topic, &n).await.unwrap();
    }
    let of = |metric: &'static str, extra: &'static [(&'static str, &'static str)]| {
        let (name, topic) = (name.clone(), topic.clone());
        move |t: &str| {
            let mut labels = vec![("service", name.as_str()), ("topic", topic.as_str())];
            labels.extend_from_slice(extra);
            sample(t, metric, &labels)
        }
    };
    let dead = of("micro_events_dead_lettered_total", &[]);
    let ok = of("micro_events_handled_total", &[("outcome", "ok"), ("durable", "true")]);
    let text = wait_for("the dead letter and the two good events", WAIT, || async {
        let t = scrape(addr).await;
        (dead(&t) == 1.0 && ok(&t) == 2.0).then_some(t)
    })
    .await;
    // Three attempts of the poison event: two retries, then the dead letter.
    assert_eq!(of("micro_events_retried_total", &[])(&text), 2.0, "{text}");
    assert_eq!(of("micro_events_handled_total", &[("outcome", "error")])(&text), 3.0);
    assert_eq!(of("micro_events_duration_seconds_count", &[])(&text), 5.0);
    let published = sample(&text, "micro_events_published_total", &[("topic", &topic), ("durable", "true")]);
    assert_eq!(published, 3.0);
    promtool_check(&text);
    svc.stop().await.unwrap();
    broker.delete_durable(&topic, &group).await.unwrap();
}
