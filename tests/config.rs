//! Typed config: layering (defaults < files < env < kv) per environment, and reload: a file
//! change and a kv change reach `watch()`, an invalid change is rejected and the old value kept.

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use micro::config::Config;
use micro::kv::Kv;
use micro::test_util::unique;
use serde::{Deserialize, Serialize};

const WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Settings {
    retention_days: u32,
    name: String,
    db: Db,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Db {
    url: String,
    pool: u32,
}

fn defaults() -> Settings {
    Settings { retention_days: 30, name: "default".into(), db: Db { url: "memory://".into(), pool: 4 } }
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(unique("config"));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes through a temp file and a rename, as editors and deploy tools do.
fn write(path: &PathBuf, text: &str) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

async fn next(watch: &mut micro::config::ConfigWatch<Settings>) -> micro::Result<std::sync::Arc<Settings>> {
    tokio::time::timeout(WAIT, watch.next()).await.expect("a config change").expect("watch open")
}

#[actix::test]
async fn layers_merge_in_order_per_environment() {
    let dir = temp_dir();
    let toml = dir.join("app.toml");
    write(&toml, "name = 'from-toml'\n[db]\npool = 8\n");
    write(&dir.join("app.prod.toml"), "[db]\nurl = 'nats://prod'\n");
    let yaml = dir.join("extra.yaml");
    write(&yaml, "retention_days: 9\n");
    let json = dir.join("last.json");
    write(&json, r#"{"name": "from-json"}"#);
    let prefix = format!("T{}__", uuid::Uuid::now_v7().simple());
    std::env::set_var(format!("{prefix}DB__POOL"), "16");
    let kv = Kv::open(&micro::test_util::memory_url()).await.unwrap();
    kv.put("config.app", r#"{"retention_days": 12}"#).await.unwrap();
    kv.put("config.app.staging", r#"{"retention_days": 99}"#).await.unwrap();

    let load = |env: &'static str| {
        Config::<Settings>::builder()
            .defaults(defaults())
            .file(&toml)
            .file(&yaml)
            .file(&json)
            .env_prefix(&prefix)
            .kv(&kv, "config.app")
            .environment(env)
            .watch(false)
            .load()
    };
    let prod = load("prod").await.unwrap();
    assert_eq!(
        *prod.get(),
        Settings { retention_days: 12, name: "from-json".into(), db: Db { url: "nats://prod".into(), pool: 16 } }
    );
    assert_eq!(prod.environment(), "prod");
    let staging = load("staging").await.unwrap();
    assert_eq!(staging.get().retention_days, 99, "the kv document of the environment wins");
    assert_eq!(staging.get().db.url, "memory://", "app.prod.toml is not read in staging");
    std::env::remove_var(format!("{prefix}DB__POOL"));

    // bad input is a typed config error saying what is wrong
    let bad = Config::<Settings>::builder().file(dir.join("missing.toml")).load().await.unwrap_err();
    assert_eq!(bad.kind(), micro::ErrorKind::Config);
    let ini = dir.join("app.ini");
    std::fs::write(&ini, "x=1").unwrap();
    let bad = Config::<Settings>::builder().file(&ini).load().await.unwrap_err();
    assert!(bad.to_string().contains(".toml"), "{bad}");
    let bad = Config::<Settings>::builder().file(&yaml).watch(false).load().await.unwrap_err();
    assert!(bad.to_string().contains("name"), "names the missing field: {bad}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[actix::test]
async fn file_change_reaches_watch_and_invalid_file_is_rejected() {
    let dir = temp_dir();
    let path = dir.join("app.toml");
    write(&path, "retention_days = 1\n");
    let config = Config::builder().defaults(defaults()).file(&path).environment("dev").load().await.unwrap();
    assert_eq!(config.get().retention_days, 1);
    let mut watch = config.watch();

    write(&path, "retention_days = 2\n");
    assert_eq!(next(&mut watch).await.unwrap().retention_days, 2);
    assert_eq!(config.get().retention_days, 2);

    write(&path, "retention_days = 'many'\n");
    let err = next(&mut watch).await.unwrap_err();
    assert_eq!(err.kind(), micro::ErrorKind::Config);
    assert!(err.to_string().contains("retention_days"), "says which value: {err}");
    assert_eq!(config.get().retention_days, 2, "the old value stays");

    write(&path, "retention_days = [broken toml\n");
    assert!(next(&mut watch).await.is_err());
    assert_eq!(config.get().retention_days, 2);

    // an environment file appearing later is layered in (the base file repaired first)
    write(&path, "retention_days = 2\n");
    write(&dir.join("app.dev.toml"), "retention_days = 3\n");
    assert_eq!(next(&mut watch).await.unwrap().retention_days, 3);
    let _ = std::fs::remove_dir_all(&dir);
}

async fn kv_change_reaches_watch(kv: Kv) {
    let key = format!("{}.cfg", unique("config"));
    kv.put(&key, r#"{"retention_days": 5}"#).await.unwrap();
    let config = Config::builder().defaults(defaults()).kv(&kv, &key).environment("prod").load().await.unwrap();
    assert_eq!(config.get().retention_days, 5);
    let mut watch = config.watch();
    kv.put(&format!("{key}.prod"), r#"{"retention_days": 6, "db": {"pool": 2}}"#).await.unwrap();
    let v = next(&mut watch).await.unwrap();
    assert_eq!((v.retention_days, v.db.pool), (6, 2));
    kv.put(&format!("{key}.prod"), r#"{"retention_days": -1}"#).await.unwrap();
    assert!(next(&mut watch).await.is_err(), "a negative u32 is rejected");
    assert_eq!(config.get().retention_days, 6);
    kv.put(&format!("{key}.prod"), "not json").await.unwrap();
    assert!(next(&mut watch).await.is_err());
    kv.delete(&format!("{key}.prod")).await.unwrap();
    assert_eq!(next(&mut watch).await.unwrap().retention_days, 5, "back to the common document");
    kv.delete(&key).await.unwrap();
}

#[actix::test]
async fn kv_change_reaches_watch_memory() {
    kv_change_reaches_watch(crate::kv::open("memory").await).await
}

#[cfg(feature = "nats")]
#[actix::test]
async fn kv_change_reaches_watch_nats() {
    kv_change_reaches_watch(crate::kv::open("nats").await).await
}

#[cfg(feature = "redis")]
#[actix::test]
async fn kv_change_reaches_watch_redis() {
    kv_change_reaches_watch(crate::kv::open("redis").await).await
}
