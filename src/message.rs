//! Envelopes every backend moves: [`Message`] (headers + body), [`Headers`], [`Metadata`], and
//! the header names of the wire protocol (see `docs/protocol.md`).
//!
//! ```
//! use micro::message::{Message, headers};
//! let mut m = Message::new(bytes::Bytes::from_static(b"\x80"));
//! m.headers.insert(headers::DEADLINE, "1764547200000");
//! assert_eq!(m.headers.get("micro-deadline"), Some("1764547200000")); // lookups ignore ASCII case
//! ```

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Header names of the wire protocol.
pub mod headers {
    /// Payload encoding: `application/msgpack` or `application/json`.
    pub const CONTENT_TYPE: &str = "Content-Type";
    /// Unique message id (UUID v7 text).
    pub const ID: &str = "Micro-Id";
    /// Absolute deadline, milliseconds since the Unix epoch (requests).
    pub const DEADLINE: &str = "Micro-Deadline";
    /// The calling service or client name.
    pub const CALLER: &str = "Micro-Caller";
    /// Present on error replies: the numeric error code; the body is a `Status`. The name is
    /// the NATS services API's (ADR-32), on every transport.
    pub const ERROR: &str = "Nats-Service-Error-Code";
    /// Error replies: the error's detail on one line (ADR-32's name).
    pub const ERROR_TEXT: &str = "Nats-Service-Error";
    /// JetStream's dedup id of a durable publish: on NATS the event id travels here instead of
    /// `Micro-Id` (events).
    pub const NATS_MSG_ID: &str = "Nats-Msg-Id";
    /// Event timestamp, milliseconds since the Unix epoch (events), when the id does not carry
    /// it (an id that is not a UUID v7).
    pub const TIMESTAMP: &str = "Micro-Timestamp";
    /// The publishing service or client (events).
    pub const PUBLISHER: &str = "Micro-Publisher";
    /// W3C trace context.
    pub const TRACEPARENT: &str = "traceparent";
    /// W3C trace state.
    pub const TRACESTATE: &str = "tracestate";
    /// The caller's credential: `Bearer <JWT>` (requests). Checked by the auth layer of a
    /// service that has one; never passed on to further calls.
    pub const AUTHORIZATION: &str = "Authorization";
    /// Prefix of user metadata headers: `Micro-Meta-<key>`.
    pub const META_PREFIX: &str = "Micro-Meta-";
    /// Dead letters: why it was dead-lettered (the last error's text).
    pub const DLQ_REASON: &str = "Micro-Dlq-Reason";
    /// Dead letters: how many deliveries were attempted.
    pub const DLQ_ATTEMPTS: &str = "Micro-Dlq-Attempts";
    /// Dead letters: the durable group that gave up on it.
    pub const DLQ_GROUP: &str = "Micro-Dlq-Group";
    /// Dead letters: the topic it was originally published on.
    pub const DLQ_TOPIC: &str = "Micro-Dlq-Topic";
    /// Dead letters: the last error's numeric code (400, 500...), when there was one.
    pub const DLQ_CODE: &str = "Micro-Dlq-Code";

    #[cfg_attr(not(any(feature = "nats", feature = "rabbitmq")), allow(dead_code))]
    const KNOWN: [&str; 13] = [
        CONTENT_TYPE,
        ID,
        NATS_MSG_ID,
        DEADLINE,
        CALLER,
        ERROR,
        ERROR_TEXT,
        TIMESTAMP,
        PUBLISHER,
        TRACEPARENT,
        TRACESTATE,
        AUTHORIZATION,
        "content-type",
    ];

    /// A received header name: the protocol's own names as static strings (no allocation).
    #[cfg_attr(not(any(feature = "nats", feature = "rabbitmq")), allow(dead_code))]
    pub(crate) fn intern(name: &str) -> std::borrow::Cow<'static, str> {
        match KNOWN.iter().find(|k| **k == name) {
            Some(k) => std::borrow::Cow::Borrowed(k),
            None => std::borrow::Cow::Owned(name.to_string()),
        }
    }
}

/// An ordered list of header pairs. Lookups ignore ASCII case; names are sent as inserted.
/// The protocol's names are `&'static str` and cost nothing to add.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(Vec<(Cow<'static, str>, String)>);

impl Headers {
    /// An empty header list.
    pub fn new() -> Headers {
        Headers(Vec::new())
    }

    /// An empty list with room for `n` pairs.
    pub fn with_capacity(n: usize) -> Headers {
        Headers(Vec::with_capacity(n))
    }

