//! The session table shared by every session-manager worker: client id →
//! session entry (emqttd's `session` mnesia table).
//!
//! Ordered (a `BTreeMap` under a read-write lock) so the control API pages
//! through it by client id without copying it. Writes happen once per
//! session lifecycle step, never per message, so one lock is not contended.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::{Mutex, RwLock};
use tokio_util::sync::CancellationToken;

use super::SessionTx;
use crate::codec::ProtocolVersion;
use crate::types::{ClientId, PacketId};

/// What the broker knows of the network connection attached to a session
/// (the seed's client-info record).
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub conn_id: u64,
    pub peer: SocketAddr,
    pub username: Option<String>,
    pub protocol: ProtocolVersion,
    pub keep_alive_secs: u16,
    pub connected_at: SystemTime,
    pub listener: Arc<str>,
}

/// Counters and connection info the session task publishes for readers
/// outside it (control API, metrics) without a round trip to the task.
#[derive(Debug, Default)]
pub struct SessionShared {
    pub persistent: AtomicBool,
    /// MQTT 5.0 session expiry interval in seconds (0 for 3.1.1 clean).
    pub expiry_interval_secs: AtomicU32,
    pub subscriptions: AtomicUsize,
    pub inflight: AtomicUsize,
    pub queued: AtomicUsize,
    /// Incoming QoS 2 packet ids received (PUBREC sent) and not yet
    /// released: session state [MQTT-4.3.3-2], used by the connection that
    /// handles the client's PUBLISH and PUBREL.
    pub incoming_qos2: Mutex<HashSet<PacketId>>,
    connected: AtomicBool,
    /// The connection attached now, or the last one while offline.
    last_client: Mutex<Option<Arc<ClientInfo>>>,
}

impl SessionShared {
    /// The attached connection, if any.
    pub fn client(&self) -> Option<Arc<ClientInfo>> {
        if self.is_connected() {
            self.last_client()
        } else {
            None
        }
    }
    /// The attached connection, or the last one of an offline session.
    pub fn last_client(&self) -> Option<Arc<ClientInfo>> {
        self.last_client.lock().clone()
    }
    /// Records the attached connection (`None`: it left; the last one is
    /// kept for operators).
    pub fn set_client(&self, info: Option<Arc<ClientInfo>>) {
        self.connected.store(info.is_some(), Ordering::Relaxed);
        if let Some(i) = info {
            *self.last_client.lock() = Some(i);
        }
    }
    pub fn protocol(&self) -> Option<ProtocolVersion> {
        self.last_client.lock().as_ref().map(|c| c.protocol)
    }
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
    pub fn is_persistent(&self) -> bool {
        self.persistent.load(Ordering::Relaxed)
    }
}

/// One row of the session table.
#[derive(Debug)]
pub struct SessionEntry {
    /// Unique per session incarnation, so a late cleanup of an old session
    /// never removes its successor under the same client id.
    pub uid: u64,
    pub client_id: ClientId,
    pub tx: SessionTx,
    pub created_at: SystemTime,
    /// Cancelled once the session task has ended and its row is gone.
    pub ended: CancellationToken,
    pub shared: Arc<SessionShared>,
}

/// Filters for [`SessionTable::page`].
#[derive(Debug, Clone, Default)]
pub struct PageQuery<'a> {
    pub connected: Option<bool>,
    pub prefix: Option<&'a str>,
    pub username: Option<&'a str>,
    /// Return entries whose client id sorts after this one.
    pub after: Option<&'a str>,
    pub limit: usize,
}

/// One page of entries, the cursor for the next one, and how many entries
/// match the filters in the whole table.
#[derive(Debug)]
pub struct Page {
    pub entries: Vec<Arc<SessionEntry>>,
    pub next_cursor: Option<String>,
    pub total: usize,
}

#[derive(Debug, Default)]
pub struct SessionTable {
    map: RwLock<BTreeMap<ClientId, Arc<SessionEntry>>>,
}

