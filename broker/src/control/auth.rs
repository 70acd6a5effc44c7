//! Bearer-token protection of the TCP control listener.
//!
//! The Unix socket relies on its file mode; over TCP every request must carry
//! `Authorization: Bearer <token>`. The comparison takes time that depends
//! only on the token's length, never on where the first wrong byte is, so
//! the token cannot be guessed byte by byte from response times. Failed
//! attempts are counted, logged and throttled per peer address
//! ([`super::throttle`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::backend::ControlBackend;
use super::config::TcpApiConfig;
use super::error::{ApiFailure, ControlError};
use super::throttle::{AuthThrottle, Verdict};

/// `Authorization` scheme prefix, compared case-insensitively.
const SCHEME: &[u8] = b"Bearer ";

/// The token required on the TCP listener.
#[derive(Clone)]
pub(crate) struct BearerToken(Arc<[u8]>);

impl BearerToken {
    /// Reads the token from the config; a TCP listener without one is refused.
    pub fn from_config(cfg: &TcpApiConfig) -> Result<Self, ControlError> {
        let token = match (&cfg.token, &cfg.token_file) {
            (Some(_), Some(_)) => return Err(ControlError::TwoTokens),
            (Some(t), None) => t.trim().to_owned(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|source| ControlError::TokenFile {
                    path: path.clone(),
                    source,
                })?
                .trim()
                .to_owned(),
            (None, None) => String::new(),
        };
        if token.is_empty() {
            return Err(ControlError::TcpWithoutToken);
        }
        Ok(BearerToken(token.into_bytes().into()))
    }

    fn accepts(&self, header: Option<&HeaderValue>) -> bool {
        // The scheme name is case-insensitive (RFC 9110 section 11.1).
        let presented = header
            .map(HeaderValue::as_bytes)
            .filter(|h| h.len() >= SCHEME.len() && h[..SCHEME.len()].eq_ignore_ascii_case(SCHEME))
            .map_or(&[][..], |h| &h[SCHEME.len()..]);
        constant_time_eq(presented, &self.0)
    }
}

/// What the token middleware needs: the token, the failure table and the
/// metrics (through the backend).
#[derive(Clone)]
pub(crate) struct TokenGuard {
    pub token: BearerToken,
    pub throttle: Arc<AuthThrottle>,
    pub backend: Arc<dyn ControlBackend>,
}

/// Middleware: lets the request through only with the right bearer token,
/// and not at all from an address that failed too often.
pub(crate) async fn require_token(
    State(guard): State<TokenGuard>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let now = Instant::now();
    if let Verdict::Blocked { retry_after } = guard.throttle.check(peer.ip(), now) {
        guard.backend.metrics().control_auth_throttled.inc();
        // Round up: retrying after the header's seconds must succeed.
        let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        let mut resp = ApiFailure::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many failed token attempts from {}; retry in {secs}s",
                peer.ip()
            ),
        )
        .into_response();
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        return resp;
    }
    if guard
        .token
        .accepts(req.headers().get(header::AUTHORIZATION))
    {
        guard.throttle.succeeded(peer.ip());
        return next.run(req).await;
    }
    guard.backend.metrics().control_auth_failures.inc();
    guard.throttle.failed(peer, now);
    let mut resp = ApiFailure::new(
        StatusCode::UNAUTHORIZED,
        "missing or wrong bearer token: send Authorization: Bearer <control.tcp token>",
    )
    .into_response();
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

/// Compares `presented` with `secret` in time that depends only on the
/// secret's length: every byte of the secret is compared, whatever the
/// presented length or the position of the first difference.
fn constant_time_eq(presented: &[u8], secret: &[u8]) -> bool {
    let len_differs = u8::from(presented.len() != secret.len());
    let diff = secret.iter().enumerate().fold(len_differs, |acc, (i, s)| {
        let p = presented.get(i).copied().unwrap_or(!*s);
        std::hint::black_box(acc | (p ^ s))
    });
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(token: Option<&str>, file: Option<std::path::PathBuf>) -> TcpApiConfig {
        TcpApiConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            token: token.map(Into::into),
            token_file: file,
        }
    }

    #[test]
    fn compare() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(!constant_time_eq(b"a", b""));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"abcd", b"abc"));
        assert!(!constant_time_eq(b"ab\0", b"ab"));
    }

    #[test]
    fn token_required() {
        let err = BearerToken::from_config(&cfg(None, None)).err().unwrap();
        assert!(matches!(err, ControlError::TcpWithoutToken));
        let err = BearerToken::from_config(&cfg(Some("  "), None))
            .err()
            .unwrap();
        assert!(matches!(err, ControlError::TcpWithoutToken));
    }

    #[test]
    fn token_from_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\n").unwrap();
        let t = BearerToken::from_config(&cfg(None, Some(path.clone()))).unwrap();
        assert!(t.accepts(Some(&HeaderValue::from_static("Bearer s3cret"))));
        assert!(!t.accepts(Some(&HeaderValue::from_static("Bearer s3cret "))));
        assert!(t.accepts(Some(&HeaderValue::from_static("bearer s3cret"))));
        assert!(!t.accepts(Some(&HeaderValue::from_static("Basic s3cret"))));
        assert!(!t.accepts(Some(&HeaderValue::from_static("s3cret"))));
        assert!(!t.accepts(None));
        let both = BearerToken::from_config(&cfg(Some("x"), Some(path)));
        assert!(matches!(both.err().unwrap(), ControlError::TwoTokens));
    }
}
