//! Structured logs through `tracing`. Passwords, tokens and hashes are never
//! recorded: resolvers log ids and outcomes only, and the HTTP span records
//! the path without its query string.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

pub fn init(config: &LogConfig) {
    let (filter, bad_filter) = match EnvFilter::try_new(&config.filter) {
        Ok(filter) => (filter, None),
        Err(e) => (EnvFilter::new("info"), Some(e)),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests start many apps in one process) is harmless.
    let _ = match config.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if let Some(e) = bad_filter {
        tracing::warn!(filter = %config.filter, error = %e, "AUTHQL_LOG is not a valid filter; using info");
    }
}
