//! Control API types shared by `mqttd` and `mqttctl`.
//!
//! The broker serves these as JSON under [`API_PREFIX`] on its control socket
//! (and optionally on TCP with a bearer token); `mqttctl` deserializes the
//! same types, so neither side re-declares them.
//!
//! Conventions:
//! - timestamps are whole **seconds since the Unix epoch (UTC)**, as `u64`;
//!   they are compact, sortable and need no date library on either side
//!   (`mqttctl` renders them for people);
//! - durations carry their unit in the field name (`uptime_secs`,
//!   `keepalive_secs`);
//! - every error is an [`ApiError`] with the HTTP status repeated in the body.
//!
//! # Layout
//!
//! - this file: request/response types and limits;
//! - [`socket`]: where the control socket lives by default (used by both the
//!   broker, to choose where to bind, and `mqttctl`, to find it).

use serde::{Deserialize, Serialize};

pub mod socket;
pub mod time;

/// Every control endpoint lives under this path prefix.
pub const API_PREFIX: &str = "/v1";

/// Page size used by `GET /v1/sessions` when the query sets no `limit`.
pub const DEFAULT_PAGE_LIMIT: usize = 100;

/// Largest page `GET /v1/sessions` returns; larger `limit`s are rejected.
pub const MAX_PAGE_LIMIT: usize = 1000;

/// Smallest session-manager pool size accepted by a resize.
pub const MIN_POOL_SIZE: usize = 1;

/// Largest session-manager pool size accepted by a resize.
pub const MAX_POOL_SIZE: usize = 1024;

/// `GET /v1/status`: what the broker is and how busy it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Broker version (`CARGO_PKG_VERSION`).
    pub version: String,
    /// Seconds since the broker started.
    pub uptime_secs: u64,
    /// Whether the broker accepts clients (the `/readyz` answer).
    pub ready: bool,
    /// Listeners the broker accepts MQTT clients on.
    pub listeners: Vec<ListenerInfo>,
    /// Network connections currently open.
    pub connections: u64,
    /// Sessions in the session table (connected or not).
    pub sessions: u64,
    /// Subscriptions across all sessions.
    pub subscriptions: u64,
    /// Retained messages stored.
    pub retained_messages: u64,
    /// Session-manager workers.
    pub pool_size: usize,
    /// The durable store; `None` from a broker older than the store (the
    /// field is then absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreInfo>,
    /// The memory budget for message copies and what is held against it;
    /// `None` from a broker older than the budget (the field is then absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryInfo>,
}

/// The broker's memory budget (`limits.max_memory_bytes`): the bytes of
/// the message copies sessions hold (payload, topic and a fixed overhead
/// each), against the budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryInfo {
    /// The budget; 0: none.
    pub budget_bytes: u64,
    /// Charged now.
    pub accounted_bytes: u64,
    /// The most charged at once since start.
    pub peak_bytes: u64,
}

/// Where and how the broker keeps persistent sessions, their queued
/// messages and retained messages (`storage.*` in its configuration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreInfo {
    /// The storage engine and its major version (`fjall 3`), or `none`
    /// when nothing is kept on disk (`memory`).
    pub engine: String,
    /// The data directory; `None` with `memory`.
    pub path: Option<String>,
    /// `storage.durability`: `sync`, `batched` or `memory`. A string, not
    /// an enum, so that an older `mqttctl` shows a mode it does not know.
    pub durability: String,
    /// Bytes the store takes on disk.
    pub disk_bytes: u64,
    /// When the journal was last fsynced (Unix seconds); `None` if never
    /// since start (or `memory`).
    pub last_fsync_at: Option<u64>,
    /// What the broker moved aside at start-up because it could not read
    /// it, oldest first.
    #[serde(default)]
    pub recoveries: Vec<StoreRecovery>,
}

/// A store (or records of one) the broker could not read at start-up and
/// moved to a quarantine directory instead of deleting it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreRecovery {
    /// When (Unix seconds).
    pub at: u64,
    /// Where it was moved.
    pub path: String,
    /// Why it could not be read.
    pub reason: String,
}

/// One MQTT listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerInfo {
    /// Name from the configuration (e.g. `mqtt`, `mqtts`).
    pub name: String,
    /// Transport: `tcp`, `tls`, ...
    pub kind: String,
    /// Bound address, `host:port`.
    pub bind: String,
}

