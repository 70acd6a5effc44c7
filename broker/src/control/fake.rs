//! An in-memory [`ControlBackend`] for tests: a sorted map of sessions, a
//! pool size and a ready flag. Built with `cfg(test)` or the `test-util`
//! feature (used by `mqttctl`'s integration tests).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use futures::future::{BoxFuture, FutureExt};
use mqttd_api::{
    ListenerInfo, PoolInfo, SessionDetail, SessionPage, SessionQuery, SessionSummary, Status,
    StoreInfo, StoreRecovery, SubscriptionInfo,
};

use super::backend::{BackendError, ControlBackend};
use crate::metrics::Metrics;

/// Fixed "now" of fake sessions (2024-01-01T00:00:00Z), so outputs are stable.
pub const FAKE_EPOCH_SECS: u64 = 1_704_067_200;

/// The fake broker state.
#[derive(Debug)]
pub struct FakeBackend {
    sessions: Mutex<BTreeMap<String, SessionDetail>>,
    ready: AtomicBool,
    store: Mutex<Option<StoreInfo>>,
    metrics: Metrics,
}

impl FakeBackend {
    /// An empty, ready backend with a pool of `pool_size` workers.
    pub fn new(pool_size: usize) -> Self {
        let metrics = Metrics::new();
        metrics.resize_workers(pool_size);
        FakeBackend {
            sessions: Mutex::new(BTreeMap::new()),
            ready: AtomicBool::new(true),
            store: Mutex::new(Some(sample_store())),
            metrics,
        }
    }

    /// Adds (or replaces) a session.
    pub fn insert(&self, detail: SessionDetail) {
        self.lock().insert(detail.summary.client_id.clone(), detail);
    }

    /// Sets what `ready()` answers.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Sets what `status()` reports of the store (`None`: like a broker
    /// older than the store).
    pub fn set_store(&self, store: Option<StoreInfo>) {
        *self.store.lock().unwrap_or_else(|e| e.into_inner()) = store;
    }

    /// Client ids present, in order.
    pub fn client_ids(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, SessionDetail>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn page(&self, query: &SessionQuery) -> SessionPage {
        let sessions = self.lock();
        let start = match &query.cursor {
            Some(c) => Bound::Excluded(c.clone()),
            None => Bound::Unbounded,
        };
        let total = sessions
            .values()
            .filter(|d| query.matches(&d.summary))
            .count();
        let mut rest = sessions
            .range((start, Bound::Unbounded))
            .map(|(_, d)| &d.summary)
            .filter(|s| query.matches(s));
        let page: Vec<SessionSummary> = rest.by_ref().take(query.page_limit()).cloned().collect();
        let next_cursor = match rest.next() {
            Some(_) => page.last().map(|s| s.client_id.clone()),
            None => None,
        };
        SessionPage {
            sessions: page,
            total,
            next_cursor,
        }
    }
}

/// A plausible session: connected ones have a peer and connect time, every
/// session has one subscription `devices/<id>/#`.
pub fn sample_session(client_id: &str, connected: bool, username: Option<&str>) -> SessionDetail {
    SessionDetail {
        summary: SessionSummary {
            client_id: client_id.to_owned(),
            connected,
            persistent: !connected,
            username: username.map(Into::into),
            peer: Some("10.0.0.7:51234".into()),
            protocol: "5.0".into(),
            connected_at: connected.then_some(FAKE_EPOCH_SECS + 60),
            disconnected_at: (!connected).then_some(FAKE_EPOCH_SECS + 120),
            created_at: FAKE_EPOCH_SECS,
            subscriptions: 1,
            inflight: 0,
            queued: if connected { 0 } else { 3 },
            expiry_interval_secs: (!connected).then_some(3600),
        },
        listener: Some("mqtt".into()),
        keepalive_secs: 60,
        subscription_list: vec![SubscriptionInfo {
            filter: format!("devices/{client_id}/#"),
            qos: 1,
            no_local: false,
            retain_as_published: false,
            retain_handling: 0,
        }],
    }
}

/// A `batched` store at `/var/lib/mqttd`, fsynced 5 s before
/// [`FAKE_EPOCH_SECS`] (what `status` reports until
/// [`FakeBackend::set_store`]).
pub fn sample_store() -> StoreInfo {
    StoreInfo {
        engine: "fjall 3".into(),
        path: Some("/var/lib/mqttd".into()),
        durability: "batched".into(),
        disk_bytes: 1_572_864,
        last_fsync_at: Some(FAKE_EPOCH_SECS - 5),
        recoveries: Vec::new(),
    }
}

/// A store moved aside at [`FAKE_EPOCH_SECS`] because it could not be
/// opened.
pub fn sample_recovery() -> StoreRecovery {
    StoreRecovery {
        at: FAKE_EPOCH_SECS,
        path: "/var/lib/mqttd/quarantine/20240101T000000Z-000/store".into(),
        reason: "journal checksum mismatch".into(),
    }
}

impl ControlBackend for FakeBackend {
    fn status(&self) -> BoxFuture<'_, Status> {
        let sessions = self.lock();
        let connections = sessions.values().filter(|d| d.summary.connected).count();
        let status = Status {
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_secs: 42,
            ready: self.ready(),
            listeners: vec![ListenerInfo {
                name: "mqtt".into(),
                kind: "tcp".into(),
                bind: "0.0.0.0:1883".into(),
            }],
            connections: connections as u64,
            sessions: sessions.len() as u64,
            subscriptions: sessions
                .values()
                .map(|d| d.summary.subscriptions as u64)
                .sum(),
            retained_messages: 0,
            pool_size: self.metrics.workers().len(),
            store: self.store.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            memory: None,
        };
        async move { status }.boxed()
    }

    fn list_sessions<'a>(
        &'a self,
        query: &'a SessionQuery,
    ) -> BoxFuture<'a, Result<SessionPage, BackendError>> {
        let page = self.page(query);
        async move { Ok(page) }.boxed()
    }

    fn session<'a>(
        &'a self,
        client_id: &'a str,
    ) -> BoxFuture<'a, Result<SessionDetail, BackendError>> {
        let found = self.lock().get(client_id).cloned();
        async move { found.ok_or(BackendError::NotFound) }.boxed()
    }

    fn destroy_session<'a>(
        &'a self,
        client_id: &'a str,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        let removed = self.lock().remove(client_id).is_some();
        if removed {
            self.metrics.sessions_destroyed.inc();
        }
        async move { removed.then_some(()).ok_or(BackendError::NotFound) }.boxed()
    }

    fn pool(&self) -> BoxFuture<'_, PoolInfo> {
        let workers = self.metrics.worker_infos();
        async move {
            PoolInfo {
                size: workers.len(),
                workers,
            }
        }
        .boxed()
    }

    fn resize_pool(&self, size: usize) -> BoxFuture<'_, Result<PoolInfo, BackendError>> {
        self.metrics.resize_workers(size);
        async move { Ok(self.pool().await) }.boxed()
    }

    fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}
