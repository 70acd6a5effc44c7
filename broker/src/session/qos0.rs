//! The QoS 0 budget of one connection: PUBLISH packets the session has
//! put in its outbox and the connection has not yet taken out to write,
//! in messages and in payload bytes.
//!
//! QoS 0 has no window, so a client that stops reading would otherwise
//! let its outbox grow without end. The session checks the budget before
//! each QoS 0 message (`mqtt.max_pending_qos0_messages`,
//! `mqtt.max_pending_qos0_bytes`) and drops what does not fit; the budget
//! is given back as the connection takes messages out, which it does only
//! while its write buffer has room (so a retained-message replay is paced
//! by the client's reading).

/// Which bound refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos0Limit {
    Messages,
    Bytes,
}

/// Counted in `u32`s (a session carries one): the configured bounds are
/// far below 4 G messages and bytes, and the counts saturate.
#[derive(Debug, Default)]
pub struct Qos0Budget {
    messages: u32,
    bytes: u32,
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
        if self.messages as usize >= max_messages {
            return Err(Qos0Limit::Messages);
        }
        let pending = self.bytes as usize;
        if pending > 0 && pending.saturating_add(bytes) > max_bytes {
            return Err(Qos0Limit::Bytes);
        }
        Ok(())
    }

    /// Counts a message of `bytes` put in the outbox if it fits.
    pub fn take(
        &mut self,
        bytes: usize,
        max_messages: usize,
        max_bytes: usize,
    ) -> Result<(), Qos0Limit> {
        self.fits(bytes, max_messages, max_bytes)?;
        self.messages = self.messages.saturating_add(1);
        self.bytes = self
            .bytes
            .saturating_add(u32::try_from(bytes).unwrap_or(u32::MAX));
        Ok(())
    }

    /// The connection took out a message of `bytes` to write it.
    pub fn written(&mut self, bytes: usize) {
        self.messages = self.messages.saturating_sub(1);
        self.bytes = self
            .bytes
            .saturating_sub(u32::try_from(bytes).unwrap_or(u32::MAX));
    }

    /// Messages pending now.
    #[cfg(test)]
    pub fn messages(&self) -> usize {
        self.messages as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_messages_and_bytes() {
        let mut b = Qos0Budget::default();
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
        assert_eq!(b.messages(), 2);
    }
}
