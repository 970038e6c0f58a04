//! The app speaks JSON; callers use either codec. Bodies cross between the two without a value
//! tree: JSON is checked and passed through as it is, MessagePack is transcoded token by token.

use bytes::Bytes;
use serde::de::IgnoredAny;

use crate::codec::Codec;
use crate::server::{FromRequest, IntoReply, Request};
use crate::status::Status;

/// A request or event body as JSON for the app, and the codec the caller used (its reply is
/// encoded in it).
#[derive(Debug)]
pub(crate) struct AppRequest {
    pub(crate) json: Bytes,
    pub(crate) codec: Codec,
}

impl FromRequest for AppRequest {
    fn from_request(req: &Request) -> Result<Self, Status> {
        let json = to_json(req.body(), req.codec())
            .map_err(|e| Status::bad_request(format!("cannot decode {} request: {e}", req.endpoint())))?;
        Ok(AppRequest { json, codec: req.codec() })
    }
}

/// A reply already encoded in the caller's codec (or the status to answer instead).
#[derive(Debug)]
pub(crate) struct Encoded(pub(crate) Result<Bytes, Status>);

impl IntoReply for Encoded {
    fn into_reply(self, _codec: Codec) -> Result<Bytes, Status> {
        self.0
    }
}

/// `body` (in `codec`) as JSON: the same bytes when it is JSON already (once checked).
pub(crate) fn to_json(body: &Bytes, codec: Codec) -> Result<Bytes, String> {
    match codec {
        Codec::Json => {
            check_json(body)?;
            Ok(body.clone())
        }
        Codec::MsgPack => {
            let mut out = Vec::with_capacity(body.len() * 2 + 16);
            let mut de = rmp_serde::Deserializer::from_read_ref(&body[..]);
            serde_transcode::transcode(&mut de, &mut serde_json::Serializer::new(&mut out))
                .map_err(|e| e.to_string())?;
            Ok(Bytes::from(out))
        }
    }
}

/// The app's JSON answer in `codec`: the same bytes for JSON (once checked).
pub(crate) fn from_json(json: &Bytes, codec: Codec) -> Result<Bytes, String> {
    match codec {
        Codec::Json => {
            check_json(json)?;
            Ok(json.clone())
        }
        Codec::MsgPack => {
            let mut out = Vec::with_capacity(json.len() + 16);
            let mut de = serde_json::Deserializer::from_slice(json);
            serde_transcode::transcode(&mut de, &mut rmp_serde::Serializer::new(&mut out))
                .map_err(|e| e.to_string())?;
            de.end().map_err(|e| e.to_string())?;
            Ok(Bytes::from(out))
        }
    }
}

/// One JSON value and nothing after it but whitespace.
fn check_json(json: &[u8]) -> Result<(), String> {
    serde_json::from_slice::<IgnoredAny>(json).map(drop).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn msgpack_and_json_cross_without_changing_the_value() {
        let v = json!({"name": "Ada", "n": -3, "big": 18446744073709551615u64, "f": 1.5, "list": [true, null, "x"]});
        let packed = Bytes::from(rmp_serde::to_vec_named(&v).unwrap());
        let as_json = to_json(&packed, Codec::MsgPack).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&as_json).unwrap(), v);
        let back = from_json(&as_json, Codec::MsgPack).unwrap();
        assert_eq!(rmp_serde::from_slice::<Value>(&back).unwrap(), v);
    }

    #[test]
    fn json_passes_through_once_checked() {
        let body = Bytes::from_static(br#"{"name": "Ada"} "#);
        assert_eq!(to_json(&body, Codec::Json).unwrap(), body);
        assert!(to_json(&Bytes::from_static(b"{\"name\": "), Codec::Json).is_err());
        assert!(from_json(&Bytes::from_static(b"{} {}"), Codec::Json).is_err());
        assert!(from_json(&Bytes::from_static(b"{} {}"), Codec::MsgPack).is_err());
        assert!(from_json(&Bytes::from_static(b"not json"), Codec::MsgPack).is_err());
        // Number keys of a MessagePack map become JSON's string keys (as serde_json writes them);
        // a key JSON cannot hold at all (a list) is an error, not a guess.
        let packed = Bytes::from(rmp_serde::to_vec(&std::collections::BTreeMap::from([(1u8, 2u8)])).unwrap());
        assert_eq!(to_json(&packed, Codec::MsgPack).unwrap(), Bytes::from_static(br#"{"1":2}"#));
        let packed = Bytes::from(rmp_serde::to_vec(&std::collections::BTreeMap::from([(vec![1u8], 2u8)])).unwrap());
        assert!(to_json(&packed, Codec::MsgPack).is_err());
    }
}
