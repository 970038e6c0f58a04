//! `micro::bot` over a private XMPP server (Debian's Prosody, on a free port in a temp dir) with
//! a second XMPP client in the test: a multi-user chat room and direct messages; the services
//! side over NATS and RabbitMQ.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::Duration;

use futures::StreamExt;
use micro::bot::{Bot, BotConfig, Input, XmppConfig, XmppInput};
use micro::prelude::*;
use tokio_xmpp::connect::DnsConfig;
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::parsers::message::{Lang, Message, MessageType};
use tokio_xmpp::parsers::muc::muc::{History, Muc};
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::{Client as XmppClient, Event, Stanza};

use crate::util::*;

over_brokers!(the_bot_answers_in_xmpp_rooms_and_direct_messages_and_reconnects);

const ROOM: &str = "ops@conference.localhost";
const BOT_NICK: &str = "micro";

/// A private Prosody, killed on drop.
struct PrivateXmpp {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateXmpp {
    async fn start(users: &[&str]) -> PrivateXmpp {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("micro-xmpp-{port}-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let d = dir.display();
        let conf = format!(
            "run_as_root = true\ndaemonize = false\npidfile = \"{d}/prosody.pid\"\ndata_path = \"{d}/data\"\n\
             log = {{ info = \"{d}/prosody.log\" }}\ninterfaces = {{ \"127.0.0.1\" }}\nc2s_ports = {{ {port} }}\n\
             s2s_ports = {{ }}\nhttp_ports = {{ }}\nhttps_ports = {{ }}\nc2s_direct_tls_ports = {{ }}\n\
             c2s_require_encryption = false\nallow_unencrypted_plain_auth = true\n\
             modules_enabled = {{ \"roster\", \"saslauth\", \"disco\", \"ping\" }}\nmodules_disabled = {{ \"s2s\" }}\n\
             VirtualHost \"localhost\"\nComponent \"conference.localhost\" \"muc\"\n    muc_room_locking = false\n"
        );
        std::fs::write(dir.join("prosody.cfg.lua"), conf).unwrap();
        for user in users {
            let status = Command::new("prosodyctl")
                .arg("--config")
                .arg(dir.join("prosody.cfg.lua"))
                .args(["register", user, "localhost", "pw"])
                .current_dir(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap_or_else(|e| panic!("cannot run prosodyctl ({e}); install it with: apt-get install -y prosody"));
            assert!(status.success(), "prosodyctl register {user} failed");
        }
        let mut xmpp = PrivateXmpp { port, dir, child: None };
        xmpp.spawn().await;
        xmpp
    }

    async fn spawn(&mut self) {
        let child = Command::new("prosody")
            .arg("--config")
            .arg(self.dir.join("prosody.cfg.lua"))
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run prosody ({e}); install it with: apt-get install -y prosody"));
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "prosody did not listen on {}", self.port);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateXmpp {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A person in the room: an XMPP client of its own.
struct Person {
    nick: String,
    client: XmppClient,
}

impl Person {
    async fn join(server: &PrivateXmpp, nick: &str) -> Person {
        let jid = BareJid::from_str(&format!("{nick}@localhost")).unwrap();
        let client = XmppClient::new_plaintext(jid, "pw", DnsConfig::addr(&server.addr()), Default::default());
        let mut p = Person { nick: nick.to_string(), client };
        p.wait_for(|e| matches!(e, Event::Online { .. })).await;
        // Available, as chat clients are: direct messages to the bare JID reach it.
        p.client.send_stanza(Presence::available().into()).await.unwrap();
        let to = Jid::from_str(&format!("{ROOM}/{nick}")).unwrap();
        let muc = Muc::new().with_history(History::new().with_maxstanzas(0));
        let join = Presence::new(PresenceType::None).with_to(to).with_payloads(vec![muc.into()]);
        p.client.send_stanza(join.into()).await.unwrap();
        // Joined when the room sends our own presence back.
        let me = format!("{ROOM}/{nick}");
        p.wait_for(|e| matches!(e, Event::Stanza(Stanza::Presence(pr)) if pr.from.as_ref().is_some_and(|f| f.to_string() == me)))
            .await;
        p
    }

    async fn wait_for(&mut self, done: impl Fn(&Event) -> bool) -> Vec<String> {
        let mut said = Vec::new();
        let read = async {
            loop {
                let event = self.client.next().await.expect("the client stopped");
                if let Event::Stanza(Stanza::Message(m)) = &event {
                    if let Some((_, body)) = m.get_best_body(vec![]) {
                        said.push(format!("{}: {body}", m.from.as_ref().map(|f| f.to_string()).unwrap_or_default()));
                    }
                }
                if done(&event) {
                    return;
                }
            }
        };
        let waited = tokio::time::timeout(WAIT, read).await;
        assert!(waited.is_ok(), "{}: nothing matched in {WAIT:?}; messages {said:#?}", self.nick);
        said
    }

    async fn say(&mut self, to: Option<&str>, text: &str) {
        let message = match to {
            None => Message::groupchat(Jid::from_str(ROOM).unwrap()),
            Some(jid) => Message::chat(Jid::from_str(jid).unwrap()),
        };
        let text = if to.is_none() { format!("{BOT_NICK}: {text}") } else { text.to_string() };
        self.client.send_stanza(message.with_body(Lang::default(), text).into()).await.unwrap();
    }

    /// Asks `command` (in the room, or directly to `to`) until the bot's answer contains
    /// `needle`; each try waits for the bot's answer to an echo after it.
    async fn ask_until(&mut self, to: Option<&str>, command: &str, needle: &str) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        for n in 0.. {
            let marker = format!("done-{n}");
            self.say(to, command).await;
            self.say(to, &format!("echo {marker}")).await;
            let bot_said = |e: &Event| match e {
                Event::Stanza(Stanza::Message(m)) => {
                    from_bot(m) && m.get_best_body(vec![]).is_some_and(|(_, b)| b.contains(&marker))
                }
                _ => false,
            };
            let read = self.wait_for(bot_said);
            let said = tokio::time::timeout(Duration::from_millis(1500), read).await.unwrap_or_default();
            if said.iter().any(|l| l.contains(needle)) {
                return said;
            }
            assert!(tokio::time::Instant::now() < deadline, "`{command}` never answered {needle:?}: {said:#?}");
        }
        unreachable!()
    }
}

fn from_bot(m: &Message) -> bool {
    let Some(from) = m.from.as_ref() else { return false };
    match m.type_ {
        MessageType::Groupchat => from.resource().is_some_and(|r| r.as_str() == BOT_NICK),
        _ => from.to_bare().to_string() == "micro@localhost",
    }
}

async fn the_bot_answers_in_xmpp_rooms_and_direct_messages_and_reconnects(url: String) {
    let mut server = PrivateXmpp::start(&["micro", "alice", "mallory"]).await;
    let greeter_name = format!("test.botx.{}.greeter", uuid::Uuid::now_v7().simple());
    let greeter_svc = greeter(&url, &greeter_name, "a").start().await.unwrap();

    let mut config = BotConfig::default().room(ROOM).user("alice").user("alice@localhost").allow_call(&greeter_name);
    config.max_lines = 400;
    config.max_chars = 100_000;
    let mut xmpp = XmppConfig::new("micro@localhost", "pw").server(server.addr()).room(ROOM);
    xmpp.plaintext = true;
    let inputs: Vec<Box<dyn Input>> = vec![Box::new(XmppInput::new(xmpp))];
    let bot = actix::spawn(Bot::new(Client::connect(&url).await.unwrap(), config).run(inputs));

    let mut alice = Person::join(&server, "alice").await;
    let mut mallory = Person::join(&server, "mallory").await;
    alice.ask_until(None, "echo ready", "ready").await;

    mallory.say(None, "echo from-mallory").await;
    mallory.say(Some("micro@localhost"), "echo from-mallory-direct").await;
    let said = alice.ask_until(None, "echo from-alice", "from-alice").await;
    let bot_line = format!("{ROOM}/{BOT_NICK}: ");
    let answered = said.iter().any(|l| l.starts_with(&bot_line) && l.contains("from-mallory"));
    assert!(!answered, "answered mallory: {said:#?}");

    alice.ask_until(None, "services", &greeter_name).await;
    alice.ask_until(None, &format!("call {greeter_name} Say.Hello {{\"name\": \"John\"}}"), "Hello John").await;
    alice.ask_until(None, "frobnicate", "usage:").await;
    alice.ask_until(Some("micro@localhost"), "echo direct", "direct").await;

    // The server restarts: the bot signs in and joins the room again by itself.
    drop((alice, mallory));
    server.kill();
    server.spawn().await;
    let mut alice = Person::join(&server, "alice").await;
    alice.ask_until(None, &format!("call {greeter_name} Say.Hello {{\"name\": \"John\"}}"), "Hello John").await;

    bot.abort();
    greeter_svc.stop().await.unwrap();
}
