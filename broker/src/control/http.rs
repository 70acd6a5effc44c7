//! The health and metrics HTTP server (`http.bind`, default `0.0.0.0:8080`):
//!
//! - `GET /healthz` — 200 while the process runs (liveness);
//! - `GET /readyz` — 200 once the broker accepts clients, else 503 (readiness);
//! - `GET /metrics` — Prometheus text exposition of [`crate::metrics::Metrics`].
//!
//! Plain text answers, no authentication: these are for probes and scrapers
//! and reveal no client data.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::backend::ControlBackend;
use super::config::HttpConfig;
use super::error::ControlError;
use super::serve_until_shutdown;

/// Content type of the Prometheus text format.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A running health and metrics server.
#[derive(Debug)]
pub struct HttpServer {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl HttpServer {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Waits until the server has stopped (after shutdown is cancelled).
    pub async fn join(self) {
        if let Err(e) = self.task.await {
            tracing::error!("health server task failed: {e}");
        }
    }
}

/// Binds `cfg.bind` (bind errors are returned) and serves until `shutdown`.
pub async fn serve_http(
    backend: Arc<dyn ControlBackend>,
    cfg: &HttpConfig,
    shutdown: CancellationToken,
) -> Result<HttpServer, ControlError> {
    let bind_err = |source| ControlError::BindTcp {
        what: "health server",
        addr: cfg.bind,
        source,
    };
    let listener = TcpListener::bind(cfg.bind).await.map_err(bind_err)?;
    let local_addr = listener.local_addr().map_err(bind_err)?;
    tracing::info!(%local_addr, "health and metrics server listening");
    let task = tokio::spawn(serve_until_shutdown(
        listener,
        health_router(backend),
        shutdown,
        "health server",
    ));
    Ok(HttpServer { local_addr, task })
}

/// The `/healthz`, `/readyz` and `/metrics` router.
pub fn health_router(backend: Arc<dyn ControlBackend>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(backend)
}

async fn readyz(State(backend): State<Arc<dyn ControlBackend>>) -> impl IntoResponse {
    if backend.ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics(State(backend): State<Arc<dyn ControlBackend>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        backend.metrics().render(),
    )
}
