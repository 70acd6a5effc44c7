//! MQTT 5.0 behaviour against the real broker with the `rumqttc` v5 client
//! (and raw bytes where the client cannot misbehave on purpose).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::v5;
use common::{connect_v5_bytes, frame, start_broker, Raw};
use rumqttc::v5::mqttbytes::v5::{
    Filter, LastWillProperties, PublishProperties, RetainForwardRule,
};
use rumqttc::v5::mqttbytes::QoS;

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn server_assigns_client_id() {
    let b = start_broker("").await;
    let c = v5::connect_id(b.addr, "").await;
    let props = c.connack.properties.clone().expect("CONNACK properties");
    let id = props.assigned_client_identifier.expect("assigned id");
    assert!(!id.is_empty());
    assert!(b.server.broker().ctx.table.get(&id).is_some());
    assert!(props.max_packet_size.is_some());
}

/// Found by the `connection` fuzz target: the CONNACK ignored the
/// client's Maximum Packet Size [MQTT-3.1.2-24].
#[tokio::test]
async fn connack_respects_the_client_maximum_packet_size() {
    let b = start_broker("").await;
    for max in [10u32, 40] {
        // CONNECT 5.0, clean start, keep alive 60, Maximum Packet Size
        // `max`, empty client id (the broker assigns one).
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0x02, 0, 60, 5, 0x27];
        body.extend_from_slice(&max.to_be_bytes());
        body.extend_from_slice(&[0, 0]);
        let mut raw = Raw::connect(b.addr).await;
        raw.send(&frame(0x10, &body)).await;
        let (h, ack) = raw.read().await.expect("CONNACK");
        assert_eq!((h, ack[1]), (0x20, 0), "accepted");
        // Fixed header (2 bytes here) plus body.
        assert!(
            2 + ack.len() <= max as usize,
            "{} bytes > {max}",
            2 + ack.len()
        );
        if max == 40 {
            // Room for the assigned client identifier (property 0x12).
            assert!(ack.len() > 3 && ack[3] == 0x12, "{ack:x?}");
        }
    }
}

#[tokio::test]
async fn session_expiry_keeps_then_removes_the_session() {
    let b = start_broker("").await;
    let mut o = v5::options(b.addr, "expiring");
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(1));
    let c = v5::connect(o.clone()).await;
    c.client.disconnect().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let table = &b.server.broker().ctx.table;
    assert!(table.get("expiring").is_some(), "kept while within expiry");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(table.get("expiring").is_none(), "removed after expiry");
    let c = v5::connect(o).await;
    assert!(!c.connack.session_present);
}

#[tokio::test]
async fn session_resumed_with_clean_start_false() {
    let b = start_broker("").await;
    let mut o = v5::options(b.addr, "resume5");
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(60));
    let mut c = v5::connect(o.clone()).await;
    c.subscribe("r5", QoS::AtLeastOnce).await;
    c.client.disconnect().await.unwrap();
    tokio::time::sleep(QUIET).await;
    let p = v5::connect_id(b.addr, "p").await;
    p.client
        .publish("r5", QoS::AtLeastOnce, false, "queued")
        .await
        .unwrap();
    tokio::time::sleep(QUIET).await;
    let mut c = v5::connect(o).await;
    assert!(c.connack.session_present);
    assert_eq!(&c.publish().await.payload[..], b"queued");
}

#[tokio::test]
async fn takeover_sends_disconnect_session_taken_over() {
    let b = start_broker("").await;
    let mut raw = Raw::connect(b.addr).await;
    raw.send(&connect_v5_bytes("t", 60)).await;
    raw.read().await.expect("CONNACK");
    let _other = v5::connect_id(b.addr, "t").await;
    let (h, body) = raw.read().await.expect("DISCONNECT");
    assert_eq!((h, body[0]), (0xe0, 0x8e));
}

#[tokio::test]
async fn keep_alive_timeout_sends_disconnect_0x8d() {
    let b = start_broker("").await;
    let mut raw = Raw::connect(b.addr).await;
    // MQTT 5 CONNECT, clean start, keep alive 1 s, no properties, id "k".
    raw.send(&connect_v5_bytes("k", 1)).await;
    let (h, _) = raw.read().await.expect("CONNACK");
    assert_eq!(h, 0x20);
    let (h, body) = raw.read().await.expect("DISCONNECT");
    assert_eq!((h, body[0]), (0xe0, 0x8d));
    raw.expect_closed().await;
}

#[tokio::test]
async fn server_keep_alive_caps_the_client() {
    let b = start_broker("mqtt:\n  max_keepalive_secs: 20\n").await;
    let c = v5::connect_id(b.addr, "ka").await; // asks for 30 s
    let props = c.connack.properties.expect("properties");
    assert_eq!(props.server_keep_alive, Some(20));
}

