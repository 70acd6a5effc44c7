//! Decisions from an HTTP endpoint.
//!
//! Each question is one `POST` of a JSON object to the configured URL:
//!
//! ```json
//! {"action": "connect", "client_id": "dev1", "username": "alice",
//!  "password": "...", "listener": "mqtts"}
//! {"action": "publish", "client_id": "dev1", "username": "alice",
//!  "topic": "sensors/t", "listener": "mqtts"}
//! ```
//!
//! `action` is `connect`, `publish` or `subscribe` (then `topic` is the
//! filter). The endpoint answers `200` with `{"result": "allow"}` or
//! `{"result": "deny"}`. Anything else (another status, a timeout, a
//! refused connection, another body) counts as the hook being unavailable,
//! and the configured `on_error` decision applies (deny by default).
//! Publish and subscribe answers are cached for `cache_ttl_secs`;
//! connect answers are not (they hold a password). Passwords that are not
//! UTF-8 cannot be sent and are refused. Nothing secret is logged.

use serde::{Deserialize, Serialize};

use super::cache::TtlCache;
use super::ClientCtx;
use crate::config::{HookFailure, HttpHookConfig};

/// The question asked about a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HookAction {
    Connect,
    Publish,
    Subscribe,
}

#[derive(Serialize)]
struct HookRequest<'a> {
    action: HookAction,
    client_id: &'a str,
    username: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<&'a str>,
    listener: &'a str,
}

#[derive(Deserialize)]
struct HookResponse {
    result: HookResult,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum HookResult {
    Allow,
    Deny,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct CacheKey {
    action: HookAction,
    client_id: String,
    username: Option<String>,
    topic: String,
}

pub struct HttpHook {
    client: reqwest::Client,
    cfg: HttpHookConfig,
    cache: TtlCache<CacheKey, bool>,
}

impl HttpHook {
    pub fn new(cfg: &HttpHookConfig) -> Result<HttpHook, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout())
            .connect_timeout(cfg.timeout())
            .build()?;
        Ok(HttpHook {
            client,
            cfg: cfg.clone(),
            cache: TtlCache::new(cfg.cache_ttl(), cfg.cache_max_entries),
        })
    }

    /// Whether the hook is asked about connections.
    pub fn authenticates(&self) -> bool {
        self.cfg.authenticate
    }

    /// Whether the hook is asked about publish and subscribe.
    pub fn authorizes(&self) -> bool {
        self.cfg.authorize
    }

    /// Forgets cached answers (on reload).
    pub fn clear_cache(&self) {
        self.cache.clear();
    }

    /// Whether the client may connect with these credentials.
    pub async fn authenticate(
        &self,
        client_id: &str,
        username: &str,
        password: Option<&[u8]>,
        listener: &str,
    ) -> bool {
        let password = match password.map(std::str::from_utf8) {
            None => None,
            Some(Ok(p)) => Some(p),
            Some(Err(_)) => {
                tracing::info!(
                    client_id,
                    "password is not UTF-8; the HTTP hook cannot check it"
                );
                return false;
            }
        };
        let req = HookRequest {
            action: HookAction::Connect,
            client_id,
            username: Some(username),
            password,
            topic: None,
            listener,
        };
        self.decide(&req).await
    }

    /// Whether `client` may publish to / subscribe to `topic`.
    pub async fn authorize(&self, client: &ClientCtx, action: HookAction, topic: &str) -> bool {
        let key = CacheKey {
            action,
            client_id: client.client_id.to_string(),
            username: client.username.clone(),
            topic: topic.to_string(),
        };
        if let Some(answer) = self.cache.get(&key) {
            return answer;
        }
        let req = HookRequest {
            action,
            client_id: &client.client_id,
            username: client.username.as_deref(),
            password: None,
            topic: Some(topic),
            listener: &client.listener,
        };
        match self.ask(&req).await {
            Ok(result) => {
                let allow = result == HookResult::Allow;
                self.cache.insert(key, allow);
                allow
            }
            Err(why) => self.unavailable(&req, &why),
        }
    }

    async fn decide(&self, req: &HookRequest<'_>) -> bool {
        match self.ask(req).await {
            Ok(result) => result == HookResult::Allow,
            Err(why) => self.unavailable(req, &why),
        }
    }

    fn unavailable(&self, req: &HookRequest<'_>, why: &str) -> bool {
        let allow = self.cfg.on_error == HookFailure::Allow;
        tracing::warn!(
            action = ?req.action,
            client_id = req.client_id,
            reason = why,
            decision = if allow { "allow" } else { "deny" },
            "HTTP auth hook unavailable"
        );
        allow
    }

    /// One request; `Err` says why no decision came back (never secrets).
    async fn ask(&self, req: &HookRequest<'_>) -> Result<HookResult, String> {
        let resp = self
            .client
            .post(&self.cfg.url)
            .json(req)
            .send()
            .await
            .map_err(|e| describe(&e))?;
        let status = resp.status();
        if status != reqwest::StatusCode::OK {
            return Err(format!("status {status}"));
        }
        let body: HookResponse = resp.json().await.map_err(|e| describe(&e))?;
        Ok(body.result)
    }
}

/// A reqwest error without the URL (it may carry credentials).
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "cannot connect".into()
    } else if e.is_decode() {
        "unexpected response body".into()
    } else {
        let text = e.to_string();
        match e.url() {
            Some(url) => text.replace(url.as_str(), "<hook url>"),
            None => text,
        }
    }
}
