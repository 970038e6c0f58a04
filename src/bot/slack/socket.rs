//! One Socket Mode connection (<https://api.slack.com/apis/socket-mode>): a task reads the
//! WebSocket, acknowledges every envelope at once (`{"envelope_id": "…"}`, before the bot looks at
//! it) and hands the events on; the connection ends on `disconnect`, a close, or silence.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::Connector;

use super::tls;
use crate::bot::BotError;

/// With nothing received for this long the connection is pinged; with no answer either for as
/// long again it is taken for lost.
const IDLE: Duration = Duration::from_secs(30);
/// Largest envelope accepted.
const MAX_MESSAGE: usize = 4 << 20;
/// Events waiting for the bot; past it new ones are dropped (and logged), acknowledged still.
const QUEUE: usize = 256;

/// A message event (`message`, `app_mention`) as Slack sends it, the fields the bot reads.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub(super) struct Event {
    /// `message` or `app_mention` (others are passed on and ignored by the input).
    #[serde(rename = "type", default)]
    pub kind: String,
    /// Set on edits, joins, bot posts (`bot_message`) and the like.
    pub subtype: Option<String>,
    /// The author's user id.
    pub user: Option<String>,
    /// Set when a bot wrote it.
    pub bot_id: Option<String>,
    /// The conversation id (`C…` channel, `G…` private channel or group, `D…` direct message).
    pub channel: Option<String>,
    /// `channel`, `group`, `im`, `mpim` (absent on `app_mention`).
    pub channel_type: Option<String>,
    /// The text, with Slack's escapes (`&amp;`, `&lt;`, `&gt;`).
    pub text: Option<String>,
    /// The message's id in its conversation.
    pub ts: Option<String>,
    /// The thread's parent when the message is in a thread.
    pub thread_ts: Option<String>,
}

/// What the connection hands on.
#[derive(Debug)]
pub(super) enum Frame {
    /// An `events_api` envelope's event.
    Event(Event),
    /// Slack asked to reconnect (`refresh_requested`, `warning`, `link_disabled`, …).
    Disconnect(String),
    /// The connection closed or went silent.
    Lost(String),
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type", default)]
    kind: String,
    envelope_id: Option<String>,
    payload: Option<Payload>,
    reason: Option<String>,
}

#[derive(Deserialize)]
struct Payload {
    event: Option<Event>,
}

/// An open connection; its reading task stops when it is dropped.
#[derive(Debug)]
pub(super) struct Socket {
    frames: mpsc::Receiver<Frame>,
    task: JoinHandle<()>,
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Socket {
    /// Connects to the `wss://` URL `apps.connections.open` gave (`ws://` for a local server).
    pub(super) async fn open(url: &str) -> Result<Socket, BotError> {
        let lost = |e: &dyn std::fmt::Display| BotError::Input(format!("slack: socket mode connection: {e}"));
        let connector = match url.starts_with("wss://") {
            true => Some(Connector::Rustls(tls::client_config().map_err(|e| lost(&e))?)),
            false => None,
        };
        let config = WebSocketConfig::default().max_message_size(Some(MAX_MESSAGE)).max_frame_size(Some(MAX_MESSAGE));
        let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(url, Some(config), true, connector)
            .await
            .map_err(|e| lost(&e))?;
        let (tx, frames) = mpsc::channel(QUEUE);
        let task = tokio::spawn(async move {
            let end = read(ws, &tx).await;
            let _ = tx.send(end).await;
        });
        Ok(Socket { frames, task })
    }

    /// The next event, or why the connection ended.
    pub(super) async fn next(&mut self) -> Frame {
        self.frames.recv().await.unwrap_or_else(|| Frame::Lost("the connection ended".to_string()))
    }
}

/// Reads until the connection ends; returns the ending.
async fn read<S>(mut ws: tokio_tungstenite::WebSocketStream<S>, events: &mpsc::Sender<Frame>) -> Frame
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut pinged = false;
    loop {
        let message = match tokio::time::timeout(IDLE, ws.next()).await {
            Err(_) if pinged => return Frame::Lost(format!("no answer to a ping in {IDLE:?}")),
            Err(_) => {
                pinged = true;
                if let Err(e) = ws.send(Message::Ping(Default::default())).await {
                    return Frame::Lost(e.to_string());
                }
                continue;
            }
            Ok(None) => return Frame::Lost("closed".to_string()),
            Ok(Some(Err(e))) => return Frame::Lost(e.to_string()),
            Ok(Some(Ok(m))) => m,
        };
        pinged = false;
        let text = match message {
            Message::Text(t) => t,
            Message::Close(c) => return Frame::Lost(format!("closed by Slack ({c:?})")),
            _ => continue, // pings are answered by tungstenite
        };
        let envelope: Envelope = match serde_json::from_str(&text) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "slack: an envelope that is not Slack's JSON");
                continue;
            }
        };
        if let Some(id) = &envelope.envelope_id {
            let ack = serde_json::json!({ "envelope_id": id }).to_string();
            if let Err(e) = ws.send(Message::text(ack)).await {
                return Frame::Lost(e.to_string());
            }
        }
        match envelope.kind.as_str() {
            "hello" => tracing::debug!("slack: socket mode connection ready"),
            "disconnect" => {
                let reason = envelope.reason.unwrap_or_default();
                let _ = ws.close(None).await;
                return Frame::Disconnect(reason);
            }
            "events_api" => {
                let Some(event) = envelope.payload.and_then(|p| p.event) else { continue };
                if events.try_send(Frame::Event(event)).is_err() {
                    tracing::warn!("slack: the bot is behind; a message was dropped");
                }
            }
            other => tracing::debug!(kind = other, "slack: envelope ignored"),
        }
    }
}
