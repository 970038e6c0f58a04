//! Input: the JSON a person types (argument or stdin), metadata pairs, the content type.

use std::io::{IsTerminal, Read};

use bytes::Bytes;

use super::CliError;
use crate::codec::Codec;

/// How a request or event body is sent (`--content-type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
#[non_exhaustive]
pub enum ContentType {
    /// `application/json`: the JSON as typed.
    #[default]
    Json,
    /// `application/msgpack`: the JSON transcoded to MessagePack.
    Msgpack,
}

impl ContentType {
    pub(super) fn codec(self) -> Codec {
        match self {
            ContentType::Json => Codec::Json,
            ContentType::Msgpack => Codec::MsgPack,
        }
    }
}

/// Parses `key=value` (for `-m`).
pub(super) fn parse_pair(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("{s:?}: use key=value"))?;
    if k.is_empty() {
        return Err(format!("{s:?}: the key is empty"));
    }
    Ok((k.to_string(), v.to_string()))
}

/// The body to send: the argument, or stdin when it is `-` or absent (absent with stdin a
/// terminal means `{}`). Checked as JSON before anything is sent; an error points at the line
/// and column. Encoded with the content type's codec.
pub(super) fn body(arg: Option<&str>, content_type: ContentType) -> Result<Bytes, CliError> {
    let (text, from) = match arg {
        Some("-") => (read_stdin()?, "stdin"),
        Some(s) => (s.to_string(), "the argument"),
        None if std::io::stdin().is_terminal() => ("{}".to_string(), "the default"),
        None => (read_stdin()?, "stdin"),
    };
    let text = if text.trim().is_empty() { "{}".to_string() } else { text };
    let value = parse_json(&text, from)?;
    content_type.codec().encode(&value).map_err(|e| CliError(format!("cannot encode the request: {e}")))
}

fn read_stdin() -> Result<String, CliError> {
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s).map_err(|e| CliError(format!("cannot read stdin: {e}")))?;
    Ok(s)
}

/// Parses JSON; on failure the message quotes the offending line with a caret under the column.
pub(super) fn parse_json(text: &str, from: &str) -> Result<serde_json::Value, CliError> {
    serde_json::from_str(text).map_err(|e| {
        let (line, column) = (e.line(), e.column());
        let mut msg = format!("{from} is not valid JSON: {e}");
        if let Some(src) = text.lines().nth(line.saturating_sub(1)) {
            // Quote at most 80 characters around the column so a long line stays readable.
            let chars: Vec<char> = src.chars().collect();
            let col = column.saturating_sub(1).min(chars.len());
            let start = col.saturating_sub(60);
            let end = (start + 80).min(chars.len());
            let shown: String = chars[start..end].iter().collect();
            msg.push_str(&format!("\n  {shown}\n  {}^", " ".repeat(col - start)));
        }
        CliError(msg)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_json_points_at_the_position() {
        let e = parse_json("{\"name\" \"John\"}", "the argument").unwrap_err().0;
        assert!(e.contains("line 1 column 9"), "{e}");
        assert!(e.ends_with("  {\"name\" \"John\"}\n          ^"), "{e:?}");
    }

    #[test]
    fn pairs() {
        assert_eq!(parse_pair("tenant=acme=1").unwrap(), ("tenant".into(), "acme=1".into()));
        assert!(parse_pair("tenant").is_err());
        assert!(parse_pair("=x").is_err());
    }
}
