//! The kv conformance suite: every case runs on the memory store, NATS JetStream KV and Redis.
//! Cases share a bucket or namespace per backend and keep to a unique key prefix each.

use std::time::Duration;

use futures::StreamExt;
use micro::kv::{Change, Expect, Kv};
use micro::test_util::{unique, wait_for};
use micro::ErrorKind;

const WAIT: Duration = Duration::from_secs(10);

/// The store of a backend (`memory`, `nats`, `redis`) used by the tests.
pub async fn open(backend: &str) -> Kv {
    open_in(backend, "micro-kv-conformance").await
}

/// As `open`, in bucket or namespace `name`: the lock tests keep to their own, so the many
/// watches they open do not slow the conformance cases' bucket.
pub async fn open_in(backend: &str, name: &str) -> Kv {
    let url = match backend {
        "memory" => micro::test_util::memory_url(),
        "nats" => format!("{}?bucket={name}&max_age=1h", micro::test_util::nats_url()),
        "redis" => format!("{}?namespace={name}", micro::test_util::redis_url()),
        other => panic!("no backend {other}"),
    };
    Kv::open(&url).await.unwrap_or_else(|e| panic!("open {url}: {e}"))
}

/// Instantiates each `async fn case(kv: Kv)` once per kv backend.
macro_rules! over_kv {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(#[actix::test] async fn $case() { super::$case(super::open("memory").await).await })*
        }
        #[cfg(feature = "nats")]
        mod nats {
            $(#[actix::test] async fn $case() { super::$case(super::open("nats").await).await })*
        }
        #[cfg(feature = "redis")]
        mod redis {
            $(#[actix::test] async fn $case() { super::$case(super::open("redis").await).await })*
        }
    };
}

over_kv!(crud, cas_conflicts, ttl_expiry, watch_sees_every_change_in_order, list_by_prefix, bad_input_is_typed);

fn prefix() -> String {
    format!("{}.", unique("kv"))
}

async fn cleanup(kv: &Kv, p: &str) {
    for e in kv.list(p).await.unwrap() {
        kv.delete(&e.key).await.unwrap();
    }
}

async fn crud(kv: Kv) {
    let p = prefix();
    let k = format!("{p}a");
    assert_eq!(kv.get(&k).await.unwrap(), None);
    let r1 = kv.put(&k, "one").await.unwrap();
    let e = kv.get(&k).await.unwrap().unwrap();
    assert_eq!((e.value(), e.revision), (&b"one"[..], r1));
    let r2 = kv.put(&k, "two").await.unwrap();
    assert!(r2 > r1, "revisions grow: {r1} then {r2}");
    assert_eq!(kv.get(&k).await.unwrap().unwrap().as_str(), Some("two"));
    kv.delete(&k).await.unwrap();
    assert_eq!(kv.get(&k).await.unwrap(), None);
    kv.delete(&k).await.expect("deleting an absent key is fine");
    let r3 = kv.put(&k, Vec::from(&b"\x00\xffbin"[..])).await.unwrap();
    assert!(r3 > r2);
    assert_eq!(kv.get(&k).await.unwrap().unwrap().value(), b"\x00\xffbin");
    cleanup(&kv, &p).await;
}

async fn cas_conflicts(kv: Kv) {
    let p = prefix();
    let k = format!("{p}cas");
    let r1 = kv.create(&k, "first").await.unwrap();
    let err = kv.create(&k, "second").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    let r2 = kv.compare_and_set(&k, "v2", r1).await.unwrap();
    assert!(r2 > r1);
    let stale = kv.compare_and_set(&k, "v3", r1).await.unwrap_err();
    assert!(stale.is_conflict(), "{stale}");
    assert_eq!(kv.get(&k).await.unwrap().unwrap().as_str(), Some("v2"));
    // a compare-and-set on an absent key conflicts
    let none = kv.compare_and_set(&format!("{p}none"), "x", r2).await.unwrap_err();
    assert!(none.is_conflict(), "{none}");
    // conditional delete
    assert!(kv.delete_with(&k, Expect::Revision(r1)).await.unwrap_err().is_conflict());
    kv.delete_with(&k, Expect::Revision(r2)).await.unwrap();
    assert_eq!(kv.get(&k).await.unwrap(), None);
    // after a delete, create works again
    kv.create(&k, "again").await.unwrap();
    // racing writers on one revision: exactly one wins
    let base = kv.get(&k).await.unwrap().unwrap().revision;
    let results = futures::future::join_all((0..8).map(|i| {
        let (kv, k) = (kv.clone(), k.clone());
        async move { kv.compare_and_set(&k, format!("w{i}"), base).await }
    }))
    .await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
    assert!(results.iter().filter_map(|r| r.as_ref().err()).all(|e| e.is_conflict()));
    cleanup(&kv, &p).await;
}

async fn ttl_expiry(kv: Kv) {
    let p = prefix();
    let k = format!("{p}lease");
    let r = kv.put_ttl(&k, "short", Duration::from_millis(300)).await.unwrap();
    kv.put(&format!("{p}keep"), "long").await.unwrap();
    assert!(kv.get(&k).await.unwrap().is_some(), "alive right after the put");
    wait_for("the entry to expire", WAIT, || {
        let (kv, k) = (kv.clone(), k.clone());
        async move { kv.get(&k).await.unwrap().is_none().then_some(()) }
    })
    .await;
    let keys: Vec<String> = kv.list(&p).await.unwrap().into_iter().map(|e| e.key).collect();
    assert_eq!(keys, vec![format!("{p}keep")], "an expired entry is not listed");
    assert!(kv.compare_and_set(&k, "late", r).await.unwrap_err().is_conflict(), "no CAS on an expired revision");
    kv.create(&k, "new").await.expect("create over an expired entry");
    // a plain put clears the TTL
    kv.put_ttl(&k, "again", Duration::from_millis(200)).await.unwrap();
    kv.put(&k, "forever").await.unwrap();
    let err = kv.put_ttl(&k, "x", Duration::ZERO).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument);
    assert_eq!(kv.get(&k).await.unwrap().unwrap().as_str(), Some("forever"));
    cleanup(&kv, &p).await;
}

