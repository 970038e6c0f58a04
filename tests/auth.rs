//! Auth in services, over memory, NATS and RabbitMQ: 401 without a token, 403 without a rule,
//! 200 with one, public endpoints; the caller's identity in a service-to-service call; tokens
//! renewed across expiry and keys rotated during call loops with no failed call.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use micro::auth::{AuthClient, AuthConfig, AuthService, Credentials, NewAccount, Rule, TokenRequest, PUBLIC};
use micro::prelude::*;
use micro::ServiceHandle;

use crate::util::{unique, WAIT};

/// An auth service of its own (unique name) on `url`.
pub struct AuthFixture {
    pub url: String,
    pub auth: AuthService,
    pub name: String,
    _node: ServiceHandle,
}

impl AuthFixture {
    pub async fn start(url: &str, config: AuthConfig) -> AuthFixture {
        let name = unique("auth");
        let auth = AuthService::open(config.name(&name)).expect("auth store");
        let node = auth.start(url).await.expect("auth service");
        AuthFixture { url: url.to_string(), auth, name, _node: node }
    }

    /// An auth client for this auth service, with these credentials (or none).
    pub async fn client(&self, creds: Option<&Credentials>) -> AuthClient {
        let client = Client::connect(&self.url).await.unwrap();
        let mut b = AuthClient::builder().service(&self.name);
        if let Some(c) = creds {
            b = b.credentials(c.clone());
        }
        b.connect(&client).await.expect("auth client")
    }

    /// A service on the fixture's transport behind auth (keys and rules, no credentials of
    /// its own).
    pub async fn service(&self, name: &str) -> micro::ServiceBuilder {
        Service::builder(name).transport(&self.url).auth(self.client(None).await)
    }

    pub fn account(&self, id: &str, scopes: &[&str]) -> Credentials {
        self.auth.create_account(NewAccount::service(id).scopes(scopes.iter().copied())).unwrap()
    }

    pub fn token(&self, creds: &Credentials) -> String {
        self.auth.grant(&TokenRequest::client_credentials(&creds.id, &creds.secret)).unwrap().access_token
    }
}

async fn whoami(ctx: CallContext) -> Result<String, Status> {
    Ok(ctx.identity().map(|i| format!("{} [{}]", i.id, i.scopes.join(" "))).unwrap_or_else(|| "nobody".into()))
}

async fn hello(Req(name): Req<String>) -> Result<String, Status> {
    Ok(format!("hello {name}"))
}

fn code(e: &micro::Error) -> Option<u16> {
    e.status().map(|s| s.code().as_u16())
}

async fn status_codes(url: String) {
    let fx = AuthFixture::start(&url, AuthConfig::default()).await;
    let svc = unique("greeter");
    let good = fx.account(&unique("good"), &["greeter"]);
    let other = fx.account(&unique("other"), &["billing"]);
    fx.auth.create_rule(Rule::new(&svc, "Say.*", "greeter")).await.unwrap();
    fx.auth.create_rule(Rule::new(&svc, "Open.Ping", PUBLIC)).await.unwrap();
    let verify = fx.client(None).await;
    let _greeter = Service::builder(&svc)
        .transport(&url)
        .auth(verify)
        .handle("Say.Hello", hello)
        .handle("Say.Whoami", whoami)
        .handle("Open.Ping", whoami)
        .handle("Hidden.Thing", hello)
        .start()
        .await
        .unwrap();
    let client = Client::connect(&url).await.unwrap();
    let call = |endpoint: &'static str, token: Option<String>| {
        let (client, svc) = (client.clone(), svc.clone());
        async move {
            let mut opts = CallOptions::new().timeout(WAIT);
            if let Some(t) = token {
                opts = opts.token(t);
            }
            client.call_with::<_, String, _>(&svc, endpoint, &"ada".to_string(), opts).await
        }
    };
    assert_eq!(code(&call("Say.Hello", None).await.unwrap_err()), Some(401), "no token");
    assert_eq!(code(&call("Say.Hello", Some("garbage".into())).await.unwrap_err()), Some(401), "bad token");
    assert_eq!(code(&call("Say.Hello", Some(fx.token(&other))).await.unwrap_err()), Some(403), "lacks the scope");
    assert_eq!(call("Say.Hello", Some(fx.token(&good))).await.unwrap(), "hello ada", "right scope");
    assert_eq!(call("Say.Whoami", Some(fx.token(&good))).await.unwrap(), format!("{} [greeter]", good.id));
    assert_eq!(call("Open.Ping", None).await.unwrap(), "nobody", "public without a token");
    assert_eq!(call("Open.Ping", Some(fx.token(&good))).await.unwrap(), format!("{} [greeter]", good.id));
    assert_eq!(code(&call("Hidden.Thing", Some(fx.token(&good))).await.unwrap_err()), Some(403), "no rule");
    // Debug.* is answered by the toolkit outside the layer (broker permissions guard it).
    let health: serde_json::Value = client.call(&svc, "Debug.Health", &()).await.unwrap();
    assert_eq!(health["status"], "ok");

    // A rule added later reaches the service through the change announcement.
    fx.auth.create_rule(Rule::new(&svc, "Hidden.*", "billing")).await.unwrap();
    let token = fx.token(&other);
    crate::util::wait_for("the new rule to reach the service", WAIT, || {
        let call = call("Hidden.Thing", Some(token.clone()));
        async move { call.await.ok() }
    })
    .await;
}

