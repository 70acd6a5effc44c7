//! The control API: versioned HTTP/JSON on a Unix socket (and optionally on
//! TCP with a bearer token), used by `mqttctl`; plus the health and metrics
//! HTTP server.
//!
//! Endpoints (types from the `mqttd-api` crate; every error is an
//! `ApiError {"error": "...", "status": N}`):
//!
//! - `GET /v1/status` → `Status`;
//! - `GET /v1/sessions?connected=&prefix=&username=&limit=&cursor=` →
//!   `SessionPage` (ordered by client id; `limit` 1..=1000, default 100;
//!   400 on a bad query);
//! - `GET /v1/sessions/{client_id}` → `SessionDetail`, 404 if unknown
//!   (the id is percent-encoded in the path, `/` included);
//! - `DELETE /v1/sessions/{client_id}` → 204, 404 if unknown;
//! - `GET /v1/pool` → `PoolInfo`;
//! - `POST /v1/pool/resize` with `ResizeRequest {"size": N}` → `PoolInfo`,
//!   400 unless `1 <= N <= 1024`;
//! - anything else → 404 (unknown path) or 405 (wrong method).
//!
//! Health server endpoints are listed in [`http`].
//!
//! # Layout
//!
//! - [`backend`]: the [`ControlBackend`] trait the broker implements;
//! - [`config`]: `control:` and `http:` configuration;
//! - [`error`]: startup errors and the JSON error answer;
//! - [`routes`]: the `/v1` router and handlers;
//! - `socket`: socket path choice, stale-socket handling, file mode;
//! - `auth`: bearer token for the TCP listener;
//! - `throttle`: failed token attempts per peer address (429, logs);
//! - [`http`]: `/healthz`, `/readyz`, `/metrics`;
//! - `fake` (tests and the `test-util` feature): an in-memory backend.

use std::fmt::Debug;
use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::serve::Listener;
use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

mod auth;
pub mod backend;
pub mod config;
pub mod error;
#[cfg(any(test, feature = "test-util"))]
pub mod fake;
pub mod http;
pub mod routes;
mod socket;
#[cfg(test)]
mod tests;
mod throttle;

pub use backend::{BackendError, ControlBackend};
pub use config::{ControlConfig, HttpConfig, TcpApiConfig};
pub use error::{ApiFailure, ControlError};
pub use http::{serve_http, HttpServer};

/// After shutdown, how long open control connections may take to finish
/// before they are dropped.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A running control API.
#[derive(Debug)]
pub struct ControlServer {
    socket_path: PathBuf,
    tcp_addr: Option<SocketAddr>,
    task: JoinHandle<()>,
}

impl ControlServer {
    /// The Unix socket path actually bound.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// The TCP address actually bound, if `control.tcp` is configured.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// Waits until the servers have stopped and the socket file is removed.
    pub async fn join(self) {
        if let Err(e) = self.task.await {
            tracing::error!("control server task failed: {e}");
        }
    }
}

/// The control settings start-up checks before binding anything (the TCP
/// listener's token), for `mqttd --check-config` too.
pub fn check_config(cfg: &ControlConfig) -> Result<(), ControlError> {
    cfg.tcp
        .as_ref()
        .map(auth::BearerToken::from_config)
        .transpose()
        .map(drop)
}

/// Binds the control socket (and TCP listener, if configured) before
/// returning, so configuration and bind errors surface at startup, then
/// serves until `shutdown` is cancelled. The socket file is removed when the
/// server stops.
pub async fn serve_control(
    backend: Arc<dyn ControlBackend>,
    cfg: &ControlConfig,
    shutdown: CancellationToken,
) -> Result<ControlServer, ControlError> {
    // Check the TCP settings first: nothing is bound if they are wrong.
    let token = cfg
        .tcp
        .as_ref()
        .map(auth::BearerToken::from_config)
        .transpose()?;
    let bound = socket::bind_control_socket(cfg.socket.as_deref(), cfg.socket_mode).await?;
    let socket_path = bound.guard.path().to_path_buf();
    let router = routes::api_router(backend.clone());

    let tcp = match (&cfg.tcp, token) {
        (Some(tcp), Some(token)) => {
            let guard = auth::TokenGuard {
                token,
                throttle: Arc::default(),
                backend,
            };
            Some(bind_tcp(tcp.bind, router.clone(), guard).await?)
        }
        _ => None,
    };
    let tcp_addr = tcp.as_ref().map(|(addr, _, _)| *addr);
    tracing::info!(path = %socket_path.display(), mode = format!("{:04o}", cfg.socket_mode), "control API listening on unix socket");

    let unix_shutdown = shutdown.clone();
    let task = tokio::spawn(async move {
        // The guard lives in this task: the file goes when serving ends.
        let guard = bound.guard;
        let unix = serve_until_shutdown(bound.listener, router, unix_shutdown, "control socket");
        match tcp {
            Some((_, listener, router)) => {
                let tcp = serve_tcp_until_shutdown(listener, router, shutdown);
                tokio::join!(unix, tcp);
            }
            None => unix.await,
        }
        drop(guard);
    });
    Ok(ControlServer {
        socket_path,
        tcp_addr,
        task,
    })
}

async fn bind_tcp(
    addr: SocketAddr,
    router: Router,
    guard: auth::TokenGuard,
) -> Result<(SocketAddr, TcpListener, Router), ControlError> {
    let bind_err = |source| ControlError::BindTcp {
        what: "control TCP listener",
        addr,
        source,
    };
    let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
    let local = listener.local_addr().map_err(bind_err)?;
    let router = router.layer(axum::middleware::from_fn_with_state(
        guard,
        auth::require_token,
    ));
    tracing::info!(addr = %local, "control API listening on TCP (bearer token required)");
    Ok((local, listener, router))
}

/// Serves `router` on `listener` until `shutdown`, then lets open
/// connections finish for at most [`SHUTDOWN_GRACE`]. axum's accept loop
/// logs and retries accept errors, and a failing connection only ends its
/// own task.
pub(crate) async fn serve_until_shutdown<L>(
    listener: L,
    router: Router,
    shutdown: CancellationToken,
    what: &'static str,
) where
    L: Listener,
    L::Addr: Debug,
{
    let serve = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future();
    until_shutdown(serve, shutdown, what).await;
}

/// [`serve_until_shutdown`] for the TCP control listener, whose handlers
/// see the peer address (`ConnectInfo<SocketAddr>`) for throttling.
async fn serve_tcp_until_shutdown(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) {
    let serve = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.clone().cancelled_owned())
    .into_future();
    until_shutdown(serve, shutdown, "control TCP listener").await;
}

/// Runs `serve` until it ends, or until [`SHUTDOWN_GRACE`] after `shutdown`.
async fn until_shutdown(
    serve: impl std::future::Future<Output = std::io::Result<()>>,
    shutdown: CancellationToken,
    what: &'static str,
) {
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        res = serve => {
            if let Err(e) = res {
                tracing::error!("{what} stopped: {e}");
            }
        }
        () = deadline => {
            tracing::warn!("{what}: connections still open {SHUTDOWN_GRACE:?} after shutdown, dropping them");
        }
    }
}
