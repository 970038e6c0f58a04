//! The locked-down gateway (feature `auth`): who is calling (a bearer token, or an API key the
//! auth service exchanges for one), rate limits per client address and per credential (429
//! with `Retry-After`), and the rules checked for each resolved service and endpoint.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::rc::Rc;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header;
use actix_web::{web, HttpMessage, HttpRequest};
use futures::future::LocalBoxFuture;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use parking_lot::Mutex;

use super::{GatewayError, State};
use crate::auth::{AuthClient, Decision, TokenRequest, API_KEY_PREFIX};
use crate::context::Identity;
use crate::status::Code;

/// Rate limits of the gateway: at most `burst` requests at once per client address and per
/// credential, refilled evenly over `period` (GCRA, governor). Over the limit a request gets
/// 429 with `Retry-After`.
///
/// ```
/// use std::time::Duration;
/// let limits = micro::gateway::RateLimit::default()
///     .per_address(100, Duration::from_secs(1))
///     .per_key(20, Duration::from_secs(1));
/// ```
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct RateLimit {
    pub(crate) per_address: Option<(u32, Duration)>,
    pub(crate) per_key: Option<(u32, Duration)>,
}

impl RateLimit {
    /// `burst` requests per client address, refilled over `period`.
    pub fn per_address(mut self, burst: u32, period: Duration) -> Self {
        self.per_address = Some((burst, period));
        self
    }

    /// `burst` requests per credential (token subject or API key), refilled over `period`.
    pub fn per_key(mut self, burst: u32, period: Duration) -> Self {
        self.per_key = Some((burst, period));
        self
    }
}

fn limiter<K: std::hash::Hash + Eq + Clone>(limit: Option<(u32, Duration)>) -> Option<DefaultKeyedRateLimiter<K>> {
    let (burst, period) = limit?;
    let burst = NonZeroU32::new(burst.max(1)).expect("at least 1");
    let every = (period / burst.get()).max(Duration::from_nanos(1));
    Quota::with_period(every).map(|q| RateLimiter::keyed(q.allow_burst(burst)))
}

/// What the gateway knows about the caller of a request (in its extensions).
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    /// The access token to forward.
    pub(crate) token: String,
    pub(crate) identity: Arc<Identity>,
}

/// The gateway's auth state, shared by its workers.
pub(crate) struct Guard {
    auth: Option<AuthClient>,
    by_address: Option<DefaultKeyedRateLimiter<IpAddr>>,
    by_key: Option<DefaultKeyedRateLimiter<String>>,
    /// API key digest → exchanged token and when to exchange again.
    exchanged: Mutex<HashMap<String, (String, Instant)>>,
    checks: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").field("auth", &self.auth).finish_non_exhaustive()
    }
}

impl Guard {
    pub(crate) fn new(auth: Option<AuthClient>, limits: &RateLimit) -> Guard {
        Guard {
            auth,
            by_address: limiter(limits.per_address),
            by_key: limiter(limits.per_key),
            exchanged: Mutex::new(HashMap::new()),
            checks: Default::default(),
        }
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.auth.is_none() && self.by_address.is_none() && self.by_key.is_none()
    }

