//! The auth service: accounts, grants, signing keys and rules behind one [`AuthService`], served
//! over the broker as a toolkit service (`go.micro.auth`) and over HTTP (`POST /token`, JWKS).

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use jsonwebtoken::jwk::JwkSet;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use super::grant::{OAuthError, TokenRequest, TokenResponse, API_KEY, CLIENT_CREDENTIALS, REFRESH_TOKEN};
use super::rules::{Access, Policy, Rule, PUBLIC};
use super::store::{Account, Store, StoredKey};
use super::token::{b64, now_secs, Claims, KeyPair, Verifier};
use crate::status::Status;

/// The auth service's default name on the broker.
pub const AUTH_SERVICE: &str = "go.micro.auth";
/// The topic the auth service publishes on when rules or keys change (broadcast).
pub const CHANGED_TOPIC: &str = "go.micro.auth.changed";
/// The scope of the auth service's management endpoints (accounts, rules, keys).
pub const ADMIN_SCOPE: &str = "admin";
/// The prefix of API keys: `mk_<random>`.
pub const API_KEY_PREFIX: &str = "mk_";

/// Settings of an [`AuthService`].
///
/// ```
/// use std::time::Duration;
/// let c = micro::auth::AuthConfig::default().token_ttl(Duration::from_secs(300)).database("auth.db");
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AuthConfig {
    pub(crate) name: String,
    pub(crate) database: Option<PathBuf>,
    pub(crate) issuer: String,
    pub(crate) audience: String,
    pub(crate) token_ttl: Duration,
    pub(crate) refresh_ttl: Duration,
    pub(crate) key_overlap: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            name: AUTH_SERVICE.into(),
            database: None,
            issuer: AUTH_SERVICE.into(),
            audience: "micro".into(),
            token_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            key_overlap: Duration::from_secs(60),
        }
    }
}

impl AuthConfig {
    /// The service name on the broker (default `go.micro.auth`).
    pub fn name(mut self, n: impl Into<String>) -> Self {
        self.name = n.into();
        self
    }

    /// The SQLite file (default: in memory, gone when the process ends).
    pub fn database(mut self, p: impl Into<PathBuf>) -> Self {
        self.database = Some(p.into());
        self
    }

    /// The `iss` of tokens (default `go.micro.auth`).
    pub fn issuer(mut self, i: impl Into<String>) -> Self {
        self.issuer = i.into();
        self
    }

    /// The `aud` of tokens (default `micro`).
    pub fn audience(mut self, a: impl Into<String>) -> Self {
        self.audience = a.into();
        self
    }

    /// Access-token lifetime (default 15 min; at least 1 s).
    pub fn token_ttl(mut self, d: Duration) -> Self {
        self.token_ttl = d.max(Duration::from_secs(1));
        self
    }

    /// Refresh-token lifetime (default 30 days).
    pub fn refresh_ttl(mut self, d: Duration) -> Self {
        self.refresh_ttl = d;
        self
    }

    /// How long a new signing key is published before it signs (default 60 s): services
    /// refresh their key set in that time, so no token is ever signed by a key they lack.
    pub fn key_overlap(mut self, d: Duration) -> Self {
        self.key_overlap = d;
        self
    }
}

/// A new account to create.
///
/// ```
/// let a = micro::auth::NewAccount::service("go.micro.srv.greeter").scopes(["greeter"]);
/// ```
#[derive(Clone, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NewAccount {
    /// The id (client id).
    pub id: String,
    /// `user` or `service`.
    pub kind: String,
    /// Its scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Its secret; generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Metadata.
    #[serde(default)]
    pub metadata: std::collections::BTreeMap<String, String>,
}

impl std::fmt::Debug for NewAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewAccount")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("scopes", &self.scopes)
            .finish()
    }
}

impl NewAccount {
    /// A service account.
    pub fn service(id: impl Into<String>) -> NewAccount {
        NewAccount { id: id.into(), kind: "service".into(), ..Default::default() }
    }

    /// A user account.
    pub fn user(id: impl Into<String>) -> NewAccount {
        NewAccount { id: id.into(), kind: "user".into(), ..Default::default() }
    }

