//! One memory budget for the whole broker (`limits.max_memory_bytes`):
//! the bytes of the message copies sessions hold, and who may take more.
//!
//! Every copy of a message a session holds is charged here while it is
//! held: in its delivery mailbox (in transit), its queue, its in-flight
//! window and the QoS 0 packets handed to its connection and not yet
//! written. A copy costs its payload, its topic and
//! [`MESSAGE_OVERHEAD_BYTES`]. Copies are charged one by one even though
//! their payload is shared (`Arc<Message>`): with one subscriber per
//! message (the common case) that is exact, with a fan-out it overstates
//! the memory, which errs on the safe side.
//! A queued message that waits on disk only (an offline persistent
//! session on a durable store) is charged for its place in line only
//! (`session::outgoing::PLACE_BYTES`).
//!
//! A [`Charge`] gives its bytes back when it is dropped, so a copy
//! dropped anywhere (delivered, expired, refused, a session ending,
//! panicking or aborted) cannot leave the count raised: the same pattern
//! as the delivery mailbox's count (see `crate::session::inbox`).
//!
//! Admission ([`Account::admit`]) is decided by the router when it hands
//! a copy to a session, with a compare-and-swap against a ceiling that
//! depends on what the copy is, so concurrent publishers can never push
//! the accounted bytes over the budget:
//!
//! | copy                                        | ceiling                | refused as              |
//! |---------------------------------------------|------------------------|-------------------------|
//! | QoS 0 to a slow session                     | [`QOS0_SLOW_PERCENT`]  | `memory_budget_qos0`    |
//! | QoS 1/2 to an offline session               | [`OFFLINE_PERCENT`]    | `memory_budget_offline` |
//! | QoS 1/2 to a connected slow session         | [`OFFLINE_PERCENT`]    | `memory_budget_slow`    |
//! | QoS 0 or 1/2 to a connected session keeping up | 100 %               | `memory_budget_qos0` / `memory_budget_full` |
//!
//! A session is *slow* when it holds more than [`Account::slow_bytes`]
//! already. Sessions that keep up so always have the last 10 to 20 % of
//! the budget to themselves, whatever the stuck and offline ones hold.
//!
//! Copies read back from the store into an in-flight window (a resumed
//! persistent session, a restart) are charged without a ceiling
//! ([`Account::force`]): they are already taken off the disk, and their
//! number is bounded by the window. They may take the accounted bytes
//! over the budget by at most one window per session reading back;
//! while they do, no routed copy is admitted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::message::Message;

/// What one copy costs besides its payload and topic, rounded up from a
/// measurement (BENCHMARKS.md, "Memory budget": about 585 bytes a queued
/// copy, 16 B and 1 KiB payloads alike). It covers the copy's `Message`
/// (its properties, `Arc` header and separately allocated payload and
/// topic; one per message, but charged per copy), its slot in the
/// mailbox, queue or window, and the allocator's per-block slack.
pub const MESSAGE_OVERHEAD_BYTES: u64 = 640;
/// Share of the budget above which QoS 0 to slow sessions is refused.
pub const QOS0_SLOW_PERCENT: u64 = 80;
/// Share of the budget above which QoS 1/2 to offline (and connected but
/// slow) sessions is refused.
pub const OFFLINE_PERCENT: u64 = 90;
/// A session holding more than this share of the budget (1/64) is slow...
pub const SLOW_SHARE_DIVISOR: u64 = 64;
/// ... or more than this, whichever is larger (so a small budget does not
/// call a session slow for a full in-flight window: 32 messages of 8 KiB).
pub const SLOW_FLOOR_BYTES: u64 = 256 * 1024;

/// The broker's budget and what is charged against it now.
#[derive(Debug, Default)]
pub struct MemoryBudget {
    /// 0: no budget (copies are still counted).
    limit: u64,
    accounted: AtomicU64,
    /// The most ever accounted at once.
    peak: AtomicU64,
}

impl MemoryBudget {
    /// A budget of `limit` bytes (0: none).
    pub fn new(limit: u64) -> Self {
        MemoryBudget {
            limit,
            ..Default::default()
        }
    }

    /// The budget; 0: none.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes charged now.
    pub fn accounted(&self) -> u64 {
        self.accounted.load(Ordering::Relaxed)
    }

