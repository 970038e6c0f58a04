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

/// Sets `subscriber` as this thread's default while the guard lives, seeing every callsite.
/// tracing caches whether a callsite is wanted when it is first hit, and while the process has
/// a single subscriber it asks only the hitting thread's default: a callsite first hit on
/// another test's thread (with no subscriber) would stay off here. A second, process-wide
/// subscriber makes it ask every live one; the rebuild covers callsites cached before.
#[allow(dead_code)]
pub fn scoped_subscriber(
    subscriber: impl tracing::Subscriber + Send + Sync + 'static,
) -> tracing::subscriber::DefaultGuard {
    static SECOND: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();
    SECOND.get_or_init(|| tracing::Dispatch::new(tracing_subscriber::registry()));
    let guard = tracing::subscriber::set_default(subscriber);
    tracing::callsite::rebuild_interest_cache();
    guard
}

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
        ChildNode::spawn_env(CHILD_ENV, config)
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

/// Configuration of the audit trail example's audit service run in a child process
/// (`audit::run_child`).
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct AuditChildConfig {
    pub url: String,
    pub db: std::path::PathBuf,
    pub prefix: String,
    pub ack_wait_ms: Option<u64>,
}

pub const AUDIT_CHILD_ENV: &str = "MICRO_TEST_CHILD_AUDIT";

impl ChildNode {
    /// This test binary run again as `child_node` (an ignored test) with `config` as JSON in `env`.
    pub fn spawn_env(env: &str, config: &impl Serialize) -> ChildNode {
        let exe = std::env::current_exe().expect("test binary path");
        let child = Command::new(exe)
            .args(["--exact", "child_node", "--ignored", "--nocapture", "--test-threads", "1"])
            .env(env, serde_json::to_string(config).unwrap())
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn child node");
        ChildNode { child }
    }

    /// Sends SIGTERM and returns the exit code once the process is gone.
    pub async fn terminate(&mut self) -> Option<i32> {
        self.signal("TERM");
        self.exit_code().await
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

/// A private `nats-server -js` on a free port with its store in a temp dir and its HTTP
/// monitoring (`/connz`, `/varz`) on another; killed on drop. For tests that must never touch
/// the shared server.
pub struct PrivateNats {
    pub port: u16,
    pub monitor_port: u16,
    dir: std::path::PathBuf,
    /// The config file (`-c`) and the environment its `$VARIABLE`s are read from.
    config: Option<(std::path::PathBuf, Vec<(String, String)>)>,
    child: Option<Child>,
}

impl PrivateNats {
    pub async fn start() -> PrivateNats {
        PrivateNats::launch(None, &[]).await
    }

    /// Started with the config text `config`, whose `store_dir` is replaced by the server's temp
    /// dir; its `$VARIABLE`s come from `env`. The port and monitoring flags override the text's.
    pub async fn start_with_config(config: &str, env: &[(&str, &str)]) -> PrivateNats {
        PrivateNats::launch(Some(config), env).await
    }

    async fn launch(config: Option<&str>, env: &[(&str, &str)]) -> PrivateNats {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("micro-nats-{port}-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = config.map(|text| {
            let store = dir.join("store");
            let (before, after) = text.split_once("store_dir:").expect("the config sets store_dir");
            let rest = after.split_once('\n').map_or("", |(_, rest)| rest);
            let path = dir.join("nats-server.conf");
            std::fs::write(&path, format!("{before}store_dir: {store:?}\n{rest}")).unwrap();
            (path, env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
        });
        let mut nats = PrivateNats { port, monitor_port: free_port(), dir, config, child: None };
        nats.spawn().await;
        nats
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) {
        let mut cmd = Command::new("nats-server");
        cmd.args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-m", &self.monitor_port.to_string()]);
        match &self.config {
            Some((path, env)) => {
                cmd.arg("-c").arg(path).envs(env.iter().map(|(k, v)| (k, v)));
            }
            None => {
                cmd.args(["-js", "-sd"]).arg(&self.dir);
            }
        }
        // Appended to across restarts.
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("nats-server.log")).unwrap();
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server must be installed for the NATS fault tests (apt-get install nats-server)");
        self.child = Some(child);
        let (port, monitor) = (self.port, self.monitor_port);
        let child = &mut self.child;
        let log = self.dir.join("nats-server.log");
        wait_for(&format!("private NATS on {port}"), Duration::from_secs(30), || {
            if let Some(status) = child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("nats-server exited ({status}): {}", std::fs::read_to_string(&log).unwrap_or_default());
            }
            let up = [port, monitor].iter().all(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok());
            async move { up.then_some(()) }
        })
        .await;
    }

