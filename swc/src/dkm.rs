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

    /// Every indexed dot with its key.
    pub fn iter(&self) -> impl Iterator<Item = (Dot, &MetaKey)> {
        self.dots
            .iter()
            .flat_map(|(id, row)| row.iter().map(|(c, k)| (Dot::new(id.clone(), *c), k)))
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
}
