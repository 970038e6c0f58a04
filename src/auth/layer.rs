//! What every service runs: the [`AuthClient`] (a cached key set and rule set, refreshed when
//! the auth service announces a change, and the service's own token), the server layer that
//! checks each request ([`AuthLayer`]) and the client layer that sends the service's token.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, LocalBoxFuture};
use futures::StreamExt;
use jsonwebtoken::jwk::JwkSet;
use parking_lot::Mutex;

use super::grant::{OAuthError, TokenRequest, TokenResponse};
use super::rules::{Decision, Policy, Rule};
use super::service::{Credentials, AUTH_SERVICE, CHANGED_TOPIC};
use super::token::{token_ref, TokenError, Verifier};
use crate::broker::SubscribeOptions;
use crate::client::{CallOptions, Client};
use crate::context::{CallContext, Identity};
use crate::message::headers;
use crate::middleware::{Answer, ClientMiddleware, ClientNext, Middleware, Next, Outcome, Outgoing};
use crate::server::Request;
use crate::status::Status;

/// Fetches the key set again after this long at most (besides every announced change).
const REFETCH_EVERY: Duration = Duration::from_secs(300);
/// A token naming an unknown key triggers a refetch at most this often.
const UNKNOWN_KEY_REFETCH: Duration = Duration::from_millis(500);

type Refetch = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// The server layer: checks the `Authorization` header of every request against the key set
/// and the rules, answers 401 (no valid token where one is needed) or 403 (no rule allows it),
/// and makes the caller's [`Identity`] available in the [`CallContext`](crate::CallContext).
/// Events pass unchecked (the broker's permissions guard who may publish).
///
/// [`ServiceBuilder::auth`](crate::ServiceBuilder::auth) runs it inline, before any middleware;
/// [`AuthClient::layer`] gives one to place among your own layers.
#[derive(Clone)]
pub struct AuthLayer {
    verifier: Arc<Verifier>,
    policy: Arc<Policy>,
    refetch: Option<Refetch>,
}

impl std::fmt::Debug for AuthLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthLayer").field("verifier", &self.verifier).finish_non_exhaustive()
    }
}

/// How an `Authorization` value names a token by reference: `Ref <digest>` ([`token_ref`]).
pub(crate) const REF_SCHEME: &str = "Ref ";

/// The bearer token in an `Authorization` value.
pub(crate) fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl AuthLayer {
    pub(crate) fn new(verifier: Arc<Verifier>, policy: Arc<Policy>, refetch: Option<Refetch>) -> AuthLayer {
        AuthLayer { verifier, policy, refetch }
    }

    /// Who a request's `Authorization` names: `Ok(None)` without one, 401 for a bad one. A
    /// token reference (`Ref <digest>`) names the identity of a token verified here before.
    async fn identify(&self, authorization: Option<&str>) -> Result<Option<Arc<Identity>>, Status> {
        let Some(value) = authorization else { return Ok(None) };
        if let Some(reference) = value.strip_prefix(REF_SCHEME) {
            return self.verifier.verify_ref(reference).map(Some).map_err(|e| Status::unauthorized(e.to_string()));
        }
        let Some(token) = bearer(value) else {
            return Err(Status::unauthorized("the Authorization header must be `Bearer <token>` or `Ref <reference>`"));
        };
        match self.verifier.verify(token) {
            Ok(who) => Ok(Some(who)),
            Err(TokenError::UnknownKey(_)) if self.refetch.is_some() => {
                // A key published since the last fetch: fetch once more, then decide.
                if let Some(refetch) = &self.refetch {
                    refetch().await;
                }
                self.verifier.verify(token).map(Some).map_err(|e| Status::unauthorized(e.to_string()))
            }
            Err(e) => Err(Status::unauthorized(e.to_string())),
        }
    }

    /// Lets a request through, with the caller's identity set in `ctx`, or answers 401 (no
    /// valid token where one is needed) or 403 (no rule allows the caller). Waits only when a
    /// token names a key not yet known (the key set is fetched again).
    pub(crate) async fn admit(&self, ctx: &CallContext) -> Result<(), Status> {
        let who = self.identify(ctx.authorization.as_deref()).await?;
        match self.policy.decide(&ctx.service, &ctx.endpoint, who.as_deref()) {
            Decision::Allow => {
                if let Some(who) = who {
                    ctx.set_identity(who);
                }
                Ok(())
            }
            _ if who.is_none() => {
                Err(Status::unauthorized(format!("{} needs a valid token (Authorization: Bearer)", ctx.endpoint)))
            }
            _ => Err(Status::forbidden(format!("no rule allows this caller to call {}", ctx.endpoint))),
        }
    }
}

