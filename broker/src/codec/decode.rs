//! Bytes to packets. STUB: the codec helper replaces the bodies.

use bytes::BytesMut;

use super::error::DecodeError;
use super::packet::{Packet, ProtocolVersion};

/// Default maximum packet size accepted from a peer, in bytes (the
/// protocol's own limit is 268,435,460).
pub const DEFAULT_MAX_PACKET_SIZE: u32 = 1024 * 1024;

/// A stateful decoder for one connection's byte stream.
///
/// Before CONNECT it accepts only CONNECT; after a CONNECT is decoded it
/// remembers the protocol version and decodes the rest accordingly.
#[derive(Debug, Clone)]
pub struct Decoder {
    version: Option<ProtocolVersion>,
    max_packet_size: u32,
}

impl Decoder {
    /// `max_packet_size` bounds the whole packet (fixed header included).
    pub fn new(max_packet_size: u32) -> Self {
        Decoder {
            version: None,
            max_packet_size,
        }
    }

    pub fn version(&self) -> Option<ProtocolVersion> {
        self.version
    }

    /// Decodes one packet from the front of `buf` and advances past it.
    /// `Ok(None)`: more bytes are needed (nothing consumed).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Packet>, DecodeError> {
        let (packet, used) = match decode(buf, self.version, self.max_packet_size)? {
            Some(x) => x,
            None => return Ok(None),
        };
        let _ = buf.split_to(used);
        if let Packet::Connect(c) = &packet {
            self.version = Some(c.protocol);
        }
        Ok(Some(packet))
    }
}

/// Decodes one packet from the front of `buf`; returns it and the number of
/// bytes it used, or `Ok(None)` when `buf` does not yet hold a whole packet.
/// `version` is `None` until CONNECT has been received.
pub fn decode(
    buf: &[u8],
    version: Option<ProtocolVersion>,
    max_packet_size: u32,
) -> Result<Option<(Packet, usize)>, DecodeError> {
    let _ = (buf, version, max_packet_size);
    todo!("codec helper")
}
