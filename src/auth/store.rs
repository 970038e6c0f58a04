//! Where the auth service keeps its state: accounts (secrets hashed with Argon2id), refresh
//! tokens and API keys (SHA-256 of the opaque value), rules and signing keys, in SQLite.

use std::collections::BTreeMap;
use std::path::Path;

use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::rules::{Access, Rule};
use super::token::KeyPair;
use crate::status::Status;

/// An account: a user or a service, with its scopes and metadata. Its secret is never kept,
/// only an Argon2id hash of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Account {
    /// The account id (a service's name, a user's name): the client id of the OAuth2 grants.
    pub id: String,
    /// `user` or `service`.
    pub kind: String,
    /// Scopes its tokens may carry.
    pub scopes: Vec<String>,
    /// Free-form metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// When it was created, seconds since the Unix epoch.
    #[serde(default)]
    pub created: u64,
}

/// A signing key as stored: the pair, from when it signs, and when it leaves the key set.
#[derive(Clone, Debug)]
pub(crate) struct StoredKey {
    pub(crate) pair: KeyPair,
    pub(crate) signs_from: u64,
    pub(crate) retire_at: Option<u64>,
}

fn internal(e: rusqlite::Error) -> Status {
    tracing::error!(error = %e, "auth store failure");
    Status::internal("auth store failure")
}

