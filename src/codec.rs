//! [`Codec`]: MessagePack (named fields) by default, JSON at the edges.
//!
//! The content type travels with every message (`Content-Type` header); a receiver decodes by it
//! and replies in the same codec.
//!
//! ```
//! use micro::Codec;
//! #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
//! struct Hello { name: String }
//! let bytes = Codec::MsgPack.encode(&Hello { name: "Ada".into() }).unwrap();
//! let back: Hello = Codec::from_content_type("application/msgpack").unwrap().decode(&bytes).unwrap();
//! assert_eq!(back, Hello { name: "Ada".into() });
//! ```

use bytes::Bytes;
use serde::{de::DeserializeOwned, Serialize};

use crate::error::{Error, Result};

/// A payload encoding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Codec {
    /// MessagePack with field names (`rmp_serde::to_vec_named`), so peers can add fields freely.
    #[default]
    MsgPack,
    /// JSON.
    Json,
}

impl Codec {
    /// The canonical content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Codec::MsgPack => "application/msgpack",
            Codec::Json => "application/json",
        }
    }

    /// The codec for a content type (parameters such as `; charset=utf-8` are ignored).
    /// Accepts `application/msgpack`, `application/x-msgpack`, `application/vnd.msgpack`,
    /// `application/json`; anything else is `None`.
    pub fn from_content_type(ct: &str) -> Option<Codec> {
        let base = ct.split(';').next().unwrap_or("").trim();
        if base.eq_ignore_ascii_case("application/msgpack")
            || base.eq_ignore_ascii_case("application/x-msgpack")
            || base.eq_ignore_ascii_case("application/vnd.msgpack")
        {
            Some(Codec::MsgPack)
        } else if base.eq_ignore_ascii_case("application/json") {
            Some(Codec::Json)
        } else {
            None
        }
    }

    /// The codec of a body that came without a content type: JSON if it starts (after white
    /// space) with `{` or `[`, else MessagePack. A MessagePack map or array never starts so.
    pub fn sniff(body: &[u8]) -> Codec {
        match body.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') | Some(b'[') => Codec::Json,
            _ => Codec::MsgPack,
        }
    }

    /// The `Content-Type` to send with a body in this codec, or `None` when a receiver would
    /// sniff it right anyway (MessagePack not starting with `{` or `[`, JSON starting with
    /// one of them): saves a header.
    pub(crate) fn content_type_for(self, body: &[u8]) -> Option<&'static str> {
        (Codec::sniff(body) != self).then(|| self.content_type())
    }

    /// Encodes a value.
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Bytes> {
        // Room for a typical small message up front: one allocation instead of a few regrowths.
        let mut buf = Vec::with_capacity(128);
        match self {
            Codec::MsgPack => {
                value.serialize(&mut rmp_serde::Serializer::new(&mut buf).with_struct_map()).map_err(Error::codec)?
            }
            Codec::Json => serde_json::to_writer(&mut buf, value).map_err(Error::codec)?,
        }
        Ok(Bytes::from(buf))
    }

    /// Decodes a value. The error names the path of the field that failed
    /// (`name: invalid type: integer, expected a string`).
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T> {
        // The plain decoder first; only a failure pays for tracking the path to name the field.
        let fast = match self {
            Codec::MsgPack => rmp_serde::from_slice(bytes).ok(),
            Codec::Json => serde_json::from_slice(bytes).ok(),
        };
        if let Some(v) = fast {
            return Ok(v);
        }
        match self {
            Codec::MsgPack => {
                let mut de = rmp_serde::Deserializer::new(bytes);
                serde_path_to_error::deserialize(&mut de).map_err(|e| Error::codec(describe(e)))
            }
            Codec::Json => {
                let mut de = serde_json::Deserializer::from_slice(bytes);
                serde_path_to_error::deserialize(&mut de).map_err(|e| Error::codec(describe(e)))
            }
        }
    }

    /// Re-encodes a payload from one codec to another (used at the JSON edges).
    pub fn transcode(self, bytes: &[u8], to: Codec) -> Result<Bytes> {
        if self == to {
            return Ok(Bytes::copy_from_slice(bytes));
        }
        let value: serde_json::Value = self.decode(bytes)?;
        to.encode(&value)
    }
}

