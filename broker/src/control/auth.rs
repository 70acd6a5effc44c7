//! Bearer-token protection of the TCP control listener.
//!
//! The Unix socket relies on its file mode; over TCP every request must carry
//! `Authorization: Bearer <token>`. The comparison takes the same time
//! whatever the position of the first wrong byte, so the token cannot be
//! guessed byte by byte from response times.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::config::TcpApiConfig;
use super::error::{ApiFailure, ControlError};

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

/// Middleware: lets the request through only with the right bearer token.
pub(crate) async fn require_token(
    State(token): State<BearerToken>,
    req: Request,
    next: Next,
) -> Response {
    if token.accepts(req.headers().get(header::AUTHORIZATION)) {
        return next.run(req).await;
    }
    let mut resp = ApiFailure::new(
        StatusCode::UNAUTHORIZED,
        "missing or wrong bearer token: send Authorization: Bearer <control.tcp token>",
    )
    .into_response();
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

/// Compares in time independent of the contents (the length may leak, which
/// reveals nothing useful about a random token).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| std::hint::black_box(acc | (x ^ y)));
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
