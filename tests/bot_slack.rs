//! `micro::bot`'s Slack input against a Slack written in this test, which follows Slack's
//! documented Socket Mode and Web API messages:
//! - Socket Mode, <https://api.slack.com/apis/socket-mode>: `apps.connections.open` answers a
//!   WebSocket URL; on it the server sends `hello`, then `events_api` envelopes that must each be
//!   acknowledged with `{"envelope_id": …}`, and `disconnect` when the app must reconnect;
//! - the Web API, <https://api.slack.com/methods/chat.postMessage> (and `auth.test`): bearer
//!   tokens, JSON bodies, `{"ok": false, "error": …}` and `429` with `Retry-After`.
//!
//! The Web API is an actix-web server, the WebSocket a tokio-tungstenite one on a port of its own
//! (Slack's are on another host too). The services side runs over NATS and RabbitMQ.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use futures::{SinkExt, StreamExt};
use micro::bot::{Bot, BotConfig, Input, SlackConfig, SlackInput};
use micro::prelude::*;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use crate::util::*;

over_brokers!(the_bot_answers_in_slack_acks_every_envelope_and_reconnects);

const APP_TOKEN: &str = "xapp-1-A1-test";
const BOT_TOKEN: &str = "xoxb-1-test";
const BOT_USER: &str = "UBOT";
const ALICE: &str = "UALICE";
const MALLORY: &str = "UMALLORY";
const OPS: &str = "COPS";
/// Allowed, but `chat.postMessage` refuses it (`channel_not_found`).
const GONE: &str = "CGONE";

/// What the fake Slack has seen and holds.
#[derive(Default)]
struct State {
    ws_url: String,
    /// `apps.connections.open` calls.
    opens: usize,
    /// WebSocket connections accepted; the newest is `socket`.
    connections: usize,
    /// Frames for the newest connection; `None` drops it without a close frame.
    socket: Option<mpsc::UnboundedSender<Option<Message>>>,
    /// `chat.postMessage` bodies taken, in order.
    posts: Vec<Value>,
    /// Answer the next `chat.postMessage` with 429.
    rate_limit_next: bool,
    rate_limited: usize,
    refused: usize,
    /// Calls with a wrong token or body.
    bad_calls: Vec<String>,
    sent: Vec<String>,
    acked: Vec<String>,
}

type Shared = Arc<Mutex<State>>;

struct FakeSlack {
    state: Shared,
    api: SocketAddr,
    server: actix_web::dev::ServerHandle,
    listener: tokio::task::JoinHandle<()>,
    ts: u64,
}

impl Drop for FakeSlack {
    fn drop(&mut self) {
        self.listener.abort();
        let server = self.server.clone();
        actix_rt::spawn(async move { server.stop(false).await });
    }
}

/// The Web API: `POST /api/{method}`.
async fn web_api(
    method: web::Path<String>,
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<Shared>,
) -> HttpResponse {
    let token =
        req.headers().get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let mut s = state.lock();
    let expected = if method.as_str() == "apps.connections.open" { APP_TOKEN } else { BOT_TOKEN };
    if token != Some(expected) {
        s.bad_calls.push(format!("{method}: token {token:?}"));
        return HttpResponse::Ok().json(json!({ "ok": false, "error": "invalid_auth" }));
    }
    match method.as_str() {
        "apps.connections.open" => {
            s.opens += 1;
            HttpResponse::Ok().json(json!({ "ok": true, "url": s.ws_url }))
        }
        "auth.test" => HttpResponse::Ok().json(json!({
            "ok": true, "url": "https://test.slack.com/", "team": "Test", "user": "micro",
            "team_id": "T1", "user_id": BOT_USER, "bot_id": "BBOT"
        })),
        "chat.postMessage" => {
            let json_body =
                req.headers().get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
            let post: Value = serde_json::from_slice(&body).unwrap_or_default();
            if !json_body || !post["channel"].is_string() || !post["text"].is_string() {
                s.bad_calls.push(format!("chat.postMessage: {post}"));
                return HttpResponse::Ok().json(json!({ "ok": false, "error": "invalid_arguments" }));
            }
            if s.rate_limit_next {
                s.rate_limit_next = false;
                s.rate_limited += 1;
                return HttpResponse::TooManyRequests()
                    .insert_header(("Retry-After", "1"))
                    .json(json!({ "ok": false, "error": "ratelimited" }));
            }
            if post["channel"] == GONE {
                s.refused += 1;
                return HttpResponse::Ok().json(json!({ "ok": false, "error": "channel_not_found" }));
            }
            let ts = format!("1800000000.{:06}", s.posts.len());
            let channel = post["channel"].clone();
            s.posts.push(post);
            HttpResponse::Ok().json(json!({ "ok": true, "channel": channel, "ts": ts }))
        }
        _ => HttpResponse::Ok().json(json!({ "ok": false, "error": "unknown_method" })),
    }
}