    /// Sets a header, replacing an existing one of the same name.
    pub fn insert(&mut self, name: impl Into<Cow<'static, str>>, value: impl Into<String>) {
        let name = name.into();
        let value = value.into();
        if let Some(slot) = self.0.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(&name)) {
            slot.1 = value;
        } else {
            self.0.push((name, value));
        }
    }

    /// Appends without checking for an existing name (the caller knows it is new).
    pub fn push(&mut self, name: impl Into<Cow<'static, str>>, value: impl Into<String>) {
        self.0.push((name.into(), value.into()));
    }

    /// Removes a header and returns its value (moved, not copied).
    pub fn take(&mut self, name: &str) -> Option<String> {
        let i = self.0.iter().position(|(n, _)| n.eq_ignore_ascii_case(name))?;
        Some(self.0.swap_remove(i).1)
    }

    /// The pairs, names as given (static or owned).
    #[cfg_attr(not(any(feature = "nats", feature = "rabbitmq")), allow(dead_code))]
    pub(crate) fn pairs(&self) -> &[(Cow<'static, str>, String)] {
        &self.0
    }

    /// The value of a header.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// All pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_ref(), v.as_str()))
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// User metadata: every `Micro-Meta-<key>` header, key lower-cased.
    pub fn metadata(&self) -> Metadata {
        let mut m = Metadata::new();
        let p = headers::META_PREFIX.len();
        for (n, v) in &self.0 {
            if n.len() > p && n.is_char_boundary(p) && n[..p].eq_ignore_ascii_case(headers::META_PREFIX) {
                m.insert(n[p..].to_ascii_lowercase(), v.clone());
            }
        }
        m
    }

    /// Refuses what no transport may send: an empty name, a name with a character other than
    /// visible ASCII or with `:`, a value with a line break (a header injection on NATS). Every
    /// transport checks outgoing requests and events with it.
    ///
    /// ```
    /// let mut h = micro::message::Headers::new();
    /// h.push("Micro-Meta-Note", "fine");
    /// assert!(h.check().is_ok());
    /// h.push("Micro-Meta-Note", "a\r\nMicro-Service: other");
    /// assert!(h.check().is_err());
    /// ```
    pub fn check(&self) -> crate::Result<()> {
        for (name, value) in &self.0 {
            check_pair(name, value)?;
        }
        Ok(())
    }

    /// Adds each metadata pair as a `Micro-Meta-<key>` header.
    pub fn set_metadata(&mut self, meta: &Metadata) {
        for (k, v) in meta.iter() {
            self.insert(format!("{}{k}", headers::META_PREFIX), v);
        }
    }
}

impl FromIterator<(String, String)> for Headers {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        Headers(iter.into_iter().map(|(n, v)| (Cow::Owned(n), v)).collect())
    }
}

/// What a transport moves: headers and an opaque body.
#[derive(Clone, Debug, Default)]
pub struct Message {
    /// Header pairs.
    pub headers: Headers,
    /// The encoded payload.
    pub body: Bytes,
}

impl Message {
    /// A message with a body and no headers.
    pub fn new(body: Bytes) -> Message {
        Message { headers: Headers::new(), body }
    }

    /// A message with headers and body.
    pub fn with_headers(headers: Headers, body: Bytes) -> Message {
        Message { headers, body }
    }
}

/// User metadata: string pairs propagated from caller to callee (and on to the services it calls).
/// Keys are lower-case on the wire.
///
/// ```
/// let mut m = micro::Metadata::new();
/// m.insert("tenant", "acme");
/// assert_eq!(m.get("tenant"), Some("acme"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Metadata(BTreeMap<String, String>);

impl Metadata {
    /// Empty metadata.
    pub fn new() -> Metadata {
        Metadata(BTreeMap::new())
    }

