//! Shared bodies of the fuzz targets: the decoder loop here, the
//! broker-in-process scenario in [`connection`].

pub mod connection;

use bytes::BytesMut;
use mqttd::codec::{decode, encode, ProtocolVersion, DEFAULT_MAX_PACKET_SIZE};

/// Decodes packets from `data` back to back as a connection speaking
/// `version` would, until the bytes run out or one is refused. Every packet
/// that decodes must re-encode to bytes that decode to the same packet.
/// Panics (a fuzz finding) otherwise.
pub fn decode_loop(data: &[u8], version: ProtocolVersion) {
    let mut rest = data;
    loop {
        match decode(rest, Some(version), DEFAULT_MAX_PACKET_SIZE) {
            Ok(Some((packet, used))) => {
                assert!(used > 0 && used <= rest.len(), "bad length {used}");
                let mut buf = BytesMut::new();
                // A CONNECT is encoded in its own protocol version.
                encode(&packet, version, &mut buf).expect("a decoded packet re-encodes");
                let again = decode(&buf, Some(version), u32::MAX);
                assert_eq!(again, Ok(Some((packet, buf.len()))));
                rest = &rest[used..];
            }
            Ok(None) => return,
            Err(e) => {
                assert!(e.reason_code().is_error());
                return;
            }
        }
    }
}
