//! Broker-wide counters and gauges, rendered as Prometheus text.
//!
//! The broker holds one [`Metrics`] (behind an `Arc`) and bumps its fields on
//! hot paths: every update is a single relaxed atomic operation, no lock and
//! no allocation. Per-worker session-manager figures live in
//! [`WorkerMetrics`], one `Arc` per worker index, handed out by
//! [`Metrics::resize_workers`] so the pool can keep its own clone.
//!
//! Authentication figures live in [`AuthMetrics`], owned by the auth
//! layer (which exists before the broker's context) and attached with
//! [`Metrics::attach_auth`]. The durable store's live in
//! [`StoreMetrics`], owned by the store and attached with
//! [`Metrics::attach_store`] (not at all with `storage.durability:
//! memory`, so that no `mqttd_store_*` family claims a store that does
//! not exist).
//!
//! Connection admission figures (bounds, refusals, accept-rate pauses)
//! live in [`AdmissionMetrics`], owned by [`crate::admission`] and
//! attached with [`Metrics::attach_admission`].
//!
//! [`Metrics::render`] writes the Prometheus text exposition format 0.0.4
//! (`# HELP` / `# TYPE` then samples) served on `GET /metrics`. It is
//! hand-rolled rather than built on `prometheus-client` because the set is
//! small and fixed, and plain atomics in public fields are the cheapest API
//! for the hot paths.

use std::fmt::{Display, Write as _};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use mqttd_api::{WorkerInfo, WorkerOperations};

mod listener;
mod process;

pub use listener::ListenerMetrics;
pub use process::ProcessStats;

use crate::backlog::Backlog;
use crate::budget::MemoryBudget;
use crate::store::StoreMetrics;
use crate::types::QoS;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        // Relaxed: each counter is independent; readers only need a recent value.
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn dec(&self) {
        self.add(-1);
    }

    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// Adds `n` and returns the new value.
    pub fn add_get(&self, n: i64) -> i64 {
        self.0.fetch_add(n, Ordering::Relaxed) + n
    }

    /// Raises the value to `v` if it is lower (a high-water mark).
    pub fn raise_to(&self, v: i64) {
        self.0.fetch_max(v, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }

    /// The value clamped at zero, for API fields that are counts.
    pub fn get_u64(&self) -> u64 {
        u64::try_from(self.get()).unwrap_or(0)
    }
}

/// One counter per QoS level.
#[derive(Debug, Default)]
pub struct ByQos([Counter; 3]);

impl ByQos {
    /// The counter of `qos`.
    pub fn qos(&self, qos: QoS) -> &Counter {
        &self.0[qos as usize]
    }
}

/// Why a message (one copy for one session, or a whole PUBLISH that no
/// session got) was dropped: the `reason` label of
/// `mqttd_messages_dropped_total`. Each is counted where it happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// A session's queue reached `mqtt.max_queued_messages`.
    QueueFull,
    /// A session's queue reached `mqtt.max_queued_bytes`.
    QueueBytes,
    /// A client's unwritten QoS 0 messages reached `mqtt.max_pending_qos0_messages`.
    Qos0Overflow,
    /// A client's unwritten QoS 0 payload reached `mqtt.max_pending_qos0_bytes`.
    Qos0Bytes,
    /// QoS 0 for a session without a connection (never queued).
    Qos0Offline,
    /// Its MQTT 5.0 message expiry interval passed before delivery.
    Expired,
    /// Authorization refused the PUBLISH or the will.
    AclDenied,
    /// No subscription matched (or no shared-group member could take it).
    NoSubscribers,
    /// Queued for a subscription that is gone (unsubscribed or revoked).
    Unsubscribed,
    /// A queued message the store no longer had when read back.
    StoreMissing,
    /// A retained-message replay was already as long as the retained set.
    ReplayOverflow,
    /// Larger than the client's Maximum Packet Size [MQTT-3.1.2-25].
    PacketTooLarge,
    /// QoS 0 handed to a connection that closed before writing it.
    Disconnected,
    /// `limits.max_memory_bytes`: QoS 0 for a slow session (or the budget full).
    MemoryBudgetQos0,
    /// `limits.max_memory_bytes`: QoS 1/2 for an offline session.
    MemoryBudgetOffline,
    /// `limits.max_memory_bytes`: QoS 1/2 for a connected session not reading.
    MemoryBudgetSlow,
    /// `limits.max_memory_bytes`: QoS 1/2 with the budget full.
    MemoryBudgetFull,
    /// Its topic is over `limits.max_topic_len` or `limits.max_topic_levels`.
    TopicInvalid,
}

impl DropReason {
    pub const ALL: [DropReason; 18] = [
        DropReason::QueueFull,
        DropReason::QueueBytes,
        DropReason::Qos0Overflow,
        DropReason::Qos0Bytes,
        DropReason::Qos0Offline,
        DropReason::Expired,
        DropReason::AclDenied,
        DropReason::NoSubscribers,
        DropReason::Unsubscribed,
        DropReason::StoreMissing,
        DropReason::ReplayOverflow,
        DropReason::PacketTooLarge,
        DropReason::Disconnected,
        DropReason::MemoryBudgetQos0,
        DropReason::MemoryBudgetOffline,
        DropReason::MemoryBudgetSlow,
        DropReason::MemoryBudgetFull,
        DropReason::TopicInvalid,
    ];

    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::QueueBytes => "queue_bytes",
            DropReason::Qos0Overflow => "qos0_overflow",
            DropReason::Qos0Bytes => "qos0_bytes",
            DropReason::Qos0Offline => "qos0_offline",
            DropReason::Expired => "expired",
            DropReason::AclDenied => "acl_denied",
            DropReason::NoSubscribers => "no_subscribers",
            DropReason::Unsubscribed => "unsubscribed",
            DropReason::StoreMissing => "store_missing",
            DropReason::ReplayOverflow => "replay_overflow",
            DropReason::PacketTooLarge => "packet_too_large",
            DropReason::Disconnected => "disconnected",
            DropReason::MemoryBudgetQos0 => "memory_budget_qos0",
            DropReason::MemoryBudgetOffline => "memory_budget_offline",
            DropReason::MemoryBudgetSlow => "memory_budget_slow",
            DropReason::MemoryBudgetFull => "memory_budget_full",
            DropReason::TopicInvalid => "topic_invalid",
        }
    }
}

