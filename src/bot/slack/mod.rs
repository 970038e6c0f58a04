//! The Slack input: Socket Mode in, the Web API out.
//!
//! `apps.connections.open` with the app-level token gives a WebSocket URL; every envelope on it is
//! acknowledged at once, `message` and `app_mention` events become [`Incoming`]s, and a
//! `disconnect` opens a new connection. Replies go through `chat.postMessage` with the bot token,
//! in the thread when the question was asked in one. See <https://api.slack.com/apis/socket-mode>
//! and <https://api.slack.com/methods/chat.postMessage>.

use std::collections::{HashMap, VecDeque};

use futures::future::BoxFuture;

use super::{BotError, Incoming, Input, Reply};

mod api;
mod socket;
mod text;
mod tls;

use api::{ApiError, WebApi};
use socket::{Event, Frame, Socket};

/// Slack's Web API; [`SlackConfig::api_url`] points elsewhere (a test server).
pub const DEFAULT_SLACK_API_URL: &str = "https://slack.com/api/";

/// Recent messages remembered, so one seen twice (as `message` and `app_mention`, or redelivered)
/// is answered once.
const SEEN: usize = 512;

/// How the bot signs in to a Slack workspace: an app with Socket Mode on.
///
/// ```
/// let s = micro::bot::SlackConfig::new("xapp-1-…", "xoxb-…");
/// assert_eq!(s.api_url, micro::bot::DEFAULT_SLACK_API_URL);
/// assert!(!format!("{s:?}").contains("xoxb"), "tokens are never printed");
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct SlackConfig {
    /// The app-level token (`xapp-…`, scope `connections:write`) that opens Socket Mode connections.
    pub app_token: String,
    /// The bot token (`xoxb-…`) that posts replies and tells the bot its own user id.
    pub bot_token: String,
    /// The Web API's base URL, ending in `/`.
    pub api_url: String,
}

impl std::fmt::Debug for SlackConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackConfig").field("api_url", &self.api_url).finish_non_exhaustive()
    }
}

impl SlackConfig {
    /// Signs in with the app-level token and the bot token, at [`DEFAULT_SLACK_API_URL`].
    pub fn new(app_token: impl Into<String>, bot_token: impl Into<String>) -> SlackConfig {
        SlackConfig {
            app_token: app_token.into(),
            bot_token: bot_token.into(),
            api_url: DEFAULT_SLACK_API_URL.to_string(),
        }
    }

    /// Uses the Web API at `url` instead of Slack's.
    pub fn api_url(mut self, url: impl Into<String>) -> Self {
        self.api_url = url.into();
        self
    }

    /// Checks the tokens' kinds and the URL, without asking Slack.
    pub fn validate(&self) -> Result<(), BotError> {
        if !self.app_token.starts_with("xapp-") {
            return Err(BotError::Config("the Slack app-level token must start with xapp-".into()));
        }
        if !self.bot_token.starts_with("xoxb-") {
            return Err(BotError::Config("the Slack bot token must start with xoxb-".into()));
        }
        WebApi::new(&self.api_url).map(drop)
    }
}

/// The Slack input. Rooms are channel ids (`C…`), senders user ids (`U…`); a direct message to
/// the app has no room. In a channel the bot answers `@bot command` or `!command`; in a direct
/// message any text. Messages from bots, edits and other subtypes, and the bot's own are ignored.
///
/// ```no_run
/// use micro::bot::{Input, SlackConfig, SlackInput};
/// let token = |name: &str| std::env::var(name).unwrap_or_default();
/// let slack = SlackInput::new(SlackConfig::new(token("MICRO_SLACK_APP_TOKEN"), token("MICRO_SLACK_BOT_TOKEN")));
/// let inputs: Vec<Box<dyn Input>> = vec![Box::new(slack)];
/// ```
#[derive(Debug)]
pub struct SlackInput {
    config: SlackConfig,
    /// The bot's own user id (`auth.test`), learnt on the first connect.
    me: Option<String>,
    socket: Option<Socket>,
    seen: VecDeque<(String, String)>,
    /// The direct-message conversation of each user who wrote to the bot, to answer there.
    direct: HashMap<String, String>,
}

