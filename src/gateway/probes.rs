//! The gateway's probes: `/health` (liveness), `/ready` (readiness) and `/metrics`.

use actix_web::{web, HttpResponse};

use super::State;

/// Liveness: the gateway answers.
pub(super) async fn health(state: web::Data<State>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok", "transport": state.client.transport().name()}))
}

/// Readiness: the broker is connected, the registry has synced (its first discovery window
/// ended) and the gateway's health checks pass; 503 with what is missing otherwise.
pub(super) async fn ready(state: web::Data<State>) -> HttpResponse {
    let broker = state.client.transport().connection().is_none_or(|c| c.borrow().connected);
    let registry = state.client.registry().is_synced();
    let checks = state.health.as_ref().map(|h| h.report()).unwrap_or_default();
    let checks_pass = checks.iter().all(|c| c.healthy);
    let ready = broker && registry && checks_pass;
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not ready" },
        "broker": if broker { "connected" } else { "disconnected" },
        "registry": if registry { "synced" } else { "syncing" },
        "checks": checks,
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// The process's metrics in the Prometheus text format.
#[cfg(feature = "prometheus")]
pub(super) async fn metrics() -> HttpResponse {
    match crate::metrics::prometheus::render() {
        Ok(text) => HttpResponse::Ok().content_type(crate::metrics::prometheus::CONTENT_TYPE).body(text),
        Err(e) => HttpResponse::ServiceUnavailable().content_type("text/plain").body(e.to_string()),
    }
}