#[tokio::test]
async fn malformed_packet_gets_disconnect_0x81_or_0x82() {
    let b = start_broker("").await;
    let mut raw = Raw::connect(b.addr).await;
    raw.send(&connect_v5_bytes("m", 60)).await;
    raw.read().await.expect("CONNACK");
    // PUBLISH with a property (0x7f) that does not exist.
    raw.send(&frame(0x30, &[0, 1, b't', 2, 0x7f, 0, b'x']))
        .await;
    let (h, body) = raw.read().await.expect("DISCONNECT");
    assert_eq!(h, 0xe0);
    assert!(body[0] == 0x81 || body[0] == 0x82, "reason {:#x}", body[0]);
    raw.expect_closed().await;
}

#[tokio::test]
async fn message_properties_are_forwarded() {
    let b = start_broker("").await;
    let mut s = v5::connect_id(b.addr, "s").await;
    s.subscribe("props", QoS::AtLeastOnce).await;
    let p = v5::connect_id(b.addr, "p").await;
    let props = PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(100),
        content_type: Some("text/plain".into()),
        response_topic: Some("reply/here".into()),
        correlation_data: Some(Bytes::from_static(b"corr")),
        user_properties: vec![("k".into(), "v".into())],
        ..Default::default()
    };
    p.publish_props("props", QoS::AtLeastOnce, false, "hi", props)
        .await;
    let m = s.publish().await;
    let got = m.properties.expect("properties");
    assert_eq!(got.payload_format_indicator, Some(1));
    assert_eq!(got.content_type.as_deref(), Some("text/plain"));
    assert_eq!(got.response_topic.as_deref(), Some("reply/here"));
    assert_eq!(got.correlation_data.as_deref(), Some(&b"corr"[..]));
    assert_eq!(
        got.user_properties,
        vec![("k".to_string(), "v".to_string())]
    );
    let left = got.message_expiry_interval.expect("expiry forwarded");
    assert!((98..=100).contains(&left), "remaining interval {left}");
}

