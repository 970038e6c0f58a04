//! Entry points for the fuzz targets in `fuzz/`: every decoder that bytes from the network reach,
//! fed from one input. Built only with the `fuzzing` feature; not part of the API.
//!
//! Each function must return normally for any input: a panic, a hang or an unbounded
//! allocation is a bug. Errors are fine and expected.

use bytes::Bytes;

use crate::api;
use crate::broker::Event;
use crate::codec::Codec;
use crate::message::{headers, Deadline, Headers, TraceParent};
use crate::registry::{Announcement, Discover};
use crate::server::{HealthStatus, ServiceStats};
use crate::status::Status;

/// Splits an input at the first `\0`: what comes before and what comes after.
fn split(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// Headers from `Name: value` lines, as a transport hands them over (names as sent).
fn header_lines(text: &str) -> Headers {
    let mut h = Headers::new();
    for line in text.lines() {
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        h.push(headers::intern(name.trim()), value.trim());
    }
    h
}

/// The codecs: every wire type and `serde_json::Value` from MessagePack and JSON, sniffing,
/// and transcoding both ways.
pub fn codecs(data: &[u8]) {
    let _ = Codec::sniff(data);
    for codec in [Codec::MsgPack, Codec::Json] {
        let _ = codec.decode::<Status>(data);
        let _ = codec.decode::<Announcement>(data);
        let _ = codec.decode::<Discover>(data);
        let _ = codec.decode::<api::Request>(data);
        let _ = codec.decode::<api::Response>(data);
        let _ = codec.decode::<ServiceStats>(data);
        let _ = codec.decode::<HealthStatus>(data);
        let _ = codec.decode::<serde_json::Value>(data);
        let other = if codec == Codec::Json { Codec::MsgPack } else { Codec::Json };
        let _ = codec.transcode(data, other);
    }
}

/// The envelope: header lines, then `\0`, then the body. Parses what a server and a
/// subscriber read from headers: the event, deadline, trace context, metadata and the header
/// check every transport applies before sending.
pub fn envelope(data: &[u8]) {
    let (head, body) = split(data);
    let h = header_lines(&String::from_utf8_lossy(head));
    let _ = h.check();
    let _ = h.metadata();
    if let Some(d) = h.get(headers::DEADLINE) {
        let _ = Deadline::parse(d);
    }
    if let Some(t) = h.get(headers::TRACEPARENT) {
        if let Some(t) = TraceParent::parse(t) {
            let _ = t.to_string();
        }
    }
    let subject = h.get("Micro-Fuzz-Subject").map(crate::subject::event).unwrap_or_default();
    if let Ok(event) = Event::from_parts(&subject, &h, Bytes::copy_from_slice(body)) {
        let _ = event.decode::<serde_json::Value>();
        let _ = event.context(&std::sync::Arc::from("fuzz"), crate::message::TraceParent::new_root());
    }
}

/// The gateway's path handling: the raw-path check, the api/rpc resolver and the proxy target,
/// for the path before the first `\0`; the form decoder for the bytes after it.
#[cfg(feature = "gateway")]
pub fn gateway(data: &[u8]) {
    use crate::gateway::resolve;
    let (path, form) = split(data);
    let path = String::from_utf8_lossy(path);
    let _ = crate::gateway::check_path(&path);
    let _ = resolve::resolve("go.micro.api", &path);
    let _ = resolve::proxy_target("go.micro.web", &path);
    let _ = resolve::segments(&path);
    if let Ok(fields) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(form) {
        let _ = crate::gateway::pairs(fields);
    }
}
