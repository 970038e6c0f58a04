//! Errors as the gateway answers them: the wire [`Status`] as JSON, with an HTTP status
//! mapped from its code.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};

use crate::error::{Error, ErrorKind};
use crate::status::{Code, Status};

/// The id gateway-made errors carry.
pub const GATEWAY_ID: &str = "go.micro.api";

/// An error answered to an HTTP caller: `{id, code, detail, status}` with a matching HTTP
/// status.
#[derive(Debug)]
pub struct GatewayError {
    http: StatusCode,
    status: Status,
    /// Seconds for `Retry-After` (429 answers).
    retry_after: Option<u64>,
}

impl GatewayError {
    /// A gateway-made error with this code.
    pub fn new(code: Code, detail: impl Into<String>) -> GatewayError {
        GatewayError::from_status(Status::new(code, detail).with_id(GATEWAY_ID))
    }

    /// 400 with a message.
    pub fn bad_request(detail: impl Into<String>) -> GatewayError {
        GatewayError::new(Code::BAD_REQUEST, detail)
    }

    /// A gateway-made error whose code is this HTTP status as it is (a 408 stays a 408, where
    /// [`from_status`](Self::from_status) makes a service's timeout a 504).
    pub(crate) fn http(http: StatusCode, detail: impl Into<String>) -> GatewayError {
        GatewayError {
            http,
            status: Status::new(Code::new(http.as_u16()), detail).with_id(GATEWAY_ID),
            retry_after: None,
        }
    }

    /// The error for a service's status: its code is the HTTP status, except that a timeout
    /// (408) is a 504 at the gateway and codes outside 400..=599 are a 500.
    pub fn from_status(status: Status) -> GatewayError {
        let http = match status.code() {
            Code::TIMEOUT => StatusCode::GATEWAY_TIMEOUT,
            c => StatusCode::from_u16(c.as_u16())
                .ok()
                .filter(|s| s.is_client_error() || s.is_server_error())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        };
        GatewayError { http, status, retry_after: None }
    }

    /// Adds a `Retry-After` of this many seconds (at least 1) to the answer.
    pub fn retry_after(mut self, secs: u64) -> GatewayError {
        self.retry_after = Some(secs.max(1));
        self
    }

    /// The HTTP status.
    pub fn http_status(&self) -> StatusCode {
        self.http
    }

    /// The wire status in the body.
    pub fn status(&self) -> &Status {
        &self.status
    }
}

impl From<Error> for GatewayError {
    fn from(e: Error) -> GatewayError {
        if let Some(status) = e.status() {
            return GatewayError::from_status(status.clone());
        }
        let (http, code) = match e.kind() {
            ErrorKind::Unavailable | ErrorKind::Connect | ErrorKind::Tls | ErrorKind::BrokerAuth => {
                (StatusCode::SERVICE_UNAVAILABLE, Code::UNAVAILABLE)
            }
            ErrorKind::Timeout => (StatusCode::GATEWAY_TIMEOUT, Code::GATEWAY_TIMEOUT),
            ErrorKind::Config => (StatusCode::BAD_REQUEST, Code::BAD_REQUEST),
            ErrorKind::Codec => (StatusCode::BAD_GATEWAY, Code::BAD_GATEWAY),
            _ => (StatusCode::BAD_GATEWAY, Code::BAD_GATEWAY),
        };
        GatewayError {
            http,
            status: Status::new(code, e.message().unwrap_or(&e.to_string()).to_string()).with_id(GATEWAY_ID),
            retry_after: None,
        }
    }
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.status)
    }
}

impl ResponseError for GatewayError {
    fn status_code(&self) -> StatusCode {
        self.http
    }

    fn error_response(&self) -> HttpResponse {
        let mut rsp = HttpResponse::build(self.http);
        if let Some(secs) = self.retry_after {
            rsp.insert_header((actix_web::http::header::RETRY_AFTER, secs));
        }
        rsp.json(&self.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_http() {
        let h = |s: Status| GatewayError::from_status(s).http_status().as_u16();
        assert_eq!(h(Status::not_found("x")), 404);
        assert_eq!(h(Status::bad_request("x")), 400);
        assert_eq!(h(Status::timeout("x")), 504);
        assert_eq!(h(Status::unavailable("x")), 503);
        assert_eq!(h(Status::new(Code::new(200), "odd")), 500);
        assert_eq!(GatewayError::from(Error::unavailable("none")).http_status().as_u16(), 503);
        assert_eq!(GatewayError::from(Error::timeout("late")).http_status().as_u16(), 504);
    }
}
