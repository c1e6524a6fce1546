//! Logging: `tracing` events to stderr, as text or JSON lines.
//!
//! Nothing here sees token values; callers must never put one in a field or message
//! (tokens live in a redacting type, see the `nuclia` module).

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use super::config::LogFormat;

/// Installs the global subscriber. `level` is an EnvFilter directive (`info`,
/// `info,kube=warn`); `RUST_LOG`, when set and valid, takes precedence.
///
/// Fails on an invalid directive or when a global subscriber is already installed.
pub fn init(
    format: LogFormat,
    level: &str,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directive) if !directive.trim().is_empty() => EnvFilter::try_new(directive)?,
        _ => EnvFilter::try_new(level)?,
    };
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_target(true)
                    // Colour only for a person at a terminal: a log file or a collector gets
                    // plain text.
                    .with_ansi(std::io::stderr().is_terminal()),
            )
            .try_init()?,
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .try_init()?,
    }
    Ok(())
}
