//! Middleware over memory, NATS and RabbitMQ: server layers around endpoints and event handlers,
//! client layers around calls and publishes; their order, what they see, and short-circuits.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use micro::middleware::{client_fn, from_fn, Answer};
use micro::prelude::*;

use crate::util::*;

over_transports!(
    server_layers_run_in_order_around_the_handler,
    server_layer_rejects_calls_without_a_metadata_key,
    server_layers_see_events_and_can_refuse_them,
    client_layers_wrap_calls_and_publishes_in_order,
    client_layer_answers_without_sending,
);

/// A log the layers and handlers of one test write to.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, s: impl Into<String>) {
        self.0.lock().unwrap().push(s.into());
    }
    fn entries(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// How often a handler ran.
#[derive(Clone, Default)]
struct Runs(Arc<AtomicUsize>);

impl Runs {
    fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

async fn logged_hello(Req(h): Req<Hello>, State(log): State<Log>, State(runs): State<Runs>) -> Result<String, Status> {
    log.push("handler");
    runs.0.fetch_add(1, Ordering::SeqCst);
    Ok(format!("Hello {}", h.name))
}

/// A layer that notes when a request enters and when its outcome leaves.
fn tracing_layer(log: Log, name: &'static str) -> impl micro::middleware::Middleware {
    from_fn(move |req, next| {
        let log = log.clone();
        async move {
            log.push(format!("{name} in {}", req.endpoint()));
            let outcome = next.run(req).await;
            log.push(format!("{name} out {}", if outcome.is_ok() { "ok" } else { "err" }));
            outcome
        }
    })
}

async fn server_layers_run_in_order_around_the_handler(url: String) {
    let name = unique("mw");
    let log = Log::default();
    let svc = Service::builder(&name)
        .transport(&url)
        .state(log.clone())
        .state(Runs::default())
        .wrap(tracing_layer(log.clone(), "a"))
        .wrap(tracing_layer(log.clone(), "b"))
        .handle("Say.Hello", logged_hello)
        .start()
        .await
        .unwrap();
    let client = Client::connect(&url).await.unwrap();
    let reply: String = client.call(&name, "Say.Hello", &Hello { name: "John".into() }).await.unwrap();
    assert_eq!(reply, "Hello John");
    assert_eq!(log.entries(), ["a in Say.Hello", "b in Say.Hello", "handler", "b out ok", "a out ok"]);

    // The toolkit's probes are answered outside the user's middleware.
    let _: serde_json::Value = client.call(&name, "Debug.Health", &()).await.unwrap();
    assert_eq!(log.entries().len(), 5, "Debug.Health went through no layer: {:?}", log.entries());
    svc.stop().await.unwrap();
}

async fn server_layer_rejects_calls_without_a_metadata_key(url: String) {
    let name = unique("mw");
    let runs = Runs::default();
    let svc = Service::builder(&name)
        .transport(&url)
        .state(Log::default())
        .state(runs.clone())
        .wrap(from_fn(|req, next| async move {
            if req.metadata().get("tenant").is_none() {
                return Err(Status::unauthorized("metadata key `tenant` is required"));
            }
            next.run(req).await
        }))
        .handle("Say.Hello", logged_hello)
        .start()
        .await
        .unwrap();
    let client = Client::connect(&url).await.unwrap();
    let err = client.call::<_, String, _>(&name, "Say.Hello", &Hello { name: "x".into() }).await.unwrap_err();
    let status = err.status().expect("a remote status");
    assert_eq!(status.code().as_u16(), 401, "{status:?}");
    assert!(status.detail().contains("tenant"), "{status:?}");
    assert_eq!(runs.get(), 0, "the handler did not run");

    let opts = CallOptions::new().metadata("Tenant", "acme");
    let ok: String = client.call_with(&name, "Say.Hello", &Hello { name: "y".into() }, opts).await.unwrap();
    assert_eq!(ok, "Hello y");
    assert_eq!(runs.get(), 1);
    svc.stop().await.unwrap();
}

async fn server_layers_see_events_and_can_refuse_them(url: String) {
    let name = unique("mw");
    let topic = format!("{}.login", unique("user"));
    let (log, runs) = (Log::default(), Runs::default());
    let seen = log.clone();
    let svc = Service::builder(&name)
        .transport(&url)
        .state(runs.clone())
        .wrap(from_fn(move |req, next| {
            let seen = seen.clone();
            async move {
                assert!(req.is_event());
                let tenant = req.metadata().get("tenant").map(str::to_string);
                let outcome = match tenant {
                    None => Err(Status::unauthorized("no tenant")),
                    Some(_) => next.run(req).await,
                };
                seen.push(if outcome.is_ok() { "handled event" } else { "refused event" });
                outcome
            }
        }))
        .subscribe(&topic, |State(runs): State<Runs>| async move {
            runs.0.fetch_add(1, Ordering::SeqCst);
            Ok::<_, Status>(())
        })
        .start()
        .await
        .unwrap();
    let client = Client::connect(&url).await.unwrap();
    client.publish(&topic, &serde_json::json!({"user": "refused"})).await.unwrap();
    let opts = PublishOptions::new().metadata("tenant", "acme");
    client.publish_with(&topic, &serde_json::json!({"user": "let in"}), opts).await.unwrap();
    wait_for("both events through the layer", WAIT, || async { (log.entries().len() == 2).then_some(()) }).await;
    let mut entries = log.entries();
    entries.sort();
    assert_eq!(entries, ["handled event", "refused event"]);
    assert_eq!(runs.get(), 1, "the refused event never reached the handler");
    svc.stop().await.unwrap();
}

async fn client_layers_wrap_calls_and_publishes_in_order(url: String) {
    let name = unique("mw");
    let topic = format!("{}.created", unique("order"));
    let got = Log::default();
    let events = got.clone();
    let svc = Service::builder(&name)
        .transport(&url)
        .handle("Meta.Tenant", |Meta(m): Meta| async move { Ok::<_, Status>(m.get("tenant").map(str::to_string)) })
        .subscribe(&topic, move |Meta(m): Meta| {
            let events = events.clone();
            async move {
                events.push(format!("event tenant={}", m.get("tenant").unwrap_or("-")));
                Ok::<_, Status>(())
            }
        })
        .start()
        .await
        .unwrap();

    let log = Log::default();
    let layer = |name: &'static str, log: Log| {
        client_fn(move |mut out, next| {
            let log = log.clone();
            async move {
                let what = out.service().map(|_| "call").unwrap_or("publish");
                log.push(format!("{name} {what} {}", out.endpoint().or(out.topic()).unwrap_or("?")));
                if name == "outer" {
                    out.set_metadata("tenant", "acme");
                }
                let answer = next.run(out).await;
                let kind = match &answer {
                    Ok(Answer::Reply(_)) => "reply",
                    Ok(Answer::Published) => "published",
                    Ok(_) => "other",
                    Err(_) => "error",
                };
                log.push(format!("{name} {kind}"));
                answer
            }
        })
    };
    let client = Client::builder()
        .transport(&url)
        .wrap(layer("outer", log.clone()))
        .wrap(layer("inner", log.clone()))
        .connect()
        .await
        .unwrap();
    let tenant: Option<String> = client.call(&name, "Meta.Tenant", &()).await.unwrap();
    assert_eq!(tenant.as_deref(), Some("acme"), "metadata added by a client layer reaches the handler");
    assert_eq!(log.entries(), ["outer call Meta.Tenant", "inner call Meta.Tenant", "inner reply", "outer reply"]);

    // A publish goes through the same layers, from the client and from its broker handle.
    client.publish(&topic, &1).await.unwrap();
    client.broker().publish(&topic, &2).await.unwrap();
    wait_for("both events", WAIT, || async { (got.entries().len() == 2).then_some(()) }).await;
    assert_eq!(got.entries(), ["event tenant=acme", "event tenant=acme"]);
    let publishes: Vec<String> = log.entries().into_iter().skip(4).collect();
    let once = [
        format!("outer publish {topic}"),
        format!("inner publish {topic}"),
        "inner published".into(),
        "outer published".into(),
    ];
    assert_eq!(publishes, [once.clone(), once].concat());
    svc.stop().await.unwrap();
}

async fn client_layer_answers_without_sending(url: String) {
    let name = unique("mw");
    let runs = Runs::default();
    let svc = Service::builder(&name)
        .transport(&url)
        .state(Log::default())
        .state(runs.clone())
        .handle("Say.Hello", logged_hello)
        .start()
        .await
        .unwrap();
    // A service's own client takes layers too.
    let caller = Service::builder(unique("caller"))
        .transport(&url)
        .wrap_client(client_fn(|out, next| async move {
            if out.endpoint() == Some("Say.Hello") {
                return Err(Status::forbidden("Say.Hello may not be called from here").into());
            }
            next.run(out).await
        }))
        .start()
        .await
        .unwrap();
    let err = caller.client().call::<_, String, _>(&name, "Say.Hello", &Hello { name: "x".into() }).await.unwrap_err();
    assert_eq!(err.status().map(|s| s.code().as_u16()), Some(403), "{err}");
    assert_eq!(runs.get(), 0, "nothing was sent");
    let health: serde_json::Value = caller.client().call(&name, "Debug.Health", &()).await.unwrap();
    assert_eq!(health["status"], "ok");
    caller.stop().await.unwrap();
    svc.stop().await.unwrap();
}
