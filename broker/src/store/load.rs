//! Reading the store back at start-up.
//!
//! One pass over each keyspace, in key order. What comes back: every
//! persistent session whose expiry has not passed (wall clock), its
//! subscriptions and incoming QoS 2 ids, its in-flight messages, the
//! places in line of its queued messages (their content stays on disk
//! until they are sent, so start-up needs no memory in proportion to the
//! bytes stored), and every retained message not expired.
//!
//! Dropped on the way, counted, and deleted from the store: sessions that
//! expired while the broker was down, messages whose MQTT 5.0 expiry
//! passed, records of sessions that no longer exist (left by a crash in
//! the middle of a session's end). Records that do not decode are
//! written to the quarantine directory, then deleted.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use fjall::Keyspace;

use super::open::quarantine_record;
use super::record::{self, now_ms, QueuedRecord, SentStage, SessionRecord, SubscriptionRecord};
use super::{keys, Engine};
use crate::message::Message;
use crate::session::NEVER_EXPIRES;
use crate::types::PacketId;

/// What the store held.
#[derive(Debug, Default)]
pub struct Loaded {
    pub sessions: Vec<LoadedSession>,
    pub retained: Vec<Arc<Message>>,
    /// The first sequence number of this broker's life: every stored
    /// message has a smaller one.
    pub life_start: u64,
}

#[derive(Debug)]
pub struct LoadedSession {
    pub client_id: String,
    pub record: SessionRecord,
    pub subscriptions: Vec<(String, SubscriptionRecord)>,
    /// Its in-flight messages, in order.
    pub messages: Vec<LoadedMessage>,
    /// Its queue, left on disk (read back as it drains, see
    /// `session::outgoing::Tail`): the first sequence number and how many.
    pub tail: Option<(u64, u64)>,
    pub incoming_qos2: Vec<PacketId>,
}

/// A message sent before the restart: read back, to be resent.
#[derive(Debug)]
pub struct LoadedMessage {
    pub seq: u64,
    pub record: QueuedRecord,
    pub stage: SentStage,
}

/// Keys to delete once the pass is over.
struct Cleanup<'a> {
    engine: &'a Engine,
    quarantine: &'a Path,
    deletes: Vec<(Keyspace, Vec<u8>)>,
}

impl Cleanup<'_> {
    fn unreadable(
        &mut self,
        ks: &Keyspace,
        name: &str,
        key: &[u8],
        value: &[u8],
        err: &dyn std::fmt::Display,
    ) {
        tracing::error!(keyspace = name, path = %self.quarantine.display(), error = %err, "unreadable record moved to quarantine");
        quarantine_record(self.quarantine, name, key, value);
        self.engine.metrics.dropped_unreadable.inc();
        self.engine.metrics.quarantined.inc();
        self.deletes.push((ks.clone(), key.to_vec()));
    }

    fn orphan(&mut self, ks: &Keyspace, key: &[u8]) {
        self.engine.metrics.dropped_orphans.inc();
        self.deletes.push((ks.clone(), key.to_vec()));
    }
}

