//! Property tests of the record encodings (`record`): every record
//! decodes back to what was encoded; any strict prefix of a record, or a
//! record with a byte more, is an error; and no bytes at all, random or a
//! valid record with one byte changed, make a decoder panic.
//!
//! Messages come from the codec's own generators (`codec::arbitrary`),
//! MQTT 5.0 properties included. A message's reception time is stored as
//! wall-clock milliseconds, so it comes back to the millisecond only.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

use super::record::{
    self, QueuedRecord, RecordError, SentStage, SessionRecord, SubscriptionRecord,
};
use crate::codec::arbitrary as gen;
use crate::codec::{ProtocolVersion, RetainHandling, SubscriptionOptions};
use crate::message::Message;
use crate::types::{ClientId, PacketId};

/// A message as the broker holds one: PUBLISH properties without a topic
/// alias or subscription identifiers (see `Message::from_publish`),
/// received up to a day ago.
fn message() -> impl Strategy<Value = Arc<Message>> {
    let publisher =
        option::of("[a-zA-Z0-9_-]{0,23}".prop_map(|s: String| ClientId::new(s.as_str())));
    (
        gen::publish(ProtocolVersion::V5),
        publisher,
        0u64..86_400_000,
    )
        .prop_map(|(p, publisher, age_ms)| {
            let mut properties = p.properties;
            properties.topic_alias = None;
            properties.subscription_identifiers.clear();
            let now = Instant::now();
            Arc::new(Message {
                topic: p.topic,
                payload: p.payload,
                qos: p.qos,
                retain: p.retain,
                properties,
                publisher,
                received_at: now
                    .checked_sub(Duration::from_millis(age_ms))
                    .unwrap_or(now),
            })
        })
}

fn queued() -> impl Strategy<Value = QueuedRecord> {
    (
        message(),
        gen::qos(),
        any::<bool>(),
        vec(1u32..=268_435_455, 0..5),
    )
        .prop_map(|(msg, qos, retain, sub_ids)| QueuedRecord {
            msg,
            qos,
            retain,
            sub_ids,
        })
}

/// A stored time: never 0 (0 stands for "none" on disk).
fn wall_time() -> impl Strategy<Value = Option<u64>> {
    option::of(1u64..)
}

fn session() -> impl Strategy<Value = SessionRecord> {
    (
        gen::version(),
        any::<u32>(),
        wall_time(),
        wall_time(),
        option::of(gen::will(ProtocolVersion::V5)),
    )
        .prop_map(
            |(protocol, expiry_secs, disconnected_at_ms, will_due_ms, will)| SessionRecord {
                protocol,
                expiry_secs,
                disconnected_at_ms,
                will,
                will_due_ms,
            },
        )
}

fn subscription() -> impl Strategy<Value = SubscriptionRecord> {
    let rh = prop::sample::select(
        &[
            RetainHandling::SendAtSubscribe,
            RetainHandling::SendIfNew,
            RetainHandling::DoNotSend,
        ][..],
    );
    (
        gen::qos(),
        any::<bool>(),
        any::<bool>(),
        rh,
        option::of(any::<u32>()),
    )
        .prop_map(
            |(qos, no_local, retain_as_published, retain_handling, subscription_id)| {
                SubscriptionRecord {
                    options: SubscriptionOptions {
                        qos,
                        no_local,
                        retain_as_published,
                        retain_handling,
                    },
                    subscription_id,
                }
            },
        )
}

fn sent() -> impl Strategy<Value = SentStage> {
    (gen::packet_id(), any::<bool>()).prop_map(|(id, released)| {
        if released {
            SentStage::Released(id)
        } else {
            SentStage::Published(id)
        }
    })
}

fn encode_message(m: &Message) -> Vec<u8> {
    let mut buf = BytesMut::new();
    record::encode_message(&mut buf, m);
    buf.to_vec()
}

/// The two messages are the same, their reception times to the
/// millisecond (each reading of the clocks may land on either side of a
/// millisecond's edge).
fn same_message(a: &Message, b: &Message) -> Result<(), TestCaseError> {
    prop_assert_eq!(&a.topic, &b.topic);
    prop_assert_eq!(&a.payload, &b.payload);
    prop_assert_eq!(a.qos, b.qos);
    prop_assert_eq!(a.retain, b.retain);
    prop_assert_eq!(&a.properties, &b.properties);
    prop_assert_eq!(&a.publisher, &b.publisher);
    let (ta, tb) = (
        record::wall_ms(a.received_at),
        record::wall_ms(b.received_at),
    );
    prop_assert!(ta.abs_diff(tb) <= 2, "received at {ta} ms, back as {tb} ms");
    Ok(())
}