/// The message of a decode error: `field `<path>`: <message>`, or the bare message when no field
/// is to blame (the whole value is wrong, or the input is not well-formed: serde_path_to_error
/// then reports `?`, which names nothing). serde_json's ` at line L column C` suffix is left out:
/// the body is one line on the wire and the position means nothing to a peer.
fn describe<E: std::fmt::Display>(e: serde_path_to_error::Error<E>) -> String {
    let mut path = e.path().to_string();
    while let Some(known) = path.strip_suffix(".?") {
        path.truncate(known.len());
    }
    let message = e.into_inner().to_string();
    let message = without_position(&message);
    if matches!(path.as_str(), "" | "." | "?") {
        message.to_string()
    } else {
        format!("field `{path}`: {message}")
    }
}

/// `message` without a trailing ` at line L column C` (serde_json's position).
fn without_position(message: &str) -> &str {
    let Some((head, tail)) = message.rsplit_once(" at line ") else { return message };
    let numbers =
        tail.split_once(" column ").is_some_and(|(l, c)| l.parse::<u64>().is_ok() && c.parse::<u64>().is_ok());
    if numbers {
        head
    } else {
        message
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    struct Hello {
        name: String,
        age: u32,
    }

    #[test]
    fn both_codecs_round_trip() {
        for c in [Codec::MsgPack, Codec::Json] {
            let v = Hello { name: "Ada".into(), age: 36 };
            let back: Hello = c.decode(&c.encode(&v).unwrap()).unwrap();
            assert_eq!(back, v);
        }
    }

    #[test]
    fn decode_errors_name_the_field() {
        let bad = Codec::Json.encode(&serde_json::json!({"name": 5, "age": 1})).unwrap();
        let e = Codec::Json.decode::<Hello>(&bad).unwrap_err().to_string();
        assert!(e.contains("name"), "{e}");
        let bad = Codec::MsgPack.encode(&serde_json::json!({"name": "x", "age": "old"})).unwrap();
        let e = Codec::MsgPack.decode::<Hello>(&bad).unwrap_err().to_string();
        assert!(e.contains("age"), "{e}");
        let missing = Codec::MsgPack.encode(&serde_json::json!({"name": "x"})).unwrap();
        let e = Codec::MsgPack.decode::<Hello>(&missing).unwrap_err().to_string();
        assert!(e.contains("missing field `age`"), "{e}");
        let e = Codec::Json.decode::<Hello>(br#"{"name": 5, "age": 1}"#).unwrap_err();
        assert_eq!(e.message(), Some("field `name`: invalid type: integer `5`, expected a string"));
        let e = Codec::Json.decode::<Hello>(br#"{"name": "x"}"#).unwrap_err();
        assert_eq!(e.message(), Some("missing field `age`"));
    }

    #[test]
    fn syntax_errors_name_no_field_and_no_position() {
        let e = Codec::Json.decode::<Hello>(b"{name: 1}").unwrap_err();
        assert_eq!(e.message(), Some("key must be a string"));
        let e = Codec::Json.decode::<Hello>(br#"{"name": "x", "age": 1"#).unwrap_err();
        assert_eq!(e.message(), Some("EOF while parsing an object"));
        assert_eq!(without_position("expected value at line 1 column 11"), "expected value");
        assert_eq!(without_position("a name at line one"), "a name at line one");
    }

    #[test]
    fn sniffs_json_without_a_content_type() {
        assert_eq!(Codec::sniff(b" {\"name\":\"x\"}"), Codec::Json);
        assert_eq!(Codec::sniff(&Codec::MsgPack.encode(&serde_json::json!({"name": "x"})).unwrap()), Codec::MsgPack);
        assert_eq!(Codec::sniff(b""), Codec::MsgPack);
    }

    #[test]
    fn content_types() {
        assert_eq!(Codec::from_content_type("application/json; charset=utf-8"), Some(Codec::Json));
        assert_eq!(Codec::from_content_type("application/x-msgpack"), Some(Codec::MsgPack));
        assert_eq!(Codec::from_content_type("text/plain"), None);
    }

    #[test]
    fn msgpack_to_json_transcode() {
        let v = Hello { name: "Ada".into(), age: 3 };
        let j = Codec::MsgPack.transcode(&Codec::MsgPack.encode(&v).unwrap(), Codec::Json).unwrap();
        assert_eq!(&j[..], br#"{"age":3,"name":"Ada"}"# as &[u8]);
    }
}
