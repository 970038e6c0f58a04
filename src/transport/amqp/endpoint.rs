//! Where and how to reach RabbitMQ: the URL as lapin parses it, the login from
//! [`ConnectOptions`] (code, then the URL, then the environment), and TLS for `amqps://`
//! (rustls, with the `tls` cargo feature): the CA to trust besides the system's and the client
//! certificate.

use std::time::Duration;

use lapin::tcp::OwnedTLSConfig;
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Connection, ConnectionProperties};

use crate::error::{Error, ErrorKind, Result};
use crate::transport::options::{self, ConnectOptions};
use crate::transport::redact;

/// One broker's address, login and TLS settings, kept for every reconnect.
pub(super) struct Endpoint {
    uri: AMQPUri,
    tls: OwnedTLSConfig,
    /// The URL without its credentials: fit to print.
    pub(super) shown: String,
}

impl Endpoint {
    /// Reads the URL and the options; a setting RabbitMQ cannot use, a TLS setting on an
    /// `amqp://` URL, or `amqps://` in a build without the `tls` feature is a
    /// [`Config`](ErrorKind::Config) error.
    pub(super) fn new(url: &str, code: &ConnectOptions) -> Result<Endpoint> {
        let (base, from_url) = options::split_url(url, false)?;
        let shown = redact(base.split_once('?').map_or(base.as_str(), |(b, _)| b));
        let options = code.clone().or(from_url).or(ConnectOptions::from_env());
        let nats_only = [
            ("a token", options.token.is_some()),
            ("a .creds file", options.nats_creds.is_some()),
            ("an NKey", options.nats_nkey.is_some()),
        ];
        if let Some((what, _)) = nats_only.iter().find(|(_, set)| *set) {
            return Err(Error::config(format!(
                "{what} is a NATS login; RabbitMQ at {shown} takes a user and password (in the URL, the options or \
                 MICRO_BROKER_USER and MICRO_BROKER_PASSWORD)"
            )));
        }
        options.validate()?;
        let mut uri: AMQPUri = base.parse().map_err(|e| Error::config(format!("bad RabbitMQ URL {shown:?}: {e}")))?;
        if let Some(user) = &options.user {
            uri.authority.userinfo.username = user.clone();
        }
        if let Some(password) = &options.password {
            uri.authority.userinfo.password = password.clone();
        }
        let tls = match uri.scheme {
            AMQPScheme::AMQP if options.wants_tls() => {
                return Err(Error::config(format!(
                    "TLS settings (a CA, a client certificate, tls_required) are given for {shown}, which is not TLS: \
                     use amqps://"
                )))
            }
            AMQPScheme::AMQP => OwnedTLSConfig::default(),
            AMQPScheme::AMQPS => tls_config(&shown, &options)?,
        };
        Ok(Endpoint { uri, tls, shown })
    }

    /// Opens a connection (within 5 s); a failed TLS handshake is an [`ErrorKind::Tls`] error.
    pub(super) async fn open(&self) -> Result<Connection> {
        let props = ConnectionProperties::default().with_connection_name("actix-micro".into());
        let builder = lapin::DefaultConnectionBuilder::new()
            .map_err(|e| Error::transport(format!("RabbitMQ: {e}")).with_source(e))?
            .with_uri(self.uri.clone())
            .with_properties(props)
            .with_tls_config(self.tls.clone());
        tokio::time::timeout(Duration::from_secs(5), builder.connect())
            .await
            .map_err(|_| Error::new(ErrorKind::Connect, "connection attempt timed out"))?
            .map_err(|e| self.failed(e))
    }

    fn failed(&self, e: lapin::Error) -> Error {
        #[cfg(feature = "tls")]
        if let Some(tls) = options::tls_cause(&e) {
            return options::tls_error(&format!("RabbitMQ at {}", self.shown), tls).with_source(e);
        }
        Error::transport(format!("RabbitMQ: {e}")).with_source(e)
    }
}

#[cfg(feature = "tls")]
fn tls_config(_shown: &str, options: &ConnectOptions) -> Result<OwnedTLSConfig> {
    use lapin::tcp::OwnedIdentity;
    let read = |what: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| Error::config(format!("cannot read the {what} file {}: {e}", path.display())))
    };
    let cert_chain = match &options.tls_ca {
        Some(ca) => Some(String::from_utf8_lossy(&read("TLS CA", ca)?).into_owned()),
        None => None,
    };
    let identity = match (&options.tls_cert, &options.tls_key) {
        (Some(cert), Some(key)) => {
            Some(OwnedIdentity::PKCS8 { pem: read("TLS certificate", cert)?, key: read("TLS key", key)? })
        }
        _ => None,
    };
    Ok(OwnedTLSConfig { identity, cert_chain })
}

#[cfg(not(feature = "tls"))]
fn tls_config(shown: &str, _: &ConnectOptions) -> Result<OwnedTLSConfig> {
    Err(Error::config(format!("{shown} is TLS (amqps://), which needs the `tls` cargo feature")))
}