/// One Socket Mode connection: `hello`, then the frames the test sends; every text from the app
/// is an acknowledgement.
async fn socket_mode(tcp: tokio::net::TcpStream, state: Shared) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else { return };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let n = {
        let mut s = state.lock();
        s.connections += 1;
        s.socket = Some(tx);
        s.connections
    };
    let hello = json!({
        "type": "hello", "num_connections": 1,
        "debug_info": { "host": "applink-test", "build_number": 1, "approximate_connection_time": 18060 },
        "connection_info": { "app_id": "A1" }
    });
    if ws.send(Message::text(hello.to_string())).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(Some(frame)) => if ws.send(frame).await.is_err() { return },
                _ => return, // dropped, no close frame
            },
            read = ws.next() => match read {
                Some(Ok(Message::Text(t))) => {
                    let ack: Value = serde_json::from_str(&t).unwrap_or_default();
                    let mut s = state.lock();
                    match ack["envelope_id"].as_str() {
                        Some(id) if ack.as_object().is_some_and(|o| o.len() == 1) => s.acked.push(id.to_string()),
                        _ => s.bad_calls.push(format!("connection {n}: not an acknowledgement: {t}")),
                    }
                }
                Some(Ok(_)) => {}
                _ => return,
            },
        }
    }
}

impl FakeSlack {
    async fn start() -> FakeSlack {
        let state = Shared::default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        state.lock().ws_url = format!("ws://{}/link/?ticket=test-ticket&app_id=A1", listener.local_addr().unwrap());
        let accepting = state.clone();
        let listener = actix_rt::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                actix_rt::spawn(socket_mode(tcp, accepting.clone()));
            }
        });
        let data = web::Data::new(state.clone());
        let server =
            HttpServer::new(move || App::new().app_data(data.clone()).route("/api/{method}", web::post().to(web_api)))
                .workers(1)
                .bind("127.0.0.1:0")
                .unwrap();
        let api = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        FakeSlack { state, api, server: handle, listener, ts: 0 }
    }

    fn api_url(&self) -> String {
        format!("http://{}/api/", self.api)
    }

    /// Sends a frame on the newest connection, once there is one.
    async fn send(&self, frame: Option<Message>) {
        let socket = wait_for("a Socket Mode connection", WAIT, || async { self.state.lock().socket.clone() }).await;
        let _ = socket.send(frame);
    }

    /// Sends `event` in an `events_api` envelope, as Slack does.
    async fn event(&mut self, event: Value) {
        self.ts += 1;
        let id = format!("env-{}-{}", self.ts, uuid::Uuid::now_v7().simple());
        let envelope = json!({
            "envelope_id": id, "type": "events_api", "accepts_response_payload": false,
            "retry_attempt": 0, "retry_reason": "",
            "payload": {
                "token": "verification", "team_id": "T1", "api_app_id": "A1", "type": "event_callback",
                "event_id": format!("Ev{}", self.ts), "event_time": 1_800_000_000, "event": event
            }
        });
        self.state.lock().sent.push(id);
        self.send(Some(Message::text(envelope.to_string()))).await;
    }

    fn next_ts(&self) -> String {
        format!("1700000000.{:06}", self.ts + 1)
    }

    /// `user` writes `text` in `channel` (a `D…` channel is a direct message).
    async fn say(&mut self, user: &str, channel: &str, text: &str) {
        self.say_with(user, channel, text, json!({})).await;
    }

    async fn say_with(&mut self, user: &str, channel: &str, text: &str, extra: Value) {
        let kind = if channel.starts_with('D') { "im" } else { "channel" };
        let ts = self.next_ts();
        let mut event = json!({
            "type": "message", "channel": channel, "user": user, "text": text, "ts": ts,
            "event_ts": ts, "channel_type": kind, "team": "T1"
        });
        for (k, v) in extra.as_object().unwrap() {
            event[k] = v.clone();
        }
        self.event(event).await;
    }

    fn posts(&self) -> Vec<Value> {
        self.state.lock().posts.clone()
    }

    /// The posts from the `from`-th until one contains `needle`.
    async fn posts_until(&self, from: usize, needle: &str) -> Vec<Value> {
        let what = format!("a post containing {needle:?}");
        wait_for(&what, WAIT, || async {
            let posts = self.posts();
            let tail = posts.get(from..).unwrap_or_default();
            tail.iter().any(|p| p["text"].as_str().unwrap_or_default().contains(needle)).then(|| tail.to_vec())
        })
        .await
    }

    /// Alice asks `command` in the channel until an answer contains `needle` (a service may not
    /// be in the registry yet); each try waits for the answer to an echo after it.
    async fn ask_until(&mut self, command: &str, needle: &str) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + WAIT;
        for n in 0.. {
            let from = self.posts().len();
            let marker = format!("done-{}-{n}", self.ts);
            self.say(ALICE, OPS, &format!("<@{BOT_USER}> {command}")).await;
            self.say(ALICE, OPS, &format!("!echo {marker}")).await;
            let posts = self.posts_until(from, &marker).await;
            if posts.iter().any(|p| p["text"].as_str().unwrap_or_default().contains(needle)) {
                return posts;
            }
            assert!(tokio::time::Instant::now() < deadline, "`{command}` never answered {needle:?}: {posts:#?}");
        }
        unreachable!()
    }

    /// Waits until every envelope sent has been acknowledged.
    async fn all_acked(&self) {
        wait_for("every envelope acknowledged", WAIT, || async {
            let s = self.state.lock();
            s.sent.iter().all(|id| s.acked.contains(id)).then_some(())
        })
        .await;
    }
}

