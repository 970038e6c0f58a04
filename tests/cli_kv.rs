//! `micro kv` and `micro config` against the kv store on NATS and Redis.

use std::process::Stdio;
use std::time::Duration;

use assert_cmd::assert::Assert;
use micro::test_util::unique;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_micro");

async fn micro(args: Vec<String>) -> Assert {
    tokio::task::spawn_blocking(move || {
        assert_cmd::Command::new(BIN)
            .args(&args)
            .env_remove("MICRO_KV")
            .env_remove("MICRO_OUTPUT")
            .env("NO_COLOR", "1")
            .timeout(Duration::from_secs(30))
            .assert()
    })
    .await
    .unwrap()
}

fn stdout(a: &Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stdout).into_owned()
}

fn store_urls() -> Vec<String> {
    let mut urls = Vec::new();
    #[cfg(feature = "nats")]
    urls.push(format!("{}?bucket=micro-kv-conformance", micro::test_util::nats_url()));
    urls.push(format!("{}?namespace=micro-kv-conformance", micro::test_util::redis_url()));
    urls
}

fn args(url: &str, rest: &[&str]) -> Vec<String> {
    rest.iter().chain(&["--kv", url]).map(|s| s.to_string()).collect()
}

#[actix::test]
async fn kv_get_put_del_ls_watch() {
    for url in store_urls() {
        let p = unique("clikv");
        let (a, b) = (format!("{p}.a"), format!("{p}.b"));
        let mut watch = tokio::process::Command::new(BIN)
            .args(args(&url, &["kv", "watch", &format!("{p}.")]))
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
        // the watch is up once a write shows in it; keep writing the probe until it does
        let probe = format!("{p}.probe");
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                micro(args(&url, &["kv", "put", &probe, "x"])).await.success();
                if let Ok(Ok(Some(_))) = tokio::time::timeout(Duration::from_millis(500), lines.next_line()).await {
                    break;
                }
            }
        })
        .await
        .expect("watch started");
        while let Ok(Ok(Some(_))) = tokio::time::timeout(Duration::from_millis(200), lines.next_line()).await {}

        let rev: u64 = stdout(&micro(args(&url, &["kv", "put", &a, "hello"])).await.success()).trim().parse().unwrap();
        micro(args(&url, &["kv", "put", &b, "world", "--ttl", "1h"])).await.success();
        let got = micro(args(&url, &["kv", "get", &a])).await.success();
        assert_eq!(stdout(&got), "hello\n");
        let got = micro(args(&url, &["-o", "json", "kv", "get", &a])).await.success();
        let v: Value = serde_json::from_str(&stdout(&got)).unwrap();
        assert_eq!(v, json!({"key": a, "value": "hello", "revision": rev}));
        // compare-and-set from the command line
        micro(args(&url, &["kv", "put", &a, "stale", "--revision", "1"])).await.failure().code(1);
        micro(args(&url, &["kv", "put", &a, "fresh", "--revision", &rev.to_string()])).await.success();
        let ls = micro(args(&url, &["-o", "json", "kv", "ls", &format!("{p}.")])).await.success();
        let keys: Vec<String> = serde_json::from_str::<Vec<Value>>(&stdout(&ls))
            .unwrap()
            .iter()
            .map(|e| e["key"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(keys, [a.clone(), b.clone(), probe.clone()]);
        micro(args(&url, &["kv", "del", &a])).await.success();
        let missing = micro(args(&url, &["kv", "get", &a])).await.failure().code(1);
        assert!(String::from_utf8_lossy(&missing.get_output().stderr).contains("not found"));
        micro(args(&url, &["kv", "put", "bad key", "x"])).await.failure().code(1);

        let mut seen = Vec::new();
        while seen.len() < 4 {
            let line =
                tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await.unwrap().unwrap().unwrap();
            let v: Value = serde_json::from_str(&line).unwrap();
            seen.push((v["op"].as_str().unwrap().to_string(), v["key"].as_str().unwrap().to_string()));
        }
        let want = [("put", &a), ("put", &b), ("put", &a), ("delete", &a)];
        assert_eq!(seen, want.map(|(o, k)| (o.to_string(), k.clone())));
        for k in [&b, &probe] {
            micro(args(&url, &["kv", "del", k])).await.success();
        }
    }
}

#[actix::test]
async fn config_set_and_get_documents() {
    for url in store_urls() {
        let app = unique("cliapp").replace('.', "-");
        micro(args(&url, &["config", "set", &app, "retention_days", "30"])).await.success();
        micro(args(&url, &["config", "set", &app, "db.url", "nats://x"])).await.success();
        micro(args(&url, &["config", "set", &app, "retention_days", "7", "--env", "prod"])).await.success();
        let all = micro(args(&url, &["config", "get", &app])).await.success();
        let doc: Value = serde_json::from_str(&stdout(&all)).unwrap();
        assert_eq!(doc, json!({"retention_days": 30, "db": {"url": "nats://x"}}));
        let one = micro(args(&url, &["config", "get", &app, "retention_days", "--env", "prod"])).await.success();
        assert_eq!(stdout(&one).trim(), "7");
        micro(args(&url, &["config", "get", &app, "nope"])).await.failure().code(1);
        // what `micro config set` writes is what micro::config reads
        #[derive(serde::Deserialize, serde::Serialize)]
        struct S {
            retention_days: u32,
        }
        let kv = micro::kv::Kv::open(&url).await.unwrap();
        let cfg = micro::config::Config::<S>::builder()
            .kv(&kv, &format!("config.{app}"))
            .environment("prod")
            .watch(false)
            .load()
            .await
            .unwrap();
        assert_eq!(cfg.get().retention_days, 7);
        for k in [format!("config.{app}"), format!("config.{app}.prod")] {
            kv.delete(&k).await.unwrap();
        }
    }
}
