//! `micro kv get|put|del|ls|watch` and `micro config get|set`: the kv store and the config
//! documents in it (`config.<app>` and `config.<app>.<env>`, as `micro::config` reads them).

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use futures::StreamExt;
use serde_json::{json, Value};

use super::output::{self, Output};
use super::CliError;
use crate::kv::{Change, Entry, Kv};

/// The CLI's default store: memory cannot see other processes, so NATS.
pub(super) const DEFAULT_CLI_KV: &str = "nats://127.0.0.1:4222";

/// Where the store is: `--kv URL`, else `MICRO_KV`, else NATS on this machine.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// Store URL: nats://host:port[?bucket=name], redis://host:port/db[?namespace=name] [env: MICRO_KV]
    /// [default: nats://127.0.0.1:4222].
    #[arg(long = "kv", global = true, value_name = "URL")]
    pub url: Option<String>,
    /// The TLS and login flags as a URL query (`--tls-ca` ...), for a NATS store.
    #[arg(skip)]
    pub(super) link: String,
}

impl StoreArgs {
    async fn open(&self) -> crate::Result<Kv> {
        let env = std::env::var(crate::kv::KV_ENV).ok();
        let url = self.url.as_deref().or(env.as_deref()).filter(|u| !u.is_empty()).unwrap_or(DEFAULT_CLI_KV);
        if url.starts_with("memory://") {
            output::note("memory:// cannot see other processes; use --kv nats://127.0.0.1:4222 (or MICRO_KV)");
        }
        Kv::open(&super::link::with_query(url, &self.link)).await
    }
}

/// `micro kv` options.
#[derive(Debug, Args)]
pub struct KvArgs {
    /// The store.
    #[command(flatten)]
    pub store: StoreArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: KvCommand,
}

/// `micro kv` subcommands.
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum KvCommand {
    /// Print a key's value as stored (exits 1 if absent); with -o json, {key, value, revision}.
    Get {
        /// The key.
        key: String,
    },
    /// Write a value; prints its revision.
    Put {
        /// The key.
        key: String,
        /// The value (text).
        value: String,
        /// Expire after this long (e.g. 30s, 10m).
        #[arg(long, value_parser = super::parse_duration)]
        ttl: Option<Duration>,
        /// Write only if the key is at this revision (0: only if absent).
        #[arg(long)]
        revision: Option<u64>,
    },
    /// Delete a key.
    Del {
        /// The key.
        key: String,
    },
    /// List the keys under a prefix (all without one).
    Ls {
        /// The prefix.
        #[arg(default_value = "")]
        prefix: String,
    },
    /// Print changes under a prefix as JSON lines until interrupted.
    Watch {
        /// The prefix.
        #[arg(default_value = "")]
        prefix: String,
    },
}

fn entry_json(e: &Entry) -> Value {
    json!({ "key": e.key, "value": String::from_utf8_lossy(&e.value), "revision": e.revision })
}

