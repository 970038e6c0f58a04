//! `GET /api/nodes/{name}`: every node of a service asked for `Debug.Health` and
//! `Debug.Stats`, each on its own address, all at once (what `micro health` and `micro stats`
//! do), for the service page to refresh.

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
