//! Known byte vectors for MQTT 5.0, including properties and short forms.

use bytes::Bytes;

use super::*;
use crate::types::QoS;

fn props() -> Properties {
    Properties::default()
}

#[test]
fn connect_with_properties() {
    let bytes = [
        0x10, 0x15, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3C, 0x08, 0x11, 0x00,
        0x00, 0x00, 0x78, 0x21, 0x00, 0x0A, 0x00, 0x00,
    ];
    let c = Connect {
        protocol: V5,
        clean_start: true,
        keep_alive: 60,
        client_id: String::new(),
        will: None,
        username: None,
        password: None,
        properties: Properties {
            session_expiry_interval: Some(120),
            receive_maximum: Some(10),
            ..props()
        },
    };
    assert_eq!(dec(&bytes, None), Ok(Packet::Connect(Box::new(c.clone()))));
    both_ways(&bytes, V5, Packet::Connect(Box::new(c)));
}

#[test]
fn connect_with_will_properties_and_password_only() {
    // 5.0 allows a password without a user name.
    let bytes = [
        0x10, 0x1E, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x46, 0x00, 0x00, 0x00, 0x00, 0x01,
        b'c', 0x07, 0x01, 0x01, 0x18, 0x00, 0x00, 0x00, 0x05, 0x00, 0x01, b't', 0x00, 0x00, 0x00,
        0x01, b'p',
    ];
    let c = Connect {
        protocol: V5,
        clean_start: true,
        keep_alive: 0,
        client_id: "c".to_owned(),
        will: Some(LastWill {
            topic: topic("t"),
            payload: Bytes::new(),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Properties {
                payload_format_indicator: Some(1),
                will_delay_interval: Some(5),
                ..props()
            },
        }),
        username: None,
        password: Some(Bytes::from_static(b"p")),
        properties: props(),
    };
    both_ways(&bytes, V5, Packet::Connect(Box::new(c)));
}

#[test]
fn connack() {
    let plain = ConnAck {
        session_present: false,
        code: ReasonCode::SUCCESS,
        properties: props(),
    };
    both_ways(&[0x20, 0x03, 0x00, 0x00, 0x00], V5, Packet::ConnAck(plain));
    let rich = ConnAck {
        session_present: true,
        code: ReasonCode::SUCCESS,
        properties: Properties {
            assigned_client_identifier: Some("ab".to_owned()),
            topic_alias_maximum: Some(5),
            maximum_qos: Some(1),
            ..props()
        },
    };
    both_ways(
        &[
            0x20, 0x0D, 0x01, 0x00, 0x0A, 0x12, 0x00, 0x02, b'a', b'b', 0x22, 0x00, 0x05, 0x24,
            0x01,
        ],
        V5,
        Packet::ConnAck(rich),
    );
    let refused = ConnAck {
        session_present: false,
        code: ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
        properties: props(),
    };
    both_ways(
        &[0x20, 0x03, 0x00, 0x84, 0x00],
        V5,
        Packet::ConnAck(refused),
    );
}

#[test]
fn publish_with_properties() {
    let bytes = [
        0x32, 0x1D, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x01, 0x14, 0x02, 0x00, 0x00, 0x00, 0x3C,
        0x0B, 0x01, 0x0B, 0x80, 0x01, 0x23, 0x00, 0x02, 0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v',
        b'x',
    ];
    let p = Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: topic("a/b"),
        packet_id: Some(pid(1)),
        payload: Bytes::from_static(b"x"),
        properties: Properties {
            message_expiry_interval: Some(60),
            subscription_identifiers: vec![1, 128],
            topic_alias: Some(2),
            user_properties: vec![("k".to_owned(), "v".to_owned())],
            ..props()
        },
    };
    both_ways(&bytes, V5, Packet::Publish(p.clone()));
    // The same publish for a 3.1.1 peer: no properties.
    let v3 = [0x32, 0x08, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x01, b'x'];
    assert_eq!(enc(&Packet::Publish(p), V311), v3);
}

#[test]
fn publish_with_topic_alias_and_empty_topic() {
    let p = Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: TopicName::new_allow_empty("").unwrap(),
        packet_id: None,
        payload: Bytes::new(),
        properties: Properties {
            topic_alias: Some(1),
            ..props()
        },
    };
    both_ways(
        &[0x30, 0x06, 0x00, 0x00, 0x03, 0x23, 0x00, 0x01],
        V5,
        Packet::Publish(p),
    );
}

