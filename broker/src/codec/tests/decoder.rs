//! The stateful [`Decoder`] over a connection's `BytesMut`.

use bytes::BufMut;

use super::*;

const CONNECT_V5: [u8; 15] = [
    0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3C, 0x00, 0x00, 0x00,
];

#[test]
fn learns_the_version_from_connect() {
    let mut d = Decoder::new(DEFAULT_MAX_PACKET_SIZE);
    assert_eq!(d.version(), None);
    let mut buf = BytesMut::from(&CONNECT_V5[..]);
    // A 5.0 DISCONNECT with a reason code follows in the same read.
    buf.put_slice(&[0xE0, 0x01, 0x04]);
    assert!(matches!(d.decode(&mut buf), Ok(Some(Packet::Connect(_)))));
    assert_eq!(d.version(), Some(V5));
    match d.decode(&mut buf) {
        Ok(Some(Packet::Disconnect(x))) => assert_eq!(x.code, ReasonCode::DISCONNECT_WITH_WILL),
        other => panic!("{other:?}"),
    }
    assert!(buf.is_empty());
    assert_eq!(d.decode(&mut buf), Ok(None));
}

#[test]
fn only_connect_before_connect() {
    let mut d = Decoder::new(DEFAULT_MAX_PACKET_SIZE);
    let mut buf = BytesMut::from(&[0x82u8][..]);
    assert_eq!(
        d.decode(&mut buf),
        Err(DecodeError::FirstPacketNotConnect { packet_type: 8 })
    );
}

#[test]
fn partial_packets_consume_nothing() {
    let mut d = Decoder::new(DEFAULT_MAX_PACKET_SIZE);
    let mut buf = BytesMut::new();
    for (i, &b) in CONNECT_V5.iter().enumerate() {
        assert_eq!(d.decode(&mut buf), Ok(None), "after {i} bytes");
        assert_eq!(buf.len(), i);
        buf.put_u8(b);
    }
    assert!(matches!(d.decode(&mut buf), Ok(Some(Packet::Connect(_)))));
}

#[test]
fn waiting_reserves_room_for_the_packet() {
    let mut d = Decoder::new(DEFAULT_MAX_PACKET_SIZE);
    let mut buf = BytesMut::from(&[0x10u8, 0xE8, 0x07][..]);
    assert_eq!(d.decode(&mut buf), Ok(None));
    assert!(buf.capacity() >= 1003);
}

#[test]
fn too_large_is_refused_before_the_body() {
    let mut d = Decoder::new(100);
    let mut buf = BytesMut::from(&[0x10u8, 0x80, 0x01][..]);
    assert_eq!(
        d.decode(&mut buf),
        Err(DecodeError::PacketTooLarge {
            size: 131,
            max: 100
        })
    );
}

#[test]
fn payload_is_a_slice_of_the_read_buffer() {
    let mut d = Decoder::new(DEFAULT_MAX_PACKET_SIZE);
    let mut buf = BytesMut::with_capacity(64);
    buf.put_slice(&CONNECT_V5);
    buf.put_slice(&[0x30, 0x08, 0x00, 0x01, b't', 0x00, b'a', b'b', b'c', b'd']);
    let region = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
    d.decode(&mut buf).unwrap();
    match d.decode(&mut buf) {
        Ok(Some(Packet::Publish(p))) => {
            assert_eq!(&p.payload[..], b"abcd");
            assert!(
                region.contains(&(p.payload.as_ptr() as usize)),
                "payload was copied"
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_second_connect_is_decoded() {
    let mut d = Decoder::new(DEFAULT_MAX_PACKET_SIZE);
    let mut buf = BytesMut::from(&CONNECT_V5[..]);
    buf.put_slice(&CONNECT_V5);
    assert!(matches!(d.decode(&mut buf), Ok(Some(Packet::Connect(_)))));
    assert!(matches!(d.decode(&mut buf), Ok(Some(Packet::Connect(_)))));
}
