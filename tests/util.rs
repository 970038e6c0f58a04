//! Shared test fixtures: greeter types and handlers, a counter actor, child-process nodes.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use actix::prelude::*;
use micro::prelude::*;
use serde::{Deserialize, Serialize};

#[allow(unused_imports)]
pub use micro::test_util::{amqp_url, memory_url, nats_url, unique, wait_for};

/// Generous bound for wait-for-condition loops (never a sleep).
pub const WAIT: Duration = Duration::from_secs(15);

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Hello {
    pub name: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Greeting {
    pub msg: String,
    pub node: String,
}

/// Which node answered (set per service with `.state(Label(..))`).
#[derive(Clone, Debug)]
pub struct Label(pub String);

pub async fn say_hello(Req(h): Req<Hello>, State(Label(node)): State<Label>) -> Result<Greeting, Status> {
    Ok(Greeting { msg: format!("Hello {}", h.name), node })
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Sleep {
    pub ms: u64,
}

pub async fn slow(Req(s): Req<Sleep>) -> Result<u64, Status> {
    tokio::time::sleep(Duration::from_millis(s.ms)).await;
    Ok(s.ms)
}

pub async fn boom(Req(_): Req<serde_json::Value>) -> Result<(), Status> {
    panic!("boom (this panic is part of a test)");
}

/// A greeter node labelled `label` on `url`.
pub fn greeter(url: &str, name: &str, label: &str) -> micro::ServiceBuilder {
    Service::builder(name)
        .version("1.0.0")
        .transport(url)
        .state(Label(label.to_string()))
        .handle("Say.Hello", say_hello)
        .idempotent("Say.Hello")
        .handle("Say.Slow", slow)
        .handle("Say.Boom", boom)
}

#[derive(Default)]
pub struct Counter {
    pub n: u64,
}

impl Actor for Counter {
    type Context = Context<Self>;
}

#[derive(Serialize, Deserialize, Message)]
#[rtype(result = "Result<u64, Status>")]
pub struct Add {
    pub by: u64,
}

#[derive(Serialize, Deserialize, Message)]
#[rtype(result = "Result<u64, Status>")]
pub struct Crash {}

impl Handler<Add> for Counter {
    type Result = Result<u64, Status>;
    fn handle(&mut self, m: Add, _: &mut Context<Self>) -> Self::Result {
        self.n += m.by;
        Ok(self.n)
    }
}

impl Handler<Crash> for Counter {
    type Result = Result<u64, Status>;
    fn handle(&mut self, _: Crash, _: &mut Context<Self>) -> Self::Result {
        panic!("counter crashed (this panic is part of a test)");
    }
}

pub fn counter_endpoints() -> ActorEndpoints<Counter> {
    ActorEndpoints::new(Counter::default).route::<Add>("Counter.Add").route::<Crash>("Counter.Crash")
}

/// Configuration of a node run in a child process.
#[derive(Serialize, Deserialize, Debug)]
pub struct ChildConfig {
    pub url: String,
    pub service: String,
    pub label: String,
    pub max_restarts: u32,
    pub grace_ms: u64,
}

pub const CHILD_ENV: &str = "MICRO_TEST_CHILD_NODE";

/// A node in a child process (this test binary run again as `child_node`); killed on drop.
pub struct ChildNode {
    pub child: Child,
}

impl ChildNode {
    pub fn spawn(config: &ChildConfig) -> ChildNode {
        let exe = std::env::current_exe().expect("test binary path");
        let child = Command::new(exe)
            .args(["--exact", "child_node", "--nocapture", "--test-threads", "1"])
            .env(CHILD_ENV, serde_json::to_string(config).unwrap())
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn child node");
        ChildNode { child }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([&format!("-{sig}"), &self.child.id().to_string()]).status().unwrap();
        assert!(ok.success(), "kill -{sig} failed");
    }

    /// Sends SIGKILL and waits until the process is gone.
    pub async fn kill(&mut self) {
        self.signal("KILL");
        self.exit_code().await;
    }

    /// Waits for the process to exit and returns its exit code.
    pub async fn exit_code(&mut self) -> Option<i32> {
        wait_for("child to exit", WAIT, || {
            let status = self.child.try_wait().unwrap();
            async move { status }
        })
        .await
        .code()
    }
}

impl Drop for ChildNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of a child node: serve until signalled; exit 0 on a clean stop, 3 on error.
pub fn run_child(config: ChildConfig) -> ! {
    let code = actix_rt::System::new().block_on(async move {
        let svc = greeter(&config.url, &config.service, &config.label)
            .actors(counter_endpoints())
            .restart_policy(RestartPolicy::new(config.max_restarts, Duration::from_secs(60)))
            .grace_period(Duration::from_millis(config.grace_ms));
        match svc.run().await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("child node stopped: {e}");
                3
            }
        }
    });
    std::process::exit(code)
}
