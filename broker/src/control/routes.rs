//! The `/v1` router and its handlers: each one decodes the request, asks the
//! [`ControlBackend`] and encodes the answer. Endpoints are listed in the
//! [module doc](super).

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode, Uri};
use axum::routing::{get, post};
use axum::{Json, Router};
use mqttd_api::{PoolInfo, ResizeRequest, SessionDetail, SessionPage, SessionQuery, Status};

use super::backend::ControlBackend;
use super::error::ApiFailure;

type Backend = State<Arc<dyn ControlBackend>>;
type ApiResult<T> = Result<Json<T>, ApiFailure>;

/// The control API router, unauthenticated (the Unix socket is protected by
/// its file mode; the TCP listener adds a bearer-token layer on top).
pub fn api_router(backend: Arc<dyn ControlBackend>) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/sessions", get(list_sessions))
        .route(
            "/v1/sessions/{client_id}",
            get(show_session).delete(destroy_session),
        )
        .route("/v1/pool", get(pool))
        .route("/v1/pool/resize", post(resize_pool))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(backend)
}

async fn status(State(backend): Backend) -> Json<Status> {
    Json(backend.status().await)
}

async fn list_sessions(
    State(backend): Backend,
    query: Result<Query<SessionQuery>, QueryRejection>,
) -> ApiResult<SessionPage> {
    let Query(query) = query.map_err(|e| ApiFailure::bad_request(e.body_text()))?;
    query.validate().map_err(ApiFailure::bad_request)?;
    let page = backend
        .list_sessions(&query)
        .await
        .map_err(|e| ApiFailure::from_backend(e, || "no such cursor".into()))?;
    Ok(Json(page))
}

async fn show_session(
    State(backend): Backend,
    Path(client_id): Path<String>,
) -> ApiResult<SessionDetail> {
    let detail = backend
        .session(&client_id)
        .await
        .map_err(|e| ApiFailure::from_backend(e, || no_session(&client_id)))?;
    Ok(Json(detail))
}

async fn destroy_session(
    State(backend): Backend,
    Path(client_id): Path<String>,
) -> Result<StatusCode, ApiFailure> {
    backend
        .destroy_session(&client_id)
        .await
        .map_err(|e| ApiFailure::from_backend(e, || no_session(&client_id)))?;
    tracing::info!(client_id = %client_id, "session destroyed through the control API");
    Ok(StatusCode::NO_CONTENT)
}

async fn pool(State(backend): Backend) -> Json<PoolInfo> {
    Json(backend.pool().await)
}

async fn resize_pool(
    State(backend): Backend,
    body: Result<Json<ResizeRequest>, JsonRejection>,
) -> ApiResult<PoolInfo> {
    let Json(req) = body.map_err(|e| ApiFailure::new(e.status(), e.body_text()))?;
    req.validate().map_err(ApiFailure::bad_request)?;
    let pool = backend
        .resize_pool(req.size)
        .await
        .map_err(|e| ApiFailure::from_backend(e, || "no pool".into()))?;
    tracing::info!(
        size = req.size,
        "session-manager pool resized through the control API"
    );
    Ok(Json(pool))
}

async fn not_found(method: Method, uri: Uri) -> ApiFailure {
    ApiFailure::new(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiFailure {
    ApiFailure::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed on {}", uri.path()),
    )
}

fn no_session(client_id: &str) -> String {
    format!("no session with client id {client_id:?}")
}
