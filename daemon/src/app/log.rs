//! Logging set-up for `touchpilot run`: text or JSON lines on stderr, or
//! the systemd journal. The filter comes from `TOUCHPILOT_LOG`, then the
//! configuration, then `info`.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

use crate::config::{Log, LogFormat};

/// Installs the global subscriber; a second call changes nothing.
pub fn init(log: &Log, format: Option<LogFormat>) -> Result<(), String> {
    let filter = std::env::var("TOUCHPILOT_LOG")
        .ok()
        .or_else(|| log.level.clone())
        .unwrap_or_else(|| "info".to_string());
    let filter = EnvFilter::try_new(&filter).map_err(|e| format!("log filter `{filter}`: {e}"))?;
    let registry = tracing_subscriber::registry().with(filter);
    let done = match format.unwrap_or(log.format) {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_target(false),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Journald => {
            let journald = tracing_journald::layer()
                .map_err(|e| format!("cannot reach the systemd journal: {e}"))?
                .with_syslog_identifier("touchpilot".to_string());
            registry.with(journald).try_init()
        }
    };
    // Already installed (tests start several daemons in one process).
    let _ = done;
    Ok(())
}
