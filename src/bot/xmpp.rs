//! The XMPP input (`tokio-xmpp`): multi-user chat rooms and direct messages.

use std::str::FromStr;

use futures::future::BoxFuture;
use futures::StreamExt;
use tokio_xmpp::connect::DnsConfig;
use tokio_xmpp::jid::{BareJid, Jid};
use tokio_xmpp::parsers::message::{Lang, Message, MessageType};
use tokio_xmpp::parsers::muc::muc::{History, Muc};
use tokio_xmpp::parsers::presence::{Presence, Type as PresenceType};
use tokio_xmpp::{Client, Event, Stanza};

use super::{BotError, Incoming, Input, Reply};

/// How the bot signs in to an XMPP server.
///
/// ```
/// let x = micro::bot::XmppConfig::new("micro@example.net", "secret").room("ops@conference.example.net");
/// assert_eq!(x.nick, "micro");
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct XmppConfig {
    /// The bot's account, `user@domain`.
    pub jid: String,
    /// Its password.
    pub password: String,
    /// Server address `host:port`; `None` finds it through DNS SRV records of the domain.
    pub server: Option<String>,
    /// Connect without TLS (only for a server on this machine, as in tests).
    pub plaintext: bool,
    /// Multi-user chat rooms to join (`room@conference.domain`).
    pub rooms: Vec<String>,
    /// The bot's nick in rooms; there it answers `NICK: command` or `!command`.
    pub nick: String,
}

impl std::fmt::Debug for XmppConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XmppConfig")
            .field("jid", &self.jid)
            .field("server", &self.server)
            .field("plaintext", &self.plaintext)
            .field("rooms", &self.rooms)
            .field("nick", &self.nick)
            .finish_non_exhaustive()
    }
}

impl XmppConfig {
    /// Signs in as `jid` with `password` over StartTLS; nick `micro`, no room.
    pub fn new(jid: impl Into<String>, password: impl Into<String>) -> XmppConfig {
        XmppConfig {
            jid: jid.into(),
            password: password.into(),
            server: None,
            plaintext: false,
            rooms: Vec::new(),
            nick: "micro".to_string(),
        }
    }

    /// Also joins `room`.
    pub fn room(mut self, room: impl Into<String>) -> Self {
        self.rooms.push(room.into());
        self
    }

    /// Connects to `addr` (`host:port`) instead of looking the server up.
    pub fn server(mut self, addr: impl Into<String>) -> Self {
        self.server = Some(addr.into());
        self
    }
}

/// The XMPP input. The client reconnects by itself and the bot joins its rooms again each time
/// it is back online.
#[derive(Debug)]
pub struct XmppInput {
    config: XmppConfig,
    client: Option<Client>,
}

impl XmppInput {
    /// An input that signs in with `config`.
    pub fn new(config: XmppConfig) -> XmppInput {
        XmppInput { config, client: None }
    }
}

fn input_error(e: impl std::fmt::Display) -> BotError {
    BotError::Input(format!("xmpp: {e}"))
}

fn jid(s: &str) -> Result<Jid, BotError> {
    Jid::from_str(s).map_err(|e| BotError::Config(format!("{s:?} is not a JID: {e}")))
}

impl Input for XmppInput {
    fn name(&self) -> &str {
        "xmpp"
    }

    fn connect(&mut self) -> BoxFuture<'_, Result<(), BotError>> {
        Box::pin(async move {
            if self.client.is_some() {
                return Ok(());
            }
            let c = &self.config;
            let account = BareJid::from_str(&c.jid).map_err(|e| BotError::Config(format!("{:?}: {e}", c.jid)))?;
            let dns = match &c.server {
                Some(addr) => DnsConfig::addr(addr),
                None => DnsConfig::srv_default_client(account.domain().as_str()),
            };
            let timeouts = Default::default();
            let client = if c.plaintext {
                Client::new_plaintext(account, c.password.clone(), dns, timeouts)
            } else {
                // rustls needs one crypto provider; ring is the one this crate builds.
                let _ = tokio_xmpp::rustls::crypto::ring::default_provider().install_default();
                Client::new_starttls(account, c.password.clone(), dns, timeouts)
            };
            self.client = Some(client);
            Ok(())
        })
    }

    fn receive(&mut self) -> BoxFuture<'_, Result<Option<Incoming>, BotError>> {
        Box::pin(async move {
            loop {
                let Some(client) = self.client.as_mut() else { return Err(input_error("not connected")) };
                let Some(event) = client.next().await else {
                    self.client = None;
                    return Err(input_error("the client stopped"));
                };
                let message = match event {
                    Event::Online { .. } => {
                        let mut presences = vec![Presence::available()];
                        for room in &self.config.rooms {
                            let to = jid(&format!("{room}/{}", self.config.nick))?;
                            let muc = Muc::new().with_history(History::new().with_maxstanzas(0));
                            presences
                                .push(Presence::new(PresenceType::None).with_to(to).with_payloads(vec![muc.into()]));
                        }
                        for p in presences {
                            client.send_stanza(p.into()).await.map_err(input_error)?;
                        }
                        tracing::info!(rooms = ?self.config.rooms, "xmpp: online");
                        continue;
                    }
                    Event::Disconnected(e) => {
                        tracing::warn!(error = %e, "xmpp: disconnected; the client reconnects");
                        continue;
                    }
                    Event::Stanza(Stanza::Message(m)) => m,
                    Event::Stanza(_) => continue,
                };
                let (Some(from), Some((_, body))) = (message.from.as_ref(), message.get_best_body(vec![])) else {
                    continue;
                };
                let (sender, room) = match message.type_ {
                    MessageType::Groupchat => match from.resource() {
                        Some(nick) if nick.as_str() != self.config.nick => {
                            (nick.to_string(), Some(from.to_bare().to_string()))
                        }
                        _ => continue,
                    },
                    MessageType::Chat | MessageType::Normal => (from.to_bare().to_string(), None),
                    _ => continue,
                };
                let Some(text) = super::input::addressed(&self.config.nick, body, room.is_some()) else { continue };
                if !text.is_empty() {
                    return Ok(Some(Incoming { sender, room, text: text.to_string(), thread: None }));
                }
            }
        })
    }

    fn send(&mut self, reply: Reply) -> BoxFuture<'_, Result<(), BotError>> {
        Box::pin(async move {
            let Some(client) = self.client.as_mut() else { return Err(input_error("not connected")) };
            let message = match &reply.to.room {
                Some(room) => Message::groupchat(jid(room)?),
                None => Message::chat(jid(&reply.to.sender)?),
            };
            let message = message.with_body(Lang::default(), reply.text);
            client.send_stanza(message.into()).await.map_err(input_error)?;
            Ok(())
        })
    }
}