/// Dropped messages by reason and QoS.
#[derive(Debug, Default)]
pub struct Dropped([ByQos; DropReason::ALL.len()]);

impl Dropped {
    /// The counter of `reason` and `qos`.
    pub fn reason(&self, reason: DropReason, qos: QoS) -> &Counter {
        self.0[reason as usize].qos(qos)
    }

    /// Counts one drop.
    pub fn inc(&self, reason: DropReason, qos: QoS) {
        self.reason(reason, qos).inc();
    }

    /// Drops of `reason`, all QoS levels.
    pub fn by_reason(&self, reason: DropReason) -> u64 {
        [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
            .into_iter()
            .map(|q| self.reason(reason, q).get())
            .sum()
    }

    /// Every drop, all reasons and QoS levels.
    pub fn total(&self) -> u64 {
        [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
            .into_iter()
            .map(|q| self.by_qos(q))
            .sum()
    }

    /// Drops of `qos`, all reasons.
    pub fn by_qos(&self, qos: QoS) -> u64 {
        DropReason::ALL
            .into_iter()
            .map(|r| self.reason(r, qos).get())
            .sum()
    }
}

/// Retained messages: what the limits refused, what expired.
#[derive(Debug, Default)]
pub struct RetainedMetrics {
    /// Bytes (payload and topic) retained now; read at scrape time.
    pub bytes: Gauge,
    /// Retained publishes to a new topic not retained because
    /// `limits.max_retained_messages` was reached.
    pub refused_messages: Counter,
    /// The same for `limits.max_retained_bytes`.
    pub refused_bytes: Counter,
    /// Stored retained messages left on disk at start-up because a limit
    /// was reached.
    pub not_restored: Counter,
    /// Retained messages removed because their expiry passed.
    pub expired: Counter,
}

impl RetainedMetrics {
    fn render(&self, e: &mut Exposition) {
        e.single(
            "mqttd_retained_bytes",
            Kind::Gauge,
            "Bytes (payload and topic) of the retained messages.",
            self.bytes.get(),
        );
        let name = "mqttd_retained_refused_total";
        e.family(
            name,
            Kind::Counter,
            "Retained publishes to a new topic not retained (still delivered) because limits.max_retained_<limit> was reached.",
        );
        e.sample(name, &[("limit", "messages")], self.refused_messages.get());
        e.sample(name, &[("limit", "bytes")], self.refused_bytes.get());
        e.single(
            "mqttd_retained_not_restored_total",
            Kind::Counter,
            "Stored retained messages left on disk, not loaded, at start-up because a retained limit was reached.",
            self.not_restored.get(),
        );
        e.single(
            "mqttd_retained_expired_total",
            Kind::Counter,
            "Retained messages removed because their message expiry interval passed.",
            self.expired.get(),
        );
    }
}

/// Per-connection publish rate: how often and how long connections were
/// slowed, and how many were disconnected.
#[derive(Debug, Default)]
pub struct PublishRateMetrics {
    /// Times a connection went over its rate (its first pause since its
    /// allowance was last full).
    pub throttled: Counter,
    /// Time connections spent not read for their rate, in microseconds.
    pub throttled_micros: Counter,
    /// Connections closed for staying over their rate past the grace.
    pub disconnects: Counter,
}

impl PublishRateMetrics {
    fn render(&self, e: &mut Exposition) {
        e.single(
            "mqttd_publish_rate_throttled_total",
            Kind::Counter,
            "Times a connection went over limits.max_publish_rate_* and was slowed (not read until its allowance returned).",
            self.throttled.get(),
        );
        e.single(
            "mqttd_publish_rate_throttled_seconds_total",
            Kind::Counter,
            "Time connections were not read because they published over their rate.",
            self.throttled_micros.get() as f64 / 1e6,
        );
        e.single(
            "mqttd_publish_rate_disconnects_total",
            Kind::Counter,
            "Connections closed (MQTT 5.0: DISCONNECT 0x96) for staying over their publish rate past limits.publish_rate_grace_secs.",
            self.disconnects.get(),
        );
    }
}

/// Figures of one session-manager worker, updated by the pool.
#[derive(Debug, Default)]
pub struct WorkerMetrics {
    /// Requests waiting in the worker's queue.
    pub queue_depth: Gauge,
    pub created: Counter,
    pub resumed: Counter,
    pub destroyed: Counter,
}

impl WorkerMetrics {
    /// Completed operations, as the control API reports them.
    pub fn operations(&self) -> WorkerOperations {
        WorkerOperations {
            created: self.created.get(),
            resumed: self.resumed.get(),
            destroyed: self.destroyed.get(),
        }
    }
}

/// Password checking and login throttling, updated by the auth layer.
#[derive(Debug, Default)]
pub struct AuthMetrics {
    /// Password hashes being computed now.
    pub hashes_running: Gauge,
    /// CONNECTs waiting for a hashing slot now.
    pub hashes_waiting: Gauge,
    /// The most hashes ever computed at once since start.
    pub hashes_running_peak: Gauge,
    /// Password hashes computed (one per checked CONNECT).
    pub hashes: Counter,
    /// CONNECTs refused unchecked: their address failed too often.
    pub throttled_address: Counter,
    /// CONNECTs refused unchecked: their username failed too often.
    pub throttled_username: Counter,
    /// CONNECTs refused because no hashing slot freed in time.
    pub hash_wait_timeouts: Counter,
    /// Client addresses whose failed logins are tracked now.
    pub tracked_addresses: Gauge,
    /// Usernames whose failed logins are tracked now.
    pub tracked_usernames: Gauge,
}

impl AuthMetrics {
    #[rustfmt::skip] // a table reads better one metric per line
    fn render(&self, e: &mut Exposition) {
        let gauges = [
            ("mqttd_password_hashes_running", "Password hashes being computed now.", self.hashes_running.get()),
            ("mqttd_password_hashes_waiting", "CONNECTs waiting for a password hashing slot.", self.hashes_waiting.get()),
            ("mqttd_password_hashes_running_peak", "Most password hashes computed at once since start.", self.hashes_running_peak.get()),
        ];
        for (name, help, v) in gauges {
            e.single(name, Kind::Gauge, help, v);
        }
        e.single("mqttd_password_hashes_total", Kind::Counter, "Password hashes computed to check a CONNECT.", self.hashes.get());
        let name = "mqttd_auth_throttled_total";
        e.family(name, Kind::Counter, "CONNECTs refused without checking their password, by reason.");
        for (reason, v) in [
            ("address", self.throttled_address.get()),
            ("username", self.throttled_username.get()),
            ("hash_wait_timeout", self.hash_wait_timeouts.get()),
        ] {
            e.sample(name, &[("reason", reason)], v);
        }
        let name = "mqttd_auth_failure_tracked";
        e.family(name, Kind::Gauge, "Addresses and usernames whose failed logins are tracked.");
        e.sample(name, &[("by", "address")], self.tracked_addresses.get());
        e.sample(name, &[("by", "username")], self.tracked_usernames.get());
    }
}

/// The session limits of `limits:` (see [`crate::config::LimitsConfig`]),
/// counted each time one refuses something, by the key that did.
#[derive(Debug, Default)]
pub struct SessionLimitMetrics {
    /// CONNECTs refused: `limits.max_sessions` reached.
    pub sessions: Counter,
    /// SUBSCRIBE filters refused: `limits.max_subscriptions_per_client`.
    pub subscriptions: Counter,
    /// CONNECTs refused: client id longer than `limits.max_client_id_len`.
    pub client_id_len: Counter,
    /// CONNECTs refused: username longer than `limits.max_username_len`.
    pub username_len: Counter,
    /// PUBLISH, SUBSCRIBE filters and wills refused: topic longer than
    /// `limits.max_topic_len`.
    pub topic_len: Counter,
    /// The same for more levels than `limits.max_topic_levels`.
    pub topic_levels: Counter,
    /// Session expiries lowered to `limits.max_session_expiry_secs`
    /// (5.0 CONNECT or DISCONNECT asking for more).
    pub expiry_capped: Counter,
}

impl SessionLimitMetrics {
    fn render(&self, e: &mut Exposition) {
        let name = "mqttd_session_limit_refusals_total";
        e.family(
            name,
            Kind::Counter,
            "CONNECTs, SUBSCRIBE filters and PUBLISHes refused by a session limit, by its limits.* key.",
        );
        for (limit, c) in [
            ("max_sessions", &self.sessions),
            ("max_subscriptions_per_client", &self.subscriptions),
            ("max_client_id_len", &self.client_id_len),
            ("max_username_len", &self.username_len),
            ("max_topic_len", &self.topic_len),
            ("max_topic_levels", &self.topic_levels),
        ] {
            e.sample(name, &[("limit", limit)], c.get());
        }
        e.single(
            "mqttd_session_expiry_capped_total",
            Kind::Counter,
            "Session expiries asked by 5.0 clients (CONNECT, DISCONNECT) lowered to limits.max_session_expiry_secs.",
            self.expiry_capped.get(),
        );
    }
}

/// Everything `/metrics` reports. Field names say what is counted; the
/// Prometheus names are in [`Metrics::render`].
#[derive(Debug)]
pub struct Metrics {
    start_time: SystemTime,
    /// Network connections open now.
    pub connections: Gauge,
    /// Network connections accepted since start.
    pub connections_total: Counter,
    /// Sessions in the session table now.
    pub sessions: Gauge,
    pub sessions_created: Counter,
    /// Of those, created on the connection's task without a session-manager
    /// worker (a clean start for a client id with no session).
    pub sessions_created_direct: Counter,
    /// Turns at routing that had to wait for a free one
    /// ([`crate::routing_gate`]).
    pub routing_waits: Counter,
    pub sessions_resumed: Counter,
    pub sessions_destroyed: Counter,
    pub sessions_expired: Counter,
    pub sessions_taken_over: Counter,
    /// CONNECTs that named another identity's persistent session: the
    /// old session was destroyed and a fresh one created.
    pub sessions_identity_mismatch: Counter,
    /// Subscriptions removed because authorization no longer allows them
    /// (on resume, after an ACL reload).
    pub subscriptions_revoked: Counter,
    /// Wills refused by authorization: CONNECTs refused for their will
    /// topic, and wills dropped when due.
    pub wills_denied: Counter,
    /// PUBLISH packets received from clients.
    pub messages_received: ByQos,
    /// PUBLISH packets sent to clients.
    pub messages_sent: ByQos,
    /// Messages discarded, by reason and QoS.
    pub messages_dropped: Dropped,
    pub bytes_received: Counter,
    pub bytes_sent: Counter,
    pub malformed_packets: Counter,
    pub auth_failures: Counter,
    pub retained_messages: Gauge,
    pub subscriptions: Gauge,
    /// Session-manager workers now.
    pub pool_size: Gauge,
    /// Messages in transit to sessions; drives publisher back-pressure.
    pub backlog: Arc<Backlog>,
    /// The memory budget and the bytes charged against it (see
    /// [`crate::budget`]), once attached.
    memory: OnceLock<Arc<MemoryBudget>>,
    /// Requests to the TCP control API with a missing or wrong bearer token.
    pub control_auth_failures: Counter,
    /// Requests to the TCP control API refused with 429 because their peer
    /// failed too often.
    pub control_auth_throttled: Counter,
    /// Connections closed because a write to the client did not finish
    /// within `mqtt.write_timeout_secs` (the client stopped reading).
    pub write_timeouts: Counter,
    /// Connections closed because a packet did not arrive whole within
    /// `mqtt.packet_timeout_secs`.
    pub packet_timeouts: Counter,
    /// Connections closed by the keep alive rule.
    pub keepalive_timeouts: Counter,
    /// Failed `accept` calls (e.g. out of file descriptors).
    pub accept_errors: Counter,
    /// Retained limits and expiry (see [`crate::retain`]).
    pub retained: RetainedMetrics,
    /// Per-connection publish rate (see [`crate::rate`]).
    pub publish_rate: PublishRateMetrics,
    /// Refusals by the session limits of `limits:`.
    pub session_limits: SessionLimitMetrics,
    /// Held only to clone or resize the list, never across an await.
    workers: RwLock<Vec<Arc<WorkerMetrics>>>,
    /// Set once the broker's auth layer is attached.
    auth: OnceLock<Arc<AuthMetrics>>,
    /// The durable store's figures, when there is one.
    store: OnceLock<Arc<StoreMetrics>>,
    /// Each listener's figures, and whether it speaks TLS.
    listeners: RwLock<Vec<(Arc<ListenerMetrics>, bool)>>,
    /// Connection bounds and refusals, once the listeners are bound.
    admission: OnceLock<Arc<AdmissionMetrics>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Metrics {
            start_time: SystemTime::now(),
            connections: Gauge::default(),
            connections_total: Counter::default(),
            sessions: Gauge::default(),
            sessions_created: Counter::default(),
            sessions_created_direct: Counter::default(),
            routing_waits: Counter::default(),
            sessions_resumed: Counter::default(),
            sessions_destroyed: Counter::default(),
            sessions_expired: Counter::default(),
            sessions_taken_over: Counter::default(),
            sessions_identity_mismatch: Counter::default(),
            subscriptions_revoked: Counter::default(),
            wills_denied: Counter::default(),
            messages_received: ByQos::default(),
            messages_sent: ByQos::default(),
            messages_dropped: Dropped::default(),
            bytes_received: Counter::default(),
            bytes_sent: Counter::default(),
            malformed_packets: Counter::default(),
            auth_failures: Counter::default(),
            retained_messages: Gauge::default(),
            subscriptions: Gauge::default(),
            pool_size: Gauge::default(),
            control_auth_failures: Counter::default(),
            control_auth_throttled: Counter::default(),
            write_timeouts: Counter::default(),
            packet_timeouts: Counter::default(),
            keepalive_timeouts: Counter::default(),
            accept_errors: Counter::default(),
            retained: RetainedMetrics::default(),
            publish_rate: PublishRateMetrics::default(),
            session_limits: SessionLimitMetrics::default(),
            backlog: Arc::default(),
            memory: OnceLock::new(),
            workers: RwLock::new(Vec::new()),
            auth: OnceLock::new(),
            store: OnceLock::new(),
            listeners: RwLock::new(Vec::new()),
            admission: OnceLock::new(),
        }
    }

    /// Reports a listener's figures from now on (`tls`: also its failed
    /// TLS handshakes).
    pub fn attach_listener(&self, listener: Arc<ListenerMetrics>, tls: bool) {
        self.listeners
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push((listener, tls));
    }

    /// Reports the auth layer's figures from now on (once; later calls
    /// are ignored).
    pub fn attach_auth(&self, auth: Arc<AuthMetrics>) {
        let _ = self.auth.set(auth);
    }

    /// Reports the memory budget from now on (once).
    pub fn attach_memory(&self, budget: Arc<MemoryBudget>) {
        let _ = self.memory.set(budget);
    }

    /// Reports the store's figures from now on (once).
    pub fn attach_store(&self, store: Arc<StoreMetrics>) {
        let _ = self.store.set(store);
    }

    /// Reports the connection bounds' figures from now on (once).
    pub fn attach_admission(&self, admission: Arc<AdmissionMetrics>) {
        let _ = self.admission.set(admission);
    }

    /// The auth layer's figures, once attached.
    pub fn auth(&self) -> Option<&Arc<AuthMetrics>> {
        self.auth.get()
    }

    /// When the broker started.
    pub fn start_time(&self) -> SystemTime {
        self.start_time
    }

    /// Sets the pool to `size` workers and returns their metrics, index by
    /// index. Indices that survive a resize keep their counters, so the
    /// series stay monotonic across generations.
    pub fn resize_workers(&self, size: usize) -> Vec<Arc<WorkerMetrics>> {
        let mut workers = self.workers.write().unwrap_or_else(|e| e.into_inner());
        workers.truncate(size);
        while workers.len() < size {
            workers.push(Arc::default());
        }
        self.pool_size.set(i64::try_from(size).unwrap_or(i64::MAX));
        workers.clone()
    }

    /// The current workers' metrics.
    pub fn workers(&self) -> Vec<Arc<WorkerMetrics>> {
        self.workers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The workers as the control API reports them (`GET /v1/pool`).
    pub fn worker_infos(&self) -> Vec<WorkerInfo> {
        self.workers()
            .iter()
            .enumerate()
            .map(|(index, w)| WorkerInfo {
                index,
                queue_depth: w.queue_depth.get_u64(),
                operations: w.operations(),
            })
            .collect()
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut e = Exposition::default();
        self.render_process(&mut e);
        for (name, help, value) in self.scalars() {
            match value {
                Value::Counter(v) => e.single(name, Kind::Counter, help, v),
                Value::Gauge(v) => e.single(name, Kind::Gauge, help, v),
            }
        }
        let (listeners, tls): (Vec<_>, Vec<_>) = self
            .listeners
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .unzip();
        listener::render(&listeners, &tls, &mut e);
        self.render_messages(&mut e);
        self.render_connection_bounds(&mut e);
        self.retained.render(&mut e);
        self.publish_rate.render(&mut e);
        self.session_limits.render(&mut e);
        self.render_pool(&mut e);
        if let Some(auth) = self.auth.get() {
            auth.render(&mut e);
        }
        if let Some(store) = self.store.get() {
            render_store(store, &mut e);
        }
        if let Some(admission) = self.admission.get() {
            admission.render(&mut e);
        }
        self.render_control(&mut e);
        e.out
    }

    fn render_control(&self, e: &mut Exposition) {
        e.single(
            "mqttd_control_auth_failures_total",
            Kind::Counter,
            "TCP control API requests with a missing or wrong bearer token.",
            self.control_auth_failures.get(),
        );
        e.single(
            "mqttd_control_auth_throttled_total",
            Kind::Counter,
            "TCP control API requests refused (429) after too many failed token attempts from their address.",
            self.control_auth_throttled.get(),
        );
    }

    fn render_process(&self, e: &mut Exposition) {
        e.family(
            "mqttd_build_info",
            Kind::Gauge,
            "Broker build; the value is always 1.",
        );
        e.sample(
            "mqttd_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1,
        );
        let start = self
            .start_time
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let name = "process_start_time_seconds";
        e.family(
            name,
            Kind::Gauge,
            "Start time of the process since the Unix epoch in seconds.",
        );
        e.sample(name, &[], start);
        ProcessStats::read().render(e);
    }

    /// The unlabelled metrics: name, help and value.
    #[rustfmt::skip] // a table reads better one metric per line
    fn scalars(&self) -> [(&'static str, &'static str, Value); 24] {
        use Value::{Counter as C, Gauge as G};
        [
            ("mqttd_connections", "Network connections open now.", G(self.connections.get())),
            ("mqttd_connections_total", "Network connections accepted.", C(self.connections_total.get())),
            ("mqttd_bytes_received_total", "Bytes read from clients.", C(self.bytes_received.get())),
            ("mqttd_bytes_sent_total", "Bytes written to clients.", C(self.bytes_sent.get())),
            ("mqttd_malformed_packets_total", "Packets rejected as malformed.", C(self.malformed_packets.get())),
            ("mqttd_auth_failures_total", "CONNECTs refused by authentication.", C(self.auth_failures.get())),
            ("mqttd_sessions", "Sessions in the session table.", G(self.sessions.get())),
            ("mqttd_sessions_created_total", "Sessions created.", C(self.sessions_created.get())),
            ("mqttd_sessions_created_direct_total", "Sessions created on the connection's task, without a session-manager worker (clean start, no live session).", C(self.sessions_created_direct.get())),
            ("mqttd_routing_waits_total", "Times a connection waited for a free turn to route its PUBLISH packets (one turn per CPU): routing is the broker's bottleneck.", C(self.routing_waits.get())),
            ("mqttd_sessions_resumed_total", "Persistent sessions resumed.", C(self.sessions_resumed.get())),
            ("mqttd_sessions_destroyed_total", "Sessions destroyed.", C(self.sessions_destroyed.get())),
            ("mqttd_sessions_expired_total", "Sessions whose expiry interval elapsed.", C(self.sessions_expired.get())),
            ("mqttd_sessions_taken_over_total", "Sessions taken over by a new connection.", C(self.sessions_taken_over.get())),
            ("mqttd_sessions_identity_mismatch_total", "CONNECTs for another identity's persistent session (old session destroyed, fresh one created).", C(self.sessions_identity_mismatch.get())),
            ("mqttd_subscriptions", "Subscriptions across all sessions.", G(self.subscriptions.get())),
            ("mqttd_subscriptions_revoked_total", "Subscriptions removed because authorization no longer allows them.", C(self.subscriptions_revoked.get())),
            ("mqttd_wills_denied_total", "Wills refused by authorization (at CONNECT or when due).", C(self.wills_denied.get())),
            ("mqttd_retained_messages", "Retained messages stored.", G(self.retained_messages.get())),
            ("mqttd_session_manager_pool_size", "Session-manager workers.", G(self.pool_size.get())),
            ("mqttd_delivery_backlog", "Messages routed to sessions and not yet taken in by them.", G(self.backlog.get() as i64)),
            ("mqttd_publisher_pauses_total", "Times a publishing connection paused reading because the delivery backlog was high.", C(self.backlog.pauses())),
            // Kept for dashboards that read them: the same figures as
            // mqttd_messages_dropped_total{reason="queue_bytes"} and {reason="qos0_bytes"}.
            ("mqttd_queue_byte_limit_drops_total", "Messages dropped because a session's queued bytes reached mqtt.max_queued_bytes (deprecated: mqttd_messages_dropped_total{reason=\"queue_bytes\"}).", C(self.messages_dropped.by_reason(DropReason::QueueBytes))),
            ("mqttd_qos0_byte_limit_drops_total", "QoS 0 messages dropped because a client's unwritten QoS 0 payload reached mqtt.max_pending_qos0_bytes (deprecated: mqttd_messages_dropped_total{reason=\"qos0_bytes\"}).", C(self.messages_dropped.by_reason(DropReason::Qos0Bytes))),
        ]
    }

    /// Connections ended by a bound the broker enforces, and accept errors.
    fn render_connection_bounds(&self, e: &mut Exposition) {
        let counters = [
            (
                "mqttd_write_timeouts_total",
                "Connections closed because a write to the client did not finish in time.",
                &self.write_timeouts,
            ),
            (
                "mqttd_packet_timeouts_total",
                "Connections closed because a started packet did not arrive whole in time.",
                &self.packet_timeouts,
            ),
            (
                "mqttd_keepalive_timeouts_total",
                "Connections closed by the keep alive rule.",
                &self.keepalive_timeouts,
            ),
            (
                "mqttd_accept_errors_total",
                "Failed accepts of new connections (e.g. out of file descriptors).",
                &self.accept_errors,
            ),
        ];
        for (name, help, c) in counters {
            e.single(name, Kind::Counter, help, c.get());
        }
    }

    fn render_messages(&self, e: &mut Exposition) {
        let families = [
            (
                "mqttd_messages_received_total",
                "PUBLISH packets received from clients.",
                &self.messages_received,
            ),
            (
                "mqttd_messages_sent_total",
                "PUBLISH packets sent to clients.",
                &self.messages_sent,
            ),
        ];
        let levels = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];
        for (name, help, by_qos) in families {
            e.family(name, Kind::Counter, help);
            for qos in levels {
                let label = (qos as u8).to_string();
                e.sample(name, &[("qos", &label)], by_qos.qos(qos).get());
            }
        }
        let name = "mqttd_messages_dropped_total";
        e.family(
            name,
            Kind::Counter,
            "Messages discarded before delivery (one per session copy, or per PUBLISH no session got), by reason.",
        );
        for reason in DropReason::ALL {
            for qos in levels {
                let label = (qos as u8).to_string();
                let v = self.messages_dropped.reason(reason, qos).get();
                e.sample(name, &[("qos", &label), ("reason", reason.label())], v);
            }
        }
        if let Some(m) = self.memory.get() {
            #[rustfmt::skip]
            let gauges = [
                ("mqttd_memory_budget_bytes", "The memory budget for message copies (limits.max_memory_bytes; 0: none).", m.limit()),
                ("mqttd_memory_accounted_bytes", "Bytes of message copies held by sessions now (payload, topic and a fixed overhead each).", m.accounted()),
                ("mqttd_memory_accounted_peak_bytes", "The most bytes of message copies held at once since start.", m.peak()),
            ];
            for (name, help, v) in gauges {
                e.single(
                    name,
                    Kind::Gauge,
                    help,
                    i64::try_from(v).unwrap_or(i64::MAX),
                );
            }
        }
    }

    fn render_pool(&self, e: &mut Exposition) {
        let workers = self.workers();
        let name = "mqttd_session_manager_queue_depth";
        e.family(
            name,
            Kind::Gauge,
            "Requests waiting in a session-manager worker's queue.",
        );
        for (i, w) in workers.iter().enumerate() {
            e.sample(name, &[("worker", &i.to_string())], w.queue_depth.get());
        }
        let name = "mqttd_session_manager_operations_total";
        e.family(
            name,
            Kind::Counter,
            "Lifecycle operations completed by a session-manager worker.",
        );
        for (i, w) in workers.iter().enumerate() {
            let worker = i.to_string();
            let ops = w.operations();
            for (op, v) in [
                ("created", ops.created),
                ("resumed", ops.resumed),
                ("destroyed", ops.destroyed),
            ] {
                e.sample(name, &[("worker", &worker), ("op", op)], v);
            }
        }
    }
}

/// Connection bounds, broker-wide: the state [`crate::admission`] keeps
/// its bounds with, and reports.
#[derive(Debug, Default)]
pub struct AdmissionMetrics {
    /// `limits.max_connections` in force (derived from the open-file
    /// limit when not set).
    pub limit: Gauge,
    /// Connections held against it now (TLS and WebSocket handshakes
    /// included; `mqttd_connections` counts them once MQTT begins).
    pub open: Gauge,
    /// Refusals in progress now (bounded).
    pub refusing: Gauge,
    /// Refused connections closed without a CONNACK because the most
    /// refusals were already in progress.
    pub refused_unanswered: Counter,
    /// Held only to add a listener or render, never across an await.
    listeners: RwLock<Vec<Arc<ListenerAdmissionMetrics>>>,
}

/// One listener's connection bound, refusals and accept-rate pauses.
#[derive(Debug)]
pub struct ListenerAdmissionMetrics {
    pub name: Arc<str>,
    /// The listener's `max_connections` (0: none).
    pub limit: Gauge,
    /// Connections held through this listener now (handshakes included).
    pub open: Gauge,
    /// Refused by `limits.max_connections`.
    pub refused_broker: Counter,
    /// Refused by the listener's `max_connections`.
    pub refused_listener: Counter,
    /// Times the listener stopped accepting for its `max_accept_rate`.
    pub rate_pauses: Counter,
}

impl ListenerAdmissionMetrics {
    /// The refusal counter of `bound`.
    pub fn refused(&self, bound: crate::admission::Bound) -> &Counter {
        match bound {
            crate::admission::Bound::Broker => &self.refused_broker,
            crate::admission::Bound::Listener => &self.refused_listener,
        }
    }
}

impl AdmissionMetrics {
    /// Registers a listener's figures.
    pub fn add_listener(&self, name: Arc<str>) -> Arc<ListenerAdmissionMetrics> {
        let m = Arc::new(ListenerAdmissionMetrics {
            name,
            limit: Gauge::default(),
            open: Gauge::default(),
            refused_broker: Counter::default(),
            refused_listener: Counter::default(),
            rate_pauses: Counter::default(),
        });
        let mut all = self.listeners.write().unwrap_or_else(|e| e.into_inner());
        all.push(m.clone());
        m
    }

