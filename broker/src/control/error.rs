//! Errors of the control servers: [`ControlError`] when starting them, and
//! [`ApiFailure`], the one JSON error shape every endpoint answers with.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use mqttd_api::ApiError;

use super::backend::BackendError;

/// Why a control or health server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("another mqttd is already serving on {}", path.display())]
    AlreadyServing { path: PathBuf },
    #[error("{} exists and is not a socket; remove it or set control.socket", path.display())]
    NotASocket { path: PathBuf },
    #[error("{} is a symbolic link; refusing to follow it for the control socket (remove it, or set control.socket to the real path)", path.display())]
    SymlinkSocket { path: PathBuf },
    #[error("{} is a socket owned by uid {owner}, not by mqttd's user (uid {ours}); refusing to replace it (remove it, or set control.socket)", path.display())]
    ForeignSocket {
        path: PathBuf,
        owner: u32,
        ours: u32,
    },
    #[error("refusing the control socket directory {}: {reason}", path.display())]
    UnsafeSocketDir { path: PathBuf, reason: String },
    #[error("cannot check the existing control socket {}: {source}", path.display())]
    Probe { path: PathBuf, source: io::Error },
    #[error("cannot create the control socket directory {}: {source}", path.display())]
    SocketDir { path: PathBuf, source: io::Error },
    #[error("cannot bind the control socket {}: {source}", path.display())]
    BindSocket { path: PathBuf, source: io::Error },
    #[error("cannot set mode {mode:04o} on the control socket {}: {source}", path.display())]
    SocketMode {
        path: PathBuf,
        mode: u32,
        source: io::Error,
    },
    #[error("no usable control socket location ({tried}); set control.socket")]
    NoSocketLocation { tried: String },
    #[error("control.tcp needs a bearer token: set control.tcp.token or control.tcp.token_file")]
    TcpWithoutToken,
    #[error("control.tcp sets both token and token_file; keep one")]
    TwoTokens,
    #[error("cannot read control.tcp.token_file {}: {source}", path.display())]
    TokenFile { path: PathBuf, source: io::Error },
    #[error("cannot bind the {what} on {addr}: {source}")]
    BindTcp {
        what: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },
}

/// An error answer: status plus a sentence, sent as [`ApiError`] JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiFailure {
    pub status: StatusCode,
    pub message: String,
}

impl ApiFailure {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiFailure {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// Maps a backend error; `what` names the thing looked up, for 404s
    /// (e.g. `no session with client id "x"`).
    pub fn from_backend(err: BackendError, what: impl FnOnce() -> String) -> Self {
        match err {
            BackendError::NotFound => Self::new(StatusCode::NOT_FOUND, what()),
            BackendError::Rejected(reason) => Self::bad_request(reason),
            BackendError::Unavailable(reason) => Self::new(StatusCode::SERVICE_UNAVAILABLE, reason),
        }
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let body = ApiError {
            error: self.message,
            status: self.status.as_u16(),
        };
        (self.status, Json(body)).into_response()
    }
}
