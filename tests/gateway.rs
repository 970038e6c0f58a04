//! The gateway over real HTTP, in front of real services on memory, NATS and RabbitMQ.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::http::StatusCode;
use micro::gateway::{GatewayConfig, HandlerKind};
use micro::prelude::*;
use micro::ServiceHandle;
use serde_json::{json, Value};

use crate::util::*;

over_transports!(
    api_handler_walks_gateway_api_service_srv_service_and_back,
    rpc_endpoint_takes_json_and_form_requests,
    rpc_handler_takes_a_json_body_or_the_query,
    event_handler_publishes_the_body,
    durable_events_through_the_gateway_are_stored_before_the_answer,
    errors_map_to_http_statuses,
    proxy_forwards_http_and_websockets_to_registered_addresses,
);

fn http() -> awc::Client {
    awc::Client::builder().timeout(Duration::from_secs(20)).finish()
}

async fn body_json(
    mut rsp: awc::ClientResponse<impl futures::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>> + Unpin>,
) -> Value {
    let body = rsp.body().await.unwrap();
    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&body)))
}

/// A srv greeter and an api greeter (`<ns>.greeter`) in front of it.
async fn greeters(url: &str) -> (String, String, ServiceHandle, ServiceHandle) {
    let srv = unique("greeter");
    let ns = unique("api");
    let s = greeter(url, &srv, "a").start().await.unwrap();
    let a = Service::builder(format!("{ns}.greeter"))
        .transport(url)
        .state(Backend(srv.clone()))
        .handle("Say.Hello", api_say_hello)
        .start()
        .await
        .unwrap();
    (srv, ns, s, a)
}

async fn api_handler_walks_gateway_api_service_srv_service_and_back(url: String) {
    let (_, ns, s, a) = greeters(&url).await;
    let gw = TestGateway::start(&url, GatewayConfig::default().namespace(&ns)).await;
    let rsp = http().get(gw.url("/greeter/say/hello?name=John")).send().await.unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(rsp.headers().get("content-type").unwrap(), "application/json");
    assert_eq!(rsp.headers().get("x-served-by").unwrap(), "a", "the api service's headers come through");
    assert!(rsp.headers().contains_key("x-request-id"));
    assert_eq!(body_json(rsp).await, json!({"message": "Hello John"}));
    // The api service's own error, as HTTP.
    let rsp = http().get(gw.url("/greeter/say/hello")).send().await.unwrap();
    assert_eq!(rsp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body_json(rsp).await["detail"], "the name parameter is required");
    a.stop().await.unwrap();
    s.stop().await.unwrap();
}