    /// The most bytes ever charged at once since start.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// `percent` of the budget, or no ceiling without a budget.
    fn ceiling(&self, percent: u64) -> u64 {
        if self.limit == 0 {
            u64::MAX
        } else {
            // u128: no overflow for any u64 budget.
            (u128::from(self.limit) * u128::from(percent) / 100) as u64
        }
    }

    /// Charges `bytes` if the total stays at or under `ceiling`.
    fn try_add(&self, bytes: u64, ceiling: u64) -> bool {
        let mut cur = self.accounted.load(Ordering::Relaxed);
        loop {
            let Some(next) = cur.checked_add(bytes).filter(|n| *n <= ceiling) else {
                return false;
            };
            match self.accounted.compare_exchange_weak(
                cur,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.peak.fetch_max(next, Ordering::Relaxed);
                    return true;
                }
                Err(now) => cur = now,
            }
        }
    }

    fn add(&self, bytes: u64) {
        let next = self.accounted.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(next, Ordering::Relaxed);
    }

    fn sub(&self, bytes: u64) {
        self.accounted.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// What one copy of `msg` costs.
pub fn cost(msg: &Message) -> u64 {
    (msg.payload.len() + msg.topic.as_str().len()) as u64 + MESSAGE_OVERHEAD_BYTES
}

/// Why the budget refused a copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A QoS 0 copy: to a slow session above [`QOS0_SLOW_PERCENT`], or
    /// to any session with the budget full.
    Qos0,
    /// A QoS 1/2 copy for an offline session above [`OFFLINE_PERCENT`].
    Offline,
    /// A QoS 1/2 copy for a connected session that is not reading, above
    /// [`OFFLINE_PERCENT`].
    Slow,
    /// A QoS 1/2 copy for a connected session, with the budget full.
    Full,
}

/// One session's share: the bytes its copies hold, within the broker's
/// budget. Shared by the session and the router's handle on it.
#[derive(Debug)]
pub struct Account {
    budget: Arc<MemoryBudget>,
    held: AtomicU64,
}

impl Account {
    pub fn new(budget: Arc<MemoryBudget>) -> Arc<Self> {
        Arc::new(Account {
            budget,
            held: AtomicU64::new(0),
        })
    }

    /// Bytes this session's copies hold now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Above this the session is slow (see the module doc).
    pub fn slow_bytes(&self) -> u64 {
        (self.budget.limit / SLOW_SHARE_DIVISOR).max(SLOW_FLOOR_BYTES)
    }

    /// Charges a copy of `bytes` for this session, or says why not: `qos0`
    /// after the subscription's downgrade, `online`: a connection is
    /// attached.
    pub fn admit(
        self: &Arc<Self>,
        bytes: u64,
        qos0: bool,
        online: bool,
    ) -> Result<Charge, Refusal> {
        let slow = self.held() > self.slow_bytes();
        let (percent, refusal) = match (qos0, online, slow) {
            (true, _, true) => (QOS0_SLOW_PERCENT, Refusal::Qos0),
            (true, _, false) => (100, Refusal::Qos0),
            (false, false, _) => (OFFLINE_PERCENT, Refusal::Offline),
            (false, true, true) => (OFFLINE_PERCENT, Refusal::Slow),
            (false, true, false) => (100, Refusal::Full),
        };
        if !self.budget.try_add(bytes, self.budget.ceiling(percent)) {
            return Err(refusal);
        }
        self.held.fetch_add(bytes, Ordering::Relaxed);
        Ok(Charge {
            account: Some(self.clone()),
            bytes,
        })
    }

    /// Charges `bytes` whatever the budget holds (see the module doc).
    pub fn force(self: &Arc<Self>, bytes: u64) -> Charge {
        self.budget.add(bytes);
        self.held.fetch_add(bytes, Ordering::Relaxed);
        Charge {
            account: Some(self.clone()),
            bytes,
        }
    }
}

/// Bytes charged for one copy, given back when it is dropped.
#[derive(Debug, Default)]
pub struct Charge {
    /// `None`: nothing charged (a copy the budget does not cover).
    account: Option<Arc<Account>>,
    bytes: u64,
}

