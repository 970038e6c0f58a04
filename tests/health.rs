//! Health checks over NATS and RabbitMQ: a failing check takes a node out of selection and a
//! passing one brings it back; `micro health` reports a registered node that is paused
//! (SIGSTOP) and exits non-zero; the gateway's `/ready` follows the registry and its checks.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use micro::prelude::*;
use micro::server::HealthStatus;

use crate::util::*;

over_brokers!(
    a_failing_check_takes_the_node_out_of_selection_until_it_passes,
    micro_health_reports_a_paused_registered_node_and_exits_non_zero,
    gateway_ready_follows_the_registry_and_the_checks,
);

/// A check that passes while the flag is up.
fn flag_check(up: &Arc<AtomicBool>) -> impl Fn() -> std::future::Ready<Result<(), String>> + 'static {
    let up = up.clone();
    move || std::future::ready(if up.load(Ordering::SeqCst) { Ok(()) } else { Err("database unreachable".to_string()) })
}

/// The labels of the nodes `calls` calls reach.
async fn labels_reached(client: &Client, name: &str, calls: usize) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for i in 0..calls {
        let g: Greeting = client.call(name, "Say.Hello", &Hello { name: i.to_string() }).await.unwrap();
        seen.insert(g.node);
    }
    seen
}

async fn a_failing_check_takes_the_node_out_of_selection_until_it_passes(url: String) {
    let name = unique("health");
    let up = Arc::new(AtomicBool::new(true));
    let a = greeter(&url, &name, "a")
        .health_check("db", flag_check(&up))
        .health_interval(Duration::from_millis(50))
        .start()
        .await
        .unwrap();
    let b = greeter(&url, &name, "b").start().await.unwrap();
    let client =
        Client::builder().transport(&url).strategy(micro::selector::Strategy::RoundRobin).connect().await.unwrap();
    let both: BTreeSet<String> = ["a", "b"].map(String::from).into();
    wait_for("calls to reach both nodes", WAIT, || async {
        (labels_reached(&client, &name, 4).await == both).then_some(())
    })
    .await;
    let health: HealthStatus = client.call(&name, "Debug.Health", &()).await.unwrap();
    assert!(health.checks.len() <= 1);

    up.store(false, Ordering::SeqCst);
    // The node announces itself unhealthy at once; the client's registry follows.
    let node_health = |want: &'static str| {
        let (client, name, id) = (client.clone(), name.clone(), a.node_id().to_string());
        move || {
            let (client, name, id) = (client.clone(), name.clone(), id.clone());
            async move {
                let records = client.registry().get_service(&name).await.ok()?;
                let node = records.iter().flat_map(|r| r.nodes.iter()).find(|n| n.id == id)?;
                (node.metadata.get("health").map(String::as_str) == Some(want)).then_some(())
            }
        }
    };
    wait_for("node a to be announced unhealthy", WAIT, node_health("unhealthy")).await;
    assert_eq!(labels_reached(&client, &name, 20).await, BTreeSet::from(["b".to_string()]));
    let opts = CallOptions::new().node(a.node_id());
    let h: HealthStatus = client.call_with(&name, "Debug.Health", &(), opts).await.unwrap();
    assert_eq!(h.status, "unhealthy");
    assert_eq!(h.failing(), "db: database unreachable");
    assert!(!a.health().healthy());

    up.store(true, Ordering::SeqCst);
    wait_for("node a to be announced healthy again", WAIT, node_health("ok")).await;
    wait_for("calls to reach node a again", WAIT, || async {
        (labels_reached(&client, &name, 4).await == both).then_some(())
    })
    .await;
    let opts = CallOptions::new().node(a.node_id());
    let h: HealthStatus = client.call_with(&name, "Debug.Health", &(), opts).await.unwrap();
    assert_eq!((h.status.as_str(), h.checks[0].healthy), ("ok", true));
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