    /// Sets a pair; the key is lower-cased.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.insert(key.into().to_ascii_lowercase(), value.into());
    }

    /// The value for a key (any case).
    pub fn get(&self, key: &str) -> Option<&str> {
        if key.bytes().any(|b| b.is_ascii_uppercase()) {
            self.0.get(&key.to_ascii_lowercase()).map(String::as_str)
        } else {
            self.0.get(key).map(String::as_str)
        }
    }

    /// All pairs, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Adds every pair of `other` that is not set here.
    pub fn merge_missing(&mut self, other: &Metadata) {
        for (k, v) in other.iter() {
            self.0.entry(k.to_string()).or_insert_with(|| v.to_string());
        }
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Metadata {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut m = Metadata::new();
        for (k, v) in iter {
            m.insert(k, v);
        }
        m
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// An absolute deadline in milliseconds since the Unix epoch (the `Micro-Deadline` header).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(u64);

impl Deadline {
    /// The deadline `d` from now.
    pub fn after(d: Duration) -> Deadline {
        Deadline(now_millis().saturating_add(d.as_millis() as u64))
    }

    /// A deadline at an epoch time in milliseconds.
    pub fn from_millis(ms: u64) -> Deadline {
        Deadline(ms)
    }

    /// Milliseconds since the epoch.
    pub fn as_millis(self) -> u64 {
        self.0
    }

    /// Time left, zero when passed.
    pub fn remaining(self) -> Duration {
        Duration::from_millis(self.0.saturating_sub(now_millis()))
    }

    /// True once the deadline has passed.
    pub fn is_expired(self) -> bool {
        now_millis() >= self.0
    }

    pub(crate) fn parse(s: &str) -> Option<Deadline> {
        s.trim().parse().ok().map(Deadline)
    }
}

/// A W3C `traceparent`: version 00, a 128-bit trace id, a 64-bit parent span id and flags.
///
/// ```
/// use micro::message::TraceParent;
/// let t = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
/// let child = t.child();
/// assert_eq!(child.trace_id(), t.trace_id());
/// assert_ne!(child.span_id(), t.span_id());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    trace_id: u128,
    span_id: u64,
    flags: u8,
}

impl TraceParent {
    /// A new root trace (sampled).
    pub fn new_root() -> TraceParent {
        TraceParent { trace_id: nonzero(rand::random()), span_id: nonzero(rand::random()), flags: 1 }
    }

    /// A child span in the same trace.
    pub fn child(&self) -> TraceParent {
        TraceParent { trace_id: self.trace_id, span_id: nonzero(rand::random()), flags: self.flags }
    }

    /// Parses a `traceparent` header value; `None` if invalid.
    pub fn parse(s: &str) -> Option<TraceParent> {
        // `vv-<32 hex>-<16 hex>-ff`: 55 bytes; versions after 00 may append `-<more>`.
        let b = s.trim().as_bytes();
        if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        let version = hex_digits(&b[..2])?;
        if version == 0xff || (b.len() > 55 && (version == 0 || b[55] != b'-')) {
            return None;
        }
        let trace_id = u128::from(hex_digits(&b[3..19])?) << 64 | u128::from(hex_digits(&b[19..35])?);
        let span_id = hex_digits(&b[36..52])?;
        let flags = hex_digits(&b[53..55])? as u8;
        (trace_id != 0 && span_id != 0).then_some(TraceParent { trace_id, span_id, flags })
    }

    /// The `traceparent` header value: `00-<trace id>-<span id>-<flags>`, lowercase hex.
    pub fn header_value(&self) -> String {
        let bytes = self.encode();
        // Only ASCII hex digits and dashes were written.
        std::str::from_utf8(&bytes).unwrap_or_default().to_owned()
    }

    /// The 55 bytes of the header value.
    fn encode(&self) -> [u8; 55] {
        let mut out = [b'-'; 55];
        out[0] = b'0';
        out[1] = b'0';
        put_hex(&mut out[3..19], (self.trace_id >> 64) as u64);
        put_hex(&mut out[19..35], self.trace_id as u64);
        put_hex(&mut out[36..52], self.span_id);
        put_hex(&mut out[53..55], u64::from(self.flags));
        out
    }

    /// A trace context from its parts (ids of zero are made non-zero, as W3C requires).
    #[cfg_attr(not(feature = "otel"), allow(dead_code))] // OTel ids ⇄ ours
    pub(crate) fn from_parts(trace_id: u128, span_id: u64, flags: u8) -> TraceParent {
        TraceParent { trace_id: nonzero(trace_id), span_id: nonzero(span_id), flags }
    }

    #[cfg_attr(not(feature = "otel"), allow(dead_code))] // OTel ids ⇄ ours
    pub(crate) fn trace_id_u128(&self) -> u128 {
        self.trace_id
    }

    #[cfg_attr(not(feature = "otel"), allow(dead_code))] // OTel ids ⇄ ours
    pub(crate) fn span_id_u64(&self) -> u64 {
        self.span_id
    }

    /// The trace flags (bit 0: sampled).
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// Whether the trace is sampled (flags bit 0): a sampler upstream kept it.
    ///
    /// ```
    /// use micro::message::TraceParent;
    /// let t = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
    /// assert!(!t.sampled());
    /// ```
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The trace id as 32 hex digits.
    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The span id as 16 hex digits.
    pub fn span_id(&self) -> String {
        format!("{:016x}", self.span_id)
    }
}

impl std::fmt::Display for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(std::str::from_utf8(&self.encode()).map_err(|_| std::fmt::Error)?)
    }
}

/// The value of 1 to 16 hex digits (either case); `None` for anything else (no sign, no
/// prefix: `from_str_radix` would take a leading `+`).
fn hex_digits(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    let mut v = 0u64;
    for &b in digits {
        let d = HEX_VALUE[usize::from(b)];
        if d > 15 {
            return None;
        }
        v = v << 4 | u64::from(d);
    }
    Some(v)
}

