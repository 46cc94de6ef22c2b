//! Server-Wide Clocks metadata replica for vmq-rs (the `vmq_swc` metadata plugin).
//!
//! Replicates `(prefix, key) -> values` between cluster nodes so that every node converges on
//! the same subscriptions and retained messages whatever the network did, and so that deletes
//! are collected instead of piling up. The design follows Gonçalves et al., "Concise Server-Wide
//! Causality Management for Eventually Consistent Data Stores" (DAIS 2015), the DottedDB work,
//! and the Erlang library ServerWideClocks as VerneMQ uses it (`vmq_swc`):
//!
//! - [`clock`]: dots, version vectors and the node clock (base + bitmap per replica);
//! - [`dcc`]: the per-key dotted causal container with strip/fill/sync/discard;
//! - [`watermark`]: what every peer is known to have seen, which bounds garbage collection;
//! - [`dkm`]: the dot-key map that makes anti-entropy cost grow with what is missing;
//! - [`Replica`]: `swc_groups` independent groups behind the
//!   [`vmq_storage::metadata::MetadataBackend`] contract, with eager push, pull anti-entropy,
//!   tombstone collection, membership and persistence through [`vmq_storage::Store`];
//! - [`wire`]: the versioned postcard messages between replicas.
//!
//! The crate is sans-IO: no sockets, no clock reads, no OS randomness. Time comes in as
//! [`vmq_storage::metadata::Millis`], randomness as a seed, and every output is polled. The
//! `sim` feature adds a deterministic network simulation used by the tests.

pub mod clock;
pub mod config;
pub mod dcc;
pub mod dkm;
mod group;
pub mod persist;
mod replica;
#[cfg(feature = "sim")]
pub mod sim;
#[cfg(feature = "sim")]
mod simulated;
pub mod watermark;
pub mod wire;

pub use clock::{Dot, NodeClock, ReplicaId, VersionVector};
pub use config::SwcConfig;
pub use persist::{Recovered, load};
pub use replica::{PeerExchangeStats, Replica, ReplicaStats};
pub use wire::SwcMessage;
