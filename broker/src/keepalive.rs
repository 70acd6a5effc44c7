//! Keep alive: a connection that sends nothing for 1.5 × its keep alive is
//! closed and its will published [MQTT-3.1.2-24].

use std::time::Duration;

use tokio::time::Instant;

/// Tracks the last packet received and tells when the client is late.
///
/// Receiving a packet only stores a time; the timer is re-armed when it
/// fires, so the per-packet cost is one clock read.
#[derive(Debug)]
pub struct KeepAlive {
    /// 1.5 × the keep alive; `None` when the client disabled it (0).
    grace: Option<Duration>,
    last_seen: Instant,
}

impl KeepAlive {
    pub fn new(keep_alive_secs: u16) -> Self {
        let grace =
            (keep_alive_secs > 0).then(|| Duration::from_millis(u64::from(keep_alive_secs) * 1500));
        KeepAlive {
            grace,
            last_seen: Instant::now(),
        }
    }

    /// Records that a packet arrived.
    pub fn touch(&mut self) {
        if self.grace.is_some() {
            self.last_seen = Instant::now();
        }
    }

    /// When the client is due to have been heard from; `None` if never.
    pub fn deadline(&self) -> Option<Instant> {
        self.grace.map(|g| self.last_seen + g)
    }

    /// Whether the deadline has passed.
    pub fn expired(&self) -> bool {
        self.deadline().is_some_and(|d| Instant::now() >= d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn expires_after_one_and_a_half_intervals() {
        let mut k = KeepAlive::new(10);
        tokio::time::advance(Duration::from_secs(14)).await;
        assert!(!k.expired());
        k.touch();
        tokio::time::advance(Duration::from_secs(14)).await;
        assert!(!k.expired());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(k.expired());
    }

    #[test]
    fn zero_disables() {
        assert!(KeepAlive::new(0).deadline().is_none());
    }
}