pub(crate) struct Store {
    conn: Mutex<Connection>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS accounts (id TEXT PRIMARY KEY, kind TEXT NOT NULL, secret_hash TEXT NOT NULL,
    scopes TEXT NOT NULL, metadata TEXT NOT NULL, created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS refresh_tokens (hash TEXT PRIMARY KEY, account TEXT NOT NULL, scope TEXT NOT NULL,
    expires INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS api_keys (hash TEXT PRIMARY KEY, id TEXT NOT NULL UNIQUE, account TEXT NOT NULL,
    scope TEXT NOT NULL, created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS rules (id TEXT PRIMARY KEY, service TEXT NOT NULL, endpoint TEXT NOT NULL,
    who TEXT NOT NULL, access TEXT NOT NULL, priority INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS keys (kid TEXT PRIMARY KEY, private BLOB NOT NULL, public TEXT NOT NULL,
    signs_from INTEGER NOT NULL, retire_at INTEGER);
";

impl Store {
    /// Opens (creating) the database at `path`, or an in-memory one; on Unix a new file is
    /// readable by its owner only (it holds private keys).
    pub(crate) fn open(path: Option<&Path>) -> crate::Result<Store> {
        let conn = match path {
            Some(p) => {
                let fresh = !p.exists();
                let conn = Connection::open(p)
                    .map_err(|e| crate::Error::config(format!("cannot open {}: {e}", p.display())))?;
                #[cfg(unix)]
                if fresh {
                    use std::os::unix::fs::PermissionsExt;
                    let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600));
                }
                #[cfg(not(unix))]
                let _ = fresh;
                conn
            }
            None => Connection::open_in_memory().map_err(|e| crate::Error::config(e.to_string()))?,
        };
        conn.execute_batch(SCHEMA).map_err(|e| crate::Error::config(format!("cannot set up the auth store: {e}")))?;
        Ok(Store { conn: Mutex::new(conn) })
    }

    pub(crate) fn create_account(&self, a: &Account, secret_hash: &str) -> Result<(), Status> {
        let conn = self.conn.lock();
        let n = conn
            .execute(
                "INSERT OR IGNORE INTO accounts (id, kind, secret_hash, scopes, metadata, created) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    a.id,
                    a.kind,
                    secret_hash,
                    a.scopes.join(" "),
                    serde_json::to_string(&a.metadata).unwrap_or_default(),
                    a.created as i64
                ],
            )
            .map_err(internal)?;
        if n == 0 {
            return Err(Status::new(crate::status::Code::CONFLICT, format!("account {} exists", a.id)));
        }
        Ok(())
    }

    fn account_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<(Account, String)> {
        let scopes: String = row.get(3)?;
        let metadata: String = row.get(4)?;
        Ok((
            Account {
                id: row.get(0)?,
                kind: row.get(1)?,
                scopes: scopes.split_ascii_whitespace().map(str::to_string).collect(),
                metadata: serde_json::from_str(&metadata).unwrap_or_default(),
                created: row.get::<_, i64>(5)? as u64,
            },
            row.get(2)?,
        ))
    }

    /// The account and its secret hash.
    pub(crate) fn account(&self, id: &str) -> Result<Option<(Account, String)>, Status> {
        self.conn
            .lock()
            .query_row(
                "SELECT id, kind, secret_hash, scopes, metadata, created FROM accounts WHERE id = ?1",
                [id],
                Store::account_row,
            )
            .optional()
            .map_err(internal)
    }

    pub(crate) fn accounts(&self) -> Result<Vec<Account>, Status> {
        let conn = self.conn.lock();
        let mut stmt = conn
            .prepare("SELECT id, kind, secret_hash, scopes, metadata, created FROM accounts ORDER BY id")
            .map_err(internal)?;
        let rows = stmt.query_map([], Store::account_row).map_err(internal)?;
        rows.map(|r| r.map(|(a, _)| a)).collect::<rusqlite::Result<_>>().map_err(internal)
    }

    /// Deletes an account with its refresh tokens and API keys; false when there was none.
    pub(crate) fn delete_account(&self, id: &str) -> Result<bool, Status> {
        let conn = self.conn.lock();
        conn.execute("DELETE FROM refresh_tokens WHERE account = ?1", [id]).map_err(internal)?;
        conn.execute("DELETE FROM api_keys WHERE account = ?1", [id]).map_err(internal)?;
        Ok(conn.execute("DELETE FROM accounts WHERE id = ?1", [id]).map_err(internal)? > 0)
    }

    pub(crate) fn put_refresh(&self, hash: &str, account: &str, scope: &str, expires: u64) -> Result<(), Status> {
        let conn = self.conn.lock();
        conn.execute("DELETE FROM refresh_tokens WHERE expires < ?1", [super::token::now_secs() as i64])
            .map_err(internal)?;
        conn.execute(
            "INSERT INTO refresh_tokens (hash, account, scope, expires) VALUES (?1, ?2, ?3, ?4)",
            params![hash, account, scope, expires as i64],
        )
        .map_err(internal)?;
        Ok(())
    }

    /// Removes a refresh token and returns its account, scope and expiry (each is used once).
    pub(crate) fn take_refresh(&self, hash: &str) -> Result<Option<(String, String, u64)>, Status> {
        let conn = self.conn.lock();
        let row = conn
            .query_row("SELECT account, scope, expires FROM refresh_tokens WHERE hash = ?1", [hash], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
            })
            .optional()
            .map_err(internal)?;
        if row.is_some() {
            conn.execute("DELETE FROM refresh_tokens WHERE hash = ?1", [hash]).map_err(internal)?;
        }
        Ok(row)
    }

    pub(crate) fn put_api_key(&self, hash: &str, id: &str, account: &str, scope: &str) -> Result<(), Status> {
        self.conn
            .lock()
            .execute(
                "INSERT INTO api_keys (hash, id, account, scope, created) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![hash, id, account, scope, super::token::now_secs() as i64],
            )
            .map_err(internal)?;
        Ok(())
    }

    /// The account and scope of an API key.
    pub(crate) fn api_key(&self, hash: &str) -> Result<Option<(String, String)>, Status> {
        self.conn
            .lock()
            .query_row("SELECT account, scope FROM api_keys WHERE hash = ?1", [hash], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(internal)
    }

    pub(crate) fn delete_api_key(&self, id: &str) -> Result<bool, Status> {
        Ok(self.conn.lock().execute("DELETE FROM api_keys WHERE id = ?1", [id]).map_err(internal)? > 0)
    }

    pub(crate) fn rules(&self) -> Result<Vec<Rule>, Status> {
        let conn = self.conn.lock();
        let mut stmt = conn
            .prepare("SELECT id, service, endpoint, who, access, priority FROM rules ORDER BY priority DESC, id")
            .map_err(internal)?;
        let rows = stmt
            .query_map([], |r| {
                let access: String = r.get(4)?;
                Ok(Rule {
                    id: r.get(0)?,
                    service: r.get(1)?,
                    endpoint: r.get(2)?,
                    who: r.get(3)?,
                    access: access.parse().unwrap_or(Access::Deny),
                    priority: r.get(5)?,
                })
            })
            .map_err(internal)?;
        rows.collect::<rusqlite::Result<_>>().map_err(internal)
    }

    /// Stores a rule, replacing one with the same id.
    pub(crate) fn put_rule(&self, r: &Rule) -> Result<(), Status> {
        self.conn
            .lock()
            .execute(
                "INSERT OR REPLACE INTO rules (id, service, endpoint, who, access, priority) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![r.id, r.service, r.endpoint, r.who, r.access.to_string(), r.priority],
            )
            .map_err(internal)?;
        Ok(())
    }

    pub(crate) fn delete_rule(&self, id: &str) -> Result<bool, Status> {
        Ok(self.conn.lock().execute("DELETE FROM rules WHERE id = ?1", [id]).map_err(internal)? > 0)
    }

    /// The signing keys not yet retired at `now` (older ones are deleted), oldest first.
    pub(crate) fn keys(&self, now: u64) -> Result<Vec<StoredKey>, Status> {
        let conn = self.conn.lock();
        conn.execute("DELETE FROM keys WHERE retire_at IS NOT NULL AND retire_at <= ?1", [now as i64])
            .map_err(internal)?;
        let mut stmt = conn
            .prepare("SELECT kid, private, public, signs_from, retire_at FROM keys ORDER BY signs_from, kid")
            .map_err(internal)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(StoredKey {
                    pair: KeyPair { kid: r.get(0)?, private_der: r.get(1)?, public_x: r.get(2)? },
                    signs_from: r.get::<_, i64>(3)? as u64,
                    retire_at: r.get::<_, Option<i64>>(4)?.map(|t| t as u64),
                })
            })
            .map_err(internal)?;
        rows.collect::<rusqlite::Result<_>>().map_err(internal)
    }

    pub(crate) fn put_key(&self, k: &StoredKey) -> Result<(), Status> {
        self.conn
            .lock()
            .execute(
                "INSERT INTO keys (kid, private, public, signs_from, retire_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    k.pair.kid,
                    k.pair.private_der,
                    k.pair.public_x,
                    k.signs_from as i64,
                    k.retire_at.map(|t| t as i64)
                ],
            )
            .map_err(internal)?;
        Ok(())
    }

    /// Schedules the retirement of every key that has none yet and signs before `before`.
    pub(crate) fn retire_keys(&self, before: u64, at: u64) -> Result<(), Status> {
        self.conn
            .lock()
            .execute(
                "UPDATE keys SET retire_at = ?1 WHERE retire_at IS NULL AND signs_from < ?2",
                params![at as i64, before as i64],
            )
            .map_err(internal)?;
        Ok(())
    }
}
