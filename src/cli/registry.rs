//! `micro services`, `micro service NAME`, `micro watch`: what the registry knows.

use std::collections::BTreeSet;
use std::process::ExitCode;

use clap::Args;
use futures::{FutureExt, StreamExt};
use serde::Serialize;

use super::output::{self, Output, Spinner};
use super::{connect_client, suggest, CliError};
use crate::client::Client;
use crate::registry::{nats_micro, ServiceRecord, WatchAction, WatchEvent};
use crate::subject;
use crate::transport::redact;

type CmdResult = Result<ExitCode, Box<dyn std::error::Error>>;

/// `micro service` options.
#[derive(Debug, Args)]
pub struct ServiceArgs {
    /// The service name, e.g. go.micro.srv.greeter.
    pub name: String,
}

/// `micro watch` options.
#[derive(Debug, Args)]
#[command(after_help = "\
Prints one line per change: a readable line on a terminal; a JSON line
{\"action\", \"service\": {name, version, metadata, endpoints, nodes: [the node]}} when stdout
is not a terminal or with --output json. Runs until interrupted (Ctrl-C) or --count changes were
printed. Nodes already running when it starts are not changes: `micro services` lists them.")]
pub struct WatchArgs {
    /// Only changes of this service.
    pub service: Option<String>,
    /// Stop after this many changes.
    #[arg(long, short = 'n')]
    pub count: Option<u64>,
}

/// One line of `micro services --output json`.
#[derive(Debug, Serialize)]
struct ServiceRow<'a> {
    name: &'a str,
    version: &'a str,
    nodes: usize,
}

/// Every service known: the registry's, plus (on NATS) services of other NATS services
/// libraries found through the NATS services API in the same window.
pub(super) async fn all_services(client: &Client) -> crate::Result<Vec<ServiceRecord>> {
    let (ours, foreign) = futures::join!(client.registry().list_services(), foreign_services(client));
    let mut all = ours?;
    all.extend(foreign);
    Ok(all)
}

/// Services of other NATS services libraries (ADR-32), as registry records; none on other
/// transports. A failed discovery is logged and leaves them out.
async fn foreign_services(client: &Client) -> Vec<ServiceRecord> {
    if client.transport().name() != "nats" {
        return Vec::new();
    }
    match nats_micro::discover(&**client.transport(), FOREIGN_WINDOW).await {
        Ok(found) => nats_micro::foreign_records(&found),
        Err(e) => {
            tracing::debug!(error = %e, "NATS services API discovery failed");
            Vec::new()
        }
    }
}

/// How long answers to `$SRV.INFO` are gathered: the registry's discovery window.
const FOREIGN_WINDOW: std::time::Duration = std::time::Duration::from_millis(300);

/// True for a record found through the NATS services API (not one of this toolkit's services).
pub(super) fn is_foreign(record: &ServiceRecord) -> bool {
    record.metadata.get(nats_micro::META_SOURCE).is_some_and(|s| s == "nats-micro")
}

pub(super) async fn services(url: &str, out: &Output) -> CmdResult {
    let client = connect_client(url).await?;
    let all = {
        let _spin = Spinner::start("discovering services");
        all_services(&client).await
    };
    close(&client).await;
    print_services(out, &all?, &redact(url))?;
    Ok(ExitCode::SUCCESS)
}

/// The `micro services` output for these records, read from `source`.
pub(super) fn print_services(out: &Output, all: &[ServiceRecord], source: &str) -> std::io::Result<()> {
    let rows: Vec<ServiceRow<'_>> =
        all.iter().map(|s| ServiceRow { name: &s.name, version: &s.version, nodes: s.nodes.len() }).collect();
    if out.json() {
        out.print_json(&rows)?;
    } else if rows.is_empty() {
        output::note(&format!("no service is registered on {source}"));
    } else {
        let mut t = output::table(["SERVICE", "VERSION", "NODES"]);
        for r in &rows {
            t.add_row(vec![r.name.to_string(), r.version.to_string(), r.nodes.to_string()]);
        }
        output::line(&output::render(&t))?;
    }
    Ok(())
}

/// The registry records of `name`, or an error that suggests close names.
///
/// Waits the whole discovery window (`list_services`), not just for the first node to answer
/// (`get_service`): `service`, `health` and `stats` must see every node, and `call` every
/// version.
pub(super) async fn lookup(client: &Client, url: &str, name: &str) -> Result<Vec<ServiceRecord>, CliError> {
    let all = {
        let _spin = Spinner::start(format!("looking up {name}"));
        all_services(client).await.map_err(|e| CliError(e.to_string()))?
    };
    let found: Vec<ServiceRecord> = all.iter().filter(|s| s.name == name).cloned().collect();
    if !found.is_empty() {
        return Ok(found);
    }
    let names: BTreeSet<&str> = all.iter().map(|s| s.name.as_str()).collect();
    let mut msg = format!("service {name} is not in the registry on {}", redact(url));
    match suggest::did_you_mean(&suggest::close_names(name, names.iter().copied())) {
        Some(s) => msg.push_str(&format!("\n  {s}")),
        None if names.is_empty() => msg.push_str(
            "\n  no service is registered there: is one running, with the same --transport (or MICRO_TRANSPORT)?",
        ),
        None => msg.push_str("\n  `micro services` lists the registered services"),
    }
    Err(CliError(msg))
}

