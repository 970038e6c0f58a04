//! Slack's text conventions (<https://api.slack.com/reference/surfaces/formatting>): `&`, `<`
//! and `>` travel escaped, a mention is `<@U…>`, code blocks are ```` ``` ```` fences without a
//! language.

/// The command in `text` for the bot `me`: in a channel what follows `<@me>` (and an optional
/// `:` or `,`) or `!`; in a direct message all of it.
pub(super) fn addressed<'a>(me: &str, text: &'a str, in_channel: bool) -> Option<&'a str> {
    let text = text.trim();
    if !in_channel {
        return Some(text);
    }
    if let Some(rest) = text.strip_prefix('!') {
        return Some(rest.trim());
    }
    let rest = text.strip_prefix("<@")?.strip_prefix(me)?;
    // `<@U123>` or `<@U123|name>`.
    let rest = match rest.strip_prefix('|') {
        Some(label) => &label[label.find('>')? + 1..],
        None => rest.strip_prefix('>')?,
    };
    let rest = rest.trim_start();
    Some(rest.strip_prefix([':', ',']).unwrap_or(rest).trim())
}

/// `text` as the user typed it.
pub(super) fn unescape(text: &str) -> String {
    text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

/// A reply as Slack shows it: control characters escaped, code fences without a language (Slack
/// would show `json` as the block's first line).
pub(super) fn for_slack(text: &str) -> String {
    let escaped = text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let lines: Vec<&str> = escaped.lines().map(|l| if l.starts_with("```") { "```" } else { l }).collect();
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_commands_and_escapes() {
        assert_eq!(addressed("UBOT", "<@UBOT> services", true), Some("services"));
        assert_eq!(addressed("UBOT", "<@UBOT|micro>: call a b", true), Some("call a b"));
        assert_eq!(addressed("UBOT", "!help", true), Some("help"));
        assert_eq!(addressed("UBOT", "<@UOTHER> services", true), None);
        assert_eq!(addressed("UBOT", "<@UBOTX> services", true), None);
        assert_eq!(addressed("UBOT", "services", true), None);
        assert_eq!(addressed("UBOT", " services ", false), Some("services"));
        assert_eq!(unescape("a &lt;b&gt; &amp;lt;"), "a <b> &lt;");
        assert_eq!(for_slack("```json\n{\"a\": \"<&>\"}\n```"), "```\n{\"a\": \"&lt;&amp;&gt;\"}\n```");
    }
}
