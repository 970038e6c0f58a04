//! Traces: one request through the gateway, an api service, a srv service and a durable event
//! to an audit service is ONE OpenTelemetry trace with the right parent chain, over NATS and
//! RabbitMQ (OpenTelemetry's in-memory exporter; the subscriber is this test's thread's).

use std::time::Duration;

use actix_web::test;
use micro::gateway::{Gateway, GatewayConfig};
use micro::prelude::*;
use opentelemetry::trace::{SpanId, SpanKind, TraceId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde_json::{json, Value};
use tracing_subscriber::layer::SubscriberExt;

use crate::util::*;

/// The caller's span, as an HTTP client outside the system would send it.
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes.iter().find(|kv| kv.key.as_str() == key).map(|kv| kv.value.as_str().into_owned())
}

/// The one span named `name`, with the spans seen listed when it is missing or not alone.
fn one<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    let found: Vec<&SpanData> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one span {name:?} among {:?}", spans.iter().map(|s| &s.name).collect::<Vec<_>>());
    found[0]
}

/// The one span named `name` of this kind.
fn kind_of<'a>(spans: &'a [SpanData], name: &str, kind: SpanKind) -> &'a SpanData {
    let found: Vec<&SpanData> = spans.iter().filter(|s| s.name == name && s.span_kind == kind).collect();
    assert_eq!(
        found.len(),
        1,
        "one {kind:?} span {name:?} among {:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    found[0]
}

/// Records this thread's spans through the toolkit's OTel layer into an in-memory exporter,
/// until the guard is dropped.
fn recording() -> (InMemorySpanExporter, tracing::subscriber::DefaultGuard) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    let subscriber = tracing_subscriber::registry().with(micro::telemetry::otel::layer(provider.tracer("traces-test")));
    (exporter, scoped_subscriber(subscriber))
}

fn assert_child(child: &SpanData, parent: &SpanData) {
    assert_eq!(child.parent_span_id, parent.span_context.span_id(), "{:?} is a child of {:?}", child.name, parent.name);
}

/// What a handler of the chain saw.
struct Seen {
    who: String,
    job: String,
    trace_id: String,
    sampled: bool,
    /// The current `tracing` span's name.
    span: String,
}

/// The services a request through the gateway crosses: `api`'s `Api.Call` calls `srv`'s
/// `Work.Do`, which publishes the job durably on `topic` to the `audit` service. srv and audit
/// report what they saw on `seen`.
struct Chain {
    api: String,
    srv: String,
    topic: String,
    seen: tokio::sync::mpsc::UnboundedReceiver<Seen>,
    services: Vec<micro::ServiceHandle>,
}

impl Chain {
    /// The next report from `who`, skipping the others'.
    async fn next_from(&mut self, who: &str) -> Seen {
        loop {
            let s = tokio::time::timeout(WAIT, self.seen.recv()).await.expect("a handler ran").unwrap();
            if s.who == who {
                return s;
            }
        }
    }

    async fn stop(self) {
        for s in self.services {
            s.stop().await.unwrap();
        }
    }
}

async fn start_chain(url: &str, prefix: &str) -> Chain {
    let (api, srv, audit) =
        (unique(&format!("{prefix}.api")), unique(&format!("{prefix}.srv")), unique(&format!("{prefix}.audit")));
    let topic = format!("{}.done", unique(prefix));
    let (seen_tx, seen) = tokio::sync::mpsc::unbounded_channel::<Seen>();
    let report = move |who: &str, ctx: &CallContext, v: &Value| {
        let t = ctx.trace().expect("a trace in the handler's context");
        let _ = seen_tx.send(Seen {
            who: who.to_string(),
            job: v["job"].as_str().unwrap_or_default().to_string(),
            trace_id: t.trace_id(),
            sampled: t.sampled(),
            span: tracing::Span::current().metadata().map_or("none", |m| m.name()).to_string(),
        });
    };
    let to_audit = report.clone();
    let audit_svc = Service::builder(&audit)
        .transport(url)
        .subscribe_with(
            &topic,
            SubscribeOptions::durable(&audit).expire_after(Duration::from_secs(120)),
            move |ctx: CallContext, Req(v): Req<Value>| {
                to_audit("audit", &ctx, &v);
                async { Ok::<_, Status>(()) }
            },
        )
        .start()
        .await
        .unwrap();
    let srv_topic = topic.clone();
    let srv_svc = Service::builder(&srv)
        .transport(url)
        .handle("Work.Do", move |client: Client, ctx: CallContext, Req(v): Req<Value>| {
            report("srv", &ctx, &v);
            let topic = srv_topic.clone();
            async move {
                client.broker().publish_durable(&topic, &v).await.map_err(|e| e.to_status("work"))?;
                Ok::<_, Status>(json!({"done": v["job"]}))
            }
        })
        .start()
        .await
        .unwrap();
    let srv_name = srv.clone();
    let api_svc = Service::builder(&api)
        .transport(url)
        .handle("Api.Call", move |client: Client, Req(v): Req<Value>| {
            let srv = srv_name.clone();
            async move { client.call::<_, Value, _>(&srv, "Work.Do", &v).await.map_err(|e| e.to_status("api")) }
        })
        .start()
        .await
        .unwrap();
    Chain { api, srv, topic, seen, services: vec![api_svc, srv_svc, audit_svc] }
}

