//! The `auth:` section of the configuration: anonymous access, password
//! and ACL files, and the HTTP hook.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Accept clients that send no username (listeners may override).
    pub allow_anonymous: bool,
    /// `user:hash` lines (see `docs/security.md`); reloaded on SIGHUP.
    pub password_file: Option<PathBuf>,
    /// Topic access rules (see `docs/security.md`); reloaded on SIGHUP.
    pub acl_file: Option<PathBuf>,
    /// An HTTP endpoint asked for decisions the files do not make.
    pub http_hook: Option<HttpHookConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            allow_anonymous: true,
            password_file: None,
            acl_file: None,
            http_hook: None,
        }
    }
}

/// What the broker decides when the HTTP hook cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookFailure {
    #[default]
    Deny,
    Allow,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpHookConfig {
    /// `http://` or `https://` URL that receives the JSON POSTs.
    pub url: String,
    /// Ask the hook whether a client may connect.
    #[serde(default = "yes")]
    pub authenticate: bool,
    /// Ask the hook whether a client may publish or subscribe.
    #[serde(default = "yes")]
    pub authorize: bool,
    /// Time allowed for one request, connection included.
    #[serde(default = "default_hook_timeout_ms")]
    pub timeout_ms: u64,
    /// How long an allow/deny answer to an authorization question is
    /// reused; 0 disables the cache.
    #[serde(default = "default_hook_cache_ttl")]
    pub cache_ttl_secs: u64,
    /// Most answers kept in the cache.
    #[serde(default = "default_hook_cache_entries")]
    pub cache_max_entries: usize,
    /// The decision when the hook is down, times out or answers badly.
    #[serde(default)]
    pub on_error: HookFailure,
}

fn yes() -> bool {
    true
}
fn default_hook_timeout_ms() -> u64 {
    2000
}
fn default_hook_cache_ttl() -> u64 {
    30
}
fn default_hook_cache_entries() -> usize {
    10_000
}

impl HttpHookConfig {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn cache_ttl(&self) -> Duration {
        Duration::from_secs(self.cache_ttl_secs)
    }

    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        let key = |k: &str| format!("auth.http_hook.{k}");
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err((key("url"), "must be an http:// or https:// URL".into()));
        }
        if self.timeout_ms == 0 {
            return Err((key("timeout_ms"), "must be at least 1".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Config, ConfigError};

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.yaml"))
    }

    #[test]
    fn auth_section_parses_and_checks_hook_url() {
        let c = parse("auth:\n  allow_anonymous: false\n  password_file: /etc/pw\n  acl_file: /etc/acl\n  http_hook: {url: 'http://127.0.0.1:9/auth', on_error: allow}\n").unwrap();
        assert!(!c.auth.allow_anonymous);
        let hook = c.auth.http_hook.unwrap();
        assert_eq!(hook.on_error, HookFailure::Allow);
        assert!(hook.authenticate && hook.authorize);
        let err = parse("auth:\n  http_hook: {url: 'ftp://x'}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("auth.http_hook.url"), "{err}");
    }
}
