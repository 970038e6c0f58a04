//! [`init`]: the subscriber of binaries and examples, and [`JsonLines`], its JSON format.

use std::fmt;

use tracing::{Event, Span, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use super::fields::{LeanFields, NoFields};
use crate::context::CallContext;
use crate::message::TraceParent;

/// The variable read first for the log filter (`RUST_LOG` syntax), before `RUST_LOG`.
pub const LOG_ENV: &str = "MICRO_LOG";
/// `json` for one JSON object per line; anything else (or unset) for human lines.
pub const LOG_FORMAT_ENV: &str = "MICRO_LOG_FORMAT";

/// What [`init`] installed. Keep it until the program ends: dropping it flushes and stops the
/// OTLP exporter (when there is one).
#[must_use = "dropping it stops the trace exporter"]
pub struct Telemetry {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl fmt::Debug for Telemetry {
    #[cfg_attr(not(feature = "otel"), allow(unused_mut))]
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Telemetry");
        #[cfg(feature = "otel")]
        d.field("otlp", &self.provider.is_some());
        d.finish()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        #[cfg(feature = "otel")]
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("could not flush the trace exporter: {e}");
            }
        }
    }
}

/// Installs the global subscriber with `info` as the default level. See [`init_with_default`].
pub fn init() -> Telemetry {
    init_with_default("info")
}

/// Installs the global subscriber of a binary: the filter from `MICRO_LOG`, else `RUST_LOG`,
/// else `default` (`RUST_LOG` syntax: `warn,micro=debug`); lines on stderr, human (coloured
/// on a terminal) or, with `MICRO_LOG_FORMAT=json`, [`JsonLines`]. With the `otel` feature and
/// `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set, it also exports
/// spans at `info` and above over OTLP/HTTP, named by `OTEL_SERVICE_NAME` (else the program's
/// name). Problems (a bad filter, an exporter that cannot be built) are said on stderr; if a
/// subscriber is already installed, it changes nothing.
///
/// ```no_run
/// let _telemetry = micro::telemetry::init_with_default("warn,micro=info");
/// tracing::info!("started");
/// ```
pub fn init_with_default(default: &str) -> Telemetry {
    let filter = match EnvFilter::try_from_env(LOG_ENV).or_else(|_| EnvFilter::try_from_default_env()) {
        Ok(f) => f,
        Err(e) => {
            if std::env::var_os(LOG_ENV).is_some() || std::env::var_os("RUST_LOG").is_some() {
                eprintln!("ignoring the log filter ({e}); using {default:?}");
            }
            EnvFilter::new(default)
        }
    };
    let json = std::env::var(LOG_FORMAT_ENV).is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let ansi = !json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    // JSON lines name the span but print none of its fields: none are formatted. Human lines
    // print them before a line logged inside the span: formatted when the span is made.
    let lines = if json {
        lines.fmt_fields(NoFields).event_format(JsonLines).boxed()
    } else {
        lines.fmt_fields(LeanFields).boxed()
    };
    let registry = Registry::default().with(lines.with_filter(filter));
    #[cfg(feature = "otel")]
    {
        let (otel, provider) = otel_layer();
        let installed = registry.with(otel).try_init().is_ok();
        Telemetry { provider: provider.filter(|_| installed) }
    }
    #[cfg(not(feature = "otel"))]
    {
        let _ = registry.try_init();
        Telemetry {}
    }
}

/// The OTel layer when an OTLP endpoint is configured, filtered to `info` and above and to
/// sampled traces ([`Sampled`](super::otel::Sampled)).
#[cfg(feature = "otel")]
#[allow(clippy::type_complexity)]
fn otel_layer<S>() -> (Option<Box<dyn Layer<S> + Send + Sync>>, Option<opentelemetry_sdk::trace::SdkTracerProvider>)
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    use opentelemetry::trace::TracerProvider as _;
    let configured = ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()));
    if !configured {
        return (None, None);
    }
    let name = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "micro".to_string());
    match super::otel::otlp_provider(&name) {
        Ok(provider) => {
            use tracing_subscriber::filter::FilterExt as _;
            let filter = tracing_subscriber::filter::LevelFilter::INFO.and(super::otel::Sampled);
            let layer = super::otel::layer(provider.tracer("micro")).with_filter(filter).boxed();
            (Some(layer), Some(provider))
        }
        Err(e) => {
            eprintln!("{e}; spans are not exported");
            (None, None)
        }
    }
}

/// Keeps an enabled span's wire identity with it (in the registry's span extensions), where
/// [`JsonLines`] reads it. Nothing when the subscriber formats no JSON lines: the extension
/// would cost a lookup and an allocation per span for no reader.
pub(super) fn remember(span: &Span, own: TraceParent) {
    span.with_subscriber(|(id, dispatch)| {
        if dispatch.downcast_ref::<JsonLines>().is_none() {
            return;
        }
        if let Some(span) = dispatch.downcast_ref::<Registry>().and_then(|r| r.span(id)) {
            span.extensions_mut().replace(own);
        }
    });
}

/// One JSON object per line: `timestamp`, `level`, `target`, the event's fields (`message`
/// among them), `span` (the innermost span's name) and, inside a request, `trace_id` and
/// `span_id` (of the innermost toolkit span, else of the handler's context).
///
/// ```
/// use micro::telemetry::JsonLines;
/// use tracing_subscriber::layer::SubscriberExt;
///
/// let lines = tracing_subscriber::fmt::layer().event_format(JsonLines).with_writer(std::io::stderr);
/// let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(lines));
/// // {"timestamp":"…","level":"INFO","target":"…","message":"hello","user":"ada"}
/// tracing::info!(user = "ada", "hello");
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        use serde_json::Value;
        let meta = event.metadata();
        let mut obj = serde_json::Map::new();
        let mut ts = String::new();
        SystemTime.format_time(&mut Writer::new(&mut ts))?;
        obj.insert("timestamp".into(), Value::String(ts));
        obj.insert("level".into(), Value::String(meta.level().as_str().into()));
        obj.insert("target".into(), Value::String(meta.target().into()));
        event.record(&mut JsonVisitor(&mut obj));
        let mut trace = None;
        if let Some(scope) = ctx.event_scope() {
            for (i, span) in scope.enumerate() {
                if i == 0 {
                    obj.insert("span".into(), Value::String(span.name().into()));
                }
                if let Some(t) = span.extensions().get::<TraceParent>() {
                    trace = Some(*t);
                    break;
                }
            }
        }
        if let Some(t) = trace.or_else(|| CallContext::with_current(|c| c.trace).flatten()) {
            obj.insert("trace_id".into(), Value::String(t.trace_id()));
            obj.insert("span_id".into(), Value::String(t.span_id()));
        }
        writeln!(writer, "{}", Value::Object(obj))
    }
}

/// An event's fields as JSON values.
struct JsonVisitor<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.0.insert(field.name().into(), serde_json::json!(value));
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_error(&mut self, field: &tracing::field::Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}").into());
    }
}
