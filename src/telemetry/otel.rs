//! OpenTelemetry: our `traceparent` as the OTel parent of a span, the span's OTel ids as the
//! `traceparent` it sends, and the OTLP export [`init`](super::init) sets up.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::spans::Parent;
use crate::message::TraceParent;

/// The `tracing` → OpenTelemetry layer as [`init`](super::init) installs it, for a subscriber
/// you build yourself: every span becomes an OTel span of `tracer`, carrying the toolkit's
/// attributes only. Code location, thread and busy/idle time attributes are off: on an async
/// runtime they describe the toolkit's internals, not the call, and cost an allocation or a
/// clock read per span.
///
/// Context activation is off too: entering a span does not make its OTel context OTel's
/// current one (`opentelemetry::Context::current()`), which would cost a lookup, a lock and a
/// thread-local push on every poll of every instrumented future. Spans still nest by
/// `tracing`'s own parent chain, and the toolkit reads a span's OTel context explicitly, so
/// traces are the same. Code that uses the OTel API directly inside a handler reads the
/// context with `tracing_opentelemetry::OpenTelemetrySpanExt::context(&Span::current())`, or
/// turns activation back on with `.with_context_activation(true)` on the returned layer.
///
/// ```
/// use opentelemetry::trace::TracerProvider as _;
/// use tracing_subscriber::layer::SubscriberExt;
///
/// let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
/// let subscriber = tracing_subscriber::registry().with(micro::telemetry::otel::layer(provider.tracer("my-app")));
/// let _scoped = tracing::subscriber::set_default(subscriber);
/// ```
pub fn layer<S>(
    tracer: opentelemetry_sdk::trace::SdkTracer,
) -> tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::SdkTracer>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_context_activation(false)
}

/// A per-layer filter for the OTel layer: it passes everything but the spans and events of a
/// trace that is not sampled. A request whose `traceparent` says an upstream sampler dropped
/// its trace still gets its `tracing` span (log lines keep their context) and sends the same
/// decision on, but the OTel layer does not build a span for it, nor for anything made while
/// its handler runs: the handler's own spans, and the calls and publishes it makes. A trace's
/// root is still the OTel sampler's to decide (`OTEL_TRACES_SAMPLER`); every hop after it then
/// pays for a dropped trace almost nothing. [`init`](super::init) filters its OTel layer with
/// this and the `info` level; add it to a subscriber you build yourself:
///
/// ```
/// use opentelemetry::trace::TracerProvider as _;
/// use tracing_subscriber::layer::{Layer as _, SubscriberExt};
/// use tracing_subscriber::filter::{FilterExt as _, LevelFilter};
///
/// let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
/// let otel = micro::telemetry::otel::layer(provider.tracer("my-app"))
///     .with_filter(LevelFilter::INFO.and(micro::telemetry::otel::Sampled));
/// let _scoped = tracing::subscriber::set_default(tracing_subscriber::registry().with(otel));
/// ```
///
/// Work a handler spawns as a task of its own is outside its request's state, and its spans
/// are sampled as roots.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sampled;

impl<S> tracing_subscriber::layer::Filter<S> for Sampled {
    fn enabled(&self, _: &tracing::Metadata<'_>, _: &tracing_subscriber::layer::Context<'_, S>) -> bool {
        !super::sampling::now()
    }

    fn callsite_enabled(&self, _: &'static tracing::Metadata<'static>) -> tracing::subscriber::Interest {
        // Per span and event: the state changes with the request being handled.
        tracing::subscriber::Interest::sometimes()
    }
}

/// An OTel span context from a wire `traceparent` (a remote parent).
pub fn span_context(t: &TraceParent) -> SpanContext {
    SpanContext::new(
        TraceId::from_bytes(t.trace_id_u128().to_be_bytes()),
        SpanId::from_bytes(t.span_id_u64().to_be_bytes()),
        TraceFlags::new(t.flags()),
        true,
        TraceState::default(),
    )
}

/// The wire `traceparent` of an OTel span context, `None` when it is not valid.
pub fn trace_parent(sc: &SpanContext) -> Option<TraceParent> {
    sc.is_valid().then(|| {
        TraceParent::from_parts(
            u128::from_be_bytes(sc.trace_id().to_bytes()),
            u64::from_be_bytes(sc.span_id().to_bytes()),
            sc.trace_flags().to_u8(),
        )
    })
}

/// With the OTel layer in the subscriber: sets `parent` as the span's parent where `how` says
/// so, and answers the span's own OTel ids. `None` without the layer.
pub(crate) fn identify(span: &Span, parent: Option<TraceParent>, how: Parent) -> Option<TraceParent> {
    if let Some(p) = parent {
        let set = match how {
            Parent::Remote => true,
            Parent::Local => Span::current().is_none(),
        };
        if set {
            let cx = opentelemetry::Context::new().with_remote_span_context(span_context(&p));
            if span.set_parent(cx).is_err() {
                return None;
            }
        }
    }
    let cx = span.context();
    let own = trace_parent(cx.span().span_context());
    own
}

/// The OTLP pipeline: a batch exporter over HTTP (protobuf) to `OTEL_EXPORTER_OTLP_ENDPOINT`
/// (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), the service named by `OTEL_SERVICE_NAME` (else
/// `default_name`). The provider is also installed as OTel's global one.
pub(crate) fn otlp_provider(default_name: &str) -> Result<opentelemetry_sdk::trace::SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| format!("cannot build the OTLP exporter: {e}"))?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(default_name.to_string());
    }
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    Ok(provider)
}
