//! The session table shared by every session-manager worker: client id →
//! session entry (emqttd's `session` mnesia table).
//!
//! Ordered (a `BTreeMap` under a read-write lock) so the control API pages
//! through it by client id without copying it. Writes happen once per
//! session lifecycle step, never per message, so one lock is not contended
//! as long as readers hold it briefly: listing copies at most
//! [`SCAN_CHUNK`] handles per lock acquisition and filters them with the
//! lock released, so a listing of a large table never stalls CONNECTs.
//!
//! The table owns two figures, kept as counters so reading them is O(1):
//! the number of rows, and the number of rows with a connection attached.
//! The second changes when a session attaches or detaches a connection
//! ([`SessionShared::set_client`]) while its row is in the table, and when a
//! row that is still marked connected enters or leaves the table (a session
//! task that died without detaching cannot leak a count).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::{Bound, ControlFlow};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;

use super::SessionTx;
use crate::codec::ProtocolVersion;
use crate::types::ClientId;

/// What the broker knows of the network connection attached to a session
/// (the seed's client-info record).
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub conn_id: u64,
    pub peer: SocketAddr,
    pub username: Option<String>,
    pub protocol: ProtocolVersion,
    pub keep_alive_secs: u16,
    /// Seconds since the Unix epoch (what operators are shown).
    pub connected_at: u64,
    pub listener: Arc<str>,
}

/// Seconds since the Unix epoch now (0 if the clock is before it).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How many entries a scan copies under one acquisition of the table lock.
pub const SCAN_CHUNK: usize = 256;

/// The table's figures (see the module doc).
#[derive(Debug, Default)]
struct Counts {
    total: AtomicUsize,
    connected: AtomicUsize,
}

/// The attached (or last) connection, and the counters of the table the
/// session's row is in; one lock, so a row's connected state and the
/// table's count change together.
#[derive(Debug, Default)]
struct Attachment {
    last_client: Option<Arc<ClientInfo>>,
    counts: Option<Arc<Counts>>,
}

