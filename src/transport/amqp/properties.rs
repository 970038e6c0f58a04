//! Message headers as AMQP properties and back: the content type and id have properties of
//! their own; everything else travels in the header table.

use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::BasicProperties;

use crate::error::{Error, ErrorKind, Result};
use crate::message::{headers, Headers};

/// An AMQP short string (a routing key, a property, a header name): at most 255 bytes. A longer
/// one is the caller's mistake, refused before anything is sent (lapin would panic on it).
pub(super) fn short(what: &str, s: &str) -> Result<ShortString> {
    ShortString::try_new(s).map_err(|_| {
        let shown: String = s.chars().take(40).collect();
        Error::new(
            ErrorKind::InvalidArgument,
            format!("{what} {shown:?}… is {} bytes: AMQP allows at most 255", s.len()),
        )
    })
}

pub(super) fn to_properties(h: &Headers) -> Result<BasicProperties> {
    let mut table = FieldTable::default();
    let mut props = BasicProperties::default();
    for (k, v) in h.iter() {
        if k.eq_ignore_ascii_case(headers::CONTENT_TYPE) {
            props = props.with_content_type(short("the content type", v)?);
        } else if k.eq_ignore_ascii_case(headers::ID) {
            props = props.with_message_id(short("the message id", v)?);
        } else {
            table.insert(short("the header name", k)?, AMQPValue::LongString(v.into()));
        }
    }
    Ok(props.with_headers(table))
}

pub(super) fn from_properties(p: &BasicProperties) -> Headers {
    let table = p.headers().as_ref();
    let mut h = Headers::with_capacity(2 + table.map_or(0, |t| t.inner().len()));
    if let Some(ct) = p.content_type() {
        h.push(headers::CONTENT_TYPE, ct.as_str());
    }
    if let Some(id) = p.message_id() {
        h.push(headers::ID, id.as_str());
    }
    if let Some(table) = table {
        for (k, v) in table.inner() {
            let value = match v {
                AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                AMQPValue::ShortString(s) => s.as_str().to_string(),
                AMQPValue::Boolean(b) => b.to_string(),
                AMQPValue::ShortShortInt(n) => n.to_string(),
                AMQPValue::ShortShortUInt(n) => n.to_string(),
                AMQPValue::ShortInt(n) => n.to_string(),
                AMQPValue::ShortUInt(n) => n.to_string(),
                AMQPValue::LongInt(n) => n.to_string(),
                AMQPValue::LongUInt(n) => n.to_string(),
                AMQPValue::LongLongInt(n) => n.to_string(),
                AMQPValue::Timestamp(n) => n.to_string(),
                _ => continue,
            };
            h.push(crate::message::headers::intern(k.as_str()), value);
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_through_properties() {
        let mut h = Headers::new();
        h.push(headers::CONTENT_TYPE, "application/json");
        h.push(headers::ID, "abc");
        h.push(headers::DEADLINE, "1764547200000");
        h.push("Micro-Meta-tenant", "acme");
        let back = from_properties(&to_properties(&h).unwrap());
        for (k, v) in h.iter() {
            assert_eq!(back.get(k), Some(v), "{k}");
        }
    }

    #[test]
    fn names_over_255_bytes_are_refused_not_a_panic() {
        for (k, v) in [(headers::ID, "i".repeat(256)), (headers::CONTENT_TYPE, "c".repeat(256))] {
            let mut h = Headers::new();
            h.push(k, v);
            assert_eq!(to_properties(&h).unwrap_err().kind(), ErrorKind::InvalidArgument, "{k}");
        }
        let mut h = Headers::new();
        h.push(format!("Micro-Meta-{}", "k".repeat(250)), "v");
        assert_eq!(to_properties(&h).unwrap_err().kind(), ErrorKind::InvalidArgument);
        assert!(short("a routing key", &"x".repeat(255)).is_ok());
    }
}
