//! Access tokens: the [`Claims`] the auth service signs (EdDSA, Ed25519 keys), the signing
//! keys and their JWKS, and the [`Verifier`] every service checks tokens with, locally, from a
//! cached key set.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use base64::Engine as _;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::context::Identity;

/// The longest token accepted, in bytes; longer ones are refused before any parsing.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Clock skew tolerated on `exp` and `nbf`, in seconds (RFC 8725 advises little).
pub const LEEWAY_SECS: u64 = 30;

/// The claims of an access token (RFC 9068 names).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Claims {
    /// Issuer: the auth service.
    pub iss: String,
    /// Subject: the account id.
    pub sub: String,
    /// Audience.
    pub aud: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Not valid before, seconds since the Unix epoch.
    pub nbf: u64,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Token id.
    pub jti: String,
    /// Granted scopes, space-separated.
    #[serde(default)]
    pub scope: String,
    /// Account kind: `user` or `service`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub typ: Option<String>,
}

impl Claims {
    /// The identity these claims name.
    pub fn identity(&self) -> Identity {
        let mut i = Identity::new(self.sub.clone(), self.scope.split_ascii_whitespace());
        i.kind = self.typ.clone();
        i
    }
}

/// Why a token was refused. Every kind answers 401.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Over [`MAX_TOKEN_LEN`].
    #[error("token too large")]
    TooLarge,
    /// Not a JWS in compact form, or its header is not acceptable (`alg` other than EdDSA,
    /// `jku`, `x5u`, `jwk`, `x5c`, `crit`, no `kid`).
    #[error("malformed token: {0}")]
    Malformed(String),
    /// Signed with a key not in the key set.
    #[error("unknown signing key {0:?}")]
    UnknownKey(String),
    /// The signature or a claim (exp, nbf, iss, aud) did not check.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// A token reference (`Authorization: Ref <digest>`) this node has not verified the token
    /// of, or whose token has expired: the caller sends the whole token again.
    #[error("{REF_UNKNOWN}")]
    UnknownRef,
}

/// The detail of the 401 answering a token reference this node does not know.
pub const REF_UNKNOWN: &str = "token reference unknown here: send the token (Authorization: Bearer)";

/// The length of a token reference: 16 bytes, base64url without padding.
pub const REF_LEN: usize = 22;

/// The reference that stands for a token on the wire once a node has verified it: the first
/// 16 bytes of its SHA-256, base64url without padding (22 characters). Sent as
/// `Authorization: Ref <reference>` (`docs/protocol.md` §3.1.1).
///
/// ```
/// let r = micro::auth::token_ref("eyJhbGciOiJFZERTQSJ9.e30.c2ln");
/// assert_eq!(r.len(), micro::auth::REF_LEN);
/// assert_eq!(r, micro::auth::token_ref("eyJhbGciOiJFZERTQSJ9.e30.c2ln"));
/// ```
pub fn token_ref(token: &str) -> String {
    b64(&ref_digest(token))
}

fn ref_digest(token: &str) -> [u8; 16] {
    use sha2::Digest as _;
    let hash = sha2::Sha256::digest(token.as_bytes());
    let mut digest = [0u8; 16];
    digest.copy_from_slice(&hash[..16]);
    digest
}

/// The 16 bytes a reference names, if it is one.
fn parse_ref(reference: &str) -> Option<[u8; 16]> {
    if reference.len() != REF_LEN {
        return None;
    }
    let mut digest = [0u8; 16];
    let n = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode_slice(reference, &mut digest).ok()?;
    (n == 16).then_some(digest)
}

/// Seconds since the Unix epoch.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// An Ed25519 signing key: its id, its private key (PKCS#8 DER) and its public key (`x` of the
/// JWK, base64url).
#[derive(Clone)]
pub(crate) struct KeyPair {
    pub(crate) kid: String,
    pub(crate) private_der: Vec<u8>,
    pub(crate) public_x: String,
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl KeyPair {
    /// A fresh key from the thread's CSPRNG.
    pub(crate) fn generate() -> KeyPair {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let seed: [u8; 32] = rand::random();
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        let der = key.to_pkcs8_der().expect("an Ed25519 key encodes as PKCS#8").as_bytes().to_vec();
        let public_x = b64(key.verifying_key().as_bytes());
        KeyPair { kid: crate::message::new_id(), private_der: der, public_x }
    }

    /// Signs claims into a compact JWS.
    pub(crate) fn sign(&self, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        header.typ = Some("at+jwt".into());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(&self.private_der))
    }

    /// The public key as a JWK.
    pub(crate) fn jwk(&self) -> Jwk {
        public_jwk(&self.kid, &self.public_x)
    }
}

/// A public Ed25519 key as a JWK (`kty` OKP, `crv` Ed25519, `alg` EdDSA, `use` sig).
pub(crate) fn public_jwk(kid: &str, x: &str) -> Jwk {
    serde_json::from_value(serde_json::json!({
        "kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"
    }))
    .expect("a well-formed OKP JWK")
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Checks tokens locally against a cached key set (JWKS): EdDSA only, `kid` required and known,
/// `exp`, `nbf`, `iss` and `aud` checked with [`LEEWAY_SECS`] of leeway. Tokens that passed are
/// remembered until they expire, so a repeated token costs a lookup, not a signature check.
///
/// ```
/// use micro::auth::Verifier;
/// let v = Verifier::new("go.micro.auth", "micro");
/// assert!(v.verify("not-a-token").is_err());
/// ```
pub struct Verifier {
    validation: Validation,
    keys: ArcSwap<HashMap<String, DecodingKey>>,
    seen: Mutex<Seen>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.validation.iss)
            .field("audience", &self.validation.aud)
            .field("keys", &self.keys.load().len())
            .finish()
    }
}

