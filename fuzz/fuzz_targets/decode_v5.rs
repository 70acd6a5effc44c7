//! Raw bytes into the decoder of a connection that negotiated MQTT 5.0.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mqttd::codec::ProtocolVersion;

fuzz_target!(|data: &[u8]| {
    mqttd_fuzz::decode_loop(data, ProtocolVersion::V5);
});
