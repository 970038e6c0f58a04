//! The locked-down gateway: bearer tokens and API keys checked against the rules, `Debug.*`
//! closed unless a rule names it, the caller's token passed on; rate limits (429 with
//! `Retry-After`); no open gateway beyond loopback; and a standard OAuth2 client (Python
//! Authlib) getting a token by client credentials and calling through the gateway.

use std::time::Duration;

use actix_web::test as http;
use micro::auth::{Access, AuthConfig, Rule, PUBLIC};
use micro::gateway::{Gateway, GatewayConfig, RateLimit};
use micro::prelude::*;
use serde_json::{json, Value};

use crate::auth::AuthFixture;
use crate::util::unique;

async fn hello(Req(name): Req<String>, ctx: CallContext) -> Result<String, Status> {
    Ok(format!("hello {name} from {}", ctx.identity().map_or("nobody", |i| i.id.as_str())))
}

async fn gateway_enforces_rules(url: String) {
    let fx = AuthFixture::start(&url, AuthConfig::default()).await;
    let svc = unique("greeter");
    let alice = fx.account(&unique("alice"), &["greeter"]);
    let bob = fx.account(&unique("bob"), &["billing"]);
    fx.auth.create_rule(Rule::new(&svc, "Say.*", "greeter")).await.unwrap();
    fx.auth.create_rule(Rule::new(&svc, "Open.*", PUBLIC)).await.unwrap();
    fx.auth.create_rule(Rule::new(&svc, "Say.*", "*").access(Access::Deny).priority(-5)).await.unwrap();
    fx.auth.create_rule(Rule::new(&svc, "*", "*").priority(-10)).await.unwrap();
    let _greeter = fx
        .service(&svc)
        .await
        .handle("Say.Hello", hello)
        .handle("Open.Hello", hello)
        .handle("Other.Hello", hello)
        .start()
        .await
        .unwrap();
    let config = GatewayConfig::default().rpc_namespaces(["*"]).auth(fx.client(None).await);
    let gateway = Gateway::new(Client::connect(&url).await.unwrap(), config);
    let app = http::init_service(gateway.app()).await;
    let call = |endpoint: &str, header: Option<(&str, String)>| {
        let mut req = http::TestRequest::post()
            .uri("/rpc")
            .set_json(json!({"service": svc, "endpoint": endpoint, "request": "ada"}));
        if let Some(h) = header {
            req = req.insert_header(h);
        }
        let req = req.to_request();
        let app = &app;
        async move {
            let rsp = http::call_service(app, req).await;
            let status = rsp.status().as_u16();
            let body: Value = serde_json::from_slice(&http::read_body(rsp).await).unwrap_or(Value::Null);
            (status, body)
        }
    };
    let bearer = |c| ("authorization", format!("Bearer {}", fx.token(c)));

    assert_eq!(call("Say.Hello", None).await.0, 401, "no credential");
    assert_eq!(call("Say.Hello", Some(("authorization", "Bearer nope".into()))).await.0, 401, "bad token");
    assert_eq!(call("Say.Hello", Some(("authorization", "Basic eDp5".into()))).await.0, 401, "wrong scheme");
    assert_eq!(call("Say.Hello", Some(bearer(&bob))).await.0, 403, "lacks the scope");
    let (status, body) = call("Say.Hello", Some(bearer(&alice))).await;
    assert_eq!(
        (status, body),
        (200, json!(format!("hello ada from {}", alice.id))),
        "the user's token reaches the service"
    );
    assert_eq!(call("Open.Hello", None).await, (200, json!("hello ada from nobody")), "public");
    assert_eq!(call("Other.Hello", Some(bearer(&bob))).await.0, 200, "any account");

    // API keys: exchanged for a token with the key's scopes.
    let key = fx.auth.create_api_key(&alice.id, None).unwrap();
    let (status, body) = call("Say.Hello", Some(("x-api-key", key.key.clone()))).await;
    assert_eq!((status, body), (200, json!(format!("hello ada from {}", alice.id))));
    assert_eq!(call("Say.Hello", Some(("authorization", format!("Bearer {}", key.key)))).await.0, 200);
    assert_eq!(call("Say.Hello", Some(("x-api-key", "mk_forged".into()))).await.0, 401, "unknown key");

    // Debug.*: a catch-all rule does not open it; a rule naming it does.
    assert_eq!(call("Debug.Health", Some(bearer(&bob))).await.0, 403, "Debug.* closed under a catch-all");
    assert_eq!(call("Debug.Health", None).await.0, 401);
    fx.auth.create_rule(Rule::new(&svc, "Debug.Health", "billing").priority(5)).await.unwrap();
    let token = fx.token(&bob);
    crate::util::wait_for("the Debug rule to reach the gateway", crate::util::WAIT, || {
        let call = call("Debug.Health", Some(("authorization", format!("Bearer {token}"))));
        async move { (call.await.0 == 200).then_some(()) }
    })
    .await;
}

over_transports!(gateway_enforces_rules);