pub(super) async fn service(url: &str, out: &Output, args: ServiceArgs) -> CmdResult {
    let client = connect_client(url).await?;
    let records = lookup(&client, url, &args.name).await;
    close(&client).await;
    let records = records?;
    if out.json() {
        out.print_json(&records)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut text = String::new();
    for s in &records {
        let count = s.nodes.len();
        text.push_str(&format!(
            "{}  version {}  {count} node{}\n",
            s.name,
            s.version,
            if count == 1 { "" } else { "s" }
        ));
        if !s.metadata.is_empty() {
            text.push_str(&format!("metadata: {}\n", output::pairs(&s.metadata)));
        }
        // Addresses are almost always micro.node.<id>; a column of them would only repeat ids.
        let usual = is_foreign(s) || s.nodes.iter().all(|n| n.address == subject::node(&n.id));
        let mut nodes =
            if usual { output::table(["NODE", "METADATA"]) } else { output::table(["NODE", "ADDRESS", "METADATA"]) };
        for n in &s.nodes {
            let mut row = vec![n.id.clone()];
            if !usual {
                row.push(n.address.clone());
            }
            row.push(output::pairs(&n.metadata));
            nodes.add_row(row);
        }
        let mut eps = output::table(["ENDPOINT", "METADATA"]);
        for e in &s.endpoints {
            eps.add_row(vec![e.name.clone(), output::pairs(&e.metadata)]);
        }
        let footnote = if is_foreign(s) {
            "\n(a NATS services API service: each endpoint takes requests on its nats.subject)"
        } else if usual {
            "\n(each node takes requests on micro.node.<NODE>)"
        } else {
            ""
        };
        text.push_str(&format!("\n{}{footnote}\n\n{}\n\n", output::render(&nodes), output::render(&eps)));
    }
    output::line(text.trim_end())?;
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn watch(url: &str, out: &Output, args: WatchArgs) -> CmdResult {
    let client = connect_client(url).await?;
    let mut watcher = client.registry().watch().await?;
    // A fresh registry hears every running node answer its discovery request; those are the
    // present state, not changes, so they are skipped: `micro services` shows them.
    let present: BTreeSet<String> =
        client.registry().list_services().await?.iter().flat_map(|s| s.nodes.iter().map(|n| n.id.clone())).collect();
    let mut backlog = Vec::new();
    while let Some(Some(e)) = watcher.next().now_or_never() {
        let discovered = e.action == WatchAction::Added && e.service.nodes.iter().all(|n| present.contains(&n.id));
        if !discovered {
            backlog.push(e);
        }
    }
    let what = args.service.as_deref().map(|s| format!("changes of {s}")).unwrap_or("registry changes".into());
    output::note(&format!("watching {what} on {} (Ctrl-C to stop)", redact(url)));
    let mut printed = 0u64;
    let mut events = futures::stream::iter(backlog).chain(watcher);
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    while args.count.is_none_or(|n| printed < n) {
        let event = tokio::select! {
            e = events.next() => e,
            _ = &mut interrupted => None,
        };
        let Some(event) = event else { break };
        if args.service.as_ref().is_some_and(|s| *s != event.service.name) {
            continue;
        }
        if let Err(e) = print_change(out, &event) {
            if output::is_broken_pipe(&e) {
                break;
            }
            return Err(e.into());
        }
        printed += 1;
    }
    close(&client).await;
    Ok(ExitCode::SUCCESS)
}

fn print_change(out: &Output, e: &WatchEvent) -> std::io::Result<()> {
    if out.json() {
        return output::line(&serde_json::to_string(e).map_err(std::io::Error::other)?);
    }
    let (style, word) = match e.action {
        WatchAction::Added => (output::GOOD, "added  "),
        WatchAction::Updated => (output::WARN, "updated"),
        _ => (output::BAD, "removed"),
    };
    let s = &e.service;
    let node = s.nodes.first();
    output::styled_line(&format!(
        "{style}{word}{style:#}  {}  {}  {}",
        s.name,
        s.version,
        node.map_or("-", |n| n.id.as_str()),
    ))
}

/// Closes the client's connection (RabbitMQ then sees a clean close, not a dropped socket).
pub(super) async fn close(client: &Client) {
    client.registry().stop();
    let _ = client.transport().close().await;
}