/// The value of each byte as a hex digit (either case), 255 for a byte that is not one: a
/// table load per digit instead of three range tests.
static HEX_VALUE: [u8; 256] = {
    let mut t = [255u8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Writes `v`'s low `out.len()` (at most 16) hex digits into `out`, lowercase, most
/// significant first.
fn put_hex(out: &mut [u8], mut v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in out.iter_mut().rev() {
        *byte = DIGITS[(v & 0xf) as usize];
        v >>= 4;
    }
}

fn nonzero<T: PartialEq + From<u8>>(v: T) -> T {
    if v == T::from(0) {
        T::from(1)
    } else {
        v
    }
}

/// The time a UUID v7 id was made, in milliseconds since the Unix epoch (its first 48 bits);
/// `None` for any other id.
///
/// ```
/// let id = micro::message::new_id();
/// let ms = micro::message::id_timestamp(&id).unwrap();
/// assert!(ms.abs_diff(micro::message::now_millis()) < 60_000);
/// assert_eq!(micro::message::id_timestamp("order-42"), None);
/// ```
pub fn id_timestamp(id: &str) -> Option<u64> {
    let uuid = uuid::Uuid::try_parse(id).ok()?;
    (uuid.get_version_num() == 7).then(|| {
        let b = uuid.as_bytes();
        u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
    })
}

/// A new message id: a UUID v7 as hyphenated text, ordered within the process even inside one
/// millisecond (`Uuid::now_v7` keeps a counter in the random bits, RFC 9562 method 1).
pub fn new_id() -> String {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    uuid::Uuid::now_v7().hyphenated().encode_lower(&mut buf).to_string()
}

/// A header pair that can go on the wire: a name of visible ASCII without `:`, a value
/// without a line break (which would start a forged header).
pub(crate) fn check_pair(name: &str, value: &str) -> crate::Result<()> {
    if name.is_empty() || name.bytes().any(|b| !b.is_ascii_graphic() || b == b':') {
        return Err(crate::Error::config(format!("invalid header name {name:?}")));
    }
    if has_line_break(value) {
        return Err(crate::Error::config(format!("header {name} has a line break in its value")));
    }
    Ok(())
}

/// True when `s` holds a CR or an LF (a vectorised scan: header values can be long tokens).
pub(crate) fn has_line_break(s: &str) -> bool {
    memchr::memchr2(b'\r', b'\n', s.as_bytes()).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_travels_as_prefixed_headers() {
        let mut h = Headers::new();
        let meta: Metadata = [("Tenant", "acme"), ("user", "42")].into_iter().collect();
        h.set_metadata(&meta);
        assert_eq!(h.get("micro-meta-tenant"), Some("acme"));
        assert_eq!(h.metadata(), meta);
    }

    #[test]
    fn ids_are_ordered_within_the_process() {
        let ids: Vec<String> = (0..10_000).map(|_| new_id()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids sort in the order they were made");
    }

    #[test]
    fn ids_are_uuid_v7() {
        let id = uuid::Uuid::parse_str(&new_id()).unwrap();
        assert_eq!(id.get_version_num(), 7);
        assert!(new_id() != new_id());
    }

    #[test]
    fn traceparent_round_trip_and_rejects() {
        let s = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(TraceParent::parse(s).unwrap().to_string(), s);
        assert!(TraceParent::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none());
        assert!(TraceParent::parse("zz").is_none());
        assert!(TraceParent::parse("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_none());
        assert!(TraceParent::parse("00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_none(), "a sign");
        assert!(TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g").is_none());
        let t = TraceParent::from_parts(u128::MAX, 1, 0);
        assert_eq!(t.header_value(), format!("00-{:032x}-{:016x}-00", u128::MAX, 1));
        assert_eq!(TraceParent::parse(&t.header_value()), Some(t));
        let t = TraceParent::from_parts(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210, 0xdead_beef_0000_0001, 1);
        assert_eq!(t.header_value(), "00-0123456789abcdeffedcba9876543210-deadbeef00000001-01");
        // Later versions may append fields; version 00 may not; the version is hex.
        let v = "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(TraceParent::parse(&format!("01-{v}-more")).is_some());
        assert!(TraceParent::parse(&format!("00-{v}-more")).is_none());
        assert!(TraceParent::parse(&format!("01-{v}x")).is_none());
        assert!(TraceParent::parse(&format!("zz-{v}")).is_none());
        assert!(TraceParent::parse(&format!("00-{}", v.to_uppercase())).is_some(), "either case");
        assert!(TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01").is_none());
        assert!(TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01").is_none());
    }
}
