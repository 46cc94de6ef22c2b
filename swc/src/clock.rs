//! Replica ids, dots, version vectors and the node clock (a bitmapped version vector).
//!
//! Gonçalves et al., "Concise Server-Wide Causality Management for Eventually Consistent Data
//! Stores" (DAIS 2015), §4.1, and the Erlang modules `swc_node` / `swc_vv` of ServerWideClocks.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use vmq_storage::metadata::NodeId;

/// The identity that stamps dots: a node name and an incarnation.
///
/// VerneMQ uses `{NodeName, Actor}` with a fresh actor on every wiped start
/// (`vmq_swc_peer_service_manager:gen_actor/0`). Here the incarnation is kept in the store, so a
/// restart keeps the id, and a new incarnation is drawn only when the node leaves the cluster or
/// its store is lost; the old id is then retired and pruned from clocks.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ReplicaId {
    /// The node this replica runs on.
    pub node: NodeId,
    /// Distinguishes successive lives of the same node name.
    pub incarnation: u32,
}

impl ReplicaId {
    /// A replica id.
    pub fn new(node: NodeId, incarnation: u32) -> Self {
        Self { node, incarnation }
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.node, self.incarnation)
    }
}

/// One event: the `counter`-th write coordinated by `id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Dot {
    /// The replica that made the write.
    pub id: ReplicaId,
    /// Its sequence number at that replica, from 1.
    pub counter: u64,
}

impl Dot {
    /// A dot.
    pub fn new(id: ReplicaId, counter: u64) -> Self {
        Self { id, counter }
    }
}

/// A version vector: for each replica, the highest counter covered (every dot `<=` it).
/// Zero entries are never stored (`swc_vv`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VersionVector(BTreeMap<ReplicaId, u64>);

impl VersionVector {
    /// The empty vector.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counter for `id` (0 when absent).
    pub fn counter(&self, id: &ReplicaId) -> u64 {
        self.0.get(id).copied().unwrap_or(0)
    }

    /// True when `dot` is covered.
    pub fn covers(&self, dot: &Dot) -> bool {
        self.counter(&dot.id) >= dot.counter
    }

    /// Raises the entry of `id` to at least `counter`.
    pub fn raise(&mut self, id: &ReplicaId, counter: u64) {
        if counter == 0 {
            return;
        }
        match self.0.get_mut(id) {
            Some(c) => *c = (*c).max(counter),
            None => {
                self.0.insert(id.clone(), counter);
            }
        }
    }

    /// Pointwise maximum (`swc_vv:join/2`).
    pub fn join(&mut self, other: &VersionVector) {
        for (id, c) in &other.0 {
            self.raise(id, *c);
        }
    }

    /// Drops every entry covered by `base` (`swc_kv:strip/2`, on contexts).
    pub fn strip(&mut self, base: &VersionVector) {
        self.0.retain(|id, c| *c > base.counter(id));
        if self.0.is_empty() {
            // A map emptied by `retain` keeps its node (some 400 bytes); a stored object's
            // context is almost always empty once stripped, one per key for the key's life.
            self.0 = BTreeMap::new();
        }
    }

    /// Removes the entry of `id`.
    pub fn remove(&mut self, id: &ReplicaId) {
        self.0.remove(id);
    }

    /// The entries, ordered by id.
    pub fn iter(&self) -> impl Iterator<Item = (&ReplicaId, u64)> {
        self.0.iter().map(|(id, c)| (id, *c))
    }

    /// True when no entry is stored.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// Most counters [`ClockEntry::missing_from`] returns for one replica in one exchange.
pub const MAX_MISSING_PER_ENTRY: usize = 100_000;

/// One row of a node clock: every counter `<= base`, plus the sparse `extra` counters above it.
///
/// The paper and `swc_node` store `extra` as a bitmap (bit `i` = `base + 1 + i`); a sorted set is
/// the same information, and gaps are rare and short-lived because anti-entropy fills them.
/// Normalised: `base + 1` is never in `extra` (`swc_node:norm/1`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ClockEntry {
    /// Contiguous prefix of seen counters.
    pub base: u64,
    /// Seen counters above `base + 1`.
    pub extra: BTreeSet<u64>,
}

