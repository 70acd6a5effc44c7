//! Bytes to packets: framing (fixed header, remaining length, size limit)
//! and dispatch to the per-packet body decoders in `decode_body`.
//!
//! Everything the first byte can tell (packet type allowed before CONNECT,
//! reserved types, header flags) and the size limit are checked before the
//! body arrives, so an oversized or bogus packet is refused without
//! buffering it.

use bytes::{Buf, Bytes, BytesMut};

use super::decode_body;
use super::error::DecodeError;
use super::packet::{Packet, ProtocolVersion};
use super::wire::{kind, parse_varint};

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
    /// `Ok(None)`: more bytes are needed (nothing consumed; `buf` has been
    /// given room for the rest of the packet).
    ///
    /// The packet is split off `buf` without copying, so binary fields and
    /// the PUBLISH payload are slices of the read buffer.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Packet>, DecodeError> {
        let Some(frame) = Frame::parse(buf, self.version, self.max_packet_size)? else {
            return Ok(None);
        };
        if buf.len() < frame.size() {
            buf.reserve(frame.size() - buf.len());
            return Ok(None);
        }
        buf.advance(frame.header_len);
        let body = buf.split_to(frame.remaining).freeze();
        let packet = decode_body::decode(frame.first_byte, &body, self.version)?;
        if let Packet::Connect(c) = &packet {
            self.version = Some(c.protocol);
        }
        Ok(Some(packet))
    }
}

/// Decodes one packet from the front of `buf`; returns it and the number of
/// bytes it used, or `Ok(None)` when `buf` does not yet hold a whole packet.
/// `version` is `None` until CONNECT has been received.
///
/// Binary fields are copied out of `buf`; [`Decoder::decode`] is the
/// zero-copy path.
pub fn decode(
    buf: &[u8],
    version: Option<ProtocolVersion>,
    max_packet_size: u32,
) -> Result<Option<(Packet, usize)>, DecodeError> {
    let Some(frame) = Frame::parse(buf, version, max_packet_size)? else {
        return Ok(None);
    };
    let Some(body) = buf.get(frame.header_len..frame.size()) else {
        return Ok(None);
    };
    let body = Bytes::copy_from_slice(body);
    let packet = decode_body::decode(frame.first_byte, &body, version)?;
    Ok(Some((packet, frame.size())))
}

/// A parsed fixed header.
struct Frame {
    first_byte: u8,
    header_len: usize,
    remaining: usize,
}

impl Frame {
    /// Parses and checks the fixed header; `Ok(None)` if incomplete.
    fn parse(
        buf: &[u8],
        version: Option<ProtocolVersion>,
        max_packet_size: u32,
    ) -> Result<Option<Frame>, DecodeError> {
        let Some(&first_byte) = buf.first() else {
            return Ok(None);
        };
        check_first_byte(first_byte, version)?;
        let Some((remaining, len)) = parse_varint(buf.get(1..).unwrap_or_default())? else {
            return Ok(None);
        };
        let frame = Frame {
            first_byte,
            header_len: 1 + len,
            remaining: remaining as usize,
        };
        if frame.size() > max_packet_size as usize {
            return Err(DecodeError::PacketTooLarge {
                size: frame.size(),
                max: max_packet_size,
            });
        }
        Ok(Some(frame))
    }

    fn size(&self) -> usize {
        self.header_len + self.remaining
    }
}

/// Checks the packet type and its fixed header flags.
fn check_first_byte(byte: u8, version: Option<ProtocolVersion>) -> Result<(), DecodeError> {
    let packet_type = byte >> 4;
    let flags = byte & 0x0F;
    let Some(version) = version else {
        if packet_type != kind::CONNECT {
            return Err(DecodeError::FirstPacketNotConnect { packet_type });
        }
        return check_flags(packet_type, flags, 0);
    };
    match packet_type {
        0 => Err(DecodeError::ReservedPacketType { packet_type }),
        kind::AUTH if !version.is_v5() => Err(DecodeError::ReservedPacketType { packet_type }),
        kind::PUBLISH => {
            let qos = (flags >> 1) & 0b11;
            if qos == 3 {
                Err(DecodeError::InvalidPublishQoS)
            } else if qos == 0 && flags & 0b1000 != 0 {
                Err(DecodeError::DupWithQoS0)
            } else {
                Ok(())
            }
        }
        kind::PUBREL | kind::SUBSCRIBE | kind::UNSUBSCRIBE => {
            check_flags(packet_type, flags, 0b0010)
        }
        _ => check_flags(packet_type, flags, 0),
    }
}

fn check_flags(packet_type: u8, flags: u8, expected: u8) -> Result<(), DecodeError> {
    if flags == expected {
        Ok(())
    } else {
        Err(DecodeError::InvalidHeaderFlags { packet_type, flags })
    }
}
