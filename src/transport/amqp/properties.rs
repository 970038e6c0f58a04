//! Message headers as AMQP properties and back: the content type and id have properties of
//! their own; everything else travels in the header table.

use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;

use crate::message::{headers, Headers};

pub(super) fn to_properties(h: &Headers) -> BasicProperties {
    let mut table = FieldTable::default();
    let mut props = BasicProperties::default();
    for (k, v) in h.iter() {
        if k.eq_ignore_ascii_case(headers::CONTENT_TYPE) {
            props = props.with_content_type(v.into());
        } else if k.eq_ignore_ascii_case(headers::ID) {
            props = props.with_message_id(v.into());
        } else {
            table.insert(k.into(), AMQPValue::LongString(v.into()));
        }
    }
    props.with_headers(table)
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
        let back = from_properties(&to_properties(&h));
        for (k, v) in h.iter() {
            assert_eq!(back.get(k), Some(v), "{k}");
        }
    }
}
