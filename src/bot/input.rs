//! The [`Input`] trait: how the bot reaches a chat system, and the loop that keeps it connected.

use std::time::Duration;

use futures::future::BoxFuture;

use super::{Bot, BotError};

/// A message the bot received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incoming {
    /// The sender's chat identity (an IRC nick, an XMPP JID, a Slack user id, a terminal user).
    pub sender: String,
    /// The room (IRC channel, multi-user chat, Slack channel id) it was said in; `None` for a
    /// direct message.
    pub room: Option<String>,
    /// The command text, with any address to the bot (`micro: `) already taken off.
    pub text: String,
    /// The thread it was said in (Slack's `thread_ts`), where the reply goes; `None` elsewhere.
    pub thread: Option<String>,
}

/// A reply to send back where an [`Incoming`] came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Who to answer: the room it was said in, or the sender of a direct message.
    pub to: Incoming,
    /// The reply, formatted for chat (code blocks as ```` ``` ```` fences).
    pub text: String,
}

/// A chat system the bot joins.
///
/// The bot calls [`connect`](Input::connect) (again after any error, with backoff), then
/// [`receive`](Input::receive) in a loop and [`send`](Input::send) for each answer.
///
/// ```
/// use futures::future::BoxFuture;
/// use micro::bot::{BotError, Incoming, Input, Reply};
///
/// /// Answers one fixed message, then ends.
/// #[derive(Debug)]
/// struct Once(Option<Incoming>);
///
/// impl Input for Once {
///     fn name(&self) -> &str { "once" }
///     fn connect(&mut self) -> BoxFuture<'_, Result<(), BotError>> { Box::pin(async { Ok(()) }) }
///     fn receive(&mut self) -> BoxFuture<'_, Result<Option<Incoming>, BotError>> {
///         let next = self.0.take();
///         Box::pin(async move { Ok(next) })
///     }
///     fn send(&mut self, reply: Reply) -> BoxFuture<'_, Result<(), BotError>> {
///         Box::pin(async move { println!("{}", reply.text); Ok(()) })
///     }
/// }
/// ```
pub trait Input: Send + std::fmt::Debug {
    /// A short name (`irc`, `xmpp`, `slack`, `stdin`); it travels with calls as the `Bot-Input` metadata.
    fn name(&self) -> &str;
    /// Connects (or reconnects) and joins the rooms.
    fn connect(&mut self) -> BoxFuture<'_, Result<(), BotError>>;
    /// The next message; `Ok(None)` when the input has ended for good (stdin closed).
    fn receive(&mut self) -> BoxFuture<'_, Result<Option<Incoming>, BotError>>;
    /// Sends a reply.
    fn send(&mut self, reply: Reply) -> BoxFuture<'_, Result<(), BotError>>;
}

/// The text addressed to the bot called `nick`: all of a direct message; in a room, what
/// follows `NICK:`, `NICK,` or `!`.
pub(crate) fn addressed<'a>(nick: &str, text: &'a str, in_room: bool) -> Option<&'a str> {
    let text = text.trim();
    if !in_room {
        return Some(text);
    }
    if let Some(rest) = text.strip_prefix('!') {
        return Some(rest.trim());
    }
    let rest = text.strip_prefix(nick)?;
    let rest = rest.strip_prefix(':').or_else(|| rest.strip_prefix(','))?;
    Some(rest.trim())
}

/// Backoff between reconnects: doubles from `MIN_BACKOFF` up to `MAX_BACKOFF`.
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Runs one input until it ends: connects, answers every message, reconnects with backoff
/// after a failure.
pub(crate) async fn serve(bot: Bot, mut input: Box<dyn Input>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        if let Err(e) = input.connect().await {
            tracing::warn!(input = input.name(), error = %e, retry_in = ?backoff, "cannot connect");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            continue;
        }
        tracing::info!(input = input.name(), "connected");
        backoff = MIN_BACKOFF;
        loop {
            match input.receive().await {
                Ok(Some(msg)) => {
                    let Some(text) = bot.answer(input.name(), &msg).await else { continue };
                    if let Err(e) = input.send(Reply { to: msg, text }).await {
                        tracing::warn!(input = input.name(), error = %e, "cannot send a reply");
                        break;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(input = input.name(), error = %e, "connection lost; reconnecting");
                    break;
                }
            }
        }
        tokio::time::sleep(backoff).await;
    }
}