async fn one_trace_from_the_gateway_to_the_durable_audit(url: String) {
    let (exporter, _default) = recording();

    let mut services = start_chain(&url, "traced").await;
    let (api, srv, topic) = (services.api.clone(), services.srv.clone(), services.topic.clone());

    let client = Client::builder().name("go.micro.api").transport(&url).connect().await.unwrap();
    let gateway = Gateway::new(client, GatewayConfig::default().rpc_namespaces([&api]));
    let app = test::init_service(gateway.app()).await;
    let req = test::TestRequest::post()
        .uri("/rpc")
        .insert_header(("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")))
        .set_json(json!({"service": api, "endpoint": "Api.Call", "request": {"job": "j-1"}}))
        .to_request();
    let rsp: Value = test::call_and_read_body_json(&app, req).await;
    assert_eq!(rsp, json!({"done": "j-1"}));
    let job = services.next_from("audit").await.job;
    assert_eq!(job, "j-1");

    let process = format!("process {topic}");
    // Seven spans of this trace: the gateway's, two per call, the publish and the processing.
    let spans = wait_for("every span of the trace to end", WAIT, || {
        let spans = exporter.get_finished_spans().unwrap();
        let ours = spans.iter().filter(|s| s.span_context.trace_id().to_string() == CALLER_TRACE).count();
        let done = ours >= 7 && spans.iter().any(|s| s.name == process);
        async move { done.then_some(spans) }
    })
    .await;

    let trace = TraceId::from_hex(CALLER_TRACE).unwrap();
    let http = one(&spans, "POST /rpc");
    let api_call = format!("{api}/Api.Call");
    let srv_call = format!("{srv}/Work.Do");
    let api_client = kind_of(&spans, &api_call, SpanKind::Client);
    let api_server = kind_of(&spans, &api_call, SpanKind::Server);
    let srv_client = kind_of(&spans, &srv_call, SpanKind::Client);
    let srv_server = kind_of(&spans, &srv_call, SpanKind::Server);
    let publish = one(&spans, &format!("publish {topic}"));
    let process = one(&spans, &process);

    let chain = [http, api_client, api_server, srv_client, srv_server, publish, process];
    for s in chain {
        assert_eq!(s.span_context.trace_id(), trace, "{:?} belongs to the caller's trace", s.name);
    }
    assert_eq!(http.parent_span_id, SpanId::from_hex(CALLER_SPAN).unwrap(), "the gateway continues the caller");
    for pair in chain.windows(2) {
        assert_child(pair[1], pair[0]);
    }

    let kinds: Vec<SpanKind> = chain.iter().map(|s| s.span_kind.clone()).collect();
    let (server, client) = (SpanKind::Server, SpanKind::Client);
    let expected =
        [server.clone(), client.clone(), server.clone(), client, server, SpanKind::Producer, SpanKind::Consumer];
    assert_eq!(kinds, expected);
    assert_eq!(attr(api_server, "rpc.system").as_deref(), Some("micro"));
    assert_eq!(attr(api_server, "rpc.service"), Some(api.clone()));
    assert_eq!(attr(api_server, "rpc.method").as_deref(), Some("Api.Call"));
    assert_eq!(attr(publish, "messaging.destination.name"), Some(topic.clone()));
    assert_eq!(attr(publish, "messaging.operation").as_deref(), Some("publish"));
    assert_eq!(attr(process, "messaging.operation").as_deref(), Some("process"));
    assert_eq!(attr(process, "messaging.message.id"), attr(publish, "messaging.message.id"));
    assert_eq!(attr(process, "messaging.micro.attempt").as_deref(), Some("1"));
    let system = if url.starts_with("nats") { "nats" } else { "rabbitmq" };
    assert_eq!(attr(process, "messaging.system").as_deref(), Some(system));
    assert_eq!(attr(http, "http.response.status_code").as_deref(), Some("200"));

    services.stop().await;
}

