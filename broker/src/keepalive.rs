//! Keep alive: a connection that sends nothing for 1.5 × its keep alive is
//! closed and its will published [MQTT-3.1.2-24].
//!
//! No connection carries a timer for it. Each session row holds a
//! [`Watch`] (the attached connection, its grace and when it was last
//! heard from, as atomics); receiving a packet stores a coarse time in it.
//! One [`sweep`] task walks the session table every [`SWEEP_INTERVAL`] and
//! tells the owner of each silent connection through its session's
//! mailbox ([`SessionMsg::KeepAliveExpired`]). A connection is closed
//! between 1.5 × its keep alive and that plus one sweep interval.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::context::Context;
use crate::session::SessionMsg;

/// How often the table is swept.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(250);

/// Milliseconds since the first call: the keep-alive clock.
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The keep-alive state of the connection attached to a session.
#[derive(Debug, Default)]
pub struct Watch {
    /// The connection watched; 0 when none (or keep alive is off).
    conn_id: AtomicU64,
    /// 1.5 × its keep alive, in milliseconds.
    grace_ms: AtomicU64,
    last_seen_ms: AtomicU64,
}

impl Watch {
    /// Starts watching connection `conn_id` (keep alive 0: not watched).
    pub fn arm(&self, conn_id: u64, keep_alive_secs: u16) {
        self.last_seen_ms.store(now_ms(), Ordering::Relaxed);
        self.grace_ms
            .store(u64::from(keep_alive_secs) * 1500, Ordering::Relaxed);
        let watched = if keep_alive_secs == 0 { 0 } else { conn_id };
        self.conn_id.store(watched, Ordering::Release);
    }

    /// Stops watching (the connection left).
    pub fn disarm(&self) {
        self.conn_id.store(0, Ordering::Release);
    }

    /// A packet arrived.
    pub fn touch(&self) {
        self.last_seen_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// The connection watched, if it has been silent past its grace at
    /// `now` (ms of the keep-alive clock).
    fn expired(&self, now: u64) -> Option<u64> {
        let conn_id = self.conn_id.load(Ordering::Acquire);
        if conn_id == 0 {
            return None;
        }
        let last = self.last_seen_ms.load(Ordering::Relaxed);
        let grace = self.grace_ms.load(Ordering::Relaxed);
        (now.saturating_sub(last) > grace).then_some(conn_id)
    }
}

/// Sweeps the session table until the task is dropped (the broker stops).
pub async fn sweep(ctx: Arc<Context>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = now_ms();
        ctx.table.for_each(|entry| {
            if let Some(conn_id) = entry.shared.keepalive.expired(now) {
                // Told once: the owner ends the connection, which disarms.
                entry.shared.keepalive.disarm();
                let _ = entry.tx.send(SessionMsg::KeepAliveExpired { conn_id });
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_after_one_and_a_half_intervals() {
        let w = Watch::default();
        w.arm(7, 10);
        let t0 = w.last_seen_ms.load(Ordering::Relaxed);
        assert_eq!(w.expired(t0 + 14_000), None);
        assert_eq!(w.expired(t0 + 15_001), Some(7));
        w.touch();
        let t1 = w.last_seen_ms.load(Ordering::Relaxed);
        assert_eq!(w.expired(t1 + 14_999), None);
        w.disarm();
        assert_eq!(w.expired(t1 + 100_000), None);
    }

    #[test]
    fn zero_disables() {
        let w = Watch::default();
        w.arm(7, 0);
        assert_eq!(w.expired(u64::MAX), None);
    }
}