#[tokio::test]
async fn expired_messages_are_not_delivered() {
    let b = start_broker("").await;
    let mut o = v5::options(b.addr, "slow");
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(60));
    let mut c = v5::connect(o.clone()).await;
    c.subscribe("exp", QoS::AtLeastOnce).await;
    c.client.disconnect().await.unwrap();
    tokio::time::sleep(QUIET).await;
    let p = v5::connect_id(b.addr, "p").await;
    let short = PublishProperties {
        message_expiry_interval: Some(1),
        ..Default::default()
    };
    p.publish_props("exp", QoS::AtLeastOnce, false, "short", short)
        .await;
    p.publish_props(
        "exp",
        QoS::AtLeastOnce,
        false,
        "long",
        PublishProperties::default(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let mut c = v5::connect(o).await;
    assert_eq!(&c.publish().await.payload[..], b"long");
    c.no_publish(QUIET).await;
}

#[tokio::test]
async fn no_local_suppresses_own_messages() {
    let b = start_broker("").await;
    let mut c = v5::connect_id(b.addr, "self").await;
    let mut f = Filter::new("nl", QoS::AtMostOnce);
    f.nolocal = true;
    c.subscribe_filter(f, None).await;
    c.client
        .publish("nl", QoS::AtMostOnce, false, "mine")
        .await
        .unwrap();
    c.no_publish(QUIET).await;
    let other = v5::connect_id(b.addr, "other").await;
    other
        .client
        .publish("nl", QoS::AtMostOnce, false, "theirs")
        .await
        .unwrap();
    assert_eq!(&c.publish().await.payload[..], b"theirs");
}

#[tokio::test]
async fn retain_handling_and_retain_as_published() {
    let b = start_broker("").await;
    let p = v5::connect_id(b.addr, "p").await;
    p.client
        .publish("rh", QoS::AtMostOnce, true, "kept")
        .await
        .unwrap();
    tokio::time::sleep(QUIET).await;

    let mut never = v5::connect_id(b.addr, "never").await;
    let mut f = Filter::new("rh", QoS::AtMostOnce);
    f.retain_forward_rule = RetainForwardRule::Never;
    never.subscribe_filter(f, None).await;
    never.no_publish(QUIET).await;

    let mut on_new = v5::connect_id(b.addr, "onnew").await;
    let mut f = Filter::new("rh", QoS::AtMostOnce);
    f.retain_forward_rule = RetainForwardRule::OnNewSubscribe;
    on_new.subscribe_filter(f.clone(), None).await;
    assert!(on_new.publish().await.retain);
    on_new.subscribe_filter(f, None).await;
    on_new.no_publish(QUIET).await;

    let mut rap = v5::connect_id(b.addr, "rap").await;
    let mut f = Filter::new("rh", QoS::AtMostOnce);
    f.preserve_retain = true;
    f.retain_forward_rule = RetainForwardRule::Never;
    rap.subscribe_filter(f, None).await;
    p.client
        .publish("rh", QoS::AtMostOnce, true, "live")
        .await
        .unwrap();
    assert!(rap.publish().await.retain, "retain as published");
}

#[tokio::test]
async fn subscription_identifiers_are_sent_back() {
    let b = start_broker("").await;
    let mut s = v5::connect_id(b.addr, "ids").await;
    s.subscribe_filter(Filter::new("sid/#", QoS::AtMostOnce), Some(7))
        .await;
    s.subscribe_filter(Filter::new("sid/+", QoS::AtMostOnce), Some(9))
        .await;
    let p = v5::connect_id(b.addr, "p").await;
    p.client
        .publish("sid/x", QoS::AtMostOnce, false, "x")
        .await
        .unwrap();
    let m = s.publish().await;
    let mut ids = m.properties.expect("properties").subscription_identifiers;
    ids.sort();
    assert_eq!(ids, vec![7, 9]);
}

#[tokio::test]
async fn shared_subscription_delivers_each_message_to_one_member() {
    let b = start_broker("").await;
    let mut m1 = v5::connect_id(b.addr, "m1").await;
    let mut m2 = v5::connect_id(b.addr, "m2").await;
    m1.subscribe("$share/g/jobs/#", QoS::AtLeastOnce).await;
    m2.subscribe("$share/g/jobs/#", QoS::AtLeastOnce).await;
    // A 3.1.1 member too.
    let mut m3 = common::connect_id(b.addr, "m3").await;
    m3.subscribe("$share/g/jobs/#", rumqttc::QoS::AtLeastOnce)
        .await;
    let p = v5::connect_id(b.addr, "p").await;
    for i in 0..30 {
        p.client
            .publish("jobs/x", QoS::AtLeastOnce, false, format!("{i}"))
            .await
            .unwrap();
    }
    let mut got = Vec::new();
    for (n, c) in [(10, &mut m1), (10, &mut m2)] {
        for _ in 0..n {
            got.push(String::from_utf8(c.publish().await.payload.to_vec()).unwrap());
        }
    }
    for _ in 0..10 {
        got.push(String::from_utf8(m3.publish().await.payload.to_vec()).unwrap());
    }
    got.sort_by_key(|s| s.parse::<u32>().unwrap());
    assert_eq!(got, (0..30).map(|i| i.to_string()).collect::<Vec<_>>());
    m1.no_publish(QUIET).await;
}

#[tokio::test]
async fn will_delay_is_cancelled_by_a_timely_reconnect() {
    let b = start_broker("").await;
    let mut watcher = v5::connect_id(b.addr, "w").await;
    watcher.subscribe("wd/#", QoS::AtMostOnce).await;

    let will = |delay| {
        rumqttc::v5::mqttbytes::v5::LastWill::new(
            "wd/dev",
            "offline",
            QoS::AtMostOnce,
            false,
            Some(will_props(delay, None)),
        )
    };
    let mut o = v5::options(b.addr, "dev");
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(60));
    o.set_last_will(will(2));
    v5::connect(o.clone()).await.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _c = v5::connect(o.clone()).await; // back in time
    watcher.no_publish(Duration::from_millis(2500)).await;
}

#[tokio::test]
async fn will_delay_sends_will_after_the_delay() {
    let b = start_broker("").await;
    let mut watcher = v5::connect_id(b.addr, "w").await;
    watcher.subscribe("wd2/#", QoS::AtMostOnce).await;
    let mut o = v5::options(b.addr, "dev2");
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(60));
    o.set_last_will(rumqttc::v5::mqttbytes::v5::LastWill::new(
        "wd2/dev",
        "offline",
        QoS::AtMostOnce,
        false,
        Some(will_props(1, Some("text/plain"))),
    ));
    let c = v5::connect(o).await;
    let started = std::time::Instant::now();
    c.kill();
    let will = watcher.publish().await;
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(&will.payload[..], b"offline");
    let props = will.properties.expect("will properties");
    assert_eq!(props.content_type.as_deref(), Some("text/plain"));
}