/// The same check as a middleware, for a service that places it among its own layers
/// (`.wrap(auth.layer())`); [`ServiceBuilder::auth`](crate::ServiceBuilder::auth) runs it
/// inline, before any layer.
impl Middleware for AuthLayer {
    fn call(&self, req: Request, next: Next) -> LocalBoxFuture<'static, Outcome> {
        if req.is_event() {
            return next.run(req);
        }
        let layer = self.clone();
        Box::pin(async move {
            layer.admit(&req.ctx).await?;
            next.run(req).await
        })
    }
}

/// A token held by a client, with when to renew it.
#[derive(Clone)]
struct Held {
    response: TokenResponse,
    /// `Bearer <access token>`, ready for the header.
    header: String,
    /// `Ref <reference>`: what calls send instead once a node has accepted the token.
    by_ref: String,
    /// A node accepted the token (answered a call that carried it with anything but 401).
    accepted: bool,
    /// Tells this token from the ones held before and after it.
    serial: u64,
    renew_at: Instant,
}

/// The `Authorization` value a call carries for the process's own token.
#[derive(Debug)]
pub(crate) struct CallToken {
    /// `Bearer <token>` or `Ref <reference>`.
    pub(crate) header: String,
    /// Set when `header` is the whole token: the token [`AuthClient::accepted`] names.
    pub(crate) full: Option<u64>,
}

/// Talks to the auth service for a service or gateway: keeps its key set (JWKS) and rules
/// cached and fresh (refetched when the auth service announces a change on
/// [`CHANGED_TOPIC`], when a token names a key not yet known, and every few minutes), and, with
/// credentials, the service's own access token (renewed before it expires). Cheap to clone.
///
/// ```no_run
/// # use micro::prelude::*;
/// use micro::auth::{AuthClient, Credentials};
/// # #[actix::main] async fn main() -> micro::Result<()> {
/// let client = Client::connect("nats://127.0.0.1:4222").await?;
/// let auth = AuthClient::builder()
///     .credentials(Credentials::new("go.micro.srv.greeter", std::env::var("GREETER_SECRET").unwrap()))
///     .connect(&client)
///     .await?;
/// Service::builder("go.micro.srv.greeter")
///     .transport("nats://127.0.0.1:4222")
///     .auth(auth) // 401/403 on its endpoints, its own token on its calls
///     .handle("Say.Hello", |ctx: CallContext| async move {
///         Ok::<_, Status>(format!("hello {}", ctx.identity().map_or("?", |i| i.id.as_str())))
///     })
///     .run()
///     .await
/// # }
/// ```
#[derive(Clone)]
pub struct AuthClient {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    client: Client,
    service: String,
    verifier: Arc<Verifier>,
    policy: Arc<Policy>,
    credentials: Option<Credentials>,
    scope: Option<String>,
    held: Mutex<Option<Held>>,
    renewing: tokio::sync::Mutex<()>,
    last_key_refetch: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for AuthClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthClient")
            .field("service", &self.inner.service)
            .field("account", &self.inner.credentials.as_ref().map(|c| &c.id))
            .field("verifier", &self.inner.verifier)
            .finish()
    }
}

/// Builds an [`AuthClient`].
#[derive(Debug, Clone)]
pub struct AuthClientBuilder {
    service: String,
    issuer: String,
    audience: String,
    credentials: Option<Credentials>,
    scope: Option<String>,
}

impl AuthClientBuilder {
    /// The auth service's name (default `go.micro.auth`).
    pub fn service(mut self, s: impl Into<String>) -> Self {
        self.service = s.into();
        self
    }

    /// The `iss` tokens must have (default `go.micro.auth`).
    pub fn issuer(mut self, s: impl Into<String>) -> Self {
        self.issuer = s.into();
        self
    }

    /// The `aud` tokens must have (default `micro`).
    pub fn audience(mut self, s: impl Into<String>) -> Self {
        self.audience = s.into();
        self
    }

    /// This process's own account, for the token its calls carry (client credentials).
    pub fn credentials(mut self, c: Credentials) -> Self {
        self.credentials = Some(c);
        self
    }

    /// The scopes to ask for (default: all of the account's).
    pub fn scope(mut self, s: impl Into<String>) -> Self {
        self.scope = Some(s.into());
        self
    }

