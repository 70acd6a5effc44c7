//! Log setup: `tracing` to stderr, human-readable or JSON, filtered by the
//! config's level unless `RUST_LOG` is set.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber. Fails if the level is not a valid
/// filter or a subscriber is already installed.
pub fn init(cfg: &LogConfig) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => EnvFilter::try_new(&env),
        _ => EnvFilter::try_new(&cfg.level),
    }
    .map_err(|e| format!("invalid log level `{}`: {e}", cfg.level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match cfg.format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|e| e.to_string())
}