    #[rustfmt::skip] // a table reads better one metric per line
    fn render(&self, e: &mut Exposition) {
        use crate::admission::Bound;
        e.single("mqttd_connections_limit", Kind::Gauge, "Connections the broker holds at most (limits.max_connections in force).", self.limit.get());
        e.single("mqttd_connections_refusing", Kind::Gauge, "Connections being refused with CONNACK now.", self.refusing.get());
        e.single("mqttd_connections_refused_unanswered_total", Kind::Counter, "Connections over a limit closed without a CONNACK because the most refusals were already in progress.", self.refused_unanswered.get());
        let listeners = self.listeners.read().unwrap_or_else(|e| e.into_inner()).clone();
        let name = "mqttd_connections_refused_total";
        e.family(name, Kind::Counter, "Connections refused (CONNACK 0x97 / 0x03, or closed) by a connection limit, by listener and reason.");
        for l in &listeners {
            for bound in [Bound::Broker, Bound::Listener] {
                e.sample(name, &[("listener", &l.name), ("reason", bound.label())], l.refused(bound).get());
            }
        }
        let name = "mqttd_listener_connections";
        e.family(name, Kind::Gauge, "Connections held through a listener (TLS and WebSocket handshakes included).");
        for l in &listeners {
            e.sample(name, &[("listener", &l.name)], l.open.get());
        }
        let name = "mqttd_listener_connections_limit";
        e.family(name, Kind::Gauge, "A listener's max_connections (0: only the broker-wide limit).");
        for l in &listeners {
            e.sample(name, &[("listener", &l.name)], l.limit.get());
        }
        let name = "mqttd_accept_rate_pauses_total";
        e.family(name, Kind::Counter, "Times a listener stopped accepting for a moment because of its max_accept_rate (connections wait in the kernel's backlog).");
        for l in &listeners {
            e.sample(name, &[("listener", &l.name)], l.rate_pauses.get());
        }
    }
}

/// A sampled value, typed by what it measures.
enum Value {
    Counter(u64),
    Gauge(i64),
}

/// Prometheus metric type, as written on `# TYPE` lines.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

#[rustfmt::skip] // a table reads better one metric per line
fn render_store(s: &StoreMetrics, e: &mut Exposition) {
    let counters = [
        ("mqttd_store_writes_total", "Writes committed to the store's journal.", s.writes.get()),
        ("mqttd_store_write_errors_total", "Store writes or fsyncs that failed (state then kept in memory only).", s.write_errors.get()),
        ("mqttd_store_fsyncs_total", "Fsyncs of the store's journal.", s.fsyncs.get()),
        ("mqttd_store_fsync_microseconds_total", "Time spent in fsyncs of the store's journal.", s.fsync_micros.get()),
        ("mqttd_store_quarantined_total", "Stores or records moved to the quarantine directory at start-up.", s.quarantined.get()),
    ];
    for (name, help, v) in counters {
        e.single(name, Kind::Counter, help, v);
    }
    e.single("mqttd_store_fsync_max_microseconds", Kind::Gauge, "The slowest fsync of the store's journal since start.", s.fsync_max_micros.get());
    e.single("mqttd_store_disk_bytes", Kind::Gauge, "Bytes the store takes on disk.", s.disk_bytes.get());
    e.single("mqttd_store_last_fsync_timestamp_seconds", Kind::Gauge, "When the store's journal was last fsynced (Unix time; 0: never).", s.last_fsync_ms.load(Ordering::Relaxed) / 1000);
    let name = "mqttd_store_recovered_total";
    e.family(name, Kind::Counter, "Items read back from the store at start-up, by kind.");
    for (kind, v) in [
        ("session", s.recovered_sessions.get()),
        ("message", s.recovered_messages.get()),
        ("retained", s.recovered_retained.get()),
    ] {
        e.sample(name, &[("kind", kind)], v);
    }
    let name = "mqttd_store_dropped_total";
    e.family(name, Kind::Counter, "Stored items dropped, by reason.");
    for (reason, v) in [
        ("expired_session", s.dropped_expired_sessions.get()),
        ("expired_message", s.dropped_expired_messages.get()),
        ("orphan", s.dropped_orphans.get()),
        ("unreadable", s.dropped_unreadable.get()),
        ("disk_full", s.dropped_disk_full.get()),
    ] {
        e.sample(name, &[("reason", reason)], v);
    }
}

/// A text exposition being written.
#[derive(Default)]
struct Exposition {
    out: String,
}

impl Exposition {
    /// Starts a metric family: its `# HELP` and `# TYPE` lines.
    fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        // Writing to a String cannot fail.
        let _ = writeln!(self.out, "# HELP {name} {}", escape(help, false));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample line of the current family.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            let body: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v, true)))
                .collect();
            let _ = write!(self.out, "{{{}}}", body.join(","));
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A family with a single unlabelled sample.
    fn single(&mut self, name: &str, kind: Kind, help: &str, value: impl Display) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// Escapes a HELP text (`\` and newline) or a label value (also `"`).
