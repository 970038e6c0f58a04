//! Replies shaped for chat: short tables, code blocks for JSON, long output cut with a note.

/// A plain-text table with aligned columns, inside a code block so chat clients keep it aligned.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}", w = *w)).collect();
        padded.join("  ").trim_end().to_string()
    };
    let mut out = vec![line(header.to_vec())];
    out.extend(rows.iter().map(|r| line(r.iter().map(String::as_str).collect())));
    code(&out.join("\n"), "")
}

/// `text` in a fenced code block (` ```json ` for JSON).
pub(crate) fn code(text: &str, lang: &str) -> String {
    format!("```{lang}\n{}\n```", text.trim_end())
}

/// JSON, indented, in a code block.
pub(crate) fn json(value: &serde_json::Value) -> String {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string());
    code(&text, "json")
}

/// Cuts `text` to `max_lines` lines and `max_chars` characters, keeping a code block closed and
/// saying how much was left out.
pub fn truncate(text: &str, max_lines: usize, max_chars: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut kept = Vec::new();
    let mut chars = 0;
    for line in &lines {
        let n = line.chars().count() + 1;
        if kept.len() >= max_lines || chars + n > max_chars {
            break;
        }
        chars += n;
        kept.push(*line);
    }
    if kept.len() == lines.len() {
        return text.to_string();
    }
    if kept.is_empty() {
        // One line longer than the limit: cut inside it.
        let cut: String = text.chars().take(max_chars).collect();
        return format!("{cut}\n(output truncated: {} characters in all)", text.chars().count());
    }
    let left = lines.len() - kept.len();
    let fences = kept.iter().filter(|l| l.starts_with("```")).count();
    let mut out = kept.join("\n");
    if fences % 2 == 1 {
        out.push_str("\n```");
    }
    out.push_str(&format!("\n(output truncated: {left} more line(s))"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_long_output_is_cut_with_a_note() {
        let t = table(&["SERVICE", "NODES"], &[vec!["go.micro.srv.greeter".into(), "2".into()]]);
        assert_eq!(t, "```\nSERVICE               NODES\ngo.micro.srv.greeter  2\n```");
        let long: String = (0..50).map(|i| format!("line {i}\n")).collect();
        let cut = truncate(&code(&long, ""), 10, 10_000);
        assert!(cut.ends_with("```\n(output truncated: 42 more line(s))"), "{cut}");
        assert_eq!(truncate("short", 10, 100), "short");
        assert!(truncate(&"x".repeat(50), 10, 20).contains("50 characters in all"));
    }
}
