//! `micro::bot` over a private IRC server (Debian's ngircd, on a free port in a temp dir) and a
//! second IRC client in the test; the services side over NATS and RabbitMQ.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use micro::bot::{Bot, BotConfig, CommandExec, CommandHelp, CommandResult, Input, IrcConfig, IrcInput};
use micro::prelude::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::util::*;

over_brokers!(the_bot_answers_in_irc_runs_command_services_and_reconnects);

const NGIRCD: &str = "/usr/sbin/ngircd";
const CHANNEL: &str = "#ops";
const BOT_NICK: &str = "micro";

/// A private ngircd, killed on drop.
struct PrivateIrc {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateIrc {
    async fn start() -> PrivateIrc {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("micro-irc-{port}-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        // No penalties: the bot sends a table as several lines at once.
        let conf = format!(
            "[Global]\nName = irc.test\nInfo = test\nListen = 127.0.0.1\nPorts = {port}\nMotdPhrase = test\n\
             [Limits]\nMaxConnectionsIP = 0\nMaxPenaltyTime = 0\nPingTimeout = 30\n\
             [Options]\nDNS = no\nIdent = no\nPAM = no\n"
        );
        std::fs::write(dir.join("ngircd.conf"), conf).unwrap();
        let mut irc = PrivateIrc { port, dir, child: None };
        irc.spawn().await;
        irc
    }

    async fn spawn(&mut self) {
        let exe = if std::path::Path::new(NGIRCD).exists() { NGIRCD } else { "ngircd" };
        let child = Command::new(exe)
            .args(["-n", "-f"])
            .arg(self.dir.join("ngircd.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run ngircd ({e}); install it with: apt-get install -y ngircd"));
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + WAIT;
        while TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "ngircd did not listen on {}", self.port);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }
}

impl Drop for PrivateIrc {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A person in the channel: a plain IRC client.
struct Person {
    nick: String,
    lines: tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    write: tokio::net::tcp::OwnedWriteHalf,
}

impl Person {
    async fn join(port: u16, nick: &str) -> Person {
        let (read, write) = TcpStream::connect(("127.0.0.1", port)).await.unwrap().into_split();
        let mut p = Person { nick: nick.to_string(), lines: BufReader::new(read).lines(), write };
        p.send(&format!("NICK {nick}\r\nUSER {nick} 0 * :{nick}\r\n")).await;
        p.wait_for(|l| l.contains(" 376 ") || l.contains(" 422 ")).await; // end of MOTD
        p.send(&format!("JOIN {CHANNEL}\r\n")).await;
        p.wait_for(|l| l.contains(" 366 ")).await; // end of NAMES: joined
        p
    }

    async fn send(&mut self, raw: &str) {
        self.write.write_all(raw.as_bytes()).await.unwrap();
    }

    /// Says `text` in the channel, and waits until the server has taken it.
    async fn say(&mut self, text: &str) {
        self.send(&format!("PRIVMSG {CHANNEL} :{text}\r\nPING :said\r\n")).await;
        self.wait_for(|l| l.contains("PONG") && l.ends_with(":said")).await;
    }

    /// Reads lines (answering PINGs) until one matches; every line read is returned.
    async fn wait_for(&mut self, done: impl Fn(&str) -> bool) -> Vec<String> {
        let mut seen = Vec::new();
        let read = async {
            loop {
                let line = self.lines.next_line().await.unwrap().expect("the server closed the connection");
                if let Some(token) = line.strip_prefix("PING ") {
                    self.write.write_all(format!("PONG {token}\r\n").as_bytes()).await.unwrap();
                    continue;
                }
                let hit = done(&line);
                seen.push(line);
                if hit {
                    return;
                }
            }
        };
        let waited = tokio::time::timeout(WAIT, read).await;
        assert!(waited.is_ok(), "{}: no matching line in {WAIT:?}; read {seen:#?}", self.nick);
        seen
    }

    /// The bot's lines in the channel until one contains `needle`.
    async fn bot_says(&mut self, needle: &str) -> Vec<String> {
        let from_bot = format!(":{BOT_NICK}!");
        let lines = self.wait_for(|l| l.starts_with(&from_bot) && l.contains(needle)).await;
        lines.into_iter().filter(|l| l.starts_with(&from_bot)).collect()
    }

