//! OAuth2 grants (RFC 6749): the token request and response, and the errors of §5.2.

use serde::{Deserialize, Serialize};

use crate::status::{Code, Status};

/// `grant_type` of the client-credentials grant (RFC 6749 §4.4).
pub const CLIENT_CREDENTIALS: &str = "client_credentials";
/// `grant_type` of the refresh grant (RFC 6749 §6).
pub const REFRESH_TOKEN: &str = "refresh_token";
/// `grant_type` that exchanges an API key (parameter `api_key`) for an access token (an
/// extension grant, RFC 6749 §4.5).
pub const API_KEY: &str = "urn:actix-micro:params:oauth:grant-type:api-key";

/// A token request: the form fields of `POST /token`, or the body of `Auth.Token`.
///
/// ```
/// let req = micro::auth::TokenRequest::client_credentials("go.micro.srv.greeter", "s3cret");
/// assert_eq!(req.grant_type, "client_credentials");
/// ```
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenRequest {
    /// `client_credentials`, `refresh_token` or [`API_KEY`].
    pub grant_type: String,
    /// The account id (also from HTTP Basic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The account secret (also from HTTP Basic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// Scopes asked for, space-separated (default: all of the account's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The refresh token, for the refresh grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The API key, for the API-key grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
}

impl std::fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRequest")
            .field("grant_type", &self.grant_type)
            .field("client_id", &self.client_id)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl TokenRequest {
    /// A client-credentials request.
    pub fn client_credentials(id: impl Into<String>, secret: impl Into<String>) -> TokenRequest {
        TokenRequest {
            grant_type: CLIENT_CREDENTIALS.into(),
            client_id: Some(id.into()),
            client_secret: Some(secret.into()),
            ..Default::default()
        }
    }

    /// A refresh request.
    pub fn refresh(token: impl Into<String>) -> TokenRequest {
        TokenRequest { grant_type: REFRESH_TOKEN.into(), refresh_token: Some(token.into()), ..Default::default() }
    }

    /// An API-key exchange.
    pub fn api_key(key: impl Into<String>) -> TokenRequest {
        TokenRequest { grant_type: API_KEY.into(), api_key: Some(key.into()), ..Default::default() }
    }
}

/// A successful token response (RFC 6749 §5.1).
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenResponse {
    /// The signed JWT.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The scopes granted, space-separated.
    pub scope: String,
    /// An opaque refresh token, used once (a new one comes with each refresh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// An OAuth2 error response (RFC 6749 §5.2): `error` and `error_description`.
///
/// ```
/// let e = micro::auth::OAuthError::invalid_client("unknown client");
/// assert_eq!(e.http_status(), 401);
/// ```
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, thiserror::Error)]
#[error("{error}: {error_description}")]
#[non_exhaustive]
pub struct OAuthError {
    /// `invalid_request`, `invalid_client`, `invalid_grant`, `unauthorized_client`,
    /// `unsupported_grant_type` or `invalid_scope`.
    pub error: String,
    /// What went wrong, for a person.
    pub error_description: String,
}

impl OAuthError {
    fn new(error: &str, description: impl Into<String>) -> OAuthError {
        OAuthError { error: error.into(), error_description: description.into() }
    }

    /// `invalid_request`: a parameter is missing or repeated.
    pub fn invalid_request(d: impl Into<String>) -> OAuthError {
        OAuthError::new("invalid_request", d)
    }

    /// `invalid_client`: client authentication failed.
    pub fn invalid_client(d: impl Into<String>) -> OAuthError {
        OAuthError::new("invalid_client", d)
    }

    /// `invalid_grant`: the refresh token or API key is not valid.
    pub fn invalid_grant(d: impl Into<String>) -> OAuthError {
        OAuthError::new("invalid_grant", d)
    }

    /// `unsupported_grant_type`.
    pub fn unsupported_grant_type(d: impl Into<String>) -> OAuthError {
        OAuthError::new("unsupported_grant_type", d)
    }

    /// `invalid_scope`: a scope asked for is not the account's.
    pub fn invalid_scope(d: impl Into<String>) -> OAuthError {
        OAuthError::new("invalid_scope", d)
    }

    /// The HTTP status: 401 for `invalid_client`, 500 for `server_error`, 400 otherwise.
    pub fn http_status(&self) -> u16 {
        match self.error.as_str() {
            "invalid_client" => 401,
            "server_error" => 500,
            _ => 400,
        }
    }

    /// As a wire status (`Auth.Token` answers it): the HTTP status as the code, `error:
    /// description` as the detail.
    pub fn to_status(&self) -> Status {
        Status::new(Code::new(self.http_status()), self.to_string())
    }

    /// Reads one back from a status made by [`to_status`](Self::to_status).
    pub fn from_status(s: &Status) -> OAuthError {
        match s.detail().split_once(": ") {
            Some((e, d)) if !e.contains(' ') => OAuthError::new(e, d),
            _ => OAuthError::new("server_error", s.detail()),
        }
    }
}

impl From<Status> for OAuthError {
    fn from(s: Status) -> OAuthError {
        OAuthError::new("server_error", s.detail())
    }
}
