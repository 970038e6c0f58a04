//! `micro health SERVICE` and `micro stats SERVICE`: ask every node, each on its own address.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use super::output::{self, Output, Spinner};
use super::registry::{close, lookup};
use super::{connect_client, parse_duration, CliError, EXIT_REMOTE};
use crate::client::{CallOptions, Client};
use crate::registry::ServiceRecord;
use crate::server::{HealthStatus, ServiceStats};

/// `micro health` and `micro stats` options.
#[derive(Debug, Args)]
#[command(after_help = "\
Every node registered for the service is asked on its own address (micro.node.<id>), all at once;
the nodes are those any running registry holds, so a hung node that no longer answers discovery is
still asked (and reported as not answering). A failing health check is shown with its reason.
Prints a table on a terminal and JSON (one entry per node) otherwise. Exits 3 if any node is not
healthy (health) or does not answer; exits 1 if the service is unknown or the broker unreachable.")]
pub struct NodesArgs {
    /// The service, e.g. go.micro.srv.greeter.
    pub service: String,
    /// Time each node has to answer (e.g. 500ms, 2s).
    #[arg(long, short = 't', default_value = "3s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Only nodes of this service version (--version prints micro's own version).
    #[arg(long = "service-version", visible_alias = "sv", value_name = "VERSION")]
    pub service_version: Option<String>,
}

/// One node to ask.
#[derive(Debug)]
pub(super) struct Target {
    pub(super) id: String,
    pub(super) version: String,
    pub(super) address: String,
}

/// What one node said to `Debug.Health` (`micro health --output json` prints a list of these).
#[derive(Debug, Serialize)]
struct HealthRow {
    node: String,
    version: String,
    address: String,
    healthy: bool,
    /// `ok`, `unhealthy` (a health check fails), `draining`, or `error` when the node did
    /// not answer or answered with an error.
    status: String,
    /// Why: the failing checks (`db: connection refused`) or the call's error.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// The node's health checks, as it reported them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    checks: Vec<crate::health::CheckStatus>,
}

/// What one node said to `Debug.Stats`.
#[derive(Debug, Serialize)]
struct StatsRow {
    node: String,
    version: String,
    address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    stats: Option<ServiceStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub(super) async fn targets(client: &Client, url: &str, args: &NodesArgs) -> Result<Vec<Target>, CliError> {
    let records: Vec<ServiceRecord> = lookup(client, url, &args.service).await?;
    let targets: Vec<Target> = records
        .iter()
        .filter(|s| args.service_version.as_ref().is_none_or(|v| *v == s.version))
        .flat_map(|s| {
            s.nodes.iter().map(|n| Target { id: n.id.clone(), version: s.version.clone(), address: n.address.clone() })
        })
        .collect();
    if targets.is_empty() {
        let versions: Vec<&str> = records.iter().map(|s| s.version.as_str()).collect();
        return Err(CliError(format!(
            "no node of {} runs version {}\n  its versions: {}",
            args.service,
            args.service_version.as_deref().unwrap_or("?"),
            versions.join(", ")
        )));
    }
    Ok(targets)
}

/// Calls `endpoint` on every target at once, each on its own node.
pub(super) async fn ask_all<T: serde::de::DeserializeOwned>(
    client: &Client,
    service: &str,
    endpoint: &str,
    targets: &[Target],
    timeout: Duration,
) -> Vec<Result<T, String>> {
    let _spin = Spinner::start(format!("asking {} node(s) of {service}", targets.len()));
    let calls = targets.iter().map(|t| {
        // Pinned to the node, so a retry goes to the same node: only when the request provably
        // did not run (no responder), never after a timeout, which keeps the whole --timeout
        // for the one attempt that may be slow.
        let opts = CallOptions::new().node(&t.id).timeout(timeout).idempotent(false);
        async move { client.call_with::<_, T, _>(service, endpoint, &(), opts).await.map_err(|e| e.to_string()) }
    });
    futures::future::join_all(calls).await
}

/// Asks every node of `args.service` (or the one node named) its `endpoint`, on a connection
/// of its own: the nodes asked and, in the same order, what each answered.
pub(super) async fn probe<T: serde::de::DeserializeOwned>(
    url: &str,
    args: &NodesArgs,
    endpoint: &str,
) -> Result<(Vec<Target>, Vec<Result<T, String>>), Box<dyn std::error::Error>> {
    let client = connect_client(url).await?;
    let result = async {
        let targets = targets(&client, url, args).await?;
        let answers = ask_all::<T>(&client, &args.service, endpoint, &targets, args.timeout).await;
        Ok::<_, CliError>((targets, answers))
    }
    .await;
    close(&client).await;
    Ok(result?)
}

pub(super) async fn health(url: &str, out: &Output, args: NodesArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let (targets, answers) = probe::<HealthStatus>(url, &args, "Debug.Health").await?;
    let rows: Vec<HealthRow> = targets
        .into_iter()
        .zip(answers)
        .map(|(t, a)| {
            let (status, error, checks) = match a {
                Ok(h) => {
                    let failing = h.failing();
                    (h.status, Some(failing).filter(|f| !f.is_empty()), h.checks)
                }
                Err(e) => ("error".to_string(), Some(format!("not answering: {e}")), Vec::new()),
            };
            let healthy = status == "ok";
            HealthRow { node: t.id, version: t.version, address: t.address, healthy, status, error, checks }
        })
        .collect();
    let healthy = rows.iter().filter(|r| r.healthy).count();
    if out.json() {
        out.print_json(&rows)?;
    } else {
        let errors = rows.iter().any(|r| r.error.is_some());
        let mut t = output::table(if errors {
            &["NODE", "VERSION", "STATUS", "REASON"][..]
        } else {
            &["NODE", "VERSION", "STATUS"]
        });
        for r in &rows {
            let mut cells = vec![r.node.clone(), r.version.clone(), r.status.clone()];
            if errors {
                cells.push(r.error.clone().unwrap_or_default());
            }
            t.add_row(cells);
        }
        output::line(&output::render(&t))?;
        let style = if healthy == rows.len() { output::GOOD } else { output::BAD };
        output::styled_line(&format!("{style}{healthy} of {} node(s) healthy{style:#}", rows.len()))?;
    }
    Ok(if healthy == rows.len() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_REMOTE) })
}

