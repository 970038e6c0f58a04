//! The command dispatcher: built-ins that mirror the CLI, then command services.

use std::time::Duration;

use serde_json::Value;

use super::format::{self, table};
use super::{allowed, BotConfig, CommandExec, CommandHelp, CommandResult, Incoming, EXEC_ENDPOINT, HELP_ENDPOINT};
use crate::client::{CallOptions, Client};
use crate::registry::ServiceRecord;
use crate::server::{HealthStatus, ServiceStats};
use crate::{Codec, PublishOptions};

/// The built-ins, one usage line each (`help` prints them, a bad command gets its line).
const BUILTINS: &[(&str, &str)] = &[
    ("help", "help: this list, with the commands services add"),
    ("services", "services: the services running, their versions and nodes"),
    ("service", "service NAME: one service's nodes and endpoints"),
    ("call", "call SERVICE ENDPOINT {json}: call an endpoint"),
    ("health", "health SERVICE: ask every node of a service how it is"),
    ("stats", "stats SERVICE: every node's request counters"),
    ("publish", "publish TOPIC {json}: publish an event"),
    ("echo", "echo TEXT: say TEXT back"),
];

/// Time a command service has to answer `Command.Help` for `help`.
const HELP_TIMEOUT: Duration = Duration::from_secs(2);

/// One command to run.
pub(super) struct Dispatch<'a> {
    pub(super) client: &'a Client,
    pub(super) config: &'a BotConfig,
    pub(super) input: &'a str,
    pub(super) msg: &'a Incoming,
}

fn usage(cmd: &str) -> String {
    let line = BUILTINS.iter().find(|(c, _)| *c == cmd).map_or("", |(_, u)| *u);
    format!("usage: {line}")
}

/// Splits off the first word: `("call", "go.micro.srv.greeter Say.Hello {...}")`.
fn split_word(text: &str) -> (&str, &str) {
    let text = text.trim();
    match text.split_once(char::is_whitespace) {
        Some((a, b)) => (a, b.trim()),
        None => (text, ""),
    }
}

