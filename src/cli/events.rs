//! `micro publish TOPIC [JSON]` and `micro subscribe TOPIC`.

use std::process::ExitCode;

use clap::Args;
use futures::StreamExt;
use serde::Serialize;

use super::connect_client;
use super::input::{self, ContentType};
use super::output;
use crate::broker::{Event, PublishOptions, SubscribeOptions};
use crate::message::{new_id, Metadata};
use crate::transport::redact;

/// `micro publish` options.
#[derive(Debug, Args)]
#[command(after_help = "\
The event is JSON: the argument, or stdin when the argument is `-` or absent (absent with stdin a
terminal publishes {}); a syntax error names the line and column and nothing is published.
Prints {\"id\", \"topic\"} of the published event on one line. Delivery is at most once: an event nobody
subscribes to is lost. With --durable the command returns only once the broker has stored the event
(JetStream PubAck, RabbitMQ confirm), and fails when nothing would keep it.

Example:
  micro publish user.login '{\"user\": \"ada\"}' -m tenant=acme")]
pub struct PublishArgs {
    /// The topic, e.g. user.login (no wildcards).
    pub topic: String,
    /// The event as JSON; `-` reads stdin.
    pub event: Option<String>,
    /// Metadata sent with the event as key=value (repeatable).
    #[arg(long, short = 'm', value_name = "KEY=VALUE", value_parser = input::parse_pair)]
    pub metadata: Vec<(String, String)>,
    /// How the event is sent: json as typed, or msgpack (the JSON transcoded to MessagePack).
    #[arg(long, value_enum, default_value_t)]
    pub content_type: ContentType,
    /// Publish durably: wait until the broker has stored the event.
    #[arg(long)]
    pub durable: bool,
}

/// `micro subscribe` options.
#[derive(Debug, Args)]
#[command(after_help = "\
Prints one JSON line per event, whatever --output says:
  {\"id\", \"topic\", \"timestamp\", \"publisher\", \"metadata\", \"data\"}
with the payload transcoded to JSON in `data` and `timestamp` in ms since the Unix epoch. Runs
until interrupted (Ctrl-C) or --count events were printed. Without --group every subscriber gets
every event; with it, the members of the group share them. With --durable GROUP the command reads
that durable group (at least once): each event is acknowledged once printed, and what it does not
print goes back to the group. Dead letters carry `attempt` and `dead_letter` fields.

Examples:
  micro subscribe 'user.*' --count 1
  micro subscribe go.micro.srv.audit.dlq --durable ops")]
pub struct SubscribeArgs {
    /// The topic or pattern: user.login, user.* (one token), user.> (the rest).
    pub topic: String,
    /// Join this queue group: each event goes to one member of the group.
    #[arg(long, short = 'g', conflicts_with = "durable")]
    pub group: Option<String>,
    /// Read this durable group (at least once; events are acknowledged once printed).
    #[arg(long, value_name = "GROUP")]
    pub durable: Option<String>,
    /// Stop after this many events.
    #[arg(long, short = 'n')]
    pub count: Option<u64>,
}

/// One line of `micro subscribe`.
#[derive(Debug, Serialize)]
struct EventLine<'a> {
    id: &'a str,
    topic: &'a str,
    timestamp: u64,
    publisher: Option<&'a str>,
    metadata: &'a Metadata,
    data: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempt: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dead_letter: Option<std::collections::BTreeMap<&'static str, &'a str>>,
}

pub(super) async fn publish(url: &str, args: PublishArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let body = input::body(args.event.as_deref(), args.content_type)?;
    let client = connect_client(url).await?;
    let (broker, transport) = (client.broker(), client.transport());
    let id = new_id();
    let mut opts = PublishOptions::new().id(&id);
    if args.durable {
        opts = opts.durable();
    }
    for (k, v) in &args.metadata {
        opts = opts.metadata(k, v);
    }
    let sent = async {
        broker.publish_raw(&args.topic, body, args.content_type.codec(), opts).await?;
        // NATS buffers publishes: the event must be on the wire before the process exits.
        transport.flush().await
    }
    .await;
    let _ = transport.close().await;
    sent?;
    // One line, terminal or not: the id is what a person copies, the line what a script reads.
    output::line(&serde_json::json!({"id": id, "topic": args.topic}).to_string())?;
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn subscribe(url: &str, args: SubscribeArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let client = connect_client(url).await?;
    let (broker, transport) = (client.broker(), client.transport());
    let result = match args.durable.clone() {
        None => {
            let opts = args.group.clone().map(SubscribeOptions::group).unwrap_or_else(SubscribeOptions::broadcast);
            let events = broker.subscribe(&args.topic, opts).await?;
            // From here on no event published to the topic is missed.
            transport.flush().await?;
            output::note(&format!("subscribed to {} on {} (Ctrl-C to stop)", args.topic, redact(url)));
            print_events(events, args.count, |e| event_line(e, None), |_| async { Ok(()) }).await
        }
        Some(group) => {
            let events = broker.subscribe_durable(&args.topic, SubscribeOptions::durable(group.clone())).await?;
            output::note(&format!(
                "reading durable group {group} on {} at {} (Ctrl-C to stop)",
                args.topic,
                redact(url)
            ));
            // Acknowledged once printed; one not printed is dropped unsettled and goes back.
            print_events(events, args.count, |e| event_line(e, Some(e)), |e| e.ack()).await
        }
    };
    let _ = transport.close().await;
    result?;
    Ok(ExitCode::SUCCESS)
}

/// Prints one line per event until `count`, Ctrl-C, the stream's end or a closed stdout; runs
/// `printed` on each event once its line is out.
async fn print_events<S, E, F>(
    mut events: S,
    count: Option<u64>,
    line: impl Fn(&E) -> String,
    mut printed: impl FnMut(E) -> F,
) -> Result<(), Box<dyn std::error::Error>>
where
    S: futures::Stream<Item = E> + Unpin,
    F: std::future::Future<Output = crate::Result<()>>,
{
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let mut n = 0u64;
    while count.is_none_or(|c| n < c) {
        let event = tokio::select! {
            e = events.next() => e,
            _ = &mut interrupted => None,
        };
        let Some(event) = event else { break };
        match output::line(&line(&event)) {
            Ok(()) => {
                n += 1;
                printed(event).await?;
            }
            Err(e) if output::is_broken_pipe(&e) => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn event_line(e: &Event, durable: Option<&crate::broker::DurableEvent>) -> String {
    use crate::broker::dlq_headers;
    let dead_letter = durable.and_then(|d| {
        let h = d.headers();
        h.get(dlq_headers::REASON)?;
        let fields = [
            ("reason", dlq_headers::REASON),
            ("attempts", dlq_headers::ATTEMPTS),
            ("group", dlq_headers::GROUP),
            ("topic", dlq_headers::TOPIC),
            ("code", dlq_headers::CODE),
        ];
        Some(fields.into_iter().filter_map(|(k, name)| Some((k, h.get(name)?))).collect())
    });
    let (data, error) = match e.decode::<serde_json::Value>() {
        Ok(v) => (v, None),
        Err(err) => (serde_json::Value::Null, Some(format!("payload not decodable: {err}"))),
    };
    let line = EventLine {
        id: &e.id,
        topic: &e.topic,
        timestamp: e.timestamp,
        publisher: e.publisher.as_deref(),
        metadata: &e.metadata,
        data,
        error,
        attempt: durable.map(|d| d.attempt()),
        dead_letter,
    };
    serde_json::to_string(&line).unwrap_or_default()
}
