//! The benchmark payload: who sent a message, its sequence number and when
//! it was (meant to be) sent, padded to the requested size.
//!
//! Layout, big-endian: publisher index (u32), sequence number (u64), send
//! time in nanoseconds since this process's clock epoch (u64), then zero
//! padding. Publishers and subscribers run in the same process, so one
//! monotonic clock serves both ends.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

/// Bytes of the stamp; the smallest payload a benchmark message can have.
pub const STAMP_LEN: usize = 20;

/// What a benchmark payload carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub publisher: u32,
    pub seq: u64,
    /// Nanoseconds since [`epoch`].
    pub sent_at_ns: u64,
}

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// The process-wide instant that payload timestamps count from.
pub fn epoch() -> Instant {
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds from [`epoch`] to `t` (0 for instants before it).
pub fn ns_since_epoch(t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX)
}

/// Nanoseconds since [`epoch`], now.
pub fn now_ns() -> u64 {
    ns_since_epoch(Instant::now())
}

impl Stamp {
    /// The payload of `size` bytes (at least [`STAMP_LEN`]) carrying this stamp.
    pub fn to_payload(self, size: usize) -> Bytes {
        let mut buf = BytesMut::with_capacity(size.max(STAMP_LEN));
        buf.put_u32(self.publisher);
        buf.put_u64(self.seq);
        buf.put_u64(self.sent_at_ns);
        buf.resize(size.max(STAMP_LEN), 0);
        buf.freeze()
    }

    /// Writes the stamp over the first [`STAMP_LEN`] bytes of `payload`
    /// (a prepared packet's payload, rewritten per message); does nothing
    /// to a shorter slice.
    pub fn write_into(self, payload: &mut [u8]) {
        if let Some(dst) = payload.get_mut(..STAMP_LEN) {
            dst[0..4].copy_from_slice(&self.publisher.to_be_bytes());
            dst[4..12].copy_from_slice(&self.seq.to_be_bytes());
            dst[12..20].copy_from_slice(&self.sent_at_ns.to_be_bytes());
        }
    }

    /// Reads the stamp at the front of a payload; `None` if it is too short.
    pub fn from_payload(payload: &[u8]) -> Option<Stamp> {
        let publisher = u32::from_be_bytes(payload.get(0..4)?.try_into().ok()?);
        let seq = u64::from_be_bytes(payload.get(4..12)?.try_into().ok()?);
        let sent_at_ns = u64::from_be_bytes(payload.get(12..20)?.try_into().ok()?);
        Some(Stamp {
            publisher,
            seq,
            sent_at_ns,
        })
    }

    /// Time from the send stamp to `received_at_ns` (zero if the clock
    /// readings are reversed, which one monotonic clock never does).
    pub fn latency(&self, received_at_ns: u64) -> Duration {
        Duration::from_nanos(received_at_ns.saturating_sub(self.sent_at_ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_padding() {
        let s = Stamp {
            publisher: 7,
            seq: 123_456_789_012,
            sent_at_ns: 42,
        };
        let p = s.to_payload(64);
        assert_eq!(p.len(), 64);
        assert_eq!(Stamp::from_payload(&p), Some(s));
        assert_eq!(s.to_payload(3).len(), STAMP_LEN);
    }

    #[test]
    fn stamp_written_in_place_reads_back() {
        let s = Stamp {
            publisher: 3,
            seq: 9,
            sent_at_ns: 77,
        };
        let mut buf = [0xffu8; 32];
        s.write_into(&mut buf);
        assert_eq!(Stamp::from_payload(&buf), Some(s));
        assert_eq!(buf[STAMP_LEN], 0xff);
        let mut short = [0u8; 4];
        s.write_into(&mut short);
        assert_eq!(short, [0; 4]);
    }

    #[test]
    fn short_payload_has_no_stamp() {
        assert_eq!(Stamp::from_payload(&[0; STAMP_LEN - 1]), None);
    }

    #[test]
    fn latency_from_stamp() {
        let s = Stamp {
            publisher: 0,
            seq: 0,
            sent_at_ns: 1_000,
        };
        assert_eq!(s.latency(251_000), Duration::from_micros(250));
        assert_eq!(s.latency(10), Duration::ZERO);
        let a = now_ns();
        assert!(now_ns() >= a);
    }
}
