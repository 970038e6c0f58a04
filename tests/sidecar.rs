//! The sidecar with a real Python app (tests/sidecar_app.py, standard library only) over NATS
//! and RabbitMQ: calls both ways, events over the WebSocket and durably over HTTP, the health
//! check driving the registration, the CLI through `--proxy-address`.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use micro::prelude::*;
use micro::sidecar::{Sidecar, SidecarConfig, SidecarHandle};
use serde_json::{json, Value};

use crate::util::*;

over_brokers!(
    rust_and_python_call_each_other_through_the_sidecar,
    the_app_gets_events_over_the_websocket_and_durably,
    a_failing_health_check_takes_the_app_out_of_the_registry,
    an_app_that_is_slow_too_big_or_hangs_up_gets_typed_errors,
    the_cli_lists_calls_and_publishes_through_the_sidecar,
    the_micro_sidecar_binary_serves_the_app_and_deregisters_on_sigterm,
);

const APP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sidecar_app.py");

/// The Python app, killed on drop.
struct PyApp {
    child: Child,
    port: u16,
}

impl PyApp {
    fn start() -> PyApp {
        let mut child = Command::new("python3")
            .arg(APP)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run python3 ({e}); install it with: apt-get install -y python3"));
        let mut line = String::new();
        let stdout = child.stdout.take().expect("the app's stdout");
        std::io::BufReader::new(stdout).read_line(&mut line).expect("the app says where it listens");
        let port = line.trim().strip_prefix("LISTENING ").and_then(|p| p.parse().ok());
        let port = port.unwrap_or_else(|| panic!("the app did not start: {line:?}"));
        PyApp { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn control(&self, path: &str, body: Value) -> Value {
        let mut rsp = http().post(format!("{}{path}", self.url())).send_json(&body).await.unwrap();
        let status = rsp.status();
        let body = rsp.body().await.unwrap();
        assert!(status.is_success(), "{path}: {status} {}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).unwrap()
    }

    async fn events(&self) -> Vec<Value> {
        let mut rsp = http().get(format!("{}/control/events", self.url())).send().await.unwrap();
        let v: Value = rsp.json().await.unwrap();
        v["events"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until the app has received `n` events matching `pick`.
    async fn wait_events(&self, what: &str, n: usize, pick: impl Fn(&Value) -> bool) -> Vec<Value> {
        wait_for(what, WAIT, || async {
            let got: Vec<Value> = self.events().await.into_iter().filter(|e| pick(e)).collect();
            (got.len() >= n).then_some(got)
        })
        .await
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PyApp {
    fn drop(&mut self) {
        self.kill();
    }
}

fn http() -> awc::Client {
    awc::Client::builder().timeout(Duration::from_secs(20)).finish()
}

fn config(url: &str, name: &str, app: &PyApp) -> SidecarConfig {
    SidecarConfig::new(name, app.url()).transport(url).address("127.0.0.1:0".parse().unwrap())
}

/// Starts the sidecar, tells the app where it is, waits until the app is registered.
async fn start(config: SidecarConfig, app: &PyApp, token: Option<&str>) -> SidecarHandle {
    let mut sidecar = Sidecar::new(config).start().await.unwrap();
    let base = format!("http://{}", sidecar.address());
    app.control("/control/config", json!({"sidecar": base, "token": token})).await;
    tokio::time::timeout(WAIT, sidecar.wait_registered(true)).await.expect("the app is registered");
    sidecar
}

async fn registered(client: &Client, name: &str) -> bool {
    !client.registry().get_service(name).await.unwrap().is_empty()
}

async fn rust_and_python_call_each_other_through_the_sidecar(url: String) {
    let mut app = PyApp::start();
    let (name, greeter_name) = (unique("py"), unique("greeter"));
    let greeter = greeter(&url, &greeter_name, "rust").start().await.unwrap();
    let sidecar = start(config(&url, &name, &app).token("s3cret"), &app, Some("s3cret")).await;
    let client = Client::builder().name("tester").transport(&url).connect().await.unwrap();

    // Endpoints and version from the app's .well-known/micro.
    let records = client.registry().get_service(&name).await.unwrap();
    let record = records.first().expect("registered");
    assert_eq!(record.version, "1.0.0");
    let mut endpoints: Vec<&str> =
        record.endpoints.iter().map(|e| e.name.as_str()).filter(|e| !e.starts_with("Debug.")).collect();
    endpoints.sort_unstable();
    assert_eq!(endpoints, ["Say.Call", "Say.Hello"]);

    // Rust calls Python: the body as JSON, the context (deadline, caller, trace, metadata) as
    // headers.
    let opts = CallOptions::new().timeout(Duration::from_secs(5)).metadata("tenant", "acme");
    let reply: Value = client.call_with(&name, "Say.Hello", &json!({"name": "Ada"}), opts).await.unwrap();
    assert_eq!(reply["msg"], "Hello Ada");
    assert_eq!(reply["endpoint"], "Say.Hello");
    assert_eq!(reply["caller"], "tester");
    assert_eq!(reply["has_deadline"], true);
    assert_eq!(reply["tenant"], "acme");
    assert!(reply["traceparent"].as_str().is_some_and(|t| t.starts_with("00-")), "{reply}");

    // The app's error statuses are the caller's codes, its body the detail.
    let e = client.call::<_, Value, _>(&name, "Say.Hello", &json!({"name": ""})).await.unwrap_err();
    let status = e.status().expect("a remote status");
    assert_eq!((status.code(), status.detail()), (Code::BAD_REQUEST, "name is required"));
    let e = client.call::<_, Value, _>(&name, "Say.Hello", &json!({"name": "conflict"})).await.unwrap_err();
    assert_eq!(e.status().map(|s| s.code()), Some(Code::CONFLICT));

    // Python calls Rust through the sidecar's /rpc.
    let reply: Value =
        client.call(&name, "Say.Call", &json!({"service": greeter_name, "name": "Grace"})).await.unwrap();
    assert_eq!(reply, json!({"msg": "Hello Grace", "node": "rust"}));

    // The HTTP API wants the token; the registry is there with it.
    let base = format!("http://{}", sidecar.address());
    let rsp = http().get(format!("{base}/registry")).send().await.unwrap();
    assert_eq!(rsp.status().as_u16(), 401);
    let mut rsp = http().get(format!("{base}/registry/{name}")).bearer_auth("s3cret").send().await.unwrap();
    assert_eq!(rsp.status().as_u16(), 200);
    let records: Value = rsp.json().await.unwrap();
    assert_eq!(records[0]["name"], name.as_str());
    let mut rsp = http().get(format!("{base}/registry")).bearer_auth("s3cret").send().await.unwrap();
    let all: Value = rsp.json().await.unwrap();
    assert!(all.as_array().unwrap().iter().any(|s| s["name"] == greeter_name.as_str()), "{all}");
    let rsp = http().get(format!("{base}/registry/{}", unique("none"))).bearer_auth("s3cret").send().await.unwrap();
    assert_eq!(rsp.status().as_u16(), 404);

    // The app is gone (no health check here, so still registered): 503.
    app.kill();
    let e = client.call::<_, Value, _>(&name, "Say.Hello", &json!({"name": "Ada"})).await.unwrap_err();
    assert_eq!(e.status().map(|s| s.code()), Some(Code::UNAVAILABLE), "{e}");

    sidecar.stop().await.unwrap();
    wait_for("the stopped sidecar's deregistration", WAIT, || async {
        (!registered(&client, &name).await).then_some(())
    })
    .await;
    greeter.stop().await.unwrap();
}

async fn the_app_gets_events_over_the_websocket_and_durably(url: String) {
    let app = PyApp::start();
    let name = unique("py");
    let (live, orders) = (unique("live"), unique("order"));
    let config = config(&url, &name, &app)
        .endpoint("Say.Hello")
        .subscribe_durable(format!("{orders}.>"), "/events/order")
        .durable_attempts(2)
        .durable_backoff(Duration::from_millis(100), Duration::from_millis(200))
        .durable_expire_after(Duration::from_secs(120));
    let sidecar = start(config, &app, None).await;
    let client = Client::builder().name("tester").transport(&url).connect().await.unwrap();
    let broker = client.broker();
    let mut dead = broker
        .subscribe_durable(
            &format!("{name}.dlq"),
            SubscribeOptions::durable(unique("ops")).expire_after(Duration::from_secs(120)),
        )
        .await
        .unwrap();

    // Over the WebSocket: an event the app itself publishes through the sidecar.
    app.control("/control/subscribe", json!({"topic": live})).await;
    let published = app.control("/control/publish", json!({"topic": live, "event": {"n": 1}})).await;
    let got = app.wait_events("the live event over the WebSocket", 1, |e| e["via"] == "ws").await;
    assert_eq!((&got[0]["topic"], &got[0]["data"], &got[0]["id"]), (&json!(live), &json!({"n": 1}), &published["id"]));

    // Durably over HTTP: the first 500 is retried, then acknowledged.
    broker.publish_durable(&format!("{orders}.created"), &json!({"order": 7, "fail": "once"})).await.unwrap();
    let got = app.wait_events("the retried durable event", 2, |e| e["via"] == "http" && e["data"]["order"] == 7).await;
    assert_eq!(got[0]["id"], got[1]["id"], "the same event twice");
    assert_eq!(got[0]["topic"], format!("{orders}.created"));

    // An event the app always fails: dead-lettered after the configured 2 attempts.
    broker.publish_durable(&format!("{orders}.poison"), &json!({"order": 8, "fail": "always"})).await.unwrap();
    let letter = tokio::time::timeout(WAIT, futures::StreamExt::next(&mut dead))
        .await
        .expect("the poison event is dead-lettered")
        .unwrap();
    let data: Value = letter.decode().unwrap();
    assert_eq!(data["order"], 8);
    assert_eq!(letter.headers().get(micro::broker::dlq_headers::ATTEMPTS), Some("2"));
    letter.ack().await.unwrap();
    let tries = app.events().await.into_iter().filter(|e| e["data"]["order"] == 8).count();
    assert_eq!(tries, 2);

    // A page on another site cannot open the WebSocket.
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{}/subscribe?topic={live}",
        sidecar.address()
    ))
    .unwrap();
    req.headers_mut().insert("origin", "http://evil.example".parse().unwrap());
    let refused = tokio_tungstenite::connect_async(req).await.unwrap_err();
    assert!(refused.to_string().contains("403"), "{refused}");

    sidecar.stop().await.unwrap();
    broker.delete_durable(&format!("{orders}.>"), &name).await.ok();
}

async fn a_failing_health_check_takes_the_app_out_of_the_registry(url: String) {
    let app = PyApp::start();
    let name = unique("py");
    let config = config(&url, &name, &app).endpoint("Say.Hello").health("/health", Duration::from_millis(200));
    let sidecar = start(config, &app, None).await;
    let client = Client::builder().name("tester").transport(&url).connect().await.unwrap();
    assert!(registered(&client, &name).await);

    app.control("/control/health", json!({"ok": false})).await;
    wait_for("deregistration after the failed check", WAIT, || async {
        (!registered(&client, &name).await).then_some(())
    })
    .await;
    assert!(!sidecar.is_registered());

    app.control("/control/health", json!({"ok": true})).await;
    wait_for("registration after recovery", WAIT, || async { registered(&client, &name).await.then_some(()) }).await;
    let reply: Value = client.call(&name, "Say.Hello", &json!({"name": "again"})).await.unwrap();
    assert_eq!(reply["msg"], "Hello again");
    sidecar.stop().await.unwrap();
}

/// What can go wrong between the sidecar and its app, each a typed error to the caller; and
/// connections the app closes behind the sidecar's back cost no call.
async fn an_app_that_is_slow_too_big_or_hangs_up_gets_typed_errors(url: String) {
    let app = PyApp::start();
    let name = unique("py");
    let mut config = config(&url, &name, &app).timeout(Duration::from_secs(1));
    for endpoint in ["Say.Hello", "Say.Slow", "Say.Big", "Say.Close", "Say.Hangup"] {
        config = config.endpoint(endpoint);
    }
    let sidecar = start(config, &app, None).await;
    let client = Client::builder().name("tester").transport(&url).connect().await.unwrap();
    let call = |endpoint: &'static str, body: Value| call_to(&client, name.clone(), endpoint, body);

    // The app closes the connection after every other answer (`Connection: close`): the next
    // request goes out on a new one. (An app that closes without saying so races the next
    // request: one written before the close is seen is a 502, never sent twice.)
    for i in 0..40 {
        let (endpoint, body) =
            if i % 2 == 0 { ("Say.Close", json!({})) } else { ("Say.Hello", json!({"name": "Ada"})) };
        let reply = call(endpoint, body).await.unwrap_or_else(|e| panic!("call {i} to {endpoint}: {e}"));
        assert!(reply == json!({"closed": true}) || reply["msg"] == "Hello Ada", "{reply}");
    }
    // The app drops its idle connections between calls (as servers with a keep-alive timeout
    // do): the sidecar's pooled one is gone, the call is not.
    for i in 0..10 {
        let closed = app.control("/control/close-idle", json!({})).await;
        assert!(closed["closed"].as_u64() >= Some(1), "round {i}: the sidecar kept no connection: {closed}");
        let reply = call("Say.Hello", json!({"name": "Ada"})).await.unwrap_or_else(|e| panic!("round {i}: {e}"));
        assert_eq!(reply["msg"], "Hello Ada");
    }

    // Too slow for the sidecar's 1 s: 408, and the next call is served.
    let e = call("Say.Slow", json!({"secs": 3})).await.unwrap_err();
    assert_eq!(e.status().map(|s| s.code()), Some(Code::TIMEOUT), "{e}");
    assert_eq!(call("Say.Hello", json!({"name": "Ada"})).await.unwrap()["msg"], "Hello Ada");

    // An answer over 4 MiB is not read: 502.
    let e = call("Say.Big", json!({})).await.unwrap_err();
    let status = e.status().expect("a remote status");
    assert_eq!(status.code(), Code::BAD_GATEWAY, "{e}");
    assert!(status.detail().contains("larger than 4 MiB"), "{e}");

    // The app took the request and hung up: 502, not the 503 that callers retry (the app may
    // have acted on it); the detail says why.
    let e = call("Say.Hangup", json!({})).await.unwrap_err();
    let status = e.status().expect("a remote status");
    assert_eq!((status.code(), status.id()), (Code::BAD_GATEWAY, name.as_str()), "{e}");
    assert!(status.detail().contains("Say.Hangup: the app at") && status.detail().contains("no answer"), "{e}");
    assert_eq!(call("Say.Hello", json!({"name": "Ada"})).await.unwrap()["msg"], "Hello Ada");
    sidecar.stop().await.unwrap();

    // An app mounted below a base path: every app path goes under it.
    let name = unique("py");
    let prefixed = SidecarConfig::new(&name, format!("{}/prefix/", app.url()))
        .transport(&url)
        .address("127.0.0.1:0".parse().unwrap())
        .endpoint("Say.Hello");
    let sidecar = start(prefixed, &app, None).await;
    let reply = call_to(&client, name, "Say.Hello", json!({"name": "Bo"})).await.unwrap();
    assert_eq!(reply["msg"], "Hello Bo");
    sidecar.stop().await.unwrap();
}

/// A call made once: a failure is the sidecar's answer, not hidden by the client's retries.
async fn call_to(client: &Client, name: String, endpoint: &str, body: Value) -> micro::Result<Value> {
    let opts = CallOptions::new().timeout(Duration::from_secs(10)).retry(RetryPolicy::none());
    client.call_with(&name, endpoint, &body, opts).await
}

async fn micro_through(sidecar: &SidecarHandle, args: &[&str]) -> assert_cmd::assert::Assert {
    let mut all = vec!["--proxy-address".to_string(), format!("http://{}", sidecar.address())];
    all.extend(args.iter().map(|s| s.to_string()));
    tokio::task::spawn_blocking(move || {
        assert_cmd::Command::new(env!("CARGO_BIN_EXE_micro"))
            .args(&all)
            // No broker for the CLI: only the sidecar can answer.
            .env("MICRO_TRANSPORT", "nats://127.0.0.1:1")
            .env_remove("MICRO_OUTPUT")
            .env("NO_COLOR", "1")
            .timeout(Duration::from_secs(30))
            .assert()
    })
    .await
    .unwrap()
}

async fn the_cli_lists_calls_and_publishes_through_the_sidecar(url: String) {
    let app = PyApp::start();
    let name = unique("py");
    let sidecar = start(config(&url, &name, &app).endpoint("Say.Hello"), &app, None).await;

    let out = micro_through(&sidecar, &["services", "-o", "json"]).await.success();
    let rows: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert!(rows.as_array().unwrap().iter().any(|r| r["name"] == name.as_str() && r["nodes"] == 1), "{rows}");

    let out = micro_through(&sidecar, &["call", &name, "Say.Hello", r#"{"name": "cli"}"#]).await.success();
    let reply: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(reply["msg"], "Hello cli");
    let out = micro_through(&sidecar, &["call", &name, "Say.Hello", r#"{"name": ""}"#]).await.code(3);
    let status: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!((status["code"].as_u64(), status["detail"].as_str()), (Some(400), Some("name is required")));

    let topic = unique("cli");
    let client = Client::builder().name("tester").transport(&url).connect().await.unwrap();
    let mut events = client.broker().subscribe(&topic, SubscribeOptions::broadcast()).await.unwrap();
    client.transport().flush().await.unwrap();
    let out = micro_through(&sidecar, &["publish", &topic, r#"{"via": "cli"}"#]).await.success();
    let line: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let event = tokio::time::timeout(WAIT, futures::StreamExt::next(&mut events)).await.unwrap().unwrap();
    assert_eq!(event.id, line["id"].as_str().unwrap());
    assert_eq!(event.decode::<Value>().unwrap(), json!({"via": "cli"}));

    micro_through(&sidecar, &["health", &name]).await.code(1);
    sidecar.stop().await.unwrap();
}

/// The `micro-sidecar` binary: the same flags as `micro sidecar`, the app served over the
/// broker until SIGTERM, which deregisters it and exits 0.
async fn the_micro_sidecar_binary_serves_the_app_and_deregisters_on_sigterm(url: String) {
    let app = PyApp::start();
    let name = unique("py-bin");
    let mut sidecar = Command::new(env!("CARGO_BIN_EXE_micro-sidecar"))
        .args(["--transport", &url, "--name", &name, "--app", &app.url(), "--endpoint", "Say.Hello"])
        .args(["--address", "127.0.0.1:0", "--health", "/health", "--health-interval", "200ms"])
        .env("MICRO_LOG", "warn")
        .spawn()
        .expect("micro-sidecar runs");
    let client = Client::builder().name("tester").transport(&url).connect().await.unwrap();
    wait_for("the app registered by micro-sidecar", WAIT, || async { registered(&client, &name).await.then_some(()) })
        .await;
    let reply: Value = client.call(&name, "Say.Hello", &json!({"name": "bin"})).await.unwrap();
    assert_eq!(reply["msg"], "Hello bin");
    let e = client.call::<_, Value, _>(&name, "Say.Hello", &json!({"name": ""})).await.unwrap_err();
    assert_eq!(e.status().map(|s| (s.code().as_u16(), s.detail().to_string())), Some((400, "name is required".into())));
    // A JSON caller's body reaches the app as it is, and the app's JSON comes back as it is.
    let body = bytes::Bytes::from_static(br#"{"name": "json"}"#);
    let reply = client.call_raw(&name, "Say.Hello", body, Codec::Json, CallOptions::default()).await.unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&reply.body).unwrap()["msg"], "Hello json");
    // A body that is not JSON is the caller's 400, and the app never sees it.
    let body = bytes::Bytes::from_static(b"{\"name\": ");
    let e = client.call_raw(&name, "Say.Hello", body, Codec::Json, CallOptions::default()).await.unwrap_err();
    let status = e.status().expect("a remote status");
    assert_eq!(status.code().as_u16(), 400, "{status:?}");
    assert!(status.detail().starts_with("cannot decode Say.Hello request"), "{status:?}");

    let term = Command::new("kill").args(["-TERM", &sidecar.id().to_string()]).status().unwrap();
    assert!(term.success());
    let status = tokio::task::spawn_blocking(move || sidecar.wait()).await.unwrap().unwrap();
    assert!(status.success(), "micro-sidecar exited with {status}");
    wait_for("deregistration by the stopped micro-sidecar", WAIT, || async {
        (!registered(&client, &name).await).then_some(())
    })
    .await;
}

/// `micro-sidecar` refuses an address other machines can reach without `--token`, before it
/// connects anywhere.
#[test]
fn the_micro_sidecar_binary_refuses_an_open_address_without_a_token() {
    let out = assert_cmd::Command::new(env!("CARGO_BIN_EXE_micro-sidecar"))
        .args(["--transport", "nats://127.0.0.1:1", "--name", "py", "--app", "http://127.0.0.1:9"])
        .args(["--address", "0.0.0.0:0"])
        .timeout(Duration::from_secs(30))
        .assert()
        .code(1);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(stderr.contains("--token"), "{stderr}");
}