impl Charge {
    /// No charge: for a copy whose memory belongs to something else (a
    /// retained message replayed, a packet already in flight).
    pub fn none() -> Self {
        Charge::default()
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if let Some(a) = self.account.take() {
            a.held.fetch_sub(self.bytes, Ordering::Relaxed);
            a.budget.sub(self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(limit: u64) -> (Arc<MemoryBudget>, Arc<Account>) {
        let b = Arc::new(MemoryBudget::new(limit));
        (b.clone(), Account::new(b))
    }

    #[test]
    fn charges_are_given_back_when_dropped() {
        let (b, a) = account(1000);
        let c1 = a.admit(300, false, true).unwrap();
        let c2 = a.admit(300, true, true).unwrap();
        assert_eq!((b.accounted(), a.held()), (600, 600));
        drop(c1);
        assert_eq!((b.accounted(), a.held()), (300, 300));
        drop(c2);
        assert_eq!((b.accounted(), a.held(), b.peak()), (0, 0, 600));
        drop(Charge::none());
        assert_eq!(b.accounted(), 0);
    }

    #[test]
    fn a_panic_holding_charges_gives_them_back() {
        let (b, a) = account(1000);
        let held = std::panic::catch_unwind(|| {
            let _c = a.admit(500, false, true).unwrap();
            panic!("owner panics");
        });
        assert!(held.is_err());
        assert_eq!(b.accounted(), 0);
    }

    /// The order of the issue: QoS 0 to slow sessions goes first, then
    /// QoS 1/2 to offline ones, and the budget itself is never passed.
    #[test]
    fn ceilings_by_kind_of_copy() {
        // Budget 10 MiB: slow above 256 KiB held; marks at 8 and 9 MiB.
        let mib = 1024 * 1024;
        let (b, filler) = account(10 * mib);
        let fresh = || Account::new(b.clone());
        let (stuck, offline, healthy) = (fresh(), fresh(), fresh());
        let mut held = vec![stuck.admit(300 * 1024, false, true).unwrap()];
        assert!(stuck.held() > stuck.slow_bytes());
        held.push(filler.force(8 * mib - 300 * 1024));
        assert_eq!(b.accounted(), 8 * mib);
        assert_eq!(stuck.admit(1, true, true).unwrap_err(), Refusal::Qos0);
        drop(healthy.admit(1, true, true).unwrap());
        held.push(offline.admit(mib / 2, false, false).unwrap());
        assert_eq!(
            offline.admit(mib, false, false).unwrap_err(),
            Refusal::Offline
        );
        assert_eq!(stuck.admit(mib, false, true).unwrap_err(), Refusal::Slow);
        held.push(healthy.admit(mib / 2, false, true).unwrap());
        held.push(fresh().admit(mib, false, true).unwrap());
        assert_eq!(b.accounted(), 10 * mib);
        assert_eq!(fresh().admit(1, false, true).unwrap_err(), Refusal::Full);
        assert_eq!(fresh().admit(1, true, true).unwrap_err(), Refusal::Qos0);
        assert_eq!(b.peak(), 10 * mib);
        drop(held);
        assert_eq!(b.accounted(), 0);
    }

    #[test]
    fn forced_charges_pass_the_budget_and_block_admission() {
        let (b, a) = account(100 * 1024);
        let f = a.force(200 * 1024);
        assert_eq!(b.accounted(), 200 * 1024);
        assert!(a.admit(1, false, true).is_err());
        drop(f);
        assert!(a.admit(1, false, true).is_ok());
    }

    #[test]
    fn no_budget_counts_but_never_refuses() {
        let (b, a) = account(0);
        let c = a.admit(u64::MAX / 2, false, false).unwrap();
        assert!(a.admit(1000, true, true).is_ok());
        assert_eq!(b.accounted(), u64::MAX / 2);
        drop(c);
    }

    /// Many threads racing for the last bytes never pass the budget.
    #[test]
    fn concurrent_admission_never_passes_the_budget() {
        let (b, a) = account(1024 * 1024);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    let mut kept = Vec::new();
                    for _ in 0..10_000 {
                        if let Ok(c) = a.admit(1000, false, true) {
                            kept.push(c);
                        }
                        if kept.len() > 100 {
                            kept.remove(0);
                        }
                    }
                });
            }
        });
        assert!(b.peak() <= 1024 * 1024, "peak {}", b.peak());
        assert_eq!(b.accounted(), 0);
    }
}
