//! Properties of every type that crosses the wire: each decodes to what was encoded, in
//! MessagePack and in JSON, and the two codecs carry the same value.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde::{de::DeserializeOwned, Serialize};

use crate::api;
use crate::codec::Codec;
use crate::message::{Deadline, Metadata, TraceParent};
use crate::registry::{Action, Announcement, Discover, Endpoint, Node, ServiceRecord, WatchAction, WatchEvent};
use crate::server::{HealthStatus, ServiceStats, SubscriptionInfo};
use crate::status::{Code, Status};

/// `decode(encode(x)) == x` in both codecs, and MessagePack transcoded to JSON is the JSON.
fn round_trips<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(value: &T) -> Result<(), TestCaseError> {
    for codec in [Codec::MsgPack, Codec::Json] {
        let bytes = codec.encode(value).map_err(|e| TestCaseError::fail(format!("{codec:?} encode: {e}")))?;
        let back: T = codec.decode(&bytes).map_err(|e| TestCaseError::fail(format!("{codec:?} decode: {e}")))?;
        prop_assert_eq!(&back, value, "{:?}", codec);
    }
    let msgpack = Codec::MsgPack.encode(value).unwrap();
    let as_json = Codec::MsgPack.transcode(&msgpack, Codec::Json).unwrap();
    let direct: serde_json::Value = serde_json::to_value(value).unwrap();
    let transcoded: serde_json::Value = serde_json::from_slice(&as_json).unwrap();
    prop_assert_eq!(transcoded, direct);
    Ok(())
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), "[a-z.]{0,12}"]
}

fn map() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(text(), text(), 0..4)
}

fn record() -> impl Strategy<Value = ServiceRecord> {
    let endpoint = (text(), map()).prop_map(|(name, metadata)| Endpoint { name, metadata });
    let node = (text(), text(), map()).prop_map(|(id, address, metadata)| Node { id, address, metadata });
    (text(), text(), map(), prop::collection::vec(endpoint, 0..3), prop::collection::vec(node, 0..3)).prop_map(
        |(name, version, metadata, endpoints, nodes)| ServiceRecord { name, version, metadata, endpoints, nodes },
    )
}

fn pairs() -> impl Strategy<Value = api::Pairs> {
    prop::collection::btree_map(text(), (text(), prop::collection::vec(text(), 0..3)), 0..3)
        .prop_map(|m| m.into_iter().map(|(k, (key, values))| (k, api::Pair { key, values })).collect())
}

fn stats() -> impl Strategy<Value = ServiceStats> {
    let sub =
        (text(), proptest::option::of(text()), any::<bool>(), any::<[u64; 5]>(), proptest::option::of(any::<u64>()))
            .prop_map(|(topic, group, durable, n, pending)| SubscriptionInfo {
                topic,
                group,
                durable,
                handled: n[0],
                errors: n[1],
                retries: n[2],
                dead_letters: n[3],
                restarts: n[4],
                pending,
            });
    ((text(), text(), text()), any::<[u64; 12]>(), prop::collection::vec(sub, 0..3)).prop_map(
        |((service, version, node), n, subscriptions)| ServiceStats {
            service,
            version,
            node,
            started: n[0],
            uptime: n[1],
            requests: n[2],
            errors: n[3],
            panics: n[4],
            restarts: n[5],
            expired: n[6],
            events: n[7],
            retries: n[8],
            dead_letters: n[9],
            in_flight: n[10],
            memory: n[11],
            subscriptions,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn status_round_trips(code in any::<u16>(), id in text(), detail in text()) {
        round_trips(&Status::new(Code::new(code), detail).with_id(id))?;
    }

    #[test]
    fn registry_messages_round_trip(service in record(), ttl in any::<u64>(), register in any::<bool>(), reply in text(), only in proptest::option::of(text())) {
        let action = if register { Action::Register } else { Action::Deregister };
        round_trips(&Announcement { action, ttl, service: service.clone() })?;
        round_trips(&Discover { service: only, reply, known: false })?;
        round_trips(&WatchEvent { action: WatchAction::Updated, service })?;
    }

    #[test]
    fn api_request_and_response_round_trip(
        (method, path, body, url) in (text(), text(), text(), text()),
        (header, get, post) in (pairs(), pairs(), pairs()),
        status_code in any::<i32>(),
    ) {
        round_trips(&api::Request { method, path, header: header.clone(), get, post, body: body.clone(), url })?;
        round_trips(&api::Response { status_code, header, body })?;
    }

    #[test]
    fn debug_answers_round_trip(s in stats(), (status, service, version, node) in (text(), text(), text(), text())) {
        round_trips(&s)?;
        round_trips(&HealthStatus { status, service, version, node, checks: Vec::new() })?;
    }

    #[test]
    fn metadata_round_trips(m in map()) {
        let meta: Metadata = m.into_iter().collect();
        round_trips(&meta)?;
    }

    #[test]
    fn deadlines_and_trace_contexts_survive_their_header_text(ms in any::<u64>(), trace in any::<u128>(), span in any::<u64>(), flags in any::<u8>()) {
        let d = Deadline::from_millis(ms);
        prop_assert_eq!(Deadline::parse(&d.as_millis().to_string()), Some(d));
        let header = format!("00-{trace:032x}-{span:016x}-{flags:02x}");
        if let Some(t) = TraceParent::parse(&header) {
            prop_assert_eq!(t.to_string(), header);
        } else {
            prop_assert!(trace == 0 || span == 0, "a valid traceparent was refused: {}", header);
        }
    }
}