impl SessionTable {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, id: &str) -> Option<Arc<SessionEntry>> {
        self.map.read().get(id).cloned()
    }

    /// Inserts `entry`, returning the entry it replaced (a caller bug: the
    /// manager removes before it creates).
    pub fn insert(&self, entry: Arc<SessionEntry>) -> Option<Arc<SessionEntry>> {
        self.map.write().insert(entry.client_id.clone(), entry)
    }

    /// Removes the row for `id` only if it still belongs to session `uid`.
    pub fn remove_if(&self, id: &str, uid: u64) -> bool {
        let mut map = self.map.write();
        if map.get(id).is_some_and(|e| e.uid == uid) {
            map.remove(id);
            true
        } else {
            false
        }
    }

    pub fn len(&self) -> usize {
        self.map.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of sessions with a connection attached.
    pub fn connected_count(&self) -> usize {
        let map = self.map.read();
        map.values().filter(|e| e.shared.is_connected()).count()
    }

    /// Every entry (for shutdown); a copy, so not for the request path.
    pub fn all(&self) -> Vec<Arc<SessionEntry>> {
        self.map.read().values().cloned().collect()
    }

    /// A page of entries in client-id order. Walks the ordered map from
    /// the cursor (or the prefix) and copies only the page's handles.
    pub fn page(&self, q: &PageQuery<'_>) -> Page {
        let map = self.map.read();
        let matches = |e: &SessionEntry| {
            q.connected.is_none_or(|c| e.shared.is_connected() == c)
                && q.prefix.is_none_or(|p| e.client_id.as_str().starts_with(p))
                && q.username.is_none_or(|u| {
                    e.shared
                        .last_client()
                        .is_some_and(|c| c.username.as_deref() == Some(u))
                })
        };
        let unfiltered = q.connected.is_none() && q.username.is_none();
        let start: Bound<&str> = match (q.after, q.prefix) {
            (Some(a), Some(p)) if a < p => Bound::Included(p),
            (Some(a), _) => Bound::Excluded(a),
            (None, Some(p)) => Bound::Included(p),
            (None, None) => Bound::Unbounded,
        };
        let mut entries = Vec::with_capacity(q.limit.min(1024));
        let mut next_cursor = None;
        for (id, e) in map.range::<str, _>((start, Bound::Unbounded)) {
            if let Some(p) = q.prefix {
                if !id.as_str().starts_with(p) {
                    break;
                }
            }
            if !matches(e) {
                continue;
            }
            if entries.len() == q.limit {
                next_cursor = entries
                    .last()
                    .map(|l: &Arc<SessionEntry>| l.client_id.to_string());
                break;
            }
            entries.push(e.clone());
        }
        let total = match q.prefix {
            None if unfiltered => map.len(),
            Some(p) => map
                .range::<str, _>((Bound::Included(p), Bound::Unbounded))
                .take_while(|(id, _)| id.as_str().starts_with(p))
                .filter(|(_, e)| matches(e))
                .count(),
            None => map.values().filter(|e| matches(e)).count(),
        };
        Page {
            entries,
            next_cursor,
            total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, uid: u64) -> Arc<SessionEntry> {
        let (tx, _rx) = crate::mailbox::mailbox();
        Arc::new(SessionEntry {
            uid,
            client_id: ClientId::new(id),
            tx,
            created_at: SystemTime::now(),
            ended: CancellationToken::new(),
            shared: Arc::default(),
        })
    }

    #[test]
    fn remove_if_checks_uid() {
        let t = SessionTable::new();
        t.insert(entry("a", 1));
        assert!(!t.remove_if("a", 2));
        assert!(t.remove_if("a", 1));
        assert!(t.is_empty());
    }

    #[test]
    fn pages_follow_cursor_and_prefix() {
        let t = SessionTable::new();
        for i in 0..25 {
            t.insert(entry(&format!("dev-{i:02}"), i));
            t.insert(entry(&format!("x-{i:02}"), 100 + i));
        }
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let p = t.page(&PageQuery {
                prefix: Some("dev-"),
                after: cursor.as_deref(),
                limit: 10,
                ..Default::default()
            });
            assert_eq!(p.total, 25);
            seen.extend(p.entries.iter().map(|e| e.client_id.to_string()));
            cursor = p.next_cursor;
            if cursor.is_none() {
                break;
            }
        }
        assert_eq!(seen.len(), 25);
        assert_eq!(seen[0], "dev-00");
        assert_eq!(seen[24], "dev-24");
        let all = t.page(&PageQuery {
            limit: 1000,
            ..Default::default()
        });
        assert_eq!(all.total, 50);
        assert_eq!(all.entries.len(), 50);
        assert!(all.next_cursor.is_none());
    }
}