async fn watch_sees_every_change_in_order(kv: Kv) {
    let p = prefix();
    let mut all = kv.watch(&p).await.unwrap();
    let mut one = kv.watch_key(&format!("{p}k1")).await.unwrap();
    let mut expected = Vec::new();
    for i in 0..40 {
        let k = format!("{p}k{}", i % 3);
        if i % 5 == 4 {
            kv.delete(&k).await.unwrap();
            expected.push((k, None));
        } else {
            kv.put(&k, format!("v{i}")).await.unwrap();
            expected.push((k, Some(format!("v{i}"))));
        }
        let other = format!("{}.other", unique("kv"));
        kv.put(&other, "not watched").await.unwrap();
        kv.delete(&other).await.unwrap();
    }
    // deletes of keys that were already deleted send nothing; replay to know what to expect
    let mut live = std::collections::HashSet::new();
    expected.retain(|(k, v)| match v {
        Some(_) => {
            live.insert(k.clone());
            true
        }
        None => live.remove(k),
    });
    let mut seen = Vec::new();
    let mut last = 0;
    while seen.len() < expected.len() {
        let change = tokio::time::timeout(WAIT, all.next())
            .await
            .unwrap_or_else(|_| {
                panic!("no change after {} of {}: seen {seen:?}, expected {expected:?}", seen.len(), expected.len())
            })
            .expect("open")
            .unwrap();
        assert!(change.revision() > last, "revisions in order: {} after {last}", change.revision());
        last = change.revision();
        seen.push(match change {
            Change::Put(e) => (e.key.clone(), Some(e.as_str().unwrap().to_string())),
            Change::Delete { key, .. } => (key, None),
            other => panic!("unexpected {other:?}"),
        });
    }
    assert_eq!(seen, expected);
    let k1: Vec<_> = expected.iter().filter(|(k, _)| *k == format!("{p}k1")).cloned().collect();
    for want in k1 {
        let change = tokio::time::timeout(WAIT, one.next()).await.expect("a change").expect("open").unwrap();
        assert_eq!(change.key(), want.0);
    }
    cleanup(&kv, &p).await;
}

