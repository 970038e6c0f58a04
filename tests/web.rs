//! The web dashboard: its HTTP rules (at the user's level, over memory) and, in a real browser
//! (headless Chromium driven through chromedriver), what an operator does with it over NATS and
//! RabbitMQ. Screenshots of the main pages go to `target/screenshots/`.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::key::Key;
use fantoccini::{Client as Browser, ClientBuilder, Locator};
use futures::StreamExt;
use micro::prelude::*;
use micro::registry::RegistryOptions;
use micro::web::{Web, WebConfig};
use serde::{Deserialize, Serialize};

use crate::util::{free_port, greeter, memory_url, unique, wait_for, ChildNode, WAIT};

const INSTALL: &str = "apt-get install -y chromium chromium-driver";

/// The environment variable that makes the test binary a greeter child with a short TTL.
pub const CHILD_ENV: &str = "MICRO_TEST_CHILD_WEB";

/// A greeter in a child process whose registration expires 2 s after its last heartbeat, so a
/// `kill -9` shows on the dashboard quickly.
#[derive(Serialize, Deserialize, Debug)]
pub struct WebChild {
    pub url: String,
    pub service: String,
}

pub fn run_child(config: WebChild) -> ! {
    let code = actix_rt::System::new().block_on(async move {
        let options = RegistryOptions::default().ttl(Duration::from_secs(2)).heartbeat(Duration::from_millis(500));
        match greeter(&config.url, &config.service, "child").registry_options(options).run().await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("web child stopped: {e}");
                3
            }
        }
    });
    std::process::exit(code)
}

/// A dashboard on a free port, stopped on drop.
struct TestWeb {
    addr: std::net::SocketAddr,
    handle: actix_web::dev::ServerHandle,
    web: Web,
}

