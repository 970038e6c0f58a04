//! [`ConnectOptions`]: how a transport reaches its broker securely (the CA to trust, the client
//! certificate, the credentials), from code, from the URL's query or from the environment.
//!
//! Each setting is taken from the first of: the options given in code
//! ([`connect_with`](super::connect_with), `ServiceBuilder::connect_options`,
//! `ClientBuilder::connect_options`), the URL (its query, and its user info for credentials),
//! the environment. `docs/tls.md` has the whole story with examples.

use std::fmt;
use std::path::PathBuf;

use crate::error::{Error, Result};

/// The CA certificates (PEM) to trust for the broker's certificate.
pub const TLS_CA_ENV: &str = "MICRO_TLS_CA";
/// The client certificate (PEM) to present to a broker that asks for one.
pub const TLS_CERT_ENV: &str = "MICRO_TLS_CERT";
/// The client certificate's private key (PEM).
pub const TLS_KEY_ENV: &str = "MICRO_TLS_KEY";
/// The user name to log in with (NATS and RabbitMQ).
pub const USER_ENV: &str = "MICRO_BROKER_USER";
/// The password to log in with (NATS and RabbitMQ).
pub const PASSWORD_ENV: &str = "MICRO_BROKER_PASSWORD";
/// The token to log in with (NATS).
pub const NATS_TOKEN_ENV: &str = "MICRO_NATS_TOKEN";
/// A `.creds` file (user JWT and NKey seed) to log in with (NATS).
pub const NATS_CREDS_ENV: &str = "MICRO_NATS_CREDS";
/// A file holding an NKey seed (`SU...`) to log in with (NATS).
pub const NATS_NKEY_ENV: &str = "MICRO_NATS_NKEY";

/// The URL query parameters these options are read from, each naming a file or a flag (secrets
/// stay out of the query: they belong in the user info or the environment).
#[cfg(feature = "nats")]
const QUERY_KEYS: &str = "tls_ca, tls_cert, tls_key, tls_required, creds, nkey";

/// How to reach a broker securely: the CA to trust and the client certificate to present (TLS),
/// and the credentials to log in with. Every setting is optional, and each is taken from the
/// first of: these options, the URL (its query: `tls_ca`, `tls_cert`, `tls_key`,
/// `tls_required`, `creds`, `nkey`; its user info for a login), the environment
/// ([`ConnectOptions::from_env`]).
///
/// TLS is used for `tls://` and `amqps://` URLs, for a NATS server that requires it, and for a
/// `nats://` URL whenever a CA or client certificate is given (a server that does not offer TLS
/// is then refused rather than used in the clear).
///
/// ```no_run
/// # #[actix::main] async fn main() -> micro::Result<()> {
/// use micro::transport::ConnectOptions;
/// let options = ConnectOptions::new()
///     .tls_ca("/etc/micro/ca.pem")
///     .tls_client_cert("/etc/micro/client.pem", "/etc/micro/client-key.pem")
///     .user_password("micro", "s3cret");
/// let t = micro::transport::connect_with("tls://nats.internal:4222", &options).await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConnectOptions {
    pub(crate) tls_ca: Option<PathBuf>,
    pub(crate) tls_cert: Option<PathBuf>,
    pub(crate) tls_key: Option<PathBuf>,
    pub(crate) tls_required: bool,
    pub(crate) user: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) token: Option<String>,
    pub(crate) nats_creds: Option<PathBuf>,
    pub(crate) nats_nkey: Option<PathBuf>,
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret = |s: &Option<String>| s.as_ref().map(|_| "***");
        f.debug_struct("ConnectOptions")
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("tls_required", &self.tls_required)
            .field("user", &self.user)
            .field("password", &secret(&self.password))
            .field("token", &secret(&self.token))
            .field("nats_creds", &self.nats_creds)
            .field("nats_nkey", &self.nats_nkey)
            .finish()
    }
}

impl ConnectOptions {
    /// No settings: everything comes from the URL and the environment.
    pub fn new() -> ConnectOptions {
        ConnectOptions::default()
    }

    /// Trust the CA certificates in this PEM file (instead of the system's) for the broker's
    /// certificate.
    pub fn tls_ca(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_ca = Some(path.into());
        self
    }

