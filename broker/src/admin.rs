//! The broker behind the control API: [`ControlBackend`] implemented over
//! the session table, the sessions (through their owners) and the
//! session-manager pool.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use futures::FutureExt;
use mqttd_api::{
    ListenerInfo, MemoryInfo, PoolInfo, SessionDetail, SessionPage, SessionQuery, SessionSummary,
    Status, StoreInfo, StoreRecovery, SubscriptionInfo,
};
use tokio::sync::oneshot;

use crate::broker::Broker;
use crate::codec::ProtocolVersion;
use crate::control::{BackendError, ControlBackend};
use crate::metrics::Metrics;
use crate::session::manager::ManagerError;
use crate::session::table::PageQuery;
use crate::session::{CloseReason, SessionEntry, SessionMsg};
use crate::store::StoreStatus;
use crate::types::ClientId;

/// How long `sessions show` waits for a session's owner to describe it.
const INSPECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The control API's view of a running broker.
pub struct Admin(pub Arc<Broker>);

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The store as `GET /v1/status` reports it (times in Unix seconds, as
/// everywhere in the API).
fn store_info(s: StoreStatus) -> StoreInfo {
    StoreInfo {
        engine: s.engine.to_string(),
        path: s.path.map(|p| p.display().to_string()),
        durability: s.durability.as_str().to_string(),
        disk_bytes: s.disk_bytes,
        last_fsync_at: s.last_fsync_ms.map(|ms| ms / 1000),
        recoveries: s
            .recoveries
            .into_iter()
            .map(|r| StoreRecovery {
                at: r.at_ms / 1000,
                path: r.path.display().to_string(),
                reason: r.reason,
            })
            .collect(),
    }
}

fn summary(e: &SessionEntry) -> SessionSummary {
    let shared = &e.shared;
    let client = shared.last_client();
    let connected = shared.is_connected();
    let protocol = shared.protocol();
    SessionSummary {
        client_id: e.client_id.to_string(),
        connected,
        persistent: shared.is_persistent(),
        username: client.as_ref().and_then(|c| c.username.clone()),
        peer: client.as_ref().map(|c| c.peer.to_string()),
        protocol: protocol.map_or_else(String::new, |p| p.to_string()),
        connected_at: client
            .as_ref()
            .filter(|_| connected)
            .map(|c| c.connected_at),
        disconnected_at: shared.disconnected_at(),
        created_at: unix_secs(e.created_at),
        subscriptions: shared.subscriptions.load(Ordering::Relaxed) as usize,
        inflight: shared.inflight.load(Ordering::Relaxed) as usize,
        queued: shared.queued.load(Ordering::Relaxed) as usize,
        // 3.1.1 persistent sessions expire too (limits.max_session_expiry_secs).
        expiry_interval_secs: (protocol == Some(ProtocolVersion::V5) || shared.is_persistent())
            .then(|| shared.expiry_interval_secs.load(Ordering::Relaxed)),
    }
}

impl Admin {
    fn manager_error(e: ManagerError) -> BackendError {
        match e {
            ManagerError::InvalidSize(_) => BackendError::Rejected(e.to_string()),
            other => BackendError::Unavailable(other.to_string()),
        }
    }

    fn pool_info(&self) -> PoolInfo {
        let workers = self.0.ctx.metrics.worker_infos();
        PoolInfo {
            size: workers.len(),
            workers,
        }
    }

    async fn detail(&self, id: &str) -> Result<SessionDetail, BackendError> {
        let entry = self.0.ctx.table.get(id).ok_or(BackendError::NotFound)?;
        let (tx, rx) = oneshot::channel();
        entry
            .tx
            .send(SessionMsg::Inspect(tx))
            .map_err(|_| BackendError::NotFound)?;
        let inner = match tokio::time::timeout(INSPECT_TIMEOUT, rx).await {
            Ok(Ok(d)) => d,
            Ok(Err(_)) => return Err(BackendError::NotFound),
            Err(_) => {
                return Err(BackendError::Unavailable(format!(
                    "session {id} did not answer within {INSPECT_TIMEOUT:?}"
                )))
            }
        };
        let mut summary = summary(&entry);
        summary.inflight = inner.inflight;
        summary.queued = inner.queued;
        summary.subscriptions = inner.subscriptions.len();
        let client = entry.shared.last_client();
        Ok(SessionDetail {
            summary,
            listener: client.as_ref().map(|c| c.listener.to_string()),
            keepalive_secs: client.as_ref().map_or(0, |c| c.keep_alive_secs),
            subscription_list: inner
                .subscriptions
                .into_iter()
                .map(|s| SubscriptionInfo {
                    filter: s.filter.to_string(),
                    qos: s.options.qos as u8,
                    no_local: s.options.no_local,
                    retain_as_published: s.options.retain_as_published,
                    retain_handling: s.options.retain_handling as u8,
                })
                .collect(),
        })
    }
}

impl ControlBackend for Admin {
    fn status(&self) -> BoxFuture<'_, Status> {
        let b = &self.0;
        let status = Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            uptime_secs: b.started_at.elapsed().as_secs(),
            ready: self.ready(),
            listeners: b
                .listeners
                .iter()
                .map(|l| ListenerInfo {
                    name: l.name.to_string(),
                    kind: l.kind.as_str().to_string(),
                    bind: l.addr.to_string(),
                })
                .collect(),
            connections: b.ctx.metrics.connections.get_u64(),
            sessions: b.ctx.table.len() as u64,
            subscriptions: b.ctx.router.subscription_count() as u64,
            retained_messages: b.ctx.retained.len() as u64,
            pool_size: b.manager.snapshot().size,
            // A few `stat`s of the journal files at most: cheap enough
            // to do inline.
            store: Some(store_info(b.ctx.store.status())),
            memory: Some(MemoryInfo {
                budget_bytes: b.ctx.budget.limit(),
                accounted_bytes: b.ctx.budget.accounted(),
                peak_bytes: b.ctx.budget.peak(),
            }),
        };
        async move { status }.boxed()
    }

    fn list_sessions<'a>(
        &'a self,
        q: &'a SessionQuery,
    ) -> BoxFuture<'a, Result<SessionPage, BackendError>> {
        let page = self.0.ctx.table.page(&PageQuery {
            connected: q.connected,
            prefix: q.prefix.as_deref(),
            username: q.username.as_deref(),
            after: q.cursor.as_deref(),
            limit: q.page_limit(),
        });
        let result = SessionPage {
            sessions: page.entries.iter().map(|e| summary(e)).collect(),
            total: page.total,
            next_cursor: page.next_cursor,
        };
        async move { Ok(result) }.boxed()
    }

    fn session<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<SessionDetail, BackendError>> {
        self.detail(id).boxed()
    }

    fn destroy_session<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), BackendError>> {
        async move {
            let found = self
                .0
                .manager
                .destroy_session(ClientId::new(id), CloseReason::Destroyed)
                .await
                .map_err(Self::manager_error)?;
            if found {
                tracing::info!(client_id = id, "session destroyed by operator");
                Ok(())
            } else {
                Err(BackendError::NotFound)
            }
        }
        .boxed()
    }

    fn pool(&self) -> BoxFuture<'_, PoolInfo> {
        let info = self.pool_info();
        async move { info }.boxed()
    }

    fn resize_pool(&self, size: usize) -> BoxFuture<'_, Result<PoolInfo, BackendError>> {
        async move {
            self.0
                .manager
                .resize(size)
                .await
                .map_err(Self::manager_error)?;
            Ok(self.pool_info())
        }
        .boxed()
    }

    fn ready(&self) -> bool {
        self.0.ready.load(Ordering::Relaxed)
    }

    fn metrics(&self) -> &Metrics {
        let ctx = &self.0.ctx;
        // Gauges read from their owners at scrape time. `sessions` is not
        // one of them: the session manager keeps it (one owner per figure).
        let m = &ctx.metrics;
        m.retained_messages
            .set(i64::try_from(ctx.retained.len()).unwrap_or(i64::MAX));
        m.retained
            .bytes
            .set(i64::try_from(ctx.retained.bytes()).unwrap_or(i64::MAX));
        m.subscriptions
            .set(i64::try_from(ctx.router.subscription_count()).unwrap_or(i64::MAX));
        m
    }
}
