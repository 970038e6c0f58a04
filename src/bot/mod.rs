//! The chat bot: the CLI over chat, and commands that are services.
//!
//! A [`Bot`] joins chat systems through [`Input`]s ([`IrcInput`], [`XmppInput`], [`SlackInput`],
//! [`StdinInput`], or your own)
//! and answers commands: the built-ins mirror the CLI (`help`, `services`, `service NAME`,
//! `call SERVICE ENDPOINT {json}`, `health SERVICE`, `stats SERVICE`, `publish TOPIC {json}`,
//! `echo`), and any service named `<namespace>.<command>` (by default `go.micro.bot.deploy` for
//! `deploy`) that serves [`HELP_ENDPOINT`] and [`EXEC_ENDPOINT`] is a command too, found in
//! the registry each time it is asked for, so it comes and goes with the service.
//!
//! Safety: the bot answers only in [`BotConfig::rooms`] and to [`BotConfig::users`]; `call`
//! and `publish` reach only the services and topics of their allowlists; every command runs
//! under [`BotConfig::timeout`]; calls carry the chat identity as the metadata `bot-user`,
//! `bot-room` and `bot-input`.
//!
//! ```no_run
//! use micro::bot::{Bot, BotConfig, IrcConfig, IrcInput, Input};
//! # async fn f() -> micro::Result<()> {
//! let client = micro::Client::connect("nats://127.0.0.1:4222").await?;
//! let config = BotConfig::default().room("#ops").user("alice").allow_call("go.micro.srv.*");
//! let irc = IrcInput::new(IrcConfig::new("127.0.0.1", 6667, "micro").channel("#ops"));
//! Bot::new(client, config).run(vec![Box::new(irc) as Box<dyn Input>]).await;
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod commands;
mod format;
mod input;
mod irc;
mod slack;
mod stdin;
mod xmpp;

pub use format::truncate;
pub use input::{Incoming, Input, Reply};
pub use irc::{IrcConfig, IrcInput};
pub use slack::{SlackConfig, SlackInput, DEFAULT_SLACK_API_URL};
pub use stdin::{StdinInput, STDIN_ROOM};
pub use xmpp::{XmppConfig, XmppInput};

/// The default namespace of command services: `go.micro.bot.<command>`.
pub const DEFAULT_NAMESPACE: &str = "go.micro.bot";
/// The endpoint a command service answers with its usage ([`CommandHelp`]).
pub const HELP_ENDPOINT: &str = "Command.Help";
/// The endpoint a command service runs the command on ([`CommandExec`] in, [`CommandResult`] out).
pub const EXEC_ENDPOINT: &str = "Command.Exec";

/// What `Command.Help` answers.
///
/// ```
/// let help = micro::bot::CommandHelp { usage: "deploy SERVICE VERSION".into(), description: "Deploys".into() };
/// ```
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CommandHelp {
    /// One line: the command and its arguments.
    pub usage: String,
    /// What it does.
    #[serde(default)]
    pub description: String,
}

/// What `Command.Exec` receives: the words of the command, the command's name first.
///
/// ```
/// let exec = micro::bot::CommandExec { args: vec!["deploy".into(), "greeter".into()] };
/// ```
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CommandExec {
    /// `deploy greeter 1.2.0` arrives as `["deploy", "greeter", "1.2.0"]`.
    pub args: Vec<String>,
}

/// What `Command.Exec` answers: the text to show, or an error to show instead.
///
/// ```
/// let ok = micro::bot::CommandResult { result: "deployed".into(), error: String::new() };
/// ```
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CommandResult {
    /// The reply text.
    #[serde(default)]
    pub result: String,
    /// Set when the command failed.
    #[serde(default)]
    pub error: String,
}

/// A bot failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BotError {
    /// A bad setting (an input URL, a flag).
    #[error("bad bot configuration: {0}")]
    Config(String),
    /// A chat connection failed or was lost.
    #[error("{0}")]
    Input(String),
    /// A call or publish failed.
    #[error(transparent)]
    Micro(#[from] crate::Error),
}

/// Who the bot answers, what it may reach, and how long it may take.
///
/// Allowlist entries are exact names, a prefix ending in `*` (`go.micro.srv.*`), or `*` for all.
///
/// ```
/// let c = micro::bot::BotConfig::default().room("#ops").user("alice").allow_publish("deploys");
/// assert_eq!(c.namespace, "go.micro.bot");
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BotConfig {
    /// Namespace of command services (`<namespace>.<command>`).
    pub namespace: String,
    /// Rooms the bot answers in; others are ignored.
    pub rooms: Vec<String>,
    /// Users the bot answers (in rooms and direct messages); empty: anyone in an allowed room,
    /// and no direct messages.
    pub users: Vec<String>,
    /// Services `call` may reach; empty: none.
    pub call_allow: Vec<String>,
    /// Topics `publish` may send to; empty: none.
    pub publish_allow: Vec<String>,
    /// Time one command may take.
    pub timeout: Duration,
    /// Longest reply in lines; longer ones are cut with a note.
    pub max_lines: usize,
    /// Longest reply in characters.
    pub max_chars: usize,
}