    fn limit<K: std::hash::Hash + Eq + Clone>(
        &self,
        l: &DefaultKeyedRateLimiter<K>,
        key: &K,
    ) -> Result<(), GatewayError> {
        if self.checks.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 4096 == 4095 {
            l.retain_recent();
        }
        l.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            GatewayError::new(Code::TOO_MANY_REQUESTS, "too many requests; slow down")
                .retry_after(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
        })
    }

    /// The token of an API key: exchanged with the auth service, kept until near its expiry.
    async fn exchange(&self, auth: &AuthClient, key: &str) -> Result<String, GatewayError> {
        let digest = crate::auth::digest(key);
        if let Some((token, until)) = self.exchanged.lock().get(&digest) {
            if Instant::now() < *until {
                return Ok(token.clone());
            }
        }
        let rsp = auth.grant(&TokenRequest::api_key(key)).await.map_err(|e| {
            GatewayError::new(
                if e.http_status() == 500 { Code::UNAVAILABLE } else { Code::UNAUTHORIZED },
                format!("API key refused: {}", e.error_description),
            )
        })?;
        let life = Duration::from_secs(rsp.expires_in);
        let mut map = self.exchanged.lock();
        if map.len() > 10_000 {
            map.clear();
        }
        map.insert(digest, (rsp.access_token.clone(), Instant::now() + life - (life / 3).min(Duration::from_secs(60))));
        Ok(rsp.access_token)
    }

    /// Rate limits and identifies the caller of a request.
    async fn admit(&self, req: &ServiceRequest) -> Result<Option<Caller>, GatewayError> {
        if let (Some(l), Some(peer)) = (&self.by_address, req.peer_addr()) {
            self.limit(l, &peer.ip())?;
        }
        let Some(auth) = &self.auth else { return Ok(None) };
        let authorization = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let api_key = req.headers().get("x-api-key").and_then(|v| v.to_str().ok());
        let bearer = match authorization {
            Some(v) => Some(crate::auth::bearer(v).ok_or_else(|| {
                GatewayError::new(Code::UNAUTHORIZED, "the Authorization header must be `Bearer <token or API key>`")
            })?),
            None => None,
        };
        let key = api_key.or(bearer.filter(|b| b.starts_with(API_KEY_PREFIX)));
        let token = match (key, bearer) {
            (Some(key), _) => {
                if let Some(l) = &self.by_key {
                    self.limit(l, &crate::auth::digest(key))?;
                }
                self.exchange(auth, key).await?
            }
            (None, Some(token)) => token.to_string(),
            (None, None) => return Ok(None),
        };
        let identity = match auth.verifier().verify(&token) {
            Ok(i) => i,
            Err(crate::auth::TokenError::UnknownKey(_)) => {
                let _ = auth.refresh().await;
                auth.verifier().verify(&token).map_err(|e| GatewayError::new(Code::UNAUTHORIZED, e.to_string()))?
            }
            Err(e) => return Err(GatewayError::new(Code::UNAUTHORIZED, e.to_string())),
        };
        if key.is_none() {
            if let Some(l) = &self.by_key {
                self.limit(l, &format!("sub:{}", identity.id))?;
            }
        }
        Ok(Some(Caller { token, identity }))
    }
}

/// The app middleware: rate limits and identifies every request before routing.
pub(crate) struct Admit;

impl<S, B> Transform<S, ServiceRequest> for Admit
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = AdmitMiddleware<S>;
    type InitError = ();
    type Future = std::future::Ready<Result<Self::Transform, ()>>;

    fn new_transform(&self, service: S) -> Self::Future {
        std::future::ready(Ok(AdmitMiddleware { service: Rc::new(service) }))
    }
}

pub(crate) struct AdmitMiddleware<S> {
    service: Rc<S>,
}

impl<S, B> Service<ServiceRequest> for AdmitMiddleware<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let service = self.service.clone();
        let guard = req.app_data::<web::Data<State>>().and_then(|s| s.guard.clone()).filter(|g| !g.is_idle());
        Box::pin(async move {
            if let Some(guard) = guard {
                match guard.admit(&req).await {
                    Ok(Some(caller)) => {
                        req.extensions_mut().insert(caller);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        let (http, _) = req.into_parts();
                        let rsp = actix_web::ResponseError::error_response(&e);
                        return Ok(ServiceResponse::new(http, rsp).map_into_right_body());
                    }
                }
            }
            service.call(req).await.map(ServiceResponse::map_into_left_body)
        })
    }
}

/// Whether the caller may call `endpoint` of `service`: deny by default; `Debug.*` only by a
/// rule that names `Debug` explicitly (a catch-all `*` does not open it).
pub(crate) fn authorize(state: &State, req: &HttpRequest, service: &str, endpoint: &str) -> Result<(), GatewayError> {
    let Some(auth) = state.guard.as_ref().and_then(|g| g.auth.as_ref()) else { return Ok(()) };
    let ext = req.extensions();
    let caller = ext.get::<Caller>();
    let who = caller.map(|c| &*c.identity);
    let debug = endpoint.split('.').next().is_some_and(|h| h.eq_ignore_ascii_case("debug"));
    let allowed = if debug {
        auth.policy()
            .matching(service, endpoint, who)
            .is_some_and(|r| r.access == crate::auth::Access::Allow && r.endpoint.starts_with("Debug"))
    } else {
        auth.policy().decide(service, endpoint, who) == Decision::Allow
    };
    match (allowed, who) {
        (true, _) => Ok(()),
        (false, None) => Err(GatewayError::new(Code::UNAUTHORIZED, "a valid bearer token or API key is required")),
        (false, Some(_)) => {
            Err(GatewayError::new(Code::FORBIDDEN, format!("no rule allows calling {endpoint} of {service}")))
        }
    }
}

/// The token to forward with the calls made for this request.
pub(crate) fn forwarded_token(req: &HttpRequest) -> Option<String> {
    req.extensions().get::<Caller>().map(|c| c.token.clone())
}