fn texts(posts: &[Value]) -> String {
    posts.iter().map(|p| p["text"].as_str().unwrap_or_default()).collect::<Vec<_>>().join("\n")
}

async fn the_bot_answers_in_slack_acks_every_envelope_and_reconnects(url: String) {
    let mut slack = FakeSlack::start().await;
    let greeter_name = unique("botslack.greeter");
    let greeter_svc = greeter(&url, &greeter_name, "a").start().await.unwrap();

    let mut config = BotConfig::default().room(OPS).room(GONE).user(ALICE).allow_call(&greeter_name);
    config.max_lines = 400;
    config.max_chars = 100_000;
    let input = SlackInput::new(SlackConfig::new(APP_TOKEN, BOT_TOKEN).api_url(slack.api_url()));
    let inputs: Vec<Box<dyn Input>> = vec![Box::new(input)];
    let bot = actix::spawn(Bot::new(Client::connect(&url).await.unwrap(), config).run(inputs));

    slack.ask_until("echo ready", "ready").await;

    // Ignored: a user outside the allowlist, a channel outside it, the bot itself, another bot,
    // and talk not addressed to the bot. The answer to alice's echo after them comes; theirs never.
    slack.say(MALLORY, OPS, "!echo from-mallory").await;
    slack.say(ALICE, "CRANDOM", "!echo from-random").await;
    slack.say(BOT_USER, OPS, "!echo from-itself").await;
    let bot_post = json!({ "subtype": "bot_message", "bot_id": "BOTHER", "username": "other" });
    slack.say_with("UOTHERBOT", OPS, "!echo from-a-bot", bot_post).await;
    slack.say(ALICE, OPS, "echo not-addressed").await;
    let posts = slack.ask_until("echo from-alice", "from-alice").await;
    let all = texts(&slack.posts());
    for ignored in ["from-mallory", "from-random", "from-itself", "from-a-bot", "not-addressed"] {
        assert!(!all.contains(ignored), "answered {ignored}: {all}");
    }
    assert!(posts.iter().all(|p| p["channel"] == OPS && p.get("thread_ts").is_none()), "{posts:#?}");

    slack.ask_until("services", &greeter_name).await;
    let posts = slack.ask_until(&format!("call {greeter_name} Say.Hello {{\"name\": \"John\"}}"), "Hello John").await;
    let answer = texts(&posts);
    assert!(answer.contains("```\n{") && !answer.contains("```json"), "a Slack code block: {answer}");
    slack.ask_until("frobnicate now", "usage:").await;

    // A question in a thread is answered in the thread; a direct message in its conversation.
    let from = slack.posts().len();
    slack.say_with(ALICE, OPS, "!echo in-thread", json!({ "thread_ts": "1700000000.000001" })).await;
    let posts = slack.posts_until(from, "in-thread").await;
    assert_eq!(posts.last().unwrap()["thread_ts"], "1700000000.000001", "{posts:#?}");
    slack.say(ALICE, "DALICE", "echo direct").await;
    let posts = slack.posts_until(from, "direct").await;
    assert_eq!(posts.last().unwrap()["channel"], "DALICE", "{posts:#?}");

    // Slack sends a mention twice, as `message` and `app_mention`: one answer.
    let ts = slack.next_ts();
    slack.say(ALICE, OPS, &format!("<@{BOT_USER}> echo mentioned-once")).await;
    let mention = json!({ "type": "app_mention", "channel": OPS, "user": ALICE, "ts": ts, "event_ts": ts,
                          "text": format!("<@{BOT_USER}> echo mentioned-once") });
    slack.event(mention).await;
    let posts = slack.ask_until("echo after-mention", "after-mention").await;
    assert_eq!(texts(&slack.posts()).matches("mentioned-once").count(), 1, "{posts:#?}");

    // Rate limited: the reply waits `Retry-After` and goes out. Refused: lost, the bot goes on.
    slack.state.lock().rate_limit_next = true;
    slack.ask_until("echo after-429", "after-429").await;
    slack.say(ALICE, GONE, "!echo refused").await;
    slack.ask_until("echo after-refusal", "after-refusal").await;
    {
        let s = slack.state.lock();
        assert_eq!((s.rate_limited, s.refused, s.opens), (1, 1, 1), "one connection so far");
    }
    slack.all_acked().await;

    // Slack asks for a reconnect: a new connection is opened and the bot keeps answering.
    let refresh =
        json!({ "type": "disconnect", "reason": "refresh_requested", "debug_info": { "host": "applink-test" } });
    slack.send(Some(Message::text(refresh.to_string()))).await;
    wait_for("a second connection", WAIT, || async {
        let s = slack.state.lock();
        (s.opens == 2 && s.connections == 2).then_some(())
    })
    .await;
    slack.ask_until(&format!("call {greeter_name} Say.Hello {{\"name\": \"John\"}}"), "Hello John").await;

    // The connection drops without a word: the bot connects again.
    slack.send(None).await;
    wait_for("a third connection", WAIT, || async {
        let s = slack.state.lock();
        (s.opens == 3 && s.connections == 3).then_some(())
    })
    .await;
    slack.ask_until(&format!("call {greeter_name} Say.Hello {{\"name\": \"John\"}}"), "Hello John").await;

    slack.all_acked().await;
    let bad = slack.state.lock().bad_calls.clone();
    assert!(bad.is_empty(), "calls Slack would refuse: {bad:#?}");

    bot.abort();
    greeter_svc.stop().await.unwrap();
}