impl Default for BotConfig {
    fn default() -> Self {
        BotConfig {
            namespace: DEFAULT_NAMESPACE.to_string(),
            rooms: Vec::new(),
            users: Vec::new(),
            call_allow: Vec::new(),
            publish_allow: Vec::new(),
            timeout: Duration::from_secs(10),
            max_lines: 25,
            max_chars: 2000,
        }
    }
}

impl BotConfig {
    /// Answers in `room`.
    pub fn room(mut self, room: impl Into<String>) -> Self {
        self.rooms.push(room.into());
        self
    }
    /// Answers `user`.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.users.push(user.into());
        self
    }
    /// Lets `call` reach `pattern`.
    pub fn allow_call(mut self, pattern: impl Into<String>) -> Self {
        self.call_allow.push(pattern.into());
        self
    }
    /// Lets `publish` send to `pattern`.
    pub fn allow_publish(mut self, pattern: impl Into<String>) -> Self {
        self.publish_allow.push(pattern.into());
        self
    }
    /// Sets the namespace of command services.
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = ns.into();
        self
    }
    /// Sets the time one command may take.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// True if the bot answers this message.
    pub fn answers(&self, msg: &Incoming) -> bool {
        let user_ok = self.users.contains(&msg.sender);
        match &msg.room {
            Some(room) => self.rooms.contains(room) && (self.users.is_empty() || user_ok),
            None => user_ok,
        }
    }
}

/// True if `name` matches an allowlist entry.
pub(crate) fn allowed(list: &[String], name: &str) -> bool {
    list.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => p == name,
    })
}

/// The bot: a client and a configuration, shared by every input.
#[derive(Clone, Debug)]
pub struct Bot {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: crate::Client,
    config: BotConfig,
}

impl Bot {
    /// A bot that reaches services through `client`.
    pub fn new(client: crate::Client, config: BotConfig) -> Bot {
        Bot { inner: Arc::new(Inner { client, config }) }
    }

    /// The answer to `msg` received on the input named `input`, formatted and cut for chat;
    /// `None` when the bot does not answer that room or user.
    pub async fn answer(&self, input: &str, msg: &Incoming) -> Option<String> {
        let config = &self.inner.config;
        if !config.answers(msg) {
            tracing::debug!(sender = %msg.sender, room = ?msg.room, "ignored: not an allowed room or user");
            return None;
        }
        let cmd = commands::Dispatch { client: &self.inner.client, config, input, msg };
        let text = match tokio::time::timeout(config.timeout, cmd.run()).await {
            Ok(text) => text,
            Err(_) => format!("`{}` timed out after {:?}", first_word(&msg.text), config.timeout),
        };
        Some(truncate(&text, config.max_lines, config.max_chars))
    }

    /// Runs every input until all have ended (stdin closed); network inputs reconnect and run
    /// until the process stops.
    pub async fn run(self, inputs: Vec<Box<dyn Input>>) {
        let tasks = inputs.into_iter().map(|i| input::serve(self.clone(), i));
        futures::future::join_all(tasks).await;
    }
}

fn first_word(text: &str) -> &str {
    text.split_whitespace().next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(sender: &str, room: Option<&str>) -> Incoming {
        Incoming { sender: sender.into(), room: room.map(Into::into), text: "help".into(), thread: None }
    }

    #[test]
    fn only_allowed_rooms_and_users_are_answered() {
        let c = BotConfig::default().room("#ops");
        assert!(c.answers(&msg("anyone", Some("#ops"))));
        assert!(!c.answers(&msg("anyone", Some("#random"))));
        assert!(!c.answers(&msg("anyone", None)), "no direct messages without a user list");
        let c = c.user("alice");
        assert!(c.answers(&msg("alice", Some("#ops"))) && c.answers(&msg("alice", None)));
        assert!(!c.answers(&msg("mallory", Some("#ops"))) && !c.answers(&msg("mallory", None)));
    }

    #[test]
    fn allowlists_take_names_prefixes_and_a_star() {
        let list = vec!["go.micro.srv.*".to_string(), "audit".to_string()];
        assert!(allowed(&list, "go.micro.srv.greeter") && allowed(&list, "audit"));
        assert!(!allowed(&list, "go.micro.api.x") && !allowed(&list, "audits"));
        assert!(allowed(&["*".to_string()], "anything") && !allowed(&[], "anything"));
    }
}