impl ClockEntry {
    /// True when `counter` was seen.
    pub fn contains(&self, counter: u64) -> bool {
        counter <= self.base || self.extra.contains(&counter)
    }

    /// Marks `counter` as seen.
    pub fn add(&mut self, counter: u64) {
        if counter <= self.base {
            return;
        }
        self.extra.insert(counter);
        self.normalise();
    }

    /// Union with `other`.
    pub fn merge(&mut self, other: &ClockEntry) {
        if other.base > self.base {
            self.base = other.base;
        }
        let base = self.base;
        self.extra.retain(|c| *c > base);
        self.extra.extend(other.extra.iter().copied().filter(|c| *c > base));
        self.normalise();
    }

    /// The highest counter seen.
    pub fn max(&self) -> u64 {
        self.extra.last().copied().unwrap_or(self.base).max(self.base)
    }

    /// Counters seen here but not in `other`, ascending; at most [`MAX_MISSING_PER_ENTRY`],
    /// the lowest first. The entry may be a peer's: a huge `base` in it must not make this
    /// loop (or allocate) without end; what is left out is found by the next exchange.
    pub fn missing_from(&self, other: &ClockEntry) -> Vec<u64> {
        let mut out = Vec::new();
        let mut c = other.base.saturating_add(1);
        while c <= self.base && out.len() < MAX_MISSING_PER_ENTRY {
            if !other.extra.contains(&c) {
                out.push(c);
            }
            match c.checked_add(1) {
                Some(next) => c = next,
                None => break,
            }
        }
        let room = MAX_MISSING_PER_ENTRY - out.len();
        out.extend(self.extra.iter().copied().filter(|c| !other.contains(*c)).take(room));
        out
    }

    fn normalise(&mut self) {
        while self.extra.first() == Some(&(self.base + 1)) {
            self.extra.pop_first();
            self.base += 1;
        }
    }
}

/// The node clock: which dots of every replica this replica has seen (`swc_node`, the "BVV").
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeClock(BTreeMap<ReplicaId, ClockEntry>);

impl NodeClock {
    /// The empty clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// A clock from its entries.
    pub fn from_entries(entries: impl IntoIterator<Item = (ReplicaId, ClockEntry)>) -> Self {
        Self(entries.into_iter().collect())
    }

    /// True when `dot` was seen.
    pub fn contains(&self, dot: &Dot) -> bool {
        self.0.get(&dot.id).is_some_and(|e| e.contains(dot.counter))
    }

    /// Marks `dot` as seen (`swc_node:add/2`).
    pub fn add(&mut self, dot: &Dot) {
        if dot.counter == 0 {
            return;
        }
        self.0.entry(dot.id.clone()).or_default().add(dot.counter);
    }

    /// A new dot for `id` (`swc_node:event/2`). Our own entry never has gaps because only we
    /// mint our dots, but `max` keeps this safe even if one was merged in from elsewhere
    /// (VerneMQ #1363 crashed on exactly that).
    pub fn event(&mut self, id: &ReplicaId) -> Dot {
        let entry = self.0.entry(id.clone()).or_default();
        let counter = entry.max() + 1;
        entry.add(counter);
        Dot::new(id.clone(), counter)
    }

    /// Union with `other` (`swc_node:merge/2`).
    pub fn merge(&mut self, other: &NodeClock) {
        for (id, e) in &other.0 {
            self.0.entry(id.clone()).or_default().merge(e);
        }
    }

    /// The contiguous part only (`swc_node:base/1`).
    pub fn base(&self) -> VersionVector {
        let mut vv = VersionVector::new();
        for (id, e) in &self.0 {
            vv.raise(id, e.base);
        }
        vv
    }

