//! Slack's Web API (`https://slack.com/api/METHOD`): one HTTP/1.1 POST a call over hyper, TLS by
//! rustls, the bearer token in `Authorization`, rate limits (`429` + `Retry-After`) waited out.

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST, RETRY_AFTER, USER_AGENT};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use super::tls;
use crate::bot::BotError;

/// Time one call may take, connection and TLS handshake included.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest response read; Slack's answers to these methods are a few hundred bytes.
const MAX_BODY: usize = 1 << 20;
/// Tries of one call that Slack rate-limits, and the longest `Retry-After` waited.
const RATE_LIMITED_TRIES: usize = 4;
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Why a call failed.
#[derive(Debug)]
pub(super) enum ApiError {
    /// Slack answered `{"ok": false, "error": CODE}`.
    Slack(String),
    /// No answer: connection, TLS, HTTP status, rate limit, a body that is not Slack's JSON.
    Transport(String),
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Slack(code) => write!(f, "Slack answered error {code:?}"),
            ApiError::Transport(why) => f.write_str(why),
        }
    }
}

/// The Web API at a base URL (`https://slack.com/api/`, or a test server's).
#[derive(Debug, Clone)]
pub(super) struct WebApi {
    base: String,
}

impl WebApi {
    /// The API under `base`; `http://` is allowed for a server on this machine.
    pub(super) fn new(base: &str) -> Result<WebApi, BotError> {
        let base = if base.ends_with('/') { base.to_string() } else { format!("{base}/") };
        let uri: Uri = base.parse().map_err(|e| BotError::Config(format!("Slack API URL {base:?}: {e}")))?;
        if !matches!(uri.scheme_str(), Some("https" | "http")) || uri.host().is_none() {
            return Err(BotError::Config(format!("Slack API URL {base:?}: not an http(s):// URL")));
        }
        Ok(WebApi { base })
    }

    /// Calls `method` with `token`: a JSON body, or none (form-encoded, empty). The answer when
    /// Slack says `ok`.
    pub(super) async fn call(
        &self,
        method: &str,
        token: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, ApiError> {
        let uri: Uri = format!("{}{method}", self.base).parse().map_err(|e| ApiError::Transport(format!("{e}")))?;
        let (content_type, body) = match body {
            Some(json) => ("application/json; charset=utf-8", Bytes::from(json.to_string())),
            None => ("application/x-www-form-urlencoded", Bytes::new()),
        };
        let auth = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| ApiError::Transport("the token is not a valid header value".to_string()))?;
        for _ in 0..RATE_LIMITED_TRIES {
            let request = Request::builder()
                .method(Method::POST)
                .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
                .header(HOST, uri.authority().map_or("", |a| a.as_str()))
                .header(AUTHORIZATION, auth.clone())
                .header(CONTENT_TYPE, content_type)
                .header(USER_AGENT, concat!("actix-micro/", env!("CARGO_PKG_VERSION")))
                .body(Full::new(body.clone()))
                .map_err(|e| ApiError::Transport(e.to_string()))?;
            let (status, retry_after, bytes) = tokio::time::timeout(CALL_TIMEOUT, post(&uri, request))
                .await
                .map_err(|_| ApiError::Transport(format!("no answer in {CALL_TIMEOUT:?}")))??;
            if status == StatusCode::TOO_MANY_REQUESTS {
                let wait = retry_after.unwrap_or(Duration::from_secs(1)).min(MAX_RETRY_AFTER);
                tracing::warn!(method, retry_in = ?wait, "slack: rate limited");
                tokio::time::sleep(wait).await;
                continue;
            }
            if !status.is_success() {
                return Err(ApiError::Transport(format!("HTTP {status}")));
            }
            let answer: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| ApiError::Transport(format!("the answer is not JSON: {e}")))?;
            return match answer["ok"].as_bool() {
                Some(true) => Ok(answer),
                _ => Err(ApiError::Slack(answer["error"].as_str().unwrap_or("unknown").to_string())),
            };
        }
        Err(ApiError::Transport(format!("still rate limited after {RATE_LIMITED_TRIES} tries")))
    }
}

/// One request on a new connection: status, `Retry-After`, body.
async fn post(uri: &Uri, request: Request<Full<Bytes>>) -> Result<(StatusCode, Option<Duration>, Bytes), ApiError> {
    let transport = |e: &dyn std::fmt::Display| ApiError::Transport(e.to_string());
    let host = uri.host().unwrap_or_default();
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = TcpStream::connect((host.trim_matches(['[', ']']), port)).await.map_err(|e| transport(&e))?;
    let _ = tcp.set_nodelay(true);
    if https {
        let name = ServerName::try_from(host.trim_matches(['[', ']']).to_string()).map_err(|e| transport(&e))?;
        let tls = TlsConnector::from(tls::client_config().map_err(|e| transport(&e))?);
        let stream = tls.connect(name, tcp).await.map_err(|e| transport(&e))?;
        exchange(TokioIo::new(stream), request).await
    } else {
        exchange(TokioIo::new(tcp), request).await
    }
}

async fn exchange<T>(io: T, request: Request<Full<Bytes>>) -> Result<(StatusCode, Option<Duration>, Bytes), ApiError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let transport = |e: &dyn std::fmt::Display| ApiError::Transport(e.to_string());
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.map_err(|e| transport(&e))?;
    // The connection ends by itself once the sender is dropped after the answer is read.
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "slack: web API connection");
        }
    });
    let response = sender.send_request(request).await.map_err(|e| transport(&e))?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = Limited::new(response.into_body(), MAX_BODY).collect().await.map_err(|e| transport(&e))?;
    Ok((status, retry_after, body.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_checked_and_end_in_a_slash() {
        assert_eq!(WebApi::new("https://slack.com/api").unwrap().base, "https://slack.com/api/");
        assert_eq!(WebApi::new("http://127.0.0.1:8080/api/").unwrap().base, "http://127.0.0.1:8080/api/");
        assert!(matches!(WebApi::new("ftp://slack.com/api/"), Err(BotError::Config(_))));
        assert!(matches!(WebApi::new("slack.com"), Err(BotError::Config(_))));
    }
}
