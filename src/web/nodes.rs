//! `GET /api/nodes/{name}`: every node of a service asked for `Debug.Health` and
//! `Debug.Stats`, each on its own address, all at once (what `micro health` and `micro stats`
//! do), for the service page to refresh. `GET /api/health`: every node of every service asked
//! for `Debug.Health` only, for the services list's health column.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde::Serialize;

use super::WebState;
use crate::client::{CallOptions, Client};
use crate::gateway::{valid_name, GatewayError};

/// Time each node has to answer the page's probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What one node said.
#[derive(Debug, Serialize)]
struct NodeReport {
    id: String,
    version: String,
    address: String,
    health: Answer,
    stats: Answer,
}

/// A node's answer, or why there is none.
#[derive(Debug, Serialize)]
#[serde(rename_all = "lowercase")]
enum Answer {
    Ok(serde_json::Value),
    Error(String),
}

async fn ask(client: &Client, service: &str, endpoint: &str, node: &str) -> Answer {
    // Pinned to the node; no retry, so the page shows what this node says within the timeout.
    let opts = CallOptions::new().node(node).timeout(PROBE_TIMEOUT).idempotent(false);
    match client.call_with::<_, serde_json::Value, _>(service, endpoint, &(), opts).await {
        Ok(v) => Answer::Ok(v),
        Err(e) => Answer::Error(e.to_string()),
    }
}

/// How a service's nodes answered `Debug.Health`.
#[derive(Debug, Default, Serialize)]
struct ServiceHealth {
    /// Nodes that answered `ok`.
    ok: usize,
    /// Nodes asked.
    total: usize,
    /// The others: node id and what it said (its status, or the error).
    failing: Vec<(String, String)>,
}

/// `GET /api/health`: `{service: {ok, total, failing}}`, every node asked at once. The list
/// page asks every few seconds while it is open; each probe is one small request per node.
pub(crate) async fn health(state: web::Data<WebState>) -> Result<HttpResponse, GatewayError> {
    let client = &state.client;
    let records = client.registry().list_services().await?;
    let asks = records.iter().flat_map(|r| r.nodes.iter().map(move |n| (r, n))).map(|(r, n)| async move {
        let answer = ask(client, &r.name, "Debug.Health", &n.id).await;
        (r.name.as_str(), n.id.as_str(), answer)
    });
    let mut out: std::collections::BTreeMap<&str, ServiceHealth> = Default::default();
    for (service, node, answer) in futures::future::join_all(asks).await {
        let entry = out.entry(service).or_default();
        entry.total += 1;
        match answer {
            Answer::Ok(v) if v["status"] == "ok" => entry.ok += 1,
            Answer::Ok(v) => entry.failing.push((node.to_string(), v["status"].as_str().unwrap_or("?").to_string())),
            Answer::Error(e) => entry.failing.push((node.to_string(), e)),
        }
    }
    Ok(HttpResponse::Ok().json(out))
}

pub(crate) async fn probe(state: web::Data<WebState>, name: web::Path<String>) -> Result<HttpResponse, GatewayError> {
    valid_name("service", &name)?;
    let client = &state.client;
    let name = name.as_str();
    let records = client.registry().get_service(name).await?;
    let asks = records.iter().flat_map(|r| r.nodes.iter().map(move |n| (r, n))).map(|(r, n)| async move {
        let (health, stats) =
            futures::join!(ask(client, name, "Debug.Health", &n.id), ask(client, name, "Debug.Stats", &n.id));
        NodeReport { id: n.id.clone(), version: r.version.clone(), address: n.address.clone(), health, stats }
    });
    let reports = futures::future::join_all(asks).await;
    Ok(HttpResponse::Ok().json(reports))
}
