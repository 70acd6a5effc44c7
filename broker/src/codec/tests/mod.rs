//! Codec tests: known byte vectors from the specs (`vectors_v3`,
//! `vectors_v5`), malformed input with the exact error (`malformed`,
//! `malformed_v5`), the streaming [`Decoder`](super::Decoder) (`decoder`)
//! and property tests (`roundtrip`).

mod decoder;
mod malformed;
mod malformed_v5;
mod roundtrip;
mod vectors_v3;
mod vectors_v5;

use bytes::BytesMut;

use super::*;
use crate::types::{PacketId, TopicFilter, TopicName};

pub const V31: ProtocolVersion = ProtocolVersion::V31;
pub const V311: ProtocolVersion = ProtocolVersion::V311;
pub const V5: ProtocolVersion = ProtocolVersion::V5;

/// Decodes exactly one whole packet from `bytes`.
pub fn dec(bytes: &[u8], version: Option<ProtocolVersion>) -> Result<Packet, DecodeError> {
    match decode(bytes, version, DEFAULT_MAX_PACKET_SIZE)? {
        Some((packet, used)) => {
            assert_eq!(used, bytes.len(), "decoder left bytes over");
            Ok(packet)
        }
        None => panic!("decoder asked for more bytes"),
    }
}

pub fn enc(packet: &Packet, version: ProtocolVersion) -> Vec<u8> {
    let mut buf = BytesMut::new();
    encode(packet, version, &mut buf).expect("encodable");
    buf.to_vec()
}

/// `bytes` decode to `packet` for `version`, and `packet` encodes to them.
pub fn both_ways(bytes: &[u8], version: ProtocolVersion, packet: Packet) {
    assert_eq!(dec(bytes, Some(version)), Ok(packet.clone()));
    assert_eq!(enc(&packet, version), bytes);
}

pub fn topic(s: &str) -> TopicName {
    TopicName::new(s).unwrap()
}

pub fn filter(s: &str) -> TopicFilter {
    TopicFilter::new(s).unwrap()
}

pub fn pid(v: u16) -> PacketId {
    PacketId::new(v).unwrap()
}
