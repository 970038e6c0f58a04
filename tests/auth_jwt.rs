//! A JWT abuse corpus: every token here must be refused by the verifier services use.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use ed25519_dalek::Signer as _;
use hmac::Mac as _;
use micro::auth::{AuthConfig, AuthService, NewAccount, TokenRequest};
use serde_json::{json, Value};

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn part(v: &Value) -> String {
    B64.encode(serde_json::to_vec(v).unwrap())
}

/// A token with this header and these claims, signed by an Ed25519 key of ours (not the
/// auth service's).
fn signed_by_stranger(header: &Value, claims: &Value) -> String {
    let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let input = format!("{}.{}", part(header), part(claims));
    let sig = key.sign(input.as_bytes());
    format!("{input}.{}", B64.encode(sig.to_bytes()))
}

fn stranger_jwk(kid: &str) -> Value {
    let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "kid": kid, "x": B64.encode(key.verifying_key().as_bytes())})
}

fn hs256(header: &Value, claims: &Value, secret: &[u8]) -> String {
    let input = format!("{}.{}", part(header), part(claims));
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", B64.encode(mac.finalize().into_bytes()))
}

#[test]
fn abuse_corpus_is_refused() {
    let auth = AuthService::open(AuthConfig::default()).unwrap();
    let creds = auth.create_account(NewAccount::user("mallory").scopes(["greeter"])).unwrap();
    let good = auth.grant(&TokenRequest::client_credentials(&creds.id, &creds.secret)).unwrap().access_token;
    let verifier = auth.verifier();
    verifier.verify(&good).expect("the control token is accepted");

    let jwks = serde_json::to_value(auth.jwks().unwrap()).unwrap();
    let kid = jwks["keys"][0]["kid"].as_str().unwrap().to_string();
    let x = jwks["keys"][0]["x"].as_str().unwrap().to_string();
    let t = now();
    let claims = json!({"iss": "go.micro.auth", "sub": "mallory", "aud": "micro", "exp": t + 600, "nbf": t - 1,
                        "iat": t, "jti": "x", "scope": "greeter admin"});
    let with = |k: &str, v: Value| {
        let mut c = claims.clone();
        c[k] = v;
        c
    };
    let ed = json!({"alg": "EdDSA", "kid": kid});
    let (gh, gp, gs) = {
        let mut it = good.split('.');
        (it.next().unwrap().to_string(), it.next().unwrap().to_string(), it.next().unwrap().to_string())
    };
    let mut payload: Value = serde_json::from_slice(&B64.decode(&gp).unwrap()).unwrap();
    payload["scope"] = json!("greeter admin");
    let mut flipped = gs.clone().into_bytes();
    flipped[5] = if flipped[5] == b'A' { b'B' } else { b'A' };

    let mut corpus: Vec<(&str, String)> = vec![
        ("alg none", format!("{}.{}.", part(&json!({"alg": "none", "kid": kid})), part(&claims))),
        ("alg none, no signature part", format!("{}.{}", part(&json!({"alg": "none"})), part(&claims))),
        ("alg NONE", format!("{}.{}.", part(&json!({"alg": "NONE", "kid": kid})), part(&claims))),
        (
            "HS256 keyed with the public key bytes",
            hs256(&json!({"alg": "HS256", "kid": kid}), &claims, &B64.decode(&x).unwrap()),
        ),
        ("HS256 keyed with the public key text", hs256(&json!({"alg": "HS256", "kid": kid}), &claims, x.as_bytes())),
        (
            "HS256 keyed with the JWKS",
            hs256(&json!({"alg": "HS256", "kid": kid}), &claims, jwks.to_string().as_bytes()),
        ),
        ("RS256 header", hs256(&json!({"alg": "RS256", "kid": kid}), &claims, x.as_bytes())),
        ("ES256 header", hs256(&json!({"alg": "ES256", "kid": kid}), &claims, x.as_bytes())),
        ("expired", auth.sign(&with("exp", json!(t - 3600))).unwrap()),
        ("not yet valid", auth.sign(&with("nbf", json!(t + 3600))).unwrap()),
        (
            "no exp",
            auth.sign(&{
                let mut c = claims.clone();
                c.as_object_mut().unwrap().remove("exp");
                c
            })
            .unwrap(),
        ),
        (
            "no nbf",
            auth.sign(&{
                let mut c = claims.clone();
                c.as_object_mut().unwrap().remove("nbf");
                c
            })
            .unwrap(),
        ),
        ("wrong issuer", auth.sign(&with("iss", json!("evil.auth"))).unwrap()),
        (
            "no issuer",
            auth.sign(&{
                let mut c = claims.clone();
                c.as_object_mut().unwrap().remove("iss");
                c
            })
            .unwrap(),
        ),
        ("wrong audience", auth.sign(&with("aud", json!("other"))).unwrap()),
        ("audience list without ours", auth.sign(&with("aud", json!(["a", "b"]))).unwrap()),
        ("exp as a string", auth.sign(&with("exp", json!("never"))).unwrap()),
        ("tampered payload", format!("{gh}.{}.{gs}", part(&payload))),
        ("tampered signature", format!("{gh}.{gp}.{}", String::from_utf8(flipped).unwrap())),
        ("signature of another token", format!("{gh}.{}.{gs}", part(&claims))),
        ("signature stripped", format!("{gh}.{gp}.")),
        ("unknown kid", signed_by_stranger(&json!({"alg": "EdDSA", "kid": "stranger"}), &claims)),
        ("our kid, a stranger's signature", signed_by_stranger(&ed, &claims)),
        (
            "no kid",
            auth.sign(&claims)
                .map(|tok| {
                    let mut parts = tok.splitn(2, '.');
                    let _ = parts.next();
                    format!("{}.{}", part(&json!({"alg": "EdDSA"})), parts.next().unwrap())
                })
                .unwrap(),
        ),
        ("kid path traversal", signed_by_stranger(&json!({"alg": "EdDSA", "kid": "../../../../dev/null"}), &claims)),
        (
            "kid SQL injection",
            signed_by_stranger(&json!({"alg": "EdDSA", "kid": format!("{kid}' OR '1'='1")}), &claims),
        ),
        ("kid command injection", signed_by_stranger(&json!({"alg": "EdDSA", "kid": "x|rm -rf /"}), &claims)),
        ("kid huge", signed_by_stranger(&json!({"alg": "EdDSA", "kid": "k".repeat(4000)}), &claims)),
        ("kid not a string", signed_by_stranger(&json!({"alg": "EdDSA", "kid": 5}), &claims)),
        (
            "jku to an attacker's JWKS",
            signed_by_stranger(
                &json!({"alg": "EdDSA", "kid": "stranger", "jku": "http://evil.example/jwks.json"}),
                &claims,
            ),
        ),
        (
            "jku with our kid",
            signed_by_stranger(&json!({"alg": "EdDSA", "kid": kid, "jku": "http://evil.example/jwks.json"}), &claims),
        ),
        (
            "x5u to an attacker's certificate",
            signed_by_stranger(&json!({"alg": "EdDSA", "kid": kid, "x5u": "http://evil.example/cert.pem"}), &claims),
        ),
        (
            "embedded jwk",
            signed_by_stranger(&json!({"alg": "EdDSA", "kid": "stranger", "jwk": stranger_jwk("stranger")}), &claims),
        ),
        (
            "embedded jwk with our kid",
            signed_by_stranger(&json!({"alg": "EdDSA", "kid": kid, "jwk": stranger_jwk(&kid)}), &claims),
        ),
        ("x5c chain", signed_by_stranger(&json!({"alg": "EdDSA", "kid": kid, "x5c": ["MIIB"]}), &claims)),
        (
            "crit extension",
            auth.sign(&claims)
                .map(|_| signed_by_stranger(&json!({"alg": "EdDSA", "kid": kid, "crit": ["exp"]}), &claims))
                .unwrap(),
        ),
        ("oversized (valid signature)", auth.sign(&with("pad", json!("p".repeat(16 * 1024)))).unwrap()),
        ("oversized garbage", "a".repeat(1 << 20)),
        ("empty", String::new()),
        ("two parts", format!("{gh}.{gp}")),
        ("four parts", format!("{good}.x")),
        ("not base64", "!!!.###.$$$".into()),
        ("header not JSON", format!("{}.{gp}.{gs}", B64.encode("not json"))),
        ("JWE-shaped", format!("{}.a.b.c.d", part(&json!({"alg": "dir", "enc": "A128GCM"})))),
    ];
    // Whitespace and case games with the scheme are the layer's business; here: the token.
    corpus.push(("token with a trailing space", format!("{good} ")));
    let mut accepted = Vec::new();
    for (name, token) in &corpus {
        if let Ok(who) = verifier.verify(token) {
            accepted.push(format!("{name} (as {})", who.id));
        }
    }
    eprintln!("JWT abuse corpus: {} tokens, {} accepted", corpus.len(), accepted.len());
    assert!(accepted.is_empty(), "accepted: {accepted:?}");
}
