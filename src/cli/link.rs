//! `--tls-ca`, `--tls-cert`, `--tls-key`, `--nats-creds`, `--nats-nkey`: how the CLI reaches a
//! secured broker. They become the transport URL's query (and a NATS kv URL's), so every
//! command (and the gateway, the web dashboard, the sidecar, the bot) connects with them; the
//! environment's `MICRO_TLS_CA` and the others apply as they do to any program.

use std::path::PathBuf;

use clap::Args;

use crate::transport::ConnectOptions;

/// TLS and login files for the broker.
#[derive(Debug, Default, Args)]
pub struct LinkArgs {
    /// PEM file of the CA that signed the broker's certificate (tls://, amqps://; on nats:// it
    /// makes TLS required) [env: MICRO_TLS_CA].
    #[arg(long, global = true, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for a broker that requires one; with --tls-key [env: MICRO_TLS_CERT].
    #[arg(long, global = true, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM) [env: MICRO_TLS_KEY].
    #[arg(long, global = true, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// NATS credentials file (user JWT and NKey seed, as nsc writes it) [env: MICRO_NATS_CREDS].
    #[arg(long, global = true, value_name = "FILE")]
    pub nats_creds: Option<PathBuf>,
    /// File holding a NATS NKey seed (SU...) to log in with [env: MICRO_NATS_NKEY].
    #[arg(long, global = true, value_name = "FILE")]
    pub nats_nkey: Option<PathBuf>,
}

impl LinkArgs {
    /// The flags as URL query parameters (`tls_ca=...&tls_cert=...`), empty when none is given.
    pub(super) fn query(&self) -> String {
        let mut o = ConnectOptions::new();
        o.tls_ca = self.tls_ca.clone();
        o.tls_cert = self.tls_cert.clone();
        o.tls_key = self.tls_key.clone();
        o.nats_creds = self.nats_creds.clone();
        o.nats_nkey = self.nats_nkey.clone();
        o.to_query()
    }
}

/// `url` with `query` appended to its own query (a broker URL: nats, tls, amqp, amqps).
pub(super) fn with_query(url: &str, query: &str) -> String {
    let broker = ["nats://", "tls://", "amqp://", "amqps://"].iter().any(|s| url.starts_with(s));
    if query.is_empty() || !broker {
        return url.to_string();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{query}")
}

/// The names of the flags, for the hidden stand-ins of commands that reach no broker.
pub(super) const FLAGS: [(&str, &str); 5] = [
    ("tls_ca", "tls-ca"),
    ("tls_cert", "tls-cert"),
    ("tls_key", "tls-key"),
    ("nats_creds", "nats-creds"),
    ("nats_nkey", "nats-nkey"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_join_the_broker_urls_query() {
        let args = LinkArgs { tls_ca: Some("/etc/ca dir/ca.pem".into()), ..Default::default() };
        let q = args.query();
        assert_eq!(q, "tls_ca=/etc/ca%20dir/ca.pem");
        assert_eq!(with_query("tls://h:4222", &q), "tls://h:4222?tls_ca=/etc/ca%20dir/ca.pem");
        assert_eq!(with_query("nats://h?bucket=b", &q), "nats://h?bucket=b&tls_ca=/etc/ca%20dir/ca.pem");
        assert_eq!(with_query("redis://h", &q), "redis://h");
        assert_eq!(with_query("memory://", &q), "memory://");
        assert_eq!(with_query("tls://h", ""), "tls://h");
    }
}
