//! Malformed input (framing, 3.1.1 rules, CONNECT), each with its error.

use super::*;
use crate::types::InvalidValue;

fn err(bytes: &[u8], version: Option<ProtocolVersion>) -> DecodeError {
    match decode(bytes, version, DEFAULT_MAX_PACKET_SIZE) {
        Err(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

fn v3(bytes: &[u8]) -> DecodeError {
    err(bytes, Some(V311))
}

#[test]
fn first_packet_must_be_connect() {
    assert_eq!(
        err(&[0xC0, 0x00], None),
        DecodeError::FirstPacketNotConnect { packet_type: 12 }
    );
    // Known from the first byte alone.
    assert_eq!(
        err(&[0x30], None),
        DecodeError::FirstPacketNotConnect { packet_type: 3 }
    );
    assert_eq!(
        err(&[0x11], None),
        DecodeError::InvalidHeaderFlags {
            packet_type: 1,
            flags: 1
        }
    );
}

#[test]
fn reserved_packet_types() {
    assert_eq!(
        v3(&[0x00, 0x00]),
        DecodeError::ReservedPacketType { packet_type: 0 }
    );
    // AUTH does not exist before 5.0.
    assert_eq!(
        v3(&[0xF0, 0x00]),
        DecodeError::ReservedPacketType { packet_type: 15 }
    );
    assert_eq!(
        err(&[0xF0, 0x00], Some(V31)),
        DecodeError::ReservedPacketType { packet_type: 15 }
    );
}

#[test]
fn fixed_header_flags() {
    let bad = |b: u8| DecodeError::InvalidHeaderFlags {
        packet_type: b >> 4,
        flags: b & 0x0F,
    };
    for first in [0x60, 0x63, 0x80, 0x8A, 0xA0, 0xA3] {
        assert_eq!(v3(&[first]), bad(first), "{first:#x}");
    }
    for first in [0x21, 0x42, 0x51, 0x72, 0x92, 0xB1, 0xC1, 0xD8, 0xE2] {
        assert_eq!(v3(&[first]), bad(first), "{first:#x}");
    }
    assert_eq!(v3(&[0x36]), DecodeError::InvalidPublishQoS);
    assert_eq!(v3(&[0x3E]), DecodeError::InvalidPublishQoS);
    assert_eq!(v3(&[0x38]), DecodeError::DupWithQoS0);
    assert_eq!(v3(&[0x39]), DecodeError::DupWithQoS0);
}

#[test]
fn remaining_length() {
    assert_eq!(
        v3(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]),
        DecodeError::MalformedVarInt
    );
    assert_eq!(
        v3(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF]),
        DecodeError::MalformedVarInt
    );
    // Not the shortest form [MQTT-1.5.5-1].
    assert_eq!(v3(&[0xC0, 0x80, 0x00]), DecodeError::MalformedVarInt);
    // Incomplete: wait for more.
    assert_eq!(decode(&[0x30, 0xFF, 0xFF], Some(V311), 1 << 30), Ok(None));
    assert_eq!(decode(&[0x30, 0x05, 0x00], Some(V311), 100), Ok(None));
    assert_eq!(decode(&[], Some(V311), 100), Ok(None));
}

#[test]
fn packet_too_large_is_refused_from_the_header() {
    assert_eq!(
        decode(&[0x30, 0x0A], Some(V311), 10),
        Err(DecodeError::PacketTooLarge { size: 12, max: 10 })
    );
    assert_eq!(
        decode(
            &[0x10, 0xFF, 0xFF, 0xFF, 0x7F],
            None,
            DEFAULT_MAX_PACKET_SIZE
        ),
        Err(DecodeError::PacketTooLarge {
            size: 268_435_460,
            max: DEFAULT_MAX_PACKET_SIZE
        })
    );
    // Exactly at the limit is fine.
    assert!(matches!(
        decode(&[0xC0, 0x00], Some(V311), 2),
        Ok(Some((Packet::PingReq, 2)))
    ));
}

#[test]
fn remaining_length_must_match_content() {
    assert_eq!(
        v3(&[0x40, 0x03, 0x00, 0x01, 0x00]),
        DecodeError::TrailingBytes
    );
    assert_eq!(v3(&[0x40, 0x01, 0x00]), DecodeError::UnexpectedEnd);
    assert_eq!(v3(&[0xC0, 0x01, 0x00]), DecodeError::TrailingBytes);
    assert_eq!(v3(&[0xE0, 0x01, 0x00]), DecodeError::TrailingBytes);
    assert_eq!(
        v3(&[0xB0, 0x03, 0x00, 0x01, 0x00]),
        DecodeError::TrailingBytes
    );
    // The topic's length runs past the packet.
    assert_eq!(
        v3(&[0x30, 0x03, 0x00, 0x05, b'a']),
        DecodeError::UnexpectedEnd
    );
    assert_eq!(
        v3(&[0x32, 0x04, 0x00, 0x01, b'a', 0x00]),
        DecodeError::UnexpectedEnd
    );
}

#[test]
fn strings() {
    assert_eq!(
        v3(&[0x30, 0x05, 0x00, 0x03, b'a', 0xFF, b'b']),
        DecodeError::InvalidUtf8
    );
    // U+D800 encoded: a surrogate [MQTT-1.5.3-1].
    assert_eq!(
        v3(&[0x30, 0x05, 0x00, 0x03, 0xED, 0xA0, 0x80]),
        DecodeError::InvalidUtf8
    );
    assert_eq!(
        v3(&[0x30, 0x05, 0x00, 0x03, b'a', 0x00, b'b']),
        DecodeError::NullCharacter
    );
}

#[test]
fn topic_names() {
    assert_eq!(
        v3(&[0x30, 0x05, 0x00, 0x03, b'a', b'/', b'+']),
        DecodeError::InvalidTopicName(InvalidValue::WildcardInTopicName)
    );
    assert_eq!(
        v3(&[0x30, 0x03, 0x00, 0x01, b'#']),
        DecodeError::InvalidTopicName(InvalidValue::WildcardInTopicName)
    );
    assert_eq!(
        v3(&[0x30, 0x02, 0x00, 0x00]),
        DecodeError::InvalidTopicName(InvalidValue::EmptyTopic)
    );
}

#[test]
fn packet_ids_must_be_non_zero() {
    assert_eq!(v3(&[0x40, 0x02, 0x00, 0x00]), DecodeError::ZeroPacketId);
    assert_eq!(v3(&[0x62, 0x02, 0x00, 0x00]), DecodeError::ZeroPacketId);
    assert_eq!(
        v3(&[0x32, 0x05, 0x00, 0x01, b'a', 0x00, 0x00]),
        DecodeError::ZeroPacketId
    );
    assert_eq!(
        v3(&[0x82, 0x06, 0x00, 0x00, 0x00, 0x01, b'a', 0x00]),
        DecodeError::ZeroPacketId
    );
}

#[test]
fn subscribe_rules() {
    assert_eq!(
        v3(&[0x82, 0x02, 0x00, 0x01]),
        DecodeError::EmptyPayload {
            packet: "SUBSCRIBE"
        }
    );
    assert_eq!(
        v3(&[0xA2, 0x02, 0x00, 0x01]),
        DecodeError::EmptyPayload {
            packet: "UNSUBSCRIBE"
        }
    );
    let sub = |options: u8| v3(&[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', options]);
    assert_eq!(
        sub(0x04),
        DecodeError::SubscriptionReservedBits { options: 0x04 }
    );
    assert_eq!(
        sub(0x81),
        DecodeError::SubscriptionReservedBits { options: 0x81 }
    );
    assert_eq!(sub(0x03), DecodeError::InvalidSubscriptionQoS);
    // The options byte is missing.
    assert_eq!(
        v3(&[0x82, 0x05, 0x00, 0x01, 0x00, 0x01, b'a']),
        DecodeError::UnexpectedEnd
    );
    assert_eq!(
        v3(&[0x82, 0x07, 0x00, 0x01, 0x00, 0x02, b'a', b'#', 0x00]),
        DecodeError::InvalidTopicFilter(InvalidValue::MisplacedMultiLevelWildcard)
    );
    assert_eq!(
        v3(&[0xA2, 0x06, 0x00, 0x01, 0x00, 0x02, b'a', b'+']),
        DecodeError::InvalidTopicFilter(InvalidValue::MisplacedSingleLevelWildcard)
    );
    assert_eq!(
        v3(&[0xA2, 0x04, 0x00, 0x01, 0x00, 0x00]),
        DecodeError::InvalidTopicFilter(InvalidValue::EmptyFilter)
    );
}

#[test]
fn acks_from_the_other_side() {
    assert_eq!(
        v3(&[0x20, 0x02, 0x02, 0x00]),
        DecodeError::InvalidConnAckFlags { flags: 0x02 }
    );
    assert_eq!(
        v3(&[0x20, 0x02, 0x01, 0x05]),
        DecodeError::InvalidConnAckFlags { flags: 0x01 }
    );
    assert_eq!(
        v3(&[0x20, 0x02, 0x00, 0x06]),
        DecodeError::InvalidReasonCode {
            packet: "CONNACK",
            code: 0x06
        }
    );
    assert_eq!(
        v3(&[0x90, 0x03, 0x00, 0x01, 0x87]),
        DecodeError::InvalidReasonCode {
            packet: "SUBACK",
            code: 0x87
        }
    );
    assert_eq!(
        v3(&[0x90, 0x02, 0x00, 0x01]),
        DecodeError::EmptyPayload { packet: "SUBACK" }
    );
}

/// A CONNECT with the given protocol name, level and flags, keep alive 0
/// and client id "c", followed by `rest`.
fn connect(name: &[u8], level: u8, flags: u8, rest: &[u8]) -> Vec<u8> {
    let mut body = vec![0, name.len() as u8];
    body.extend_from_slice(name);
    body.extend_from_slice(&[level, flags, 0, 0, 0, 1, b'c']);
    body.extend_from_slice(rest);
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend(body);
    packet
}

#[test]
fn connect_protocol_name_and_level() {
    for (name, level) in [
        (&b"MQTT"[..], 3),
        (b"MQTT", 6),
        (b"MQIsdp", 4),
        (b"MQTT", 0),
    ] {
        assert_eq!(
            err(&connect(name, level, 0x02, &[]), None),
            DecodeError::UnsupportedProtocol { level },
            "{level}"
        );
    }
    assert_eq!(
        err(&connect(b"MQTX", 4, 0x02, &[]), None),
        DecodeError::InvalidProtocolName
    );
    assert_eq!(
        err(&connect(b"mqtt", 4, 0x02, &[]), None),
        DecodeError::InvalidProtocolName
    );
    // An unsupported level is reported even if the rest is garbage.
    let mut garbage = connect(b"MQTT", 7, 0xFF, &[]);
    garbage.truncate(9);
    garbage[1] = 7;
    assert_eq!(
        err(&garbage, None),
        DecodeError::UnsupportedProtocol { level: 7 }
    );
}

#[test]
fn connect_flags() {
    let e = |flags: u8, rest: &[u8]| err(&connect(b"MQTT", 4, flags, rest), None);
    assert_eq!(e(0x03, &[]), DecodeError::ConnectReservedFlag);
    assert_eq!(e(0x0A, &[]), DecodeError::WillFlagsWithoutWill);
    assert_eq!(e(0x22, &[]), DecodeError::WillFlagsWithoutWill);
    assert_eq!(e(0x1E, &[]), DecodeError::InvalidWillQoS);
    assert_eq!(e(0x42, &[0, 1, b'p']), DecodeError::PasswordWithoutUsername);
    assert_eq!(
        err(&connect(b"MQIsdp", 3, 0x42, &[0, 1, b'p']), None),
        DecodeError::PasswordWithoutUsername
    );
    // Flags announce a user name that is not there.
    assert_eq!(e(0x82, &[]), DecodeError::UnexpectedEnd);
    // Will topic with a wildcard.
    assert_eq!(
        e(0x06, &[0, 1, b'#', 0, 0]),
        DecodeError::InvalidTopicName(InvalidValue::WildcardInTopicName)
    );
    assert_eq!(e(0x02, &[0]), DecodeError::TrailingBytes);
}

#[test]
fn reason_codes_of_errors() {
    use DecodeError::*;
    assert_eq!(
        PacketTooLarge { size: 1, max: 0 }.reason_code(),
        ReasonCode::PACKET_TOO_LARGE
    );
    assert_eq!(
        UnsupportedProtocol { level: 6 }.reason_code(),
        ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
    );
    assert_eq!(UnexpectedEnd.reason_code(), ReasonCode::MALFORMED_PACKET);
    assert_eq!(InvalidUtf8.reason_code(), ReasonCode::MALFORMED_PACKET);
    assert_eq!(
        DuplicateProperty { id: 0x11 }.reason_code(),
        ReasonCode::PROTOCOL_ERROR
    );
    assert_eq!(
        FirstPacketNotConnect { packet_type: 3 }.reason_code(),
        ReasonCode::PROTOCOL_ERROR
    );
    assert_eq!(
        InvalidTopicFilter(InvalidValue::EmptyFilter).reason_code(),
        ReasonCode::TOPIC_FILTER_INVALID
    );
    assert_eq!(
        InvalidTopicName(InvalidValue::WildcardInTopicName).reason_code(),
        ReasonCode::TOPIC_NAME_INVALID
    );
}

#[test]
fn messages_name_the_rule() {
    assert_eq!(
        DecodeError::DupWithQoS0.to_string(),
        "publish dup flag set with qos 0"
    );
    assert_eq!(
        DecodeError::InvalidHeaderFlags {
            packet_type: 6,
            flags: 0
        }
        .to_string(),
        "invalid fixed header flags 0b0000 for packet type 6"
    );
}
