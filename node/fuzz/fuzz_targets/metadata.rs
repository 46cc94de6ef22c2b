//! The metadata wire formats: SWC and plumtree messages, metadata keys and values, the
//! cluster's metadata and RPC frames, stored deliveries (the first byte picks which).
//!
//! The checks are in `vmq_node::fuzz::metadata`, shared with the stable harness in
//! `node/tests/fuzz.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vmq_node::fuzz::metadata(data);
});
