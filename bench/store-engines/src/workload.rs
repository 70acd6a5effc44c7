//! The broker's key layout and record shapes, as the storage work on `main` lays them out.
//!
//! - `sessions`: client id bytes → a ~100-byte session record.
//! - `queue`: u16 BE client id length, client id, u64 BE sequence → a message record
//!   (~20-byte header, ~30-byte topic, payload). The length prefix keeps one client's keys
//!   contiguous and makes "every message of client X" a prefix scan.
//! - `retained`: topic → message record.

/// Size of a session record (expiry, subscriptions summary, will flag, ...).
pub const SESSION_RECORD_BYTES: usize = 100;
/// Fixed header of a message record: flags, QoS, packet id, expiry, sequence, lengths.
pub const HEADER_BYTES: usize = 20;

/// The three tables (fjall keyspaces, redb tables) the broker keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    Sessions,
    Queue,
    Retained,
}

impl Table {
    pub fn name(self) -> &'static str {
        match self {
            Table::Sessions => "sessions",
            Table::Queue => "queue",
            Table::Retained => "retained",
        }
    }
}

/// One write inside an atomic group.
pub enum Op {
    Put(Table, Vec<u8>, Vec<u8>),
    Delete(Table, Vec<u8>),
}

/// A client id of a fixed width so every session has the same key size (~13 bytes, like
/// typical generated ids).
pub fn client_id(session: u64) -> Vec<u8> {
    format!("client-{session:06}").into_bytes()
}

/// The `queue` key prefix shared by all of one client's messages.
pub fn queue_prefix(client_id: &[u8]) -> Vec<u8> {
    let len = u16::try_from(client_id.len()).unwrap_or(u16::MAX);
    let mut key = Vec::with_capacity(2 + client_id.len() + 8);
    key.extend_from_slice(&len.to_be_bytes());
    key.extend_from_slice(client_id);
    key
}

pub fn queue_key(client_id: &[u8], seq: u64) -> Vec<u8> {
    let mut key = queue_prefix(client_id);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The sequence number at the end of a `queue` key.
pub fn queue_key_seq(key: &[u8]) -> Option<u64> {
    let tail: [u8; 8] = key.get(key.len().checked_sub(8)?..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

pub fn session_record(session: u64) -> Vec<u8> {
    let mut rec = vec![0u8; SESSION_RECORD_BYTES];
    fill(&mut rec, session);
    rec
}

/// A 30-byte topic; topics of one session share a prefix, as real topic trees do.
pub fn topic(session: u64, seq: u64) -> Vec<u8> {
    let mut t = format!("sensors/{session:06}/value/{:08}", seq % 100_000_000).into_bytes();
    t.resize(30, b'x');
    t
}

/// A message record: header (with the packet id and "sent" flag the overwrite sets), topic,
/// payload. The payload is pseudo-random, so LZ4 in fjall gains nothing on it, as on
/// typical sensor or JSON-with-ids payloads it gains little.
pub fn message_record(
    session: u64,
    seq: u64,
    payload_bytes: usize,
    packet_id: u16,
    sent: bool,
) -> Vec<u8> {
    let topic = topic(session, seq);
    let mut rec = Vec::with_capacity(HEADER_BYTES + topic.len() + payload_bytes);
    rec.push(u8::from(sent)); // flags
    rec.push(1); // QoS
    rec.extend_from_slice(&packet_id.to_be_bytes());
    rec.extend_from_slice(&0u64.to_be_bytes()); // expiry (none)
    rec.extend_from_slice(&seq.to_be_bytes()[4..]); // low half of the sequence, for checks
    rec.extend_from_slice(&u16::try_from(topic.len()).unwrap_or(u16::MAX).to_be_bytes());
    rec.extend_from_slice(
        &u16::try_from(payload_bytes)
            .unwrap_or(u16::MAX)
            .to_be_bytes(),
    );
    debug_assert_eq!(rec.len(), HEADER_BYTES);
    rec.extend_from_slice(&topic);
    let start = rec.len();
    rec.resize(start + payload_bytes, 0);
    fill(&mut rec[start..], (session << 32) ^ seq);
    rec
}

/// Fills `buf` with splitmix64 bytes from `seed` (deterministic, incompressible; nearby seeds
/// give unrelated bytes).
fn fill(buf: &mut [u8], seed: u64) {
    let mut state = seed;
    for chunk in buf.chunks_mut(8) {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_keys_of_one_client_share_the_prefix_and_sort_by_sequence() {
        let id = client_id(7);
        let a = queue_key(&id, 1);
        let b = queue_key(&id, 256);
        assert!(a.starts_with(&queue_prefix(&id)));
        assert!(a < b);
        assert_eq!(queue_key_seq(&b), Some(256));
    }

    #[test]
    fn a_message_record_is_header_topic_payload() {
        let rec = message_record(3, 9, 100, 0, false);
        assert_eq!(rec.len(), HEADER_BYTES + 30 + 100);
        assert_eq!(session_record(1).len(), SESSION_RECORD_BYTES);
    }
}