#[tokio::test]
async fn v311_and_v5_clients_interoperate() {
    let b = start_broker("").await;
    let mut v5c = v5::connect_id(b.addr, "five").await;
    v5c.subscribe("mix/#", QoS::ExactlyOnce).await;
    let mut v3c = common::connect_id(b.addr, "three").await;
    v3c.subscribe("mix/#", rumqttc::QoS::ExactlyOnce).await;
    v3c.client
        .publish("mix/a", rumqttc::QoS::ExactlyOnce, false, "from3")
        .await
        .unwrap();
    let props = PublishProperties {
        user_properties: vec![("x".into(), "y".into())],
        ..Default::default()
    };
    v5c.publish_props("mix/b", QoS::AtLeastOnce, false, "from5", props)
        .await;
    let mut five_got = [v5c.publish().await, v5c.publish().await];
    five_got.sort_by(|a, b| a.topic.cmp(&b.topic));
    assert_eq!(&five_got[0].payload[..], b"from3");
    let mut three_got = [v3c.publish().await, v3c.publish().await];
    three_got.sort_by(|a, b| a.topic.cmp(&b.topic));
    assert_eq!(&three_got[1].payload[..], b"from5");
}

#[tokio::test]
async fn topic_alias_from_client_is_resolved() {
    let b = start_broker("").await;
    let mut s = v5::connect_id(b.addr, "s").await;
    s.subscribe("alias/t", QoS::AtMostOnce).await;
    let mut raw = Raw::connect(b.addr).await;
    raw.send(&connect_v5_bytes("a", 60)).await;
    raw.read().await.expect("CONNACK");
    // PUBLISH alias/t with topic alias 1, then empty topic with alias 1.
    let mut first = vec![0, 7];
    first.extend_from_slice(b"alias/t");
    first.extend_from_slice(&[3, 0x23, 0, 1, b'1']);
    raw.send(&frame(0x30, &first)).await;
    raw.send(&frame(0x30, &[0, 0, 3, 0x23, 0, 1, b'2'])).await;
    assert_eq!(&s.publish().await.payload[..], b"1");
    let m = s.publish().await;
    assert_eq!(&m.payload[..], b"2");
    assert_eq!(&m.topic[..], b"alias/t");
    // An unknown alias is a protocol error.
    raw.send(&frame(0x30, &[0, 0, 3, 0x23, 0, 2, b'3'])).await;
    let (h, body) = raw.read().await.expect("DISCONNECT");
    assert_eq!((h, body[0]), (0xe0, 0x82));
}

#[tokio::test]
async fn receive_maximum_exceeded_disconnects_with_0x93() {
    let b = start_broker("mqtt:\n  receive_maximum: 2\n").await;
    let mut raw = Raw::connect(b.addr).await;
    raw.send(&connect_v5_bytes("r", 60)).await;
    raw.read().await.expect("CONNACK");
    for id in 1..=3u8 {
        // QoS 2 PUBLISH "t", id, no properties, never released.
        raw.send(&frame(0x34, &[0, 1, b't', 0, id, 0, b'x'])).await;
    }
    let mut codes = Vec::new();
    while let Some((h, body)) = raw.read().await {
        codes.push((h, body.get(2).copied().or(body.first().copied())));
        if h == 0xe0 {
            assert_eq!(body[0], 0x93);
            return;
        }
    }
    panic!("no DISCONNECT 0x93, got {codes:?}");
}

#[tokio::test]
async fn oversized_messages_are_not_sent_to_clients_that_refuse_them() {
    let b = start_broker("").await;
    let mut o = v5::options(b.addr, "small");
    o.set_max_packet_size(Some(100));
    let mut s = v5::connect(o).await;
    s.subscribe("big/#", QoS::AtLeastOnce).await;
    let p = v5::connect_id(b.addr, "p").await;
    p.client
        .publish("big/1", QoS::AtLeastOnce, false, vec![b'x'; 500])
        .await
        .unwrap();
    p.client
        .publish("big/2", QoS::AtLeastOnce, false, "small")
        .await
        .unwrap();
    let m = s.publish().await;
    assert_eq!(&m.payload[..], b"small");
}

#[tokio::test]
async fn disconnect_with_will_publishes_the_will() {
    let b = start_broker("").await;
    let mut watcher = v5::connect_id(b.addr, "w").await;
    watcher.subscribe("dww", QoS::AtMostOnce).await;
    let mut raw = Raw::connect(b.addr).await;
    // CONNECT v5 with will (flag 0x04), no props, will props empty.
    let mut body = vec![
        0, 4, b'M', b'Q', b'T', b'T', 5, 0x06, 0, 60, 0, 0, 1, b'd', 0,
    ];
    body.extend_from_slice(&[0, 3, b'd', b'w', b'w', 0, 1, b'!']);
    raw.send(&frame(0x10, &body)).await;
    raw.read().await.expect("CONNACK");
    raw.send(&[0xe0, 1, 0x04]).await;
    assert_eq!(&watcher.publish().await.payload[..], b"!");
}

fn will_props(delay: u32, content_type: Option<&str>) -> LastWillProperties {
    LastWillProperties {
        delay_interval: Some(delay),
        payload_format_indicator: None,
        message_expiry_interval: None,
        content_type: content_type.map(str::to_string),
        response_topic: None,
        correlation_data: None,
        user_properties: vec![],
    }
}
