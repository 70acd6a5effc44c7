//! Frame splitting and a copy-free PUBLISH reader for the receive hot path.
//!
//! A subscriber only needs a PUBLISH's QoS, packet id and payload stamp, so
//! it reads them in place instead of building a full packet (topic and
//! payload copies) for every message. Every other packet goes through the
//! broker's own codec.

/// Why bytes from the broker are not a frame we can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("malformed remaining length")]
    BadLength,
    #[error("frame of {0} bytes exceeds the maximum accepted")]
    TooLarge(usize),
    #[error("malformed PUBLISH: {0}")]
    BadPublish(&'static str),
}

/// The packet type of a PUBLISH in the fixed header's high nibble.
pub const PUBLISH_TYPE: u8 = 3;

/// The length of the first complete frame of `buf` (fixed header
/// included), or `None` if `buf` does not hold it all yet.
pub fn frame_len(buf: &[u8], max: usize) -> Result<Option<usize>, FrameError> {
    let mut remaining: usize = 0;
    for i in 0..4 {
        let Some(&b) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let total = 1 + (i + 1) + remaining;
            if total > max {
                return Err(FrameError::TooLarge(total));
            }
            return Ok((buf.len() >= total).then_some(total));
        }
    }
    Err(FrameError::BadLength)
}

/// The parts of a PUBLISH a benchmark subscriber uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishView<'a> {
    pub qos: u8,
    pub packet_id: Option<u16>,
    pub payload: &'a [u8],
}

/// Reads a whole PUBLISH frame (as delimited by [`frame_len`]) in place.
/// `v5` says whether a properties block follows the packet id.
pub fn parse_publish(frame: &[u8], v5: bool) -> Result<PublishView<'_>, FrameError> {
    let first = *frame.first().ok_or(FrameError::BadPublish("empty"))?;
    if first >> 4 != PUBLISH_TYPE {
        return Err(FrameError::BadPublish("not a PUBLISH"));
    }
    let qos = (first >> 1) & 0x03;
    if qos == 3 {
        return Err(FrameError::BadPublish("QoS 3"));
    }
    let header_len = 1 + frame[1..]
        .iter()
        .position(|b| b & 0x80 == 0)
        .map(|p| p + 1)
        .ok_or(FrameError::BadLength)?;
    let body = &frame[header_len..];
    let topic_len = usize::from(read_u16(body, 0)?);
    let mut pos = 2 + topic_len;
    let packet_id = if qos > 0 {
        let id = read_u16(body, pos)?;
        pos += 2;
        Some(id)
    } else {
        None
    };
    if v5 {
        let (props_len, used) = read_varint(body.get(pos..).unwrap_or_default())?;
        pos += used + props_len;
    }
    let payload = body.get(pos..).ok_or(FrameError::BadPublish("truncated"))?;
    Ok(PublishView {
        qos,
        packet_id,
        payload,
    })
}

fn read_u16(buf: &[u8], at: usize) -> Result<u16, FrameError> {
    match buf.get(at..at + 2) {
        Some(b) => Ok(u16::from_be_bytes([b[0], b[1]])),
        None => Err(FrameError::BadPublish("truncated")),
    }
}

/// A variable byte integer: its value and how many bytes it took.
fn read_varint(buf: &[u8]) -> Result<(usize, usize), FrameError> {
    let mut value = 0usize;
    for (i, &b) in buf.iter().take(4).enumerate() {
        value |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    Err(FrameError::BadPublish("bad property length"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-built 3.1.1 PUBLISH, QoS 1, topic "a/b", id 0x0102.
    const QOS1: &[u8] = &[0x32, 10, 0, 3, b'a', b'/', b'b', 1, 2, b'x', b'y', b'z'];

    #[test]
    fn frame_length_complete_and_partial() {
        assert_eq!(frame_len(QOS1, 1024), Ok(Some(12)));
        assert_eq!(frame_len(&QOS1[..5], 1024), Ok(None));
        assert_eq!(frame_len(&QOS1[..1], 1024), Ok(None));
        assert_eq!(frame_len(&[0xd0, 0], 1024), Ok(Some(2)));
        // Two-byte remaining length: 200 = 0xC8 0x01.
        assert_eq!(frame_len(&[0x30, 0xc8, 0x01], 1024), Ok(None));
        assert_eq!(
            frame_len(&[0x30, 0xc8, 0x01], 100),
            Err(FrameError::TooLarge(203))
        );
        assert_eq!(
            frame_len(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01], usize::MAX),
            Err(FrameError::BadLength)
        );
    }

    #[test]
    fn publish_qos1() {
        let v = parse_publish(QOS1, false);
        assert_eq!(
            v,
            Ok(PublishView {
                qos: 1,
                packet_id: Some(0x0102),
                payload: b"xyz",
            })
        );
    }

    #[test]
    fn publish_qos0_and_v5_properties() {
        let qos0 = [0x30, 6, 0, 1, b't', b'p', b'a', b'y'];
        let v = parse_publish(&qos0, false).map(|v| (v.qos, v.packet_id, v.payload));
        assert_eq!(v, Ok((0, None, &b"pay"[..])));
        // v5, QoS 2, one property (payload format indicator = 1).
        let v5 = [0x34, 9, 0, 1, b't', 0, 9, 2, 0x01, 0x01, b'p'];
        let v = parse_publish(&v5, true).map(|v| (v.qos, v.packet_id, v.payload));
        assert_eq!(v, Ok((2, Some(9), &b"p"[..])));
    }

    #[test]
    fn malformed_publish() {
        assert!(parse_publish(&[0x36, 0], false).is_err());
        assert!(parse_publish(&[0x20, 2, 0, 0], false).is_err());
        assert!(parse_publish(&[0x32, 3, 0, 5, b'a'], false).is_err());
        assert!(parse_publish(&[0x30, 2, 0], false).is_err());
    }
}