impl TestWeb {
    async fn start(url: &str, config: WebConfig) -> TestWeb {
        let client = Client::builder().name(micro::web::WEB_ID).transport(url).connect().await.unwrap();
        let web = Web::new(client, config);
        let app = web.clone();
        let server = HttpServer::new(move || app.app()).workers(1).bind("127.0.0.1:0").expect("bind a free port");
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        TestWeb { addr, handle, web }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for TestWeb {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        actix_rt::spawn(async move { handle.stop(false).await });
    }
}

// ---- HTTP rules, no browser ----

fn http() -> awc::Client {
    awc::Client::builder().timeout(WAIT).finish()
}

async fn post(web: &TestWeb, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let mut rsp = http().post(web.url(path)).send_json(&body).await.unwrap();
    let status = rsp.status().as_u16();
    (status, rsp.json().limit(1 << 20).await.unwrap_or_default())
}

#[actix::test]
async fn the_api_answers_bad_input_as_the_gateway_does() {
    let url = memory_url();
    let name = unique("web");
    let _svc = greeter(&url, &name, "a").start().await.unwrap();
    let web = TestWeb::start(&url, WebConfig::default().max_body(1024)).await;

    let call = |request: &str| serde_json::json!({"service": name, "endpoint": "Say.Hello", "request": request});
    let (status, body) = post(&web, "/api/call", call(r#"{"name": "John"}"#)).await;
    assert_eq!((status, body["reply"]["msg"].as_str()), (200, Some("Hello John")), "{body}");
    assert!(body["latency_ms"].as_f64().is_some(), "{body}");
    // The service's own 400, with its detail, under `error`.
    let (status, body) = post(&web, "/api/call", call(r#"{"name": 5}"#)).await;
    assert_eq!((status, body["error"]["code"].as_u64()), (400, Some(400)), "{body}");
    assert!(body["error"]["detail"].as_str().unwrap_or_default().contains("Say.Hello"), "{body}");
    // The dashboard's own refusals are the gateway's error bodies.
    let (status, body) = post(&web, "/api/call", call("{not json")).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["detail"].as_str().unwrap_or_default().contains("request is not valid JSON"), "{body}");
    let (status, body) = post(&web, "/api/call", call(&"x".repeat(2000))).await;
    assert_eq!((status, body["code"].as_u64()), (413, Some(413)), "{body}");
    let (status, _) = post(&web, "/api/publish", serde_json::json!({"topic": "a.*", "body": "{}"})).await;
    assert_eq!(status, 400, "publishing to a pattern");
    let rsp = http()
        .post(web.url("/api/publish"))
        .insert_header(("origin", "https://evil.example"))
        .send_json(&serde_json::json!({"topic": "a.b", "body": "{}"}))
        .await
        .unwrap();
    assert_eq!(rsp.status().as_u16(), 403, "a cross-site POST is refused");
    let mut rsp = http().get(web.url(&format!("/api/nodes/{name}"))).send().await.unwrap();
    let nodes: serde_json::Value = rsp.json().await.unwrap();
    assert_eq!(nodes[0]["health"]["ok"]["status"], "ok", "{nodes}");
    assert_eq!(nodes[0]["stats"]["ok"]["service"], name.as_str(), "{nodes}");
    let rsp = http().get(web.url("/service/test.nobody")).send().await.unwrap();
    assert_eq!(rsp.status().as_u16(), 404);
    let rsp = http().get(web.url("/nobody/x")).send().await.unwrap();
    assert_eq!(rsp.status().as_u16(), 503, "the proxy finds no go.micro.web.nobody");
}

#[actix::test]
async fn actions_are_off_on_a_non_loopback_address_unless_allowed() {
    let url = memory_url();
    let name = unique("web");
    let _svc = greeter(&url, &name, "a").start().await.unwrap();
    let open: std::net::SocketAddr = "0.0.0.0:8082".parse().unwrap();
    let web = TestWeb::start(&url, WebConfig::default().address(open)).await;
    let call = serde_json::json!({"service": name, "endpoint": "Say.Hello", "request": r#"{"name": "x"}"#});
    let (status, body) = post(&web, "/api/call", call.clone()).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["detail"].as_str().unwrap_or_default().contains("--allow-actions"), "{body}");
    let (status, _) = post(&web, "/api/publish", serde_json::json!({"topic": "a.b"})).await;
    assert_eq!(status, 403);
    let rsp = http().get(web.url("/live/events?topic=a.b")).send().await.unwrap();
    assert_eq!(rsp.status().as_u16(), 403);
    let mut page = http().get(web.url(&format!("/service/{name}"))).send().await.unwrap();
    let page = String::from_utf8_lossy(&page.body().await.unwrap()).into_owned();
    assert!(page.contains("--allow-actions") && !page.contains("call-form"), "no form, a notice");

    let allowed = TestWeb::start(&url, WebConfig::default().address(open).allow_actions(true)).await;
    let (status, body) = post(&allowed, "/api/call", call).await;
    assert_eq!(status, 200, "{body}");
}

#[actix::test]
async fn the_live_view_sends_only_the_node_that_changed() {
    let url = memory_url();
    let name = unique("web");
    let _first = greeter(&url, &format!("{name}.a"), "a").start().await.unwrap();
    let web = TestWeb::start(&url, WebConfig::default()).await;
    let mut rsp = http().get(web.url("/live/registry")).send().await.unwrap();
    assert_eq!(rsp.headers().get("content-type").unwrap(), "text/event-stream");
    let second = greeter(&url, &format!("{name}.b"), "b").start().await.unwrap();
    let mut seen = String::new();
    let deadline = Instant::now() + WAIT;
    let data = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, rsp.next()).await;
        let chunk = chunk.unwrap_or_else(|_| panic!("no change on the live stream after {WAIT:?}: {seen:?}"));
        seen.push_str(&String::from_utf8_lossy(&chunk.expect("the stream ended").unwrap()));
        if let Some(d) = seen.lines().find_map(|l| l.strip_prefix("data: ")) {
            break d.to_string();
        }
    };
    let change: serde_json::Value = serde_json::from_str(&data).unwrap();
    assert_eq!(change["action"], "added");
    assert_eq!(change["service"], format!("{name}.b"));
    assert_eq!(change["node"], second.node_id());
    assert!(!data.contains(&format!("{name}.a")), "only the change travels: {data}");

    // Closing the streams ends an open page's stream, so a graceful shutdown need not wait.
    web.web.close_streams();
    let ended = tokio::time::timeout(WAIT, async {
        while let Some(chunk) = rsp.next().await {
            chunk.unwrap();
        }
    })
    .await;
    assert!(ended.is_ok(), "the live stream is still open after close_streams");
}

// ---- in a browser ----

/// chromedriver on a free port with a fresh Chromium profile; both gone on drop.
struct Driver {
    child: Child,
    port: u16,
    profile: PathBuf,
}

impl Driver {
    async fn start() -> Driver {
        for bin in ["chromium", "chromedriver"] {
            let found = Command::new(bin).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
            assert!(found.is_ok_and(|s| s.success()), "{bin} is missing: install it with `{INSTALL}`");
        }
        let port = free_port();
        // In a process group of its own, so that dropping it ends the browsers it started too,
        // even when a test fails before closing its session.
        let child = Command::new("chromedriver")
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start chromedriver ({e}): install it with `{INSTALL}`"));
        let profile = std::env::temp_dir().join(unique("chromium-profile"));
        let driver = Driver { child, port, profile };
        wait_for("chromedriver to listen", WAIT, || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()
        })
        .await;
        driver
    }

    async fn browser(&self) -> Browser {
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,900",
        ];
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", self.profile.display()));
        let caps = serde_json::json!({"goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}});
        let serde_json::Value::Object(caps) = caps else { unreachable!() };
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .unwrap_or_else(|e| panic!("cannot start a Chromium session ({e}); is it installed? `{INSTALL}`"))
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Waits until `script` (a JS expression) is true in the page; on a timeout, says what the
/// page shows and where the focus is.
async fn until(b: &Browser, what: &str, script: &str) {
    let script = format!("return !!({script});");
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if b.execute(&script, vec![]).await.ok().and_then(|v| v.as_bool()) == Some(true) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let page = b
        .execute("return [document.activeElement && document.activeElement.id, document.body.innerText]", vec![])
        .await
        .unwrap_or_default();
    panic!("timed out after {WAIT:?} waiting for {what}; focus and page: {page}");
}

async fn text(b: &Browser, css: &str) -> String {
    b.find(Locator::Css(css)).await.unwrap().text().await.unwrap()
}

/// Presses keys on the keyboard, whatever has the focus.
async fn press(b: &Browser, keys: &[char]) {
    let mut actions = KeyActions::new("keyboard".into());
    for &k in keys {
        actions = actions.then(KeyAction::Down { value: k }).then(KeyAction::Up { value: k });
    }
    b.perform_actions(actions).await.unwrap();
}

/// Presses Tab until the focused element `el` satisfies `test` (a JS expression).
async fn tab_until(b: &Browser, what: &str, test: &str) {
    let script = format!("const el = document.activeElement; return !!(el && ({test}));");
    for _ in 0..60 {
        if b.execute(&script, vec![]).await.unwrap().as_bool() == Some(true) {
            return;
        }
        press(b, &[Key::Tab.into()]).await;
    }
    panic!("Tab never reached {what}");
}

/// Presses Tab until the element with `id` has the focus.
async fn tab_to(b: &Browser, id: &str) {
    tab_until(b, &format!("#{id}"), &format!("el.id === '{id}'")).await
}

async fn screenshot(b: &Browser, name: &str) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.png")), b.screenshot().await.unwrap()).unwrap();
}

const HELLO_PAGE: &str = include_str!("../examples/web_hello/page.html");

/// The web_hello example's HTTP side (its page and WebSocket echo), on a free port.
fn hello_backend() -> (std::net::SocketAddr, actix_web::dev::ServerHandle) {
    async fn page() -> HttpResponse {
        HttpResponse::Ok().content_type("text/html; charset=utf-8").body(HELLO_PAGE)
    }
    async fn echo(req: HttpRequest, body: web::Payload) -> Result<HttpResponse, actix_web::Error> {
        let (rsp, mut session, mut stream) = actix_ws::handle(&req, body)?;
        actix_rt::spawn(async move {
            while let Some(Ok(actix_ws::Message::Text(t))) = stream.next().await {
                if session.text(format!("echo: {t}")).await.is_err() {
                    break;
                }
            }
        });
        Ok(rsp)
    }
    let server = HttpServer::new(|| App::new().route("/", web::get().to(page)).route("/ws", web::get().to(echo)))
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    actix_rt::spawn(server);
    (addr, handle)
}

over_brokers!(the_dashboard_in_a_browser);

async fn the_dashboard_in_a_browser(url: String) {
    let transport = url.split("://").next().unwrap_or("x").to_string();
    let ns = unique("webns");
    let name = unique("web");
    let web = TestWeb::start(&url, WebConfig::default().namespace(&ns)).await;
    let driver = Driver::start().await;
    let b = driver.browser().await;

    // The services list follows the registry without a reload.
    b.goto(&web.url("/")).await.unwrap();
    until(&b, "the live stream to open", "document.body.dataset.live === 'on'").await;
    let row = format!("document.querySelector('tr[data-service=\"{name}\"]')");
    let started = Instant::now();
    let mut child = ChildNode::spawn_env(CHILD_ENV, &WebChild { url: url.clone(), service: name.clone() });
    until(&b, "the greeter to appear", &row).await;
    let appeared = started.elapsed();
    screenshot(&b, &format!("{transport}-services")).await;
    let killed = Instant::now();
    child.kill().await;
    until(&b, "the greeter to disappear", &format!("!{row}")).await;
    let gone = killed.elapsed();
    println!("web {transport}: greeter shown {appeared:?} after its start, gone {gone:?} after kill -9 (TTL 2 s)");

    // Health at a glance on the list: every node asked for Debug.Health.
    let _svc = greeter(&url, &name, "local").start().await.unwrap();
    b.goto(&web.url("/")).await.unwrap();
    let health = format!("{row} && {row}.querySelector('td.health').textContent === 'ok (1/1)'");
    until(&b, "the greeter's health on the list", &health).await;

    // The service page: nodes with health, and the call form, by keyboard only.
    b.goto(&web.url(&format!("/service/{name}"))).await.unwrap();
    until(&b, "the node to report healthy", "document.getElementById('nodes-status').textContent.startsWith('1 of 1')")
        .await;
    tab_until(&b, "the Call button of Say.Hello", "el.dataset.endpoint === 'Say.Hello'").await;
    press(&b, &[Key::Enter.into()]).await;
    until(&b, "the editor to take the focus", "document.activeElement.id === 'call-request'").await;
    let picked = b.execute("return document.getElementById('call-endpoint').value", vec![]).await.unwrap();
    assert_eq!(picked, "Say.Hello");
    // Ctrl+A, then type over the whole editor.
    let ctrl: char = Key::Control.into();
    let select_all = KeyActions::new("keyboard".into())
        .then(KeyAction::Down { value: ctrl })
        .then(KeyAction::Down { value: 'a' })
        .then(KeyAction::Up { value: 'a' })
        .then(KeyAction::Up { value: ctrl });
    b.perform_actions(select_all).await.unwrap();
    let typed: Vec<char> = r#"{"name": "John"}"#.chars().collect();
    press(&b, &typed).await;
    tab_to(&b, "call-submit").await;
    press(&b, &[Key::Enter.into()]).await;
    until(&b, "the reply", "document.getElementById('call-output').textContent.includes('Hello John')").await;
    assert!(text(&b, "#call-status").await.starts_with("OK in"));

    // A bad request shows the service's 400 and its detail.
    let editor = b.find(Locator::Id("call-request")).await.unwrap();
    editor.clear().await.unwrap();
    editor.send_keys(r#"{"name": 5}"#).await.unwrap();
    b.find(Locator::Id("call-submit")).await.unwrap().click().await.unwrap();
    until(&b, "the error", "document.getElementById('call-status').textContent.startsWith('Error 400')").await;
    let status = text(&b, "#call-status").await;
    assert!(status.contains("Bad Request") && status.contains("Say.Hello"), "{status}");
    screenshot(&b, &format!("{transport}-service")).await;

    // The event console: subscribe to a pattern, publish, see the event with its headers.
    let topic = format!("{}.login", unique("webevt"));
    let pattern = format!("{}.*", topic.rsplit_once('.').unwrap().0);
    b.goto(&web.url("/events")).await.unwrap();
    b.find(Locator::Id("subscribe-topic")).await.unwrap().send_keys(&pattern).await.unwrap();
    b.find(Locator::Css("#subscribe-form button")).await.unwrap().click().await.unwrap();
    until(&b, "the subscription", &format!("document.body.dataset.subscribed === '{pattern}'")).await;
    b.find(Locator::Id("publish-topic")).await.unwrap().send_keys(&topic).await.unwrap();
    let body = b.find(Locator::Id("publish-body")).await.unwrap();
    body.clear().await.unwrap();
    body.send_keys(r#"{"user": "john"}"#).await.unwrap();
    b.find(Locator::Id("publish-metadata")).await.unwrap().send_keys(r#"{"tenant": "acme"}"#).await.unwrap();
    b.find(Locator::Css("#publish-form button")).await.unwrap().click().await.unwrap();
    until(&b, "the event in the console", "document.querySelector('#events li')").await;
    let event = text(&b, "#events li").await;
    assert!(event.contains(&topic) && event.contains("john") && event.contains("tenant = acme"), "{event}");
    screenshot(&b, &format!("{transport}-events")).await;

    // The proxy: the example page loads through /hello/ and its WebSocket echoes.
    let (backend, backend_handle) = hello_backend();
    let _hello = Service::builder(format!("{ns}.hello"))
        .transport(&url)
        .metadata(micro::gateway::HTTP_ADDRESS_KEY, backend.to_string())
        .start()
        .await
        .unwrap();
    b.goto(&web.url("/hello/")).await.unwrap();
    until(&b, "the proxied WebSocket to open", "document.body.dataset.ws === 'open'").await;
    b.find(Locator::Css("#echo-form button")).await.unwrap().click().await.unwrap();
    until(&b, "the echo", "document.querySelector('#echoes li')").await;
    assert_eq!(text(&b, "#echoes li").await, "echo: hello");
    screenshot(&b, &format!("{transport}-proxy")).await;

    // Phone width: the services page fits without sideways scrolling.
    b.set_window_size(390, 844).await.unwrap();
    b.goto(&web.url("/")).await.unwrap();
    until(&b, "the live stream to open", "document.body.dataset.live === 'on'").await;
    let fits = b.execute("return document.documentElement.scrollWidth <= window.innerWidth", vec![]).await.unwrap();
    assert_eq!(fits, serde_json::Value::Bool(true), "the page scrolls sideways at phone width");
    screenshot(&b, &format!("{transport}-services-phone")).await;

    b.close().await.unwrap();
    backend_handle.stop(false).await;
}
