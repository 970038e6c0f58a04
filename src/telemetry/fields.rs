//! [`LeanFields`]: the human lines' fields as `tracing-subscriber`'s `DefaultFields` writes
//! them, without its cost for the fields every span has.
//!
//! The fmt layer formats a span's fields when the span is made (to print them before any line
//! logged inside it), so with the binaries' default `info` filter every call, request and event
//! pays for it. `DefaultFields` writes each through `Debug` (a string is escaped char by char)
//! and styles each name (`nu_ansi_term`, even with colours off): about 12,000 instructions per
//! request for the five fields of an `rpc.server` span. The fields are formatted the same way
//! here, byte for byte, with plain writes for a string that needs no escaping; anything else (a
//! message, colours on, a string with quotes or non-ASCII) goes to `DefaultFields`' own visitor.

use std::fmt;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::fmt::FormatFields;

/// Formats fields exactly as `DefaultFields` does, cheaper (see the module).
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct LeanFields;

impl<'w> FormatFields<'w> for LeanFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = LeanVisitor { writer, is_empty: true, result: Ok(()) };
        fields.record(&mut visitor);
        visitor.result
    }
}

/// Formats no field: for a format that prints none of a span's fields ([`JsonLines`] reads
/// an event's own through its visitor).
///
/// [`JsonLines`]: super::JsonLines
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct NoFields;

impl<'w> FormatFields<'w> for NoFields {
    fn format_fields<R: RecordFields>(&self, _writer: Writer<'w>, _fields: R) -> fmt::Result {
        Ok(())
    }
}

struct LeanVisitor<'a> {
    writer: Writer<'a>,
    /// Nothing written yet (no space before the next field).
    is_empty: bool,
    result: fmt::Result,
}

impl LeanVisitor<'_> {
    /// Whether `DefaultFields` would write this field as `name=<Debug>` without styling.
    fn plain(&self, name: &str) -> bool {
        !self.writer.has_ansi_escapes() && name != "message" && !name.starts_with("log.") && !name.starts_with("r#")
    }

    fn pad(&mut self) -> fmt::Result {
        if self.is_empty {
            self.is_empty = false;
            Ok(())
        } else {
            self.writer.write_char(' ')
        }
    }

    /// `DefaultFields`' own way (`record` on its visitor), for what is not plain.
    fn default(&mut self, field: &Field, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        let mut visitor = DefaultVisitor::new(self.writer.by_ref(), self.is_empty);
        record(&mut visitor);
        self.result = visitor.finish();
        if !field.name().starts_with("log.") {
            self.is_empty = false;
        }
    }
}

/// A string whose `Debug` is itself in quotes: printable ASCII without `"` or `\`.
fn needs_no_escape(s: &str) -> bool {
    s.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

impl Visit for LeanVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_err() {
            return;
        }
        if self.plain(field.name()) && needs_no_escape(value) {
            self.result = self.pad().and_then(|()| {
                let w = &mut self.writer;
                w.write_str(field.name())?;
                w.write_str("=\"")?;
                w.write_str(value)?;
                w.write_char('"')
            });
        } else {
            self.default(field, |v| v.record_str(field, value));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        if self.plain(field.name()) {
            self.result = self.pad().and_then(|()| write!(self.writer, "{}={value:?}", field.name()));
        } else {
            self.default(field, |v| v.record_debug(field, value));
        }
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::fmt::format::DefaultFields;

    use super::*;

    /// Formats one span's fields with `fields`, and the same for an event inside it.
    fn render<F: for<'w> FormatFields<'w> + Send + Sync + 'static>(fields: F) -> String {
        use std::sync::{Arc, Mutex};
        use tracing_subscriber::layer::SubscriberExt;
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let layer = tracing_subscriber::fmt::layer()
            .fmt_fields(fields)
            .with_writer(move || buf.clone())
            .with_ansi(false)
            .without_time();
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "rpc.server",
                otel.name = %format_args!("{}/{}", "go.micro.srv.greeter", "Say.Hello"),
                otel.kind = "server",
                rpc.method = "Say.Hello",
                quoted = "say \"hi\"",
                accented = "café",
                n = 7u64,
                ok = true,
                status = tracing::field::Empty,
            );
            span.record("status", "late \\ recorded");
            let _in = span.enter();
            tracing::info!(user = "ada", tricky = "a\nb", "hello {}", "world");
        });
        let bytes = out.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn lines_are_those_of_the_default_fields() {
        let lean = render(LeanFields);
        assert_eq!(lean, render(DefaultFields::new()));
        assert!(lean.contains(r#"rpc.server{otel.name=go.micro.srv.greeter/Say.Hello otel.kind="server""#), "{lean}");
        assert!(lean.contains(r#"hello world user="ada" tricky="a\nb""#), "{lean}");
    }
}
