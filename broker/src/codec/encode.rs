//! Packets to bytes. STUB: the codec helper replaces the bodies.

use bytes::BytesMut;

use super::error::EncodeError;
use super::packet::{Packet, ProtocolVersion};

/// Appends the encoding of `packet` for a peer speaking `version` to `buf`.
/// Fields the version does not have (properties, reason codes before 5.0)
/// are left out.
pub fn encode(
    packet: &Packet,
    version: ProtocolVersion,
    buf: &mut BytesMut,
) -> Result<(), EncodeError> {
    let _ = (packet, version, buf);
    todo!("codec helper")
}
