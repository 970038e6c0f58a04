//! Traces and logs: the spans the toolkit makes, and [`init`] for binaries and examples.
//!
//! **Spans.** Every call, request handled, event published and event handled (durable
//! included) is a [`tracing`] span named and attributed after OpenTelemetry's RPC and messaging
//! conventions ([`spans`] lists the names; `docs/observability.md` the attributes). A server or
//! consumer span is parented by the `traceparent` that came over the wire, and the
//! `traceparent` a call or publish sends is its own span's context, so a request through the
//! gateway, two services and an event is one trace. With no subscriber, or one whose filter
//! turns them off, the spans cost a check each: no allocation, no formatting.
//!
//! **Logs.** A library never installs a subscriber; a binary calls [`init`] once (the `micro`
//! binary and the examples do): levels from `MICRO_LOG`, else `RUST_LOG`; human lines on
//! stderr, or one JSON object per line with `MICRO_LOG_FORMAT=json`, where every line logged
//! inside a request carries its `trace_id` and `span_id`. With the `otel` feature and
//! `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans are also exported over OTLP (HTTP, protobuf).
//!
//! ```no_run
//! # #[cfg(feature = "telemetry")]
//! # fn main() {
//! let _telemetry = micro::telemetry::init(); // keep it: dropping it flushes the exporter
//! tracing::info!("ready");
//! # }
//! # #[cfg(not(feature = "telemetry"))] fn main() {}
//! ```

pub mod spans;

pub(crate) mod sampling;

#[cfg(feature = "telemetry")]
mod fields;
#[cfg(feature = "telemetry")]
mod logs;
#[cfg(feature = "otel")]
#[cfg_attr(docsrs, doc(cfg(feature = "otel")))]
pub mod otel;

#[cfg(feature = "telemetry")]
#[cfg_attr(docsrs, doc(cfg(feature = "telemetry")))]
pub use logs::{init, init_with_default, JsonLines, Telemetry, LOG_ENV, LOG_FORMAT_ENV};

use tracing::Span;

use crate::message::TraceParent;

/// Gives an enabled span its wire identity ([`spans::identify`]) and keeps it with the span,
/// where the JSON log lines find it.
pub(crate) fn identify(span: &Span, parent: Option<TraceParent>, how: spans::Parent) -> TraceParent {
    let own = spans::identify(span, parent, how);
    #[cfg(feature = "telemetry")]
    logs::remember(span, own);
    own
}