async fn list_by_prefix(kv: Kv) {
    let p = prefix();
    for k in ["a.1", "a.2", "ab.1", "b.1", "a.3.x"] {
        kv.put(&format!("{p}{k}"), k).await.unwrap();
    }
    let names =
        |v: Vec<micro::kv::Entry>| v.into_iter().map(|e| e.key.trim_start_matches(&p).to_string()).collect::<Vec<_>>();
    assert_eq!(names(kv.list(&format!("{p}a.")).await.unwrap()), ["a.1", "a.2", "a.3.x"]);
    assert_eq!(names(kv.list(&format!("{p}a")).await.unwrap()), ["a.1", "a.2", "a.3.x", "ab.1"]);
    assert_eq!(names(kv.list(&p).await.unwrap()).len(), 5);
    assert!(kv.list(&format!("{p}zzz")).await.unwrap().is_empty());
    let e = &kv.list(&format!("{p}b.")).await.unwrap()[0];
    assert_eq!(e.as_str(), Some("b.1"));
    cleanup(&kv, &p).await;
}

async fn bad_input_is_typed(kv: Kv) {
    for bad in ["", "has space", ".lead", "trail.", "star*", "q?", &"x".repeat(300)] {
        let err = kv.put(bad, "v").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{bad:?}: {err}");
        assert_eq!(err.to_status("kv").code(), micro::Code::BAD_REQUEST);
    }
    assert_eq!(kv.list("bad prefix").await.unwrap_err().kind(), ErrorKind::InvalidArgument);
    assert_eq!(kv.get("a b").await.unwrap_err().kind(), ErrorKind::InvalidArgument);
}

#[actix::test]
async fn unknown_or_disabled_schemes_are_config_errors() {
    for url in ["etcd://x", "no-scheme"] {
        assert_eq!(Kv::open(url).await.unwrap_err().kind(), ErrorKind::Config, "{url}");
    }
}

#[actix::test]
async fn kv_extractor_serves_handlers() {
    use micro::prelude::*;
    async fn bump(kv: Kv, Req(key): Req<String>) -> Result<u64, Status> {
        let n =
            kv.get(&key).await.map_err(|e| e.to_status("t"))?.and_then(|e| e.as_str()?.parse().ok()).unwrap_or(0u64);
        kv.put(&key, (n + 1).to_string()).await.map_err(|e| e.to_status("t"))?;
        Ok(n + 1)
    }
    let url = micro::test_util::memory_url();
    let name = unique("kvsvc");
    let kv = Kv::open(&url).await.unwrap();
    let svc = Service::builder(&name).transport(&url).state(kv.clone()).handle("Kv.Bump", bump).start().await.unwrap();
    let client = Client::connect(&url).await.unwrap();
    let key = format!("{}.n", unique("kv"));
    for want in 1..=3u64 {
        let got: u64 = client.call(&name, "Kv.Bump", &key).await.unwrap();
        assert_eq!(got, want);
    }
    let bad: Result<u64, _> = client.call(&name, "Kv.Bump", &"bad key").await;
    assert_eq!(bad.unwrap_err().status().unwrap().code(), Code::BAD_REQUEST);
    svc.stop().await.unwrap();

    // without the store registered, the service refuses to start
    let err = Service::builder(unique("kvsvc")).transport(&url).handle("Kv.Bump", bump).start().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
}