    /// Fetches the key set and rules through `client` (failing when the auth service does not
    /// answer), subscribes to changes, and gets the first token when there are credentials.
    pub async fn connect(self, client: &Client) -> crate::Result<AuthClient> {
        let inner = Arc::new(ClientInner {
            client: client.clone(),
            service: self.service,
            verifier: Arc::new(Verifier::new(&self.issuer, &self.audience)),
            policy: Arc::new(Policy::default()),
            credentials: self.credentials,
            scope: self.scope,
            held: Mutex::new(None),
            renewing: tokio::sync::Mutex::new(()),
            last_key_refetch: Mutex::new(None),
        });
        let auth = AuthClient { inner };
        let mut changes = client.broker().subscribe(CHANGED_TOPIC, SubscribeOptions::broadcast()).await?;
        auth.refresh().await?;
        if auth.inner.credentials.is_some() {
            auth.token().await?;
        }
        let weak = Arc::downgrade(&auth.inner);
        actix_rt::spawn(async move {
            loop {
                let next = tokio::time::timeout(REFETCH_EVERY, changes.next()).await;
                if matches!(next, Ok(None)) {
                    break;
                }
                let Some(inner) = weak.upgrade() else { break };
                if let Err(e) = (AuthClient { inner }).refresh().await {
                    tracing::warn!(error = %e, "could not refresh the key set and rules");
                }
            }
        });
        Ok(auth)
    }
}

impl AuthClient {
    /// A builder with the defaults.
    pub fn builder() -> AuthClientBuilder {
        AuthClientBuilder {
            service: AUTH_SERVICE.into(),
            issuer: AUTH_SERVICE.into(),
            audience: "micro".into(),
            credentials: None,
            scope: None,
        }
    }

    /// The cached key set's verifier.
    pub fn verifier(&self) -> &Verifier {
        &self.inner.verifier
    }

    /// The cached rules.
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// Fetches the key set and the rules now.
    pub async fn refresh(&self) -> crate::Result<()> {
        self.refresh_keys().await?;
        let rules: Vec<Rule> = self.inner.client.call(&self.inner.service, "Auth.Rules", &()).await?;
        self.inner.policy.replace(rules);
        Ok(())
    }

    async fn refresh_keys(&self) -> crate::Result<()> {
        let jwks: JwkSet = self.inner.client.call(&self.inner.service, "Auth.Jwks", &()).await?;
        self.inner.verifier.set_jwks(&jwks);
        Ok(())
    }

    /// Asks the auth service for a token.
    pub async fn grant(&self, req: &TokenRequest) -> Result<TokenResponse, OAuthError> {
        let opts = CallOptions::new().retry(crate::RetryPolicy::none());
        self.inner.client.call_with(&self.inner.service, "Auth.Token", req, opts).await.map_err(|e| match e.status() {
            Some(s) => OAuthError::from_status(s),
            None => OAuthError::from(Status::unavailable(e.to_string())),
        })
    }

    /// This process's access token: the held one while it has a third of its life left
    /// (at most a minute before expiry), else a new one (by refresh token, or by the
    /// credentials when that fails). An error without credentials.
    pub async fn token(&self) -> crate::Result<String> {
        if let Some(held) = self.fresh() {
            return Ok(held);
        }
        let _renewing = self.inner.renewing.lock().await;
        if let Some(held) = self.fresh() {
            return Ok(held);
        }
        let creds = self
            .inner
            .credentials
            .as_ref()
            .ok_or_else(|| crate::Error::config("this auth client has no credentials"))?;
        let previous = self.inner.held.lock().as_ref().and_then(|h| h.response.refresh_token.clone());
        let mut response = None;
        if let Some(refresh) = previous {
            let mut req = TokenRequest::refresh(refresh);
            req.scope = self.inner.scope.clone();
            response = self.grant(&req).await.ok();
        }
        let response = match response {
            Some(r) => r,
            None => {
                let mut req = TokenRequest::client_credentials(&creds.id, &creds.secret);
                req.scope = self.inner.scope.clone();
                self.grant(&req).await.map_err(|e| crate::Error::remote(e.to_status()))?
            }
        };
        let life = Duration::from_secs(response.expires_in);
        let renew_at = Instant::now() + (life - (life / 3).min(Duration::from_secs(60)));
        let token = response.access_token.clone();
        let header = format!("Bearer {token}");
        let by_ref = format!("{REF_SCHEME}{}", token_ref(&token));
        let mut held = self.inner.held.lock();
        let serial = held.as_ref().map_or(0, |h| h.serial + 1);
        *held = Some(Held { response, header, by_ref, accepted: false, serial, renew_at });
        Ok(token)
    }

    fn fresh(&self) -> Option<String> {
        let held = self.inner.held.lock();
        held.as_ref().filter(|h| Instant::now() < h.renew_at).map(|h| h.response.access_token.clone())
    }