/// Runs `micro kv`.
pub(super) async fn run(out: &Output, args: KvArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let kv = args.store.open().await?;
    match args.command {
        KvCommand::Get { key } => {
            let e = kv.get(&key).await?.ok_or_else(|| CliError(format!("key {key:?} not found")))?;
            if out.json_asked() {
                out.print_json(&entry_json(&e))?;
            } else {
                output::raw(&e.value)?;
                output::line("")?;
            }
        }
        KvCommand::Put { key, value, ttl, revision } => {
            let expect = match revision {
                None => crate::kv::Expect::Any,
                Some(0) => crate::kv::Expect::Absent,
                Some(r) => crate::kv::Expect::Revision(r),
            };
            let rev = kv.put_with(&key, value, expect, ttl).await?;
            output::line(&rev.to_string())?;
        }
        KvCommand::Del { key } => kv.delete(&key).await?,
        KvCommand::Ls { prefix } => {
            let entries = kv.list(&prefix).await?;
            if out.json() {
                out.print_json(&entries.iter().map(entry_json).collect::<Vec<_>>())?;
            } else {
                let mut t = output::table(["KEY", "REVISION", "VALUE"]);
                for e in &entries {
                    let v = String::from_utf8_lossy(&e.value);
                    let v = if v.chars().count() > 60 {
                        format!("{}…", v.chars().take(60).collect::<String>())
                    } else {
                        v.into()
                    };
                    t.add_row([e.key.clone(), e.revision.to_string(), v]);
                }
                output::line(&output::render(&t))?;
            }
        }
        KvCommand::Watch { prefix } => {
            let mut changes = kv.watch(&prefix).await?;
            while let Some(change) = changes.next().await {
                let line = match change? {
                    Change::Put(e) => {
                        json!({ "op": "put", "key": e.key, "value": String::from_utf8_lossy(&e.value), "revision": e.revision })
                    }
                    Change::Delete { key, revision } => json!({ "op": "delete", "key": key, "revision": revision }),
                };
                output::line(&line.to_string())?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `micro config` options.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// The store.
    #[command(flatten)]
    pub store: StoreArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: ConfigCommand,
}

/// `micro config` subcommands: the JSON document at `config.APP` (or `config.APP.ENV`).
#[derive(Debug, Subcommand)]
#[non_exhaustive]
pub enum ConfigCommand {
    /// Print an app's config document, or one value in it (a dotted path: db.url).
    Get {
        /// The app (the kv key is config.APP).
        app: String,
        /// A dotted path into the document.
        path: Option<String>,
        /// The environment's document (config.APP.ENV) instead of the common one.
        #[arg(long = "env")]
        environment: Option<String>,
    },
    /// Set one value (JSON, or else text) at a dotted path; running services reload it.
    Set {
        /// The app (the kv key is config.APP).
        app: String,
        /// A dotted path into the document: db.pool.
        path: String,
        /// The value: JSON (12, true, {"a":1}) or else a string.
        value: String,
        /// The environment's document (config.APP.ENV) instead of the common one.
        #[arg(long = "env")]
        environment: Option<String>,
    },
}

fn doc_key(app: &str, env: Option<&str>) -> String {
    match env {
        Some(e) => format!("config.{app}.{e}"),
        None => format!("config.{app}"),
    }
}

/// Runs `micro config`.
pub(super) async fn config(out: &Output, args: ConfigArgs) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let kv = args.store.open().await?;
    match args.command {
        ConfigCommand::Get { app, path, environment } => {
            let key = doc_key(&app, environment.as_deref());
            let doc = match kv.get(&key).await? {
                Some(e) => serde_json::from_slice::<Value>(&e.value)
                    .map_err(|err| CliError(format!("{key} does not hold a JSON document: {err}")))?,
                None => {
                    return Err(CliError(format!(
                        "no config at {key}; set one with `micro config set {app} PATH VALUE`"
                    ))
                    .into())
                }
            };
            let value = match &path {
                Some(p) => p
                    .split('.')
                    .try_fold(&doc, |v, part| v.get(part))
                    .ok_or_else(|| CliError(format!("{key} has no value at {p}")))?,
                None => &doc,
            };
            out.print_json(value)?;
        }
        ConfigCommand::Set { app, path, value, environment } => {
            let key = doc_key(&app, environment.as_deref());
            let value: Value = serde_json::from_str(&value).unwrap_or(Value::String(value));
            let parts: Vec<&str> = path.split('.').collect();
            if parts.iter().any(|p| p.is_empty()) {
                return Err(CliError(format!("bad path {path:?}: use dotted names, e.g. db.pool")).into());
            }
            // read, change, compare-and-set: a concurrent `set` is retried, never overwritten
            loop {
                let current = kv.get(&key).await?;
                let mut doc = match &current {
                    Some(e) => serde_json::from_slice::<Value>(&e.value)
                        .map_err(|err| CliError(format!("{key} does not hold a JSON document: {err}")))?,
                    None => json!({}),
                };
                set_path(&mut doc, &parts, value.clone()).map_err(CliError)?;
                let bytes = serde_json::to_vec(&doc)?;
                let expect = current.map_or(crate::kv::Expect::Absent, |e| crate::kv::Expect::Revision(e.revision));
                match kv.put_with(&key, bytes, expect, None).await {
                    Ok(rev) => {
                        output::line(&rev.to_string())?;
                        break;
                    }
                    Err(e) if e.is_conflict() => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn set_path(doc: &mut Value, parts: &[&str], value: Value) -> Result<(), String> {
    let Some((last, parents)) = parts.split_last() else { return Err("empty path".into()) };
    let mut at = doc;
    for p in parents {
        if !at.is_object() {
            return Err(format!("{p} is inside a value that is not an object"));
        }
        at = at.as_object_mut().ok_or("not an object")?.entry(p.to_string()).or_insert_with(|| json!({}));
    }
    at.as_object_mut()
        .ok_or_else(|| format!("cannot set {last}: its parent is not an object"))?
        .insert(last.to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_path_builds_nested_objects() {
        let mut doc = json!({"a": 1});
        set_path(&mut doc, &["db", "pool"], json!(8)).unwrap();
        assert_eq!(doc, json!({"a": 1, "db": {"pool": 8}}));
        assert!(set_path(&mut doc, &["a", "b"], json!(1)).is_err());
    }
}
