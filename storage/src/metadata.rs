//! The contract between the node and a metadata backend (`vmq-swc` or `vmq-plumtree`).
//!
//! Both backends are sans-IO replicas of a `(prefix, key) -> values` map. The node's driver
//! task owns one replica and runs this loop:
//!
//! 1. feed one input: [`MetadataBackend::handle_local`], [`MetadataBackend::handle_message`],
//!    [`MetadataBackend::handle_timeout`], [`MetadataBackend::handle_persisted`],
//!    [`MetadataBackend::handle_membership`] or [`MetadataBackend::handle_reachability`];
//! 2. drain the outputs in this order: [`MetadataBackend::poll_write`] (write each batch to the
//!    [`crate::Store`], then call `handle_persisted(token)`), [`MetadataBackend::poll_transmit`]
//!    (send to the peer), [`MetadataBackend::poll_event`] (update the routing trie / retained
//!    store), and finally [`MetadataBackend::poll_timeout`] (arm the timer).
//!
//! Durability rule: a message that reveals a write is only returned by `poll_transmit` after
//! that write's `handle_persisted`. Replicas never read the clock or the OS RNG: time comes in
//! as [`Millis`], randomness as a seed given to the constructor.
//!
//! Construction is backend-specific: each crate has `Replica::new(config, node_id, rng_seed,
//! recovered)` where `recovered` is loaded from a [`crate::Store`] by that crate.

use std::fmt;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::WriteBatch;

/// A cluster member's name, e.g. `vmq1@127.0.0.1` (VerneMQ's `nodename`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(pub String);

impl NodeId {
    /// A node id from its name.
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A point in time in milliseconds, on a clock chosen by the caller (monotonic in the node,
/// virtual in simulations). Only differences between values are meaningful.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
pub struct Millis(pub u64);

impl Millis {
    /// `self + ms`, saturating.
    pub fn plus(self, ms: u64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }
}

/// The prefix the broker stores subscriptions under: key `(mountpoint, client_id)`.
pub const PREFIX_SUBSCRIBER: &str = "subscriber";
/// The prefix the broker stores retained messages under: key `(mountpoint, topic)`.
pub const PREFIX_RETAIN: &str = "retain";

/// A replicated key: a prefix (a concern, e.g. [`PREFIX_SUBSCRIBER`]) and an opaque key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MetaKey {
    /// The concern this key belongs to.
    pub prefix: String,
    /// The key within the prefix, encoded by the node.
    pub key: Vec<u8>,
}

impl MetaKey {
    /// A key under `prefix`.
    pub fn new(prefix: impl Into<String>, key: impl Into<Vec<u8>>) -> Self {
        Self { prefix: prefix.into(), key: key.into() }
    }
}

/// A replicated value. The replica treats `data` as opaque; `timestamp` (a hybrid logical
/// timestamp chosen by the writer) orders siblings for last-writer-wins resolution.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MetaValue {
    /// Writer's hybrid timestamp (wall-clock milliseconds << 16 | logical counter).
    pub timestamp: u64,
    /// The value, encoded by the node.
    pub data: Vec<u8>,
}

/// Picks the last-writer-wins winner among siblings: highest timestamp, ties broken by the
/// bytes so that every replica picks the same one.
pub fn lww(values: &[MetaValue]) -> Option<&MetaValue> {
    values.iter().max_by(|a, b| (a.timestamp, &a.data).cmp(&(b.timestamp, &b.data)))
}

/// A local mutation. `context` is the causal context returned by an earlier read of the same
/// key: the write supersedes exactly the values that read saw (and siblings written
/// concurrently elsewhere survive). `Context::default()` supersedes nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum LocalOp<C> {
    /// Writes `value` under `key`.
    Put {
        /// The key.
        key: MetaKey,
        /// The new value.
        value: MetaValue,
        /// Causal context from the read this write is based on.
        context: C,
    },
    /// Deletes `key` (a tombstone that replicates like a write).
    Delete {
        /// The key.
        key: MetaKey,
        /// Causal context from the read this delete is based on.
        context: C,
    },
}

/// The result of a read: every concurrent value (siblings) and the causal context that a
/// following write must pass to supersede them. No values means absent or deleted.
#[derive(Debug, Clone, PartialEq)]
pub struct Read<C> {
    /// Concurrent values; more than one means siblings to resolve.
    pub values: Vec<MetaValue>,
    /// Causal context covering `values`.
    pub context: C,
}