    /// Asks `command` until the answer contains `needle` (the bot may not be there yet, or a
    /// service not yet seen): every try waits for the bot's answer to an echo after it.
    async fn ask_until(&mut self, command: &str, needle: &str) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        for n in 0.. {
            let marker = format!("done-{n}");
            self.say(&format!("!{command}")).await;
            self.say(&format!("!echo {marker}")).await;
            let lines = self.bot_says(&marker).await;
            if lines.iter().any(|l| l.contains(needle)) {
                return lines;
            }
            assert!(tokio::time::Instant::now() < deadline, "`{command}` never answered {needle:?}: {lines:#?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        unreachable!()
    }

    /// Waits until the bot answers here (it joins after connecting, and again after a restart).
    async fn until_bot_here(&mut self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        for n in 0.. {
            let marker = format!("ready-{n}");
            self.say(&format!("!echo {marker}")).await;
            let from_bot = format!(":{BOT_NICK}!");
            let read = self.wait_for(|l| (l.starts_with(&from_bot) && l.contains("ready-")) || l.contains(" JOIN "));
            let lines = tokio::time::timeout(Duration::from_millis(500), read).await.unwrap_or_default();
            if lines.iter().any(|l| l.starts_with(&from_bot) && l.contains("ready-")) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "the bot never answered in {CHANNEL}");
        }
    }
}

async fn deploy_help(Req(_): Req<serde_json::Value>) -> Result<CommandHelp, Status> {
    Ok(CommandHelp { usage: "deploy SERVICE VERSION".into(), description: "rolls a version out".into() })
}

/// Answers with the words it got and who asked (the bot's metadata).
async fn deploy_exec(Req(e): Req<CommandExec>, Meta(m): Meta) -> Result<CommandResult, Status> {
    let who = m.get("bot-user").unwrap_or("nobody").to_string();
    Ok(CommandResult { result: format!("deploying {} for {who}", e.args[1..].join(" ")), error: String::new() })
}

async fn the_bot_answers_in_irc_runs_command_services_and_reconnects(url: String) {
    let mut irc = PrivateIrc::start().await;
    let id = uuid::Uuid::now_v7().simple().to_string();
    let greeter_name = format!("test.bot.{id}.greeter");
    let namespace = format!("go.micro.bot.t{id}");
    let greeter_svc = greeter(&url, &greeter_name, "a").start().await.unwrap();

    let client = Client::connect(&url).await.unwrap();
    let mut config = BotConfig::default()
        .user("alice")
        .allow_call(&greeter_name)
        .namespace(&namespace)
        .timeout(Duration::from_secs(5));
    config.max_lines = 400;
    config.max_chars = 100_000;
    let irc_config = IrcConfig::new("127.0.0.1", irc.port, BOT_NICK).channel(CHANNEL);
    config.rooms.push(CHANNEL.to_string());
    let inputs: Vec<Box<dyn Input>> = vec![Box::new(IrcInput::new(irc_config))];
    let bot = actix::spawn(Bot::new(client, config).run(inputs));

    let mut alice = Person::join(irc.port, "alice").await;
    let mut mallory = Person::join(irc.port, "mallory").await;
    alice.until_bot_here().await;

    // Someone outside the allowlist is ignored: the answer to alice's echo comes, mallory's never.
    mallory.say("!echo from-mallory").await;
    let lines = alice.ask_until("echo from-alice", "from-alice").await;
    assert!(!lines.iter().any(|l| l.contains("from-mallory")), "answered mallory: {lines:#?}");

    alice.ask_until("services", &greeter_name).await;
    alice.ask_until(&format!("call {greeter_name} Say.Hello {{\"name\": \"John\"}}"), "Hello John").await;
    alice.ask_until("frobnicate now", "usage:").await;
    alice.ask_until("call", "usage: call SERVICE ENDPOINT {json}").await;
    alice.ask_until("call go.micro.srv.other X {}", "call is not allowed for go.micro.srv.other").await;

    // A command service started now becomes a command; stopped, it is gone.
    alice.ask_until("deploy greeter 1.2.0", "unknown command `deploy`").await;
    let deploy = Service::builder(format!("{namespace}.deploy"))
        .transport(&url)
        .handle("Command.Help", deploy_help)
        .handle("Command.Exec", deploy_exec)
        .start()
        .await
        .unwrap();
    alice.ask_until("deploy greeter 1.2.0", "deploying greeter 1.2.0 for alice").await;
    alice.ask_until("help", "deploy SERVICE VERSION: rolls a version out").await;
    deploy.stop().await.unwrap();
    alice.ask_until("deploy greeter 1.2.0", "unknown command `deploy`").await;

    // The chat server restarts: the bot comes back by itself.
    drop((alice, mallory));
    irc.restart().await;
    let mut alice = Person::join(irc.port, "alice").await;
    alice.until_bot_here().await;
    alice.ask_until(&format!("call {greeter_name} Say.Hello {{\"name\": \"John\"}}"), "Hello John").await;

    bot.abort();
    greeter_svc.stop().await.unwrap();
}