/// One row of `GET /v1/sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSummary {
    pub client_id: String,
    /// A network connection is attached right now.
    pub connected: bool,
    /// The session outlives its connection (clean session = 0 / expiry > 0).
    pub persistent: bool,
    pub username: Option<String>,
    /// Peer address of the current or last connection, `ip:port`.
    pub peer: Option<String>,
    /// MQTT version: `3.1`, `3.1.1` or `5.0`.
    pub protocol: String,
    /// When the current connection was accepted (Unix seconds); `None` when
    /// disconnected.
    pub connected_at: Option<u64>,
    /// When the last connection of an offline session left (Unix
    /// seconds); `None` while connected, or when not known (a session
    /// restored from the store of an older mqttd, or that was connected
    /// when the broker stopped abruptly).
    #[serde(default)]
    pub disconnected_at: Option<u64>,
    /// When the session was created (Unix seconds).
    pub created_at: u64,
    /// Number of subscriptions.
    pub subscriptions: usize,
    /// QoS 1/2 messages sent and not yet acknowledged.
    pub inflight: usize,
    /// Messages waiting to be delivered.
    pub queued: usize,
    /// Session expiry interval granted (MQTT 5.0, or a 3.1.1 persistent
    /// session, which gets `limits.max_session_expiry_secs`); `None` for a
    /// 3.1.1 clean session.
    pub expiry_interval_secs: Option<u32>,
}

/// `GET /v1/sessions/{client_id}`: a summary plus connection and
/// subscription details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionDetail {
    #[serde(flatten)]
    pub summary: SessionSummary,
    /// Listener name the current or last connection came through.
    pub listener: Option<String>,
    /// Keepalive negotiated at CONNECT; 0 disables it.
    pub keepalive_secs: u16,
    pub subscription_list: Vec<SubscriptionInfo>,
}

/// One subscription of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionInfo {
    /// Topic filter, e.g. `sensors/+/temp` or `$share/group/a/#`.
    pub filter: String,
    /// Maximum QoS granted: 0, 1 or 2.
    pub qos: u8,
    /// MQTT 5 no-local option.
    #[serde(default)]
    pub no_local: bool,
    /// MQTT 5 retain-as-published option.
    #[serde(default)]
    pub retain_as_published: bool,
    /// MQTT 5 retain handling option (0, 1 or 2).
    #[serde(default)]
    pub retain_handling: u8,
}

/// Query string of `GET /v1/sessions`.
///
/// Sessions are returned ordered by client id. `cursor` is opaque to
/// clients: pass back the `next_cursor` of the previous page unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionQuery {
    /// Only connected (`true`) or only disconnected (`false`) sessions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connected: Option<bool>,
    /// Only client ids starting with this prefix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Only sessions of this username.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Page size, 1..=[`MAX_PAGE_LIMIT`]; [`DEFAULT_PAGE_LIMIT`] when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Where the page starts: a previous page's `next_cursor`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

impl SessionQuery {
    /// The page size to use: `limit`, or the default when absent.
    pub fn page_limit(&self) -> usize {
        self.limit.unwrap_or(DEFAULT_PAGE_LIMIT)
    }

    /// Checks `limit`; the error is a reason fit for a 400 answer.
    pub fn validate(&self) -> Result<(), String> {
        let limit = self.page_limit();
        if limit == 0 || limit > MAX_PAGE_LIMIT {
            return Err(format!(
                "limit {limit} is out of range: it must be between 1 and {MAX_PAGE_LIMIT}"
            ));
        }
        Ok(())
    }

    /// Whether a session passes the `connected`, `prefix` and `username`
    /// filters (paging is left to the caller).
    pub fn matches(&self, s: &SessionSummary) -> bool {
        self.connected.is_none_or(|c| c == s.connected)
            && self
                .prefix
                .as_deref()
                .is_none_or(|p| s.client_id.starts_with(p))
            && self
                .username
                .as_deref()
                .is_none_or(|u| s.username.as_deref() == Some(u))
    }
}

/// Answer of `GET /v1/sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionPage {
    pub sessions: Vec<SessionSummary>,
    /// Sessions matching the filters, over all pages.
    pub total: usize,
    /// Cursor of the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /v1/pool`: the session-manager pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolInfo {
    /// Number of workers.
    pub size: usize,
    pub workers: Vec<WorkerInfo>,
}

/// One session-manager worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Position in the pool; client id `c` goes to `hash(c) mod size`.
    pub index: usize,
    /// Requests waiting in the worker's queue.
    pub queue_depth: u64,
    /// Operations the worker has completed.
    pub operations: WorkerOperations,
}

/// Lifecycle operations completed by one worker since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerOperations {
    /// Sessions created.
    pub created: u64,
    /// Existing sessions resumed (including takeovers).
    pub resumed: u64,
    /// Sessions destroyed (clean start, admin request, expiry).
    pub destroyed: u64,
}

/// Body of `POST /v1/pool/resize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResizeRequest {
    /// New number of workers, [`MIN_POOL_SIZE`]..=[`MAX_POOL_SIZE`].
    pub size: usize,
}

