//! Logging for the examples: `micro::telemetry`, as the `micro` binary uses it (`MICRO_LOG` or
//! `RUST_LOG` for the levels, `MICRO_LOG_FORMAT=json` for JSON lines, OTLP export with the
//! `otel` feature and `OTEL_EXPORTER_OTLP_ENDPOINT`).

pub use micro::telemetry::Telemetry;

/// Installs the subscriber; keep what it returns until the end of `main`.
pub fn init(default: &str) -> Telemetry {
    micro::telemetry::init_with_default(default)
}
