//! Authentication and authorization (feature `auth`): accounts, OAuth2 tokens, rules, and the
//! layers that enforce them in every service and at the gateway. See `docs/auth.md`.
//!
//! - [`AuthService`]: the auth service (`go.micro.auth`): accounts (users and services,
//!   secrets hashed with Argon2id) in SQLite; short-lived EdDSA-signed JWT access tokens
//!   ([`Claims`]) and single-use refresh tokens by the OAuth2 client-credentials and refresh
//!   grants ([`TokenRequest`]); API keys; the public keys as a JWKS; key rotation with an
//!   overlap; the rules. Served over the broker and over HTTP (`POST /token`,
//!   `GET /.well-known/jwks.json`).
//! - [`AuthClient`]: every service's cached copy of the key set and the rules (tokens are
//!   verified locally, never by a call per request), and its own token.
//! - [`AuthLayer`] (server) and [`TokenLayer`] (client), added together by
//!   [`ServiceBuilder::auth`](crate::ServiceBuilder::auth): 401 without a valid token, 403 when
//!   no [`Rule`] allows the call; the caller's [`Identity`](crate::Identity) in
//!   [`CallContext`](crate::CallContext); the service's own token on its calls.
//!
//! ```
//! use micro::auth::{AuthClient, AuthConfig, AuthService, Credentials, NewAccount, Rule};
//! use micro::prelude::*;
//!
//! # #[micro::main] async fn main() -> micro::Result<()> {
//! let url = "memory://auth-doc";
//! let auth = AuthService::open(AuthConfig::default())?;
//! let _auth_node = auth.start(url).await?;
//! let caller = auth.create_account(NewAccount::service("go.micro.srv.caller").scopes(["greeter"]))?;
//! auth.create_rule(Rule::new("go.micro.srv.greeter", "Say.*", "greeter")).await?;
//!
//! let verify = AuthClient::builder().connect(&Client::connect(url).await?).await?;
//! let _greeter = Service::builder("go.micro.srv.greeter")
//!     .transport(url)
//!     .auth(verify)
//!     .handle("Say.Hello", |ctx: CallContext| async move {
//!         Ok::<_, Status>(format!("hello {}", ctx.identity().map_or("?", |i| i.id.as_str())))
//!     })
//!     .start()
//!     .await?;
//!
//! let anonymous = Client::connect(url).await?;
//! let err = anonymous.call::<_, String, _>("go.micro.srv.greeter", "Say.Hello", &()).await.unwrap_err();
//! assert_eq!(err.status().map(|s| s.code().as_u16()), Some(401));
//!
//! let me = AuthClient::builder().credentials(Credentials::new(&caller.id, &caller.secret))
//!     .connect(&Client::connect(url).await?).await?;
//! let client = Client::builder().transport(url).auth(me).connect().await?;
//! let hello: String = client.call("go.micro.srv.greeter", "Say.Hello", &()).await?;
//! assert_eq!(hello, "hello go.micro.srv.caller");
//! # Ok(()) }
//! ```

mod endpoints;
mod grant;
#[cfg(feature = "gateway")]
mod http;
mod layer;
mod rules;
mod service;
mod store;
mod token;

pub use endpoints::{ById, NewApiKey};
pub use grant::{OAuthError, TokenRequest, TokenResponse, API_KEY, CLIENT_CREDENTIALS, REFRESH_TOKEN};
pub(crate) use layer::REF_SCHEME;
pub use layer::{AuthClient, AuthClientBuilder, AuthLayer, TokenLayer};
pub use rules::{Access, Decision, Policy, Rule, PUBLIC};
pub use service::{
    ApiKey, AuthConfig, AuthService, Credentials, NewAccount, ADMIN_SCOPE, API_KEY_PREFIX, AUTH_SERVICE, CHANGED_TOPIC,
};
pub use store::Account;
pub use token::{token_ref, Claims, TokenError, Verifier, LEEWAY_SECS, MAX_TOKEN_LEN, REF_LEN, REF_UNKNOWN};

#[cfg(feature = "gateway")]
pub(crate) use layer::bearer;
#[cfg(feature = "gateway")]
pub(crate) use service::digest;
