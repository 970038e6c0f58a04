//! Logging for the examples: to stderr, filtered by `MICRO_LOG` or `RUST_LOG` (as the `micro`
//! CLI reads them), coloured only on a terminal.

pub fn init(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MICRO_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| default.into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
}
