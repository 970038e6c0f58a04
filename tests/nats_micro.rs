//! The NATS services API (ADR-32) both ways, on the NATS server: our nodes answer
//! `$SRV.PING|INFO|STATS` the way the API documents them, checked here with a plain async-nats
//! client; and a service written with another library (nats-py's `nats.micro`, in a real Python
//! process) is listed and called by `micro`.

use std::time::Duration;

use bytes::Bytes;
use micro::prelude::*;
use micro::registry::nats_micro::{self, semver, service_name};
use serde_json::{json, Value};

use crate::util::*;

#[derive(serde::Deserialize, serde::Serialize)]
struct Name {
    name: String,
}

async fn hello(Req(n): Req<Name>) -> Result<Value, Status> {
    if n.name.is_empty() {
        return Err(Status::bad_request("name is required\nreally"));
    }
    Ok(json!({ "msg": format!("Hello {}", n.name) }))
}

/// A request with a plain client, as any NATS tool sends it, answered in JSON.
async fn ask(nc: &async_nats::Client, subject: String) -> Value {
    let reply = nc.request(subject, Bytes::new()).await.unwrap();
    serde_json::from_slice(&reply.payload).unwrap()
}

fn assert_common(v: &Value, kind: &str, name: &str, id: &str) {
    assert_eq!(v["type"], kind);
    assert_eq!(v["name"], name);
    assert_eq!(v["id"], id);
    assert_eq!(v["version"], "1.0.0");
    assert!(v["metadata"].is_object(), "{v}");
    assert!(v["metadata"].as_object().unwrap().values().all(Value::is_string), "{v}");
}

