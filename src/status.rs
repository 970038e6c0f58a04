//! [`Status`]: the error a handler returns and the wire carries, in go-micro's shape
//! `{id, code, detail, status}`.
//!
//! ```
//! use micro::{Code, Status};
//! let s = Status::not_found("no such user");
//! assert_eq!(s.code(), Code::NOT_FOUND);
//! assert_eq!(s.code().as_u16(), 404);
//! assert_eq!(s.status_text(), "Not Found");
//! ```

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An error code. The numbers are HTTP status codes, as in go-micro, so the gateway maps them
/// one to one. Like `http::StatusCode`, a code is its number: `Code::new(404) == Code::NOT_FOUND`,
/// and the named constants work as `match` patterns.
///
/// ```
/// use micro::Code;
/// fn retry(code: Code) -> bool {
///     match code {
///         Code::TIMEOUT | Code::UNAVAILABLE => true,
///         c => c.as_u16() >= 500,
///     }
/// }
/// assert!(retry(Code::new(503)));
/// assert_eq!(Code::new(404), Code::NOT_FOUND);
/// assert_eq!(format!("{}", Code::NOT_FOUND), "404 Not Found");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Code(u16);

impl Code {
    /// 400: the request is malformed (undecodable payload, bad content type, invalid argument).
    pub const BAD_REQUEST: Code = Code(400);
    /// 401: the caller is not authenticated.
    pub const UNAUTHORIZED: Code = Code(401);
    /// 403: the caller may not do this.
    pub const FORBIDDEN: Code = Code(403);
    /// 404: unknown endpoint or entity.
    pub const NOT_FOUND: Code = Code(404);
    /// 405: the endpoint does not allow this.
    pub const METHOD_NOT_ALLOWED: Code = Code(405);
    /// 408: the deadline passed.
    pub const TIMEOUT: Code = Code(408);
    /// 409: conflicting state.
    pub const CONFLICT: Code = Code(409);
    /// 413: the request is larger than allowed.
    pub const PAYLOAD_TOO_LARGE: Code = Code(413);
    /// 429: too many requests.
    pub const TOO_MANY_REQUESTS: Code = Code(429);
    /// 500: the handler failed or panicked.
    pub const INTERNAL: Code = Code(500);
    /// 501: not implemented.
    pub const NOT_IMPLEMENTED: Code = Code(501);
    /// 502: a peer behind the gateway answered wrongly or not at all.
    pub const BAD_GATEWAY: Code = Code(502);
    /// 503: no node could take the request, or the service is shutting down.
    pub const UNAVAILABLE: Code = Code(503);
    /// 504: a peer behind the gateway did not answer in time.
    pub const GATEWAY_TIMEOUT: Code = Code(504);

    /// The code for a number; any number is a code.
    pub const fn new(n: u16) -> Code {
        Code(n)
    }

    /// The code for a number (same as [`Code::new`]).
    pub const fn from_u16(n: u16) -> Code {
        Code(n)
    }

    /// The numeric code on the wire.
    pub const fn as_u16(self) -> u16 {
        self.0
    }

    /// The name of a known code (`"NOT_FOUND"`), as the constants spell it.
    fn name(self) -> Option<&'static str> {
        Some(match self {
            Code::BAD_REQUEST => "BAD_REQUEST",
            Code::UNAUTHORIZED => "UNAUTHORIZED",
            Code::FORBIDDEN => "FORBIDDEN",
            Code::NOT_FOUND => "NOT_FOUND",
            Code::METHOD_NOT_ALLOWED => "METHOD_NOT_ALLOWED",
            Code::TIMEOUT => "TIMEOUT",
            Code::CONFLICT => "CONFLICT",
            Code::PAYLOAD_TOO_LARGE => "PAYLOAD_TOO_LARGE",
            Code::TOO_MANY_REQUESTS => "TOO_MANY_REQUESTS",
            Code::INTERNAL => "INTERNAL",
            Code::NOT_IMPLEMENTED => "NOT_IMPLEMENTED",
            Code::BAD_GATEWAY => "BAD_GATEWAY",
            Code::UNAVAILABLE => "UNAVAILABLE",
            Code::GATEWAY_TIMEOUT => "GATEWAY_TIMEOUT",
            _ => return None,
        })
    }

    /// The HTTP reason phrase, carried as `status` on the wire.
    pub fn text(self) -> &'static str {
        match self.0 {
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            409 => "Conflict",
            413 => "Payload Too Large",
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

impl From<u16> for Code {
    fn from(n: u16) -> Code {
        Code(n)
    }
}

impl From<Code> for u16 {
    fn from(c: Code) -> u16 {
        c.0
    }
}

/// `404 Not Found`; `418` for a code without a known phrase.
impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.text() {
            "Unknown" => write!(f, "{}", self.0),
            text => write!(f, "{} {text}", self.0),
        }
    }
}

