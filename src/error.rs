//! Local failures: [`Error`], [`ErrorKind`] and the crate's [`Result`].
//!
//! `Error` is what a call into the toolkit returns when something failed on this side or on the
//! way: no node, a timeout, a broken connection, a payload that does not decode. A service's own
//! error arrives as [`ErrorKind::Remote`] with the wire [`Status`] attached.
//!
//! ```
//! use micro::{Error, ErrorKind};
//! fn describe(e: &Error) -> &'static str {
//!     match e.kind() {
//!         ErrorKind::Unavailable => "no node could take the call",
//!         ErrorKind::Timeout => "the deadline passed",
//!         _ => "something else",
//!     }
//! }
//! ```

use std::fmt;

use crate::status::{Code, Status};

/// A boxed error source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, coarsely. Match on it; new kinds may be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// No node could take the request (none registered, none subscribed, all gone).
    #[error("no node available")]
    Unavailable,
    /// The deadline passed before a reply arrived.
    #[error("request timed out")]
    Timeout,
    /// The connection to the message system failed.
    #[error("cannot connect")]
    Connect,
    /// The TLS handshake with the broker failed: its certificate is not signed by a trusted CA,
    /// expired or for another host, or it requires a client certificate that was not given.
    #[error("TLS verification failed")]
    Tls,
    /// The broker refused the login: wrong user or password, token, NKey or `.creds`, or none
    /// given to a broker that requires one.
    #[error("broker authentication failed")]
    BrokerAuth,
    /// Sending or receiving on an established connection failed.
    #[error("transport failure")]
    Transport,
    /// Publishing or subscribing failed.
    #[error("broker failure")]
    Broker,
    /// A payload could not be encoded or decoded.
    #[error("codec failure")]
    Codec,
    /// The remote service answered with an error; see [`Error::status`].
    #[error("remote returned an error")]
    Remote,
    /// The configuration is invalid (unknown URL scheme, bad name, missing feature).
    #[error("invalid configuration")]
    Config,
    /// The service stopped because its handlers panicked too often.
    #[error("restart intensity exceeded")]
    RestartIntensity,
    /// An argument is malformed (a kv key with a space, a zero TTL).
    #[error("invalid argument")]
    InvalidArgument,
    /// A conditional write found another revision than it expected (kv compare-and-set).
    #[error("conflict")]
    Conflict,
    /// A lock's or leader's lease was lost, or was never held.
    #[error("lease lost")]
    LeaseLost,
}

/// A local failure: a kind, a message, and optionally the underlying cause. A service's error
/// answer arrives as [`ErrorKind::Remote`] with its [`Status`].
///
/// ```
/// use micro::prelude::*;
/// use micro::ErrorKind;
///
/// # #[micro::main] async fn main() -> micro::Result<()> {
/// let client = Client::connect("memory://error-type-doc").await?;
/// let err = client.call::<_, String, _>("go.micro.srv.nobody", "Say.Hello", &()).await.unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::Unavailable);
/// println!("{err}"); // says what was looked for, where, and how to choose a broker
/// // In a handler, pass a failed call on as a status:
/// let status: Status = err.to_status("go.micro.srv.caller");
/// assert_eq!(status.code(), Code::UNAVAILABLE);
/// # Ok(()) }
/// ```
pub struct Error {
    kind: ErrorKind,
    message: Option<String>,
    status: Option<Box<Status>>,
    source: Option<BoxError>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error { kind, message: Some(message.into()), status: None, source: None }
    }

    #[cfg_attr(not(any(feature = "nats", feature = "rabbitmq")), allow(dead_code))]
    pub(crate) fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Config, message)
    }

    #[cfg_attr(not(feature = "kv"), allow(dead_code))]
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::InvalidArgument, message)
    }

    pub(crate) fn codec(source: impl Into<BoxError>) -> Self {
        let source = source.into();
        Error { kind: ErrorKind::Codec, message: Some(source.to_string()), status: None, source: Some(source) }
    }

    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Unavailable, message)
    }

    pub(crate) fn timeout(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Timeout, message)
    }

    /// No record of `service` on the transport named `transport` (as `Transport::name` says).
    /// On memory:// the likeliest cause is a service in another process, so the message says
    /// how to look on a broker instead.
    pub(crate) fn not_in_registry(service: &str, transport: &str) -> Self {
        let hint = match transport {
            "memory" => {
                " (memory:// sees only this process; to look on a broker set MICRO_TRANSPORT, e.g. \
                 MICRO_TRANSPORT=nats://127.0.0.1:4222)"
            }
            _ => "",
        };
        Error::unavailable(format!("service {service} not found in the registry on {transport}://{hint}"))
    }

    #[cfg_attr(not(any(feature = "nats", feature = "rabbitmq")), allow(dead_code))]
    pub(crate) fn transport(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Transport, message)
    }

    pub(crate) fn remote(status: Status) -> Self {
        Error { kind: ErrorKind::Remote, message: None, status: Some(Box::new(status)), source: None }
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The remote service's error, for [`ErrorKind::Remote`].
    pub fn status(&self) -> Option<&Status> {
        self.status.as_deref()
    }

    /// The error message without the kind prefix.
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }

    /// True for [`ErrorKind::Timeout`] and remote timeouts.
    pub fn is_timeout(&self) -> bool {
        self.kind == ErrorKind::Timeout || self.status().is_some_and(|s| s.code() == Code::TIMEOUT)
    }

    /// True for a compare-and-set that found another revision ([`ErrorKind::Conflict`]).
    pub fn is_conflict(&self) -> bool {
        self.kind == ErrorKind::Conflict
    }

    /// True when no node could take the call (it provably did not run).
    pub fn is_unavailable(&self) -> bool {
        self.kind == ErrorKind::Unavailable
    }

    /// Converts into the wire status a handler would return for this failure: a remote status
    /// passes through unchanged, a local failure maps to the nearest code.
    pub fn to_status(&self, id: &str) -> Status {
        if let Some(s) = self.status() {
            return s.clone();
        }
        Status::new(self.code(), self.to_string()).with_id(id)
    }

    /// The status code of [`to_status`](Self::to_status), without building the status.
    pub(crate) fn code(&self) -> Code {
        if let Some(s) = self.status() {
            return s.code();
        }
        match self.kind {
            ErrorKind::Unavailable | ErrorKind::Connect | ErrorKind::Tls | ErrorKind::BrokerAuth => Code::UNAVAILABLE,
            ErrorKind::Timeout => Code::TIMEOUT,
            ErrorKind::Codec | ErrorKind::InvalidArgument => Code::BAD_REQUEST,
            ErrorKind::Conflict | ErrorKind::LeaseLost => Code::CONFLICT,
            _ => Code::INTERNAL,
        }
    }
}

