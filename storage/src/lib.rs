//! Durable state of a vmq-rs node.
//!
//! - [`Store`]: an ordered key-value store with atomic write batches, point reads and prefix
//!   scans, split into [`Column`]s (one per concern). [`MemStore`] is the reference
//!   implementation and the test double; the RocksDB one sits behind the `rocksdb` feature.
//! - [`MessageStore`]: the offline queues of persistent sessions, built on any [`Store`]:
//!   [`StoreMessageStore`] writes on the caller's thread, [`GroupCommitMessageStore`] groups
//!   concurrent appends into one write and one fsync (the one the node uses).
//! - `RocksStore` and `RocksConfig` (feature `rocksdb`): the node's database, one per node,
//!   one column family per [`Column`]; see the crate README for settings and bad days.
//! - [`metadata`]: the contract shared by the two metadata backends (`vmq-swc`, `vmq-plumtree`),
//!   so that the node drives either with one driver.
//! - `sim` (feature `sim`): one deterministic simulation for any metadata backend, and the
//!   scenario and property suite every backend's tests run on it.
//!
//! Nothing here does network I/O; nothing here reads the clock.

#[cfg(any(test, feature = "contract-tests"))]
pub mod contract;
mod error;
mod group_commit;
mod mem;
mod message_store;
pub mod metadata;
#[cfg(feature = "rocksdb")]
mod rocks;
#[cfg(feature = "sim")]
pub mod sim;
mod store;

pub use error::StoreError;
pub use group_commit::{DurabilityPolicy, GroupCommitConfig, GroupCommitMessageStore, GroupCommitStats};
pub use mem::MemStore;
pub use message_store::{AppendDone, DeleteDone, MessageSeq, MessageStore, QueueKey, StoreMessageStore, StoredMessage};
#[cfg(feature = "rocksdb")]
pub use rocks::{Compression, RocksConfig, RocksStore, format_size, parse_size};
pub use store::{BatchOp, Column, Durability, KeyValue, Store, WriteBatch};