pub(super) async fn stats(url: &str, out: &Output, args: NodesArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let (targets, answers) = probe::<ServiceStats>(url, &args, "Debug.Stats").await?;
    let rows: Vec<StatsRow> = targets
        .into_iter()
        .zip(answers)
        .map(|(t, a)| {
            let (stats, error) = match a {
                Ok(s) => (Some(s), None),
                Err(e) => (None, Some(e)),
            };
            StatsRow { node: t.id, version: t.version, address: t.address, stats, error }
        })
        .collect();
    let answered = rows.iter().filter(|r| r.stats.is_some()).count();
    if out.json() {
        out.print_json(&rows)?;
    } else {
        let mut t = output::table([
            "NODE",
            "VERSION",
            "UPTIME",
            "REQUESTS",
            "ERRORS",
            "PANICS",
            "RESTARTS",
            "EXPIRED",
            "EVENTS",
            "RETRIES",
            "DEAD",
            "IN FLIGHT",
            "MEMORY",
        ]);
        for r in &rows {
            let mut cells = vec![r.node.clone(), r.version.clone()];
            match (&r.stats, &r.error) {
                (Some(s), _) => cells.extend([
                    uptime(s.uptime),
                    s.requests.to_string(),
                    s.errors.to_string(),
                    s.panics.to_string(),
                    s.restarts.to_string(),
                    s.expired.to_string(),
                    s.events.to_string(),
                    s.retries.to_string(),
                    s.dead_letters.to_string(),
                    s.in_flight.to_string(),
                    memory(s.memory),
                ]),
                (None, e) => cells.push(format!("error: {}", e.as_deref().unwrap_or("no answer"))),
            }
            t.add_row(cells);
        }
        output::line(&output::render(&t))?;
        if answered < rows.len() {
            output::styled_line(&format!(
                "{}{answered} of {} node(s) answered{:#}",
                output::BAD,
                rows.len(),
                output::BAD
            ))?;
        }
    }
    Ok(if answered == rows.len() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_REMOTE) })
}

fn uptime(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

fn memory(bytes: u64) -> String {
    match bytes {
        0 => "-".to_string(),
        b if b < 1 << 20 => format!("{} KiB", b >> 10),
        b => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_units() {
        assert_eq!(super::uptime(42), "42s");
        assert_eq!(super::uptime(125), "2m5s");
        assert_eq!(super::uptime(7260), "2h1m");
        assert_eq!(super::memory(0), "-");
        assert_eq!(super::memory(3 << 20), "3.0 MiB");
    }
}
