//! [`Status`]: the error a handler returns and the wire carries, in go-micro's shape
//! `{id, code, detail, status}`.
//!
//! ```
//! use micro::{Code, Status};
//! let s = Status::not_found("no such user");
//! assert_eq!(s.code(), Code::NotFound);
//! assert_eq!(s.code().as_u16(), 404);
//! assert_eq!(s.status_text(), "Not Found");
//! ```

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Error codes. The numbers are HTTP status codes, as in go-micro, so the gateway maps them
/// one to one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Code {
    /// 400: the request is malformed (undecodable payload, bad content type, invalid argument).
    BadRequest,
    /// 401: the caller is not authenticated.
    Unauthorized,
    /// 403: the caller may not do this.
    Forbidden,
    /// 404: unknown endpoint or entity.
    NotFound,
    /// 405: the endpoint does not allow this.
    MethodNotAllowed,
    /// 408: the deadline passed.
    Timeout,
    /// 409: conflicting state.
    Conflict,
    /// 429: too many requests.
    TooManyRequests,
    /// 500: the handler failed or panicked.
    Internal,
    /// 501: not implemented.
    NotImplemented,
    /// 503: no node could take the request, or the service is shutting down.
    Unavailable,
    /// Any other numeric code received from a peer.
    Other(u16),
}

impl Code {
    /// The numeric code on the wire.
    pub fn as_u16(self) -> u16 {
        match self {
            Code::BadRequest => 400,
            Code::Unauthorized => 401,
            Code::Forbidden => 403,
            Code::NotFound => 404,
            Code::MethodNotAllowed => 405,
            Code::Timeout => 408,
            Code::Conflict => 409,
            Code::TooManyRequests => 429,
            Code::Internal => 500,
            Code::NotImplemented => 501,
            Code::Unavailable => 503,
            Code::Other(n) => n,
        }
    }

    /// The code for a number.
    pub fn from_u16(n: u16) -> Code {
        match n {
            400 => Code::BadRequest,
            401 => Code::Unauthorized,
            403 => Code::Forbidden,
            404 => Code::NotFound,
            405 => Code::MethodNotAllowed,
            408 => Code::Timeout,
            409 => Code::Conflict,
            429 => Code::TooManyRequests,
            500 => Code::Internal,
            501 => Code::NotImplemented,
            503 => Code::Unavailable,
            n => Code::Other(n),
        }
    }

    /// The HTTP reason phrase, carried as `status` on the wire.
    pub fn text(self) -> &'static str {
        match self.as_u16() {
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            409 => "Conflict",
            429 => "Too Many Requests",
            500 => "Internal Server Error",
            501 => "Not Implemented",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            504 => "Gateway Timeout",
            _ => "Unknown",
        }
    }
}

impl Serialize for Code {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.as_u16())
    }
}

impl<'de> Deserialize<'de> for Code {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        i64::deserialize(d).map(|n| Code::from_u16(u16::try_from(n).unwrap_or(500)))
    }
}

/// The wire error: `{id, code, detail, status}`.
///
/// `id` names who produced it (the service name; the gateway and tools use their own names),
/// `code` is the numeric [`Code`], `detail` a human-readable message, `status` the code's text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    #[serde(default)]
    id: String,
    code: Code,
    #[serde(default)]
    detail: String,
    #[serde(default)]
    status: String,
}

macro_rules! constructors {
    ($($(#[$doc:meta])* $name:ident => $code:ident),* $(,)?) => {
        $(
            $(#[$doc])*
            pub fn $name(detail: impl Into<String>) -> Status {
                Status::new(Code::$code, detail)
            }
        )*
    };
}

impl Status {
    /// A status with a code and detail; `id` is filled in by the service that sends it.
    pub fn new(code: Code, detail: impl Into<String>) -> Status {
        Status { id: String::new(), code, detail: detail.into(), status: code.text().to_string() }
    }

    constructors! {
        /// 400 Bad Request.
        bad_request => BadRequest,
        /// 400 Bad Request, for an argument that fails validation.
        invalid_argument => BadRequest,
        /// 401 Unauthorized.
        unauthorized => Unauthorized,
        /// 403 Forbidden.
        forbidden => Forbidden,
        /// 404 Not Found.
        not_found => NotFound,
        /// 408 Request Timeout.
        timeout => Timeout,
        /// 409 Conflict.
        conflict => Conflict,
        /// 429 Too Many Requests.
        too_many_requests => TooManyRequests,
        /// 500 Internal Server Error.
        internal => Internal,
        /// 501 Not Implemented.
        not_implemented => NotImplemented,
        /// 503 Service Unavailable.
        unavailable => Unavailable,
    }

    /// Sets who produced the error.
    pub fn with_id(mut self, id: impl Into<String>) -> Status {
        self.id = id.into();
        self
    }

    /// Who produced the error (usually a service name).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The human-readable detail.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The code's text as sent on the wire (`"Not Found"`).
    pub fn status_text(&self) -> &str {
        &self.status
    }

    /// Fills in `id` if the handler left it empty.
    pub(crate) fn or_id(mut self, id: &str) -> Status {
        if self.id.is_empty() {
            self.id = id.to_string();
        }
        if self.status.is_empty() {
            self.status = self.code.text().to_string();
        }
        self
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code.as_u16(), self.status)?;
        if !self.id.is_empty() {
            write!(f, " from {}", self.id)?;
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

impl std::error::Error for Status {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shape_matches_go_micro() {
        let s = Status::not_found("endpoint Say.Bye").with_id("go.micro.srv.greeter");
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"id": "go.micro.srv.greeter", "code": 404, "detail": "endpoint Say.Bye", "status": "Not Found"})
        );
        let back: Status = serde_json::from_value(json).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn unknown_codes_survive_a_round_trip() {
        let s: Status =
            serde_json::from_str(r#"{"id":"x","code":418,"detail":"teapot","status":"I'm a teapot"}"#).unwrap();
        assert_eq!(s.code(), Code::Other(418));
        assert_eq!(serde_json::to_value(&s).unwrap()["code"], 418);
    }
}
