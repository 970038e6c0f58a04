//! One suite, run against every transport: each case takes a transport URL and
//! `over_transports!` (tests/tests.rs) instantiates it for memory, NATS and RabbitMQ.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use micro::message::{headers, Deadline, Headers, Message};
use micro::prelude::*;
use micro::registry::{RegistryOptions, WatchAction};
use micro::subject;
use micro::{Code, ErrorKind};

use crate::util::*;

over_transports!(
    typed_round_trip,
    json_codec_round_trip,
    two_nodes_share_load,
    broker_balanced_calls_use_the_queue_group,
    unknown_endpoint_bad_payload_and_content_type,
    handler_panic_is_internal_and_service_keeps_serving,
    actor_endpoint_restarts_after_panic,
    actor_pool_serves_concurrently,
    restart_intensity_stops_the_service,
    deadline_metadata_and_trace_propagate,
    expired_request_is_dropped_unrun,
    unknown_service_is_unavailable,
    queue_groups_and_broadcast_delivery_counts,
    watch_reports_start_and_stop,
    new_client_discovers_running_services_at_once,
    graceful_stop_drains_in_flight_requests,
    debug_endpoints_answer,
    many_requests_in_flight_on_one_endpoint,
    actor_event_subscriber_survives_a_panic,
    concurrent_requests_to_live_and_missing_subjects_each_get_their_own_outcome,
);

fn hello(name: &str) -> Hello {
    Hello { name: name.into() }
}

async fn typed_round_trip(url: String) {
    let name = unique("greeter");
    let svc = greeter(&url, &name, "a").start().await.unwrap();
    let client = Client::connect(&url).await.unwrap();
    let g: Greeting = client.call(&name, "Say.Hello", &hello("John")).await.unwrap();
    assert_eq!(g, Greeting { msg: "Hello John".into(), node: "a".into() });
    svc.stop().await.unwrap();
}