impl Dispatch<'_> {
    /// The call options every call carries: the chat identity as metadata, the command's time.
    fn options(&self) -> CallOptions {
        CallOptions::new()
            .timeout(self.config.timeout)
            .metadata("bot-user", &self.msg.sender)
            .metadata("bot-room", self.msg.room.as_deref().unwrap_or(""))
            .metadata("bot-input", self.input)
    }

    pub(super) async fn run(self) -> String {
        let (cmd, rest) = split_word(&self.msg.text);
        let cmd = cmd.to_ascii_lowercase();
        match cmd.as_str() {
            "help" => self.help().await,
            "services" => self.services().await,
            "service" | "health" | "stats" if rest.is_empty() || rest.contains(char::is_whitespace) => usage(&cmd),
            "service" => self.service(rest).await,
            "health" => self.health(rest).await,
            "stats" => self.stats(rest).await,
            "call" => self.call(rest).await,
            "publish" => self.publish(rest).await,
            "echo" => rest.to_string(),
            _ => self.command_service(&cmd, rest).await,
        }
    }

    /// The command services running now: (command, service name).
    async fn command_services(&self) -> Vec<(String, String)> {
        let prefix = format!("{}.", self.config.namespace);
        let mut names: Vec<(String, String)> = match self.client.registry().list_services().await {
            Ok(all) => all
                .into_iter()
                .filter_map(|s| Some((s.name.strip_prefix(&prefix)?.to_string(), s.name.clone())))
                .filter(|(c, _)| !c.is_empty() && !c.contains('.'))
                .collect(),
            Err(_) => Vec::new(),
        };
        names.sort();
        names.dedup();
        names
    }

    async fn help(&self) -> String {
        let mut lines: Vec<String> = BUILTINS.iter().map(|(_, u)| u.to_string()).collect();
        let found = self.command_services().await;
        let helps = futures::future::join_all(found.iter().map(|(cmd, service)| async move {
            let opts = self.options().timeout(HELP_TIMEOUT);
            match self.client.call_with::<_, CommandHelp, _>(service, HELP_ENDPOINT, &(), opts).await {
                Ok(h) if h.description.is_empty() => h.usage,
                Ok(h) => format!("{}: {}", h.usage, h.description),
                Err(e) => format!("{cmd}: (no help: {e})"),
            }
        }))
        .await;
        lines.extend(helps);
        format::code(&lines.join("\n"), "")
    }

    async fn services(&self) -> String {
        match self.client.registry().list_services().await {
            Ok(all) if all.is_empty() => "no service is running".to_string(),
            Ok(all) => {
                let rows: Vec<Vec<String>> =
                    all.iter().map(|s| vec![s.name.clone(), s.version.clone(), s.nodes.len().to_string()]).collect();
                table(&["SERVICE", "VERSION", "NODES"], &rows)
            }
            Err(e) => format!("cannot list services: {e}"),
        }
    }

    async fn lookup(&self, name: &str) -> Result<Vec<ServiceRecord>, String> {
        match self.client.registry().get_service(name).await {
            Ok(found) if found.is_empty() => Err(format!("no service named {name} is running")),
            Ok(found) => Ok(found),
            Err(e) => Err(format!("cannot look up {name}: {e}")),
        }
    }

    async fn service(&self, name: &str) -> String {
        let records = match self.lookup(name).await {
            Ok(r) => r,
            Err(e) => return e,
        };
        let rows: Vec<Vec<String>> = records
            .iter()
            .flat_map(|s| s.nodes.iter().map(|n| vec![n.id.clone(), s.version.clone(), n.address.clone()]))
            .collect();
        let mut endpoints: Vec<&str> =
            records.iter().flat_map(|s| s.endpoints.iter().map(|e| e.name.as_str())).collect();
        endpoints.sort_unstable();
        endpoints.dedup();
        format!("{}\nendpoints: {}", table(&["NODE", "VERSION", "ADDRESS"], &rows), endpoints.join(", "))
    }

    /// Asks every node of `name` its `endpoint`, each on its own node, all at once.
    async fn ask_nodes<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
        endpoint: &str,
    ) -> Result<Vec<(String, String, Result<T, String>)>, String> {
        let records = self.lookup(name).await?;
        let nodes: Vec<(String, String)> =
            records.iter().flat_map(|s| s.nodes.iter().map(|n| (n.id.clone(), s.version.clone()))).collect();
        let answers =
            futures::future::join_all(
                nodes.iter().map(|(id, _)| {
                    let opts = self.options().node(id).idempotent(false);
                    async move {
                        self.client.call_with::<_, T, _>(name, endpoint, &(), opts).await.map_err(|e| e.to_string())
                    }
                }),
            )
            .await;
        Ok(nodes.into_iter().zip(answers).map(|((id, v), a)| (id, v, a)).collect())
    }

    async fn health(&self, name: &str) -> String {
        let answers = match self.ask_nodes::<HealthStatus>(name, "Debug.Health").await {
            Ok(a) => a,
            Err(e) => return e,
        };
        let healthy = answers.iter().filter(|(_, _, a)| a.as_ref().is_ok_and(|h| h.status == "ok")).count();
        let rows: Vec<Vec<String>> = answers
            .into_iter()
            .map(|(id, v, a)| vec![id, v, a.map_or_else(|e| format!("error: {e}"), |h| h.status)])
            .collect();
        format!("{}\n{healthy} of {} node(s) healthy", table(&["NODE", "VERSION", "STATUS"], &rows), rows.len())
    }

    async fn stats(&self, name: &str) -> String {
        let answers = match self.ask_nodes::<ServiceStats>(name, "Debug.Stats").await {
            Ok(a) => a,
            Err(e) => return e,
        };
        let rows: Vec<Vec<String>> = answers
            .into_iter()
            .map(|(id, v, a)| match a {
                Ok(s) => vec![
                    id,
                    v,
                    s.requests.to_string(),
                    s.errors.to_string(),
                    s.in_flight.to_string(),
                    format!("{}s", s.uptime),
                ],
                Err(e) => vec![id, v, format!("error: {e}")],
            })
            .collect();
        table(&["NODE", "VERSION", "REQUESTS", "ERRORS", "IN FLIGHT", "UPTIME"], &rows)
    }

    async fn call(&self, rest: &str) -> String {
        let (service, rest) = split_word(rest);
        let (endpoint, json) = split_word(rest);
        if service.is_empty() || endpoint.is_empty() {
            return usage("call");
        }
        if !allowed(&self.config.call_allow, service) {
            return format!("call is not allowed for {service} here");
        }
        let json = if json.is_empty() { "{}" } else { json };
        let body: Value = match serde_json::from_str(json) {
            Ok(v) => v,
            Err(e) => return format!("bad JSON: {e}\n{}", usage("call")),
        };
        let body = match serde_json::to_vec(&body) {
            Ok(b) => b,
            Err(e) => return format!("bad JSON: {e}"),
        };
        match self.client.call_raw(service, endpoint, body.into(), Codec::Json, self.options()).await {
            Ok(reply) => {
                let json = reply.to_json().map_err(|e| e.to_string());
                match json.and_then(|j| serde_json::from_slice::<Value>(&j).map_err(|e| e.to_string())) {
                    Ok(v) => format::json(&v),
                    Err(e) => format!("the reply is not JSON: {e}"),
                }
            }
            Err(e) => format!("error: {e}"),
        }
    }

    async fn publish(&self, rest: &str) -> String {
        let (topic, json) = split_word(rest);
        if topic.is_empty() || json.is_empty() {
            return usage("publish");
        }
        if !allowed(&self.config.publish_allow, topic) {
            return format!("publish is not allowed on {topic} here");
        }
        let event: Value = match serde_json::from_str(json) {
            Ok(v) => v,
            Err(e) => return format!("bad JSON: {e}\n{}", usage("publish")),
        };
        let opts = PublishOptions::new()
            .metadata("bot-user", &self.msg.sender)
            .metadata("bot-room", self.msg.room.as_deref().unwrap_or(""))
            .metadata("bot-input", self.input);
        match self.client.publish_with(topic, &event, opts).await {
            Ok(id) => format!("published {id} on {topic}"),
            Err(e) => format!("error: {e}"),
        }
    }

    async fn command_service(&self, cmd: &str, rest: &str) -> String {
        let unknown = || {
            let names: Vec<&str> = BUILTINS.iter().map(|(c, _)| *c).collect();
            format!("unknown command `{cmd}`; usage: {}, or a command `help` lists", names.join(" | "))
        };
        if cmd.is_empty() || !cmd.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return unknown();
        }
        let service = format!("{}.{cmd}", self.config.namespace);
        match self.client.registry().get_service(&service).await {
            Ok(found) if found.iter().any(|s| !s.nodes.is_empty()) => {}
            _ => return unknown(),
        }
        let mut args = vec![cmd.to_string()];
        args.extend(rest.split_whitespace().map(str::to_string));
        let exec = CommandExec { args };
        match self.client.call_with::<_, CommandResult, _>(&service, EXEC_ENDPOINT, &exec, self.options()).await {
            Ok(r) if r.error.is_empty() => r.result,
            Ok(r) => format!("{cmd} failed: {}", r.error),
            Err(e) => format!("{cmd} failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn words_split_off_and_usage_lines() {
        assert_eq!(super::split_word(" call a  b {\"x\": 1} "), ("call", "a  b {\"x\": 1}"));
        assert_eq!(super::split_word("services"), ("services", ""));
        assert_eq!(super::usage("call"), "usage: call SERVICE ENDPOINT {json}: call an endpoint");
    }
}
