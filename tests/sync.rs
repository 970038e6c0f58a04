//! Locks and leader election on each kv backend: no lost update under a lock, and leader
//! failover across processes with fencing tokens that only grow.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use micro::kv::Kv;
use micro::sync::{Leader, Lock};
use micro::test_util::{unique, wait_for};
use serde::{Deserialize, Serialize};

use crate::kv::open_in;

const BUCKET: &str = "micro-kv-sync";

async fn open(backend: &str) -> Kv {
    open_in(backend, BUCKET).await
}
use crate::util::ChildNode;

const WAIT: Duration = Duration::from_secs(20);

macro_rules! over_kv_sync {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(#[actix::test] async fn $case() { super::$case("memory").await })*
        }
        #[cfg(feature = "nats")]
        mod nats {
            $(#[actix::test] async fn $case() { super::$case("nats").await })*
        }
        #[cfg(feature = "redis")]
        mod redis {
            $(#[actix::test] async fn $case() { super::$case("redis").await })*
        }
    };
}

over_kv_sync!(lock_serialises_increments, lock_reports_loss_at_once, leader_observe_and_resign);

#[cfg(feature = "nats")]
#[actix::test]
async fn leader_failover_nats() {
    leader_failover(format!("{}?bucket={BUCKET}&max_age=1h", micro::test_util::nats_url())).await
}

#[cfg(feature = "redis")]
#[actix::test]
async fn leader_failover_redis() {
    leader_failover(format!("{}?namespace={BUCKET}", micro::test_util::redis_url())).await
}

/// 10 tasks × 100 read-yield-write increments of one kv counter, each under the lock: none is lost,
/// and the fencing tokens, recorded inside the critical section, strictly increase.
async fn lock_serialises_increments(backend: &str) {
    let kv = open(backend).await;
    let name = unique("lock");
    let counter = format!("{}.n", unique("counter"));
    kv.put(&counter, "0").await.unwrap();
    let tokens = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let tasks = (0..10).map(|_| {
        let (kv, counter, tokens) = (kv.clone(), counter.clone(), tokens.clone());
        let lock = Lock::new(&kv, &name).unwrap().ttl(Duration::from_secs(5));
        async move {
            for _ in 0..100 {
                let guard = lock.acquire().await.unwrap();
                let n: u64 = kv.get(&counter).await.unwrap().unwrap().as_str().unwrap().parse().unwrap();
                tokio::task::yield_now().await;
                kv.put(&counter, (n + 1).to_string()).await.unwrap();
                tokens.lock().push(guard.token());
                guard.release().await.unwrap();
            }
        }
    });
    futures::future::join_all(tasks).await;
    let n = kv.get(&counter).await.unwrap().unwrap();
    assert_eq!(n.as_str(), Some("1000"), "no lost update");
    let tokens = tokens.lock().clone();
    assert_eq!(tokens.len(), 1000);
    assert!(tokens.windows(2).all(|w| w[0] < w[1]), "fencing tokens strictly increase");
    kv.delete(&counter).await.unwrap();
}

/// Someone else deleting the lease ends it at once, and a short lease held without renewals
/// (the key overwritten) is reported too.
async fn lock_reports_loss_at_once(backend: &str) {
    let kv = open(backend).await;
    let lock = Lock::new(&kv, &unique("lost")).unwrap().ttl(Duration::from_secs(30));
    let guard = lock.acquire().await.unwrap();
    assert!(guard.is_held());
    kv.delete(lock.key()).await.unwrap();
    tokio::time::timeout(WAIT, guard.lost()).await.expect("loss reported");
    assert!(!guard.is_held());
    assert_eq!(guard.check().unwrap_err().kind(), micro::ErrorKind::LeaseLost);
    // the lock is free again, with a higher token
    let again = lock.try_acquire().await.unwrap().expect("free after the loss");
    assert!(again.token() > guard.token());
    drop(guard);
    kv.put(lock.key(), "intruder").await.unwrap();
    tokio::time::timeout(WAIT, again.lost()).await.expect("takeover reported");
    kv.delete(lock.key()).await.unwrap();
}

async fn leader_observe_and_resign(backend: &str) {
    let kv = open(backend).await;
    let name = unique("election");
    let a = Leader::new(&kv, &name, "a").unwrap().ttl(Duration::from_secs(5));
    let b = Leader::new(&kv, &name, "b").unwrap().ttl(Duration::from_secs(5));
    let mut seen = a.observe().await.unwrap();
    assert_eq!(tokio::time::timeout(WAIT, seen.next()).await.unwrap(), Some(None));
    let la = a.campaign().await.unwrap();
    assert_eq!(tokio::time::timeout(WAIT, seen.next()).await.unwrap(), Some(Some("a".into())));
    assert!(b.try_campaign().await.unwrap().is_none(), "one leader at a time");
    let waiting = actix_rt::spawn(async move { b.campaign().await.unwrap() });
    let token_a = la.token();
    la.resign().await.unwrap();
    let lb = tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap();
    assert!(lb.token() > token_a);
    // the observer sees "b" (it may or may not see the moment without a leader in between)
    loop {
        let now = tokio::time::timeout(WAIT, seen.next()).await.expect("b observed as leader");
        if now == Some(Some("b".into())) {
            break;
        }
    }
    assert_eq!(a.leader().await.unwrap().as_deref(), Some("b"));
    lb.resign().await.unwrap();
}

/// What a leader child process does (`run_leader_child`).
#[derive(Serialize, Deserialize, Debug)]
pub struct LeaderChild {
    pub url: String,
    pub election: String,
    pub id: String,
    pub lease_ms: u64,
    pub log: PathBuf,
}

pub const LEADER_CHILD_ENV: &str = "MICRO_TEST_CHILD_LEADER";

/// A contender: campaigns, and while leader appends `token id` to the log every 10 ms (the
/// "action" a resource would fence on); campaigns again if it loses the lease.
pub fn run_leader_child(config: LeaderChild) -> ! {
    actix_rt::System::new().block_on(async move {
        let kv = Kv::open(&config.url).await.expect("open kv");
        let me =
            Leader::new(&kv, &config.election, &config.id).expect("leader").ttl(Duration::from_millis(config.lease_ms));
        let mut log = std::fs::OpenOptions::new().append(true).create(true).open(&config.log).expect("log");
        loop {
            let term = me.campaign().await.expect("campaign");
            while term.is_leader() {
                log.write_all(format!("{} {}\n", term.token(), config.id).as_bytes()).expect("append");
                tokio::select! {
                    () = term.lost() => {}
                    () = tokio::time::sleep(Duration::from_millis(10)) => {}
                }
            }
        }
    })
}

fn read_log(path: &PathBuf) -> Vec<(u64, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (t, id) = l.split_once(' ')?;
            Some((t.parse().ok()?, id.to_string()))
        })
        .collect()
}