#[test]
fn puback_short_forms() {
    let ok = PubResp::success(pid(1));
    both_ways(&[0x40, 0x02, 0x00, 0x01], V5, Packet::PubAck(ok.clone()));
    // The long forms of success decode to the same packet.
    assert_eq!(
        dec(&[0x40, 0x03, 0x00, 0x01, 0x00], Some(V5)),
        Ok(Packet::PubAck(ok.clone()))
    );
    assert_eq!(
        dec(&[0x40, 0x04, 0x00, 0x01, 0x00, 0x00], Some(V5)),
        Ok(Packet::PubAck(ok))
    );
    let no_subscribers = PubResp {
        packet_id: pid(1),
        code: ReasonCode::NO_MATCHING_SUBSCRIBERS,
        properties: props(),
    };
    both_ways(
        &[0x50, 0x03, 0x00, 0x01, 0x10],
        V5,
        Packet::PubRec(no_subscribers),
    );
    let quota = PubResp {
        packet_id: pid(1),
        code: ReasonCode::QUOTA_EXCEEDED,
        properties: Properties {
            reason_string: Some("x".to_owned()),
            ..props()
        },
    };
    both_ways(
        &[0x40, 0x08, 0x00, 0x01, 0x97, 0x04, 0x1F, 0x00, 0x01, b'x'],
        V5,
        Packet::PubAck(quota),
    );
    let not_found = PubResp {
        packet_id: pid(2),
        code: ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
        properties: props(),
    };
    both_ways(
        &[0x62, 0x03, 0x00, 0x02, 0x92],
        V5,
        Packet::PubRel(not_found.clone()),
    );
    both_ways(
        &[0x70, 0x03, 0x00, 0x02, 0x92],
        V5,
        Packet::PubComp(not_found),
    );
}

#[test]
fn subscribe_with_options() {
    let s = Subscribe {
        packet_id: pid(10),
        filters: vec![(
            filter("a/#"),
            SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                no_local: true,
                retain_as_published: true,
                retain_handling: RetainHandling::DoNotSend,
            },
        )],
        properties: Properties {
            subscription_identifiers: vec![5],
            ..props()
        },
    };
    both_ways(
        &[
            0x82, 0x0B, 0x00, 0x0A, 0x02, 0x0B, 0x05, 0x00, 0x03, b'a', b'/', b'#', 0x2D,
        ],
        V5,
        Packet::Subscribe(s.clone()),
    );
    // A 3.1.1 peer gets only the QoS.
    assert_eq!(
        enc(&Packet::Subscribe(s), V311),
        [0x82, 0x08, 0x00, 0x0A, 0x00, 0x03, b'a', b'/', b'#', 0x01]
    );
}

#[test]
fn acks_with_reason_codes() {
    let suback = SubAck {
        packet_id: pid(10),
        codes: vec![ReasonCode(0), ReasonCode::NOT_AUTHORIZED],
        properties: props(),
    };
    both_ways(
        &[0x90, 0x05, 0x00, 0x0A, 0x00, 0x00, 0x87],
        V5,
        Packet::SubAck(suback),
    );
    let unsub = Unsubscribe {
        packet_id: pid(10),
        filters: vec![filter("a")],
        properties: props(),
    };
    both_ways(
        &[0xA2, 0x06, 0x00, 0x0A, 0x00, 0x00, 0x01, b'a'],
        V5,
        Packet::Unsubscribe(unsub),
    );
    let unsuback = UnsubAck {
        packet_id: pid(10),
        codes: vec![ReasonCode::NO_SUBSCRIPTION_EXISTED],
        properties: props(),
    };
    both_ways(
        &[0xB0, 0x04, 0x00, 0x0A, 0x00, 0x11],
        V5,
        Packet::UnsubAck(unsuback),
    );
}

#[test]
fn disconnect_short_forms() {
    both_ways(&[0xE0, 0x00], V5, Packet::Disconnect(Disconnect::normal()));
    let with_will = Disconnect {
        code: ReasonCode::DISCONNECT_WITH_WILL,
        properties: props(),
    };
    both_ways(&[0xE0, 0x01, 0x04], V5, Packet::Disconnect(with_will));
    let expiry = Disconnect {
        code: ReasonCode::SUCCESS,
        properties: Properties {
            session_expiry_interval: Some(0),
            ..props()
        },
    };
    both_ways(
        &[0xE0, 0x07, 0x00, 0x05, 0x11, 0x00, 0x00, 0x00, 0x00],
        V5,
        Packet::Disconnect(expiry),
    );
}

#[test]
fn auth() {
    let ok = Auth {
        code: ReasonCode::SUCCESS,
        properties: props(),
    };
    both_ways(&[0xF0, 0x00], V5, Packet::Auth(ok));
    let cont = Auth {
        code: ReasonCode::CONTINUE_AUTHENTICATION,
        properties: Properties {
            authentication_method: Some("SCRAM".to_owned()),
            ..props()
        },
    };
    both_ways(
        &[
            0xF0, 0x0A, 0x18, 0x08, 0x15, 0x00, 0x05, b'S', b'C', b'R', b'A', b'M',
        ],
        V5,
        Packet::Auth(cont),
    );
}
