//! The cluster transport's framing: hello, stream header and frame lengths, control frames,
//! forwarded publishes (the first byte picks which).
//!
//! The checks are in `vmq_node::fuzz::cluster_frames`, shared with the stable harness in
//! `node/tests/fuzz.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vmq_node::fuzz::cluster_frames(data);
});
