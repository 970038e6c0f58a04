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
    let gw = TestGateway::start(&url, GatewayConfig::default()).await;
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
    let gw = TestGateway::start(&url, GatewayConfig::default().timeout(Duration::from_millis(1500))).await;
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
        .send_json(&json!({"service": unique("nobody"), "endpoint": "Say.Hello", "request": {}}))
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

    // A service with no HTTP address cannot be proxied to, and nothing else can be named.
    let rsp = http().get(gw.url(&format!("/web/{}/echo", "nobody"))).send().await.unwrap();
    assert_eq!(rsp.status(), StatusCode::SERVICE_UNAVAILABLE);
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
    let gw = TestGateway::start(&url, GatewayConfig::default().max_body(1024).namespace("test")).await;
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