/// Verified tokens: who each names and when it expires. Only verified tokens are added, so an
/// outsider cannot choose the keys; the fast seeded hasher keeps a lookup of a ~400-byte token
/// cheap on every request. `refs` holds the same tokens by reference ([`token_ref`]).
#[derive(Default)]
struct Seen {
    tokens: HashMap<Box<str>, (Arc<Identity>, u64), foldhash::fast::RandomState>,
    refs: HashMap<[u8; 16], (Arc<Identity>, u64), foldhash::fast::RandomState>,
}

impl Seen {
    fn clear(&mut self) {
        self.tokens.clear();
        self.refs.clear();
    }
}

/// How many verified tokens are remembered before the memory is cleared.
const SEEN_MAX: usize = 10_000;

impl Verifier {
    /// A verifier for tokens from `issuer` meant for `audience`, with no keys yet.
    pub fn new(issuer: &str, audience: &str) -> Verifier {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.algorithms = vec![Algorithm::EdDSA];
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        Verifier { validation, keys: Default::default(), seen: Default::default() }
    }

    /// Replaces the key set with the Ed25519 keys of `jwks` (other keys are ignored); returns
    /// how many were taken. Remembered tokens are forgotten, so a removed key stops counting
    /// at once.
    pub fn set_jwks(&self, jwks: &JwkSet) -> usize {
        let mut keys = HashMap::new();
        for jwk in &jwks.keys {
            let ok_kind = matches!(&jwk.algorithm, jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(p)
                if p.curve == jsonwebtoken::jwk::EllipticCurve::Ed25519);
            let Some(kid) = jwk.common.key_id.clone() else { continue };
            if !ok_kind {
                continue;
            }
            if let Ok(key) = DecodingKey::from_jwk(jwk) {
                keys.insert(kid, key);
            }
        }
        let n = keys.len();
        let same = {
            let old = self.keys.load();
            old.len() == n && keys.keys().all(|k| old.contains_key(k))
        };
        self.keys.store(Arc::new(keys));
        if !same {
            self.seen.lock().clear();
        }
        n
    }

    /// True when the key set holds this key id.
    pub fn has_key(&self, kid: &str) -> bool {
        self.keys.load().contains_key(kid)
    }

    /// The key ids held.
    pub fn key_ids(&self) -> Vec<String> {
        self.keys.load().keys().cloned().collect()
    }

    /// Verifies a token (without the `Bearer ` prefix) and returns who it names.
    pub fn verify(&self, token: &str) -> Result<Arc<Identity>, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLarge);
        }
        let now = now_secs();
        if let Some((who, exp)) = self.seen.lock().tokens.get(token) {
            if now <= exp + LEEWAY_SECS {
                return Ok(who.clone());
            }
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Malformed(format!("algorithm {:?} is not accepted", header.alg)));
        }
        if header.jku.is_some() || header.x5u.is_some() || header.jwk.is_some() || header.x5c.is_some() {
            return Err(TokenError::Malformed("keys named in the token (jku, x5u, jwk, x5c) are not accepted".into()));
        }
        if header.crit.is_some() {
            return Err(TokenError::Malformed("critical header extensions are not supported".into()));
        }
        let kid = header.kid.ok_or_else(|| TokenError::Malformed("no key id (kid)".into()))?;
        let keys = self.keys.load();
        let key = keys.get(&kid).ok_or_else(|| TokenError::UnknownKey(kid.chars().take(64).collect()))?;
        let data = jsonwebtoken::decode::<Claims>(token, key, &self.validation)
            .map_err(|e| TokenError::Invalid(e.to_string()))?;
        let who = Arc::new(data.claims.identity());
        let digest = ref_digest(token);
        let mut seen = self.seen.lock();
        if seen.tokens.len() >= SEEN_MAX {
            seen.clear();
        }
        seen.tokens.insert(token.into(), (who.clone(), data.claims.exp));
        seen.refs.insert(digest, (who.clone(), data.claims.exp));
        Ok(who)
    }

    /// Who a token reference ([`token_ref`]) names: the identity of a token this verifier has
    /// verified and still remembers, while the token is valid. [`TokenError::UnknownRef`]
    /// otherwise (never seen here, expired, forgotten since, or not a reference at all), and
    /// the caller sends the whole token again.
    ///
    /// ```
    /// use micro::auth::{token_ref, TokenError, Verifier};
    /// let v = Verifier::new("go.micro.auth", "micro");
    /// assert_eq!(v.verify_ref(&token_ref("a.b.c")).unwrap_err(), TokenError::UnknownRef);
    /// ```
    pub fn verify_ref(&self, reference: &str) -> Result<Arc<Identity>, TokenError> {
        let digest = parse_ref(reference).ok_or(TokenError::UnknownRef)?;
        match self.seen.lock().refs.get(&digest) {
            Some((who, exp)) if now_secs() <= exp + LEEWAY_SECS => Ok(who.clone()),
            _ => Err(TokenError::UnknownRef),
        }
    }
}
