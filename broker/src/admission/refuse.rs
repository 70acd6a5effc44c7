//! The cheap refusal of a connection above a connection limit: no
//! authentication, no session work. The first bytes of the CONNECT are
//! read (at most [`PEEK_BYTES`], under the refusal's deadline) only to
//! learn the protocol version, the CONNACK refusal is written in it
//! (0x97 quota exceeded for 5.0, 0x03 server unavailable for 3.1.x), and
//! the connection is closed gracefully, so the client reads the code
//! rather than a reset.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::codec::{connack_v3, encode, ConnAck, Packet, ProtocolVersion, ReasonCode};

/// Enough for the fixed header (5 bytes at most), the protocol name
/// (`MQIsdp`: 8 bytes with its length) and the level byte.
pub const PEEK_BYTES: usize = 16;
/// What the client still sends after the CONNACK is read and dropped, up
/// to this, so that closing does not reset the connection under it.
const DRAIN_BYTES: usize = 4096;

/// What the first bytes of a connection say.
#[derive(Debug, PartialEq, Eq)]
enum Peek {
    /// Not enough bytes yet.
    More,
    /// Not an MQTT CONNECT of a known version: closed without an answer.
    NotConnect,
    Version(ProtocolVersion),
}

/// Reads the protocol version from the start of a CONNECT packet.
fn peek_version(b: &[u8]) -> Peek {
    let Some((&first, mut rest)) = b.split_first() else {
        return Peek::More;
    };
    if first != 0x10 {
        return Peek::NotConnect;
    }
    // Remaining length: 1 to 4 bytes, the high bit says another follows.
    for i in 0..4 {
        let Some((&byte, after)) = rest.split_first() else {
            return Peek::More;
        };
        rest = after;
        if byte & 0x80 == 0 {
            break;
        }
        if i == 3 {
            return Peek::NotConnect;
        }
    }
    if rest.len() < 2 {
        return Peek::More;
    }
    let name_len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
    let Some(after_name) = rest.get(2 + name_len..) else {
        return if name_len <= 6 {
            Peek::More
        } else {
            Peek::NotConnect
        };
    };
    let Some(&level) = after_name.first() else {
        return Peek::More;
    };
    match (&rest[2..2 + name_len], level) {
        (b"MQIsdp", 3) => Peek::Version(ProtocolVersion::V31),
        (b"MQTT", 4) => Peek::Version(ProtocolVersion::V311),
        (b"MQTT", 5) => Peek::Version(ProtocolVersion::V5),
        _ => Peek::NotConnect,
    }
}

/// The refusal CONNACK for `version`: `v5` for MQTT 5.0, 0x03 server
/// unavailable for 3.1.x (which has no quota or rate codes).
fn refusal(version: ProtocolVersion, v5: ReasonCode) -> BytesMut {
    let code = if version.is_v5() {
        v5
    } else {
        ReasonCode(connack_v3::SERVER_UNAVAILABLE)
    };
    let ack = Packet::ConnAck(ConnAck {
        session_present: false,
        code,
        properties: Default::default(),
    });
    let mut buf = BytesMut::new();
    // A bare CONNACK always encodes; on the impossible failure the
    // connection is closed without it.
    let _ = encode(&ack, version, &mut buf);
    buf
}

/// Refuses the connection on `io` with `v5` (or 0x03 for 3.1.x) and
/// closes it. The caller bounds the time this takes.
pub async fn answer<S>(mut io: S, v5: ReasonCode)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut head = [0u8; PEEK_BYTES];
    let mut n = 0;
    let version = loop {
        match io.read(&mut head[n..]).await {
            Ok(0) | Err(_) => return,
            Ok(k) => n += k,
        }
        match peek_version(&head[..n]) {
            Peek::Version(v) => break v,
            Peek::NotConnect => return,
            Peek::More if n == PEEK_BYTES => return,
            Peek::More => {}
        }
    };
    let ack = refusal(version, v5);
    if io.write_all(&ack).await.is_err() || io.flush().await.is_err() {
        return;
    }
    let _ = io.shutdown().await;
    // The rest of the CONNECT is still unread: closing now would reset
    // the connection and could discard the CONNACK before the client
    // reads it. Read until the client closes (it does on the refusal).
    let mut sink = [0u8; 512];
    let mut drained = 0;
    while drained < DRAIN_BYTES {
        match io.read(&mut sink).await {
            Ok(0) | Err(_) => return,
            Ok(k) => drained += k,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect(name: &[u8], level: u8) -> Vec<u8> {
        let mut body = (name.len() as u16).to_be_bytes().to_vec();
        body.extend_from_slice(name);
        body.extend_from_slice(&[level, 0x02, 0, 60, 0, 1, b'x']);
        let mut out = vec![0x10, body.len() as u8];
        out.extend(body);
        out
    }

    #[test]
    fn the_version_is_read_from_the_first_bytes() {
        let v5 = connect(b"MQTT", 5);
        for cut in 0..9 {
            assert_eq!(peek_version(&v5[..cut]), Peek::More, "{cut}");
        }
        assert_eq!(peek_version(&v5), Peek::Version(ProtocolVersion::V5));
        assert_eq!(
            peek_version(&connect(b"MQTT", 4)),
            Peek::Version(ProtocolVersion::V311)
        );
        assert_eq!(
            peek_version(&connect(b"MQIsdp", 3)),
            Peek::Version(ProtocolVersion::V31)
        );
        assert_eq!(peek_version(&connect(b"MQTT", 9)), Peek::NotConnect);
        assert_eq!(peek_version(b"GET / HTTP/1.1\r\n"), Peek::NotConnect);
        assert_eq!(
            peek_version(&[0x10, 0xff, 0xff, 0xff, 0xff]),
            Peek::NotConnect
        );
        assert_eq!(peek_version(&[0x10, 5, 0, 200]), Peek::NotConnect);
        // A four-byte remaining length is fine.
        let mut long = vec![0x10, 0x80, 0x80, 0x80, 0x01];
        long.extend_from_slice(&connect(b"MQTT", 5)[2..]);
        assert_eq!(peek_version(&long), Peek::Version(ProtocolVersion::V5));
    }

    #[test]
    fn refusals_carry_the_version_s_code() {
        let v5 = refusal(ProtocolVersion::V5, ReasonCode::QUOTA_EXCEEDED);
        assert_eq!(&v5[..], &[0x20, 3, 0, 0x97, 0]);
        let v3 = refusal(ProtocolVersion::V311, ReasonCode::QUOTA_EXCEEDED);
        assert_eq!(&v3[..], &[0x20, 2, 0, 0x03]);
    }
}
