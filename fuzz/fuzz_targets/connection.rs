//! Arbitrary client packet sequences, on up to two connections, into a
//! whole in-process broker (see `src/connection.rs`).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: mqttd_fuzz::connection::Scenario| {
    mqttd_fuzz::connection::run(s);
});
