//! Integration tests: real services over the memory transport and the NATS and RabbitMQ servers
//! on this machine (which must be running; those tests fail with a how-to when they are not).

/// Instantiates each `async fn case(url: String)` once per transport: memory, NATS and RabbitMQ
/// (the broker ones behind their features). Defined before the modules, so all can use it.
macro_rules! over_transports {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(#[actix::test] async fn $case() { super::$case(crate::util::memory_url()).await })*
        }
        over_brokers!($($case),*);
    };
}

/// As `over_transports!`, for the real brokers only (cases that cross processes).
macro_rules! over_brokers {
    ($($case:ident),* $(,)?) => {
        #[cfg(feature = "nats")]
        mod nats {
            $(#[actix::test] async fn $case() { super::$case(crate::util::nats_url()).await })*
        }
        #[cfg(feature = "rabbitmq")]
        mod amqp {
            $(#[actix::test] async fn $case() { super::$case(crate::util::amqp_url()).await })*
        }
    };
}

mod util;

mod audit;
#[cfg(feature = "auth")]
mod auth;
#[cfg(all(feature = "auth", feature = "gateway"))]
mod auth_gateway;
#[cfg(feature = "auth")]
mod auth_jwt;
#[cfg(feature = "bot")]
mod bot;
#[cfg(all(feature = "bot", feature = "gateway"))]
mod bot_slack;
#[cfg(feature = "bot")]
mod bot_xmpp;
#[cfg(feature = "cli")]
mod cli;
#[cfg(feature = "cli")]
mod cli_broker;
#[cfg(all(feature = "cli", feature = "redis"))]
mod cli_kv;
#[cfg(feature = "config")]
mod config;
mod conformance;
mod events;
mod faults;
#[cfg(feature = "gateway")]
mod gateway;
#[cfg(feature = "cli")]
mod health;
#[cfg(feature = "kv")]
mod kv;
#[cfg(feature = "cli")]
mod logs;
#[cfg(feature = "prometheus")]
mod metrics;
mod middleware;
#[cfg(feature = "nats")]
mod nats_micro;
#[cfg(feature = "nats")]
mod poison;
mod processes;
mod promises;
#[cfg(feature = "rabbitmq")]
mod rabbitmq;
mod recovery;
#[cfg(feature = "cli")]
mod sidecar;
mod subscriptions;
#[cfg(feature = "kv")]
mod sync;
#[cfg(feature = "nats")]
mod tls;
#[cfg(all(feature = "otel", feature = "gateway"))]
mod traces;
mod typed;
#[cfg(feature = "web")]
mod web;

/// Not a test: the entry point of child-process nodes (see `util::ChildNode`). Other tests run
/// this binary again with `--exact child_node --ignored` and `MICRO_TEST_CHILD_NODE` set; it is
/// ignored so that an ordinary run reports it as such instead of counting it as a pass.
#[test]
#[ignore = "the entry point of child-process nodes, started by other tests"]
fn child_node() {
    if let Ok(config) = std::env::var(util::CHILD_ENV) {
        util::run_child(serde_json::from_str(&config).expect("child config"));
    }
    #[cfg(feature = "web")]
    if let Ok(config) = std::env::var(web::CHILD_ENV) {
        web::run_child(serde_json::from_str(&config).expect("web child config"));
    }
    #[cfg(feature = "kv")]
    if let Ok(config) = std::env::var(sync::LEADER_CHILD_ENV) {
        sync::run_leader_child(serde_json::from_str(&config).expect("leader child config"));
    }
    if let Ok(config) = std::env::var(util::AUDIT_CHILD_ENV) {
        audit::run_child(serde_json::from_str(&config).expect("audit child config"));
    }
}
