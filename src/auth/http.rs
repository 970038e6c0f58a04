//! The auth service over HTTP: the OAuth2 token endpoint (`POST /token`, RFC 6749 §4.4 and §6,
//! client authentication by HTTP Basic or form fields) and the key set
//! (`GET /.well-known/jwks.json`).

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine as _;

use super::grant::{OAuthError, TokenRequest};
use super::service::AuthService;

/// The largest token request body.
const MAX_FORM: usize = 16 * 1024;

impl AuthService {
    /// Adds `POST /token` and `GET /.well-known/jwks.json` to an actix-web app.
    ///
    /// ```
    /// use actix_web::{test, App};
    /// use micro::auth::{AuthConfig, AuthService, NewAccount};
    /// # #[actix_web::main] async fn main() {
    /// let auth = AuthService::open(AuthConfig::default()).unwrap();
    /// let creds = auth.create_account(NewAccount::service("svc").scopes(["a"])).unwrap();
    /// let app = test::init_service(App::new().configure(|c| auth.configure(c))).await;
    /// let req = test::TestRequest::post().uri("/token")
    ///     .insert_header(("content-type", "application/x-www-form-urlencoded"))
    ///     .set_payload(format!("grant_type=client_credentials&client_id=svc&client_secret={}", creds.secret))
    ///     .to_request();
    /// let rsp: serde_json::Value = test::call_and_read_body_json(&app, req).await;
    /// assert_eq!(rsp["token_type"], "Bearer");
    /// # }
    /// ```
    pub fn configure(&self, cfg: &mut web::ServiceConfig) {
        cfg.app_data(web::Data::new(self.clone()))
            .app_data(web::PayloadConfig::new(MAX_FORM))
            .route("/token", web::post().to(token))
            .route("/.well-known/jwks.json", web::get().to(jwks));
    }

    /// Serves [`configure`](Self::configure)'s routes on `address` until SIGINT/SIGTERM.
    pub async fn serve_http(&self, address: std::net::SocketAddr) -> std::io::Result<()> {
        let auth = self.clone();
        let listen =
            crate::gateway::Listen { address, workers: 1, shutdown_timeout: std::time::Duration::from_secs(5) };
        let server = crate::gateway::serve_until_signal(
            move || {
                let auth = auth.clone();
                actix_web::App::new().configure(move |c| auth.configure(c))
            },
            listen,
            "auth",
            || {},
        )?;
        tracing::info!(%address, "auth token endpoint listening");
        server.await
    }
}

fn oauth_error(e: &OAuthError, basic: bool) -> HttpResponse {
    let status =
        actix_web::http::StatusCode::from_u16(e.http_status()).unwrap_or(actix_web::http::StatusCode::BAD_REQUEST);
    let mut rsp = HttpResponse::build(status);
    rsp.insert_header((header::CACHE_CONTROL, "no-store"));
    if basic && e.error == "invalid_client" {
        rsp.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"micro\"")));
    }
    rsp.json(e)
}

/// Client id and secret from `Authorization: Basic` (each form-urlencoded, RFC 6749 §2.3.1).
fn basic_credentials(req: &HttpRequest) -> Result<Option<(String, String)>, OAuthError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else { return Ok(None) };
    let bad = || OAuthError::invalid_client("malformed Basic credentials");
    let value = value.to_str().map_err(|_| bad())?;
    let Some((scheme, encoded)) = value.split_once(' ') else { return Err(bad()) };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(OAuthError::invalid_client("use HTTP Basic or the client_id and client_secret fields"));
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = text.split_once(':').ok_or_else(bad)?;
    let unescape = |s: &str| {
        serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("v={s}"))
            .ok()
            .and_then(|v| v.into_iter().next())
            .map(|(_, v)| v)
            .ok_or_else(bad)
    };
    Ok(Some((unescape(id)?, unescape(secret)?)))
}

async fn token(auth: web::Data<AuthService>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let basic = match basic_credentials(&req) {
        Ok(b) => b,
        Err(e) => return oauth_error(&e, true),
    };
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return oauth_error(
            &OAuthError::invalid_request("send the token request as application/x-www-form-urlencoded"),
            false,
        );
    }
    let fields: Vec<(String, String)> = match serde_urlencoded::from_bytes(&body) {
        Ok(f) => f,
        Err(e) => return oauth_error(&OAuthError::invalid_request(format!("malformed form: {e}")), false),
    };
    let mut request = TokenRequest::default();
    let mut seen = std::collections::HashSet::new();
    for (k, v) in fields {
        if !seen.insert(k.clone()) {
            return oauth_error(&OAuthError::invalid_request(format!("parameter {k} is repeated")), false);
        }
        match k.as_str() {
            "grant_type" => request.grant_type = v,
            "client_id" => request.client_id = Some(v),
            "client_secret" => request.client_secret = Some(v),
            "scope" => request.scope = Some(v),
            "refresh_token" => request.refresh_token = Some(v),
            "api_key" => request.api_key = Some(v),
            _ => {}
        }
    }
    let used_basic = basic.is_some();
    if let Some((id, secret)) = basic {
        if request.client_secret.is_some() {
            return oauth_error(&OAuthError::invalid_request("use one client authentication method, not two"), true);
        }
        if request.client_id.as_ref().is_some_and(|c| *c != id) {
            return oauth_error(&OAuthError::invalid_request("client_id differs from the Basic credentials"), true);
        }
        request.client_id = Some(id);
        request.client_secret = Some(secret);
    }
    let auth = auth.get_ref().clone();
    match web::block(move || auth.grant(&request)).await {
        Ok(Ok(token)) => HttpResponse::Ok()
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((header::PRAGMA, "no-cache"))
            .json(token),
        Ok(Err(e)) => oauth_error(&e, used_basic),
        Err(_) => oauth_error(&OAuthError::from(crate::Status::internal("the grant failed")), false),
    }
}

async fn jwks(auth: web::Data<AuthService>) -> HttpResponse {
    match auth.jwks() {
        Ok(set) => HttpResponse::Ok().insert_header((header::CACHE_CONTROL, "max-age=60")).json(set),
        Err(s) => HttpResponse::InternalServerError().json(s),
    }
}
