//! The WebSocket listener's upgrade request and frames: they must never panic, and the MQTT
//! bytes read out of the frames are never more than the client sent.
//!
//! The checks are in `vmq_node::fuzz::websocket`, shared with the stable harness in
//! `node/tests/fuzz.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vmq_node::fuzz::websocket(data);
});