/// Every strict prefix of `bytes` and `bytes` plus one byte fail to
/// decode (and do not panic).
fn only_whole<T: std::fmt::Debug>(
    bytes: &[u8],
    decode: impl Fn(&[u8]) -> Result<T, RecordError>,
) -> Result<(), TestCaseError> {
    for end in 0..bytes.len() {
        let r = decode(&bytes[..end]);
        prop_assert!(r.is_err(), "prefix of {} bytes decoded: {:?}", end, r);
    }
    let mut longer = bytes.to_vec();
    longer.push(0);
    prop_assert_eq!(
        decode(&longer).err(),
        Some(RecordError::Invalid("trailing bytes"))
    );
    Ok(())
}

/// Runs every decoder on `bytes`: none may panic.
fn decode_all(bytes: &[u8]) {
    let _ = record::decode_message(bytes);
    let _ = record::decode_queued(bytes);
    let _ = record::decode_session(bytes);
    let _ = record::decode_subscription(bytes);
    let _ = record::decode_sent(bytes);
}

/// A valid record of some kind, encoded.
fn any_record() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        message().prop_map(|m| encode_message(&m)),
        queued().prop_map(|q| record::encode_queued(&q)),
        session().prop_map(|s| record::encode_session(&s)),
        subscription().prop_map(|s| record::encode_subscription(&s).to_vec()),
        sent().prop_map(|s| record::encode_sent(s).to_vec()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn message_round_trips(m in message()) {
        let bytes = encode_message(&m);
        let back = record::decode_message(&bytes).expect("decodes");
        same_message(&m, &back)?;
        only_whole(&bytes, record::decode_message)?;
    }

    #[test]
    fn queued_record_round_trips(q in queued()) {
        let bytes = record::encode_queued(&q);
        let back = record::decode_queued(&bytes).expect("decodes");
        prop_assert_eq!(back.qos, q.qos);
        prop_assert_eq!(back.retain, q.retain);
        prop_assert_eq!(&back.sub_ids, &q.sub_ids);
        same_message(&q.msg, &back.msg)?;
        only_whole(&bytes, record::decode_queued)?;
    }

    #[test]
    fn session_record_round_trips(s in session()) {
        let bytes = record::encode_session(&s);
        let back = record::decode_session(&bytes).expect("decodes");
        prop_assert_eq!(back.protocol, s.protocol);
        prop_assert_eq!(back.expiry_secs, s.expiry_secs);
        prop_assert_eq!(back.disconnected_at_ms, s.disconnected_at_ms);
        prop_assert_eq!(back.will_due_ms, s.will_due_ms);
        prop_assert_eq!(&back.will, &s.will);
        only_whole(&bytes, record::decode_session)?;
    }

    #[test]
    fn subscription_record_round_trips(s in subscription()) {
        let bytes = record::encode_subscription(&s);
        prop_assert_eq!(record::decode_subscription(&bytes), Ok(s));
        only_whole(&bytes, record::decode_subscription)?;
    }

    #[test]
    fn sent_stage_round_trips(s in sent()) {
        let bytes = record::encode_sent(s);
        prop_assert_eq!(record::decode_sent(&bytes), Ok(s));
        only_whole(&bytes, record::decode_sent)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..200)) {
        decode_all(&bytes);
    }

    #[test]
    fn records_of_version_1_with_random_bodies_never_panic(body in vec(any::<u8>(), 0..200)) {
        let mut bytes = vec![1];
        bytes.extend_from_slice(&body);
        decode_all(&bytes);
    }

    #[test]
    fn a_changed_byte_never_panics(
        (bytes, at, value) in any_record().prop_flat_map(|b| {
            let len = b.len();
            (Just(b), 0..len, any::<u8>())
        })
    ) {
        let mut bytes = bytes;
        bytes[at] = value;
        decode_all(&bytes);
    }
}

#[test]
fn unknown_versions_and_flags_are_errors() {
    let sub = SubscriptionRecord {
        options: SubscriptionOptions::with_qos(crate::types::QoS::AtLeastOnce),
        subscription_id: None,
    };
    let mut bytes = record::encode_subscription(&sub);
    bytes[0] = 2;
    assert_eq!(
        record::decode_subscription(&bytes),
        Err(RecordError::Version(2))
    );
    let id = PacketId::new(7).expect("non-zero");
    let mut sent = record::encode_sent(SentStage::Released(id));
    sent[1] = 3;
    assert_eq!(
        record::decode_sent(&sent),
        Err(RecordError::Invalid("sent stage"))
    );
    assert_eq!(
        record::decode_sent(&[1, 1, 0, 0]),
        Err(RecordError::Invalid("packet id 0"))
    );
}