#[actix::test]
async fn nodes_answer_ping_info_and_stats_as_the_api_documents() {
    let url = nats_url();
    let name = unique("greeter");
    let svc =
        Service::builder(&name).transport(&url).version("1.0.0").handle("Say.Hello", hello).start().await.unwrap();
    let nc = async_nats::connect(&url).await.unwrap();
    let api_name = service_name(&name);
    assert!(api_name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'), "{api_name}");

    // PING for the name: exactly the standard fields.
    let ping = ask(&nc, format!("$SRV.PING.{api_name}")).await;
    let id = ping["id"].as_str().unwrap().to_string();
    assert!(!id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()), "{ping}");
    assert_common(&ping, "io.nats.micro.v1.ping_response", &api_name, &id);
    assert_eq!(ping["metadata"]["micro.service"], name.as_str());
    assert_eq!(ping["metadata"]["micro.node"], svc.node_id());
    let keys: Vec<&str> = ping.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 5, "{keys:?}");

    // A bare JSON request to the advertised subject (no headers at all) gets the reply, and an
    // error carries the API's error headers.
    let info = ask(&nc, format!("$SRV.INFO.{api_name}.{id}")).await;
    assert_common(&info, "io.nats.micro.v1.info_response", &api_name, &id);
    assert!(info["description"].is_string());
    let endpoints = info["endpoints"].as_array().unwrap();
    let say = endpoints.iter().find(|e| e["name"] == "Say_Hello").expect("Say.Hello listed");
    assert_eq!(say["subject"], format!("micro.rpc.{name}.Say.Hello"));
    assert_eq!(say["queue_group"], format!("micro.rpc.{name}"));
    assert_eq!(say["metadata"]["micro.endpoint"], "Say.Hello");
    assert!(endpoints.iter().any(|e| e["name"] == "Debug_Health"));
    let subject = say["subject"].as_str().unwrap().to_string();
    for _ in 0..3 {
        let r = nc.request(subject.clone(), Bytes::from_static(br#"{"name":"John"}"#)).await.unwrap();
        assert!(r.headers.is_none_or(|h| h.get("Nats-Service-Error-Code").is_none()));
        let v: Value = serde_json::from_slice(&r.payload).unwrap();
        assert_eq!(v, json!({"msg": "Hello John"}));
    }
    let r = nc.request(subject.clone(), Bytes::from_static(br#"{"name":""}"#)).await.unwrap();
    let h = r.headers.unwrap();
    assert_eq!(h.get("Nats-Service-Error-Code").unwrap().as_str(), "400");
    assert_eq!(h.get("Nats-Service-Error").unwrap().as_str(), "name is required really");

    // STATS counts them per endpoint, in nanoseconds.
    let stats = ask(&nc, format!("$SRV.STATS.{api_name}")).await;
    assert_common(&stats, "io.nats.micro.v1.stats_response", &api_name, &id);
    humantime::parse_rfc3339(stats["started"].as_str().unwrap()).expect("started is RFC 3339");
    let say = stats["endpoints"].as_array().unwrap().iter().find(|e| e["name"] == "Say_Hello").unwrap();
    assert_eq!(say["subject"], subject.as_str());
    assert_eq!(say["num_requests"], 4);
    assert_eq!(say["num_errors"], 1);
    assert_eq!(say["last_error"], "400:name is required\nreally");
    let (total, avg) = (say["processing_time"].as_u64().unwrap(), say["average_processing_time"].as_u64().unwrap());
    assert!(total > 0 && avg == total / 4, "{say}");

    // Asked of all services at once, every node answers: ours is among them.
    let t = micro::transport::connect(&url).await.unwrap();
    let found = nats_micro::discover(&*t, Duration::from_millis(500)).await.unwrap();
    assert!(found.iter().any(|i| i.id == id && i.is_ours()), "{found:?}");
    assert!(nats_micro::foreign_records(&found).iter().all(|r| r.name != api_name));
    svc.stop().await.unwrap();

    // Stopped, it answers no more.
    let e = nc.request(format!("$SRV.PING.{api_name}"), Bytes::new()).await.unwrap_err();
    assert_eq!(e.kind(), async_nats::client::RequestErrorKind::NoResponders);
}

#[actix::test]
async fn versions_that_are_not_semver_are_mapped_and_kept() {
    let url = nats_url();
    let name = unique("greeter");
    let svc = Service::builder(&name).transport(&url).handle("Say.Hello", hello).start().await.unwrap();
    let nc = async_nats::connect(&url).await.unwrap();
    let ping = ask(&nc, format!("$SRV.PING.{}", service_name(&name))).await;
    assert_eq!(ping["version"], semver("latest"));
    assert_eq!(ping["version"], "0.0.0-latest");
    assert_eq!(ping["metadata"]["micro.version"], "latest");
    svc.stop().await.unwrap();
}

#[actix::test]
async fn other_transports_have_no_services_api() {
    let t = micro::transport::connect(&memory_url()).await.unwrap();
    let e = nats_micro::discover(&*t, Duration::from_millis(10)).await.unwrap_err();
    assert_eq!(e.kind(), micro::ErrorKind::Config);
}

/// The Python interpreter with nats-py: `MICRO_TEST_PYTHON`, else the venv `.ci/run` makes.
#[cfg(feature = "cli")]
fn python() -> String {
    let python = std::env::var("MICRO_TEST_PYTHON").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        format!("{home}/.cache/actix-micro-venv/bin/python")
    });
    let ok = std::process::Command::new(&python)
        .args(["-c", "import nats.micro"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "this test needs Python with nats-py at {python} (or MICRO_TEST_PYTHON); install it with:\n  \
         python3 -m venv ~/.cache/actix-micro-venv && ~/.cache/actix-micro-venv/bin/pip install 'nats-py==2.*'"
    );
    python
}

#[cfg(feature = "cli")]
const PY_SERVICE: &str = r#"
import asyncio, json, sys
import nats
from nats.micro import add_service

async def main():
    nc = await nats.connect(sys.argv[1])
    svc = await add_service(nc, name=sys.argv[2], version="1.2.3", description="a nats-py greeter")
    async def hello(req):
        name = json.loads(req.data or b"{}").get("name", "")
        if not name:
            await req.respond_error("400", "name is required")
            return
        await req.respond(json.dumps({"msg": f"Hello {name}"}).encode())
    await svc.add_endpoint(name="hello", subject=f"{sys.argv[2]}.hello", handler=hello)
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"#;

#[cfg(feature = "cli")]
#[actix::test]
async fn a_nats_py_micro_service_is_listed_and_called_by_the_cli() {
    use tokio::io::AsyncBufReadExt;
    let url = nats_url();
    let name = service_name(&unique("pygreeter"));
    let dir = std::env::temp_dir().join(format!("nats-micro-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("service.py");
    std::fs::write(&script, PY_SERVICE).unwrap();
    let mut child = tokio::process::Command::new(python())
        .arg(&script)
        .args([&url, &name])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(WAIT, lines.next_line()).await.expect("the Python service started in time");
    assert_eq!(ready.unwrap().as_deref(), Some("ready"));

    let micro = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_micro"))
                .args(&args)
                .env_remove("MICRO_TRANSPORT")
                .env("NO_COLOR", "1")
                .output()
                .unwrap()
        })
    };
    let args = |rest: &[&str]| {
        let mut v: Vec<String> = vec!["--transport".into(), url.clone(), "--output".into(), "json".into()];
        v.extend(rest.iter().map(|s| s.to_string()));
        v
    };
    let out = micro(args(&["services"])).await.unwrap();
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = rows.as_array().unwrap().iter().find(|r| r["name"] == name.as_str()).expect("listed");
    assert_eq!((row["version"].as_str(), row["nodes"].as_u64()), (Some("1.2.3"), Some(1)));

    let out = micro(args(&["service", &name])).await.unwrap();
    let records: Value = serde_json::from_slice(&out.stdout).unwrap();
    let hello = &records[0]["endpoints"][0];
    assert_eq!(hello["name"], "hello");
    assert_eq!(hello["metadata"]["nats.subject"], format!("{name}.hello"));

    let out = micro(args(&["call", &name, "hello", r#"{"name":"John"}"#])).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply, json!({"msg": "Hello John"}));

    // Its error headers become a status: code and detail, exit 3.
    let out = micro(args(&["call", &name, "hello", "{}"])).await.unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((status["code"].as_u64(), status["detail"].as_str()), (Some(400), Some("name is required")));
    child.kill().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