fn escape(s: &str, label: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if label => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    /// Checks the exposition format and returns `series -> value`.
    fn parse(text: &str) -> HashMap<String, f64> {
        let mut types: HashMap<&str, &str> = HashMap::new();
        let mut helped: HashSet<&str> = HashSet::new();
        let mut samples = HashMap::new();
        let valid_name = |n: &str| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        };
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap();
                assert!(helped.insert(name), "second HELP for {name}");
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(helped.contains(name), "TYPE before HELP for {name}");
                assert!(["counter", "gauge"].contains(&kind), "{line}");
                assert!(types.insert(name, kind).is_none(), "second TYPE for {name}");
            } else {
                let (series, value) = line.rsplit_once(' ').unwrap();
                let name = series.split('{').next().unwrap();
                assert!(valid_name(name), "bad metric name in {line}");
                assert!(types.contains_key(name), "sample without TYPE: {line}");
                if types[name] == "counter" {
                    assert!(name.ends_with("_total"), "counter {name} lacks _total");
                }
                let v: f64 = value
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line}"));
                assert!(
                    samples.insert(series.to_string(), v).is_none(),
                    "duplicate {series}"
                );
            }
        }
        samples
    }

    #[test]
    fn every_sample_has_a_type() {
        let m = Metrics::new();
        m.resize_workers(2);
        let samples = parse(&m.render());
        assert_eq!(samples["mqttd_connections"], 0.0);
        assert_eq!(samples["mqttd_session_manager_pool_size"], 2.0);
        assert!(samples.contains_key("mqttd_session_manager_queue_depth{worker=\"1\"}"));
        assert!(samples.contains_key("mqttd_messages_sent_total{qos=\"2\"}"));
    }

    #[test]
    fn updates_show_in_render() {
        let m = Metrics::new();
        let workers = m.resize_workers(3);
        m.connections.inc();
        m.connections.inc();
        m.connections.dec();
        m.messages_received.qos(QoS::AtLeastOnce).add(5);
        workers[2].created.inc();
        workers[2].queue_depth.set(4);
        let s = parse(&m.render());
        assert_eq!(s["mqttd_connections"], 1.0);
        assert_eq!(s["mqttd_messages_received_total{qos=\"1\"}"], 5.0);
        assert_eq!(s["mqttd_messages_received_total{qos=\"0\"}"], 0.0);
        assert_eq!(
            s["mqttd_session_manager_operations_total{worker=\"2\",op=\"created\"}"],
            1.0
        );
        assert_eq!(s["mqttd_session_manager_queue_depth{worker=\"2\"}"], 4.0);
    }

    /// Each reason has its own series, the old byte-limit names follow
    /// their reasons, and the memory gauges appear once a budget is attached.
    #[test]
    fn drops_by_reason_and_the_memory_budget() {
        for (i, r) in DropReason::ALL.into_iter().enumerate() {
            assert_eq!(r as usize, i, "{r:?} out of place in ALL");
        }
        let m = Metrics::new();
        m.messages_dropped
            .inc(DropReason::MemoryBudgetQos0, QoS::AtMostOnce);
        m.messages_dropped
            .inc(DropReason::Qos0Bytes, QoS::AtMostOnce);
        m.messages_dropped
            .inc(DropReason::QueueBytes, QoS::AtLeastOnce);
        m.messages_dropped
            .inc(DropReason::QueueBytes, QoS::ExactlyOnce);
        let s = parse(&m.render());
        assert!(!s.contains_key("mqttd_memory_budget_bytes"));
        let dropped = |qos: &str, reason: &str| {
            s[&format!("mqttd_messages_dropped_total{{qos=\"{qos}\",reason=\"{reason}\"}}")]
        };
        assert_eq!(dropped("0", "memory_budget_qos0"), 1.0);
        assert_eq!(dropped("1", "memory_budget_qos0"), 0.0);
        assert_eq!(dropped("2", "queue_bytes"), 1.0);
        assert_eq!(s["mqttd_queue_byte_limit_drops_total"], 2.0);
        assert_eq!(s["mqttd_qos0_byte_limit_drops_total"], 1.0);
        assert_eq!(m.messages_dropped.by_qos(QoS::AtMostOnce), 2);

        m.attach_memory(Arc::new(MemoryBudget::new(4096)));
        let s = parse(&m.render());
        assert_eq!(s["mqttd_memory_budget_bytes"], 4096.0);
        assert_eq!(s["mqttd_memory_accounted_bytes"], 0.0);
    }

    #[test]
    fn resize_keeps_surviving_workers() {
        let m = Metrics::new();
        let before = m.resize_workers(4);
        before[1].resumed.add(7);
        let after = m.resize_workers(2);
        assert_eq!(after.len(), 2);
        assert!(Arc::ptr_eq(&before[1], &after[1]));
        assert_eq!(m.worker_infos()[1].operations.resumed, 7);
        let s = parse(&m.render());
        assert!(!s.contains_key("mqttd_session_manager_queue_depth{worker=\"3\"}"));
        assert_eq!(m.pool_size.get(), 2);
    }

    #[test]
    fn auth_figures_render_once_attached() {
        let m = Metrics::new();
        assert!(!parse(&m.render()).contains_key("mqttd_password_hashes_total"));
        let auth = Arc::new(AuthMetrics::default());
        m.attach_auth(auth.clone());
        auth.hashes.add(3);
        auth.throttled_username.inc();
        assert_eq!(auth.hashes_running.add_get(2), 2);
        auth.hashes_running_peak.raise_to(2);
        auth.hashes_running_peak.raise_to(1);
        let s = parse(&m.render());
        assert_eq!(s["mqttd_password_hashes_total"], 3.0);
        assert_eq!(s["mqttd_password_hashes_running_peak"], 2.0);
        assert_eq!(s["mqttd_auth_throttled_total{reason=\"username\"}"], 1.0);
        assert_eq!(s["mqttd_auth_throttled_total{reason=\"address\"}"], 0.0);
        assert_eq!(s["mqttd_auth_failure_tracked{by=\"address\"}"], 0.0);
    }

    #[test]
    fn store_figures_render_once_attached() {
        let m = Metrics::new();
        let before = parse(&m.render());
        assert!(
            !before.keys().any(|k| k.starts_with("mqttd_store_")),
            "store families without a store"
        );
        let store = Arc::new(StoreMetrics::default());
        m.attach_store(store.clone());
        store.writes.add(7);
        store.fsyncs.add(2);
        store.fsync_micros.add(1500);
        store.fsync_max_micros.set(900);
        store
            .last_fsync_ms
            .store(1_704_067_200_999, Ordering::Relaxed);
        store.disk_bytes.set(65_536);
        store.recovered_sessions.add(3);
        store.recovered_messages.add(12);
        store.dropped_disk_full.add(4);
        store.quarantined.inc();
        let s = parse(&m.render());
        assert_eq!(s["mqttd_store_writes_total"], 7.0);
        assert_eq!(s["mqttd_store_write_errors_total"], 0.0);
        assert_eq!(s["mqttd_store_fsyncs_total"], 2.0);
        assert_eq!(s["mqttd_store_fsync_microseconds_total"], 1500.0);
        assert_eq!(s["mqttd_store_fsync_max_microseconds"], 900.0);
        // Milliseconds rendered as whole seconds.
        assert_eq!(
            s["mqttd_store_last_fsync_timestamp_seconds"],
            1_704_067_200.0
        );
        assert_eq!(s["mqttd_store_disk_bytes"], 65_536.0);
        assert_eq!(s["mqttd_store_quarantined_total"], 1.0);
        assert_eq!(s["mqttd_store_recovered_total{kind=\"session\"}"], 3.0);
        assert_eq!(s["mqttd_store_recovered_total{kind=\"message\"}"], 12.0);
        assert_eq!(s["mqttd_store_recovered_total{kind=\"retained\"}"], 0.0);
        for reason in ["expired_session", "expired_message", "orphan", "unreadable"] {
            let series = format!("mqttd_store_dropped_total{{reason=\"{reason}\"}}");
            assert_eq!(s[&series], 0.0, "{series}");
        }
        assert_eq!(s["mqttd_store_dropped_total{reason=\"disk_full\"}"], 4.0);
        let families = s
            .keys()
            .filter(|k| k.starts_with("mqttd_store_"))
            .map(|k| k.split('{').next().unwrap_or(k))
            .collect::<HashSet<_>>();
        assert_eq!(families.len(), 10, "{families:?}");
        // Attached once: a second store is ignored.
        m.attach_store(Arc::new(StoreMetrics::default()));
        assert_eq!(parse(&m.render())["mqttd_store_writes_total"], 7.0);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd", true), "a\\\"b\\\\c\\nd");
        assert_eq!(escape("say \"hi\"", false), "say \"hi\"");
    }
}
