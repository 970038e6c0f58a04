//! The NATS services API on a node (see [`micro::registry::nats_micro`](crate::registry::nats_micro)):
//! `$SRV.PING|INFO|STATS`, for all services, `.<name>` and `.<name>.<id>`, answered in JSON from
//! the server's endpoints and their counters. Served on NATS only.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::watch;

use super::{serve_loop, Route, Server};
use crate::error::Result;
use crate::message::Message;
use crate::registry::nats_micro::{
    self as api, EndpointInfo, EndpointStats, InfoResponse, PingResponse, StatsResponse,
};
use crate::transport::{Incoming, Subscription, Transport};

/// Who this node is in the API's terms.
pub(crate) struct Identity {
    name: String,
    id: String,
    version: String,
    metadata: BTreeMap<String, String>,
    queue_group: String,
    shared: String,
}

impl Identity {
    /// A node's identity: the ADR-32 forms of its service name and version, its node id's UUID
    /// as instance id, and the toolkit's names in the metadata.
    pub(crate) fn new(service: &str, version: &str, node_id: &str, node_meta: &BTreeMap<String, String>) -> Identity {
        let mut metadata = node_meta.clone();
        metadata.insert(api::META_SERVICE.into(), service.into());
        metadata.insert(api::META_NODE.into(), node_id.into());
        let semver = api::semver(version);
        if semver != version {
            metadata.insert(api::META_VERSION.into(), version.into());
        }
        let uuid = node_id.strip_prefix(service).and_then(|s| s.strip_prefix('-')).unwrap_or(node_id);
        let shared = crate::subject::service(service);
        Identity {
            name: api::service_name(service),
            id: uuid.replace('-', ""),
            version: semver,
            metadata,
            queue_group: shared.clone(),
            shared,
        }
    }

    /// The nine subjects a node answers.
    fn subjects(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(9);
        for verb in ["PING", "INFO", "STATS"] {
            out.push(format!("{}.{verb}", api::PREFIX));
            out.push(format!("{}.{verb}.{}", api::PREFIX, self.name));
            out.push(format!("{}.{verb}.{}.{}", api::PREFIX, self.name, self.id));
        }
        out
    }

    fn ping(&self, kind: &str) -> PingResponse {
        PingResponse {
            kind: kind.into(),
            name: self.name.clone(),
            id: self.id.clone(),
            version: self.version.clone(),
            metadata: self.metadata.clone(),
        }
    }

    fn endpoint(&self, route: &Route) -> EndpointInfo {
        let mut metadata = route.metadata.clone();
        metadata.insert(api::META_ENDPOINT.into(), route.name.to_string());
        EndpointInfo {
            name: api::service_name(&route.name),
            subject: crate::subject::request(&self.shared, &route.name),
            queue_group: self.queue_group.clone(),
            metadata,
        }
    }
}

/// Subscribes the API's subjects and answers them until `stop`, like the request loops.
pub(crate) async fn serve(
    transport: &Arc<dyn Transport>,
    server: &Rc<Server>,
    identity: Identity,
    stop: watch::Receiver<bool>,
) -> Result<Vec<actix_rt::task::JoinHandle<()>>> {
    let mut subs: Vec<Subscription> = Vec::with_capacity(9);
    for subject in identity.subjects() {
        subs.push(transport.subscribe(&subject, None).await?);
    }
    let identity = Rc::new(identity);
    Ok(subs
        .into_iter()
        .map(|sub| {
            let (server, identity) = (server.clone(), identity.clone());
            actix_rt::spawn(serve_loop(sub, stop.clone(), move |incoming| answer(&server, &identity, incoming)))
        })
        .collect())
}

fn answer(server: &Server, identity: &Identity, incoming: Incoming) {
    let Some(reply) = incoming.reply else { return };
    let verb = incoming.subject.split('.').nth(1).unwrap_or_default();
    let mut routes: Vec<&Route> = server.routes().collect();
    routes.sort_by(|a, b| a.name.cmp(&b.name));
    let body = match verb {
        "PING" => serde_json::to_vec(&identity.ping(api::PING_RESPONSE)),
        "INFO" => {
            let p = identity.ping(api::INFO_RESPONSE);
            serde_json::to_vec(&InfoResponse {
                kind: p.kind,
                name: p.name,
                id: p.id,
                version: p.version,
                metadata: p.metadata,
                description: String::new(),
                endpoints: routes.iter().map(|r| identity.endpoint(r)).collect(),
            })
        }
        "STATS" => {
            let p = identity.ping(api::STATS_RESPONSE);
            let started = UNIX_EPOCH + Duration::from_millis(server.stats.started_millis());
            serde_json::to_vec(&StatsResponse {
                kind: p.kind,
                name: p.name,
                id: p.id,
                version: p.version,
                metadata: p.metadata,
                endpoints: routes.iter().map(|r| stats(identity, r)).collect(),
                started: humantime::format_rfc3339_millis(started).to_string(),
            })
        }
        _ => return,
    };
    match body {
        Ok(body) => {
            actix_rt::spawn(async move {
                if let Err(e) = reply.send(Message::new(Bytes::from(body))).await {
                    tracing::debug!(error = %e, "could not answer a NATS services API request");
                }
            });
        }
        Err(e) => tracing::warn!(error = %e, "could not encode a NATS services API answer"),
    }
}

fn stats(identity: &Identity, route: &Route) -> EndpointStats {
    let info = identity.endpoint(route);
    let s = &route.stats;
    let (requests, processing) = (s.requests.get(), s.processing_ns.get());
    EndpointStats {
        name: info.name,
        subject: info.subject,
        queue_group: info.queue_group,
        num_requests: requests,
        num_errors: s.errors.get(),
        last_error: s.last_error.borrow().clone(),
        processing_time: processing,
        average_processing_time: processing.checked_div(requests).unwrap_or(0),
    }
}
