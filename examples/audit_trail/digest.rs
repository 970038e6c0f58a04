//! The daily digest: every audit instance campaigns, only the elected leader runs the job. Each
//! run counts the last day's events and prunes those older than the retention, which comes from
//! `micro::config` (defaults < `--config FILE` < `MICRO__RETENTION_DAYS` < the kv document
//! `config.audit_trail`, so `micro config set audit_trail retention_days 30` changes it live).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use micro::config::Config;
use micro::kv::Kv;
use micro::sync::Leader;
use serde::{Deserialize, Serialize};

/// The example's settings.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Settings {
    /// Events older than this many days are pruned by the digest.
    pub retention_days: u32,
    /// Time between digests (a day; shorter for a demo).
    pub digest_every_secs: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { retention_days: 90, digest_every_secs: 24 * 3600 }
    }
}

/// The kv document holding the example's settings.
pub const CONFIG_KEY: &str = "config.audit_trail";

/// Loads the settings and keeps them current.
pub async fn settings(kv: &Kv, file: Option<&Path>) -> micro::Result<Config<Settings>> {
    let mut b = Config::builder().defaults(Settings::default()).kv(kv, CONFIG_KEY);
    if let Some(f) = file {
        b = b.file(f);
    }
    b.load().await
}

/// What one digest run found.
#[derive(Debug, Serialize)]
pub struct Digest {
    /// The leader's fencing token for this run.
    pub token: u64,
    pub events_last_day: u64,
    pub pruned: u64,
    pub retention_days: u32,
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// One run: count the last day, prune what is past the retention.
pub fn run_once(db: &Path, settings: &Settings, token: u64) -> rusqlite::Result<Digest> {
    let conn = rusqlite::Connection::open(db)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let day_ago = now_ms() - 24 * 3600 * 1000;
    let cutoff = now_ms() - i64::from(settings.retention_days) * 24 * 3600 * 1000;
    let events_last_day: i64 =
        conn.query_row("SELECT COUNT(*) FROM audit_events WHERE timestamp_ms >= ?1", [day_ago], |r| r.get(0))?;
    let events_last_day = events_last_day.max(0) as u64;
    let pruned = conn.execute("DELETE FROM audit_events WHERE timestamp_ms < ?1", [cutoff])? as u64;
    Ok(Digest { token, events_last_day, pruned, retention_days: settings.retention_days })
}

/// Campaigns as `id`; while leader, runs the digest every `digest_every_secs` (re-read each time).
pub async fn run(kv: Kv, id: String, db: PathBuf, config: Config<Settings>) -> micro::Result<()> {
    let leader = Leader::new(&kv, "audit_trail.digest", &id)?.ttl(Duration::from_secs(15));
    loop {
        let term = leader.campaign().await?;
        println!("{id} leads the daily digest (token {})", term.token());
        while term.is_leader() {
            let settings: Arc<Settings> = config.get();
            match run_once(&db, &settings, term.token()) {
                Ok(d) => println!("daily digest: {}", serde_json::to_string(&d).unwrap_or_default()),
                Err(e) => eprintln!("daily digest failed: {e}"),
            }
            tokio::select! {
                () = term.lost() => eprintln!("{id} lost the digest leadership"),
                () = tokio::time::sleep(Duration::from_secs(settings.digest_every_secs.max(1))) => {}
            }
        }
    }
}