    /// Present this client certificate (PEM, with its chain) and key (PEM) to a broker that
    /// asks for one (NATS `verify: true`, RabbitMQ `ssl_options.verify = verify_peer`).
    pub fn tls_client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls_cert = Some(cert.into());
        self.tls_key = Some(key.into());
        self
    }

    /// Use TLS even on a `nats://` URL (`tls://` and `amqps://` always do).
    pub fn require_tls(mut self) -> Self {
        self.tls_required = true;
        self
    }

    /// Log in with a user name and password (NATS `user`/`password`, RabbitMQ PLAIN).
    pub fn user_password(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self.password = Some(password.into());
        self
    }

    /// Log in with a token (NATS `authorization { token: ... }`).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Log in with a NATS `.creds` file: a user JWT and its NKey seed, as `nsc` writes them
    /// (the `nkeys` cargo feature).
    pub fn nats_creds(mut self, path: impl Into<PathBuf>) -> Self {
        self.nats_creds = Some(path.into());
        self
    }

    /// Log in with the NKey whose seed (`SU...`) is in this file (NATS `authorization { users
    /// = [{ nkey: U... }] }`; the `nkeys` cargo feature).
    pub fn nats_nkey(mut self, seed_file: impl Into<PathBuf>) -> Self {
        self.nats_nkey = Some(seed_file.into());
        self
    }

    /// The settings of the environment: [`TLS_CA_ENV`], [`TLS_CERT_ENV`], [`TLS_KEY_ENV`],
    /// [`USER_ENV`], [`PASSWORD_ENV`], [`NATS_TOKEN_ENV`], [`NATS_CREDS_ENV`],
    /// [`NATS_NKEY_ENV`]. Empty variables count as unset.
    pub fn from_env() -> ConnectOptions {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let path = |name: &str| var(name).map(PathBuf::from);
        ConnectOptions {
            tls_ca: path(TLS_CA_ENV),
            tls_cert: path(TLS_CERT_ENV),
            tls_key: path(TLS_KEY_ENV),
            tls_required: false,
            user: var(USER_ENV),
            password: var(PASSWORD_ENV),
            token: var(NATS_TOKEN_ENV),
            nats_creds: path(NATS_CREDS_ENV),
            nats_nkey: path(NATS_NKEY_ENV),
        }
    }

    /// Each setting of `self`, else of `lower`. Credentials go as a whole: a user and password,
    /// a token, a `.creds` file or an NKey from `self` replace any login of `lower`.
    pub(crate) fn or(self, lower: ConnectOptions) -> ConnectOptions {
        let (tls_cert, tls_key) = match (self.tls_cert, self.tls_key) {
            (None, None) => (lower.tls_cert, lower.tls_key),
            pair => pair,
        };
        let login = self.user.is_some()
            || self.password.is_some()
            || self.token.is_some()
            || self.nats_creds.is_some()
            || self.nats_nkey.is_some();
        let (user, password, token, nats_creds, nats_nkey) = if login {
            (self.user, self.password, self.token, self.nats_creds, self.nats_nkey)
        } else {
            (lower.user, lower.password, lower.token, lower.nats_creds, lower.nats_nkey)
        };
        ConnectOptions {
            tls_ca: self.tls_ca.or(lower.tls_ca),
            tls_cert,
            tls_key,
            tls_required: self.tls_required || lower.tls_required,
            user,
            password,
            token,
            nats_creds,
            nats_nkey,
        }
    }

    /// True when a CA or client certificate is set, or TLS is required: TLS or nothing.
    pub(crate) fn wants_tls(&self) -> bool {
        self.tls_required || self.tls_ca.is_some() || self.tls_cert.is_some()
    }

    #[cfg(feature = "cli")]
    /// The file settings as URL query parameters (`tls_ca=...&creds=...`), percent-encoded;
    /// empty when there are none. Never the secrets.
    pub(crate) fn to_query(&self) -> String {
        let files = [
            ("tls_ca", &self.tls_ca),
            ("tls_cert", &self.tls_cert),
            ("tls_key", &self.tls_key),
            ("creds", &self.nats_creds),
            ("nkey", &self.nats_nkey),
        ];
        let mut pairs: Vec<String> = files
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|p| format!("{k}={}", percent_encode(&p.to_string_lossy()))))
            .collect();
        if self.tls_required {
            pairs.push("tls_required=true".into());
        }
        pairs.join("&")
    }

    /// Checks what can be checked before connecting: a certificate has its key, and every file
    /// named can be read. A [`Config`](ErrorKind::Config) error names the setting.
    pub(crate) fn validate(&self) -> Result<()> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => return Err(Error::config("a TLS client certificate is set without its key (tls_key)")),
            (None, Some(_)) => return Err(Error::config("a TLS client key is set without its certificate (tls_cert)")),
            _ => {}
        }
        let files = [
            ("tls_ca (MICRO_TLS_CA)", &self.tls_ca),
            ("tls_cert (MICRO_TLS_CERT)", &self.tls_cert),
            ("tls_key (MICRO_TLS_KEY)", &self.tls_key),
            ("creds (MICRO_NATS_CREDS)", &self.nats_creds),
            ("nkey (MICRO_NATS_NKEY)", &self.nats_nkey),
        ];
        for (what, path) in files {
            if let Some(path) = path {
                std::fs::File::open(path)
                    .map_err(|e| Error::config(format!("cannot read the {what} file {}: {e}", path.display())))?;
            }
        }
        Ok(())
    }
}

