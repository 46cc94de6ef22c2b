//! Plumtree metadata replica for vmq-rs, sans-IO: VerneMQ's `vmq_plumtree` backend
//! (`metadata_plugin = vmq_plumtree`), the alternative to `vmq_swc` for fast dissemination in
//! larger clusters.
//!
//! - Values are dotted version vector sets per key ([`DvvSet`]); concurrent writes are kept as
//!   siblings and resolved last-writer-wins with write-back (`read_resolved`).
//! - Writes are disseminated by Plumtree (Leitão, Pereira, Rodrigues, "Epidemic Broadcast
//!   Trees", SRDS 2007): eager push along a per-root spanning tree, lazy `i_have`
//!   announcements to the other links on a tick, `prune` on duplicates, `graft` on a missed
//!   message.
//! - Periodic anti-entropy exchanges with a random peer compare hash trees (prefix, buckets,
//!   segments, keys) and repair differing keys in both directions.
//! - Deletes are tombstones, reclaimed (**beyond** VerneMQ) once exchanges confirmed them on
//!   every member and `tombstone_grace_period` passed.
//!
//! Nothing here does I/O, reads the clock or the OS RNG: the node drives a [`Replica`] through
//! [`vmq_storage::metadata::MetadataBackend`]. The `sim` feature adds [`sim`], a simulated
//! network of replicas with faults, used by the property tests and benchmarks.

mod broadcast;
mod config;
mod dvv;
mod exchange;
mod hashtree;
mod message;
mod persist;
mod replica;
#[cfg(feature = "sim")]
pub mod sim;
#[cfg(feature = "sim")]
mod simulated;

pub use broadcast::{build_tree, init_peers};
pub use config::PlumtreeConfig;
pub use dvv::{DvvEntry, DvvSet, VersionVector};
pub use message::{
    BACKEND_NAME, BucketSegments, Hello, IHave, Message, MessageV1, Object, PROTOCOL_VERSION, PrefixBuckets,
    SegmentKeys, WireError, check_hello,
};
pub use persist::{FORMAT_VERSION, Recovered, load};
pub use replica::{PeerExchangeStats, Replica, ReplicaStats};