/// A failing call is an error on the client span, with the toolkit's code.
async fn a_failed_call_marks_its_span(url: String) {
    let (exporter, _default) = recording();
    let name = unique("traced.greeter");
    let svc = greeter(&url, &name, "a").start().await.unwrap();
    let client = Client::connect(&url).await.unwrap();
    let err = client.call::<_, Greeting, _>(&name, "Say.Nothing", &Hello { name: "x".into() }).await.unwrap_err();
    assert_eq!(err.status().map(|s| s.code().as_u16()), Some(404));
    let spans = exporter.get_finished_spans().unwrap();
    let client_span = spans.iter().find(|s| s.span_kind == SpanKind::Client).expect("a client span");
    assert_eq!(attr(client_span, "rpc.micro.status_code").as_deref(), Some("404"));
    assert!(matches!(client_span.status, opentelemetry::trace::Status::Error { .. }), "{:?}", client_span.status);
    svc.stop().await.unwrap();
}

/// Client middleware runs inside the call's span (the toolkit enters it only there), a
/// publish's middleware inside the publish's, and a handler's synchronous part inside the
/// handling's span.
async fn middleware_and_handlers_run_inside_their_spans(url: String) {
    let (exporter, _default) = recording();
    let name = unique("traced.greeter");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let in_handler = seen.clone();
    // A handler with a synchronous part: it runs as the handler is called.
    let svc = Service::builder(&name)
        .transport(&url)
        .handle("Say.Hello", move |Req(h): Req<Hello>| {
            let current = tracing::Span::current().metadata().map_or("none", |m| m.name()).to_string();
            in_handler.lock().unwrap().push(format!("handler {current}"));
            async move { Ok::<_, Status>(Greeting { msg: format!("Hello {}", h.name), node: "a".into() }) }
        })
        .start()
        .await
        .unwrap();
    let log = seen.clone();
    let client = Client::builder()
        .transport(&url)
        .wrap(micro::middleware::client_fn(move |out, next| {
            let current = tracing::Span::current().metadata().map_or("none", |m| m.name()).to_string();
            log.lock().unwrap().push(current);
            async move { next.run(out).await }
        }))
        .connect()
        .await
        .unwrap();
    let _: Greeting = client.call(&name, "Say.Hello", &Hello { name: "x".into() }).await.unwrap();
    client.broker().publish(&unique("traced.topic"), &json!({"x": 1})).await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        ["rpc.client", "handler rpc.server", "event.publish"],
        "the current span in client middleware and in the handler"
    );
    let spans = exporter.get_finished_spans().unwrap();
    let call = kind_of(&spans, &format!("{name}/Say.Hello"), SpanKind::Client);
    let handled = kind_of(&spans, &format!("{name}/Say.Hello"), SpanKind::Server);
    assert_child(handled, call);
    svc.stop().await.unwrap();
}

/// OTel's default sampler, noting the trace of every span the SDK is asked to start: a span
/// the OTel layer built, recorded or not.
#[derive(Clone, Debug)]
struct NotingSampler {
    inner: opentelemetry_sdk::trace::Sampler,
    asked: std::sync::Arc<std::sync::Mutex<Vec<TraceId>>>,
}

impl opentelemetry_sdk::trace::ShouldSample for NotingSampler {
    fn should_sample(
        &self,
        parent: Option<&opentelemetry::Context>,
        trace_id: TraceId,
        name: &str,
        kind: &SpanKind,
        attributes: &[opentelemetry::KeyValue],
        links: &[opentelemetry::trace::Link],
    ) -> opentelemetry_sdk::trace::SamplingResult {
        self.asked.lock().unwrap().push(trace_id);
        self.inner.should_sample(parent, trace_id, name, kind, attributes, links)
    }
}

