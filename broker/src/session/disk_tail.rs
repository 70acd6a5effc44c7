//! The part of a restored session's queue that start-up left on disk
//! (beyond [`crate::store::load::READ_AHEAD`] messages), read back in
//! batches as the queue drains.
//!
//! The tail holds the sequence numbers `from..end`, where `end` is the
//! first sequence number of this broker's life: everything routed since
//! the restart is newer, reaches the session through its inbox, and
//! queues in memory behind the tail. Stopping at `end` is what keeps a
//! message stored after the restart from being read twice (from disk and
//! from the inbox).

use super::outgoing::{Outgoing, Pending};
use crate::store::load::READ_AHEAD;
use crate::store::Store;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DiskTail {
    /// The next sequence number to read from.
    from: u64,
    /// The first sequence number not in the tail.
    end: u64,
    /// Messages left on disk (as counted at start-up).
    left: u64,
    /// A subscription was revoked since the restart: what is read is
    /// kept only if a subscription still covers it, as the queue in
    /// memory was pruned.
    prune: bool,
}

/// What a [`DiskTail::refill`] did.
pub(super) struct Refill {
    /// Messages put into the queue.
    pub queued: usize,
    /// Read and pruned (no subscription covers it any more): to drop.
    pub pruned: Vec<Pending>,
    /// The tail is all read.
    pub done: bool,
}

impl DiskTail {
    pub fn new(from: u64, end: u64, left: u64) -> DiskTail {
        DiskTail {
            from,
            end,
            left,
            prune: false,
        }
    }

    pub fn left(&self) -> u64 {
        self.left
    }

    /// From now on, drop what no subscription covers.
    pub fn prune(&mut self) {
        self.prune = true;
    }

    /// Whether a queued message came from before the restart: such
    /// messages sit at the front of the queue, ahead of everything routed
    /// since.
    fn precedes(&self, seq: Option<u64>) -> bool {
        seq.is_some_and(|s| s < self.end)
    }

    /// Reads the next batch into the front of `out`'s queue, once the
    /// window has room and none of the messages from before the restart
    /// is left in the queue. `keep`: whether a subscription covers a
    /// message (used once a subscription was revoked).
    pub fn refill(
        &mut self,
        store: &Store,
        client_id: &str,
        out: &mut Outgoing,
        keep: impl Fn(&Pending) -> bool,
    ) -> Option<Refill> {
        if !out.has_room() || out.front_seq().is_some_and(|s| self.precedes(s)) {
            return None;
        }
        let batch = store.read_queued(client_id, self.from, READ_AHEAD);
        // Read until nothing is left (a short batch may only mean that
        // unreadable records were skipped).
        let mut done = batch.is_empty();
        let mut read = Vec::with_capacity(batch.len());
        let mut pruned = Vec::new();
        for (seq, rec) in batch {
            if seq >= self.end {
                done = true;
                break;
            }
            self.from = seq + 1;
            self.left = self.left.saturating_sub(1);
            let p = Pending {
                msg: rec.msg,
                qos: rec.qos,
                retain: rec.retain,
                sub_ids: rec.sub_ids,
                seq: Some(seq),
            };
            if self.prune && !keep(&p) {
                pruned.push(p);
            } else {
                read.push(p);
            }
        }
        let queued = read.len();
        out.push_front(read);
        Some(Refill {
            queued,
            pruned,
            done,
        })
    }
}
