//! Loss accounting: which sequence numbers each subscriber received from
//! each publisher.
//!
//! Every payload carries its publisher's index and a sequence number
//! counting from 0, so a subscriber can tell unique messages from
//! duplicates (QoS 1 may deliver twice) and notice reordering. Loss is then
//! `sent × expected receivers − unique received`, summed over subscribers.

/// What one subscriber received, per publisher.
#[derive(Debug, Default, Clone)]
pub struct SeqTracker {
    publishers: Vec<PublisherSeqs>,
}

/// Received sequence numbers of one publisher, as a growable bitset.
#[derive(Debug, Default, Clone)]
struct PublisherSeqs {
    seen: Vec<u64>,
    unique: u64,
    duplicates: u64,
    out_of_order: u64,
    /// The next sequence number expected in order.
    next: u64,
}

/// Largest publisher index accepted: payloads claiming more are counted as
/// foreign, so a stray message cannot make the tracker allocate without
/// bound.
pub const MAX_PUBLISHERS: u32 = 1 << 16;
/// Largest sequence number tracked (the bitset costs one bit per number).
pub const MAX_SEQ: u64 = 1 << 32;

/// Totals over all publishers of one or more trackers.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub unique: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    /// Messages whose publisher index or sequence number was out of range.
    pub foreign: u64,
}

impl SeqTracker {
    pub fn new() -> Self {
        SeqTracker::default()
    }

    /// Records one received message. Returns `false` when it was a
    /// duplicate or could not be attributed.
    pub fn record(&mut self, publisher: u32, seq: u64) -> bool {
        if publisher >= MAX_PUBLISHERS || seq >= MAX_SEQ {
            return false;
        }
        let idx = publisher as usize;
        if self.publishers.len() <= idx {
            self.publishers.resize_with(idx + 1, PublisherSeqs::default);
        }
        self.publishers[idx].record(seq)
    }

    /// Totals over every publisher seen.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for p in &self.publishers {
            c.unique += p.unique;
            c.duplicates += p.duplicates;
            c.out_of_order += p.out_of_order;
        }
        c
    }
}

impl PublisherSeqs {
    fn record(&mut self, seq: u64) -> bool {
        let word = (seq / 64) as usize;
        let bit = 1u64 << (seq % 64);
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & bit != 0 {
            self.duplicates += 1;
            return false;
        }
        self.seen[word] |= bit;
        self.unique += 1;
        if seq < self.next {
            self.out_of_order += 1;
        } else {
            self.next = seq + 1;
        }
        true
    }
}

impl Counts {
    pub fn add(&mut self, other: Counts) {
        self.unique += other.unique;
        self.duplicates += other.duplicates;
        self.out_of_order += other.out_of_order;
        self.foreign += other.foreign;
    }
}

/// Messages that should have arrived but did not: every subscriber should
/// receive every message each publisher sent.
pub fn lost(sent: u64, receivers: u64, unique_received: u64) -> u64 {
    (sent.saturating_mul(receivers)).saturating_sub(unique_received)
}

/// Lost messages as a fraction of those expected (0 when none expected).
pub fn loss_ratio(sent: u64, receivers: u64, unique_received: u64) -> f64 {
    let expected = sent.saturating_mul(receivers);
    if expected == 0 {
        0.0
    } else {
        lost(sent, receivers, unique_received) as f64 / expected as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_unique_duplicates_and_reordering() {
        let mut t = SeqTracker::new();
        for seq in [0, 1, 2, 4, 3, 3, 100] {
            t.record(0, seq);
        }
        t.record(2, 0);
        let c = t.counts();
        assert_eq!(c.unique, 7);
        assert_eq!(c.duplicates, 1);
        assert_eq!(c.out_of_order, 1);
    }

    #[test]
    fn out_of_range_messages_are_refused() {
        let mut t = SeqTracker::new();
        assert!(!t.record(MAX_PUBLISHERS, 0));
        assert!(!t.record(0, MAX_SEQ));
        assert_eq!(t.counts(), Counts::default());
    }

    #[test]
    fn loss_is_expected_minus_unique() {
        // Fan-out: one publisher sent 1000, four subscribers.
        assert_eq!(lost(1000, 4, 3990), 10);
        assert_eq!(loss_ratio(1000, 4, 3990), 0.0025);
        // More received than expected (cannot happen with unique counts,
        // but must not underflow).
        assert_eq!(lost(10, 1, 12), 0);
        assert_eq!(loss_ratio(0, 3, 0), 0.0);
    }

    #[test]
    fn counts_add_up() {
        let mut a = Counts {
            unique: 1,
            duplicates: 2,
            out_of_order: 3,
            foreign: 4,
        };
        a.add(a);
        assert_eq!(a.unique, 2);
        assert_eq!(a.foreign, 8);
    }
}