impl ResizeRequest {
    /// Checks `size`; the error is a reason fit for a 400 answer.
    pub fn validate(&self) -> Result<(), String> {
        if (MIN_POOL_SIZE..=MAX_POOL_SIZE).contains(&self.size) {
            Ok(())
        } else {
            Err(format!(
                "pool size {} is out of range: it must be between {MIN_POOL_SIZE} and {MAX_POOL_SIZE}",
                self.size
            ))
        }
    }
}

/// The one error shape of the API, whatever the endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// A sentence for a person, e.g. `no session with client id "x"`.
    pub error: String,
    /// The HTTP status code of the answer.
    pub status: u16,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(id: &str, connected: bool, user: Option<&str>) -> SessionSummary {
        SessionSummary {
            client_id: id.into(),
            connected,
            persistent: true,
            username: user.map(Into::into),
            peer: None,
            protocol: "5.0".into(),
            connected_at: None,
            disconnected_at: None,
            created_at: 0,
            subscriptions: 0,
            inflight: 0,
            queued: 0,
            expiry_interval_secs: None,
        }
    }

    #[test]
    fn query_limits() {
        assert_eq!(SessionQuery::default().page_limit(), DEFAULT_PAGE_LIMIT);
        assert!(SessionQuery::default().validate().is_ok());
        let q = |n| SessionQuery {
            limit: Some(n),
            ..Default::default()
        };
        assert!(q(0).validate().is_err());
        assert!(q(MAX_PAGE_LIMIT).validate().is_ok());
        assert!(q(MAX_PAGE_LIMIT + 1).validate().is_err());
    }

    #[test]
    fn query_filters() {
        let s = summary("dev-1", true, Some("alice"));
        assert!(SessionQuery::default().matches(&s));
        let q = SessionQuery {
            connected: Some(true),
            prefix: Some("dev-".into()),
            username: Some("alice".into()),
            ..Default::default()
        };
        assert!(q.matches(&s));
        assert!(!q.matches(&summary("dev-1", false, Some("alice"))));
        assert!(!q.matches(&summary("x-1", true, Some("alice"))));
        assert!(!q.matches(&summary("dev-1", true, None)));
    }

    #[test]
    fn resize_range() {
        assert!(ResizeRequest { size: 0 }.validate().is_err());
        assert!(ResizeRequest { size: 1 }.validate().is_ok());
        assert!(ResizeRequest { size: 1024 }.validate().is_ok());
        let err = ResizeRequest { size: 1025 }.validate().unwrap_err();
        assert!(err.contains("between 1 and 1024"), "{err}");
    }

    #[test]
    fn status_without_store_parses() {
        // What a broker older than the store answers.
        let old = r#"{"version":"0.1.0","uptime_secs":5,"ready":true,"listeners":[],
            "connections":0,"sessions":0,"subscriptions":0,"retained_messages":0,"pool_size":2}"#;
        let s: Status = serde_json::from_str(old).unwrap();
        assert_eq!(s.store, None);
        assert_eq!(s.memory, None);
        assert!(serde_json::to_value(&s).unwrap().get("store").is_none());
    }

    #[test]
    fn status_store_round_trips() {
        let s = Status {
            version: "0.1.0".into(),
            uptime_secs: 5,
            ready: true,
            listeners: vec![],
            connections: 0,
            sessions: 0,
            subscriptions: 0,
            retained_messages: 0,
            pool_size: 2,
            store: Some(StoreInfo {
                engine: "fjall 3".into(),
                path: Some("/var/lib/mqttd".into()),
                durability: "batched".into(),
                disk_bytes: 4096,
                last_fsync_at: Some(1_704_067_200),
                recoveries: vec![StoreRecovery {
                    at: 1_704_067_100,
                    path: "/var/lib/mqttd/quarantine/x/store".into(),
                    reason: "damaged".into(),
                }],
            }),
            memory: Some(MemoryInfo {
                budget_bytes: 2 << 20,
                accounted_bytes: 1000,
                peak_bytes: 5000,
            }),
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["store"]["durability"], "batched");
        assert_eq!(v["store"]["recoveries"][0]["at"], 1_704_067_100);
        assert_eq!(serde_json::from_value::<Status>(v).unwrap(), s);
    }

    #[test]
    fn detail_flattens_summary() {
        let d = SessionDetail {
            summary: summary("a", true, None),
            listener: Some("mqtt".into()),
            keepalive_secs: 60,
            subscription_list: vec![],
        };
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["client_id"], "a");
        assert_eq!(v["keepalive_secs"], 60);
        let back: SessionDetail = serde_json::from_value(v).unwrap();
        assert_eq!(back, d);
    }
}
