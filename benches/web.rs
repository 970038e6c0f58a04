//! The web dashboard under a registry of 50 services × 3 nodes (simulated: records announced on
//! a `memory://` bus, no processes): the server time of the services page against a bare
//! actix-web handler that lists the same registry as JSON, and the size of what the live view
//! sends when one node starts, against the size of the page.
//!
//! `cargo bench --features web --bench web` (`BENCH_RENDERS=2000 BENCH_ROUNDS=5` by default; a
//! smoke run under `cargo test --benches`). The last lines are machine-readable:
//! `web services_page p50_us=… raw_p50_us=… ratio=…` and `web live change_bytes=… page_bytes=…`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix_web::{test, web, App, HttpResponse, HttpServer};
use futures::StreamExt;
use micro::prelude::*;
use micro::registry::{Node, Registry, RegistryOptions, ServiceRecord};
use micro::web::{Web, WebConfig};

mod common;
use common::*;

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

const SERVICES: usize = 50;
const NODES: usize = 3;

fn record(service: usize, node: usize, prefix: &str) -> ServiceRecord {
    let mut r = ServiceRecord::new(format!("{prefix}.svc{service:02}"), "1.0.0");
    r.endpoints = ["Say.Hello", "Say.Bye", "Debug.Health", "Debug.Stats"]
        .iter()
        .map(|e| micro::registry::Endpoint { name: e.to_string(), metadata: BTreeMap::new() })
        .collect();
    let id = format!("{prefix}.svc{service:02}-node{node}");
    let metadata = BTreeMap::from([("transport".to_string(), "memory".to_string())]);
    r.nodes.push(Node { address: format!("micro.node.{id}"), id, metadata });
    r
}

/// The baseline: the same registry listing, as JSON, from a bare handler.
async fn raw(client: web::Data<Client>) -> HttpResponse {
    match client.registry().list_services().await {
        Ok(records) => HttpResponse::Ok().json(records),
        Err(e) => HttpResponse::InternalServerError().body(e.to_string()),
    }
}

#[micro::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let full = std::env::args().any(|a| a == "--bench");
    let env = |var: &str, full_default: usize, smoke_default: usize| {
        std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(if full { full_default } else { smoke_default })
    };
    let (renders, rounds) = (env("BENCH_RENDERS", 2000, 20), env("BENCH_ROUNDS", 5, 1));
    let url = micro::test_util::memory_url();
    let prefix = micro::test_util::unique("webbench");

    // The simulated system: 150 node records announced by a registry of their own.
    let nodes = Registry::start(micro::transport::connect(&url).await?, RegistryOptions::default()).await?;
    for s in 0..SERVICES {
        for n in 0..NODES {
            nodes.register(record(s, n, &prefix)).await?;
        }
    }
    let client = Client::connect(&url).await?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let listed = client.registry().list_services().await?;
        if listed.iter().map(|r| r.nodes.len()).sum::<usize>() == SERVICES * NODES {
            break;
        }
        assert!(Instant::now() < deadline, "the dashboard's registry never saw the 150 nodes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let dashboard = Web::new(client.clone(), WebConfig::default());
    let page_app = test::init_service(dashboard.app()).await;
    let raw_app =
        test::init_service(App::new().app_data(web::Data::new(client.clone())).route("/", web::get().to(raw))).await;

    // Only a correct page counts: every service, with its 3 nodes.
    let page = test::call_and_read_body(&page_app, test::TestRequest::get().uri("/").to_request()).await;
    let text = String::from_utf8_lossy(&page);
    let shown = (0..SERVICES)
        .filter(|s| {
            text.contains(&format!("<td class=\"nodes\">{NODES}</td>")) && text.contains(&format!("{prefix}.svc{s:02}"))
        })
        .count();
    if shown != SERVICES {
        println!("web services_page ratio=none (the page shows {shown} of {SERVICES} services)");
        std::process::exit(1);
    }

    let mut page_p50 = Vec::new();
    let mut raw_p50 = Vec::new();
    for round in 0..rounds {
        let measure = |app_is_page: bool| {
            let page_app = &page_app;
            let raw_app = &raw_app;
            async move {
                let mut times = Vec::with_capacity(renders);
                for _ in 0..renders {
                    let req = test::TestRequest::get().uri("/").to_request();
                    let started = Instant::now();
                    let body = if app_is_page {
                        test::call_and_read_body(page_app, req).await
                    } else {
                        test::call_and_read_body(raw_app, req).await
                    };
                    times.push(started.elapsed().as_secs_f64() * 1e6);
                    assert!(!body.is_empty());
                }
                median(times)
            }
        };
        // Alternate which side goes first, so drift hits both alike.
        let (p, r) = if round % 2 == 0 {
            let p = measure(true).await;
            (p, measure(false).await)
        } else {
            let r = measure(false).await;
            (measure(true).await, r)
        };
        println!("round {round}: services page p50 {p:.0} µs, raw JSON listing p50 {r:.0} µs");
        page_p50.push(p);
        raw_p50.push(r);
    }
    let (p, r) = (median(page_p50), median(raw_p50));

    // The live view: what travels when one node starts, against the page.
    let server = HttpServer::new(move || dashboard.app()).workers(1).bind("127.0.0.1:0")?;
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    let mut live =
        awc::Client::new().get(format!("http://{addr}/live/registry")).send().await.map_err(|e| e.to_string())?;
    nodes.register(record(SERVICES, 0, &prefix)).await?;
    let mut seen = String::new();
    let change = loop {
        let chunk = tokio::time::timeout(Duration::from_secs(15), live.next()).await;
        let Ok(Some(Ok(chunk))) = chunk else {
            println!("web live ratio=none (no change arrived: {seen:?})");
            std::process::exit(1);
        };
        seen.push_str(&String::from_utf8_lossy(&chunk));
        if let Some(line) = seen.lines().find(|l| l.starts_with("data: ")) {
            break format!("{line}\n\n");
        }
    };
    if change.contains(&format!("{prefix}.svc00")) {
        println!("web live ratio=none (the change carries other services: {change})");
        std::process::exit(1);
    }
    handle.stop(false).await;
    nodes.stop();

    println!("\n{SERVICES} services × {NODES} nodes, {renders} renders × {rounds} round(s), medians over rounds");
    println!("web services_page p50_us={p:.0} raw_p50_us={r:.0} ratio={:.2}", p / r);
    println!("web live change_bytes={} page_bytes={}", change.len(), page.len());
    Ok(())
}
