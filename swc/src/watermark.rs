//! The watermark matrix (`swc_watermark`; paper §4.3).
//!
//! Cell `[origin][peer]` is how far `peer` is known to have seen the dots of `origin`
//! contiguously. The minimum of a row over the current peers (this replica included) is the
//! counter up to which every peer has every dot of `origin`: a tombstone whose dots are all at or
//! below that can be removed without any replica ever asking for it again.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::clock::{ClockEntry, Dot, NodeClock, ReplicaId};

/// A matrix of clock entries: rows are origins, columns are peers.
///
/// `swc_watermark` keeps only each peer's contiguous base per cell. A cell here is the peer's
/// whole entry (base and bitmap): when a replica leaves for good with some of its dots never
/// delivered, the gap below its last dots is never filled, and a base-only watermark would
/// never let its later tombstones go.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Watermark(BTreeMap<ReplicaId, BTreeMap<ReplicaId, ClockEntry>>);

impl Watermark {
    /// The empty matrix.
    pub fn new() -> Self {
        Self::default()
    }

    /// Merges `peer`'s node clock into its column (`swc_watermark:update_peer/3`). Cells only
    /// grow, as clocks do.
    pub fn update_peer(&mut self, peer: &ReplicaId, clock: &NodeClock) {
        for id in clock.ids() {
            if let Some(e) = clock.entry(id) {
                self.merge_cell(id, peer, e);
            }
        }
    }

    /// Merges an entry into one cell (`swc_watermark:update_cell/4`).
    pub fn merge_cell(&mut self, origin: &ReplicaId, peer: &ReplicaId, entry: &ClockEntry) {
        if entry.base == 0 && entry.extra.is_empty() {
            return;
        }
        self.0.entry(origin.clone()).or_default().entry(peer.clone()).or_default().merge(entry);
    }

    /// Records that `peer` has seen every dot of `origin` up to `counter`.
    pub fn raise(&mut self, origin: &ReplicaId, peer: &ReplicaId, counter: u64) {
        let entry = ClockEntry { base: counter, extra: Default::default() };
        self.merge_cell(origin, peer, &entry);
    }

    /// The cell of `origin` and `peer`.
    pub fn cell(&self, origin: &ReplicaId, peer: &ReplicaId) -> Option<&ClockEntry> {
        self.0.get(origin).and_then(|row| row.get(peer))
    }

    /// True when every replica in `peers` is known to have seen `dot`: it can be forgotten
    /// without anyone asking for it again (the condition of `swc_watermark:min/2`).
    pub fn seen_by_all(&self, dot: &Dot, peers: &[ReplicaId]) -> bool {
        peers.iter().all(|p| self.cell(&dot.id, p).is_some_and(|e| e.contains(dot.counter)))
    }

    /// The counter up to which every replica in `peers` has every dot of `origin`; 0 when some
    /// peer's column is unknown.
    pub fn min(&self, origin: &ReplicaId, peers: &[ReplicaId]) -> u64 {
        peers.iter().map(|p| self.cell(origin, p).map_or(0, |e| e.base)).min().unwrap_or(0)
    }

    /// Merges a peer's matrix, for the columns in `peers` only, so that knowledge about retired
    /// replicas is not imported back (`swc_watermark:left_join/2`).
    pub fn left_join(&mut self, remote: &Watermark, peers: &[ReplicaId]) {
        for (origin, row) in &remote.0 {
            for (peer, entry) in row {
                if peers.contains(peer) {
                    self.merge_cell(origin, peer, entry);
                }
            }
        }
    }

    /// Drops the column of a retired peer, so that it no longer holds back collection.
    pub fn remove_peer(&mut self, peer: &ReplicaId) {
        for row in self.0.values_mut() {
            row.remove(peer);
        }
        self.0.retain(|_, row| !row.is_empty());
    }

    /// Drops the row of a retired origin.
    pub fn remove_origin(&mut self, origin: &ReplicaId) {
        self.0.remove(origin);
    }

    /// Every replica that has a column.
    pub fn peers(&self) -> Vec<ReplicaId> {
        let mut out: Vec<ReplicaId> = self.0.values().flat_map(|r| r.keys().cloned()).collect();
        out.sort();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmq_storage::metadata::NodeId;

    fn id(n: &str) -> ReplicaId {
        ReplicaId::new(NodeId::new(n), 1)
    }

    fn clock(dots: &[(&str, u64)]) -> NodeClock {
        let mut c = NodeClock::new();
        for (n, max) in dots {
            for k in 1..=*max {
                c.add(&Dot::new(id(n), k));
            }
        }
        c
    }

    #[test]
    fn min_is_over_the_given_peers_and_zero_for_unknown_columns() {
        let mut wm = Watermark::new();
        wm.update_peer(&id("a"), &clock(&[("a", 5), ("b", 2)]));
        wm.update_peer(&id("b"), &clock(&[("a", 3), ("b", 4)]));
        assert_eq!(wm.min(&id("a"), &[id("a"), id("b")]), 3);
        assert_eq!(wm.min(&id("b"), &[id("a"), id("b")]), 2);
        assert_eq!(wm.min(&id("a"), &[id("a"), id("b"), id("c")]), 0);
    }

    #[test]
    fn left_join_takes_the_maximum_for_known_peers_only() {
        let mut local = Watermark::new();
        local.raise(&id("a"), &id("b"), 2);
        let mut remote = Watermark::new();
        remote.raise(&id("a"), &id("b"), 7);
        remote.raise(&id("a"), &id("gone"), 9);
        local.left_join(&remote, &[id("a"), id("b")]);
        assert_eq!(local.min(&id("a"), &[id("b")]), 7);
        assert_eq!(local.peers(), vec![id("b")]);
    }

    #[test]
    fn a_dot_above_a_gap_is_seen_by_all_when_every_bitmap_has_it() {
        let mut gap = NodeClock::new();
        gap.add(&Dot::new(id("gone"), 2));
        let mut wm = Watermark::new();
        wm.update_peer(&id("a"), &gap);
        wm.update_peer(&id("b"), &gap);
        let peers = [id("a"), id("b")];
        assert!(wm.seen_by_all(&Dot::new(id("gone"), 2), &peers));
        assert!(!wm.seen_by_all(&Dot::new(id("gone"), 1), &peers));
        assert_eq!(wm.min(&id("gone"), &peers), 0);
    }

    #[test]
    fn removing_a_peer_unblocks_the_minimum() {
        let mut wm = Watermark::new();
        wm.raise(&id("a"), &id("a"), 9);
        wm.raise(&id("a"), &id("b"), 1);
        wm.remove_peer(&id("b"));
        assert_eq!(wm.min(&id("a"), &[id("a")]), 9);
    }
}
