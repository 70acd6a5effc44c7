//! Log setup: `tracing` to stderr, human-readable or JSON, filtered by the
//! config's level unless `RUST_LOG` is set.
//!
//! Colour (ANSI escapes) only when stderr is a terminal and `NO_COLOR` is
//! unset or empty (<https://no-color.org>): `docker logs`, journald and
//! files get plain text.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// The filter in force: `RUST_LOG` when set and not empty, else the
/// config's `log.level`. The error names whichever was wrong.
fn filter(cfg: &LogConfig) -> Result<EnvFilter, String> {
    match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => {
            EnvFilter::try_new(&env).map_err(|e| format!("invalid RUST_LOG filter `{env}`: {e}"))
        }
        _ => EnvFilter::try_new(&cfg.level)
            .map_err(|e| format!("log.level: invalid filter `{}`: {e}", cfg.level)),
    }
}

/// Checks the log settings as [`init`] would use them, installing nothing.
/// The config's `log.level` must be valid even while `RUST_LOG` overrides
/// it, since the next start may run without the variable.
pub fn check(cfg: &LogConfig) -> Result<(), String> {
    EnvFilter::try_new(&cfg.level)
        .map_err(|e| format!("log.level: invalid filter `{}`: {e}", cfg.level))?;
    filter(cfg).map(drop)
}

/// Whether human-format logs are coloured: only on a terminal, and not
/// when `NO_COLOR` is set to anything.
pub fn use_colour(is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Installs the global subscriber. Fails if the level is not a valid
/// filter or a subscriber is already installed.
pub fn init(cfg: &LogConfig) -> Result<(), String> {
    let ansi = use_colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR"),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(cfg)?)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let result = match cfg.format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some("".into())));
        assert!(!use_colour(true, Some("1".into())));
        assert!(!use_colour(false, None));
    }

    #[test]
    fn bad_level_names_the_key() {
        let cfg = LogConfig {
            level: "info,=[".into(),
            ..LogConfig::default()
        };
        let err = check(&cfg).unwrap_err();
        assert!(err.contains("log.level"), "{err}");
    }
}
