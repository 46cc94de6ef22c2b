//! The MQTT codec: the first byte picks the protocol version, the rest is decoded packet by
//! packet, and every packet decoded must encode and decode back to itself.
//!
//! The checks are in `vmq_node::fuzz::mqtt`, shared with the stable harness in
//! `node/tests/fuzz.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vmq_node::fuzz::mqtt(data);
});
