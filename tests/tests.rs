//! Integration tests: real services over the memory transport and the NATS and RabbitMQ servers
//! on this machine (which must be running; those tests fail with a how-to when they are not).

mod util;

mod conformance;
#[cfg(feature = "gateway")]
mod gateway;
mod processes;
#[cfg(feature = "rabbitmq")]
mod rabbitmq;

/// Not a test: the entry point of child-process nodes (see `util::ChildNode`). Other tests run
/// this binary again with `--exact child_node` and `MICRO_TEST_CHILD_NODE` set; without that
/// variable it returns at once.
#[test]
fn child_node() {
    if let Ok(config) = std::env::var(util::CHILD_ENV) {
        util::run_child(serde_json::from_str(&config).expect("child config"));
    }
}
