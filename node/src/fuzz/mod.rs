//! Fuzz targets for every decoder of bytes from outside the node, and a small mutation fuzzer
//! that runs them on stable Rust.
//!
//! The entry functions ([`mqtt`], [`proxy`], [`cluster_frames`], [`metadata`], [`websocket`])
//! are what every
//! fuzzer calls: the stable harness in `node/tests/fuzz.rs`, which CI runs for a bounded time,
//! and the cargo-fuzz targets in `node/fuzz/` for coverage-guided runs with libFuzzer (nightly).
//! Each must return on any input; a panic is a bug found. Where it is cheap, a target also
//! checks a property: what a decoder accepts encodes again and decodes to the same value.
//!
//! [`fuzz`] is the stable engine: a mutation fuzzer without coverage guidance (see `engine`).
//! It finds bugs a few mutations away from the seed corpora in `node/fuzz/corpus/<target>/`
//! (written from [`seeds`]), and is no substitute for a coverage-guided run.
//!
//! Adding a target: its function in a module here, one line in [`TARGETS`], its seeds in
//! [`seeds::for_target`], a test in `node/tests/fuzz.rs` and a file in `node/fuzz/fuzz_targets/`
//! (`node/fuzz/README.md`).

mod cluster_frames;
mod engine;
mod metadata_wire;
mod mqtt_codec;
mod mutate;
mod proxy_header;
pub mod seeds;
mod websocket_frames;

pub use cluster_frames::cluster_frames;
pub use engine::{Failure, MAX_INPUT, MAX_WORKING_SET, Stats, fuzz};
pub use metadata_wire::metadata;
pub use mqtt_codec::mqtt;
pub use proxy_header::proxy;
pub use websocket_frames::websocket;

/// A named entry function.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// The name: of its corpus directory, its test and its cargo-fuzz target.
    pub name: &'static str,
    /// Runs one input; panics only on a bug.
    pub run: fn(&[u8]),
}

/// Every target, one line each.
pub static TARGETS: &[Target] = &[
    Target { name: "mqtt", run: mqtt },
    Target { name: "proxy", run: proxy },
    Target { name: "cluster_frames", run: cluster_frames },
    Target { name: "metadata", run: metadata },
    Target { name: "websocket", run: websocket },
];

/// The target named `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}
