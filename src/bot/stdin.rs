//! The terminal input: one command a line on stdin, replies on stdout.

use futures::future::BoxFuture;
use tokio::sync::mpsc;

use super::{BotError, Incoming, Input, Reply};

/// The room name stdin messages carry; `micro bot --input stdin` allows it.
pub const STDIN_ROOM: &str = "stdin";

/// Reads commands from stdin (a thread blocks on it), prints replies on stdout.
///
/// ```no_run
/// let input = micro::bot::StdinInput::new();
/// ```
#[derive(Debug)]
pub struct StdinInput {
    user: String,
    lines: Option<mpsc::Receiver<String>>,
}

impl StdinInput {
    /// An input for the terminal; messages come from `$USER`, in the room [`STDIN_ROOM`].
    pub fn new() -> StdinInput {
        let user = std::env::var("USER").unwrap_or_else(|_| "terminal".to_string());
        StdinInput { user, lines: None }
    }
}

impl Default for StdinInput {
    fn default() -> Self {
        StdinInput::new()
    }
}

impl Input for StdinInput {
    fn name(&self) -> &str {
        "stdin"
    }

    fn connect(&mut self) -> BoxFuture<'_, Result<(), BotError>> {
        if self.lines.is_none() {
            let (tx, rx) = mpsc::channel(16);
            std::thread::spawn(move || {
                for line in std::io::stdin().lines() {
                    let Ok(line) = line else { break };
                    if tx.blocking_send(line).is_err() {
                        break;
                    }
                }
            });
            self.lines = Some(rx);
        }
        Box::pin(async { Ok(()) })
    }

    fn receive(&mut self) -> BoxFuture<'_, Result<Option<Incoming>, BotError>> {
        Box::pin(async move {
            let Some(rx) = self.lines.as_mut() else { return Ok(None) };
            loop {
                let Some(line) = rx.recv().await else { return Ok(None) };
                let text = line.trim();
                if !text.is_empty() {
                    let room = Some(STDIN_ROOM.to_string());
                    return Ok(Some(Incoming {
                        sender: self.user.clone(),
                        room,
                        text: text.to_string(),
                        thread: None,
                    }));
                }
            }
        })
    }

    fn send(&mut self, reply: Reply) -> BoxFuture<'_, Result<(), BotError>> {
        Box::pin(async move {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", reply.text).map_err(|e| BotError::Input(e.to_string()))?;
            out.flush().map_err(|e| BotError::Input(e.to_string()))
        })
    }
}
