//! The secured link to NATS: [`ConnectOptions`] as async-nats options (TLS trust and client
//! certificate, user and password, token, NKey, `.creds`), and a failed first connection as
//! the error a person can act on.

use crate::error::{Error, ErrorKind, Result};
use crate::transport::options::{self, ConnectOptions};

/// Sets TLS and the login on async-nats' options. `options` are already merged (code, URL,
/// environment) and validated.
pub(crate) async fn apply(
    mut opts: async_nats::ConnectOptions,
    options: &ConnectOptions,
) -> Result<async_nats::ConnectOptions> {
    if let Some(ca) = &options.tls_ca {
        opts = opts.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&options.tls_cert, &options.tls_key) {
        opts = opts.add_client_certificate(cert.clone(), key.clone());
    }
    if options.wants_tls() {
        opts = opts.require_tls(true);
    }
    if let (Some(user), Some(password)) = (&options.user, &options.password) {
        opts = opts.user_and_password(user.clone(), password.clone());
    } else if let Some(user) = &options.user {
        return Err(Error::config(format!("the NATS user {user:?} has no password")));
    }
    if let Some(token) = &options.token {
        opts = opts.token(token.clone());
    }
    if let Some(path) = &options.nats_creds {
        opts = creds(opts, path).await?;
    }
    if let Some(path) = &options.nats_nkey {
        opts = nkey(opts, path)?;
    }
    Ok(opts)
}

#[cfg(feature = "nkeys")]
async fn creds(opts: async_nats::ConnectOptions, path: &std::path::Path) -> Result<async_nats::ConnectOptions> {
    opts.credentials_file(path).await.map_err(|e| {
        Error::config(format!("cannot use the NATS credentials file {}: {e}", path.display())).with_source(e)
    })
}

#[cfg(not(feature = "nkeys"))]
async fn creds(_: async_nats::ConnectOptions, path: &std::path::Path) -> Result<async_nats::ConnectOptions> {
    Err(Error::config(format!("the NATS credentials file {} needs the `nkeys` cargo feature", path.display())))
}

#[cfg(feature = "nkeys")]
fn nkey(opts: async_nats::ConnectOptions, path: &std::path::Path) -> Result<async_nats::ConnectOptions> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::config(format!("cannot read the NKey seed file {}: {e}", path.display())))?;
    // The file may hold comments and the public key too (as `nk -gen user -pubout` writes): the
    // seed is the line that starts with `S`.
    let seed = text.lines().map(str::trim).find(|l| l.starts_with('S') && l.len() > 50).ok_or_else(|| {
        Error::config(format!("the NKey seed file {} holds no seed (a line starting with SU)", path.display()))
    })?;
    Ok(opts.nkey(seed.to_string()))
}

#[cfg(not(feature = "nkeys"))]
fn nkey(_: async_nats::ConnectOptions, path: &std::path::Path) -> Result<async_nats::ConnectOptions> {
    Err(Error::config(format!("the NKey seed file {} needs the `nkeys` cargo feature", path.display())))
}

/// Why the first connection failed: the server refused the login
/// ([`ErrorKind::BrokerAuth`]), TLS failed ([`ErrorKind::Tls`]), or the server did not answer
/// ([`ErrorKind::Connect`]). `url` is without credentials.
pub(crate) fn connect_error(url: &str, options: &ConnectOptions, e: async_nats::ConnectError) -> Error {
    use async_nats::ConnectErrorKind as K;
    let broker = format!("NATS at {url}");
    if let Some(tls) = options::tls_cause(&e) {
        return options::tls_error(&broker, tls).with_source(e);
    }
    let (kind, text) = match e.kind() {
        K::AuthorizationViolation | K::Authentication => (ErrorKind::BrokerAuth, {
            let login = if options.nats_creds.is_some() {
                "the .creds file"
            } else if options.nats_nkey.is_some() {
                "the NKey"
            } else if options.token.is_some() {
                "the token"
            } else if options.user.is_some() {
                "the user name and password"
            } else {
                "no credentials: give them in the URL (nats://user:password@host), the options or the environment"
            };
            format!("{broker} refused the connection: authentication failed with {login} ({e})")
        }),
        K::Tls => (ErrorKind::Tls, format!("{broker}: TLS setup failed: {e} (check the tls_ca, tls_cert and tls_key files)")),
        K::ServerParse => (ErrorKind::Config, format!("{broker}: bad URL: {e}")),
        _ if e.to_string().contains("TLS") => (
            ErrorKind::Tls,
            format!("{broker}: TLS failed: {e} (the server and the URL disagree: use tls:// for a TLS server, nats:// otherwise)"),
        ),
        _ => (
            ErrorKind::Connect,
            format!("{broker} is unreachable: {e} (start one with `nats-server -js`, or `docker compose up -d nats`)"),
        ),
    };
    Error::new(kind, text).with_source(e)
}
