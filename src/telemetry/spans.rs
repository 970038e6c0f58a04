//! The toolkit's spans: one per call, handling, publish and event handling, named and
//! attributed after OpenTelemetry's RPC and messaging conventions.
//!
//! Every constructor is one `tracing` macro: with no subscriber, or one whose filter turns the
//! span off, it yields a disabled span without evaluating a field (no allocation, no
//! formatting), and every later step checks `is_disabled` first. Fields are `&'static str`,
//! borrowed `&str`, integers or [`Display`](std::fmt::Display) values the subscriber formats
//! only if it wants them.

use std::fmt;

use tracing::field::Empty;
use tracing::Span;

use crate::error::Error;
use crate::message::TraceParent;
use crate::status::Status;

/// The value of `rpc.system` on the RPC spans.
pub const RPC_SYSTEM: &str = "micro";

/// Span name of a call made by a client (`otel.kind = client`).
pub const CLIENT: &str = "rpc.client";
/// Span name of a request handled by a service (`otel.kind = server`).
pub const SERVER: &str = "rpc.server";
/// Span name of an event published (`otel.kind = producer`).
pub const PUBLISH: &str = "event.publish";
/// Span name of an event handled by a subscription, plain or durable (`otel.kind = consumer`).
pub const PROCESS: &str = "event.process";
/// Span name of an HTTP request the gateway serves (`otel.kind = server`).
pub const HTTP: &str = "http.server";

/// Two strings with a separator, formatted only when a subscriber records the field.
struct Joined<'a>(&'a str, &'static str, &'a str);

impl fmt::Display for Joined<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)?;
        f.write_str(self.1)?;
        f.write_str(self.2)
    }
}

/// The span of a call to `service`'s `endpoint`, child of the current span.
pub(crate) fn client(service: &str, endpoint: &str) -> Span {
    tracing::info_span!(
        target: "micro::rpc",
        "rpc.client",
        otel.name = %Joined(service, "/", endpoint),
        otel.kind = "client",
        rpc.system = RPC_SYSTEM,
        rpc.service = service,
        rpc.method = endpoint,
        otel.status_code = Empty,
        otel.status_description = Empty,
        rpc.micro.status_code = Empty,
        error.type = Empty,
    )
}

/// The span of a request `service` handles: a root in this process, parented by the wire's
/// `traceparent` through [`identify`].
pub(crate) fn server(service: &str, endpoint: &str) -> Span {
    tracing::info_span!(
        target: "micro::rpc",
        parent: None,
        "rpc.server",
        otel.name = %Joined(service, "/", endpoint),
        otel.kind = "server",
        rpc.system = RPC_SYSTEM,
        rpc.service = service,
        rpc.method = endpoint,
        otel.status_code = Empty,
        otel.status_description = Empty,
        rpc.micro.status_code = Empty,
    )
}

/// The span of an event published on `topic`, child of the current span.
pub(crate) fn publish(system: &'static str, topic: &str, id: &str, durable: bool) -> Span {
    tracing::info_span!(
        target: "micro::events",
        "event.publish",
        otel.name = %Joined("publish ", "", topic),
        otel.kind = "producer",
        messaging.system = system,
        messaging.operation = "publish",
        messaging.destination.name = topic,
        messaging.message.id = id,
        messaging.micro.durable = durable,
        otel.status_code = Empty,
        otel.status_description = Empty,
        error.type = Empty,
    )
}

/// The span of an event `service` handles: a root in this process, parented by the event's
/// `traceparent` through [`identify`]. `attempt` is the delivery attempt of a durable event.
pub(crate) fn process(system: &'static str, service: &str, topic: &str, id: &str, attempt: Option<u64>) -> Span {
    tracing::info_span!(
        target: "micro::events",
        parent: None,
        "event.process",
        otel.name = %Joined("process ", "", topic),
        otel.kind = "consumer",
        messaging.system = system,
        messaging.operation = "process",
        messaging.destination.name = topic,
        messaging.message.id = id,
        messaging.consumer.group.name = service,
        messaging.micro.attempt = attempt,
        otel.status_code = Empty,
        otel.status_description = Empty,
        rpc.micro.status_code = Empty,
    )
}

/// The span of an HTTP request the gateway serves, parented by its `traceparent` header.
#[cfg(feature = "gateway")]
pub(crate) fn http(method: &str, path: &str) -> Span {
    tracing::info_span!(
        target: "micro::gateway",
        parent: None,
        "http.server",
        otel.name = %Joined(method, " ", path),
        otel.kind = "server",
        http.request.method = method,
        url.path = path,
        http.response.status_code = Empty,
        otel.status_code = Empty,
    )
}

/// Records a handler's failure on its span (a success leaves the status unset, as the
/// conventions ask of server spans).
pub(crate) fn record_status(span: &Span, status: Option<&Status>) {
    if span.is_disabled() {
        return;
    }
    if let Some(status) = status {
        span.record("rpc.micro.status_code", status.code().as_u16());
        // 4xx are the caller's mistakes: an error for the client span only.
        if status.code().as_u16() >= 500 {
            span.record("otel.status_code", "error");
            span.record("otel.status_description", status.detail());
        }
    }
}

/// Records a call's or publish's failure on its client or producer span.
pub(crate) fn record_error<T>(span: &Span, result: &Result<T, Error>) {
    if span.is_disabled() {
        return;
    }
    if let Err(e) = result {
        span.record("otel.status_code", "error");
        span.record("otel.status_description", tracing::field::display(e));
        span.record("error.type", tracing::field::debug(e.kind()));
        if let Some(status) = e.status() {
            span.record("rpc.micro.status_code", status.code().as_u16());
        }
    }
}

/// Records the HTTP status of a gateway response.
#[cfg(feature = "gateway")]
pub(crate) fn record_http(span: &Span, code: u16) {
    if span.is_disabled() {
        return;
    }
    span.record("http.response.status_code", code);
    if code >= 500 {
        span.record("otel.status_code", "error");
    }
}

/// How an enabled span finds its parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Parent {
    /// The trace context came over the wire: it is the parent (server and consumer spans).
    Remote,
    /// The current `tracing` span is the parent; the request context's trace only when there
    /// is no current span (client and producer spans).
    Local,
}

/// The wire identity of an enabled span: the `traceparent` it sends, or the trace context a
/// handler inside it sees. With OpenTelemetry on (the `otel` feature and its layer in the
/// subscriber), the span's own OTel ids, `parent` set as its remote parent; otherwise a child
/// of `parent`, or a new root.
pub(crate) fn identify(span: &Span, parent: Option<TraceParent>, how: Parent) -> TraceParent {
    #[cfg(feature = "otel")]
    if let Some(own) = super::otel::identify(span, parent, how) {
        return own;
    }
    let _ = (span, how);
    parent.map_or_else(TraceParent::new_root, |p| p.child())
}