async fn rpc_endpoint_takes_json_and_form_requests(url: String) {
    let srv = unique("greeter");
    let s = greeter(&url, &srv, "a").start().await.unwrap();
    let gw = TestGateway::start(&url, GatewayConfig::default().rpc_namespaces([&srv])).await;
    let rsp = http()
        .post(gw.url("/rpc"))
        .send_json(&json!({"service": srv, "endpoint": "Say.Hello", "request": {"name": "John"}}))
        .await
        .unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(body_json(rsp).await, json!({"msg": "Hello John", "node": "a"}));
    // Exactly as in the original Micro example: form fields, `method`, request as JSON text.
    let form = [("service", srv.as_str()), ("method", "Say.Hello"), ("request", r#"{"name": "John"}"#)];
    let rsp = http().post(gw.url("/rpc")).send_form(&form).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(body_json(rsp).await["msg"], "Hello John");
    s.stop().await.unwrap();
}

async fn rpc_handler_takes_a_json_body_or_the_query(url: String) {
    let ns = unique("srv");
    let s = greeter(&url, &format!("{ns}.greeter"), "a").start().await.unwrap();
    let gw = TestGateway::start(&url, GatewayConfig::default().namespace(&ns).handler(HandlerKind::Rpc)).await;
    let rsp = http().post(gw.url("/greeter/say/hello")).send_json(&json!({"name": "Body"})).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(body_json(rsp).await["msg"], "Hello Body");
    let rsp = http().get(gw.url("/greeter/say/hello?name=Query")).send().await.unwrap();
    assert_eq!(body_json(rsp).await["msg"], "Hello Query");
    s.stop().await.unwrap();
}

async fn event_handler_publishes_the_body(url: String) {
    let topic = format!("{}.login", unique("user"));
    type Delivery = (Value, Option<String>);
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<Delivery>>>);
    async fn on_event(State(Seen(s)): State<Seen>, Req(v): Req<Value>, Meta(m): Meta) -> Result<(), Status> {
        s.lock().unwrap().push((v, m.get("x-request-id").map(str::to_string)));
        Ok(())
    }
    let seen = Seen::default();
    let sub = Service::builder(unique("audit"))
        .transport(&url)
        .state(seen.clone())
        .subscribe(&topic, on_event)
        .start()
        .await
        .unwrap();
    let gw = TestGateway::start(&url, GatewayConfig::default()).await;
    let rsp = http()
        .post(gw.url(&format!("/event/{topic}")))
        .insert_header(("x-request-id", "req-42"))
        .send_json(&json!({"user": "ada"}))
        .await
        .unwrap();
    assert_eq!(rsp.status(), StatusCode::ACCEPTED);
    assert_eq!(body_json(rsp).await["topic"], topic.as_str());
    let got = wait_for("the event", WAIT, || async { seen.0.lock().unwrap().first().cloned() }).await;
    assert_eq!(got, (json!({"user": "ada"}), Some("req-42".to_string())), "body and request id arrive");
    let rsp = http().post(gw.url(&format!("/event/{topic}"))).send_body("{not json").await.unwrap();
    assert_eq!(rsp.status(), StatusCode::BAD_REQUEST);
    let rsp = http().get(gw.url(&format!("/event/{topic}"))).send().await.unwrap();
    assert_eq!(rsp.status(), StatusCode::METHOD_NOT_ALLOWED);
    sub.stop().await.unwrap();
}

async fn durable_events_through_the_gateway_are_stored_before_the_answer(url: String) {
    let topic = format!("{}.login", unique("user"));
    let group = unique("audit");
    let broker = Client::connect(&url).await.unwrap().broker().clone();
    let mut events = broker
        .subscribe_durable(
            &topic,
            micro::broker::SubscribeOptions::durable(&group).expire_after(Duration::from_secs(120)),
        )
        .await
        .unwrap();
    let gw = TestGateway::start(&url, GatewayConfig::default()).await;
    let rsp =
        http().post(gw.url(&format!("/event/{topic}?durable=true"))).send_json(&json!({"user": "ada"})).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    let body = body_json(rsp).await;
    assert_eq!(body["stored"], true);
    let e = tokio::time::timeout(WAIT, futures::StreamExt::next(&mut events)).await.unwrap().unwrap();
    assert_eq!(e.id, body["id"].as_str().unwrap());
    assert_eq!(e.decode::<Value>().unwrap(), json!({"user": "ada"}));
    e.ack().await.unwrap();
}

async fn errors_map_to_http_statuses(url: String) {
    let srv = unique("greeter");
    let s = greeter(&url, &srv, "a").restart_policy(RestartPolicy::unlimited()).start().await.unwrap();
    let nobody = unique("nobody");
    let config = GatewayConfig::default().timeout(Duration::from_secs(3)).rpc_namespaces([&srv, &nobody]);
    let gw = TestGateway::start(&url, config).await;
    let rpc = |endpoint: &str, request: Value| {
        let body = json!({"service": srv, "endpoint": endpoint, "request": request});
        let u = gw.url("/rpc");
        async move { http().post(u).send_json(&body).await.unwrap() }
    };
    let rsp = rpc("Say.Nothing", json!({})).await;
    assert_eq!(rsp.status(), StatusCode::NOT_FOUND);
    let err = body_json(rsp).await;
    assert_eq!((err["code"].as_u64(), err["status"].as_str()), (Some(404), Some("Not Found")));
    assert_eq!(rpc("Say.Hello", json!({"name": 7})).await.status(), StatusCode::BAD_REQUEST);
    assert_eq!(rpc("Say.Boom", json!({})).await.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(rpc("Say.Slow", json!({"ms": 5000})).await.status(), StatusCode::GATEWAY_TIMEOUT);
    let rsp = http()
        .post(gw.url("/rpc"))
        .send_json(&json!({"service": nobody, "endpoint": "Say.Hello", "request": {}}))
        .await
        .unwrap();
    assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let rsp =
        http().post(gw.url("/rpc")).content_type("application/json").send_body(r#"{"service": "x", "#).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::BAD_REQUEST);
    assert!(body_json(rsp).await["detail"].as_str().unwrap().contains("line 1"), "bad JSON points at the position");
    let rsp = http().post(gw.url("/rpc")).send_json(&json!({"service": "../etc", "endpoint": "A.B"})).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::BAD_REQUEST, "invalid service names are refused");
    s.stop().await.unwrap();
}

async fn proxy_forwards_http_and_websockets_to_registered_addresses(url: String) {
    use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
    use futures::{SinkExt, StreamExt};

    async fn echo(req: HttpRequest) -> HttpResponse {
        let h = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
        HttpResponse::Ok().insert_header(("proxy-authenticate", "Basic realm=internal")).json(json!({
            "path": req.path(), "query": req.query_string(), "forwarded_for": h("x-forwarded-for"),
            "secret": h("x-secret"), "request_id": h("x-request-id"),
        }))
    }
    async fn ws_echo(req: HttpRequest, body: web::Payload) -> Result<HttpResponse, actix_web::Error> {
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
    let backend =
        HttpServer::new(|| App::new().route("/echo", web::get().to(echo)).route("/ws", web::get().to(ws_echo)))
            .workers(1)
            .bind("127.0.0.1:0")
            .unwrap();
    let backend_addr = backend.addrs()[0];
    let backend = backend.run();
    let backend_handle = backend.handle();
    actix_rt::spawn(backend);

    let ns = unique("web");
    let web_svc = Service::builder(format!("{ns}.dash"))
        .transport(&url)
        .metadata(micro::gateway::HTTP_ADDRESS_KEY, backend_addr.to_string())
        .start()
        .await
        .unwrap();
    let gw = TestGateway::start(&url, GatewayConfig::default().namespace(&ns).route("/web", HandlerKind::Proxy)).await;

    let rsp =
        http().get(gw.url("/web/dash/echo?x=1")).insert_header(("x-forwarded-for", "6.6.6.6")).send().await.unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    assert!(!rsp.headers().contains_key("proxy-authenticate"), "hop-by-hop response headers are stripped");
    let seen = body_json(rsp).await;
    assert_eq!(seen["path"], "/echo");
    assert_eq!(seen["query"], "x=1");
    assert_eq!(seen["forwarded_for"], "127.0.0.1", "inbound X-Forwarded-For is overwritten");
    assert!(seen["request_id"].is_string());
    // Headers the client names in Connection are hop-by-hop too (raw: HTTP clients rewrite Connection).
    let raw = raw_request(
        gw.addr,
        "GET /web/dash/echo HTTP/1.1\r\nHost: x\r\nConnection: close, x-secret\r\nX-Secret: hop\r\n\r\n",
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(raw.contains(r#""secret":null"#), "{raw}");

    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/web/dash/ws", gw.addr)).await.unwrap();
    ws.send(tokio_tungstenite::tungstenite::Message::Text("hello".into())).await.unwrap();
    let reply = tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(reply.into_text().unwrap().as_str(), "echo: hello");
    ws.close(None).await.unwrap();

    // A running service that registered no HTTP address cannot be proxied to.
    let plain = Service::builder(format!("{ns}.plain")).transport(&url).start().await.unwrap();
    let registered = Client::connect(&url).await.unwrap();
    wait_for("the plain service registered", WAIT, || async {
        registered.registry().get_service(&format!("{ns}.plain")).await.ok().filter(|s| !s.is_empty())
    })
    .await;
    let rsp = http().get(gw.url("/web/plain/echo")).send().await.unwrap();
    assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let detail = body_json(rsp).await["detail"].as_str().unwrap_or_default().to_string();
    assert!(detail.contains(&format!("no node of {ns}.plain serves HTTP")), "{detail}");
    plain.stop().await.unwrap();
    web_svc.stop().await.unwrap();
    backend_handle.stop(false).await;
}

#[actix::test]
async fn body_limit_is_413_without_calling_anything() {
    let url = memory_url();
    let srv = unique("greeter");
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let s = Service::builder(&srv)
        .transport(&url)
        .handle("Say.Hello", move |Req(_): Req<Value>| {
            let c = counter.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                Ok::<_, Status>(json!({}))
            }
        })
        .start()
        .await
        .unwrap();
    let gw = TestGateway::start(&url, GatewayConfig::default().max_body(1024).namespace("test").rpc_namespaces([&srv]))
        .await;
    let big = json!({"service": srv, "endpoint": "Say.Hello", "request": {"pad": "x".repeat(4096)}});
    let rsp = http().post(gw.url("/rpc")).send_json(&big).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let err = body_json(rsp).await;
    assert_eq!((err["code"].as_u64(), err["status"].as_str()), (Some(413), Some("Payload Too Large")), "{err}");
    let form = [("service", srv.as_str()), ("method", "Say.Hello"), ("request", &"x".repeat(4096))];
    let rsp = http().post(gw.url("/rpc")).send_form(&form).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let rsp = http().post(gw.url("/greeter/say/hello")).send_body("y".repeat(4096)).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body_json(rsp).await["code"], 413);
    assert_eq!(calls.load(Ordering::SeqCst), 0, "nothing was called");
    let small = json!({"service": srv, "endpoint": "Say.Hello", "request": {}});
    assert_eq!(http().post(gw.url("/rpc")).send_json(&small).await.unwrap().status(), StatusCode::OK);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    s.stop().await.unwrap();
}

/// Sends raw bytes and reads the whole response (clients normalise what attackers do not).
async fn raw_request(addr: std::net::SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await.unwrap().unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

async fn raw_status(addr: std::net::SocketAddr, path: &str) -> u16 {
    let out = raw_request(addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")).await;
    out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[actix::test]
async fn path_tricks_are_rejected_with_400() {
    let gw = TestGateway::start(&memory_url(), GatewayConfig::default()).await;
    for path in [
        "/greeter/../secret",
        "/greeter/%2e%2e/secret",
        "/greeter%2fsay/hello",
        "/greeter/%252e%252e",
        "/greeter/%00",
        "/greeter/./say",
    ] {
        assert_eq!(raw_status(gw.addr, path).await, 400, "{path}");
    }
    assert_eq!(
        raw_status(gw.addr, "/greeter/say.hello/x").await,
        400,
        "dots inside a segment could name other services"
    );
}

#[actix::test]
async fn cors_allows_only_listed_origins() {
    let gw = TestGateway::start(&memory_url(), GatewayConfig::default().cors(["https://app.example.com"])).await;
    let preflight = |origin: &'static str| {
        http()
            .request(actix_web::http::Method::OPTIONS, gw.url("/rpc"))
            .insert_header(("origin", origin))
            .insert_header(("access-control-request-method", "POST"))
            .send()
    };
    let ok = preflight("https://app.example.com").await.unwrap();
    assert_eq!(ok.headers().get("access-control-allow-origin").unwrap(), "https://app.example.com");
    let evil = preflight("https://evil.example.com").await.unwrap();
    assert!(!evil.headers().contains_key("access-control-allow-origin"), "{:?}", evil.headers());
    let any = TestGateway::start(&memory_url(), GatewayConfig::default().cors(["*"])).await;
    let rsp = http().get(any.url("/health")).insert_header(("origin", "https://x.example")).send().await.unwrap();
    let allowed = rsp.headers().get("access-control-allow-origin").map(|v| v.to_str().unwrap().to_string());
    assert!(matches!(allowed.as_deref(), Some("*" | "https://x.example")), "* allows any origin: {allowed:?}");
    assert!(!rsp.headers().contains_key("access-control-allow-credentials"), "never * with credentials");
}

#[actix::test]
async fn health_and_request_ids() {
    let gw = TestGateway::start(&memory_url(), GatewayConfig::default()).await;
    let rsp = http().get(gw.url("/health")).send().await.unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    let generated = rsp.headers().get("x-request-id").unwrap().to_str().unwrap().to_string();
    assert_eq!(generated.len(), 36, "a UUID when the caller sent none");
    assert_eq!(body_json(rsp).await["status"], "ok");
    let rsp = http().get(gw.url("/health")).insert_header(("x-request-id", "abc-123")).send().await.unwrap();
    assert_eq!(rsp.headers().get("x-request-id").unwrap(), "abc-123");
    let rsp = http().get(gw.url("/health")).insert_header(("x-request-id", "bad id <script>")).send().await.unwrap();
    assert_ne!(rsp.headers().get("x-request-id").unwrap(), "bad id <script>", "unsafe ids are replaced");
}

#[actix::test]
async fn an_rpc_carries_the_request_id_as_its_id_and_the_request_as_sent() {
    async fn echo(Req(v): Req<Value>, ctx: CallContext) -> Result<Value, Status> {
        Ok(json!({"id": ctx.id(), "request": v}))
    }
    let url = memory_url();
    let ns = unique("ns");
    let name = format!("{ns}.echo");
    let svc = Service::builder(&name).transport(&url).handle("Echo.Call", echo).start().await.unwrap();
    let gw = TestGateway::start(&url, GatewayConfig::default().namespace(&ns)).await;
    let call = |request: Value| {
        http().post(gw.url("/rpc")).insert_header(("x-request-id", "req-7")).send_json(&json!({
            "service": name, "endpoint": "Echo.Call", "request": request,
        }))
    };
    let got = body_json(call(json!({"n": [1, 2.5, "x"], "deep": {"a": null}})).await.unwrap()).await;
    assert_eq!(got, json!({"id": "req-7", "request": {"n": [1, 2.5, "x"], "deep": {"a": null}}}));
    // A JSON text inside a string is the request it holds; other strings stay strings.
    let got = body_json(call(json!("{\"a\": 1}")).await.unwrap()).await;
    assert_eq!(got["request"], json!({"a": 1}));
    let got = body_json(call(json!("plain")).await.unwrap()).await;
    assert_eq!(got["request"], json!("plain"));
    let rsp = call(json!("{not json")).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::BAD_REQUEST);
    // Without a request: an empty object.
    let rsp = http().post(gw.url("/rpc")).send_json(&json!({"service": name, "endpoint": "Echo.Call"}));
    let got = body_json(rsp.await.unwrap()).await;
    assert_eq!(got["request"], json!({}));
    assert_eq!(got["id"].as_str().map(str::len), Some(36), "a generated request id: {got}");
    // Names may come escaped: they are JSON strings.
    let body = format!(r#"{{"service": "{name}", "endpoint": "Echo\u002eCall", "request": {{"k": "\u00e9"}}}}"#);
    let rsp = http().post(gw.url("/rpc")).content_type("application/json").send_body(body).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(body_json(rsp).await["request"], json!({"k": "é"}));
    // An unsafe request id is replaced, and the call carries the id the response names.
    let rsp = http().post(gw.url("/rpc")).insert_header(("x-request-id", "bad id <script>")).send_json(&json!({
        "service": name, "endpoint": "Echo.Call",
    }));
    let mut rsp = rsp.await.unwrap();
    let id = rsp.headers().get("x-request-id").unwrap().to_str().unwrap().to_string();
    assert_eq!(id.len(), 36, "{id}");
    assert_eq!(rsp.json::<Value>().await.unwrap()["id"], id.as_str());
    svc.stop().await.unwrap();
}

#[actix::test]
async fn the_callers_trace_continues_through_the_gateway() {
    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    async fn trace_of(ctx: CallContext) -> Result<Value, Status> {
        let trace = ctx.trace().map(|t| t.trace_id());
        Ok(json!({"trace": trace, "state": ctx.trace_state()}))
    }
    let url = memory_url();
    let ns = unique("ns");
    let name = format!("{ns}.traced");
    let svc = Service::builder(&name).transport(&url).handle("Trace.Of", trace_of).start().await.unwrap();
    let gw = TestGateway::start(&url, GatewayConfig::default().namespace(&ns)).await;
    let body = json!({"service": name, "endpoint": "Trace.Of"});
    let traced = http()
        .post(gw.url("/rpc"))
        .insert_header(("traceparent", format!("00-{TRACE}-00f067aa0ba902b7-01")))
        .insert_header(("tracestate", "vendor=abc"));
    let got = body_json(traced.send_json(&body).await.unwrap()).await;
    assert_eq!(got, json!({"trace": TRACE, "state": "vendor=abc"}), "the caller's trace and its state");
    // No traceparent: no trace is made up, and a tracestate alone is not passed on (W3C).
    let got = body_json(http().post(gw.url("/rpc")).send_json(&body).await.unwrap()).await;
    assert_ne!(got["trace"], TRACE);
    let alone = http().post(gw.url("/rpc")).insert_header(("tracestate", "vendor=abc")).send_json(&body);
    let got = body_json(alone.await.unwrap()).await;
    assert_eq!(got["state"], Value::Null, "{got}");
    svc.stop().await.unwrap();
}

/// Sends a request head (and whatever of a body it includes), then nothing more, and reads
/// the answer: its status, its body, and how long it took. Ends at the end of the response
/// (`Content-Length`) or of the connection.
async fn stalled_request(addr: std::net::SocketAddr, head: &str) -> (u16, String, Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = std::time::Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(WAIT, async {
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            out.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&out).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
                    .and_then(|v| v.parse::<usize>().ok());
                if length.is_some_and(|n| body.len() >= n) {
                    return;
                }
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(read.is_ok(), "no answer within {WAIT:?}: {text:?}");
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body, started.elapsed())
}

/// The JSON status of a gateway error body, checked to be `{id, code, detail, status}`.
fn json_status(body: &str) -> Value {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not a JSON status ({e}): {body:?}"));
    let keys: Vec<&str> = v.as_object().map(|o| o.keys().map(String::as_str).collect()).unwrap_or_default();
    assert_eq!(keys, ["code", "detail", "id", "status"], "{v}");
    v
}

#[actix::test]
async fn a_stalled_body_is_cut_with_408_within_the_request_timeout() {
    let ns = unique("api");
    let timeout = Duration::from_millis(1200);
    let config = GatewayConfig::default().namespace(&ns).timeout(timeout).route("/rpcapi", HandlerKind::Rpc);
    let gw = TestGateway::start(&memory_url(), config).await;
    for (path, content_type) in [
        ("/rpc", "application/json"),
        ("/rpc", "application/x-www-form-urlencoded"),
        ("/greeter/say/hello", "application/json"),
        ("/rpcapi/greeter/say/hello", "application/json"),
        ("/event/user.login", "application/json"),
    ] {
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: 100\r\n\r\n{{\"a\""
        );
        let (status, body, took) = stalled_request(gw.addr, &head).await;
        assert_eq!(status, 408, "{path} ({content_type}): {body}");
        assert_eq!(json_status(&body)["code"], 408, "{path}");
        assert!(took >= timeout && took < timeout + Duration::from_secs(3), "{path}: cut after {took:?}");
    }
}

#[actix::test]
async fn a_declared_length_over_the_limit_is_413_at_once_on_every_route() {
    let ns = unique("api");
    let config = GatewayConfig::default()
        .namespace(&ns)
        .max_body(1024)
        .timeout(Duration::from_secs(10))
        .route("/rpcapi", HandlerKind::Rpc)
        .route("/web", HandlerKind::Proxy);
    let gw = TestGateway::start(&memory_url(), config).await;
    let routes =
        ["/rpc", "/greeter/say/hello", "/rpcapi/greeter/say/hello", "/event/user.login", "/web/dash/x", "/health"];
    for (method, path) in routes.iter().flat_map(|p| [("POST", *p), ("GET", *p)]) {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n"
        );
        let (status, body, took) = stalled_request(gw.addr, &head).await;
        assert_eq!(status, 413, "{method} {path}: {body}");
        assert_eq!(json_status(&body)["code"], 413, "{method} {path}");
        assert!(took < Duration::from_secs(3), "{method} {path}: refused only after {took:?}");
    }
}

#[actix::test]
async fn every_gateway_error_is_a_json_status() {
    let gw = TestGateway::start(&memory_url(), GatewayConfig::default().max_body(1024)).await;
    // GET /rpc is the wrong method, not a path for the api handler.
    let rsp = http().get(gw.url("/rpc")).send().await.unwrap();
    assert_eq!(rsp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(rsp.headers().get("allow").unwrap(), "POST");
    assert_eq!(body_json(rsp).await["code"], 405);
    // An oversized body with no declared length (chunked) is found while reading.
    let chunk = "x".repeat(2000);
    for content_type in ["application/json", "application/x-www-form-urlencoded", "text/plain"] {
        let request = format!(
            "POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
            chunk.len()
        );
        let (status, body, _) = stalled_request(gw.addr, &request).await;
        assert_eq!(status, 413, "{content_type}: {body}");
        assert_eq!(json_status(&body)["code"], 413, "{content_type}");
    }
    // A body that is not UTF-8 form data, and a bad chunk encoding.
    let (status, body, _) = stalled_request(
        gw.addr,
        "POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    )
    .await;
    assert_eq!(status, 400, "{body}");
    json_status(&body);
}

#[actix::test]
async fn rpc_and_the_handlers_reach_only_the_namespaces_and_no_debug_endpoint() {
    let url = memory_url();
    let ns = unique("api");
    let outside = unique("srv");
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let echo = move |Req(v): Req<Value>| {
        let c = counter.clone();
        async move {
            c.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Status>(v)
        }
    };
    let inside = Service::builder(format!("{ns}.greeter")).transport(&url).handle("Say.Hello", echo.clone()).start();
    let inside = inside.await.unwrap();
    let other = Service::builder(&outside).transport(&url).handle("Say.Hello", echo).start().await.unwrap();
    let rpc = |gw: &TestGateway, service: &str, endpoint: &str| {
        let (u, body) = (gw.url("/rpc"), json!({"service": service, "endpoint": endpoint, "request": {"x": 1}}));
        async move { http().post(u).send_json(&body).await.unwrap() }
    };
    let gw = TestGateway::start(&url, GatewayConfig::default().namespace(&ns).route("/rpcapi", HandlerKind::Rpc)).await;
    let own = format!("{ns}.greeter");
    assert_eq!(rpc(&gw, &own, "Say.Hello").await.status(), StatusCode::OK, "the gateway's own namespace");
    for (service, endpoint) in [(outside.as_str(), "Say.Hello"), (own.as_str(), "Debug.Stats"), (&own, "debug.health")]
    {
        let mut rsp = rpc(&gw, service, endpoint).await;
        assert_eq!(rsp.status(), StatusCode::FORBIDDEN, "{service} {endpoint}");
        json_status(std::str::from_utf8(&rsp.body().await.unwrap()).unwrap());
    }
    for path in ["/greeter/debug/stats", "/rpcapi/greeter/debug/health", "/rpcapi/greeter/DEBUG/stats"] {
        assert_eq!(http().get(gw.url(path)).send().await.unwrap().status(), StatusCode::FORBIDDEN, "{path}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "only the allowed call reached a service");

    // Configured: /rpc reaches another namespace, and Debug.* when exposed.
    let config = GatewayConfig::default().namespace(&ns).rpc_namespaces([&outside]).expose_debug(true);
    let open = TestGateway::start(&url, config).await;
    assert_eq!(rpc(&open, &outside, "Say.Hello").await.status(), StatusCode::OK);
    let stats = rpc(&open, &own, "Debug.Stats").await;
    assert_eq!(stats.status(), StatusCode::OK);
    assert_eq!(body_json(stats).await["service"], own.as_str());
    // Debug.Stats answers, but not with an api.Response: 502, as for any srv-style reply.
    for path in ["/greeter/debug/stats", "/greeter/say/hello"] {
        let rsp = http().get(open.url(path)).send().await.unwrap();
        assert_eq!(rsp.status(), StatusCode::BAD_GATEWAY, "{path}");
        assert!(body_json(rsp).await["detail"].as_str().unwrap().contains("did not answer with an api.Response"));
    }
    inside.stop().await.unwrap();
    other.stop().await.unwrap();
}

#[actix::test]
async fn cross_site_requests_with_side_effects_are_refused() {
    let url = memory_url();
    let srv = unique("greeter");
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let s = Service::builder(&srv)
        .transport(&url)
        .handle("Say.Hello", move |Req(v): Req<Value>| {
            let c = counter.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                Ok::<_, Status>(v)
            }
        })
        .start()
        .await
        .unwrap();
    let config = GatewayConfig::default().rpc_namespaces([&srv]).cors(["https://app.example.com"]);
    let gw = TestGateway::start(&url, config).await;
    let form = [("service", srv.as_str()), ("method", "Say.Hello"), ("request", "{}")];
    let own_origin = format!("http://{}", gw.addr);
    let post = |headers: Vec<(&'static str, String)>| {
        let mut req = http().post(gw.url("/rpc"));
        for h in headers {
            req = req.insert_header(h);
        }
        async move { req.send_form(&form).await.unwrap() }
    };
    // A form posted from another website: no preflight, so CORS alone would let it run.
    let rsp = post(vec![("origin", "https://evil.example".into())]).await;
    assert_eq!(rsp.status(), StatusCode::FORBIDDEN);
    assert_eq!(body_json(rsp).await["code"], 403);
    let rsp = post(vec![("sec-fetch-site", "cross-site".into())]).await;
    assert_eq!(rsp.status(), StatusCode::FORBIDDEN, "Sec-Fetch-Site alone");
    let rsp = post(vec![("origin", "null".into())]).await;
    assert_eq!(rsp.status(), StatusCode::FORBIDDEN, "an opaque origin");
    let topic = format!("{}.login", unique("user"));
    let rsp = http()
        .post(gw.url(&format!("/event/{topic}")))
        .insert_header(("origin", "https://evil.example"))
        .send_json(&json!({}))
        .await
        .unwrap();
    assert_eq!(rsp.status(), StatusCode::FORBIDDEN, "events too");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "nothing ran");
    // The gateway's own pages, listed origins, and callers that are no browser page.
    assert_eq!(post(vec![("origin", own_origin), ("sec-fetch-site", "same-origin".into())]).await.status(), 200);
    assert_eq!(post(vec![("origin", "https://app.example.com".into())]).await.status(), 200);
    assert_eq!(post(vec![]).await.status(), 200);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    s.stop().await.unwrap();
}
