//! The NATS services API (ADR-32, the "micro" services of the NATS ecosystem): its messages, how
//! this toolkit's names map onto its rules, and discovery of every service that speaks it.
//!
//! On NATS every node answers `$SRV.PING`, `$SRV.INFO` and `$SRV.STATS` (for all services,
//! `.<name>`, and `.<name>.<id>`), so `nats micro ls` and other tools list, inspect and call our
//! services; and [`discover`] finds services written with another library (nats.go, nats-py's
//! `nats.micro`, ...) so that `micro services` and `micro call` reach them.
//!
//! ADR-32 names allow only `[A-Za-z0-9_-]` and versions must be SemVer, so:
//!
//! ```
//! use micro::registry::nats_micro::{service_name, semver};
//! assert_eq!(service_name("go.micro.srv.greeter"), "go_micro_srv_greeter");
//! assert_eq!(semver("1.2.3"), "1.2.3");
//! assert_eq!(semver("v1.2.3"), "1.2.3");
//! assert_eq!(semver("latest"), "0.0.0-latest");
//! assert_eq!(semver(""), "0.0.0");
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Endpoint, Node, ServiceRecord};
use crate::error::Result;
use crate::message::Message;
use crate::transport::Transport;

/// Prefix of the API's subjects.
pub const PREFIX: &str = "$SRV";
/// `type` of a `PING` response.
pub const PING_RESPONSE: &str = "io.nats.micro.v1.ping_response";
/// `type` of an `INFO` response.
pub const INFO_RESPONSE: &str = "io.nats.micro.v1.info_response";
/// `type` of a `STATS` response.
pub const STATS_RESPONSE: &str = "io.nats.micro.v1.stats_response";

/// Metadata key holding this toolkit's own (dotted) service name.
pub const META_SERVICE: &str = "micro.service";
/// Metadata key holding this toolkit's own version string, when it is not SemVer.
pub const META_VERSION: &str = "micro.version";
/// Metadata key holding this toolkit's node id.
pub const META_NODE: &str = "micro.node";
/// Endpoint metadata key holding this toolkit's endpoint name (`Say.Hello`).
pub const META_ENDPOINT: &str = "micro.endpoint";
/// Registry endpoint metadata key holding, for a service found through this API, the subject its
/// endpoint listens on (a client sends requests there).
pub const META_SUBJECT: &str = "nats.subject";
/// Registry service metadata key marking a service found through this API that is not one of
/// ours (`"nats-micro"`).
pub const META_SOURCE: &str = "source";

/// A service name as ADR-32 allows it: every character other than `[A-Za-z0-9_-]` becomes `_`.
pub fn service_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '_' }).collect()
}

/// A version as ADR-32 requires it (SemVer 2.0): a SemVer version as is (without a leading `v`);
/// anything else as a pre-release of `0.0.0` (`latest` → `0.0.0-latest`; nothing → `0.0.0`).
pub fn semver(version: &str) -> String {
    let bare = version.strip_prefix(['v', 'V']).unwrap_or(version);
    if semver::Version::parse(bare).is_ok() {
        return bare.to_string();
    }
    let ident: String = version.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect();
    match ident.as_str() {
        "" => "0.0.0".to_string(),
        // A numeric pre-release identifier may not have a leading zero: make it alphanumeric.
        s if s.bytes().all(|b| b.is_ascii_digit()) => format!("0.0.0-v{s}"),
        s => format!("0.0.0-{s}"),
    }
}

/// `PING`'s answer, and the fields every answer starts with.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PingResponse {
    /// `io.nats.micro.v1.ping_response`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The service's name (ADR-32 form).
    pub name: String,
    /// This instance's id.
    pub id: String,
    /// SemVer version.
    pub version: String,
    /// Free-form metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// One endpoint in an `INFO` answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointInfo {
    /// The endpoint's name.
    pub name: String,
    /// The subject it listens on.
    pub subject: String,
    /// Its queue group (empty when it has none).
    #[serde(default)]
    pub queue_group: String,
    /// Endpoint metadata.
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: BTreeMap<String, String>,
}

/// `INFO`'s answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InfoResponse {
    /// `io.nats.micro.v1.info_response`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The service's name (ADR-32 form).
    pub name: String,
    /// This instance's id.
    pub id: String,
    /// SemVer version.
    pub version: String,
    /// Free-form metadata.
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: BTreeMap<String, String>,
    /// What the service does.
    #[serde(default)]
    pub description: String,
    /// Its endpoints.
    #[serde(default, deserialize_with = "null_as_default")]
    pub endpoints: Vec<EndpointInfo>,
}