impl SlackInput {
    /// An input that signs in with `config`.
    pub fn new(config: SlackConfig) -> SlackInput {
        SlackInput { config, me: None, socket: None, seen: VecDeque::new(), direct: HashMap::new() }
    }

    fn api(&self) -> Result<WebApi, BotError> {
        WebApi::new(&self.config.api_url)
    }

    /// Opens a Socket Mode connection (and drops the old one).
    async fn open(&mut self) -> Result<(), BotError> {
        self.socket = None;
        let answer = self.api()?.call("apps.connections.open", &self.config.app_token, None).await;
        let answer = answer.map_err(|e| input_error("apps.connections.open", e))?;
        let Some(url) = answer["url"].as_str() else {
            return Err(BotError::Input("slack: apps.connections.open gave no url".to_string()));
        };
        self.socket = Some(Socket::open(url).await?);
        Ok(())
    }

    /// The message `event` carries for the bot, if any.
    fn incoming(&mut self, event: Event) -> Option<Incoming> {
        if !matches!(event.kind.as_str(), "message" | "app_mention")
            || event.subtype.is_some()
            || event.bot_id.is_some()
        {
            return None;
        }
        let (Some(user), Some(channel), Some(body), Some(ts)) = (event.user, event.channel, event.text, event.ts)
        else {
            return None;
        };
        if self.me.as_deref() == Some(user.as_str()) {
            return None;
        }
        let key = (channel.clone(), ts);
        if self.seen.contains(&key) {
            return None;
        }
        if self.seen.len() == SEEN {
            self.seen.pop_front();
        }
        self.seen.push_back(key);
        let direct = match event.channel_type.as_deref() {
            Some(kind) => kind == "im",
            None => channel.starts_with('D'),
        };
        let me = self.me.as_deref().unwrap_or_default();
        let text = text::addressed(me, &text::unescape(&body), !direct)?.to_string();
        if text.is_empty() {
            return None;
        }
        let room = if direct {
            if self.direct.len() >= SEEN && !self.direct.contains_key(&user) {
                self.direct.clear();
            }
            self.direct.insert(user.clone(), channel);
            None
        } else {
            Some(channel)
        };
        Some(Incoming { sender: user, room, text, thread: event.thread_ts })
    }
}

fn input_error(method: &str, e: ApiError) -> BotError {
    BotError::Input(format!("slack: {method}: {e}"))
}

impl Input for SlackInput {
    fn name(&self) -> &str {
        "slack"
    }

