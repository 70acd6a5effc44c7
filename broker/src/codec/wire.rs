//! The protocol's primitive data types (MQTT 5.0 section 1.5): integers,
//! variable byte integers, UTF-8 strings and binary data, read from a
//! packet body ([`Reader`]) and appended to an output buffer (`put_*`).
//!
//! The reader never panics: every access is bounds-checked and a field that
//! runs past the end is [`DecodeError::UnexpectedEnd`].

use bytes::{BufMut, Bytes, BytesMut};

use super::error::{DecodeError, EncodeError};

/// Control packet types (the high nibble of the first byte).
pub mod kind {
    pub const CONNECT: u8 = 1;
    pub const CONNACK: u8 = 2;
    pub const PUBLISH: u8 = 3;
    pub const PUBACK: u8 = 4;
    pub const PUBREC: u8 = 5;
    pub const PUBREL: u8 = 6;
    pub const PUBCOMP: u8 = 7;
    pub const SUBSCRIBE: u8 = 8;
    pub const SUBACK: u8 = 9;
    pub const UNSUBSCRIBE: u8 = 10;
    pub const UNSUBACK: u8 = 11;
    pub const PINGREQ: u8 = 12;
    pub const PINGRESP: u8 = 13;
    pub const DISCONNECT: u8 = 14;
    pub const AUTH: u8 = 15;
}

/// The largest value a variable byte integer holds (4 bytes).
pub const MAX_VARINT: u32 = 268_435_455;

/// Parses a variable byte integer at the front of `buf`: `Ok(None)` if
/// `buf` ends before its last byte. Rejects encodings longer than 4 bytes
/// and non-minimal ones [MQTT-1.5.5-1].
pub fn parse_varint(buf: &[u8]) -> Result<Option<(u32, usize)>, DecodeError> {
    let mut value: u32 = 0;
    for (i, &byte) in buf.iter().take(4).enumerate() {
        value |= u32::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            // A multi-byte encoding ending in 0x00 had a shorter form.
            if i > 0 && byte == 0 {
                return Err(DecodeError::MalformedVarInt);
            }
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= 4 {
        Err(DecodeError::MalformedVarInt)
    } else {
        Ok(None)
    }
}

/// Cursor over one packet's body (or a property block inside it).
pub struct Reader<'a> {
    src: &'a Bytes,
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    pub fn new(src: &'a Bytes) -> Self {
        Reader {
            src,
            pos: 0,
            end: src.len(),
        }
    }

    pub fn remaining(&self) -> usize {
        self.end - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.end
    }

    /// Fails with [`DecodeError::TrailingBytes`] unless everything was read.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }

    fn advance(&mut self, n: usize) -> Result<usize, DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::UnexpectedEnd);
        }
        let start = self.pos;
        self.pos += n;
        Ok(start)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let start = self.advance(n)?;
        let src: &'a Bytes = self.src;
        src.get(start..start + n).ok_or(DecodeError::UnexpectedEnd)
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = self.take(1)?;
        b.first().copied().ok_or(DecodeError::UnexpectedEnd)
    }

    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        match *self.take(2)? {
            [a, b] => Ok(u16::from_be_bytes([a, b])),
            _ => Err(DecodeError::UnexpectedEnd),
        }
    }

    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        match *self.take(4)? {
            [a, b, c, d] => Ok(u32::from_be_bytes([a, b, c, d])),
            _ => Err(DecodeError::UnexpectedEnd),
        }
    }

    pub fn varint(&mut self) -> Result<u32, DecodeError> {
        let rest = self.src.get(self.pos..self.end).unwrap_or_default();
        let (value, used) = parse_varint(rest)?.ok_or(DecodeError::UnexpectedEnd)?;
        self.pos += used;
        Ok(value)
    }

    /// `n` bytes as a zero-copy slice of the packet.
    pub fn bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        let start = self.advance(n)?;
        Ok(self.src.slice(start..start + n))
    }

    /// Everything left, zero-copy (the PUBLISH payload).
    pub fn rest(&mut self) -> Bytes {
        let start = self.pos;
        self.pos = self.end;
        self.src.slice(start..self.end)
    }

    /// Raw bytes of a length-prefixed field, not validated.
    pub fn prefixed(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// Binary Data: two-byte length then that many bytes.
    pub fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u16()?;
        self.bytes(usize::from(len))
    }

    /// UTF-8 Encoded String, well-formed and without U+0000
    /// [MQTT-1.5.3-1], [MQTT-1.5.3-2].
    pub fn str(&mut self) -> Result<&'a str, DecodeError> {
        let raw = self.prefixed()?;
        if raw.contains(&0) {
            return Err(DecodeError::NullCharacter);
        }
        std::str::from_utf8(raw).map_err(|_| DecodeError::InvalidUtf8)
    }

    pub fn string(&mut self) -> Result<String, DecodeError> {
        self.str().map(String::from)
    }

    /// Splits off the next `len` bytes as their own reader (a property
    /// block); this reader continues after them.
    pub fn sub(&mut self, len: usize) -> Result<Reader<'a>, DecodeError> {
        let start = self.advance(len)?;
        Ok(Reader {
            src: self.src,
            pos: start,
            end: start + len,
        })
    }
}

