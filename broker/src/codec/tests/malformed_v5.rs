//! Malformed MQTT 5.0 input: properties, reason codes, subscription
//! options, short forms.

use super::*;
use crate::codec::properties::id;

fn v5(bytes: &[u8]) -> DecodeError {
    match decode(bytes, Some(V5), DEFAULT_MAX_PACKET_SIZE) {
        Err(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// A QoS 0 PUBLISH to "t" with the given property block content.
fn publish_with(props: &[u8]) -> Vec<u8> {
    let mut p = vec![0x30, (3 + 1 + props.len()) as u8, 0x00, 0x01, b't'];
    p.push(props.len() as u8);
    p.extend_from_slice(props);
    p
}

/// A 5.0 CONNECT, client id "c", with the given property block content.
fn connect_with(props: &[u8]) -> Vec<u8> {
    let mut body = vec![
        0,
        4,
        b'M',
        b'Q',
        b'T',
        b'T',
        5,
        0x02,
        0,
        0,
        props.len() as u8,
    ];
    body.extend_from_slice(props);
    body.extend_from_slice(&[0, 1, b'c']);
    let mut p = vec![0x10, body.len() as u8];
    p.extend(body);
    p
}

#[test]
fn unknown_and_misplaced_properties() {
    assert_eq!(
        v5(&publish_with(&[0x05, 0x00])),
        DecodeError::UnknownProperty { id: 0x05 }
    );
    assert_eq!(
        v5(&publish_with(&[0x11, 0, 0, 0, 1])),
        DecodeError::PropertyNotAllowed {
            id: id::SESSION_EXPIRY_INTERVAL,
            packet: "PUBLISH"
        }
    );
    assert_eq!(
        v5(&connect_with(&[0x23, 0, 1])),
        DecodeError::PropertyNotAllowed {
            id: id::TOPIC_ALIAS,
            packet: "CONNECT"
        }
    );
    // Will Delay Interval belongs in the will properties only.
    assert_eq!(
        v5(&connect_with(&[0x18, 0, 0, 0, 1])),
        DecodeError::PropertyNotAllowed {
            id: id::WILL_DELAY_INTERVAL,
            packet: "CONNECT"
        }
    );
    assert_eq!(
        v5(&[0x40, 0x06, 0x00, 0x01, 0x00, 0x02, 0x01, 0x01]),
        DecodeError::PropertyNotAllowed {
            id: id::PAYLOAD_FORMAT_INDICATOR,
            packet: "PUBACK"
        }
    );
}

#[test]
fn duplicates() {
    assert_eq!(
        v5(&connect_with(&[0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2])),
        DecodeError::DuplicateProperty {
            id: id::SESSION_EXPIRY_INTERVAL
        }
    );
    assert_eq!(
        v5(&publish_with(&[0x23, 0, 1, 0x23, 0, 2])),
        DecodeError::DuplicateProperty {
            id: id::TOPIC_ALIAS
        }
    );
    // At most one subscription identifier in SUBSCRIBE.
    assert_eq!(
        v5(&[0x82, 0x0B, 0x00, 0x01, 0x04, 0x0B, 0x01, 0x0B, 0x02, 0x00, 0x01, b'a', 0x00]),
        DecodeError::DuplicateProperty {
            id: id::SUBSCRIPTION_IDENTIFIER
        }
    );
    // Repeatable: user properties anywhere, subscription ids in PUBLISH.
    let ok = publish_with(&[
        0x0B, 0x01, 0x0B, 0x02, 0x26, 0, 1, b'k', 0, 0, 0x26, 0, 1, b'k', 0, 0,
    ]);
    match dec(&ok, Some(V5)) {
        Ok(Packet::Publish(p)) => {
            assert_eq!(p.properties.subscription_identifiers, [1, 2]);
            assert_eq!(p.properties.user_properties.len(), 2);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn property_values() {
    let invalid = |prop| DecodeError::InvalidPropertyValue { id: prop };
    assert_eq!(
        v5(&publish_with(&[0x0B, 0x00])),
        invalid(id::SUBSCRIPTION_IDENTIFIER)
    );
    assert_eq!(v5(&publish_with(&[0x23, 0, 0])), invalid(id::TOPIC_ALIAS));
    assert_eq!(
        v5(&publish_with(&[0x01, 0x02])),
        invalid(id::PAYLOAD_FORMAT_INDICATOR)
    );
    assert_eq!(
        v5(&connect_with(&[0x21, 0, 0])),
        invalid(id::RECEIVE_MAXIMUM)
    );
    assert_eq!(
        v5(&connect_with(&[0x27, 0, 0, 0, 0])),
        invalid(id::MAXIMUM_PACKET_SIZE)
    );
    assert_eq!(
        v5(&connect_with(&[0x17, 2])),
        invalid(id::REQUEST_PROBLEM_INFORMATION)
    );
    assert_eq!(
        v5(&publish_with(&[0x08, 0, 1, b'+'])),
        DecodeError::InvalidTopicName(crate::types::InvalidValue::WildcardInTopicName)
    );
    assert_eq!(
        v5(&publish_with(&[0x03, 0, 1, 0])),
        DecodeError::NullCharacter
    );
    assert_eq!(
        v5(&publish_with(&[0x0B, 0x80, 0x00])),
        DecodeError::MalformedVarInt
    );
}

#[test]
fn authentication_data_needs_a_method() {
    assert_eq!(
        v5(&connect_with(&[0x16, 0, 1, 0xAA])),
        DecodeError::AuthDataWithoutMethod
    );
    assert_eq!(
        v5(&[0xF0, 0x06, 0x18, 0x04, 0x16, 0x00, 0x01, 0xAA]),
        DecodeError::AuthDataWithoutMethod
    );
    let ok = connect_with(&[0x16, 0, 1, 0xAA, 0x15, 0, 1, b'm']);
    assert!(dec(&ok, None).is_ok());
}

#[test]
fn property_length_must_fit() {
    // Property length 5, but only 3 bytes follow in the packet.
    assert_eq!(
        v5(&[0x30, 0x07, 0x00, 0x01, b't', 0x05, 0x23, 0x00, 0x01]),
        DecodeError::UnexpectedEnd
    );
    // A property running past the property length.
    assert_eq!(
        v5(&[0x30, 0x07, 0x00, 0x01, b't', 0x02, 0x23, 0x00, 0x01]),
        DecodeError::UnexpectedEnd
    );
    // No property length at all.
    assert_eq!(
        v5(&[0x30, 0x03, 0x00, 0x01, b't']),
        DecodeError::UnexpectedEnd
    );
}

#[test]
fn empty_topic_needs_an_alias() {
    assert_eq!(
        v5(&[0x30, 0x03, 0x00, 0x00, 0x00]),
        DecodeError::MissingTopicAlias
    );
}

#[test]
fn reason_codes_per_packet() {
    let bad = |packet, code| DecodeError::InvalidReasonCode { packet, code };
    assert_eq!(v5(&[0x40, 0x03, 0x00, 0x01, 0x92]), bad("PUBACK", 0x92));
    assert_eq!(v5(&[0x62, 0x03, 0x00, 0x01, 0x10]), bad("PUBREL", 0x10));
    assert_eq!(
        v5(&[0x90, 0x04, 0x00, 0x01, 0x00, 0x03]),
        bad("SUBACK", 0x03)
    );
    assert_eq!(
        v5(&[0xB0, 0x04, 0x00, 0x01, 0x00, 0x01]),
        bad("UNSUBACK", 0x01)
    );
    assert_eq!(v5(&[0xE0, 0x01, 0x01]), bad("DISCONNECT", 0x01));
    assert_eq!(v5(&[0xF0, 0x02, 0x01, 0x00]), bad("AUTH", 0x01));
    assert_eq!(v5(&[0x20, 0x03, 0x00, 0x01, 0x00]), bad("CONNACK", 0x01));
    assert_eq!(
        v5(&[0xB0, 0x03, 0x00, 0x01, 0x00]),
        DecodeError::EmptyPayload { packet: "UNSUBACK" }
    );
}

#[test]
fn short_forms_are_only_the_allowed_ones() {
    // AUTH: remaining length 0 or code + property length, never just a code.
    assert_eq!(v5(&[0xF0, 0x01, 0x18]), DecodeError::UnexpectedEnd);
    // CONNACK always has a property length.
    assert_eq!(v5(&[0x20, 0x02, 0x00, 0x00]), DecodeError::UnexpectedEnd);
    // SUBSCRIBE: the property length is not optional.
    assert_eq!(v5(&[0x82, 0x02, 0x00, 0x01]), DecodeError::UnexpectedEnd);
}

#[test]
fn subscription_options() {
    let sub = |filter: &[u8], options: u8| {
        let mut p = vec![0x82, (5 + filter.len() + 1) as u8, 0x00, 0x01, 0x00, 0x00];
        p.push(filter.len() as u8);
        p.extend_from_slice(filter);
        p.push(options);
        v5(&p)
    };
    assert_eq!(
        sub(b"a", 0x40),
        DecodeError::SubscriptionReservedBits { options: 0x40 }
    );
    assert_eq!(sub(b"a", 0x30), DecodeError::InvalidRetainHandling);
    assert_eq!(sub(b"a", 0x03), DecodeError::InvalidSubscriptionQoS);
    assert_eq!(
        sub(b"$share/g/a", 0x04),
        DecodeError::NoLocalOnSharedSubscription
    );
    assert_eq!(
        v5(&[0x82, 0x03, 0x00, 0x01, 0x00]),
        DecodeError::EmptyPayload {
            packet: "SUBSCRIBE"
        }
    );
}

#[test]
fn connect_v5_flags() {
    // Will flag with invalid will property.
    let body = [
        0, 4, b'M', b'Q', b'T', b'T', 5, 0x06, 0, 0, 0, 0, 1, b'c', 2, 0x23, 0,
    ];
    let mut p = vec![0x10, body.len() as u8];
    p.extend_from_slice(&body);
    assert_eq!(
        v5(&p),
        DecodeError::PropertyNotAllowed {
            id: id::TOPIC_ALIAS,
            packet: "will properties"
        }
    );
}