/// Five contenders in separate processes; ten times: SIGKILL the leader, a new one takes over
/// within the lease (plus slack for a loaded machine), and the log of actions shows tokens that
/// never go down, each token used by one contender only.
async fn leader_failover(url: String) {
    let lease = Duration::from_millis(1000);
    let dir = std::env::temp_dir().join(unique("leader"));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("actions.log");
    let election = unique("failover");
    let spawn = |id: String| {
        let cfg = LeaderChild {
            url: url.clone(),
            election: election.clone(),
            id: id.clone(),
            lease_ms: lease.as_millis() as u64,
            log: log.clone(),
        };
        (id, ChildNode::spawn_env(LEADER_CHILD_ENV, &cfg))
    };
    let mut children: Vec<(String, ChildNode)> = (0..5).map(|i| spawn(format!("c{i}"))).collect();
    let mut last_token = 0;
    for next_id in 5..15 {
        let (token, leader) = wait_for("a leader acting", WAIT, || {
            let found = read_log(&log).last().cloned().filter(|(t, _)| *t > last_token);
            async move { found }
        })
        .await;
        let at = children.iter().position(|(id, _)| *id == leader).expect("the leader is one of ours");
        let (_, mut child) = children.remove(at);
        child.kill().await;
        let killed = std::time::Instant::now();
        let (new_token, new_leader) = wait_for("a new leader after the kill", lease * 2 + WAIT, || {
            let found = read_log(&log).into_iter().find(|(t, _)| *t > token);
            async move { found }
        })
        .await;
        eprintln!(
            "leader {leader} (token {token}) killed; {new_leader} (token {new_token}) took over in {:?}",
            killed.elapsed()
        );
        assert_ne!(new_leader, leader);
        last_token = token;
        children.push(spawn(format!("c{next_id}")));
    }
    drop(children);
    let actions = read_log(&log);
    let mut owner = std::collections::HashMap::new();
    for w in actions.windows(2) {
        assert!(w[0].0 <= w[1].0, "a lower token acted after a higher one: {w:?}");
    }
    for (t, id) in &actions {
        assert_eq!(owner.entry(*t).or_insert(id.clone()), id, "token {t} used by two contenders");
    }
    assert!(owner.len() >= 11, "11 terms at least: {}", owner.len());
    let _ = std::fs::remove_dir_all(&dir);
}
