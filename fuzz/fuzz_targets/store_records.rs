//! Raw bytes into every decoder of the store's records (what a damaged
//! or foreign store hands the broker at start-up): errors, never panics;
//! what decodes encodes back to a record that decodes the same.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mqttd::store::record;

fuzz_target!(|data: &[u8]| {
    if let Ok(q) = record::decode_queued(data) {
        let again = record::decode_queued(&record::encode_queued(&q)).expect("re-encoded record decodes");
        assert_eq!(again.msg.topic, q.msg.topic);
        assert_eq!(again.msg.payload, q.msg.payload);
        assert_eq!((again.qos, again.retain, &again.sub_ids), (q.qos, q.retain, &q.sub_ids));
    }
    if let Ok(s) = record::decode_session(data) {
        let again = record::decode_session(&record::encode_session(&s)).expect("re-encoded session decodes");
        assert_eq!(again.expiry_secs, s.expiry_secs);
        assert_eq!(again.will, s.will);
    }
    let _ = record::decode_message(data);
    let _ = record::decode_sent(data);
    let _ = record::decode_subscription(data);
});