    /// `Bearer <token>` for a call's header: the held token's, renewed first when due.
    pub(crate) async fn header(&self) -> crate::Result<String> {
        if let Some(header) = self.fresh_header() {
            return Ok(header);
        }
        Ok(format!("Bearer {}", self.token().await?))
    }

    /// `Bearer <token>` while the held token needs no renewing.
    pub(crate) fn fresh_header(&self) -> Option<String> {
        let held = self.inner.held.lock();
        held.as_ref().filter(|h| Instant::now() < h.renew_at).map(|h| h.header.clone())
    }

    /// What a call carries while the held token needs no renewing: the token by reference once
    /// a node has accepted it, else the whole token.
    pub(crate) fn fresh_call_token(&self) -> Option<CallToken> {
        let held = self.inner.held.lock();
        let h = held.as_ref().filter(|h| Instant::now() < h.renew_at)?;
        Some(match h.accepted {
            true => CallToken { header: h.by_ref.clone(), full: None },
            false => CallToken { header: h.header.clone(), full: Some(h.serial) },
        })
    }

    /// What a call carries, renewing the held token first when due.
    pub(crate) async fn call_token(&self) -> crate::Result<CallToken> {
        if let Some(t) = self.fresh_call_token() {
            return Ok(t);
        }
        self.token().await?;
        let held = self.inner.held.lock();
        let h = held.as_ref().ok_or_else(|| crate::Error::config("this auth client holds no token"))?;
        Ok(CallToken { header: h.header.clone(), full: Some(h.serial) })
    }

    /// A node accepted the token `serial` names: later calls send it by reference.
    pub(crate) fn accepted(&self, serial: u64) {
        if let Some(h) = self.inner.held.lock().as_mut().filter(|h| h.serial == serial) {
            h.accepted = true;
        }
    }

    /// The whole token for a call that sent `sent` (the held token's reference) and was
    /// answered 401: the node does not know the reference (it restarted, or never saw the token).
    pub(crate) fn full_for_ref(&self, sent: &str) -> Option<String> {
        let held = self.inner.held.lock();
        held.as_ref().filter(|h| h.by_ref == sent).map(|h| h.header.clone())
    }

    /// Whether a call to `service`'s `endpoint` carries this process's token: not the auth
    /// service's own `Auth.*` endpoints (how a token is got), and only with credentials.
    pub(crate) fn sends_token_to(&self, service: &str, endpoint: &str) -> bool {
        self.inner.credentials.is_some() && !(service == self.inner.service && endpoint.starts_with("Auth."))
    }

    /// The server layer checking requests with this client's keys and rules.
    pub fn layer(&self) -> AuthLayer {
        // The layer keeps the client alive: its change subscription runs while a layer does.
        let inner = self.inner.clone();
        let refetch: Refetch = Arc::new(move || {
            let inner = inner.clone();
            Box::pin(async move {
                {
                    let mut last = inner.last_key_refetch.lock();
                    if last.is_some_and(|t| t.elapsed() < UNKNOWN_KEY_REFETCH) {
                        return;
                    }
                    *last = Some(Instant::now());
                }
                if let Err(e) = (AuthClient { inner }).refresh_keys().await {
                    tracing::debug!(error = %e, "could not fetch the key set");
                }
            })
        });
        AuthLayer::new(self.inner.verifier.clone(), self.inner.policy.clone(), Some(refetch))
    }

    /// The client layer: every call carries this process's token (unless the call already has
    /// an `Authorization`, as the gateway's calls on behalf of a user do).
    pub fn client_layer(&self) -> TokenLayer {
        TokenLayer { auth: self.clone() }
    }

    /// True when it has credentials (and so a token for its calls).
    pub fn has_credentials(&self) -> bool {
        self.inner.credentials.is_some()
    }
}

/// The client layer of [`AuthClient::client_layer`]: adds `Authorization: Bearer <token>` to
/// calls.
#[derive(Clone, Debug)]
pub struct TokenLayer {
    auth: AuthClient,
}

impl ClientMiddleware for TokenLayer {
    fn call(&self, mut out: Outgoing, next: ClientNext) -> BoxFuture<'static, crate::Result<Answer>> {
        let auth = self.auth.clone();
        Box::pin(async move {
            let sends = match (out.service(), out.endpoint()) {
                (Some(service), Some(endpoint)) => auth.sends_token_to(service, endpoint),
                _ => false,
            };
            if sends && out.headers().get(headers::AUTHORIZATION).is_none() {
                let header = auth.header().await?;
                out.headers_mut().push(headers::AUTHORIZATION, header);
            }
            next.run(out).await
        })
    }
}