    fn connect(&mut self) -> BoxFuture<'_, Result<(), BotError>> {
        Box::pin(async move {
            self.config.validate()?;
            if self.me.is_none() {
                let answer = self.api()?.call("auth.test", &self.config.bot_token, None).await;
                let answer = answer.map_err(|e| input_error("auth.test", e))?;
                let Some(me) = answer["user_id"].as_str() else {
                    return Err(BotError::Input("slack: auth.test gave no user_id".to_string()));
                };
                tracing::info!(user = me, team = answer["team"].as_str(), "slack: signed in");
                self.me = Some(me.to_string());
            }
            self.open().await
        })
    }

    fn receive(&mut self) -> BoxFuture<'_, Result<Option<Incoming>, BotError>> {
        Box::pin(async move {
            loop {
                let Some(socket) = self.socket.as_mut() else {
                    return Err(BotError::Input("slack: not connected".to_string()));
                };
                match socket.next().await {
                    Frame::Event(event) => {
                        if let Some(msg) = self.incoming(event) {
                            return Ok(Some(msg));
                        }
                    }
                    Frame::Disconnect(reason) if reason == "link_disabled" => {
                        self.socket = None;
                        return Err(BotError::Input("slack: Socket Mode was turned off for the app".to_string()));
                    }
                    Frame::Disconnect(reason) => {
                        tracing::info!(reason, "slack: asked to reconnect");
                        self.open().await?;
                    }
                    Frame::Lost(why) => {
                        self.socket = None;
                        return Err(BotError::Input(format!("slack: connection lost: {why}")));
                    }
                }
            }
        })
    }

    fn send(&mut self, reply: Reply) -> BoxFuture<'_, Result<(), BotError>> {
        Box::pin(async move {
            let to = reply.to;
            let channel = match to.room {
                Some(room) => room,
                None => self.direct.get(&to.sender).cloned().unwrap_or(to.sender),
            };
            let mut body = serde_json::json!({ "channel": channel, "text": text::for_slack(&reply.text) });
            if let Some(ts) = to.thread {
                body["thread_ts"] = ts.into();
            }
            match self.api()?.call("chat.postMessage", &self.config.bot_token, Some(&body)).await {
                Ok(_) => Ok(()),
                // Refused (not_in_channel, channel_not_found, msg_too_long, …): that reply is lost,
                // the connection is fine.
                Err(ApiError::Slack(code)) => {
                    tracing::warn!(channel, error = code, "slack: chat.postMessage refused a reply");
                    Ok(())
                }
                Err(e) => Err(input_error("chat.postMessage", e)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(user: &str, channel: &str, text: &str, ts: &str) -> Event {
        Event {
            kind: "message".into(),
            user: Some(user.into()),
            channel: Some(channel.into()),
            channel_type: Some(if channel.starts_with('D') { "im" } else { "channel" }.into()),
            text: Some(text.into()),
            ts: Some(ts.into()),
            ..Event::default()
        }
    }

    #[test]
    fn events_become_messages_once_and_never_from_bots_or_itself() {
        let mut input = SlackInput::new(SlackConfig::new("xapp-1", "xoxb-1"));
        input.me = Some("UBOT".into());
        let m = input.incoming(event("UA", "C1", "<@UBOT> call x &lt;y&gt;", "1.1")).unwrap();
        assert_eq!((m.sender.as_str(), m.room.as_deref(), m.text.as_str()), ("UA", Some("C1"), "call x <y>"));
        let mention = Event { kind: "app_mention".into(), channel_type: None, ..event("UA", "C1", "<@UBOT> x", "1.1") };
        assert_eq!(input.incoming(mention), None, "the same message as an app_mention");
        assert_eq!(input.incoming(event("UA", "C1", "just talking", "1.2")), None);
        assert_eq!(input.incoming(event("UA", "C1", "!help", "1.3")).unwrap().text, "help");
        assert_eq!(input.incoming(event("UBOT", "C1", "!help", "1.4")), None, "its own message");
        let bot = Event { bot_id: Some("B1".into()), ..event("UX", "C1", "!help", "1.5") };
        assert_eq!(input.incoming(bot), None);
        let edit = Event { subtype: Some("message_changed".into()), ..event("UA", "C1", "!help", "1.6") };
        assert_eq!(input.incoming(edit), None);
        let dm = input.incoming(event("UA", "D9", "services", "1.7")).unwrap();
        assert_eq!((dm.room, dm.thread), (None, None));
        assert_eq!(input.direct["UA"], "D9");
        let threaded = Event { thread_ts: Some("1.0".into()), ..event("UA", "C1", "!help", "1.8") };
        assert_eq!(input.incoming(threaded).unwrap().thread.as_deref(), Some("1.0"));
    }

    #[test]
    fn tokens_are_checked() {
        assert!(SlackConfig::new("xapp-1", "xoxb-1").validate().is_ok());
        assert!(SlackConfig::new("xoxb-1", "xoxb-1").validate().is_err());
        assert!(SlackConfig::new("xapp-1", "xoxp-1").validate().is_err());
        assert!(SlackConfig::new("xapp-1", "xoxb-1").api_url("nope").validate().is_err());
    }
}