async fn service_to_service(url: String) {
    let fx = AuthFixture::start(&url, AuthConfig::default()).await;
    let (back, front) = (unique("back"), unique("front"));
    let front_account = fx.account(&unique("front-account"), &["back.read"]);
    fx.auth.create_rule(Rule::new(&back, "*", "back.read")).await.unwrap();
    fx.auth.create_rule(Rule::new(&front, "*", PUBLIC)).await.unwrap();
    let _back = fx.service(&back).await.handle("Who.Am", whoami).start().await.unwrap();
    let back_name = back.clone();
    let _front = Service::builder(&front)
        .transport(&url)
        .auth(fx.client(Some(&front_account)).await)
        .handle("Front.Relay", move |client: Client| {
            let back = back_name.clone();
            async move { client.call::<_, String, _>(&back, "Who.Am", &()).await.map_err(|e| e.to_status("relay")) }
        })
        .start()
        .await
        .unwrap();
    let client = Client::connect(&url).await.unwrap();
    let seen: String = client.call(&front, "Front.Relay", &()).await.unwrap();
    assert_eq!(seen, format!("{} [back.read]", front_account.id), "the back service sees the front's account");
}

/// A caller's own token travels whole until a node accepts it, then by reference; a node that
/// does not know the reference (a second node, one started later) answers 401 and the client
/// sends the whole token again, with no call failing.
async fn token_by_reference(url: String) {
    let fx = AuthFixture::start(&url, AuthConfig::default()).await;
    let svc = unique("greeter");
    let me = fx.account(&unique("caller"), &["greeter"]);
    fx.auth.create_rule(Rule::new(&svc, "Say.*", "greeter")).await.unwrap();
    let node = || async { fx.service(&svc).await.handle("Say.Whoami", whoami).start().await.unwrap() };
    let mut nodes = vec![node().await, node().await];
    let client = Client::builder().transport(&url).auth(fx.client(Some(&me)).await).connect().await.unwrap();
    let expected = format!("{} [greeter]", me.id);
    for round in 0..2 {
        let ids: HashSet<String> = nodes.iter().map(|n| n.node_id().to_string()).collect();
        crate::util::wait_for("the client to know the nodes", WAIT, || {
            let (client, svc, ids) = (client.clone(), svc.clone(), ids.clone());
            async move {
                let records = client.registry().get_service(&svc).await.ok()?;
                let known: HashSet<String> =
                    records.iter().flat_map(|s| s.nodes.iter().map(|n| n.id.clone())).collect();
                (known == ids).then_some(())
            }
        })
        .await;
        // Random selection: 30 calls reach both nodes (all on one: 2^-29).
        for i in 0..30 {
            let who: micro::Result<String> = client.call(&svc, "Say.Whoami", &()).await;
            assert_eq!(who.unwrap_or_else(|e| panic!("round {round}, call {i}: {e}")), expected);
        }
        // A node that has never seen the token replaces one that had.
        nodes.remove(0).stop().await.unwrap();
        nodes.push(node().await);
    }
}