/// Counters and connection info the session's owner publishes for readers
/// outside it (control API, metrics) without a round trip to the owner.
#[derive(Debug, Default)]
pub struct SessionShared {
    /// Keep alive of the attached connection (see [`crate::keepalive`]).
    pub keepalive: crate::keepalive::Watch,
    pub persistent: AtomicBool,
    /// MQTT 5.0 session expiry interval in seconds (0 for 3.1.1 clean).
    pub expiry_interval_secs: AtomicU32,
    pub subscriptions: AtomicU32,
    pub inflight: AtomicU32,
    pub queued: AtomicU32,
    /// When the last connection left (Unix seconds; 0 while connected or
    /// before any connection), for operators (`mqttctl sessions`).
    disconnected_at: AtomicU64,
    /// Written only with `attachment` locked; read without it.
    connected: AtomicBool,
    /// The connection attached now, or the last one while offline.
    attachment: Mutex<Attachment>,
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
        self.attachment.lock().last_client.clone()
    }
    /// Records the attached connection (`None`: it left; the last one is
    /// kept for operators), and counts the change in the table's connected
    /// figure while the row is in a table.
    pub fn set_client(&self, info: Option<Arc<ClientInfo>>) {
        let mut a = self.attachment.lock();
        let now = info.is_some();
        let was = self.connected.swap(now, Ordering::Relaxed);
        if let (Some(counts), true) = (&a.counts, was != now) {
            if now {
                counts.connected.fetch_add(1, Ordering::Relaxed);
            } else {
                counts.connected.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if was && !now {
            self.disconnected_at.store(unix_now(), Ordering::Relaxed);
        } else if now {
            self.disconnected_at.store(0, Ordering::Relaxed);
        }
        if let Some(i) = info {
            a.last_client = Some(i);
        }
    }
    /// When the last connection left (Unix seconds), if the session is
    /// offline and has had one.
    pub fn disconnected_at(&self) -> Option<u64> {
        let at = self.disconnected_at.load(Ordering::Relaxed);
        (at != 0 && !self.is_connected()).then_some(at)
    }
    /// Sets when the last connection left, for a session restored from
    /// the store (its record says when).
    pub fn restore_disconnected_at(&self, unix_secs: u64) {
        self.disconnected_at.store(unix_secs, Ordering::Relaxed);
    }
    pub fn protocol(&self) -> Option<ProtocolVersion> {
        self.attachment
            .lock()
            .last_client
            .as_ref()
            .map(|c| c.protocol)
    }
    /// Links the row to the counters of the table it enters.
    fn enter(&self, counts: &Arc<Counts>) {
        let mut a = self.attachment.lock();
        if self.connected.load(Ordering::Relaxed) {
            counts.connected.fetch_add(1, Ordering::Relaxed);
        }
        a.counts = Some(counts.clone());
    }
    /// Unlinks the row from its table's counters as it leaves.
    fn leave(&self) {
        let mut a = self.attachment.lock();
        if let Some(counts) = a.counts.take() {
            if self.connected.load(Ordering::Relaxed) {
                counts.connected.fetch_sub(1, Ordering::Relaxed);
            }
        }
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
    /// Cancelled once the session has ended and its row is gone.
    pub ended: Ended,
    pub shared: SessionShared,
}

impl SessionEntry {
    pub fn new(uid: u64, client_id: ClientId, tx: SessionTx, created_at: SystemTime) -> Self {
        SessionEntry {
            uid,
            client_id,
            tx,
            created_at,
            ended: Ended::default(),
            shared: SessionShared::default(),
        }
    }
}

/// Set once, when a session has ended and its row is gone; awaited by the
/// manager before it creates the next session of the client id. Inline in
/// the row (a `CancellationToken` would be a separate allocation per
/// session).
#[derive(Debug, Default)]
pub struct Ended {
    done: AtomicBool,
    notify: Notify,
}

impl Ended {
    pub fn cancel(&self) {
        self.done.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    pub fn is_cancelled(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Completes once [`Ended::cancel`] was called.
    pub async fn cancelled(&self) {
        loop {
            // Registered before the flag is read, so a cancel in between
            // is not missed.
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
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

/// Why [`SessionTable::insert_new_within`] left a row out.
#[derive(Debug)]
pub enum NotInserted {
    /// The client id has a row: this one.
    Taken(Arc<SessionEntry>),
    /// The table is at its bound.
    Full,
}

#[derive(Debug, Default)]
pub struct SessionTable {
    map: RwLock<BTreeMap<ClientId, Arc<SessionEntry>>>,
    counts: Arc<Counts>,
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
        let mut map = self.map.write();
        entry.shared.enter(&self.counts);
        let old = map.insert(entry.client_id.clone(), entry);
        match &old {
            Some(old) => old.shared.leave(),
            None => {
                self.counts.total.fetch_add(1, Ordering::Relaxed);
            }
        }
        old
    }

    /// Inserts `entry` unless its client id already has a row (which is
    /// left alone and returned).
    pub fn insert_new(&self, entry: Arc<SessionEntry>) -> Result<(), Arc<SessionEntry>> {
        let mut map = self.map.write();
        if let Some(live) = map.get(&entry.client_id) {
            return Err(live.clone());
        }
        entry.shared.enter(&self.counts);
        map.insert(entry.client_id.clone(), entry);
        self.counts.total.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Inserts `entry` unless its client id already has a row (left alone
    /// and returned) or the table already holds `max` rows
    /// (`limits.max_sessions`): counted under the write lock, so
    /// concurrent CONNECTs cannot together pass the bound.
    pub fn insert_new_within(
        &self,
        entry: Arc<SessionEntry>,
        max: usize,
    ) -> Result<(), NotInserted> {
        let mut map = self.map.write();
        if let Some(live) = map.get(&entry.client_id) {
            return Err(NotInserted::Taken(live.clone()));
        }
        if map.len() >= max {
            return Err(NotInserted::Full);
        }
        entry.shared.enter(&self.counts);
        map.insert(entry.client_id.clone(), entry);
        self.counts.total.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Removes the row for `id` only if it still belongs to session `uid`.
    pub fn remove_if(&self, id: &str, uid: u64) -> bool {
        let mut map = self.map.write();
        if map.get(id).is_some_and(|e| e.uid == uid) {
            if let Some(old) = map.remove(id) {
                old.shared.leave();
                self.counts.total.fetch_sub(1, Ordering::Relaxed);
            }
            true
        } else {
            false
        }
    }

    /// Number of rows; O(1).
    pub fn len(&self) -> usize {
        self.counts.total.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of sessions with a connection attached; O(1).
    pub fn connected_count(&self) -> usize {
        self.counts.connected.load(Ordering::Relaxed)
    }

    /// Calls `f` on every entry, in client-id order, without holding the
    /// table lock while `f` runs (see [`SessionTable::scan`]).
    pub fn for_each(&self, mut f: impl FnMut(&Arc<SessionEntry>)) {
        self.scan(Bound::Unbounded, |e| {
            f(e);
            ControlFlow::Continue(())
        });
    }

    /// Every entry (for shutdown); a copy, so not for the request path.
    pub fn all(&self) -> Vec<Arc<SessionEntry>> {
        self.map.read().values().cloned().collect()
    }

    /// Calls `f` on the entries from `start` on, in client-id order, until
    /// it breaks. The lock is held only to copy [`SCAN_CHUNK`] handles at a
    /// time, never while `f` runs: rows inserted or removed meanwhile may
    /// or may not be seen, as with any listing of a live table.
    fn scan(&self, start: Bound<&str>, mut f: impl FnMut(&Arc<SessionEntry>) -> ControlFlow<()>) {
        let mut from: Bound<ClientId> = match start {
            Bound::Included(s) => Bound::Included(ClientId::new(s)),
            Bound::Excluded(s) => Bound::Excluded(ClientId::new(s)),
            Bound::Unbounded => Bound::Unbounded,
        };
        loop {
            let chunk: Vec<Arc<SessionEntry>> = {
                let map = self.map.read();
                map.range((from.clone(), Bound::Unbounded))
                    .take(SCAN_CHUNK)
                    .map(|(_, e)| e.clone())
                    .collect()
            };
            for e in &chunk {
                if f(e).is_break() {
                    return;
                }
            }
            match chunk.last() {
                Some(last) if chunk.len() == SCAN_CHUNK => {
                    from = Bound::Excluded(last.client_id.clone());
                }
                _ => return,
            }
        }
    }

    /// A page of entries in client-id order, from the cursor (or the
    /// prefix). The total comes from the counters when only `connected`
    /// filters; a prefix or username filter counts its matches with a scan
    /// that never holds the lock across the table.
    pub fn page(&self, q: &PageQuery<'_>) -> Page {
        let matches = |e: &SessionEntry| {
            q.connected.is_none_or(|c| e.shared.is_connected() == c)
                && q.prefix.is_none_or(|p| e.client_id.as_str().starts_with(p))
                && q.username.is_none_or(|u| {
                    e.shared
                        .last_client()
                        .is_some_and(|c| c.username.as_deref() == Some(u))
                })
        };
        let in_prefix =
            |e: &SessionEntry| q.prefix.is_none_or(|p| e.client_id.as_str().starts_with(p));
        let start: Bound<&str> = match (q.after, q.prefix) {
            (Some(a), Some(p)) if a < p => Bound::Included(p),
            (Some(a), _) => Bound::Excluded(a),
            (None, Some(p)) => Bound::Included(p),
            (None, None) => Bound::Unbounded,
        };
        let mut entries = Vec::with_capacity(q.limit.min(1024));
        let mut next_cursor = None;
        self.scan(start, |e| {
            if !in_prefix(e) {
                return ControlFlow::Break(());
            }
            if !matches(e) {
                return ControlFlow::Continue(());
            }
            if entries.len() == q.limit {
                next_cursor = entries
                    .last()
                    .map(|l: &Arc<SessionEntry>| l.client_id.to_string());
                return ControlFlow::Break(());
            }
            entries.push(e.clone());
            ControlFlow::Continue(())
        });
        let total = match (q.prefix, q.username, q.connected) {
            (None, None, None) => self.len(),
            (None, None, Some(true)) => self.connected_count(),
            (None, None, Some(false)) => self.len().saturating_sub(self.connected_count()),
            (prefix, _, _) => {
                let mut n = 0;
                self.scan(prefix.map_or(Bound::Unbounded, Bound::Included), |e| {
                    if !in_prefix(e) {
                        return ControlFlow::Break(());
                    }
                    n += usize::from(matches(e));
                    ControlFlow::Continue(())
                });
                n
            }
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
        let (tx, _, _) = crate::session::inbox::inbox(
            Arc::default(),
            crate::budget::Account::new(Arc::default()),
        );
        Arc::new(SessionEntry::new(
            uid,
            ClientId::new(id),
            tx,
            SystemTime::now(),
        ))
    }

    #[test]
    fn insert_new_leaves_a_live_row_alone() {
        let t = SessionTable::new();
        assert!(t.insert_new(entry("a", 1)).is_ok());
        let live = t.insert_new(entry("a", 2)).expect_err("a row is there");
        assert_eq!(live.uid, 1);
        assert_eq!((t.len(), t.get("a").map(|e| e.uid)), (1, Some(1)));
    }

    #[tokio::test]
    async fn ended_wakes_every_waiter_and_stays_set() {
        let e = Arc::new(Ended::default());
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let e = e.clone();
                tokio::spawn(async move { e.cancelled().await })
            })
            .collect();
        tokio::task::yield_now().await;
        e.cancel();
        for w in waiters {
            tokio::time::timeout(std::time::Duration::from_secs(5), w)
                .await
                .expect("woken")
                .expect("no panic");
        }
        e.cancelled().await;
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

    #[test]
    fn insert_within_a_bound() {
        let t = SessionTable::new();
        assert!(t.insert_new_within(entry("a", 1), 2).is_ok());
        assert!(matches!(
            t.insert_new_within(entry("a", 2), 2),
            Err(NotInserted::Taken(live)) if live.uid == 1
        ));
        assert!(t.insert_new_within(entry("b", 3), 2).is_ok());
        assert!(matches!(
            t.insert_new_within(entry("c", 4), 2),
            Err(NotInserted::Full)
        ));
        assert_eq!(t.len(), 2);
        assert!(t.remove_if("a", 1));
        assert!(t.insert_new_within(entry("c", 4), 2).is_ok());
    }

    fn info(user: &str) -> Arc<ClientInfo> {
        Arc::new(ClientInfo {
            conn_id: 1,
            peer: "127.0.0.1:1".parse().unwrap(),
            username: Some(user.into()),
            protocol: ProtocolVersion::V311,
            keep_alive_secs: 30,
            connected_at: 0,
            listener: Arc::from("mqtt"),
        })
    }

    #[test]
    fn counters_follow_insert_attach_detach_remove() {
        let t = SessionTable::new();
        let a = entry("a", 1);
        // Attached before its row is in the table (a new session's task
        // may run before the manager inserts the row).
        a.shared.set_client(Some(info("u")));
        t.insert(a.clone());
        let b = entry("b", 2);
        t.insert(b.clone());
        assert_eq!((t.len(), t.connected_count()), (2, 1));
        b.shared.set_client(Some(info("u")));
        b.shared.set_client(Some(info("u"))); // a takeover: still one
        assert_eq!(t.connected_count(), 2);
        a.shared.set_client(None);
        a.shared.set_client(None);
        assert_eq!(t.connected_count(), 1);
        // A row that leaves while marked connected (its task died without
        // detaching) takes its count with it; later changes are not counted.
        assert!(t.remove_if("b", 2));
        assert_eq!((t.len(), t.connected_count()), (1, 0));
        b.shared.set_client(None);
        assert_eq!(t.connected_count(), 0);
        // A replaced row hands over the count.
        let a2 = entry("a", 3);
        a2.shared.set_client(Some(info("u")));
        a.shared.set_client(Some(info("u")));
        assert_eq!(t.connected_count(), 1);
        assert!(t.insert(a2.clone()).is_some());
        assert_eq!((t.len(), t.connected_count()), (1, 1));
        a.shared.set_client(None);
        assert_eq!(t.connected_count(), 1);
        let page = |connected| {
            t.page(&PageQuery {
                connected,
                limit: 10,
                ..Default::default()
            })
            .total
        };
        assert_eq!((page(None), page(Some(true)), page(Some(false))), (1, 1, 0));
        assert!(t.remove_if("a", 3));
        assert_eq!((t.len(), t.connected_count()), (0, 0));
    }

    /// A filtered listing walks the whole table, but never holds the table
    /// lock while it looks at entries: here it is stuck on one session's
    /// state, and the table still takes an insert (a CONNECT).
    #[test]
    fn listing_does_not_hold_the_table_lock() {
        let t = Arc::new(SessionTable::new());
        for i in 0..(3 * SCAN_CHUNK as u64) {
            let e = entry(&format!("dev-{i:04}"), i);
            e.shared.set_client(Some(info("u")));
            t.insert(e);
        }
        let stuck = t.get("dev-0300").unwrap();
        let held = stuck.shared.attachment.lock();
        let lister = std::thread::spawn({
            let t = t.clone();
            move || {
                t.page(&PageQuery {
                    username: Some("nobody"),
                    limit: 10,
                    ..Default::default()
                })
                .total
            }
        });
        // Give the lister time to reach the held entry.
        std::thread::sleep(std::time::Duration::from_millis(50));
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let inserter = std::thread::spawn({
            let t = t.clone();
            move || {
                t.insert(entry("new", 10_000));
                let _ = done_tx.send(());
            }
        });
        let inserted = done_rx.recv_timeout(std::time::Duration::from_secs(5));
        drop(held);
        inserter.join().unwrap();
        assert_eq!(lister.join().unwrap(), 0);
        assert!(inserted.is_ok(), "insert blocked behind a listing");
        assert_eq!(t.len(), 3 * SCAN_CHUNK + 1);
    }
}