async fn json_codec_round_trip(url: String) {
    let name = unique("greeter");
    let svc = greeter(&url, &name, "a").start().await.unwrap();
    let client = Client::builder().transport(&url).codec(Codec::Json).connect().await.unwrap();
    let reply = client
        .call_raw(&name, "Say.Hello", br#"{"name":"Json"}"#.to_vec().into(), Codec::Json, CallOptions::new())
        .await
        .unwrap();
    assert_eq!(reply.codec, Codec::Json, "the reply comes in the request's codec");
    let v: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(v["msg"], "Hello Json");
    svc.stop().await.unwrap();
}

async fn two_nodes_share_load(url: String) {
    let name = unique("greeter");
    let a = greeter(&url, &name, "a").start().await.unwrap();
    let b = greeter(&url, &name, "b").start().await.unwrap();
    let client = Client::connect(&url).await.unwrap();
    wait_for("both nodes registered", WAIT, || async {
        let s = client.registry().get_service(&name).await.unwrap();
        (s.iter().map(|s| s.nodes.len()).sum::<usize>() == 2).then_some(())
    })
    .await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for i in 0..100 {
        let g: Greeting = client.call(&name, "Say.Hello", &hello(&i.to_string())).await.unwrap();
        *seen.entry(g.node).or_default() += 1;
    }
    assert_eq!(seen.len(), 2, "both nodes served: {seen:?}");
    assert!(seen.values().all(|&n| n >= 10), "random selection spread the load: {seen:?}");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

async fn broker_balanced_calls_use_the_queue_group(url: String) {
    let name = unique("greeter");
    let a = greeter(&url, &name, "a").start().await.unwrap();
    let b = greeter(&url, &name, "b").start().await.unwrap();
    let client = Client::connect(&url).await.unwrap();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..60 {
        let g: Greeting =
            client.call_with(&name, "Say.Hello", &hello("q"), CallOptions::new().broker_balanced()).await.unwrap();
        *seen.entry(g.node).or_default() += 1;
    }
    assert_eq!(seen.len(), 2, "the queue group spread the load: {seen:?}");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

async fn unknown_endpoint_bad_payload_and_content_type(url: String) {
    let name = unique("greeter");
    let svc = greeter(&url, &name, "a").start().await.unwrap();
    let client = Client::connect(&url).await.unwrap();

    let e = client.call::<_, Greeting, _>(&name, "Say.Nothing", &hello("x")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Remote);
    let s = e.status().unwrap();
    assert_eq!(s.code(), Code::NOT_FOUND);
    assert_eq!(s.id(), name);
    assert_eq!(s.status_text(), "Not Found");

    let e = client.call::<_, Greeting, _>(&name, "Say.Hello", &serde_json::json!({"name": 42})).await.unwrap_err();
    let s = e.status().unwrap();
    assert_eq!(s.code(), Code::BAD_REQUEST);
    assert!(s.detail().contains("name"), "the error names the field: {s}");

    let e = client.call::<_, Greeting, _>(&name, "Say.Hello", &serde_json::json!({})).await.unwrap_err();
    assert!(e.status().unwrap().detail().contains("missing field `name`"), "{e}");

    // A content type the service cannot decode: 400, answered in JSON, with the error headers
    // of the NATS services API.
    let t = micro::transport::connect(&url).await.unwrap();
    let say_hello = subject::request(&subject::service(&name), "Say.Hello");
    let mut h = Headers::new();
    h.insert(headers::CONTENT_TYPE, "text/plain");
    let reply = t.request(&say_hello, &Message::with_headers(h, "John".into()), Duration::from_secs(5)).await.unwrap();
    assert_eq!(reply.headers.get(headers::ERROR), Some("400"));
    assert!(reply.headers.get(headers::ERROR_TEXT).unwrap().contains("text/plain"));
    assert_eq!(reply.headers.get(headers::CONTENT_TYPE), Some("application/json"));
    let status: Status = serde_json::from_slice(&reply.body).unwrap();
    assert!(status.detail().contains("text/plain"), "{status}");

    // An endpoint the service does not have, named only by the subject: 404.
    let nothing = subject::request(&subject::service(&name), "Say.Nothing");
    let reply = t.request(&nothing, &Message::new("x".into()), Duration::from_secs(5)).await.unwrap();
    assert_eq!(reply.headers.get(headers::ERROR), Some("404"));

    // Bare JSON with no headers at all (as `nats req` sends it) is recognised and answered in JSON.
    let reply =
        t.request(&say_hello, &Message::new(r#"{"name":"Bare"}"#.into()), Duration::from_secs(5)).await.unwrap();
    assert_eq!(reply.headers.get(headers::ERROR), None);
    let g: Greeting = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(g.msg, "Hello Bare");

    // A request for a service that is a prefix of this one's name is not served here: the
    // endpoint is exactly the last two tokens, so `<name>.admin.Say.Hello` matches no node.
    let longer = subject::request(&format!("{}.admin", subject::service(&name)), "Say.Hello");
    let e = t.request(&longer, &Message::new(r#"{"name":"x"}"#.into()), Duration::from_secs(5)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");

    // And the service is still up.
    let g: Greeting = client.call(&name, "Say.Hello", &hello("still")).await.unwrap();
    assert_eq!(g.msg, "Hello still");
    svc.stop().await.unwrap();
}

async fn handler_panic_is_internal_and_service_keeps_serving(url: String) {
    let name = unique("greeter");
    // A handler that panics as it is called, before it returns its future, is caught too.
    let sync_boom = |Req(_): Req<serde_json::Value>| -> futures::future::Ready<Result<(), Status>> {
        panic!("boom before the future (this panic is part of a test)")
    };
    let svc = greeter(&url, &name, "a")
        .handle("Say.BoomNow", sync_boom)
        .restart_policy(RestartPolicy::unlimited())
        .start()
        .await
        .unwrap();
    let client = Client::connect(&url).await.unwrap();
    for endpoint in ["Say.Boom", "Say.Boom", "Say.BoomNow", "Say.BoomNow"] {
        let e = client.call::<_, (), _>(&name, endpoint, &serde_json::json!({})).await.unwrap_err();
        assert_eq!(e.status().unwrap().code(), Code::INTERNAL, "{endpoint}: {e}");
    }
    let g: Greeting = client.call(&name, "Say.Hello", &hello("alive")).await.unwrap();
    assert_eq!(g.msg, "Hello alive");
    let stats: micro::server::ServiceStats = client.call(&name, "Debug.Stats", &()).await.unwrap();
    assert_eq!(stats.panics, 4);
    svc.stop().await.unwrap();
}

async fn actor_endpoint_restarts_after_panic(url: String) {
    let name = unique("counter");
    let svc = Service::builder(&name)
        .transport(&url)
        .actors(counter_endpoints())
        .restart_policy(RestartPolicy::unlimited())
        .start()
        .await
        .unwrap();
    let client = Client::connect(&url).await.unwrap();
    assert_eq!(client.call::<_, u64, _>(&name, "Counter.Add", &Add { by: 2 }).await.unwrap(), 2);
    assert_eq!(client.call::<_, u64, _>(&name, "Counter.Add", &Add { by: 3 }).await.unwrap(), 5, "state is kept");
    let e = client.call::<_, u64, _>(&name, "Counter.Crash", &Crash {}).await.unwrap_err();
    assert_eq!(e.status().unwrap().code(), Code::INTERNAL);
    // A fresh actor from the factory: state starts over, and it serves every route of the group.
    assert_eq!(client.call::<_, u64, _>(&name, "Counter.Add", &Add { by: 1 }).await.unwrap(), 1);
    let stats: micro::server::ServiceStats = client.call(&name, "Debug.Stats", &()).await.unwrap();
    assert_eq!(stats.restarts, 1);
    svc.stop().await.unwrap();
}

async fn actor_pool_serves_concurrently(url: String) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    /// (handlers running now, most running at once), shared by the pool.
    #[derive(Clone, Default)]
    struct Load(Arc<(AtomicUsize, AtomicUsize)>);
    struct Sleeper(Load);
    impl actix::Actor for Sleeper {
        type Context = actix::Context<Self>;
    }
    #[derive(serde::Deserialize, actix::Message)]
    #[rtype(result = "Result<u64, Status>")]
    struct Nap {
        ms: u64,
    }
    impl actix::Handler<Nap> for Sleeper {
        type Result = actix::AtomicResponse<Self, Result<u64, Status>>;
        fn handle(&mut self, m: Nap, _: &mut actix::Context<Self>) -> Self::Result {
            use actix::WrapFuture;
            // Atomic: the actor handles nothing else until the nap is over, so only the pool can
            // run naps side by side.
            let load = self.0.clone();
            actix::AtomicResponse::new(Box::pin(
                async move {
                    let running = load.0 .0.fetch_add(1, Ordering::SeqCst) + 1;
                    load.0 .1.fetch_max(running, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(m.ms)).await;
                    load.0 .0.fetch_sub(1, Ordering::SeqCst);
                    Ok(m.ms)
                }
                .into_actor(self),
            ))
        }
    }
    let name = unique("pool");
    let load = Load::default();
    let factory_load = load.clone();
    let svc = Service::builder(&name)
        .transport(&url)
        .actors(ActorEndpoints::new(move || Sleeper(factory_load.clone())).pool(4).route::<Nap>("Sleeper.Nap"))
        .start()
        .await
        .unwrap();
    let client = Client::connect(&url).await.unwrap();
    let nap = serde_json::json!({"ms": 200});
    let calls = (0..16).map(|_| client.call::<_, u64, _>(&name, "Sleeper.Nap", &nap));
    for r in futures::future::join_all(calls).await {
        assert_eq!(r.unwrap(), 200);
    }
    let most = load.0 .1.load(Ordering::SeqCst);
    assert_eq!(most, 4, "the 4 actors of the pool napped at once, and each only one nap at a time");
    svc.stop().await.unwrap();
}

async fn restart_intensity_stops_the_service(url: String) {
    let name = unique("flappy");
    let svc =
        greeter(&url, &name, "a").restart_policy(RestartPolicy::new(2, Duration::from_secs(60))).start().await.unwrap();
    let client = Client::connect(&url).await.unwrap();
    for _ in 0..3 {
        let e = client.call::<_, (), _>(&name, "Say.Boom", &serde_json::json!({})).await.unwrap_err();
        assert_eq!(e.status().unwrap().code(), Code::INTERNAL);
    }
    let outcome = tokio::time::timeout(WAIT, svc.until_stopped()).await.expect("the service gave up");
    assert_eq!(outcome.unwrap_err().kind(), ErrorKind::RestartIntensity);
    svc.stop().await.unwrap();
    let gone = client.call::<_, Greeting, _>(&name, "Say.Hello", &hello("x")).await.unwrap_err();
    assert_eq!(gone.kind(), ErrorKind::Unavailable, "{gone}");
}

#[derive(serde::Serialize, serde::Deserialize, Debug)]
struct Seen {
    remaining_ms: u64,
    trace_id: String,
    tenant: Option<String>,
    caller: Option<String>,
}

async fn deadline_metadata_and_trace_propagate(url: String) {
    let back = unique("backend");
    let front = unique("frontend");
    async fn observe(ctx: CallContext) -> Result<Seen, Status> {
        Ok(Seen {
            remaining_ms: ctx.remaining().unwrap().as_millis() as u64,
            trace_id: ctx.trace().unwrap().trace_id(),
            tenant: ctx.metadata().get("tenant").map(str::to_string),
            caller: ctx.caller().map(str::to_string),
        })
    }
    #[derive(Clone)]
    struct Backend(String);
    async fn relay(
        ctx: CallContext,
        client: Client,
        State(Backend(b)): State<Backend>,
    ) -> Result<(Seen, Seen), Status> {
        let me = observe(ctx.clone()).await?;
        // Burn some of the budget so the reduction is visible downstream.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let downstream: Seen = client.call(&b, "B.Observe", &()).await.map_err(|e| e.to_status("relay"))?;
        Ok((me, downstream))
    }
    let b = Service::builder(&back).transport(&url).handle("B.Observe", observe).start().await.unwrap();
    let a = Service::builder(&front)
        .transport(&url)
        .state(Backend(back.clone()))
        .handle("A.Relay", relay)
        .start()
        .await
        .unwrap();
    let client = Client::connect(&url).await.unwrap();
    let opts = CallOptions::new().timeout(Duration::from_secs(3)).metadata("tenant", "acme");
    let (at_a, at_b): (Seen, Seen) = client.call_with(&front, "A.Relay", &(), opts).await.unwrap();
    assert!(at_a.remaining_ms <= 3000 && at_a.remaining_ms > 2000, "A saw {at_a:?}");
    assert!(at_b.remaining_ms + 100 <= at_a.remaining_ms, "B saw a reduced deadline: A {at_a:?}, B {at_b:?}");
    assert_eq!(at_a.trace_id, at_b.trace_id, "one trace across the hops");
    assert_eq!(at_b.tenant.as_deref(), Some("acme"), "metadata travels on");
    assert_eq!(at_a.caller, None, "an anonymous client names no caller");
    assert_eq!(at_b.caller.as_deref(), Some(front.as_str()), "the service's own client names it as caller");
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

async fn expired_request_is_dropped_unrun(url: String) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    #[derive(Clone, Default)]
    struct Runs(Arc<AtomicUsize>);
    async fn counted(Req(h): Req<Hello>, State(Runs(runs)): State<Runs>) -> Result<Greeting, Status> {
        runs.fetch_add(1, Ordering::SeqCst);
        Ok(Greeting { msg: format!("Hello {}", h.name), node: "a".into() })
    }
    let name = unique("greeter");
    let runs = Runs::default();
    let svc =
        Service::builder(&name).transport(&url).state(runs.clone()).handle("Say.Hello", counted).start().await.unwrap();
    let t = micro::transport::connect(&url).await.unwrap();
    let mut h = Headers::new();
    h.insert(headers::CONTENT_TYPE, Codec::Json.content_type());
    h.insert(headers::DEADLINE, (Deadline::after(Duration::ZERO).as_millis() - 1000).to_string());
    let e = t
        .request(
            &subject::request(&subject::service(&name), "Say.Hello"),
            &Message::with_headers(h, r#"{"name":"late"}"#.into()),
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "no reply for an expired request: {e}");
    let client = Client::connect(&url).await.unwrap();
    let stats: micro::server::ServiceStats = client.call(&name, "Debug.Stats", &()).await.unwrap();
    assert_eq!(stats.expired, 1);
    assert_eq!(runs.0.load(Ordering::SeqCst), 0, "the handler did not run");
    // The same request in time does run it: the counter would have seen the expired one.
    let _: Greeting = client.call(&name, "Say.Hello", &hello("in time")).await.unwrap();
    assert_eq!(runs.0.load(Ordering::SeqCst), 1);
    svc.stop().await.unwrap();
}

async fn unknown_service_is_unavailable(url: String) {
    let client = Client::connect(&url).await.unwrap();
    let e = client.call::<_, Greeting, _>(&unique("nobody"), "Say.Hello", &hello("x")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    let e = client
        .call_with::<_, Greeting, _>(&unique("nobody"), "Say.Hello", &hello("x"), CallOptions::new().broker_balanced())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "no responders on the shared subject: {e}");
}

async fn queue_groups_and_broadcast_delivery_counts(url: String) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let topic = format!("{}.placed", unique("order"));
    #[derive(Clone, Default)]
    struct Count(Arc<AtomicUsize>);
    async fn on_event(State(Count(c)): State<Count>, Req(_): Req<serde_json::Value>) -> Result<(), Status> {
        c.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    let (x1, x2, y, bcast) = (Count::default(), Count::default(), Count::default(), Count::default());
    let audit = unique("audit");
    let mailer = unique("mailer");
    let svc =
        |name: &str, c: &Count| Service::builder(name).transport(&url).state(c.clone()).subscribe(&topic, on_event);
    let n1 = svc(&audit, &x1).start().await.unwrap();
    let n2 = svc(&audit, &x2).start().await.unwrap();
    let m = svc(&mailer, &y).start().await.unwrap();
    let b = Service::builder(unique("watcher"))
        .transport(&url)
        .state(bcast.clone())
        .subscribe_with(&format!("{}.*", topic.rsplit_once('.').unwrap().0), SubscribeOptions::broadcast(), on_event)
        .start()
        .await
        .unwrap();
    let client = Client::connect(&url).await.unwrap();
    let mut raw = client.broker().subscribe(&topic, SubscribeOptions::broadcast()).await.unwrap();
    const N: usize = 200;
    for i in 0..N {
        client
            .publish_with(&topic, &serde_json::json!({"order": i}), PublishOptions::new().metadata("k", "v"))
            .await
            .unwrap();
    }
    let counts = || {
        let audit = x1.0.load(Ordering::SeqCst) + x2.0.load(Ordering::SeqCst);
        (audit, y.0.load(Ordering::SeqCst), bcast.0.load(Ordering::SeqCst))
    };
    wait_for("every group got every event", WAIT, || async {
        let (audit, mailer, watcher) = counts();
        (audit >= N && mailer >= N && watcher >= N).then_some(())
    })
    .await;
    let first = raw.next().await.unwrap();
    assert_eq!(first.topic, topic);
    assert_eq!(first.metadata.get("k"), Some("v"));
    assert!(first.timestamp > 0 && !first.id.is_empty());
    assert_eq!(first.publisher, None, "an anonymous client names no publisher");
    // A last event, after which copies of the first N would have arrived too.
    client.publish(&topic, &serde_json::json!({"order": "last"})).await.unwrap();
    wait_for("the last event", WAIT, || async {
        let (audit, mailer, watcher) = counts();
        (audit > N && mailer > N && watcher > N).then_some(())
    })
    .await;
    for _ in 1..=N {
        tokio::time::timeout(WAIT, raw.next()).await.expect("the broadcast subscriber gets every event").unwrap();
    }
    // Nothing was delivered twice, inside the audit group or to the others.
    assert_eq!(counts(), (N + 1, N + 1, N + 1), "(audit group, mailer, broadcast watcher)");
    for s in [n1, n2, m, b] {
        s.stop().await.unwrap();
    }
}

async fn watch_reports_start_and_stop(url: String) {
    let name = unique("watched");
    let client = Client::connect(&url).await.unwrap();
    let mut watch = client.registry().watch().await.unwrap();
    let svc = greeter(&url, &name, "a").start().await.unwrap();
    let node = svc.node_id().to_string();
    async fn next_for(watch: &mut micro::registry::Watcher, name: &str) -> micro::registry::WatchEvent {
        loop {
            let ev = watch.next().await.unwrap();
            if ev.service.name == name {
                return ev;
            }
        }
    }
    let added = tokio::time::timeout(WAIT, next_for(&mut watch, &name)).await.unwrap();
    assert_eq!(added.action, WatchAction::Added);
    assert_eq!(added.service.nodes[0].id, node);
    assert_eq!(added.service.version, "1.0.0");
    assert!(added.service.endpoint("Say.Hello").is_some());
    svc.stop().await.unwrap();
    let removed = tokio::time::timeout(WAIT, next_for(&mut watch, &name)).await.unwrap();
    assert_eq!(removed.action, WatchAction::Removed);
    assert_eq!(removed.service.nodes[0].id, node);
}

async fn new_client_discovers_running_services_at_once(url: String) {
    let name = unique("early");
    // Heartbeats far apart: only discovery can tell the late client about the service.
    let opts = RegistryOptions::default().heartbeat(Duration::from_secs(3600)).ttl(Duration::from_secs(7200));
    let svc = greeter(&url, &name, "a").registry_options(opts).start().await.unwrap();
    let late = Client::connect(&url).await.unwrap();
    let found =
        tokio::time::timeout(Duration::from_secs(2), late.registry().get_service(&name)).await.unwrap().unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].nodes[0].id, svc.node_id());
    let all = late.registry().list_services().await.unwrap();
    assert!(all.iter().any(|s| s.name == name));
    svc.stop().await.unwrap();
}

async fn graceful_stop_drains_in_flight_requests(url: String) {
    let name = unique("draining");
    let svc = greeter(&url, &name, "a").start().await.unwrap();
    let client = Client::connect(&url).await.unwrap();
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let c = client.clone();
            let n = name.clone();
            actix_rt::spawn(async move { c.call::<_, u64, _>(&n, "Say.Slow", &Sleep { ms: 400 }).await })
        })
        .collect();
    wait_for("20 requests in flight", WAIT, || async {
        let s: micro::server::ServiceStats = client.call(&name, "Debug.Stats", &()).await.ok()?;
        // The Stats request counts itself.
        (s.in_flight > 20).then_some(())
    })
    .await;
    svc.stop().await.unwrap();
    for c in calls {
        assert_eq!(c.await.unwrap().unwrap(), 400, "in-flight requests finish during shutdown");
    }
}

async fn debug_endpoints_answer(url: String) {
    let name = unique("greeter");
    let svc = greeter(&url, &name, "a").start().await.unwrap();
    let client = Client::connect(&url).await.unwrap();
    let h: micro::server::HealthStatus = client.call(&name, "Debug.Health", &()).await.unwrap();
    assert_eq!(h.status, "ok");
    assert_eq!(h.node, svc.node_id());
    let _: Greeting = client.call(&name, "Say.Hello", &hello("x")).await.unwrap();
    let s: micro::server::ServiceStats = client.call(&name, "Debug.Stats", &()).await.unwrap();
    assert!(s.requests >= 2, "{s:?}");
    assert_eq!(s.in_flight, 1, "the stats request itself");
    svc.stop().await.unwrap();
}

async fn many_requests_in_flight_on_one_endpoint(url: String) {
    let name = unique("parallel");
    let svc = greeter(&url, &name, "a").start().await.unwrap();
    let client = Client::connect(&url).await.unwrap();
    let started = std::time::Instant::now();
    let calls = (0..50).map(|_| client.call::<_, u64, _>(&name, "Say.Slow", &Sleep { ms: 300 }));
    for r in futures::future::join_all(calls).await {
        r.unwrap();
    }
    // Serialised, 50 × 300 ms would take 15 s; concurrently it takes about one sleep.
    assert!(started.elapsed() < Duration::from_secs(10), "handlers ran concurrently");
    svc.stop().await.unwrap();
}

#[actix::test]
async fn bad_configuration_is_a_typed_error() {
    let e = Service::builder("x").transport("carrier-pigeon://coop").start().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    let e = Service::builder("bad name").start().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    let e = Service::builder("x").handle("A.B", say_hello).handle("A.B", say_hello).start().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    #[cfg(feature = "nats")]
    {
        let e = Client::connect("nats://127.0.0.1:1").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Connect);
        assert!(e.to_string().contains("nats://127.0.0.1:1"), "{e}");
    }
}

async fn actor_event_subscriber_survives_a_panic(url: String) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    struct Auditor(Arc<AtomicUsize>);
    impl actix::Actor for Auditor {
        type Context = actix::Context<Self>;
    }
    #[derive(serde::Deserialize, actix::Message)]
    #[rtype(result = "Result<(), Status>")]
    struct Login {
        user: String,
    }
    impl actix::Handler<Login> for Auditor {
        type Result = Result<(), Status>;
        fn handle(&mut self, e: Login, _: &mut actix::Context<Self>) -> Self::Result {
            if e.user == "poison" {
                panic!("auditor crashed (this panic is part of a test)");
            }
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }
    let topic = format!("{}.login", unique("user"));
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let name = unique("auditor");
    let svc = Service::builder(&name)
        .transport(&url)
        .restart_policy(RestartPolicy::unlimited())
        .subscribe_actors(ActorEndpoints::new(move || Auditor(counter.clone())).route::<Login>(&topic))
        .start()
        .await
        .unwrap();
    let client = Client::connect(&url).await.unwrap();
    client.publish(&topic, &serde_json::json!({"user": "ada"})).await.unwrap();
    wait_for("first event", WAIT, || async { (seen.load(Ordering::SeqCst) == 1).then_some(()) }).await;
    client.publish(&topic, &serde_json::json!({"user": "poison"})).await.unwrap();
    let stats = wait_for("the actor restarted", WAIT, || async {
        let s: micro::server::ServiceStats = client.call(&name, "Debug.Stats", &()).await.ok()?;
        (s.restarts == 1).then_some(s)
    })
    .await;
    assert_eq!(stats.events, 2);
    client.publish(&topic, &serde_json::json!({"user": "grace"})).await.unwrap();
    wait_for("events after the restart", WAIT, || async { (seen.load(Ordering::SeqCst) == 2).then_some(()) }).await;
    svc.stop().await.unwrap();
}

async fn concurrent_requests_to_live_and_missing_subjects_each_get_their_own_outcome(url: String) {
    // Raw transport requests: no client retries to hide a wrong outcome.
    let name = unique("greeter");
    let svc = greeter(&url, &name, "a").start().await.unwrap();
    let t = micro::transport::connect(&url).await.unwrap();
    let live = subject::request(&subject::service(&name), "Say.Hello");
    let calls = (0..200).map(|i| {
        let t = t.clone();
        let target =
            if i % 2 == 0 { live.clone() } else { subject::request(&subject::service(&unique("nobody")), "Say.Hello") };
        async move {
            let mut h = Headers::new();
            h.insert(headers::CONTENT_TYPE, Codec::Json.content_type());
            let m = Message::with_headers(h, format!(r#"{{"name":"{i}"}}"#).into());
            (i, t.request(&target, &m, Duration::from_secs(10)).await)
        }
    });
    for (i, outcome) in futures::future::join_all(calls).await {
        match (i % 2 == 0, outcome) {
            (true, Ok(reply)) => assert_eq!(reply.headers.get(headers::ERROR), None, "call {i}"),
            (false, Err(e)) => assert_eq!(e.kind(), ErrorKind::Unavailable, "call {i}: {e}"),
            (live, outcome) => panic!("call {i} (live: {live}) got the wrong outcome: {outcome:?}"),
        }
    }
    svc.stop().await.unwrap();
}