/// Bytes a variable byte integer takes on the wire.
pub fn varint_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Appends a variable byte integer; `value` must be at most [`MAX_VARINT`].
pub fn put_varint(buf: &mut BytesMut, value: usize) -> Result<(), EncodeError> {
    if value > MAX_VARINT as usize {
        return Err(EncodeError::TooLarge(value));
    }
    let mut v = value;
    loop {
        // Truncation intended: the low 7 bits.
        let mut byte = (v & 0x7F) as u8;
        v >>= 7;
        if v > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if v == 0 {
            return Ok(());
        }
    }
}

/// Wire length of a length-prefixed field, checking the 65,535 limit.
pub fn prefixed_len(len: usize) -> Result<usize, EncodeError> {
    if len > usize::from(u16::MAX) {
        Err(EncodeError::FieldTooLong(len))
    } else {
        Ok(2 + len)
    }
}

/// Appends a length-prefixed field (UTF-8 string or binary data).
pub fn put_prefixed(buf: &mut BytesMut, data: &[u8]) -> Result<(), EncodeError> {
    let len = u16::try_from(data.len()).map_err(|_| EncodeError::FieldTooLong(data.len()))?;
    buf.put_u16(len);
    buf.put_slice(data);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_the_boundaries() {
        for v in [
            0,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            268_435_455,
        ] {
            let mut buf = BytesMut::new();
            put_varint(&mut buf, v).unwrap();
            assert_eq!(buf.len(), varint_len(v));
            assert_eq!(parse_varint(&buf), Ok(Some((v as u32, buf.len()))));
        }
        let mut buf = BytesMut::new();
        assert_eq!(
            put_varint(&mut buf, 268_435_456),
            Err(EncodeError::TooLarge(268_435_456))
        );
    }

    #[test]
    fn varint_errors() {
        assert_eq!(parse_varint(&[0x80, 0x80, 0x80]), Ok(None));
        assert_eq!(parse_varint(&[]), Ok(None));
        assert_eq!(
            parse_varint(&[0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
            Err(DecodeError::MalformedVarInt)
        );
        assert_eq!(
            parse_varint(&[0x80, 0x00]),
            Err(DecodeError::MalformedVarInt)
        );
    }

    #[test]
    fn strings_are_validated() {
        let b = Bytes::from_static(&[0, 2, b'a', 0]);
        assert_eq!(Reader::new(&b).str(), Err(DecodeError::NullCharacter));
        // An encoded surrogate (U+D800) is not well-formed UTF-8.
        let b = Bytes::from_static(&[0, 3, 0xED, 0xA0, 0x80]);
        assert_eq!(Reader::new(&b).str(), Err(DecodeError::InvalidUtf8));
        let b = Bytes::from_static(&[0, 3, b'a']);
        assert_eq!(Reader::new(&b).str(), Err(DecodeError::UnexpectedEnd));
    }

    #[test]
    fn sub_reader_is_bounded() {
        let b = Bytes::from_static(&[1, 2, 3, 4]);
        let mut r = Reader::new(&b);
        let mut s = r.sub(2).unwrap();
        assert_eq!(s.u16(), Ok(0x0102));
        assert_eq!(s.u8(), Err(DecodeError::UnexpectedEnd));
        assert_eq!(r.remaining(), 2);
        assert!(r.sub(3).is_err());
    }
}
