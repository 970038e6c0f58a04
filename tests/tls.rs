//! TLS and logins to the brokers, on private servers with certificates made here (rcgen): a
//! CA, a server certificate for 127.0.0.1 and localhost, a client certificate, and the ones
//! that must be refused (another CA's trust, an expired server certificate). A wrong CA, a
//! missing client certificate or a wrong login fails the first connection at once with a typed
//! error that says which; the right settings carry calls and events. Never the shared servers.

use std::path::PathBuf;

use futures::StreamExt;
use micro::broker::{Broker, SubscribeOptions};
use micro::prelude::*;
use micro::transport::{connect_with, ConnectOptions};
use micro::ErrorKind;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

use crate::util::*;

/// A CA and the certificates it signed, as PEM files in a temp dir (removed on drop), plus a
/// CA of another authority that signed nothing here.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        let dir = std::env::temp_dir().join(format!("micro-pki-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = authority("actix-micro test CA");
        let other = authority("someone else's CA");
        let files = [
            ("ca.pem", ca.pem()),
            ("other-ca.pem", other.pem()),
            ("server", leaf(&ca, &["localhost", "127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth, false)),
            ("expired", leaf(&ca, &["localhost", "127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth, true)),
            ("client", leaf(&ca, &["micro-client"], ExtendedKeyUsagePurpose::ClientAuth, false)),
            ("stranger", leaf(&other, &["micro-client"], ExtendedKeyUsagePurpose::ClientAuth, false)),
        ];
        for (name, pem) in files {
            match pem.split_once("\0") {
                Some((cert, key)) => {
                    std::fs::write(dir.join(format!("{name}.pem")), cert).unwrap();
                    std::fs::write(dir.join(format!("{name}-key.pem")), key).unwrap();
                }
                None => std::fs::write(dir.join(name), pem).unwrap(),
            }
        }
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A path as a URL query value (temp dirs have no reserved characters).
    fn query(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    #[cfg(all(feature = "rabbitmq", feature = "tls"))]
    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.path(name)).unwrap()
    }

    /// Trust our CA.
    fn trust(&self) -> ConnectOptions {
        ConnectOptions::new().tls_ca(self.path("ca.pem"))
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

/// A certificate and its key, PEM, separated by a NUL.
fn leaf(
    ca: &CertifiedIssuer<'static, KeyPair>,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
    expired: bool,
) -> String {
    let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, names[0]);
    p.extended_key_usages = vec![usage];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    if expired {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, ca).unwrap();
    format!("{}\0{}", cert.pem(), key.serialize_pem())
}

/// A private nats-server speaking TLS only with `server` (`server.pem`, or `expired.pem`);
/// `verify` requires a client certificate signed by our CA; `authorization` is the server's
/// block of that name (empty: anonymous).
async fn tls_nats(pki: &Pki, server: &str, verify: bool, authorization: &str) -> PrivateNats {
    let config = format!(
        "jetstream {{\n  store_dir: \"x\"\n}}\ntls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  verify: {verify}\n  timeout: 5\n}}\n{authorization}\n",
        pki.path(&format!("{server}.pem")),
        pki.path(&format!("{server}-key.pem")),
        pki.path("ca.pem"),
    );
    PrivateNats::start_with_config(&config, &[]).await
}

fn tls_url(nats: &PrivateNats) -> String {
    format!("tls://127.0.0.1:{}", nats.port)
}

/// A first connection that fails: at once (within `WAIT`, never a hang), with this kind.
async fn refused(url: &str, options: &ConnectOptions, kind: ErrorKind) -> String {
    let e = tokio::time::timeout(WAIT, connect_with(url, options))
        .await
        .unwrap_or_else(|_| panic!("connecting to {url} hung"))
        .expect_err("the connection must be refused");
    assert_eq!(e.kind(), kind, "{e}");
    e.to_string()
}

/// A service and a client that reach each other through `url` with `options`: a call and an event.
async fn call_and_event(url: &str, options: &ConnectOptions) {
    let name = unique("greeter");
    let svc = greeter(url, &name, "tls").connect_options(options.clone()).start().await.unwrap();
    let client = Client::builder().transport(url).connect_options(options.clone()).connect().await.unwrap();
    let g: Greeting = client.call(&name, "Say.Hello", &Hello { name: "TLS".into() }).await.unwrap();
    assert_eq!(g, Greeting { msg: "Hello TLS".into(), node: "tls".into() });

    let transport = connect_with(url, options).await.unwrap();
    let broker = Broker::new(transport.clone(), "tls-test");
    let topic = format!("{}.sealed", unique("order"));
    let mut events = broker.subscribe(&topic, SubscribeOptions::broadcast()).await.unwrap();
    // A round trip on the subscriber's connection (a request nobody answers): past it, the broker
    // has the subscription (a flush only writes it out).
    let nobody = transport.request(&unique("nobody"), &micro::message::Message::default(), WAIT).await.unwrap_err();
    assert_eq!(nobody.kind(), ErrorKind::Unavailable, "{nobody}");
    let id = client.publish(&topic, &serde_json::json!({ "n": 1 })).await.unwrap();
    let got = tokio::time::timeout(WAIT, events.next()).await.expect("the event").unwrap();
    assert_eq!(got.id, id);
    svc.stop().await.unwrap();
    transport.close().await.unwrap();
}

#[actix::test]
async fn nats_over_tls_with_our_ca_carries_calls_and_events() {
    let pki = Pki::new();
    let nats = tls_nats(&pki, "server", false, "").await;
    // The CA in code, and in the URL's query.
    call_and_event(&tls_url(&nats), &pki.trust()).await;
    let in_query = format!("{}?tls_ca={}", tls_url(&nats), pki.query("ca.pem"));
    call_and_event(&in_query, &ConnectOptions::new()).await;
    // nats:// to a server that requires TLS: upgraded, with the same trust.
    call_and_event(&nats.url(), &pki.trust()).await;
}

#[actix::test]
async fn nats_refuses_a_server_certificate_it_cannot_trust_at_once() {
    let pki = Pki::new();
    let nats = tls_nats(&pki, "server", false, "").await;
    let other = ConnectOptions::new().tls_ca(pki.path("other-ca.pem"));
    let text = refused(&tls_url(&nats), &other, ErrorKind::Tls).await;
    assert!(text.contains("TLS verification failed") && text.contains("not signed by a trusted CA"), "{text}");
    // No CA at all: the system's roots do not know ours either.
    let text = refused(&tls_url(&nats), &ConnectOptions::new(), ErrorKind::Tls).await;
    assert!(text.contains("not signed by a trusted CA"), "{text}");
    // A nats:// URL with a CA never falls back to a plain connection either.
    refused(&nats.url(), &other, ErrorKind::Tls).await;

    let expired = tls_nats(&pki, "expired", false, "").await;
    let text = refused(&tls_url(&expired), &pki.trust(), ErrorKind::Tls).await;
    assert!(text.contains("validity"), "{text}");
}

#[actix::test]
async fn nats_with_verify_takes_our_client_certificate_and_refuses_none_or_a_stranger() {
    let pki = Pki::new();
    let nats = tls_nats(&pki, "server", true, "").await;
    let with_cert = pki.trust().tls_client_cert(pki.path("client.pem"), pki.path("client-key.pem"));
    call_and_event(&tls_url(&nats), &with_cert).await;

    let text = refused(&tls_url(&nats), &pki.trust(), ErrorKind::Tls).await;
    assert!(text.contains("client certificate"), "{text}");
    let stranger = pki.trust().tls_client_cert(pki.path("stranger.pem"), pki.path("stranger-key.pem"));
    let text = refused(&tls_url(&nats), &stranger, ErrorKind::Tls).await;
    assert!(text.contains("client certificate"), "{text}");
}

#[actix::test]
async fn nats_user_password_and_token_logins_are_checked() {
    let pki = Pki::new();
    let users = tls_nats(&pki, "server", false, "authorization {\n  user: micro\n  password: \"s3cret\"\n}").await;
    let right = pki.trust().user_password("micro", "s3cret");
    call_and_event(&tls_url(&users), &right).await;
    // In the URL, and the options' login before the URL's.
    let in_url = format!("tls://micro:s3cret@127.0.0.1:{}", users.port);
    connect_with(&in_url, &pki.trust()).await.unwrap().close().await.unwrap();
    let text = refused(&in_url, &pki.trust().user_password("micro", "wrong-secret"), ErrorKind::BrokerAuth).await;
    assert!(text.contains("authentication failed") && !text.contains("wrong-secret"), "{text}");
    let text = refused(&tls_url(&users), &pki.trust(), ErrorKind::BrokerAuth).await;
    assert!(text.contains("no credentials"), "{text}");

    let tokens = tls_nats(&pki, "server", false, "authorization {\n  token: \"t0ken\"\n}").await;
    call_and_event(&tls_url(&tokens), &pki.trust().token("t0ken")).await;
    let text = refused(&tls_url(&tokens), &pki.trust().token("n0pe"), ErrorKind::BrokerAuth).await;
    assert!(text.contains("the token") && !text.contains("n0pe"), "{text}");
}

#[actix::test]
async fn nats_nkey_logins_are_checked() {
    let pki = Pki::new();
    let user = nkeys::KeyPair::new_user();
    let config = format!("authorization {{\n  users = [ {{ nkey: {} }} ]\n}}", user.public_key());
    let nats = tls_nats(&pki, "server", false, &config).await;
    std::fs::write(pki.path("user.nk"), user.seed().unwrap()).unwrap();
    call_and_event(&tls_url(&nats), &pki.trust().nats_nkey(pki.path("user.nk"))).await;
    // In the URL's query too.
    let in_query = format!("{}?tls_ca={}&nkey={}", tls_url(&nats), pki.query("ca.pem"), pki.query("user.nk"));
    connect_with(&in_query, &ConnectOptions::new()).await.unwrap().close().await.unwrap();

    std::fs::write(pki.path("other.nk"), nkeys::KeyPair::new_user().seed().unwrap()).unwrap();
    let text = refused(&tls_url(&nats), &pki.trust().nats_nkey(pki.path("other.nk")), ErrorKind::BrokerAuth).await;
    assert!(text.contains("the NKey"), "{text}");
    // A .creds file needs an operator (JWT) setup on the server; a file that is none is refused here.
    std::fs::write(pki.path("bad.creds"), "not a creds file").unwrap();
    refused(&tls_url(&nats), &pki.trust().nats_creds(pki.path("bad.creds")), ErrorKind::Config).await;
}

#[actix::test]
async fn settings_that_cannot_work_are_config_errors_before_connecting() {
    let pki = Pki::new();
    // Nothing listens there: each must fail on its settings, not on the connection.
    let url = format!("tls://127.0.0.1:{}", free_port());
    let missing = ConnectOptions::new().tls_ca(pki.path("nowhere.pem"));
    let text = refused(&url, &missing, ErrorKind::Config).await;
    assert!(text.contains("nowhere.pem") && text.contains("tls_ca"), "{text}");
    let text =
        refused(&format!("{url}?tls_cert={}", pki.query("client.pem")), &ConnectOptions::new(), ErrorKind::Config)
            .await;
    assert!(text.contains("without its key"), "{text}");
    let text = refused(&format!("{url}?tls_cafile=x"), &ConnectOptions::new(), ErrorKind::Config).await;
    assert!(text.contains("tls_cafile") && text.contains("tls_ca"), "{text}");
    let amqp = format!("amqp://guest:guest@127.0.0.1:{}/%2f", free_port());
    let text = refused(&amqp, &pki.trust(), ErrorKind::Config).await;
    assert!(text.contains("amqps://"), "{text}");
    let text = refused(&amqp.replace("amqp:", "amqps:"), &ConnectOptions::new().token("t"), ErrorKind::Config).await;
    assert!(text.contains("NATS login"), "{text}");
}

/// A private RabbitMQ node with only a TLS listener, our server certificate and CA.
#[cfg(all(feature = "rabbitmq", feature = "tls"))]
async fn tls_rabbit(pki: &Pki) -> PrivateRabbit {
    let files = [
        ("ca.pem", pki.read("ca.pem")),
        ("server.pem", pki.read("server.pem")),
        ("server-key.pem", pki.read("server-key.pem")),
    ];
    let files: Vec<(&str, &[u8])> = files.iter().map(|(n, c)| (*n, c.as_slice())).collect();
    PrivateRabbit::start_with(&files, |port, dir| {
        format!(
            "listeners.tcp = none\nlisteners.ssl.default = 127.0.0.1:{port}\nssl_options.cacertfile = {}\n\
             ssl_options.certfile = {}\nssl_options.keyfile = {}\nssl_options.verify = verify_none\n\
             ssl_options.fail_if_no_peer_cert = false\nssl_options.versions.1 = tlsv1.3\nssl_options.versions.2 = tlsv1.2\n",
            dir.join("ca.pem").display(),
            dir.join("server.pem").display(),
            dir.join("server-key.pem").display(),
        )
    })
    .await
}

#[cfg(all(feature = "rabbitmq", feature = "tls"))]
#[actix::test]
async fn rabbitmq_over_tls_with_our_ca_carries_calls_and_events_and_refuses_others() {
    let pki = Pki::new();
    let rabbit = tls_rabbit(&pki).await;
    let url = format!("amqps://127.0.0.1:{}/%2f", rabbit.port);
    // The CA and the login in code, and both in the URL.
    call_and_event(&url, &pki.trust().user_password("guest", "guest")).await;
    let in_url = format!("amqps://guest:guest@127.0.0.1:{}/%2f?tls_ca={}", rabbit.port, pki.query("ca.pem"));
    call_and_event(&in_url, &ConnectOptions::new()).await;

    let other = ConnectOptions::new().tls_ca(pki.path("other-ca.pem")).user_password("guest", "guest");
    let text = refused(&url, &other, ErrorKind::Tls).await;
    assert!(text.contains("RabbitMQ at") && text.contains("not signed by a trusted CA"), "{text}");
    let text = refused(&url, &pki.trust().user_password("guest", "wrong-secret"), ErrorKind::BrokerAuth).await;
    assert!(text.contains("refused the authentication") && !text.contains("wrong-secret"), "{text}");
}

#[cfg(all(feature = "rabbitmq", not(feature = "tls")))]
#[actix::test]
async fn amqps_without_the_tls_feature_names_it() {
    let text = refused("amqps://guest:guest@127.0.0.1:5671/%2f", &ConnectOptions::new(), ErrorKind::Config).await;
    assert!(text.contains("`tls` cargo feature"), "{text}");
}

/// The CLI's `--tls-ca` flag, and `MICRO_TLS_CA` in its environment, reach a TLS server.
#[cfg(feature = "cli")]
#[actix::test]
async fn the_cli_takes_the_ca_from_its_flag_or_the_environment() {
    let pki = Pki::new();
    let nats = tls_nats(&pki, "server", false, "").await;
    let url = tls_url(&nats);
    let name = unique("greeter");
    let svc = greeter(&url, &name, "cli").connect_options(pki.trust()).start().await.unwrap();
    let ca = pki.query("ca.pem");
    let run = |args: Vec<String>, env: Option<String>| {
        tokio::task::spawn_blocking(move || {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_micro"));
            cmd.args(&args).env_remove("MICRO_TRANSPORT").env_remove(micro::transport::TLS_CA_ENV);
            if let Some(ca) = env {
                cmd.env(micro::transport::TLS_CA_ENV, ca);
            }
            cmd.output().unwrap()
        })
    };
    let call = |extra: &[&str]| {
        let mut args: Vec<String> = vec!["--transport".into(), url.clone()];
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(["call".into(), name.clone(), "Say.Hello".into(), r#"{"name":"CLI"}"#.into()]);
        args
    };
    for (args, env) in [(call(&["--tls-ca", &ca]), None), (call(&[]), Some(ca.clone()))] {
        let out = run(args, env).await.unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("Hello CLI"),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = run(call(&["--tls-ca", &pki.query("other-ca.pem")]), None).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not signed by a trusted CA"), "{stderr}");
    svc.stop().await.unwrap();
}