    /// A monitoring endpoint's JSON, e.g. `/connz?state=closed`.
    pub fn monitor(&self, path: &str) -> serde_json::Value {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.monitor_port)).expect("NATS monitoring port");
        s.set_read_timeout(Some(WAIT)).unwrap();
        // HTTP/1.0: the server answers with the whole body and closes, never chunked.
        write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).expect("NATS monitoring answer");
        let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
        assert!(head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"), "GET {path}: {head}");
        serde_json::from_str(body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// What the server logged so far (errors, permission violations).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("nats-server.log")).unwrap_or_default()
    }

    /// SIGKILL: no goodbye to clients; what the server wrote stays in the OS page cache.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub async fn restart(&mut self) {
        self.spawn().await;
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A RabbitMQ node of our own on free ports and a temp dir, for fault tests that must never
/// touch the shared broker. Stopped and removed on drop.
#[cfg(feature = "rabbitmq")]
pub struct PrivateRabbit {
    pub node: String,
    pub port: u16,
    dir: std::path::PathBuf,
}

#[cfg(feature = "rabbitmq")]
impl PrivateRabbit {
    pub async fn start() -> PrivateRabbit {
        PrivateRabbit::start_with(&[], |port, _| format!("listeners.tcp.local = 127.0.0.1:{port}\n")).await
    }

    /// Started with `files` written to its dir (readable by the node: certificates) and the
    /// config `listeners(port, dir)` says (its listeners and their options).
    pub async fn start_with(
        files: &[(&str, &[u8])],
        listeners: impl FnOnce(u16, &std::path::Path) -> String,
    ) -> PrivateRabbit {
        use std::os::unix::fs::PermissionsExt;
        let port = free_port();
        let dist = free_port();
        let node = format!("micro-test-{}@localhost", uuid::Uuid::now_v7().simple());
        let dir = std::env::temp_dir().join(format!("micro-rabbit-{port}"));
        std::fs::create_dir_all(&dir).unwrap();
        // The node runs as the `rabbitmq` user (Debian's wrapper switches to it).
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        for (name, contents) in files {
            std::fs::write(dir.join(name), contents).unwrap();
            std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        std::fs::write(dir.join("rabbitmq.conf"), format!("{}loopback_users = none\n", listeners(port, &dir))).unwrap();
        std::fs::write(dir.join("plugins"), "[].\n").unwrap();
        std::fs::write(dir.join("env"), format!("NODENAME={node}\n")).unwrap();
        let status = Command::new("rabbitmq-server")
            .arg("-detached")
            .env("RABBITMQ_CONF_ENV_FILE", dir.join("env"))
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq.conf"))
            .env("RABBITMQ_NODENAME", &node)
            .env("RABBITMQ_NODE_PORT", port.to_string())
            .env("RABBITMQ_DIST_PORT", dist.to_string())
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("plugins"))
            .env("RABBITMQ_PID_FILE", dir.join("pid"))
            .stdout(Stdio::null())
            .status()
            .expect("rabbitmq-server must be installed for the RabbitMQ fault tests (apt-get install rabbitmq-server)");
        assert!(status.success(), "rabbitmq-server -detached failed");
        let rabbit = PrivateRabbit { node, port, dir };
        rabbit.wait_listening(true).await;
        rabbit
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    pub fn ctl(&self, args: &[&str]) {
        let out = Command::new("rabbitmqctl").arg("-n").arg(&self.node).args(args).output().expect("rabbitmqctl");
        assert!(out.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// `rabbitmqctl -q <args>` against this node (listings).
    pub fn ctl_list(&self, args: &[&str]) -> String {
        let out =
            Command::new("rabbitmqctl").arg("-q").arg("-n").arg(&self.node).args(args).output().expect("rabbitmqctl");
        assert!(out.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Stops the broker application: every client connection drops, the port closes.
    pub async fn stop_app(&self) {
        self.ctl(&["stop_app"]);
        self.wait_listening(false).await;
    }

    pub async fn start_app(&self) {
        self.ctl(&["start_app"]);
        self.wait_listening(true).await;
    }

    async fn wait_listening(&self, up: bool) {
        let port = self.port;
        wait_for(
            &format!("private RabbitMQ on {port} to be {}", if up { "up" } else { "down" }),
            Duration::from_secs(90),
            || async move { (std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() == up).then_some(()) },
        )
        .await
    }
}

#[cfg(feature = "rabbitmq")]
impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").arg("-n").arg(&self.node).arg("stop").output();
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `rabbitmqctl -q <args>` against the shared broker (read-only listings only).
#[cfg(feature = "rabbitmq")]
pub fn rabbitmqctl_list(args: &[&str]) -> String {
    let out = Command::new("rabbitmqctl").arg("-q").args(args).output().expect("rabbitmqctl");
    assert!(out.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The srv greeter an api greeter fixture calls.
#[cfg(feature = "gateway")]
#[derive(Clone, Debug)]
pub struct Backend(pub String);

/// An api service endpoint: `api::Request` in, a call to the srv greeter, `api::Response` out.
#[cfg(feature = "gateway")]
pub async fn api_say_hello(
    Req(req): Req<micro::api::Request>,
    client: Client,
    State(Backend(srv)): State<Backend>,
) -> Result<micro::api::Response, Status> {
    let name = req.query("name").ok_or_else(|| Status::bad_request("the name parameter is required"))?;
    let g: Greeting =
        client.call(&srv, "Say.Hello", &Hello { name: name.to_string() }).await.map_err(|e| e.to_status("api"))?;
    Ok(micro::api::Response::json(200, &serde_json::json!({ "message": g.msg })).with_header("X-Served-By", g.node))
}

/// A gateway on a free port, stopped on drop.
#[cfg(feature = "gateway")]
pub struct TestGateway {
    pub addr: std::net::SocketAddr,
    handle: actix_web::dev::ServerHandle,
}

#[cfg(feature = "gateway")]
impl TestGateway {
    pub async fn start(url: &str, config: micro::gateway::GatewayConfig) -> TestGateway {
        let client = Client::builder().name(micro::gateway::GATEWAY_ID).transport(url).connect().await.unwrap();
        let gateway = micro::gateway::Gateway::new(client, config);
        let server =
            actix_web::HttpServer::new(move || gateway.app()).workers(1).bind("127.0.0.1:0").expect("bind a free port");
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        TestGateway { addr, handle }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

#[cfg(feature = "gateway")]
impl Drop for TestGateway {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        actix_rt::spawn(async move { handle.stop(false).await });
    }
}