/// The kind, the message (or the remote status), then each cause the message does not
/// already say: `cannot connect: NATS at nats://127.0.0.1:4222 is unreachable: ...`.
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let head = match (&self.status, &self.message) {
            (Some(s), _) => format!("{}: {s}", self.kind),
            (None, Some(m)) => format!("{}: {m}", self.kind),
            (None, None) => self.kind.to_string(),
        };
        f.write_str(&head)?;
        write_causes(f, head, std::error::Error::source(self))
    }
}

/// Writes `: cause` for each error in a source chain whose text is not already in `shown`.
fn write_causes(
    f: &mut fmt::Formatter<'_>,
    mut shown: String,
    mut cause: Option<&(dyn std::error::Error + 'static)>,
) -> fmt::Result {
    while let Some(c) = cause {
        let text = c.to_string();
        if !shown.contains(&text) {
            write!(f, ": {text}")?;
            shown.push_str(&text);
        }
        cause = c.source();
    }
    Ok(())
}

/// Any error, shown as a person reads it: the error and its causes on one line. Made for
/// `main`'s return type, where Rust prints the `Debug` form (for [`Error`] a struct dump):
///
/// ```no_run
/// #[actix::main]
/// async fn main() -> Result<(), micro::Report> {
///     let client = micro::Client::connect("nats://127.0.0.1:4222").await?;
///     // ...
/// #   drop(client);
///     Ok(())
/// }
/// ```
///
/// prints `Error: cannot connect: NATS at nats://127.0.0.1:4222 is unreachable: ...` and exits
/// with status 1 when the broker is down.
pub struct Report(Box<dyn std::error::Error + 'static>);

impl Report {
    /// The error inside.
    pub fn into_inner(self) -> Box<dyn std::error::Error + 'static> {
        self.0
    }
}

impl<E: Into<Box<dyn std::error::Error + 'static>>> From<E> for Report {
    fn from(e: E) -> Report {
        Report(e.into())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let head = self.0.to_string();
        f.write_str(&head)?;
        write_causes(f, head, self.0.source())
    }
}

impl fmt::Debug for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind);
        if let Some(m) = &self.message {
            d.field("message", m);
        }
        if let Some(s) = &self.status {
            d.field("status", s);
        }
        if let Some(s) = &self.source {
            d.field("source", s);
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|s| &**s as &(dyn std::error::Error + 'static))
    }
}

impl From<Status> for Error {
    fn from(status: Status) -> Self {
        Error::remote(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Refused;
    impl fmt::Display for Refused {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("connection refused")
        }
    }
    impl std::error::Error for Refused {}

    #[test]
    fn display_reads_as_a_sentence_with_its_causes() {
        let e = Error::new(ErrorKind::Connect, "NATS at nats://x:4222 is unreachable").with_source(Refused);
        assert_eq!(e.to_string(), "cannot connect: NATS at nats://x:4222 is unreachable: connection refused");
        let said = Error::new(ErrorKind::Connect, "broker down: connection refused").with_source(Refused);
        assert_eq!(said.to_string(), "cannot connect: broker down: connection refused", "causes are not repeated");
        let report = Report::from(e);
        assert_eq!(format!("{report:?}"), "cannot connect: NATS at nats://x:4222 is unreachable: connection refused");
    }

    #[test]
    fn memory_says_where_it_looked_and_how_to_choose_a_broker() {
        let e = Error::not_in_registry("greeter", "memory").to_string();
        assert!(e.contains("not found in the registry on memory://") && e.contains("MICRO_TRANSPORT"), "{e}");
        let e = Error::not_in_registry("greeter", "nats").to_string();
        assert!(e.ends_with("not found in the registry on nats://"), "{e}");
    }
}
