//! Authentication of CONNECT: who may connect. Anonymous access by
//! default; password files, client certificates and HTTP hooks plug in
//! here.

use crate::codec::Connect;
use crate::config::AuthConfig;

/// Why a client was refused; the connect flow turns it into a CONNACK code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("bad user name or password")]
    BadCredentials,
    #[error("not authorized")]
    NotAuthorized,
}

/// Decides whether the client of `connect` may connect; returns the
/// username it is known by.
pub fn authenticate(cfg: &AuthConfig, connect: &Connect) -> Result<Option<String>, AuthError> {
    match &connect.username {
        None if !cfg.allow_anonymous => Err(AuthError::NotAuthorized),
        None => Ok(None),
        // No credential store is configured yet: any username is accepted
        // when anonymous access is, as it would be without one.
        Some(_) if !cfg.allow_anonymous => Err(AuthError::BadCredentials),
        Some(u) => Ok(Some(u.clone())),
    }
}