#[actix::test]
async fn rate_limit_lets_exactly_the_burst_through() {
    const N: usize = 5;
    let client = Client::connect(&crate::util::memory_url()).await.unwrap();
    let limits = RateLimit::default().per_address(N as u32, Duration::from_secs(3600));
    let app = http::init_service(Gateway::new(client, GatewayConfig::default().rate_limit(limits)).app()).await;
    let peer: std::net::SocketAddr = "10.1.2.3:4567".parse().unwrap();
    let (mut ok, mut limited) = (0usize, 0usize);
    for _ in 0..N + 10 {
        let rsp = http::call_service(&app, http::TestRequest::get().uri("/health").peer_addr(peer).to_request()).await;
        match rsp.status().as_u16() {
            200 => ok += 1,
            429 => {
                let after: u64 =
                    rsp.headers().get("retry-after").expect("Retry-After").to_str().unwrap().parse().unwrap();
                assert!(after >= 1, "Retry-After {after}");
                limited += 1;
            }
            s => panic!("unexpected status {s}"),
        }
    }
    eprintln!("rate limit: {} requests, {ok} through, {limited} answered 429", N + 10);
    assert!(ok.abs_diff(N) <= 1, "{ok} of {} got through with a burst of {N}", N + 10);
    assert_eq!(ok + limited, N + 10);
    // Another address has its own allowance.
    let other: std::net::SocketAddr = "10.9.9.9:1".parse().unwrap();
    let rsp = http::call_service(&app, http::TestRequest::get().uri("/health").peer_addr(other).to_request()).await;
    assert_eq!(rsp.status().as_u16(), 200);
}

#[actix::test]
async fn an_open_gateway_refuses_a_non_loopback_address() {
    let client = Client::connect(&crate::util::memory_url()).await.unwrap();
    let config = GatewayConfig::default().address("0.0.0.0:0".parse().unwrap());
    let err = Gateway::new(client, config).run().await.expect_err("it must not start");
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("without auth"), "{err}");
}

#[cfg(feature = "cli")]
#[test]
fn micro_api_refuses_a_non_loopback_address_without_auth() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_micro"))
        .args(["--transport", "nats://127.0.0.1:4222", "api", "--address", "0.0.0.0:0"])
        .env_remove("MICRO_API_AUTH_ID")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refusing to serve the gateway on 0.0.0.0:0 without auth"), "{stderr}");
}

const AUTHLIB_CLIENT: &str = r#"
import sys, requests
from authlib.integrations.requests_client import OAuth2Session
token_url, gateway, client_id, secret, service = sys.argv[1:]
session = OAuth2Session(client_id, secret, token_endpoint_auth_method="client_secret_basic")
token = session.fetch_token(token_url, grant_type="client_credentials")
assert token["token_type"].lower() == "bearer", token
assert token["scope"] == "greeter", token
body = {"service": service, "endpoint": "Say.Hello", "request": "py"}
r = session.post(gateway + "/rpc", json=body)
assert r.status_code == 200, (r.status_code, r.text)
print(r.json())
r = requests.post(gateway + "/rpc", json=body)
assert r.status_code == 401, (r.status_code, r.text)
bad = OAuth2Session(client_id, "wrong-secret", token_endpoint_auth_method="client_secret_post")
try:
    bad.fetch_token(token_url, grant_type="client_credentials")
    raise SystemExit("a wrong secret got a token")
except Exception as e:
    assert "invalid_client" in str(e), e
"#;

fn python() -> String {
    let python = std::env::var("MICRO_TEST_PYTHON").unwrap_or_else(|_| {
        format!("{}/.cache/actix-micro-venv/bin/python", std::env::var("HOME").unwrap_or_default())
    });
    let ok = std::process::Command::new(&python)
        .args(["-c", "import authlib, requests"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "Python Authlib is missing; install it with: python3 -m venv ~/.cache/actix-micro-venv && \
         ~/.cache/actix-micro-venv/bin/pip install 'authlib==1.*' 'requests==2.*' (or run .ci/run)"
    );
    python
}

async fn authlib_gets_a_token_and_calls_through_the_gateway(url: String) {
    let python = python();
    let fx = AuthFixture::start(&url, AuthConfig::default()).await;
    let svc = unique("greeter");
    let app_account = fx.account(&unique("py-app"), &["greeter"]);
    fx.auth.create_rule(Rule::new(&svc, "Say.*", "greeter")).await.unwrap();
    let _greeter = fx.service(&svc).await.handle("Say.Hello", hello).start().await.unwrap();
    let auth = fx.auth.clone();
    let token_server = actix_web::HttpServer::new(move || {
        let auth = auth.clone();
        actix_web::App::new().configure(move |c| auth.configure(c))
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .unwrap();
    let token_url = format!("http://{}/token", token_server.addrs()[0]);
    actix_rt::spawn(token_server.run());
    let config = GatewayConfig::default().rpc_namespaces(["*"]).auth(fx.client(None).await);
    let gateway = Gateway::new(Client::connect(&url).await.unwrap(), config);
    let gateway_server = actix_web::HttpServer::new(move || gateway.app()).workers(1).bind(("127.0.0.1", 0)).unwrap();
    let gateway_url = format!("http://{}", gateway_server.addrs()[0]);
    actix_rt::spawn(gateway_server.run());

    let out = tokio::process::Command::new(&python)
        .args(["-c", AUTHLIB_CLIENT, &token_url, &gateway_url, &app_account.id, &app_account.secret, &svc])
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the Authlib client failed:\n{stdout}\n{stderr}");
    assert_eq!(stdout.trim(), format!("hello py from {}", app_account.id));
}

mod authlib {
    use super::authlib_gets_a_token_and_calls_through_the_gateway;
    over_brokers!(authlib_gets_a_token_and_calls_through_the_gateway);
}