async fn micro_health_reports_a_paused_registered_node_and_exits_non_zero(url: String) {
    let name = unique("paused");
    let config = ChildConfig {
        url: url.clone(),
        service: name.clone(),
        label: "child".into(),
        max_restarts: 100,
        grace_ms: 1000,
    };
    let child = ChildNode::spawn(&config);
    // This process keeps a registry too (every service and client does): it holds the
    // child's record, which a fresh `micro` learns from it once the child stops answering.
    let client = Client::connect(&url).await.unwrap();
    let id = wait_for("the child to register", WAIT, || async {
        let records = client.registry().get_service(&name).await.ok()?;
        records.iter().flat_map(|r| r.nodes.iter()).next().map(|n| n.id.clone())
    })
    .await;
    child.signal("STOP");
    let out = tokio::task::spawn_blocking({
        let (name, url) = (name.clone(), url.clone());
        move || {
            assert_cmd::Command::new(env!("CARGO_BIN_EXE_micro"))
                .args(["health", &name, "--timeout", "1s", "--transport", &url, "-o", "json"])
                .env_remove("MICRO_TRANSPORT")
                .env("NO_COLOR", "1")
                .timeout(Duration::from_secs(30))
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    child.signal("CONT");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    let rows: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let row = rows.as_array().unwrap().iter().find(|r| r["node"] == id.as_str()).unwrap_or_else(|| panic!("{rows}"));
    assert_eq!((row["healthy"].as_bool(), row["status"].as_str()), (Some(false), Some("error")), "{row}");
    assert!(row["error"].as_str().is_some_and(|e| e.contains("not answering")), "{row}");
    drop(child);
}

async fn gateway_ready_follows_the_registry_and_the_checks(url: String) {
    use micro::gateway::{Gateway, GatewayConfig};
    use micro::health::HealthChecks;
    use micro::registry::RegistryOptions;

    micro::metrics::prometheus::install().unwrap();
    let up = Arc::new(AtomicBool::new(true));
    let checks =
        HealthChecks::new().check("upstream", flag_check(&up)).interval(Duration::from_millis(50)).start().await;
    // A long first discovery window: the registry has not synced while the test first looks.
    let registry = RegistryOptions::default().discover_window(Duration::from_secs(3));
    let client = Client::builder().transport(&url).registry_options(registry).connect().await.unwrap();
    let gateway = Gateway::new(client, GatewayConfig::default()).health(checks);
    let server = actix_web::HttpServer::new(move || gateway.app()).workers(1).bind("127.0.0.1:0").unwrap();
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    let http = awc::Client::builder().timeout(Duration::from_secs(20)).finish();
    let get = |path: &'static str| {
        let http = http.clone();
        async move {
            let mut rsp = http.get(format!("http://{addr}{path}")).send().await.unwrap();
            // `/metrics` holds every metric of this test process (one recorder per process): far
            // over awc's default 2 MiB once the whole suite has run.
            let body = rsp.body().limit(256 << 20).await.unwrap();
            (rsp.status().as_u16(), body)
        }
    };
    let ready = || async {
        let (status, body) = get("/ready").await;
        (status, serde_json::from_slice::<serde_json::Value>(&body).unwrap())
    };
    let (status, body) = ready().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["registry"], "syncing");
    assert_eq!(get("/health").await.0, 200, "liveness does not wait for readiness");

    let body = wait_for("ready", WAIT, || async {
        let (status, body) = ready().await;
        (status == 200).then_some(body)
    })
    .await;
    assert_eq!((body["status"].as_str(), body["broker"].as_str()), (Some("ready"), Some("connected")));

    up.store(false, Ordering::SeqCst);
    let body = wait_for("not ready while the check fails", WAIT, || async {
        let (status, body) = ready().await;
        (status == 503).then_some(body)
    })
    .await;
    assert_eq!(body["checks"][0]["reason"], "database unreachable", "{body}");
    up.store(true, Ordering::SeqCst);
    wait_for("ready again", WAIT, || async { (ready().await.0 == 200).then_some(()) }).await;

    // The gateway serves the process's metrics too.
    let (status, text) = get("/metrics").await;
    assert_eq!(status, 200);
    let text = String::from_utf8(text.to_vec()).unwrap();
    assert!(text.contains("# TYPE micro_registry_nodes gauge"), "{text}");
    crate::metrics::promtool_check(&text);
    handle.stop(true).await;
}
