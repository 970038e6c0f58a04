//! Logs: JSON lines that parse, one object per line, and carry the trace id of the request they
//! were logged in (in-process through `JsonLines`, and from the `micro` binary with
//! `MICRO_LOG_FORMAT=json`); `RUST_LOG=micro=debug` shows the toolkit's own lines.

use std::io::Write;
use std::sync::{Arc, Mutex};

use micro::prelude::*;
use serde_json::Value;
use tracing_subscriber::layer::SubscriberExt;

use crate::util::*;

const BIN: &str = env!("CARGO_BIN_EXE_micro");

over_brokers!(
    json_lines_inside_a_handler_carry_its_trace,
    the_binary_logs_json_lines_with_the_calls_trace,
    debug_shows_registry_and_selection_lines,
);

/// Bytes written by a subscriber, shared with the test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every line of `text` as a JSON object (failing on a line that is not one).
fn objects(text: &str) -> Vec<serde_json::Map<String, Value>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| match serde_json::from_str::<Value>(l) {
            Ok(Value::Object(o)) => o,
            other => panic!("not a JSON object per line: {l:?} ({other:?})"),
        })
        .collect()
}

/// What a handler saw of its trace: (trace id, span id).
#[derive(Clone, Default)]
struct SeenTrace(Arc<Mutex<Vec<(String, String)>>>);

async fn traced_hello(ctx: CallContext, State(seen): State<SeenTrace>, Req(h): Req<Hello>) -> Result<String, Status> {
    let t = ctx.trace().expect("a handler is always inside a trace");
    seen.0.lock().unwrap().push((t.trace_id(), t.span_id()));
    tracing::info!(name = %h.name, "handling a greeting");
    Ok(format!("Hello {}", h.name))
}

fn traced_service(url: &str, name: &str, seen: &SeenTrace) -> micro::ServiceBuilder {
    Service::builder(name).transport(url).state(seen.clone()).handle("Say.Hello", traced_hello)
}

async fn json_lines_inside_a_handler_carry_its_trace(url: String) {
    let out = Captured::default();
    let writer = out.clone();
    let layer =
        tracing_subscriber::fmt::layer().event_format(micro::telemetry::JsonLines).with_writer(move || writer.clone());
    let _default = scoped_subscriber(tracing_subscriber::registry().with(layer));
    let (name, seen) = (unique("logged"), SeenTrace::default());
    let svc = traced_service(&url, &name, &seen).start().await.unwrap();
    let client = Client::connect(&url).await.unwrap();
    tracing::info!("outside any request");
    for who in ["ada", "bob"] {
        let reply: String = client.call(&name, "Say.Hello", &Hello { name: who.into() }).await.unwrap();
        assert_eq!(reply, format!("Hello {who}"));
    }
    svc.stop().await.unwrap();

    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let lines = objects(&text);
    let outside = lines.iter().find(|o| o["message"] == "outside any request").expect("the line outside");
    assert!(!outside.contains_key("trace_id"), "no trace outside a request: {outside:?}");
    let inside: Vec<_> = lines.iter().filter(|o| o["message"] == "handling a greeting").collect();
    let seen = seen.0.lock().unwrap().clone();
    assert_eq!(inside.len(), 2, "{text}");
    for (line, (trace, span)) in inside.iter().zip(&seen) {
        assert_eq!(line["trace_id"].as_str(), Some(trace.as_str()), "{line:?}");
        assert_eq!(line["span_id"].as_str(), Some(span.as_str()), "{line:?}");
        assert_eq!(line["level"], "INFO");
        assert!(line["timestamp"].as_str().is_some_and(|t| !t.is_empty()));
        assert_eq!(line["span"], "rpc.server");
    }
    assert_ne!(seen[0].0, seen[1].0, "two calls from outside any trace are two traces");
}

/// Runs `micro` with these arguments and environment; returns (success, stdout, stderr).
async fn micro_with_env(args: Vec<String>, env: Vec<(&'static str, &'static str)>) -> (bool, String, String) {
    tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(&args)
            .env_remove("MICRO_TRANSPORT")
            .env_remove("MICRO_LOG")
            .env_remove("RUST_LOG")
            .env_remove("MICRO_LOG_FORMAT")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env("NO_COLOR", "1");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("the micro binary runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

fn call_args(url: &str, name: &str) -> Vec<String> {
    ["call", name, "Say.Hello", r#"{"name": "John"}"#, "--transport", url, "--timeout", "10s"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

async fn the_binary_logs_json_lines_with_the_calls_trace(url: String) {
    let (name, seen) = (unique("logged"), SeenTrace::default());
    let svc = traced_service(&url, &name, &seen).start().await.unwrap();
    let env = vec![("MICRO_LOG", "micro=debug"), ("MICRO_LOG_FORMAT", "json")];
    let (ok, stdout, stderr) = micro_with_env(call_args(&url, &name), env).await;
    assert!(ok, "micro call failed: {stdout}\n{stderr}");
    assert!(stdout.contains("Hello John"), "{stdout}");
    let lines = objects(&stderr);
    let selected = lines.iter().find(|o| o["message"] == "node selected").unwrap_or_else(|| panic!("{stderr}"));
    let (trace, _) = seen.0.lock().unwrap()[0].clone();
    assert_eq!(
        selected["trace_id"].as_str(),
        Some(trace.as_str()),
        "the client's line and the handler share the trace"
    );
    assert_eq!(selected["span"], "rpc.client");
    assert!(selected["span_id"].as_str().is_some_and(|s| s.len() == 16), "{selected:?}");
    assert!(!stderr.contains("John"), "no bodies in logs: {stderr}");
    svc.stop().await.unwrap();
}

async fn debug_shows_registry_and_selection_lines(url: String) {
    let (name, seen) = (unique("logged"), SeenTrace::default());
    let svc = traced_service(&url, &name, &seen).start().await.unwrap();
    let (ok, stdout, stderr) = micro_with_env(call_args(&url, &name), vec![("RUST_LOG", "micro=debug")]).await;
    assert!(ok, "micro call failed: {stdout}\n{stderr}");
    for line in ["registry: node announced", "node selected"] {
        assert!(stderr.contains(line), "RUST_LOG=micro=debug shows {line:?}:\n{stderr}");
    }
    assert!(stderr.contains(&name), "{stderr}");
    // Without it, a tool says nothing on stderr.
    let (ok, _, quiet) = micro_with_env(call_args(&url, &name), vec![]).await;
    assert!(ok && quiet.trim().is_empty(), "{quiet}");
    svc.stop().await.unwrap();
}