    /// The entry of `id`, if any.
    pub fn entry(&self, id: &ReplicaId) -> Option<&ClockEntry> {
        self.0.get(id)
    }

    /// Dots in `self` that `other` has not seen (`swc_node:missing_dots/3`), by replica.
    pub fn missing_dots(&self, other: &NodeClock) -> Vec<(ReplicaId, Vec<u64>)> {
        let empty = ClockEntry::default();
        self.0
            .iter()
            .filter_map(|(id, e)| {
                let missing = e.missing_from(other.0.get(id).unwrap_or(&empty));
                (!missing.is_empty()).then(|| (id.clone(), missing))
            })
            .collect()
    }

    /// Forgets replica `id` (a retired replica whose dots are no longer held anywhere here).
    pub fn remove(&mut self, id: &ReplicaId) {
        self.0.remove(id);
    }

    /// The replicas with an entry.
    pub fn ids(&self) -> impl Iterator<Item = &ReplicaId> {
        self.0.keys()
    }

    /// True when no dot was ever seen.
    pub fn is_empty(&self) -> bool {
        self.0.values().all(|e| e.base == 0 && e.extra.is_empty())
    }

    /// Number of replicas with an entry.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: &str) -> ReplicaId {
        ReplicaId::new(NodeId::new(n), 1)
    }

    fn entry(base: u64, extra: &[u64]) -> ClockEntry {
        ClockEntry { base, extra: extra.iter().copied().collect() }
    }

    #[test]
    fn adding_the_next_counter_folds_the_bitmap_into_the_base() {
        // swc_node norm tests: {2,[4,5]} + 3 -> {5,[]}.
        let mut e = entry(2, &[4, 5]);
        e.add(3);
        assert_eq!(e, entry(5, &[]));
        e.add(7);
        assert_eq!(e, entry(5, &[7]));
        assert!(e.contains(4) && e.contains(7) && !e.contains(6));
    }

    #[test]
    fn merge_is_union_and_normalises() {
        let mut a = entry(2, &[5]);
        a.merge(&entry(3, &[4, 9]));
        assert_eq!(a, entry(5, &[9]));
    }

    #[test]
    fn missing_dots_lists_exactly_the_unseen_counters() {
        let mut remote = NodeClock::new();
        let mut local = NodeClock::new();
        for c in [1, 2, 3, 4, 6] {
            remote.add(&Dot::new(id("a"), c));
        }
        for c in [1, 3] {
            local.add(&Dot::new(id("a"), c));
        }
        remote.add(&Dot::new(id("b"), 1));
        assert_eq!(remote.missing_dots(&local), vec![(id("a"), vec![2, 4, 6]), (id("b"), vec![1])]);
        assert!(local.missing_dots(&remote).is_empty());
    }

    #[test]
    fn event_mints_consecutive_dots_even_after_a_gap_was_merged() {
        let mut c = NodeClock::new();
        assert_eq!(c.event(&id("a")).counter, 1);
        c.add(&Dot::new(id("a"), 5));
        assert_eq!(c.event(&id("a")).counter, 6);
    }

    #[test]
    fn a_huge_base_from_a_peer_yields_a_bounded_list() {
        let peer = entry(u64::MAX, &[]);
        let ours = entry(0, &[]);
        let missing = peer.missing_from(&ours);
        assert_eq!(missing.len(), MAX_MISSING_PER_ENTRY);
        assert_eq!(missing[..3], [1, 2, 3]);
        assert!(ours.missing_from(&peer).is_empty());
    }

    #[test]
    fn strip_drops_entries_covered_by_base() {
        let mut vv = VersionVector::new();
        vv.raise(&id("a"), 3);
        vv.raise(&id("b"), 9);
        let mut base = VersionVector::new();
        base.raise(&id("a"), 3);
        base.raise(&id("b"), 4);
        vv.strip(&base);
        assert_eq!(vv.counter(&id("a")), 0);
        assert_eq!(vv.counter(&id("b")), 9);
    }
}
