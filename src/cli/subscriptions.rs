//! `micro subscriptions SERVICE` (what each node's broker actor holds), `micro groups` (the
//! durable groups the broker keeps) and `micro groups delete GROUP TOPIC`.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde::Serialize;

use super::nodes::{probe, NodesArgs};
use super::output::{self, Output};
use super::{warn_memory, CliError, CLI_ID, EXIT_REMOTE};
use crate::broker::Broker;
use crate::server::{ServiceStats, SubscriptionInfo};

/// `micro groups` options.
#[derive(Debug, Args)]
#[command(after_help = "\
Lists the durable groups the broker keeps, with the events each still holds (pending: not yet
delivered or not yet acknowledged). NATS: the consumers of the JetStream stream MICRO_EVENTS.
RabbitMQ cannot list queues over AMQP: use `rabbitmqctl list_queues name messages` (durable groups
are the queues durable:<group>@<pattern>). Prints a table on a terminal and JSON otherwise:
[{group, topic, pending}].")]
pub struct GroupsArgs {
    /// What to do with the groups (default: list them).
    #[command(subcommand)]
    pub command: Option<GroupsCommand>,
}

/// `micro groups` subcommands.
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum GroupsCommand {
    /// Delete a durable group's subscription to a topic, with the events it still holds (not its
    /// dead letters). Its members must have stopped.
    Delete {
        /// The durable group.
        group: String,
        /// The topic or pattern it subscribes to, as the service declared it (user.*, order.>).
        topic: String,
    },
}

/// What one node said about its subscriptions.
#[derive(Debug, Serialize)]
struct NodeSubscriptions {
    node: String,
    version: String,
    address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscriptions: Option<Vec<SubscriptionInfo>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// One durable group, as `micro groups` prints it.
#[derive(Debug, Serialize)]
struct GroupRow {
    group: String,
    topic: String,
    pending: Option<u64>,
}

pub(super) async fn subscriptions(
    url: &str,
    out: &Output,
    args: NodesArgs,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let (targets, answers) = probe::<ServiceStats>(url, &args, "Debug.Stats").await?;
    let nodes: Vec<NodeSubscriptions> = targets
        .into_iter()
        .zip(answers)
        .map(|(t, a)| {
            let (subscriptions, error) = match a {
                Ok(s) => (Some(s.subscriptions), None),
                Err(e) => (None, Some(e)),
            };
            NodeSubscriptions { node: t.id, version: t.version, address: t.address, subscriptions, error }
        })
        .collect();
    let answered = nodes.iter().filter(|n| n.subscriptions.is_some()).count();
    if out.json() {
        out.print_json(&nodes)?;
    } else {
        for (i, n) in nodes.iter().enumerate() {
            if i > 0 {
                output::line("")?;
            }
            output::line(&format!("node {} ({})", n.node, n.version))?;
            match (&n.subscriptions, &n.error) {
                (Some(subs), _) if subs.is_empty() => output::line("  no subscriptions")?,
                (Some(subs), _) => output::line(&output::render(&table(subs)))?,
                (None, e) => output::styled_line(&format!(
                    "{}  error: {}{:#}",
                    output::BAD,
                    e.as_deref().unwrap_or("no answer"),
                    output::BAD
                ))?,
            }
        }
        if answered < nodes.len() {
            output::styled_line(&format!(
                "{}{answered} of {} node(s) answered{:#}",
                output::BAD,
                nodes.len(),
                output::BAD
            ))?;
        }
    }
    Ok(if answered == nodes.len() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_REMOTE) })
}

fn table(subs: &[SubscriptionInfo]) -> comfy_table::Table {
    let mut t =
        output::table(["TOPIC", "GROUP", "DURABLE", "HANDLED", "ERRORS", "RETRIES", "DEAD", "RESTARTS", "PENDING"]);
    for s in subs {
        t.add_row([
            s.topic.clone(),
            s.group.clone().unwrap_or_else(|| "(broadcast)".to_string()),
            if s.durable { "yes" } else { "no" }.to_string(),
            s.handled.to_string(),
            s.errors.to_string(),
            s.retries.to_string(),
            s.dead_letters.to_string(),
            s.restarts.to_string(),
            s.pending.map_or_else(|| "-".to_string(), |p| p.to_string()),
        ]);
    }
    t
}

pub(super) async fn groups(url: &str, out: &Output, args: GroupsArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    warn_memory(url);
    let transport = crate::transport::connect(url).await?;
    let broker = Broker::new(transport.clone(), CLI_ID);
    let result = match args.command {
        None => list_groups(&broker, out).await,
        Some(GroupsCommand::Delete { group, topic }) => broker
            .delete_durable(&topic, &group)
            .await
            .map_err(|e| CliError(e.to_string()).into())
            .and_then(|()| Ok(output::line(&format!("deleted durable group {group} on {topic}"))?)),
    };
    let _ = transport.close().await;
    result.map(|()| ExitCode::SUCCESS)
}

async fn list_groups(broker: &Broker, out: &Output) -> Result<(), Box<dyn std::error::Error>> {
    let groups = broker.durable_groups().await.map_err(|e| CliError(e.to_string()))?;
    let rows: Vec<GroupRow> = groups
        .iter()
        .map(|g| GroupRow { group: g.group.clone(), topic: g.topic().to_string(), pending: g.pending })
        .collect();
    if out.json() {
        out.print_json(&rows)?;
    } else if rows.is_empty() {
        output::line("no durable groups")?;
    } else {
        let mut t = output::table(["GROUP", "TOPIC", "PENDING"]);
        for r in &rows {
            t.add_row([r.group.clone(), r.topic.clone(), r.pending.map_or_else(|| "-".to_string(), |p| p.to_string())]);
        }
        output::line(&output::render(&t))?;
    }
    Ok(())
}