/// A transport URL split into what the backend's own client reads and these options: the URL
/// without the query parameters of [`ConnectOptions`], and the options of its query and its
/// user info. `nats_userinfo` reads a user part without a password as a token (NATS), else as
/// a user name.
pub(crate) fn split_url(url: &str, nats_userinfo: bool) -> Result<(String, ConnectOptions)> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, query),
        None => (url, ""),
    };
    let mut options = userinfo(base, nats_userinfo);
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(v);
        let path = || {
            if value.is_empty() {
                Err(Error::config(format!("the URL parameter {k} names no file")))
            } else {
                Ok(Some(PathBuf::from(&value)))
            }
        };
        match k {
            "tls_ca" => options.tls_ca = path()?,
            "tls_cert" => options.tls_cert = path()?,
            "tls_key" => options.tls_key = path()?,
            "creds" => options.nats_creds = path()?,
            "nkey" => options.nats_nkey = path()?,
            "tls_required" => {
                options.tls_required = match value.as_str() {
                    "" | "true" | "1" | "yes" => true,
                    "false" | "0" | "no" => false,
                    other => {
                        return Err(Error::config(format!("tls_required={other:?} in the URL: use true or false")))
                    }
                }
            }
            _ => rest.push(pair),
        }
    }
    let base = if rest.is_empty() { base.to_string() } else { format!("{base}?{}", rest.join("&")) };
    Ok((base, options))
}

/// The credentials of a URL's user info, percent-decoded.
fn userinfo(url: &str, nats: bool) -> ConnectOptions {
    let mut options = ConnectOptions::default();
    let Some((_, rest)) = url.split_once("://") else { return options };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let Some(at) = authority.rfind('@') else { return options };
    match authority[..at].split_once(':') {
        Some((user, password)) => {
            options.user = Some(percent_decode(user));
            options.password = Some(percent_decode(password));
        }
        None if nats => options.token = Some(percent_decode(&authority[..at])),
        None => options.user = Some(percent_decode(&authority[..at])),
    }
    options
}

/// The URL query parameters a transport URL may carry, for error messages.
#[cfg(feature = "nats")]
pub(crate) fn query_keys() -> &'static str {
    QUERY_KEYS
}

/// `%XX` escapes decoded (URLs keep reserved characters encoded).
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(feature = "cli")]
/// Everything but unreserved characters and `/` escaped, for a path in a URL query.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The TLS failure somewhere in an error's causes, if any: rustls' own error, which I/O errors
/// carry inside (and do not return as their `source`).
#[cfg(any(feature = "nats", feature = "tls"))]
pub(crate) fn tls_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(t) = c.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        if let Some(t) = c.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()).and_then(|i| tls_cause(i)) {
            return Some(t);
        }
        cause = c.source();
    }
    None
}