/// A change of a key, for subscribers of its prefix. `new` empty means deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataEvent {
    /// The key that changed.
    pub key: MetaKey,
    /// Values before the change.
    pub old: Vec<MetaValue>,
    /// Values after the change; empty when the key was deleted.
    pub new: Vec<MetaValue>,
    /// True when the change was caused by a local write on this replica.
    pub local: bool,
}

/// Identifies a write batch handed out by `poll_write`, acknowledged by `handle_persisted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WriteToken(pub u64);

/// A batch the driver must make durable, then acknowledge with its token.
#[derive(Debug)]
#[must_use]
pub struct PendingWrite {
    /// Acknowledge with `handle_persisted(token)` once `batch` is durable.
    pub token: WriteToken,
    /// The changes, for the [`crate::Column::Metadata`] column.
    pub batch: WriteBatch,
}

/// A sans-IO metadata replica. See the module documentation for the driving loop.
pub trait MetadataBackend {
    /// Wire message between replicas of this backend (serialised with postcard).
    type Message: Serialize + DeserializeOwned + fmt::Debug + Clone + Send + 'static;
    /// Causal context returned by reads and passed back with writes.
    type Context: Clone + Default + fmt::Debug + Send + 'static;

    /// A local put or delete.
    fn handle_local(&mut self, now: Millis, op: LocalOp<Self::Context>);
    /// A message from peer `from`.
    fn handle_message(&mut self, now: Millis, from: &NodeId, msg: Self::Message);
    /// The deadline from `poll_timeout` has passed.
    fn handle_timeout(&mut self, now: Millis);
    /// The batch of `token` is durable.
    fn handle_persisted(&mut self, token: WriteToken);
    /// The cluster members are now `members` (including this node).
    fn handle_membership(&mut self, now: Millis, members: &[NodeId]);
    /// `peer` became reachable or unreachable (anti-entropy only picks reachable peers).
    fn handle_reachability(&mut self, now: Millis, peer: &NodeId, reachable: bool);
    /// Emit events for keys under `prefix`; with `skip_local`, not for changes caused by
    /// local writes.
    fn subscribe(&mut self, prefix: &str, skip_local: bool);

    /// Reads a key: every sibling and the causal context.
    fn read(&self, key: &MetaKey) -> Read<Self::Context>;
    /// Calls `f` for every live key under `prefix` with its values (any order).
    fn fold(&self, prefix: &str, f: &mut dyn FnMut(&MetaKey, &[MetaValue]));
    /// True when this replica has never held any data written by anyone (safe to join a
    /// cluster; `prevent_nonempty_join`).
    fn is_empty_history(&self) -> bool;

    /// The next batch to persist.
    fn poll_write(&mut self) -> Option<PendingWrite>;
    /// The next message to send.
    fn poll_transmit(&mut self) -> Option<(NodeId, Self::Message)>;
    /// The next change event.
    fn poll_event(&mut self) -> Option<MetadataEvent>;
    /// When `handle_timeout` should next be called.
    fn poll_timeout(&self) -> Option<Millis>;

    /// Reads `key` and resolves siblings last-writer-wins; when there was more than one value
    /// the winner is written back with the merged context, so siblings collapse everywhere.
    fn read_resolved(&mut self, now: Millis, key: &MetaKey) -> Option<MetaValue> {
        let read = self.read(key);
        let winner = lww(&read.values)?.clone();
        if read.values.len() > 1 {
            self.handle_local(now, LocalOp::Put { key: key.clone(), value: winner.clone(), context: read.context });
        }
        Some(winner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lww_is_deterministic_on_timestamp_ties() {
        let a = MetaValue { timestamp: 5, data: b"a".to_vec() };
        let b = MetaValue { timestamp: 5, data: b"b".to_vec() };
        let old = MetaValue { timestamp: 1, data: b"z".to_vec() };
        assert_eq!(lww(&[a.clone(), b.clone(), old.clone()]), Some(&b));
        assert_eq!(lww(&[old, b.clone(), a]), Some(&b));
        assert_eq!(lww(&[]), None);
    }
}