/// `NOT_FOUND (404)`; `Code(418)` for a code without a constant.
impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({})", self.0),
            None => write!(f, "Code({})", self.0),
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
        i64::deserialize(d).map(|n| Code(u16::try_from(n).unwrap_or(500)))
    }
}

/// The wire error: `{id, code, detail, status}`.
///
/// ```
/// use micro::{Code, Status};
///
/// async fn find(id: u64) -> Result<String, Status> { // what a handler returns
///     Err(Status::not_found(format!("user {id} does not exist")))
/// }
/// let status = Status::not_found("user 7 does not exist").with_id("go.micro.srv.users"); // the server fills the id in when empty
/// assert_eq!(status.code(), Code::NOT_FOUND);
/// assert_eq!(
///     serde_json::to_value(&status).unwrap(),
///     serde_json::json!({"id": "go.micro.srv.users", "code": 404, "detail": "user 7 does not exist", "status": "Not Found"})
/// );
/// ```
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
        bad_request => BAD_REQUEST,
        /// 400 Bad Request, for an argument that fails validation.
        invalid_argument => BAD_REQUEST,
        /// 401 Unauthorized.
        unauthorized => UNAUTHORIZED,
        /// 403 Forbidden.
        forbidden => FORBIDDEN,
        /// 404 Not Found.
        not_found => NOT_FOUND,
        /// 408 Request Timeout.
        timeout => TIMEOUT,
        /// 409 Conflict.
        conflict => CONFLICT,
        /// 429 Too Many Requests.
        too_many_requests => TOO_MANY_REQUESTS,
        /// 500 Internal Server Error.
        internal => INTERNAL,
        /// 501 Not Implemented.
        not_implemented => NOT_IMPLEMENTED,
        /// 503 Service Unavailable.
        unavailable => UNAVAILABLE,
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
        assert_eq!(s.code(), Code::new(418));
        assert_eq!(serde_json::to_value(&s).unwrap()["code"], 418);
    }

    #[test]
    fn codes_are_their_numbers() {
        assert_eq!(Code::new(404), Code::NOT_FOUND);
        assert_eq!(Code::from_u16(503), Code::UNAVAILABLE);
        assert!(matches!(Code::new(408), Code::TIMEOUT));
        assert_eq!(format!("{}", Code::NOT_FOUND), "404 Not Found");
        assert_eq!(format!("{}", Code::new(418)), "418");
        assert_eq!(format!("{:?}", Code::NOT_FOUND), "NOT_FOUND (404)");
        assert_eq!(format!("{:?}", Code::new(418)), "Code(418)");
    }

    #[test]
    fn codes_round_trip_as_numbers() {
        for n in [0, 200, 400, 404, 418, 500, 504, 599, u16::MAX] {
            let c = Code::new(n);
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, n.to_string());
            assert_eq!(serde_json::from_str::<Code>(&json).unwrap(), c);
            let packed = rmp_serde::to_vec(&c).unwrap();
            assert_eq!(rmp_serde::from_slice::<Code>(&packed).unwrap(), c);
        }
        assert_eq!(serde_json::from_str::<Code>("70000").unwrap(), Code::INTERNAL, "out of range decodes as 500");
    }
}
