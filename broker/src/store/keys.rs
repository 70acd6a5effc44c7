//! The keys of stored records.
//!
//! Every per-session record's key starts with the client id, length
//! first (`u16` big-endian, then its bytes), so one prefix scan finds all
//! of a session's records of a kind, and no client id is a prefix of
//! another's records. Queued messages follow with a `u64` big-endian
//! sequence number (so they sort in delivery order), subscriptions with
//! the filter, incoming QoS 2 ids with the `u16` packet id. Retained
//! messages are keyed by their topic.

use crate::types::PacketId;

/// The prefix of every record of `client`.
pub fn client(client: &str) -> Vec<u8> {
    let bytes = client.as_bytes();
    // The codec bounds a client id to 65,535 bytes.
    let len = bytes.len().min(usize::from(u16::MAX));
    let mut key = Vec::with_capacity(2 + len + 8);
    key.extend_from_slice(&(len as u16).to_be_bytes());
    key.extend_from_slice(&bytes[..len]);
    key
}

pub fn queued(client_id: &str, seq: u64) -> Vec<u8> {
    let mut key = client(client_id);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

pub fn subscription(client_id: &str, filter: &str) -> Vec<u8> {
    let mut key = client(client_id);
    key.extend_from_slice(filter.as_bytes());
    key
}

pub fn qos2(client_id: &str, id: PacketId) -> Vec<u8> {
    let mut key = client(client_id);
    key.extend_from_slice(&id.get().to_be_bytes());
    key
}

/// Splits a per-session key into the client id and what follows it.
pub fn split(key: &[u8]) -> Option<(&str, &[u8])> {
    let len = usize::from(u16::from_be_bytes([*key.first()?, *key.get(1)?]));
    let id = key.get(2..2 + len)?;
    let rest = key.get(2 + len..)?;
    Some((std::str::from_utf8(id).ok()?, rest))
}

/// The sequence number of a queued-message key's suffix.
pub fn seq_of(rest: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(rest.try_into().ok()?))
}

/// The packet id of an incoming QoS 2 key's suffix.
pub fn packet_id_of(rest: &[u8]) -> Option<PacketId> {
    let id = u16::from_be_bytes(rest.try_into().ok()?);
    PacketId::new(id).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_back_and_sort_by_client_then_sequence() {
        let k = queued("c1", 7);
        let (id, rest) = split(&k).unwrap();
        assert_eq!((id, seq_of(rest)), ("c1", Some(7)));
        assert!(queued("c1", 7) < queued("c1", 256));
        // "c" is not a prefix of "c1"'s records.
        assert!(!queued("c1", 0).starts_with(&client("c")));
        let s = subscription("c", "a/#");
        assert_eq!(split(&s).unwrap(), ("c", &b"a/#"[..]));
        assert!(split(&[0, 5, b'a']).is_none());
    }
}
