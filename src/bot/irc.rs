//! The IRC input (the `irc` crate): channels and private messages.

use futures::future::BoxFuture;
use futures::StreamExt;
use irc::client::prelude::{Client, Command, Config};

use super::{BotError, Incoming, Input, Reply};

/// Longest text sent in one PRIVMSG: an IRC line is 512 bytes with the prefix and command.
const MAX_LINE: usize = 400;

/// How the bot joins an IRC server.
///
/// ```
/// let irc = micro::bot::IrcConfig::new("127.0.0.1", 6667, "micro").channel("#ops");
/// assert_eq!(irc.channels, ["#ops"]);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct IrcConfig {
    /// Server host name or address.
    pub server: String,
    /// Server port.
    pub port: u16,
    /// The bot's nick; in a channel the bot answers `NICK: command` (or `!command`).
    pub nick: String,
    /// Channels to join.
    pub channels: Vec<String>,
    /// Server password, if the server asks for one.
    pub password: Option<String>,
}

impl IrcConfig {
    /// A plain-text connection to `server:port` as `nick`, joining no channel.
    pub fn new(server: impl Into<String>, port: u16, nick: impl Into<String>) -> IrcConfig {
        IrcConfig { server: server.into(), port, nick: nick.into(), channels: Vec::new(), password: None }
    }

    /// Also joins `channel`.
    pub fn channel(mut self, channel: impl Into<String>) -> Self {
        self.channels.push(channel.into());
        self
    }

    /// Parses `irc://host:port/nick?channel=%23ops&channel=%23dev` (`#` may be written `%23`).
    pub fn from_url(url: &str) -> Result<IrcConfig, BotError> {
        let bad = |why: &str| BotError::Config(format!("{url:?}: {why} (use irc://host:port/nick?channel=%23ops)"));
        let rest = url.strip_prefix("irc://").ok_or_else(|| bad("not an irc:// URL"))?;
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (hostport, nick) = rest.split_once('/').unwrap_or((rest, "micro"));
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| bad("bad port"))?),
            None => (hostport, 6667),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let mut config = IrcConfig::new(host, port, if nick.is_empty() { "micro" } else { nick });
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("channel", c)) => config.channels.push(c.replace("%23", "#")),
                _ => return Err(bad("unknown parameter")),
            }
        }
        Ok(config)
    }
}

/// The IRC input; reconnects (the bot's loop calls [`Input::connect`] again) when the server
/// goes away.
#[derive(Debug)]
pub struct IrcInput {
    config: IrcConfig,
    client: Option<(Client, irc::client::ClientStream)>,
}

impl IrcInput {
    /// An input that joins the server and channels of `config`.
    pub fn new(config: IrcConfig) -> IrcInput {
        IrcInput { config, client: None }
    }

    fn addressed<'a>(&self, text: &'a str, in_channel: bool) -> Option<&'a str> {
        super::input::addressed(&self.config.nick, text, in_channel)
    }
}

fn input_error(e: impl std::fmt::Display) -> BotError {
    BotError::Input(format!("irc: {e}"))
}

impl Input for IrcInput {
    fn name(&self) -> &str {
        "irc"
    }

    fn connect(&mut self) -> BoxFuture<'_, Result<(), BotError>> {
        Box::pin(async move {
            self.client = None;
            let c = &self.config;
            let config = Config {
                nickname: Some(c.nick.clone()),
                alt_nicks: vec![format!("{}_", c.nick), format!("{}__", c.nick)],
                username: Some(c.nick.clone()),
                realname: Some("actix-micro bot".to_string()),
                server: Some(c.server.clone()),
                port: Some(c.port),
                password: c.password.clone(),
                channels: c.channels.clone(),
                ping_time: Some(30),
                ping_timeout: Some(10),
                // A reply is one message a line: let a table through at once, then pace.
                burst_window_length: Some(2),
                max_messages_in_burst: Some(30),
                ..Config::default()
            };
            let mut client = Client::from_config(config).await.map_err(input_error)?;
            client.identify().map_err(input_error)?;
            let stream = client.stream().map_err(input_error)?;
            self.client = Some((client, stream));
            Ok(())
        })
    }

    fn receive(&mut self) -> BoxFuture<'_, Result<Option<Incoming>, BotError>> {
        Box::pin(async move {
            loop {
                let Some((_, stream)) = self.client.as_mut() else {
                    return Err(BotError::Input("irc: not connected".to_string()));
                };
                let message = match stream.next().await {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => return Err(input_error(e)),
                    None => return Err(BotError::Input("irc: the server closed the connection".to_string())),
                };
                let Command::PRIVMSG(target, text) = &message.command else { continue };
                let Some(sender) = message.source_nickname() else { continue };
                let in_channel = target.starts_with(['#', '&', '+', '!']);
                let Some(text) = self.addressed(text, in_channel) else { continue };
                if text.is_empty() {
                    continue;
                }
                let room = in_channel.then(|| target.clone());
                return Ok(Some(Incoming { sender: sender.to_string(), room, text: text.to_string(), thread: None }));
            }
        })
    }

    fn send(&mut self, reply: Reply) -> BoxFuture<'_, Result<(), BotError>> {
        Box::pin(async move {
            let Some((client, _)) = self.client.as_ref() else {
                return Err(BotError::Input("irc: not connected".to_string()));
            };
            let target = reply.to.room.as_deref().unwrap_or(&reply.to.sender);
            // IRC has no code blocks or multi-line messages: one PRIVMSG a line, fences left out.
            for line in reply.text.lines().filter(|l| !l.starts_with("```")) {
                let line = if line.is_empty() { " " } else { line };
                let line: String = line
                    .chars()
                    .scan(0, |n, c| {
                        *n += c.len_utf8();
                        (*n <= MAX_LINE).then_some(c)
                    })
                    .collect();
                client.send_privmsg(target, line).map_err(input_error)?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_addressing() {
        let c = IrcConfig::from_url("irc://127.0.0.1:6697/opsbot?channel=%23ops&channel=#dev").unwrap();
        assert_eq!((c.server.as_str(), c.port, c.nick.as_str()), ("127.0.0.1", 6697, "opsbot"));
        assert_eq!(c.channels, ["#ops", "#dev"]);
        assert!(IrcConfig::from_url("http://x").is_err());
        assert!(IrcConfig::from_url("irc://h/n?nope=1").is_err());
        let input = IrcInput::new(c);
        assert_eq!(input.addressed("opsbot: services", true), Some("services"));
        assert_eq!(input.addressed("!help", true), Some("help"));
        assert_eq!(input.addressed("hello all", true), None);
        assert_eq!(input.addressed("services", false), Some("services"));
    }
}
