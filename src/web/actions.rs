//! What the dashboard does on the system: `POST /api/call` (the call form) and
//! `POST /api/publish` (the event console). Both are off unless
//! [`WebConfig::actions_enabled`](super::WebConfig::actions_enabled).

use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse, ResponseError};
use bytes::Bytes;
use serde::Deserialize;

use super::WebState;
use crate::broker::PublishOptions;
use crate::client::CallOptions;
use crate::codec::Codec;
use crate::gateway::{valid_name, GatewayError};
use crate::message::{new_id, Metadata};
use crate::subject;

/// The call form, as its script sends it: the request and the metadata as the JSON texts typed.
#[derive(Debug, Deserialize)]
struct CallForm {
    service: String,
    endpoint: String,
    #[serde(default)]
    request: String,
    #[serde(default)]
    metadata: String,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    node: Option<String>,
}

/// The event console's publish form.
#[derive(Debug, Deserialize)]
struct PublishForm {
    topic: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    metadata: String,
    #[serde(default)]
    durable: bool,
}

fn form<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, GatewayError> {
    serde_json::from_slice(body).map_err(|e| GatewayError::bad_request(format!("invalid form: {e}")))
}

/// A JSON text typed in the form (empty: `{}`).
fn json_text(field: &str, text: &str) -> Result<serde_json::Value, GatewayError> {
    if text.trim().is_empty() {
        return Ok(serde_json::json!({}));
    }
    serde_json::from_str(text).map_err(|e| GatewayError::bad_request(format!("the {field} is not valid JSON: {e}")))
}

/// Metadata typed as a JSON object of strings (empty: none).
fn metadata(text: &str) -> Result<Metadata, GatewayError> {
    if text.trim().is_empty() {
        return Ok(Metadata::new());
    }
    let map: std::collections::BTreeMap<String, String> = serde_json::from_str(text).map_err(|e| {
        GatewayError::bad_request(format!("the metadata is not a JSON object of strings ({{\"key\": \"value\"}}): {e}"))
    })?;
    Ok(map.into_iter().collect())
}

fn nonempty(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// `POST /api/call`: calls the endpoint and answers `{reply, latency_ms}`, or the error's HTTP
/// status with `{error: {id, code, detail, status}, latency_ms}`.
pub(crate) async fn call(state: web::Data<WebState>, body: Bytes) -> Result<HttpResponse, GatewayError> {
    state.may_act()?;
    let f: CallForm = form(&body)?;
    valid_name("service", &f.service)?;
    valid_name("endpoint", &f.endpoint)?;
    let request = json_text("request", &f.request)?;
    let mut opts = CallOptions::new().metadata_all(&metadata(&f.metadata)?);
    let timeout = f.timeout_ms.map_or(state.config.timeout, |ms| Duration::from_millis(ms).min(state.config.timeout));
    opts = opts.timeout(timeout);
    if let Some(v) = nonempty(f.version) {
        opts = opts.version(v);
    }
    if let Some(n) = nonempty(f.node) {
        opts = opts.node(n);
    }
    let bytes = Bytes::from(serde_json::to_vec(&request).unwrap_or_default());
    let started = Instant::now();
    let result = state.client.call_raw(&f.service, &f.endpoint, bytes, Codec::Json, opts).await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    match result.and_then(|r| r.to_json()) {
        Ok(json) => {
            let reply: serde_json::Value = serde_json::from_slice(&json).unwrap_or(serde_json::Value::Null);
            Ok(HttpResponse::Ok().json(serde_json::json!({"reply": reply, "latency_ms": latency_ms})))
        }
        Err(e) => {
            let e = GatewayError::from(e);
            Ok(HttpResponse::build(e.status_code())
                .json(serde_json::json!({"error": e.status(), "latency_ms": latency_ms})))
        }
    }
}

/// `POST /api/publish`: publishes the JSON body on the topic, durably if asked.
pub(crate) async fn publish(state: web::Data<WebState>, body: Bytes) -> Result<HttpResponse, GatewayError> {
    state.may_act()?;
    let f: PublishForm = form(&body)?;
    let topic = f.topic.trim();
    if !subject::is_valid(topic, false) {
        return Err(GatewayError::bad_request(format!("invalid topic {topic:?}: a dotted name, no wildcards")));
    }
    let event = json_text("event", &f.body)?;
    let id = new_id();
    let mut opts = PublishOptions::new().codec(Codec::Json).id(id.clone());
    opts.metadata = metadata(&f.metadata)?;
    if f.durable {
        opts = opts.durable();
    }
    let bytes = Bytes::from(serde_json::to_vec(&event).unwrap_or_default());
    state.client.broker().publish_raw(topic, bytes, Codec::Json, opts).await?;
    let status = if f.durable { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok(HttpResponse::build(status).json(serde_json::json!({"id": id, "topic": topic, "stored": f.durable})))
}
