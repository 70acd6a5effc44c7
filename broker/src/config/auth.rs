//! The `auth:` section of the configuration: anonymous access, password
//! and ACL files, the HTTP hook, and the bounds on password checking
//! (concurrent hashes, failed-login throttling).

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
    /// Password hashes (Argon2, about 19 MiB each) computed at once; 0 =
    /// the number of CPUs. Further CONNECTs wait for a slot.
    pub max_concurrent_hashes: usize,
    /// Longest a CONNECT waits for a hashing slot before it is refused
    /// with CONNACK 0x89 server busy (3.1.1: 0x03 server unavailable).
    pub hash_wait_timeout_ms: u64,
    /// Failed logins from one client address (IPv4 address, IPv6 /64)
    /// within `failure_window_secs` after which its logins are refused
    /// without checking until the window ends; 0 = no limit.
    pub max_failures_per_address: u32,
    /// The same for one username, from any address; 0 = no limit.
    pub max_failures_per_username: u32,
    /// The window failed logins are counted in, from the first failure.
    pub failure_window_secs: u64,
    /// Most addresses, and most usernames, whose failures are tracked.
    pub max_tracked_failures: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            allow_anonymous: true,
            password_file: None,
            acl_file: None,
            http_hook: None,
            max_concurrent_hashes: 0,
            hash_wait_timeout_ms: 2000,
            max_failures_per_address: 10,
            max_failures_per_username: 30,
            failure_window_secs: 60,
            max_tracked_failures: 50_000,
        }
    }
}

impl AuthConfig {
    /// `max_concurrent_hashes`, with 0 resolved to the number of CPUs.
    pub fn effective_max_concurrent_hashes(&self) -> usize {
        if self.max_concurrent_hashes == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            self.max_concurrent_hashes
        }
    }

    pub fn hash_wait_timeout(&self) -> Duration {
        Duration::from_millis(self.hash_wait_timeout_ms)
    }

    pub fn failure_window(&self) -> Duration {
        Duration::from_secs(self.failure_window_secs)
    }

    pub(super) fn validate(&self) -> Result<(), (String, String)> {
        let at_least_one = |key: &str, v: u64| {
            if v == 0 {
                Err((format!("auth.{key}"), "must be at least 1".to_string()))
            } else {
                Ok(())
            }
        };
        at_least_one("hash_wait_timeout_ms", self.hash_wait_timeout_ms)?;
        at_least_one("failure_window_secs", self.failure_window_secs)?;
        at_least_one(
            "max_tracked_failures",
            u64::try_from(self.max_tracked_failures).unwrap_or(u64::MAX),
        )?;
        if let Some(hook) = &self.http_hook {
            hook.validate()?;
        }
        Ok(())
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

    #[test]
    fn password_check_bounds_parse_and_validate() {
        let c = parse("auth:\n  max_concurrent_hashes: 3\n  hash_wait_timeout_ms: 500\n  max_failures_per_address: 4\n  max_failures_per_username: 0\n  failure_window_secs: 30\n  max_tracked_failures: 100\n").unwrap();
        assert_eq!(c.auth.effective_max_concurrent_hashes(), 3);
        assert_eq!(c.auth.hash_wait_timeout(), Duration::from_millis(500));
        assert_eq!(c.auth.max_failures_per_address, 4);
        assert_eq!(c.auth.max_failures_per_username, 0);
        assert_eq!(c.auth.failure_window(), Duration::from_secs(30));
        assert_eq!(c.auth.max_tracked_failures, 100);
        let d = parse("").unwrap().auth;
        assert!(d.effective_max_concurrent_hashes() >= 1);
        assert_eq!(
            (d.max_failures_per_address, d.max_failures_per_username),
            (10, 30)
        );
        for key in [
            "hash_wait_timeout_ms",
            "failure_window_secs",
            "max_tracked_failures",
        ] {
            let err = parse(&format!("auth:\n  {key}: 0\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("auth.{key}")), "{err}");
        }
    }
}
