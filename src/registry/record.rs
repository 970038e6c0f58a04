//! Service records and the gossip messages that carry them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A service as the registry knows it: one version of a named service and its nodes.
///
/// ```
/// let s = micro::registry::ServiceRecord::new("go.micro.srv.greeter", "1.0.0");
/// assert!(s.nodes.is_empty());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecord {
    /// Dotted service name (`go.micro.srv.greeter`).
    pub name: String,
    /// Version string (`1.0.0`).
    #[serde(default)]
    pub version: String,
    /// Service-level metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// The endpoints it serves.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// Its running nodes.
    #[serde(default)]
    pub nodes: Vec<Node>,
}

impl ServiceRecord {
    /// A record with a name and version and nothing else.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> ServiceRecord {
        ServiceRecord { name: name.into(), version: version.into(), ..Default::default() }
    }

    /// The endpoint of this name.
    pub fn endpoint(&self, name: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.name == name)
    }
}

/// One running instance of a service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Unique node id.
    pub id: String,
    /// Where the node takes requests: its subject on the transport (`micro.node.<id>`).
    pub address: String,
    /// Node metadata (`transport`, `protocol`, `server`, `subscriptions`, plus user labels).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// An endpoint a service serves.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// `Handler.Method`.
    pub name: String,
    /// Endpoint metadata; `idempotent: "true"` lets clients retry it after a timeout.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

impl Endpoint {
    /// True when the endpoint is marked idempotent.
    pub fn is_idempotent(&self) -> bool {
        self.metadata.get("idempotent").is_some_and(|v| v == "true")
    }
}

/// What an announcement does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// A node is up (first announcement and every heartbeat).
    Register,
    /// A node is going away.
    Deregister,
}

/// A registry announcement on `micro.registry.announce` (or a discovery answer).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// Register or deregister.
    pub action: Action,
    /// How long the record stays valid without another announcement, in milliseconds.
    #[serde(default)]
    pub ttl: u64,
    /// The service record with exactly one node: the announcing one.
    pub service: ServiceRecord,
}

/// A discovery request on `micro.registry.discover`: every node of `service` (or of every
/// service, when absent) publishes its registration to `reply`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discover {
    /// Only this service's nodes should answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The subject answers go to.
    pub reply: String,
    /// Answer with every record the registry holds (with what is left of its TTL), not only
    /// its own nodes: how a fresh tool learns of a node that is registered but does not answer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub known: bool,
}

/// What happened to a service's node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum WatchAction {
    /// A node appeared.
    Added,
    /// A node's record changed (version, metadata, endpoints, address).
    Updated,
    /// A node deregistered or its TTL ran out.
    Removed,
}

/// A registry change, as streamed by [`Registry::watch`](super::Registry::watch).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// What happened.
    pub action: WatchAction,
    /// The service record with the one node concerned.
    pub service: ServiceRecord,
}