/// docs/protocol.md §3.1.1's Python line for a token's reference (the token is argv[1]).
const PY_TOKEN_REF: &str = "import base64, hashlib, sys; token = sys.argv[1]; \
print(base64.urlsafe_b64encode(hashlib.sha256(token.encode()).digest()[:16]).rstrip(b\"=\").decode())";

/// The token by reference on the wire, as another language would send it (NATS).
#[cfg(feature = "nats")]
#[actix::test]
async fn token_reference_on_the_wire() {
    let url = crate::util::nats_url();
    let fx = AuthFixture::start(&url, AuthConfig::default()).await;
    let svc = unique("greeter");
    let me = fx.account(&unique("caller"), &["greeter"]);
    fx.auth.create_rule(Rule::new(&svc, "Say.*", "greeter")).await.unwrap();
    let node = fx.service(&svc).await.handle("Say.Whoami", whoami).start().await.unwrap();
    let nc = async_nats::connect(&url).await.unwrap();
    let subject = format!("micro.rpc.{svc}.Say.Whoami");
    let token = fx.token(&me);
    let ask = |authorization: String| {
        let (nc, subject) = (nc.clone(), subject.clone());
        async move {
            let mut h = async_nats::HeaderMap::new();
            h.insert("Content-Type", "application/json");
            h.insert("Authorization", authorization.as_str());
            let reply = nc.request_with_headers(subject, h, "null".into()).await.unwrap();
            let code = reply.headers.as_ref().and_then(|h| h.get("Nats-Service-Error-Code")).map(|v| v.to_string());
            (code, String::from_utf8_lossy(&reply.payload).into_owned())
        }
    };
    // The reference as docs/protocol.md §3.1.1 tells another language to compute it.
    let python = std::process::Command::new("python3")
        .args(["-c", PY_TOKEN_REF, &token])
        .output()
        .expect("python3 runs (install it with: apt-get install -y python3)");
    assert!(python.status.success(), "{}", String::from_utf8_lossy(&python.stderr));
    assert_eq!(String::from_utf8_lossy(&python.stdout).trim(), micro::auth::token_ref(&token));
    let by_ref = format!("Ref {}", micro::auth::token_ref(&token));
    let (code, body) = ask(by_ref.clone()).await;
    assert_eq!(code.as_deref(), Some("401"), "a reference before the token: {body}");
    assert!(body.contains(micro::auth::REF_UNKNOWN), "{body}");
    let (code, body) = ask(format!("Bearer {token}")).await;
    assert_eq!((code, body), (None, format!("\"{} [greeter]\"", me.id)), "the whole token");
    let (code, body) = ask(by_ref).await;
    assert_eq!((code, body), (None, format!("\"{} [greeter]\"", me.id)), "then its reference");
    let other = format!("Ref {}", micro::auth::token_ref(&format!("{token}x")));
    assert_eq!(ask(other).await.0.as_deref(), Some("401"), "the reference of another token");
    assert_eq!(ask("Ref short".into()).await.0.as_deref(), Some("401"), "not a reference");

    // What a client built with `.auth` sends: the whole token first, then the reference.
    let mut seen = nc.subscribe(format!("micro.node.{}.Say.Whoami", node.node_id())).await.unwrap();
    let mut rpc = nc.subscribe(subject.clone()).await.unwrap();
    nc.flush().await.unwrap();
    let client = Client::builder().transport(&url).auth(fx.client(Some(&me)).await).connect().await.unwrap();
    let mut sent = Vec::new();
    for _ in 0..3 {
        let _: String = client.call(&svc, "Say.Whoami", &()).await.unwrap();
        let msg =
            tokio::time::timeout(WAIT, futures::StreamExt::next(&mut futures::stream::select(&mut seen, &mut rpc)))
                .await
                .unwrap()
                .unwrap();
        sent.push(msg.headers.and_then(|h| h.get("Authorization").map(|v| v.to_string())).unwrap_or_default());
    }
    assert!(sent[0].starts_with("Bearer "), "{sent:?}");
    assert!(sent[1..].iter().all(|a| a.starts_with("Ref ") && a.len() == 4 + micro::auth::REF_LEN), "{sent:?}");
}

