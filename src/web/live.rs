//! What changes while a page is open, as server-sent events: registry changes (only the node
//! that changed, never the whole list) and the events of a subscribed topic pattern.

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

use super::WebState;
use crate::broker::{Event, SubscribeOptions};
use crate::gateway::GatewayError;
use crate::registry::{ServiceRecord, WatchAction, WatchEvent};
use crate::subject;

/// How often an idle stream says it is alive, so proxies and browsers keep it open.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// A service as the list shows it: each version with the ids of its nodes.
#[derive(Debug, Serialize)]
pub(crate) struct Summary {
    pub(crate) name: String,
    pub(crate) versions: BTreeMap<String, Vec<String>>,
}

impl Summary {
    pub(crate) fn nodes(&self) -> usize {
        self.versions.values().map(Vec::len).sum()
    }
}

/// Records (sorted by name, as the registry lists them) grouped per service.
pub(crate) fn summarize(records: &[ServiceRecord]) -> Vec<Summary> {
    let mut out: Vec<Summary> = Vec::new();
    for r in records {
        let ids = r.nodes.iter().map(|n| n.id.clone()).collect();
        match out.last_mut() {
            Some(s) if s.name == r.name => {
                s.versions.insert(r.version.clone(), ids);
            }
            _ => out.push(Summary { name: r.name.clone(), versions: BTreeMap::from([(r.version.clone(), ids)]) }),
        }
    }
    out
}

/// `GET /api/services`: the list as JSON, for a page that reconnects after missing changes.
pub(crate) async fn snapshot(state: web::Data<WebState>) -> Result<HttpResponse, GatewayError> {
    let records = state.client.registry().list_services().await?;
    Ok(HttpResponse::Ok().json(summarize(&records)))
}

/// One registry change as the services page receives it.
#[derive(Debug, Serialize)]
pub(crate) struct Change<'a> {
    action: &'static str,
    service: &'a str,
    version: &'a str,
    node: &'a str,
}

pub(crate) fn change_json(e: &WatchEvent) -> String {
    let action = match e.action {
        WatchAction::Added => "added",
        WatchAction::Removed => "removed",
        _ => "updated",
    };
    let node = e.service.nodes.first().map_or("", |n| n.id.as_str());
    let change = Change { action, service: &e.service.name, version: &e.service.version, node };
    serde_json::to_string(&change).unwrap_or_default()
}

/// `GET /live/registry`: every registry change from now on, one `data:` line each.
pub(crate) async fn registry(state: web::Data<WebState>) -> Result<HttpResponse, GatewayError> {
    let watcher = state.client.registry().watch().await?;
    Ok(sse(watcher.map(|e| change_json(&e)), &state))
}

/// `GET /live/events?topic=PATTERN` query.
#[derive(Debug, Deserialize)]
pub(crate) struct EventsQuery {
    topic: String,
}

/// An event as the console shows it: its headers and its payload as JSON.
#[derive(Debug, Serialize)]
struct EventLine<'a> {
    id: &'a str,
    topic: &'a str,
    timestamp: u64,
    publisher: Option<&'a str>,
    metadata: BTreeMap<&'a str, &'a str>,
    data: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn event_json(e: &Event) -> String {
    let (data, error) = match e.decode::<serde_json::Value>() {
        Ok(v) => (v, None),
        Err(err) => (serde_json::Value::Null, Some(format!("payload not decodable: {err}"))),
    };
    let line = EventLine {
        id: &e.id,
        topic: &e.topic,
        timestamp: e.timestamp,
        publisher: e.publisher.as_deref(),
        metadata: e.metadata.iter().collect(),
        data,
        error,
    };
    serde_json::to_string(&line).unwrap_or_default()
}

/// `GET /live/events?topic=PATTERN`: every event on the pattern from now on (a broadcast
/// subscription: the console takes no events from the services' queue groups).
pub(crate) async fn events(
    state: web::Data<WebState>,
    query: Result<web::Query<EventsQuery>, actix_web::Error>,
) -> Result<HttpResponse, GatewayError> {
    state.may_act()?;
    let query = query.map_err(|e| GatewayError::bad_request(format!("give a topic pattern: {e}")))?;
    if !subject::is_valid(&query.topic, true) {
        return Err(GatewayError::bad_request(format!(
            "invalid topic pattern {:?}: dotted names, `*` for one part, `>` for the rest",
            query.topic
        )));
    }
    let stream = state.client.broker().subscribe(&query.topic, SubscribeOptions::broadcast()).await?;
    Ok(sse(stream.map(|e| event_json(&e)), &state))
}

/// A `text/event-stream` response of `items`, with a keep-alive comment while idle. It ends
/// when `items` does, or when the dashboard closes its streams.
pub(crate) fn sse(items: impl Stream<Item = String> + 'static, state: &WebState) -> HttpResponse {
    let mut closing = state.closing.subscribe();
    let closed = async move {
        let _ = closing.wait_for(|closed| *closed).await;
    };
    let data = items.map(|s| Some(Bytes::from(format!("data: {s}\n\n")))).chain(futures::stream::once(async { None }));
    let keepalive = futures::stream::unfold((), |()| async {
        tokio::time::sleep(KEEPALIVE).await;
        Some((Some(Bytes::from_static(b": keepalive\n\n")), ()))
    });
    let opening = futures::stream::once(async { Some(Bytes::from_static(b"retry: 2000\n: open\n\n")) });
    let body = opening
        .chain(futures::stream::select(data, keepalive))
        .take_while(|b| futures::future::ready(b.is_some()))
        .filter_map(|b| futures::future::ready(b.map(Ok::<_, std::convert::Infallible>)))
        .take_until(closed);
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("x-accel-buffering", "no"))
        .streaming(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Node;

    #[test]
    fn records_group_per_service() {
        let mut a1 = ServiceRecord::new("a", "1");
        a1.nodes.push(Node { id: "n1".into(), ..Default::default() });
        let mut a2 = ServiceRecord::new("a", "2");
        a2.nodes.push(Node { id: "n2".into(), ..Default::default() });
        let b = ServiceRecord::new("b", "1");
        let s = summarize(&[a1.clone(), a2, b]);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].nodes(), s[1].nodes()), (2, 0));
        let change = change_json(&WatchEvent { action: WatchAction::Removed, service: a1 });
        assert_eq!(change, r#"{"action":"removed","service":"a","version":"1","node":"n1"}"#);
    }
}
