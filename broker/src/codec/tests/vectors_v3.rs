//! Known byte vectors for MQTT 3.1.1 and 3.1, decoded and re-encoded.

use bytes::Bytes;

use super::*;
use crate::types::QoS;

fn connect_311(client_id: &str) -> Connect {
    Connect {
        protocol: V311,
        clean_start: true,
        keep_alive: 60,
        client_id: client_id.to_owned(),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    }
}

#[test]
fn connect_minimal() {
    let bytes = [
        0x10, 0x10, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x02, 0x00, 0x3C, 0x00, 0x04, b't',
        b'e', b's', b't',
    ];
    let packet = Packet::Connect(Box::new(connect_311("test")));
    assert_eq!(dec(&bytes, None), Ok(packet.clone()));
    both_ways(&bytes, V311, packet);
}

#[test]
fn connect_with_will_and_credentials() {
    // Flags 0xEE: user name, password, will retain, will QoS 1, will, clean.
    let bytes = [
        0x10, 0x1D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0xEE, 0x00, 0x0A, 0x00, 0x01, b'c',
        0x00, 0x03, b'a', b'/', b'b', 0x00, 0x02, b'h', b'i', 0x00, 0x01, b'u', 0x00, 0x02, 0xFF,
        0x00,
    ];
    let mut c = connect_311("c");
    c.keep_alive = 10;
    c.will = Some(LastWill {
        topic: topic("a/b"),
        payload: Bytes::from_static(b"hi"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Properties::default(),
    });
    c.username = Some("u".to_owned());
    c.password = Some(Bytes::from_static(&[0xFF, 0x00]));
    both_ways(&bytes, V311, Packet::Connect(Box::new(c)));
}

#[test]
fn connect_empty_client_id_is_left_to_the_connect_flow() {
    let bytes = [
        0x10, 0x0C, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0x00, 0x00, 0x00, 0x00, 0x00,
    ];
    let mut c = connect_311("");
    c.clean_start = false;
    c.keep_alive = 0;
    both_ways(&bytes, V311, Packet::Connect(Box::new(c)));
}

#[test]
fn connect_mqtt_3_1() {
    let bytes = [
        0x10, 0x0F, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x02, 0x00, 0x3C, 0x00,
        0x01, b'c',
    ];
    let mut c = connect_311("c");
    c.protocol = V31;
    both_ways(&bytes, V31, Packet::Connect(Box::new(c)));
}

#[test]
fn connack() {
    let packet = |session_present, code| {
        Packet::ConnAck(ConnAck {
            session_present,
            code: ReasonCode(code),
            properties: Properties::default(),
        })
    };
    both_ways(&[0x20, 0x02, 0x01, 0x00], V311, packet(true, 0));
    both_ways(&[0x20, 0x02, 0x00, 0x05], V311, packet(false, 5));
    // 3.1 has no session present flag: it is never sent.
    assert_eq!(enc(&packet(true, 0), V31), [0x20, 0x02, 0x00, 0x00]);
    // Properties are left out before 5.0.
    let mut with_props = ConnAck {
        session_present: false,
        code: ReasonCode::SUCCESS,
        properties: Properties::default(),
    };
    with_props.properties.receive_maximum = Some(10);
    assert_eq!(
        enc(&Packet::ConnAck(with_props), V311),
        [0x20, 0x02, 0x00, 0x00]
    );
}

#[test]
fn publish() {
    let p = Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: topic("a/b"),
        packet_id: None,
        payload: Bytes::from_static(b"hi"),
        properties: Properties::default(),
    };
    both_ways(
        &[0x30, 0x07, 0x00, 0x03, b'a', b'/', b'b', b'h', b'i'],
        V311,
        Packet::Publish(p.clone()),
    );
    let p = Publish {
        dup: true,
        qos: QoS::ExactlyOnce,
        retain: true,
        packet_id: Some(pid(10)),
        payload: Bytes::new(),
        ..p
    };
    both_ways(
        &[0x3D, 0x07, 0x00, 0x03, b'a', b'/', b'b', 0x00, 0x0A],
        V311,
        Packet::Publish(p),
    );
}

#[test]
fn publish_acknowledgements() {
    let r = PubResp::success(pid(0x1234));
    both_ways(&[0x40, 0x02, 0x12, 0x34], V311, Packet::PubAck(r.clone()));
    both_ways(&[0x50, 0x02, 0x12, 0x34], V311, Packet::PubRec(r.clone()));
    both_ways(&[0x62, 0x02, 0x12, 0x34], V311, Packet::PubRel(r.clone()));
    both_ways(&[0x70, 0x02, 0x12, 0x34], V311, Packet::PubComp(r.clone()));
    // Reason codes are left out before 5.0.
    let failed = PubResp {
        code: ReasonCode::NOT_AUTHORIZED,
        ..r
    };
    assert_eq!(enc(&Packet::PubAck(failed), V311), [0x40, 0x02, 0x12, 0x34]);
}

