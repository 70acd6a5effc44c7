//! The QoS 0 budget of one connection: PUBLISH packets the session has
//! handed to the connection and the connection has not yet written, in
//! messages and in payload bytes.
//!
//! QoS 0 has no window, so a client that stops reading would otherwise
//! let its outbound mailbox grow without end. The session checks the
//! budget before each QoS 0 message (`mqtt.max_pending_qos0_messages`,
//! `mqtt.max_pending_qos0_bytes`) and drops what does not fit; the
//! connection gives the budget back as it writes, and wakes a session that
//! waits to pace a retained-message replay.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Which bound refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos0Limit {
    Messages,
    Bytes,
}

#[derive(Debug, Default)]
pub struct Qos0Budget {
    messages: AtomicUsize,
    bytes: AtomicUsize,
    /// Woken each time the connection writes a QoS 0 PUBLISH.
    written: Notify,
}

impl Qos0Budget {
    /// Whether a message of `bytes` fits under the bounds. A message
    /// larger than `max_bytes` alone fits when nothing is pending, so it
    /// is not refused for ever.
    pub fn fits(
        &self,
        bytes: usize,
        max_messages: usize,
        max_bytes: usize,
    ) -> Result<(), Qos0Limit> {
        if self.messages.load(Ordering::Relaxed) >= max_messages {
            return Err(Qos0Limit::Messages);
        }
        let pending = self.bytes.load(Ordering::Relaxed);
        if pending > 0 && pending.saturating_add(bytes) > max_bytes {
            return Err(Qos0Limit::Bytes);
        }
        Ok(())
    }

    /// Counts a message of `bytes` handed to the connection if it fits.
    /// Only the session adds, so check-then-add does not race with
    /// another adder.
    pub fn take(
        &self,
        bytes: usize,
        max_messages: usize,
        max_bytes: usize,
    ) -> Result<(), Qos0Limit> {
        self.fits(bytes, max_messages, max_bytes)?;
        self.messages.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    /// The connection wrote (or discarded) a message of `bytes`.
    pub fn written(&self, bytes: usize) {
        self.messages.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        self.written.notify_one();
    }

    /// Messages pending now.
    pub fn messages(&self) -> usize {
        self.messages.load(Ordering::Relaxed)
    }

    /// Resolves after the connection next writes a QoS 0 message (at once
    /// if it wrote one since the last wait). Cancel safe.
    pub async fn wait_written(&self) {
        self.written.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_messages_and_bytes() {
        let b = Qos0Budget::default();
        assert_eq!(b.take(600, 10, 1000), Ok(()));
        assert_eq!(b.take(600, 10, 1000), Err(Qos0Limit::Bytes));
        assert_eq!(b.take(400, 10, 1000), Ok(()));
        b.written(600);
        b.written(400);
        assert_eq!(b.take(5000, 10, 1000), Ok(()), "alone, a large one goes");
        b.written(5000);
        for _ in 0..2 {
            b.take(1, 2, 1000).unwrap();
        }
        assert_eq!(b.take(1, 2, 1000), Err(Qos0Limit::Messages));
    }
}