/// Reads everything back, deleting what is dropped. Also sets the next
/// sequence number past every stored one.
pub(super) fn load(e: &Engine, quarantine: &Path) -> Loaded {
    let started = std::time::Instant::now();
    let mut c = Cleanup {
        engine: e,
        quarantine,
        deletes: Vec::new(),
    };
    let mut sessions: HashMap<String, LoadedSession> = HashMap::new();
    let mut expired: Vec<String> = Vec::new();
    let now = now_ms();
    each(e, &e.sessions, |key, value| {
        let Some((client_id, _)) = keys::split(key).filter(|(_, rest)| rest.is_empty()) else {
            c.unreadable(&e.sessions, "sessions", key, value, &"malformed key");
            return;
        };
        match record::decode_session(value) {
            Ok(rec) => {
                if has_expired(&rec, now) {
                    expired.push(client_id.to_string());
                    return;
                }
                sessions.insert(
                    client_id.to_string(),
                    LoadedSession {
                        client_id: client_id.to_string(),
                        record: rec,
                        subscriptions: Vec::new(),
                        messages: Vec::new(),
                        tail: None,
                        incoming_qos2: Vec::new(),
                    },
                );
            }
            Err(err) => c.unreadable(&e.sessions, "sessions", key, value, &err),
        }
    });
    each(e, &e.subscriptions, |key, value| {
        let Some((client_id, filter)) = keys::split(key) else {
            c.unreadable(
                &e.subscriptions,
                "subscriptions",
                key,
                value,
                &"malformed key",
            );
            return;
        };
        let (Some(s), Ok(filter)) = (sessions.get_mut(client_id), std::str::from_utf8(filter))
        else {
            c.orphan(&e.subscriptions, key);
            return;
        };
        match record::decode_subscription(value) {
            Ok(rec) => s.subscriptions.push((filter.to_string(), rec)),
            Err(err) => c.unreadable(&e.subscriptions, "subscriptions", key, value, &err),
        }
    });
    // Sent marks by client id, then sequence number; each is taken out as
    // its message is found, so what is left has lost its message.
    let mut sent: HashMap<String, HashMap<u64, SentStage>> = HashMap::new();
    each(e, &e.sent, |key, value| {
        let parsed = keys::split(key).and_then(|(id, rest)| Some((id, keys::seq_of(rest)?)));
        let Some((client_id, seq)) = parsed else {
            c.unreadable(&e.sent, "sent", key, value, &"malformed key");
            return;
        };
        if !sessions.contains_key(client_id) {
            c.orphan(&e.sent, key);
            return;
        }
        match record::decode_sent(value) {
            Ok(stage) => {
                sent.entry(client_id.to_string())
                    .or_default()
                    .insert(seq, stage);
            }
            Err(err) => c.unreadable(&e.sent, "sent", key, value, &err),
        }
    });
    let mut max_seq = 0;
    each(e, &e.queued, |key, value| {
        let parsed = keys::split(key).and_then(|(id, rest)| Some((id, keys::seq_of(rest)?)));
        let Some((client_id, seq)) = parsed else {
            c.unreadable(&e.queued, "queued", key, value, &"malformed key");
            return;
        };
        max_seq = max_seq.max(seq);
        let Some(s) = sessions.get_mut(client_id) else {
            c.orphan(&e.queued, key);
            return;
        };
        let stage = sent.get_mut(client_id).and_then(|m| m.remove(&seq));
        let Some(stage) = stage else {
            // Counted, not read: it is read back when its turn comes.
            let (_, left) = s.tail.get_or_insert((seq, 0));
            *left += 1;
            return;
        };
        match record::decode_queued(value) {
            Ok(record) if record.msg.is_expired() => {
                e.metrics.dropped_expired_messages.inc();
                c.deletes.push((e.queued.clone(), key.to_vec()));
                c.deletes.push((e.sent.clone(), key.to_vec()));
            }
            Ok(record) => s.messages.push(LoadedMessage { seq, record, stage }),
            Err(err) => c.unreadable(&e.queued, "queued", key, value, &err),
        }
    });
    // A "sent" mark whose message is gone (deleted between the two writes).
    for (client_id, seqs) in &sent {
        for seq in seqs.keys() {
            c.orphan(&e.sent, &keys::queued(client_id, *seq));
        }
    }
    each(e, &e.qos2, |key, value| {
        let parsed = keys::split(key).and_then(|(id, rest)| Some((id, keys::packet_id_of(rest)?)));
        let Some((client_id, id)) = parsed else {
            c.unreadable(&e.qos2, "qos2", key, value, &"malformed key");
            return;
        };
        match sessions.get_mut(client_id) {
            Some(s) => s.incoming_qos2.push(id),
            None => c.orphan(&e.qos2, key),
        }
    });
    let mut retained = Vec::new();
    each(e, &e.retained, |key, value| {
        match record::decode_message(value) {
            Ok(msg) if msg.is_expired() => {
                e.metrics.dropped_expired_messages.inc();
                c.deletes.push((e.retained.clone(), key.to_vec()));
            }
            Ok(msg) => retained.push(msg),
            Err(err) => c.unreadable(&e.retained, "retained", key, value, &err),
        }
    });
    e.next_seq
        .store(max_seq + 1, std::sync::atomic::Ordering::Relaxed);
    // Deletions, in one write.
    let mut batch = e.db.batch();
    for (ks, key) in std::mem::take(&mut c.deletes) {
        batch.remove(&ks, key);
    }
    if !batch.is_empty() {
        e.commit(batch);
    }
    for client_id in &expired {
        e.metrics.dropped_expired_sessions.inc();
        e.delete_all(client_id);
    }
    let mut sessions: Vec<LoadedSession> = sessions.into_values().collect();
    sessions.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    let messages = sessions
        .iter()
        .map(|s| s.messages.len() as u64 + s.tail.map_or(0, |(_, left)| left))
        .sum::<u64>();
    e.metrics.recovered_sessions.add(sessions.len() as u64);
    e.metrics.recovered_messages.add(messages);
    e.metrics.recovered_retained.add(retained.len() as u64);
    tracing::info!(
        path = %e.path.display(),
        sessions = sessions.len(),
        queued_messages = messages,
        retained = retained.len(),
        expired_sessions = expired.len(),
        millis = started.elapsed().as_millis() as u64,
        "store loaded"
    );
    Loaded {
        sessions,
        retained,
        life_start: max_seq + 1,
    }
}

/// Whether a session's expiry passed while it was disconnected. One that
/// was connected when the broker stopped counts from now.
fn has_expired(s: &SessionRecord, now_ms: u64) -> bool {
    if s.expiry_secs == NEVER_EXPIRES {
        return false;
    }
    let Some(gone) = s.disconnected_at_ms else {
        return false;
    };
    now_ms.saturating_sub(gone) >= u64::from(s.expiry_secs) * 1000
}

/// Calls `f` with every record of `ks`; a record the engine cannot read
/// ends the pass over that keyspace (logged).
fn each(e: &Engine, ks: &Keyspace, mut f: impl FnMut(&[u8], &[u8])) {
    for item in ks.iter() {
        match item.into_inner() {
            Ok((key, value)) => f(&key, &value),
            Err(err) => {
                e.write_failed("read at start-up", &err);
                break;
            }
        }
    }
}