/// One endpoint in a `STATS` answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointStats {
    /// The endpoint's name.
    pub name: String,
    /// The subject it listens on.
    pub subject: String,
    /// Its queue group.
    #[serde(default)]
    pub queue_group: String,
    /// Requests received.
    pub num_requests: u64,
    /// Requests answered with an error.
    pub num_errors: u64,
    /// The last error (`<code>:<detail>`), empty when there was none.
    #[serde(default)]
    pub last_error: String,
    /// Total time spent handling requests, in nanoseconds.
    pub processing_time: u64,
    /// `processing_time / num_requests`, in nanoseconds (0 without requests).
    pub average_processing_time: u64,
}

/// `STATS`'s answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsResponse {
    /// `io.nats.micro.v1.stats_response`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The service's name (ADR-32 form).
    pub name: String,
    /// This instance's id.
    pub id: String,
    /// SemVer version.
    pub version: String,
    /// Free-form metadata.
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: BTreeMap<String, String>,
    /// Per-endpoint counters.
    #[serde(default, deserialize_with = "null_as_default")]
    pub endpoints: Vec<EndpointStats>,
    /// When the instance started (RFC 3339, UTC).
    pub started: String,
}

/// Some libraries send `null` for an empty map or list.
fn null_as_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl InfoResponse {
    /// True when the instance is a node of this toolkit (it says so in its metadata).
    pub fn is_ours(&self) -> bool {
        self.metadata.contains_key(META_SERVICE)
    }

    /// The instance as a registry record: one node whose endpoints carry their subjects
    /// ([`META_SUBJECT`]), marked with [`META_SOURCE`] = `nats-micro`.
    pub fn to_record(&self) -> ServiceRecord {
        let mut record = ServiceRecord::new(&self.name, &self.version);
        record.metadata.insert(META_SOURCE.into(), "nats-micro".into());
        if !self.description.is_empty() {
            record.metadata.insert("description".into(), self.description.clone());
        }
        for e in &self.endpoints {
            let mut metadata = e.metadata.clone();
            metadata.insert(META_SUBJECT.into(), e.subject.clone());
            if !e.queue_group.is_empty() {
                metadata.insert("nats.queue_group".into(), e.queue_group.clone());
            }
            record.endpoints.push(Endpoint { name: e.name.clone(), metadata });
        }
        record.nodes.push(Node { id: self.id.clone(), address: String::new(), metadata: self.metadata.clone() });
        record
    }
}

/// Asks every service on the connection for its `INFO` and gathers the answers that arrive
/// within `window`. Transports other than NATS have no such API: an
/// [`ErrorKind::Config`](crate::ErrorKind::Config) error. Answers that do not decode are skipped.
pub async fn discover(transport: &dyn Transport, window: Duration) -> Result<Vec<InfoResponse>> {
    let replies = transport.gather(&format!("{PREFIX}.INFO"), Message::default(), window).await?;
    Ok(replies.iter().filter_map(|m| serde_json::from_slice::<InfoResponse>(&m.body).ok()).collect())
}

/// Services found through the API that are not this toolkit's own nodes, merged into registry
/// records: one per (name, version), with every instance as a node.
pub fn foreign_records(found: &[InfoResponse]) -> Vec<ServiceRecord> {
    let mut out: Vec<ServiceRecord> = Vec::new();
    for info in found.iter().filter(|i| !i.is_ours()) {
        let record = info.to_record();
        match out.iter_mut().find(|r| r.name == record.name && r.version == record.version) {
            Some(existing) => existing.nodes.extend(record.nodes),
            None => out.push(record),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_become_semver() {
        assert_eq!(semver("2.0.0-rc.1+build.5"), "2.0.0-rc.1+build.5");
        assert_eq!(semver("1.2"), "0.0.0-1-2");
        assert_eq!(semver("007"), "0.0.0-v007");
        assert_eq!(semver("beta 2"), "0.0.0-beta-2");
        for v in ["latest", "1.2", "007", "", "x/y", "v1.0.0"] {
            assert!(semver::Version::parse(&semver(v)).is_ok(), "{v:?} → {:?}", semver(v));
        }
    }

    #[test]
    fn names_keep_to_the_api_alphabet() {
        assert_eq!(service_name("a-b_c.d"), "a-b_c_d");
    }

    #[test]
    fn answers_of_other_libraries_decode_with_nulls() {
        let info: InfoResponse = serde_json::from_str(
            r#"{"type":"io.nats.micro.v1.info_response","name":"py","id":"x1","version":"1.0.0",
                "metadata":null,"description":"","endpoints":[{"name":"hello","subject":"py.hello",
                "queue_group":"q","metadata":null}]}"#,
        )
        .unwrap();
        assert!(!info.is_ours());
        let r = info.to_record();
        assert_eq!(r.endpoint("hello").unwrap().metadata[META_SUBJECT], "py.hello");
    }
}
