//! The dot-key map (`swc_dotkeymap`, VerneMQ's `vmq_swc_dkm`; DottedDB §4).
//!
//! Maps every dot held by some object to its key, so anti-entropy finds the objects for a list
//! of missing dots without scanning, and garbage collection finds tombstones by dot. Entries of
//! superseded versions leave on insert; `gc_candidates` are the keys whose object holds a delete
//! marker.

use std::collections::{BTreeMap, BTreeSet};

use vmq_storage::metadata::MetaKey;

use crate::clock::{Dot, ReplicaId};

/// Dot to key index plus the set of tombstoned keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DotKeyMap {
    dots: BTreeMap<ReplicaId, BTreeMap<u64, MetaKey>>,
    gc_candidates: BTreeSet<MetaKey>,
}

impl DotKeyMap {
    /// The empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `key`'s object holds `dot`.
    pub fn insert(&mut self, dot: &Dot, key: &MetaKey) {
        self.dots.entry(dot.id.clone()).or_default().insert(dot.counter, key.clone());
    }

    /// Forgets `dot` (its version was superseded or collected).
    pub fn remove(&mut self, dot: &Dot) {
        if let Some(row) = self.dots.get_mut(&dot.id) {
            row.remove(&dot.counter);
            if row.is_empty() {
                self.dots.remove(&dot.id);
            }
        }
    }

    /// The key whose object holds `dot`.
    pub fn lookup(&self, dot: &Dot) -> Option<&MetaKey> {
        self.dots.get(&dot.id).and_then(|row| row.get(&dot.counter))
    }

    /// Marks or unmarks `key` as holding a delete marker (`vmq_swc_dkm:mark_for_gc/2`).
    pub fn set_gc_candidate(&mut self, key: &MetaKey, tombstone: bool) {
        if tombstone {
            self.gc_candidates.insert(key.clone());
        } else {
            self.gc_candidates.remove(key);
        }
    }

    /// The keys holding a delete marker.
    pub fn gc_candidates(&self) -> &BTreeSet<MetaKey> {
        &self.gc_candidates
    }

    /// True when some object holds a dot of `id`.
    pub fn holds_dots_of(&self, id: &ReplicaId) -> bool {
        self.dots.contains_key(id)
    }

    /// Number of dots indexed.
    pub fn len(&self) -> usize {
        self.dots.values().map(BTreeMap::len).sum()
    }

    /// True when no dot is indexed.
    pub fn is_empty(&self) -> bool {
        self.dots.is_empty()
    }

    /// The keys holding a dot of `id` with a counter above `counter`, each once, in key order.
    /// Costs what it returns (a range of one row), not the size of the map: this is how a
    /// replica finds the writes it made while a peer was unreachable.
    pub fn keys_above(&self, id: &ReplicaId, counter: u64) -> BTreeSet<MetaKey> {
        self.dots
            .get(id)
            .map(|row| row.range(counter.saturating_add(1)..).map(|(_, k)| k.clone()).collect())
            .unwrap_or_default()
    }

    /// Every indexed dot with its key.
    pub fn iter(&self) -> impl Iterator<Item = (Dot, &MetaKey)> {
        self.dots.iter().flat_map(|(id, row)| row.iter().map(|(c, k)| (Dot::new(id.clone(), *c), k)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmq_storage::metadata::NodeId;

    #[test]
    fn insert_lookup_remove() {
        let id = ReplicaId::new(NodeId::new("a"), 1);
        let key = MetaKey::new("p", b"k".to_vec());
        let mut dkm = DotKeyMap::new();
        dkm.insert(&Dot::new(id.clone(), 3), &key);
        assert_eq!(dkm.lookup(&Dot::new(id.clone(), 3)), Some(&key));
        assert!(dkm.holds_dots_of(&id));
        dkm.remove(&Dot::new(id.clone(), 3));
        assert!(dkm.is_empty());
        assert!(!dkm.holds_dots_of(&id));
    }

    #[test]
    fn keys_above_lists_each_key_once_from_the_counter_on() {
        let id = ReplicaId::new(NodeId::new("a"), 1);
        let other = ReplicaId::new(NodeId::new("b"), 1);
        let (k1, k2) = (MetaKey::new("p", b"1".to_vec()), MetaKey::new("p", b"2".to_vec()));
        let mut dkm = DotKeyMap::new();
        dkm.insert(&Dot::new(id.clone(), 1), &k1);
        dkm.insert(&Dot::new(id.clone(), 2), &k2);
        dkm.insert(&Dot::new(id.clone(), 3), &k2);
        dkm.insert(&Dot::new(other.clone(), 9), &k1);
        assert_eq!(dkm.keys_above(&id, 1), BTreeSet::from([k2.clone()]));
        assert_eq!(dkm.keys_above(&id, 0), BTreeSet::from([k1, k2]));
        assert!(dkm.keys_above(&id, 3).is_empty());
        assert!(dkm.keys_above(&ReplicaId::new(NodeId::new("c"), 1), 0).is_empty());
    }
}