/// A TLS failure as a person can act on it, of kind [`ErrorKind::Tls`]: `broker` is e.g.
/// `NATS at tls://host:4222` (no credentials).
#[cfg(any(feature = "nats", feature = "tls"))]
pub(crate) fn tls_error(broker: &str, e: &rustls::Error) -> Error {
    use crate::error::ErrorKind;
    use rustls::{AlertDescription, CertificateError};
    let text = match e {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
            "{broker}: the server's certificate is not signed by a trusted CA (UnknownIssuer); give the CA that \
             signed it (tls_ca, MICRO_TLS_CA)"
        ),
        rustls::Error::InvalidCertificate(
            c @ (CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. }),
        ) => {
            format!("{broker}: the server's certificate is outside its validity period ({c:?})")
        }
        rustls::Error::InvalidCertificate(
            c @ (CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }),
        ) => {
            format!("{broker}: the server's certificate is not valid for the host in the URL ({c:?})")
        }
        rustls::Error::InvalidCertificate(c) => format!("{broker}: the server's certificate was refused ({c:?})"),
        rustls::Error::AlertReceived(
            a @ (AlertDescription::CertificateRequired
            | AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::HandshakeFailure),
        ) => format!(
            "{broker}: the server refused the TLS connection ({a:?}); it requires a client certificate \
             (tls_cert and tls_key, MICRO_TLS_CERT and MICRO_TLS_KEY) signed by a CA it trusts"
        ),
        other => format!("{broker}: TLS failed: {other} (is it a TLS port?)"),
    };
    Error::new(ErrorKind::Tls, text).with_source(e.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn user_info_is_percent_decoded() {
        assert_eq!(percent_decode("p%40ss%3Aw%2Fd"), "p@ss:w/d");
        assert_eq!(percent_decode("plain"), "plain");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%C3%A9t%C3%A9"), "été");
    }

    #[test]
    fn the_query_gives_files_and_keeps_other_parameters() {
        let (url, o) = split_url("tls://h:4222?tls_ca=/a%20b/ca.pem&bucket=x&tls_required", true).unwrap();
        assert_eq!(url, "tls://h:4222?bucket=x");
        assert_eq!(o.tls_ca.as_deref(), Some(Path::new("/a b/ca.pem")));
        assert!(o.tls_required && o.wants_tls());
        let (url, o) = split_url("amqps://u:p%40ss@h/%2f?heartbeat=5&tls_cert=c&tls_key=k", false).unwrap();
        assert_eq!(url, "amqps://u:p%40ss@h/%2f?heartbeat=5");
        assert_eq!((o.user.as_deref(), o.password.as_deref()), (Some("u"), Some("p@ss")));
        assert_eq!((o.tls_cert.as_deref(), o.tls_key.as_deref()), (Some(Path::new("c")), Some(Path::new("k"))));
        let (_, o) = split_url("nats://tok%2F@h:4222", true).unwrap();
        assert_eq!(o.token.as_deref(), Some("tok/"));
        assert!(split_url("nats://h?tls_ca=", true).is_err());
        assert!(split_url("nats://h?tls_required=maybe", true).is_err());
    }

    #[test]
    fn code_beats_url_beats_environment_and_logins_go_whole() {
        let url = ConnectOptions::new().tls_ca("url-ca").user_password("u", "p");
        let code = ConnectOptions::new().token("t");
        let merged = code.or(url);
        assert_eq!(merged.tls_ca.as_deref(), Some(Path::new("url-ca")));
        assert_eq!((merged.user, merged.password, merged.token.as_deref()), (None, None, Some("t")));
    }

    #[test]
    #[cfg(feature = "cli")]
    fn the_query_of_options_reads_back_the_same() {
        let o = ConnectOptions::new().tls_ca("/tmp/a b&c.pem").nats_creds("x.creds").require_tls();
        let (_, back) = split_url(&format!("nats://h?{}", o.to_query()), true).unwrap();
        assert_eq!(back, o);
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        assert!(!format!("{:?}", ConnectOptions::new().user_password("u", "secret")).contains("secret"));
    }
}
