//! The PROXY protocol v1/v2 header reader of the listeners: it must stop at the end of the
//! header, and what it read must read back the same when written as a header again.
//!
//! The checks are in `vmq_node::fuzz::proxy`, shared with the stable harness in
//! `node/tests/fuzz.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vmq_node::fuzz::proxy(data);
});
