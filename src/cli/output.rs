//! Output: tables or JSON, JSON lines, a spinner on a terminal, errors on stderr.
//!
//! Colours go through anstream, which drops them when the stream is not a terminal or
//! `NO_COLOR` is set. Tables carry no colour (comfy-table would count escape codes as width).

use std::io::{IsTerminal, Write};
use std::time::Duration;

use clap::builder::styling::{AnsiColor, Style};
use comfy_table::presets::NOTHING;
use comfy_table::Table;
use serde::Serialize;

/// `--output`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
#[non_exhaustive]
pub enum OutputFormat {
    /// JSON (one document; JSON lines for streams).
    Json,
    /// Human tables (and lines for streams).
    Table,
}

pub(super) const ERROR: Style = AnsiColor::Red.on_default().bold();
pub(super) const HINT: Style = AnsiColor::Cyan.on_default();
pub(super) const GOOD: Style = AnsiColor::Green.on_default();
pub(super) const WARN: Style = AnsiColor::Yellow.on_default();
pub(super) const BAD: Style = AnsiColor::Red.on_default();

/// How a command prints.
#[derive(Debug)]
pub(super) struct Output {
    explicit: Option<OutputFormat>,
    stdout_tty: bool,
}

impl Output {
    pub(super) fn new(explicit: Option<OutputFormat>) -> Output {
        Output { explicit, stdout_tty: std::io::stdout().is_terminal() }
    }

    /// JSON for list commands: asked for, or stdout is not a terminal.
    pub(super) fn json(&self) -> bool {
        match self.explicit {
            Some(f) => f == OutputFormat::Json,
            None => !self.stdout_tty,
        }
    }

    /// JSON only when asked for with `--output json` (for commands that print a value, which
    /// a script wants as it is).
    pub(super) fn json_asked(&self) -> bool {
        self.explicit == Some(OutputFormat::Json)
    }

    /// Prints one JSON document: indented on a terminal, one line otherwise.
    pub(super) fn print_json<T: Serialize + ?Sized>(&self, value: &T) -> std::io::Result<()> {
        let text = if self.stdout_tty { serde_json::to_string_pretty(value) } else { serde_json::to_string(value) }
            .map_err(std::io::Error::other)?;
        line(&text)
    }
}

/// Writes one line to stdout and flushes it (streams are read line by line).
pub(super) fn line(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()
}

/// Writes one line, coloured where the terminal allows, to stdout.
pub(super) fn styled_line(text: &str) -> std::io::Result<()> {
    let mut out = anstream::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()
}

/// A table in the style of `docker ps` or `kubectl get`: no borders, columns two spaces apart,
/// easy to read, grep and cut.
pub(super) fn table<I, S>(header: I) -> Table
where
    I: IntoIterator<Item = S>,
    S: Into<comfy_table::Cell>,
{
    let mut t = Table::new();
    t.load_style(NOTHING).set_header(header);
    for c in t.column_iter_mut() {
        c.set_padding((0, 2));
    }
    t
}

/// The table as text, without trailing blanks.
pub(super) fn render(t: &Table) -> String {
    t.trim_fmt()
}

/// `key=value, key=value`.
pub(super) fn pairs<'a>(it: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
    it.into_iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", ")
}

/// Prints an error and its causes on stderr, skipping causes whose text the message already
/// contains.
pub(super) fn print_error(e: &(dyn std::error::Error + 'static)) {
    let mut err = anstream::stderr().lock();
    // A connection failure's message already says what failed, where and how to fix it.
    let mut shown = match e.downcast_ref::<crate::Error>() {
        Some(me)
            if matches!(
                me.kind(),
                crate::ErrorKind::Connect | crate::ErrorKind::Tls | crate::ErrorKind::BrokerAuth
            ) && me.message().is_some() =>
        {
            me.message().unwrap_or_default().to_string()
        }
        _ => e.to_string(),
    };
    let _ = writeln!(err, "{ERROR}error:{ERROR:#} {shown}");
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !shown.contains(&text) {
            let _ = writeln!(err, "  caused by: {text}");
            shown.push_str(&text);
        }
        cause = c.source();
    }
}

/// A note on stderr.
pub(super) fn note(text: &str) {
    let _ = writeln!(anstream::stderr().lock(), "{HINT}note:{HINT:#} {text}");
}

/// A hint on stderr.
pub(super) fn hint(text: &str) {
    let _ = writeln!(anstream::stderr().lock(), "{HINT}hint:{HINT:#} {text}");
}

/// True when a write failed because the reader went away (`micro ... | head`): stop quietly.
pub(super) fn is_broken_pipe(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::BrokenPipe
}

/// A spinner on stderr while a command waits; nothing at all when stderr is not a terminal.
/// Cleared when dropped.
pub(super) struct Spinner(Option<indicatif::ProgressBar>);

impl Spinner {
    pub(super) fn start(message: impl Into<String>) -> Spinner {
        if !std::io::stderr().is_terminal() {
            return Spinner(None);
        }
        let bar = indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
        bar.set_style(indicatif::ProgressStyle::default_spinner());
        bar.set_message(message.into());
        bar.enable_steady_tick(Duration::from_millis(80));
        Spinner(Some(bar))
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        if let Some(bar) = self.0.take() {
            bar.finish_and_clear();
        }
    }
}

impl std::fmt::Debug for Spinner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Spinner")
    }
}

/// Writes bytes to stdout as they are.
pub(super) fn raw(bytes: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()
}
