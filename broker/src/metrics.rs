//! PLACEHOLDER metrics (replaced by the control branch).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::types::QoS;

#[derive(Debug, Default)]
pub struct Metrics {
    pub connections_current: AtomicI64,
    pub connections_total: AtomicU64,
    pub sessions_created: AtomicU64,
    pub sessions_resumed: AtomicU64,
    pub sessions_destroyed: AtomicU64,
    pub sessions_ended: AtomicU64,
    pub sessions_taken_over: AtomicU64,
    pub sessions_expired: AtomicU64,
    pub session_panics: AtomicU64,
    pub malformed_packets: AtomicU64,
    pub auth_failures: AtomicU64,
    pub messages_received: [AtomicU64; 3],
    pub messages_sent: [AtomicU64; 3],
    pub messages_dropped: [AtomicU64; 3],
}

impl Metrics {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
    pub fn received(&self, qos: QoS) {
        Self::inc(&self.messages_received[qos as usize]);
    }
    pub fn sent(&self, qos: QoS) {
        Self::inc(&self.messages_sent[qos as usize]);
    }
    pub fn dropped(&self, qos: QoS) {
        Self::inc(&self.messages_dropped[qos as usize]);
    }
}