#[test]
fn subscribe_and_suback() {
    let s = Subscribe {
        packet_id: pid(10),
        filters: vec![
            (
                filter("a/#"),
                SubscriptionOptions::with_qos(QoS::AtLeastOnce),
            ),
            (filter("+"), SubscriptionOptions::with_qos(QoS::ExactlyOnce)),
        ],
        properties: Properties::default(),
    };
    both_ways(
        &[
            0x82, 0x0C, 0x00, 0x0A, 0x00, 0x03, b'a', b'/', b'#', 0x01, 0x00, 0x01, b'+', 0x02,
        ],
        V311,
        Packet::Subscribe(s),
    );
    let ack = SubAck {
        packet_id: pid(10),
        codes: vec![ReasonCode(1), ReasonCode(0x80)],
        properties: Properties::default(),
    };
    both_ways(
        &[0x90, 0x04, 0x00, 0x0A, 0x01, 0x80],
        V311,
        Packet::SubAck(ack),
    );
    // A 5.0 failure code becomes the 3.1.1 failure code 0x80.
    let ack = SubAck {
        packet_id: pid(10),
        codes: vec![ReasonCode::NOT_AUTHORIZED],
        properties: Properties::default(),
    };
    assert_eq!(
        enc(&Packet::SubAck(ack), V311),
        [0x90, 0x03, 0x00, 0x0A, 0x80]
    );
}

#[test]
fn unsubscribe_and_unsuback() {
    let u = Unsubscribe {
        packet_id: pid(1),
        filters: vec![filter("a")],
        properties: Properties::default(),
    };
    both_ways(
        &[0xA2, 0x05, 0x00, 0x01, 0x00, 0x01, b'a'],
        V311,
        Packet::Unsubscribe(u),
    );
    let ack = UnsubAck {
        packet_id: pid(1),
        codes: Vec::new(),
        properties: Properties::default(),
    };
    both_ways(
        &[0xB0, 0x02, 0x00, 0x01],
        V311,
        Packet::UnsubAck(ack.clone()),
    );
    // 5.0 codes are not sent to a 3.1.1 peer.
    let ack = UnsubAck {
        codes: vec![ReasonCode::SUCCESS],
        ..ack
    };
    assert_eq!(enc(&Packet::UnsubAck(ack), V311), [0xB0, 0x02, 0x00, 0x01]);
}

#[test]
fn ping_and_disconnect() {
    both_ways(&[0xC0, 0x00], V311, Packet::PingReq);
    both_ways(&[0xD0, 0x00], V311, Packet::PingResp);
    both_ways(
        &[0xE0, 0x00],
        V311,
        Packet::Disconnect(Disconnect::normal()),
    );
    let d = Disconnect {
        code: ReasonCode::SERVER_SHUTTING_DOWN,
        properties: Properties::default(),
    };
    assert_eq!(enc(&Packet::Disconnect(d), V31), [0xE0, 0x00]);
}

#[test]
fn auth_cannot_be_encoded_before_5() {
    let a = Packet::Auth(Auth {
        code: ReasonCode::SUCCESS,
        properties: Properties::default(),
    });
    let mut buf = BytesMut::from(&b"x"[..]);
    assert_eq!(
        encode(&a, V311, &mut buf),
        Err(EncodeError::NotInVersion {
            packet: "AUTH",
            version: V311
        })
    );
    assert_eq!(&buf[..], b"x", "nothing appended on error");
}

#[test]
fn encode_errors_leave_the_buffer_unchanged() {
    let p = Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: topic("t"),
        packet_id: None,
        payload: Bytes::new(),
        properties: Properties::default(),
    };
    let mut buf = BytesMut::new();
    assert_eq!(
        encode(&Packet::Publish(p), V311, &mut buf),
        Err(EncodeError::PacketIdQoSMismatch)
    );
    let c = Connect {
        client_id: "x".repeat(70_000),
        ..connect_311("")
    };
    assert_eq!(
        encode(&Packet::Connect(Box::new(c)), V311, &mut buf),
        Err(EncodeError::FieldTooLong(70_000))
    );
    assert!(buf.is_empty());
}
