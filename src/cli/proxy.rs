//! `micro --proxy-address http://host:port services|call|publish`: the same commands through a
//! sidecar's HTTP API, for a machine without broker access.

use std::process::ExitCode;
use std::time::Duration;

use super::input::{self, ContentType};
use super::output::{self, Output, Spinner};
use super::registry::print_services;
use super::{CallArgs, CliError, Command, PublishArgs, EXIT_REMOTE};
use crate::gateway::GATEWAY_ID;
use crate::registry::ServiceRecord;
use crate::status::Status;

type CmdResult = Result<ExitCode, Box<dyn std::error::Error>>;

/// Environment variable of the sidecar's shared token.
pub const PROXY_TOKEN_ENV: &str = "MICRO_PROXY_TOKEN";

/// A sidecar's HTTP API.
struct Proxy {
    base: String,
    token: Option<String>,
    http: awc::Client,
}

/// Runs a command through the sidecar at `address`; commands it cannot serve are refused.
pub(super) async fn run(address: &str, out: &Output, command: Command) -> CmdResult {
    let base = address.trim_end_matches('/').to_string();
    if !base.starts_with("http://") {
        return Err(CliError(format!("--proxy-address {address:?}: use http://host:port (a sidecar)")).into());
    }
    let token = std::env::var(PROXY_TOKEN_ENV).ok().filter(|t| !t.is_empty());
    let http = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
    let proxy = Proxy { base, token, http };
    match command {
        Command::Services => services(&proxy, out).await,
        Command::Call(args) => call(&proxy, out, args).await,
        Command::Publish(args) => publish(&proxy, args).await,
        other => Err(CliError(format!(
            "{} does not work through --proxy-address: a sidecar serves services, call and publish",
            name_of(&other)
        ))
        .into()),
    }
}

fn name_of(c: &Command) -> String {
    let debug = format!("{c:?}");
    debug.split(['(', ' ']).next().unwrap_or_default().to_ascii_lowercase()
}

impl Proxy {
    fn request(&self, method: awc::http::Method, path: &str) -> awc::ClientRequest {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.insert_header(("authorization", format!("Bearer {t}"))),
            None => req,
        }
    }

    /// Sends and reads the answer: its status and body.
    async fn send(&self, req: awc::ClientRequest, body: Option<bytes::Bytes>) -> Result<(u16, bytes::Bytes), CliError> {
        let unreachable = |e: String| CliError(format!("cannot reach the sidecar at {}: {e}", self.base));
        let mut rsp = match body {
            Some(b) => req.insert_header(("content-type", "application/json")).send_body(b).await,
            None => req.send().await,
        }
        .map_err(|e| unreachable(e.to_string()))?;
        let body = rsp.body().limit(64 * 1024 * 1024).await.map_err(|e| unreachable(e.to_string()))?;
        Ok((rsp.status().as_u16(), body))
    }
}

/// The sidecar's own error (not a service's) as a failure here.
fn sidecar_error(code: u16, body: &[u8]) -> CliError {
    match serde_json::from_slice::<Status>(body) {
        Ok(s) => CliError(format!("the sidecar answered {code}: {}", s.detail())),
        Err(_) => CliError(format!("the sidecar answered {code}: {}", String::from_utf8_lossy(body).trim())),
    }
}

async fn services(proxy: &Proxy, out: &Output) -> CmdResult {
    let (code, body) = {
        let _spin = Spinner::start("asking the sidecar");
        proxy.send(proxy.request(awc::http::Method::GET, "/registry"), None).await?
    };
    if code != 200 {
        return Err(sidecar_error(code, &body).into());
    }
    let all: Vec<ServiceRecord> = serde_json::from_slice(&body)
        .map_err(|e| CliError(format!("the sidecar's /registry is not a list of services: {e}")))?;
    print_services(out, &all, &proxy.base)?;
    Ok(ExitCode::SUCCESS)
}

async fn call(proxy: &Proxy, out: &Output, args: CallArgs) -> CmdResult {
    if args.content_type != ContentType::Json || !args.metadata.is_empty() || args.service_version.is_some() {
        return Err(CliError(
            "through --proxy-address a call is JSON without --metadata or --service-version".to_string(),
        )
        .into());
    }
    let body = input::body(args.request.as_deref(), ContentType::Json)?;
    let request: serde_json::Value = serde_json::from_slice(&body)?;
    let rpc = serde_json::json!({"service": args.service, "endpoint": args.endpoint, "request": request});
    let (code, answer) = {
        let _spin = Spinner::start(format!("calling {} {} through the sidecar", args.service, args.endpoint));
        let req = proxy.request(awc::http::Method::POST, "/rpc").timeout(args.timeout + Duration::from_secs(1));
        proxy.send(req, Some(bytes::Bytes::from(rpc.to_string()))).await?
    };
    if code == 200 {
        let value: serde_json::Value =
            serde_json::from_slice(&answer).map_err(|e| CliError(format!("the sidecar's answer is not JSON: {e}")))?;
        out.print_json(&value)?;
        return Ok(ExitCode::SUCCESS);
    }
    match serde_json::from_slice::<Status>(&answer) {
        // The service's own error: printed as `call` prints it.
        Ok(status) if status.id() != GATEWAY_ID => {
            out.print_json(&status)?;
            Ok(ExitCode::from(EXIT_REMOTE))
        }
        _ => Err(sidecar_error(code, &answer).into()),
    }
}

async fn publish(proxy: &Proxy, args: PublishArgs) -> CmdResult {
    if args.content_type != ContentType::Json || !args.metadata.is_empty() {
        return Err(CliError("through --proxy-address an event is JSON without --metadata".to_string()).into());
    }
    if !crate::subject::is_valid(&args.topic, false) {
        return Err(CliError(format!("invalid topic {:?}", args.topic)).into());
    }
    let body = input::body(args.event.as_deref(), ContentType::Json)?;
    let path = format!("/publish/{}{}", args.topic, if args.durable { "?durable=true" } else { "" });
    let (code, answer) = proxy.send(proxy.request(awc::http::Method::POST, &path), Some(body)).await?;
    if !(200..300).contains(&code) {
        return Err(sidecar_error(code, &answer).into());
    }
    let value: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_default();
    let id = value.get("id").and_then(|v| v.as_str()).unwrap_or_default();
    output::line(&serde_json::json!({"id": id, "topic": args.topic}).to_string())?;
    Ok(ExitCode::SUCCESS)
}