    /// Sets the scopes.
    pub fn scopes<I: IntoIterator<Item = S>, S: Into<String>>(mut self, scopes: I) -> Self {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the secret (default: a random one, returned once).
    pub fn secret(mut self, s: impl Into<String>) -> Self {
        self.secret = Some(s.into());
        self
    }
}

/// Client credentials: an account id and its secret (shown once, when the account is made).
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct Credentials {
    /// The account id.
    pub id: String,
    /// The secret.
    pub secret: String,
}

impl Credentials {
    /// Credentials from an id and a secret.
    pub fn new(id: impl Into<String>, secret: impl Into<String>) -> Credentials {
        Credentials { id: id.into(), secret: secret.into() }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("id", &self.id).finish_non_exhaustive()
    }
}

/// A new API key: its id (to delete it) and the key (shown once).
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApiKey {
    /// The id.
    pub id: String,
    /// The key, `mk_...`.
    pub key: String,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey").field("id", &self.id).finish_non_exhaustive()
    }
}

/// A random secret: 32 bytes, base64url.
pub(crate) fn random_secret() -> String {
    b64(&rand::random::<[u8; 32]>())
}

/// SHA-256 of an opaque high-entropy value (refresh tokens, API keys), hex.
pub(crate) fn digest(value: &str) -> String {
    let d = sha2::Sha256::digest(value.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// The auth service: keeps accounts, rules and signing keys, grants tokens. Cheap to clone.
/// Serve it on the broker with [`start`](Self::start) (or add its endpoints to a builder with
/// [`service`](Self::service)), and over HTTP with `configure` (feature `gateway`).
///
/// ```
/// use micro::auth::{AuthConfig, AuthService, NewAccount, TokenRequest};
/// let auth = AuthService::open(AuthConfig::default())?;
/// let creds = auth.create_account(NewAccount::service("go.micro.srv.greeter").scopes(["greeter"]))?;
/// let token = auth.grant(&TokenRequest::client_credentials(&creds.id, &creds.secret)).unwrap();
/// assert_eq!(token.scope, "greeter");
/// let who = auth.verifier().verify(&token.access_token).unwrap();
/// assert_eq!(who.id, "go.micro.srv.greeter");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct AuthService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    config: AuthConfig,
    verifier: Arc<Verifier>,
    notifier: OnceLock<crate::Client>,
    /// A valid secret hash to verify against when the account is unknown, so that the answer
    /// takes as long either way.
    decoy: String,
}

impl AuthService {
    /// Opens the store (creating it and a first signing key when new).
    pub fn open(config: AuthConfig) -> crate::Result<AuthService> {
        let store = Store::open(config.database.as_deref())?;
        let verifier = Arc::new(Verifier::new(&config.issuer, &config.audience));
        let decoy = hash_secret(&random_secret()).map_err(|e| crate::Error::config(e.detail().to_string()))?;
        let svc = AuthService { inner: Arc::new(Inner { store, config, verifier, notifier: OnceLock::new(), decoy }) };
        if svc.signing_key().map_err(|e| crate::Error::config(e.detail().to_string()))?.is_none() {
            let now = now_secs();
            svc.inner
                .store
                .put_key(&StoredKey { pair: KeyPair::generate(), signs_from: now, retire_at: None })
                .map_err(|e| crate::Error::config(e.detail().to_string()))?;
        }
        svc.refresh_verifier();
        Ok(svc)
    }

    /// Its settings.
    pub fn config(&self) -> &AuthConfig {
        &self.inner.config
    }

    /// A verifier holding this service's current key set (for a process that runs the auth
    /// service itself).
    pub fn verifier(&self) -> &Verifier {
        &self.inner.verifier
    }

    pub(crate) fn shared_verifier(&self) -> Arc<Verifier> {
        self.inner.verifier.clone()
    }

    fn refresh_verifier(&self) {
        if let Ok(jwks) = self.jwks() {
            self.inner.verifier.set_jwks(&jwks);
        }
    }

    /// Creates an account; returns its credentials (the secret only this once).
    pub fn create_account(&self, new: NewAccount) -> Result<Credentials, Status> {
        let ok_id = !new.id.is_empty()
            && new.id.len() <= 255
            && new.id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b));
        if !ok_id {
            return Err(Status::bad_request("an account id is 1 to 255 letters, digits, '.', '-', '_' or '@'"));
        }
        if !matches!(new.kind.as_str(), "user" | "service") {
            return Err(Status::bad_request("an account kind is user or service"));
        }
        if new.scopes.iter().any(|s| s.is_empty() || !s.bytes().all(|b| b.is_ascii_graphic() && b != b'"')) {
            return Err(Status::bad_request("scopes are non-empty words of visible characters"));
        }
        let secret = new.secret.clone().unwrap_or_else(random_secret);
        if secret.len() < 8 {
            return Err(Status::bad_request("a secret has at least 8 characters"));
        }
        let account = Account {
            id: new.id.clone(),
            kind: new.kind,
            scopes: new.scopes,
            metadata: new.metadata,
            created: now_secs(),
        };
        self.inner.store.create_account(&account, &hash_secret(&secret)?)?;
        Ok(Credentials { id: new.id, secret })
    }

    /// Every account (without secrets).
    pub fn accounts(&self) -> Result<Vec<Account>, Status> {
        self.inner.store.accounts()
    }

    /// Deletes an account, its refresh tokens and API keys. Tokens already issued stay valid
    /// until they expire (keep their lifetime short).
    pub fn delete_account(&self, id: &str) -> Result<bool, Status> {
        self.inner.store.delete_account(id)
    }

    /// Creates an admin account when no account has the admin scope yet; returns its
    /// credentials then (print them once), `None` otherwise.
    pub fn bootstrap_admin(&self, id: &str) -> Result<Option<Credentials>, Status> {
        if self.accounts()?.iter().any(|a| a.scopes.iter().any(|s| s == ADMIN_SCOPE)) {
            return Ok(None);
        }
        self.create_account(NewAccount::user(id).scopes([ADMIN_SCOPE])).map(Some)
    }

    /// Issues an API key for an account, with some of its scopes (default all).
    pub fn create_api_key(&self, account: &str, scope: Option<&str>) -> Result<ApiKey, Status> {
        let (acct, _) =
            self.inner.store.account(account)?.ok_or_else(|| Status::not_found(format!("no account {account}")))?;
        let scope = granted_scope(&acct, scope).map_err(|e| Status::bad_request(e.error_description))?;
        let key = format!("{API_KEY_PREFIX}{}", random_secret());
        let id = crate::message::new_id();
        self.inner.store.put_api_key(&digest(&key), &id, account, &scope)?;
        Ok(ApiKey { id, key })
    }

    /// Deletes an API key by id.
    pub fn delete_api_key(&self, id: &str) -> Result<bool, Status> {
        self.inner.store.delete_api_key(id)
    }

    /// The rules, highest priority first.
    pub fn rules(&self) -> Result<Vec<Rule>, Status> {
        self.inner.store.rules()
    }

    /// Stores a rule (an id is made when it has none) and tells the services.
    pub async fn create_rule(&self, mut rule: Rule) -> Result<Rule, Status> {
        rule.validate().map_err(Status::bad_request)?;
        if rule.id.is_empty() {
            rule.id = crate::message::new_id();
        }
        self.inner.store.put_rule(&rule)?;
        self.notify().await;
        Ok(rule)
    }

    /// Deletes a rule and tells the services.
    pub async fn delete_rule(&self, id: &str) -> Result<bool, Status> {
        let gone = self.inner.store.delete_rule(id)?;
        self.notify().await;
        Ok(gone)
    }

    /// The public keys (JWKS): the signing key, keys published ahead of signing, and retired
    /// keys whose tokens may still be valid.
    pub fn jwks(&self) -> Result<JwkSet, Status> {
        let keys = self.inner.store.keys(now_secs())?;
        Ok(JwkSet { keys: keys.iter().map(|k| k.pair.jwk()).collect() })
    }

    /// The key signing now: the newest whose time has come.
    fn signing_key(&self) -> Result<Option<KeyPair>, Status> {
        let now = now_secs();
        Ok(self.inner.store.keys(now)?.into_iter().rfind(|k| k.signs_from <= now).map(|k| k.pair))
    }

    /// Starts a key rotation: a new key is published now and signs after the overlap; the keys
    /// before it leave the key set once the tokens they signed have expired. Returns the new
    /// key's id.
    pub async fn rotate_keys(&self) -> Result<String, Status> {
        let c = &self.inner.config;
        let now = now_secs();
        let signs_from = now + c.key_overlap.as_secs();
        let pair = KeyPair::generate();
        let kid = pair.kid.clone();
        self.inner.store.put_key(&StoredKey { pair, signs_from, retire_at: None })?;
        // Tokens signed by the old keys until `signs_from` live `token_ttl` longer (+ leeway).
        let retire = signs_from + c.token_ttl.as_secs() + super::token::LEEWAY_SECS + 1;
        self.inner.store.retire_keys(signs_from, retire)?;
        self.refresh_verifier();
        self.notify().await;
        Ok(kid)
    }

    /// Tells the services that rules or keys changed (once started on a broker).
    async fn notify(&self) {
        self.refresh_verifier();
        if let Some(client) = self.inner.notifier.get() {
            if let Err(e) = client.publish(CHANGED_TOPIC, &()).await {
                tracing::warn!(error = %e, "could not announce an auth change");
            }
        }
    }

    /// Grants a token (RFC 6749): client credentials, refresh, or API-key exchange. Checking a
    /// secret is deliberately slow (Argon2id); run it off the async threads.
    pub fn grant(&self, req: &TokenRequest) -> Result<TokenResponse, OAuthError> {
        let store = &self.inner.store;
        let (account, scope, with_refresh) = match req.grant_type.as_str() {
            CLIENT_CREDENTIALS => {
                let account = self.authenticate(req)?;
                let scope = granted_scope(&account, req.scope.as_deref())?;
                (account, scope, true)
            }
            REFRESH_TOKEN => {
                let token = req
                    .refresh_token
                    .as_deref()
                    .ok_or_else(|| OAuthError::invalid_request("refresh_token is required"))?;
                let (id, scope, expires) = store
                    .take_refresh(&digest(token))?
                    .ok_or_else(|| OAuthError::invalid_grant("unknown refresh token"))?;
                if expires < now_secs() {
                    return Err(OAuthError::invalid_grant("the refresh token expired"));
                }
                if req.client_id.is_some() {
                    let client = self.authenticate(req)?;
                    if client.id != id {
                        return Err(OAuthError::invalid_grant("the refresh token belongs to another client"));
                    }
                }
                let (account, _) =
                    store.account(&id)?.ok_or_else(|| OAuthError::invalid_grant("the account is gone"))?;
                let asked = req.scope.as_deref().unwrap_or(&scope);
                if asked.split_ascii_whitespace().any(|s| !scope.split_ascii_whitespace().any(|g| g == s)) {
                    return Err(OAuthError::invalid_scope("a refresh cannot widen the scope"));
                }
                let scope = granted_scope(&account, Some(asked))?;
                (account, scope, true)
            }
            API_KEY => {
                let key = req.api_key.as_deref().ok_or_else(|| OAuthError::invalid_request("api_key is required"))?;
                let (id, scope) =
                    store.api_key(&digest(key))?.ok_or_else(|| OAuthError::invalid_grant("unknown API key"))?;
                let (account, _) =
                    store.account(&id)?.ok_or_else(|| OAuthError::invalid_grant("the account is gone"))?;
                let scope = granted_scope(&account, Some(&scope))?;
                (account, scope, false)
            }
            "" => return Err(OAuthError::invalid_request("grant_type is required")),
            other => return Err(OAuthError::unsupported_grant_type(format!("grant type {other:?} is not supported"))),
        };
        self.issue(&account, scope, with_refresh)
    }

    /// Checks client id and secret; an unknown id costs a hash check too.
    fn authenticate(&self, req: &TokenRequest) -> Result<Account, OAuthError> {
        let (Some(id), Some(secret)) = (req.client_id.as_deref(), req.client_secret.as_deref()) else {
            return Err(OAuthError::invalid_client("client_id and client_secret are required"));
        };
        let found = self.inner.store.account(id)?;
        let hash = found.as_ref().map_or(self.inner.decoy.as_str(), |(_, h)| h.as_str());
        let ok =
            PasswordHash::new(hash).is_ok_and(|h| Argon2::default().verify_password(secret.as_bytes(), &h).is_ok());
        match found {
            Some((account, _)) if ok => Ok(account),
            _ => Err(OAuthError::invalid_client("unknown client or wrong secret")),
        }
    }

    /// Signs an access token (and stores a refresh token) for an account.
    fn issue(&self, account: &Account, scope: String, with_refresh: bool) -> Result<TokenResponse, OAuthError> {
        let c = &self.inner.config;
        let key = self.signing_key()?.ok_or_else(|| OAuthError::from(Status::internal("no signing key")))?;
        let now = now_secs();
        let ttl = c.token_ttl.as_secs();
        let claims = Claims {
            iss: c.issuer.clone(),
            sub: account.id.clone(),
            aud: c.audience.clone(),
            exp: now + ttl,
            nbf: now,
            iat: now,
            jti: crate::message::new_id(),
            scope: scope.clone(),
            typ: Some(account.kind.clone()),
        };
        let access_token = key.sign(&claims).map_err(|e| OAuthError::from(Status::internal(e.to_string())))?;
        let refresh_token = if with_refresh {
            let token = random_secret();
            self.inner.store.put_refresh(&digest(&token), &account.id, &scope, now + c.refresh_ttl.as_secs())?;
            Some(token)
        } else {
            None
        };
        Ok(TokenResponse { access_token, token_type: "Bearer".into(), expires_in: ttl, scope, refresh_token })
    }

    /// Signs any claims with the current signing key, as they are: for tools and tests that
    /// need a token the grants would not make (a process holding the `AuthService` holds its
    /// keys anyway). Services accept it only if its claims pass their checks.
    pub fn sign(&self, claims: &serde_json::Value) -> Result<String, Status> {
        let key = self.signing_key()?.ok_or_else(|| Status::internal("no signing key"))?;
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &jsonwebtoken::EncodingKey::from_ed_der(&key.private_der))
            .map_err(|e| Status::internal(e.to_string()))
    }

    /// The rules of the auth service's own endpoints: `Auth.*` public, the rest for admins.
    pub(crate) fn own_policy(&self) -> Policy {
        let name = &self.inner.config.name;
        Policy::new(vec![
            Rule::new(name.as_str(), "Auth.*", PUBLIC).priority(1),
            Rule::new(name.as_str(), "*", ADMIN_SCOPE),
            Rule::new(name.as_str(), "*", "*").access(Access::Deny).priority(-1),
        ])
    }

    /// Remembers the client that announces changes (the running service's).
    pub(crate) fn set_notifier(&self, client: crate::Client) {
        let _ = self.inner.notifier.set(client);
    }
}

/// The scopes granted: those asked for, each the account's, or all of the account's.
fn granted_scope(account: &Account, asked: Option<&str>) -> Result<String, OAuthError> {
    match asked.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(account.scopes.join(" ")),
        Some(asked) => {
            let mut out = Vec::new();
            for s in asked.split_ascii_whitespace() {
                if !account.scopes.iter().any(|a| a == s) {
                    return Err(OAuthError::invalid_scope(format!("scope {s:?} is not granted to this client")));
                }
                if !out.contains(&s) {
                    out.push(s);
                }
            }
            Ok(out.join(" "))
        }
    }
}

fn hash_secret(secret: &str) -> Result<String, Status> {
    Argon2::default()
        .hash_password(secret.as_bytes(), &SaltString::generate(&mut OsRng))
        .map(|h| h.to_string())
        .map_err(|e| Status::internal(format!("cannot hash a secret: {e}")))
}