/// Calls `Say.Hello` for `run` with a client that sends `me`'s token, doing `during` once
/// at `at`; returns (calls, failures, distinct tokens seen).
async fn call_loop(
    url: &str,
    svc: &str,
    me: &AuthClient,
    run: Duration,
    at: Duration,
    during: impl std::future::Future<Output = ()>,
) -> (usize, Vec<String>, HashSet<String>) {
    // Both ways of sending the token, taking turns: `ClientBuilder::auth` (by reference once a
    // node has accepted it) and the client layer (always whole).
    let clients = [
        Client::builder().transport(url).auth(me.clone()).connect().await.unwrap(),
        Client::builder().transport(url).wrap(me.client_layer()).connect().await.unwrap(),
    ];
    let (mut calls, mut failures, mut tokens) = (0, Vec::new(), HashSet::new());
    let started = Instant::now();
    let mut during = Some(Box::pin(during));
    while started.elapsed() < run {
        if started.elapsed() >= at {
            if let Some(d) = during.take() {
                d.await;
            }
        }
        let r: micro::Result<String> = clients[calls % 2].call(svc, "Say.Hello", &"loop".to_string()).await;
        calls += 1;
        if let Err(e) = r {
            failures.push(e.to_string());
        }
        tokens.insert(me.token().await.unwrap());
    }
    (calls, failures, tokens)
}

async fn refresh_across_expiry(url: String) {
    // Tokens live 2 s and are renewed with a third of their life left: a 10 s loop crosses
    // several expiries.
    let fx = AuthFixture::start(&url, AuthConfig::default().token_ttl(Duration::from_secs(2))).await;
    let svc = unique("greeter");
    let me = fx.account(&unique("looper"), &["greeter"]);
    fx.auth.create_rule(Rule::new(&svc, "Say.*", "greeter")).await.unwrap();
    let _greeter = fx.service(&svc).await.handle("Say.Hello", hello).start().await.unwrap();
    let me = fx.client(Some(&me)).await;
    let (calls, failures, tokens) = call_loop(&url, &svc, &me, Duration::from_secs(10), Duration::MAX, async {}).await;
    assert!(
        failures.is_empty(),
        "{} of {calls} calls failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    assert!(tokens.len() >= 4, "the token was renewed across expiry ({} tokens in 10 s)", tokens.len());
    eprintln!("token refresh: {calls} calls, 0 failures, {} tokens", tokens.len());
}

async fn key_rotation(url: String) {
    let config = AuthConfig::default().token_ttl(Duration::from_secs(2)).key_overlap(Duration::from_secs(1));
    let fx = AuthFixture::start(&url, config).await;
    let svc = unique("greeter");
    let me = fx.account(&unique("looper"), &["greeter"]);
    fx.auth.create_rule(Rule::new(&svc, "Say.*", "greeter")).await.unwrap();
    let verify = fx.client(None).await;
    let _greeter =
        Service::builder(&svc).transport(&url).auth(verify.clone()).handle("Say.Hello", hello).start().await.unwrap();
    let me = fx.client(Some(&me)).await;
    let old: HashSet<String> = fx.auth.jwks().unwrap().keys.iter().filter_map(|k| k.common.key_id.clone()).collect();
    let new_kid = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let rotate = {
        let (auth, new_kid) = (fx.auth.clone(), new_kid.clone());
        async move { *new_kid.lock().unwrap() = auth.rotate_keys().await.unwrap() }
    };
    let (calls, failures, _) = call_loop(&url, &svc, &me, Duration::from_secs(8), Duration::from_secs(2), rotate).await;
    assert!(
        failures.is_empty(),
        "{} of {calls} calls failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    let new_kid = new_kid.lock().unwrap().clone();
    assert!(!old.contains(&new_kid));
    // The service learnt the new key, and the loop's last tokens were signed by it.
    assert!(verify.verifier().has_key(&new_kid), "the service has the new key");
    let only_new = micro::auth::Verifier::new("go.micro.auth", "micro");
    let mut jwks = fx.auth.jwks().unwrap();
    jwks.keys.retain(|k| k.common.key_id.as_deref() == Some(new_kid.as_str()));
    only_new.set_jwks(&jwks);
    let last = me.token().await.unwrap();
    only_new.verify(&last).expect("the current token is signed by the new key");
    eprintln!("key rotation: {calls} calls, 0 failures");
}

over_transports!(status_codes, service_to_service, token_by_reference, refresh_across_expiry, key_rotation);