/// Records this thread's spans through the OTel layer filtered as `micro::telemetry::init`
/// filters it (`info` and above, sampled traces only), and the traces of the spans it built.
fn recording_as_init() -> (InMemorySpanExporter, NotingSampler, tracing::subscriber::DefaultGuard) {
    use opentelemetry_sdk::trace::{Sampler, ShouldSample};
    use tracing_subscriber::filter::{FilterExt as _, LevelFilter};
    use tracing_subscriber::Layer as _;
    let exporter = InMemorySpanExporter::default();
    let sampler = NotingSampler { inner: Sampler::ParentBased(Box::new(Sampler::AlwaysOn)), asked: Default::default() };
    let provider = SdkTracerProvider::builder()
        .with_sampler(Box::new(sampler.clone()) as Box<dyn ShouldSample>)
        .with_simple_exporter(exporter.clone())
        .build();
    let otel = micro::telemetry::otel::layer(provider.tracer("traces-test"))
        .with_filter(LevelFilter::INFO.and(micro::telemetry::otel::Sampled));
    (exporter, sampler, scoped_subscriber(tracing_subscriber::registry().with(otel)))
}

/// A trace an upstream sampler dropped (`traceparent` flags `00`) goes through the gateway, two
/// services and a durable event: every hop keeps its trace id and the decision, handlers still
/// run inside their `tracing` spans, and no OTel span is built for it. A sampled trace sent
/// next through the same subscriber is recorded whole.
async fn a_dropped_trace_keeps_its_id_and_builds_no_otel_span(url: String) {
    let (exporter, sampler, _default) = recording_as_init();
    let mut services = start_chain(&url, "dropped").await;
    let api = services.api.clone();
    let client = Client::builder().name("go.micro.api").transport(&url).connect().await.unwrap();
    let app = test::init_service(Gateway::new(client, GatewayConfig::default().rpc_namespaces([&api])).app()).await;
    let call = |trace: &str, flags: &str, job: &str| {
        test::TestRequest::post()
            .uri("/rpc")
            .insert_header(("traceparent", format!("00-{trace}-{CALLER_SPAN}-{flags}")))
            .set_json(json!({"service": api, "endpoint": "Api.Call", "request": {"job": job}}))
            .to_request()
    };

    let dropped = "0af7651916cd43dd8448eb211c80319c";
    let rsp: Value = test::call_and_read_body_json(&app, call(dropped, "00", "j-1")).await;
    assert_eq!(rsp, json!({"done": "j-1"}));
    let mut saw = Vec::new();
    for _ in 0..2 {
        let s = tokio::time::timeout(WAIT, services.seen.recv()).await.expect("both handlers ran").unwrap();
        saw.push((s.who, s.trace_id, s.sampled, s.span));
    }
    saw.sort();
    let expected = |who: &str, span: &str| (who.to_string(), dropped.to_string(), false, span.to_string());
    assert_eq!(saw, [expected("audit", "event.process"), expected("srv", "rpc.server")]);

    // The next trace is sampled: all seven spans are recorded, and by then the dropped
    // trace's would have been too.
    let rsp: Value = test::call_and_read_body_json(&app, call(CALLER_TRACE, "01", "j-2")).await;
    assert_eq!(rsp, json!({"done": "j-2"}));
    let spans = wait_for("the sampled trace's seven spans", WAIT, || {
        let spans = exporter.get_finished_spans().unwrap();
        let ours = spans.iter().filter(|s| s.span_context.trace_id().to_string() == CALLER_TRACE).count();
        async move { (ours >= 7).then_some(spans) }
    })
    .await;
    let from_dropped: Vec<&str> =
        spans.iter().filter(|s| s.span_context.trace_id().to_string() == dropped).map(|s| s.name.as_ref()).collect();
    assert!(from_dropped.is_empty(), "OTel spans exported for a dropped trace: {from_dropped:?}");
    let dropped_id = TraceId::from_hex(dropped).unwrap();
    let asked = sampler.asked.lock().unwrap().clone();
    let built = asked.iter().filter(|t| **t == dropped_id).count();
    assert_eq!(built, 0, "OTel spans built for a dropped trace ({} spans built in all)", asked.len());
    assert!(asked.len() >= 7, "the sampled trace's spans were built: {}", asked.len());
    assert!(spans.iter().all(|s| s.span_context.is_sampled()), "only sampled spans reach the exporter");
    services.stop().await;
}

over_brokers!(
    a_dropped_trace_keeps_its_id_and_builds_no_otel_span,
    one_trace_from_the_gateway_to_the_durable_audit,
    a_failed_call_marks_its_span,
    middleware_and_handlers_run_inside_their_spans
);
