//! Dotted version vector sets (Almeida, Baquero, Gonçalves, Preguiça, Fonte: "Scalable and
//! Accurate Causality Tracking for Eventually Consistent Stores", DAIS 2014), the object type of
//! VerneMQ's plumtree backend (`dvvset.erl` in `plumtree_metadata_object`).
//!
//! A set holds, per writer id, a counter `n` and the values of the newest dots of that writer
//! still alive: `values[i]` is the value of dot `(id, n - i)`. Every dot `<= n - values.len()`
//! of that writer is known and obsolete. That makes "which values survive a merge" a per-writer
//! interval computation, without keeping one dot per value.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vmq_storage::metadata::NodeId;

/// A version vector: per writer, the highest event known. It is the causal context returned by
/// reads and passed back with writes (`MetadataBackend::Context`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VersionVector(BTreeMap<NodeId, u64>);

impl VersionVector {
    /// The empty vector (supersedes nothing).
    pub fn new() -> Self {
        Self::default()
    }

    /// The counter of `id` (0 when unknown).
    pub fn counter(&self, id: &NodeId) -> u64 {
        self.0.get(id).copied().unwrap_or(0)
    }

    /// True when every event known to `other` is known to `self`.
    pub fn descends(&self, other: &VersionVector) -> bool {
        other.0.iter().all(|(id, n)| self.counter(id) >= *n)
    }

    /// Pointwise maximum.
    pub fn merge(&mut self, other: &VersionVector) {
        for (id, n) in &other.0 {
            let mine = self.0.entry(id.clone()).or_insert(0);
            *mine = (*mine).max(*n);
        }
    }

    /// The `(writer, counter)` pairs in writer order.
    pub fn iter(&self) -> impl Iterator<Item = (&NodeId, u64)> {
        self.0.iter().map(|(id, n)| (id, *n))
    }

    /// True when no event is known.
    pub fn is_empty(&self) -> bool {
        self.0.values().all(|n| *n == 0)
    }
}

impl FromIterator<(NodeId, u64)> for VersionVector {
    fn from_iter<T: IntoIterator<Item = (NodeId, u64)>>(iter: T) -> Self {
        let mut vv = VersionVector::new();
        for (id, n) in iter {
            let mine = vv.0.entry(id).or_insert(0);
            *mine = (*mine).max(n);
        }
        vv
    }
}

/// One writer's entry: its counter and the values of its newest live dots, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DvvEntry<V> {
    /// Highest dot of this writer known to the set.
    pub counter: u64,
    /// `values[i]` belongs to dot `counter - i`.
    pub values: Vec<V>,
}

/// A dotted version vector set: the concurrent values of one key and their causal history.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DvvSet<V> {
    entries: BTreeMap<NodeId, DvvEntry<V>>,
}

impl<V> Default for DvvSet<V> {
    fn default() -> Self {
        Self { entries: BTreeMap::new() }
    }
}

impl<V: Clone + PartialEq> DvvSet<V> {
    /// An empty set (no value, no history).
    pub fn new() -> Self {
        Self::default()
    }

    /// Every live value (siblings when more than one), in writer order, newest first per writer.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.values().flat_map(|e| e.values.iter())
    }

    /// Number of live values.
    pub fn len(&self) -> usize {
        self.entries.values().map(|e| e.values.len()).sum()
    }

    /// True when the set holds no live value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The causal context: every dot this set knows of (`dvvset:join/1`).
    pub fn context(&self) -> VersionVector {
        self.entries.iter().map(|(id, e)| (id.clone(), e.counter)).collect()
    }

    /// The writers' entries.
    pub fn entries(&self) -> impl Iterator<Item = (&NodeId, &DvvEntry<V>)> {
        self.entries.iter()
    }

    /// A write by `writer` of `value` that supersedes every value covered by `context`
    /// (`dvvset:update/3`): values concurrent with the context survive as siblings.
    pub fn update(&self, context: &VersionVector, writer: &NodeId, value: V) -> Self {
        self.update_after(context, writer, value, 0)
    }

    /// [`DvvSet::update`] whose new dot is above `floor` whenever the writer has no surviving
    /// value in this set. A replica passes the highest counter it ever issued for any key, so a
    /// key recreated after its tombstone was reclaimed never reuses a dot of its old life.
    /// (With surviving own values the next dot must stay contiguous: `values[i]` is dot
    /// `counter - i`; those values prove the set was not reclaimed since.)
    pub fn update_after(&self, context: &VersionVector, writer: &NodeId, value: V, floor: u64) -> Self {
        let mut entries = BTreeMap::new();
        for (id, e) in &self.entries {
            let seen = context.counter(id);
            // Dots in (seen, counter] were not seen by the writer: they stay as siblings.
            let keep = usize::try_from(e.counter.saturating_sub(seen)).unwrap_or(usize::MAX);
            let values = e.values.iter().take(keep).cloned().collect();
            entries.insert(id.clone(), DvvEntry { counter: e.counter.max(seen), values });
        }
        for (id, n) in context.iter() {
            entries.entry(id.clone()).or_insert_with(|| DvvEntry { counter: n, values: Vec::new() });
        }
        let own = entries.entry(writer.clone()).or_insert_with(|| DvvEntry { counter: 0, values: Vec::new() });
        if own.values.is_empty() {
            own.counter = own.counter.max(floor);
        }
        own.counter += 1;
        own.values.insert(0, value);
        Self { entries }
    }

    /// Merges two replicas of the same key (`dvvset:sync/2`): a value survives when neither
    /// side knows it as obsolete. Commutative, associative and idempotent.
    pub fn sync(&self, other: &Self) -> Self {
        let mut entries = self.entries.clone();
        for (id, theirs) in &other.entries {
            match entries.get_mut(id) {
                None => {
                    entries.insert(id.clone(), theirs.clone());
                }
                Some(mine) => *mine = merge_entry(mine, theirs),
            }
        }
        Self { entries }
    }

    /// True when every dot known to `other` is known to `self` (`other` is stale or equal).
    pub fn descends(&self, other: &Self) -> bool {
        other.entries.iter().all(|(id, e)| self.entries.get(id).is_some_and(|m| m.counter >= e.counter))
    }

    /// Keeps only the values `keep` accepts, leaving the causal history unchanged.
    #[cfg(test)]
    fn retain(&mut self, keep: impl Fn(&V) -> bool) {
        for e in self.entries.values_mut() {
            e.values.retain(|v| keep(v));
        }
    }
}

/// The live interval of one writer after a merge is `(max(n1 - l1, n2 - l2), max(n1, n2)]`:
/// a dot is obsolete as soon as one side has it below its live window.
fn merge_entry<V: Clone>(a: &DvvEntry<V>, b: &DvvEntry<V>) -> DvvEntry<V> {
    let (hi, lo) = if a.counter >= b.counter { (a, b) } else { (b, a) };
    let hi_floor = hi.counter - len_u64(&hi.values).min(hi.counter);
    let lo_floor = lo.counter - len_u64(&lo.values).min(lo.counter);
    if hi_floor >= lo_floor {
        return hi.clone();
    }
    let keep = usize::try_from(hi.counter - lo_floor).unwrap_or(usize::MAX);
    DvvEntry { counter: hi.counter, values: hi.values.iter().take(keep).cloned().collect() }
}

fn len_u64<V>(values: &[V]) -> u64 {
    u64::try_from(values.len()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn id(s: &str) -> NodeId {
        NodeId::new(s)
    }

    #[test]
    fn write_with_context_supersedes_what_was_read() {
        let a = DvvSet::new().update(&VersionVector::new(), &id("a"), 1);
        let b = a.update(&a.context(), &id("a"), 2);
        assert_eq!(b.values().copied().collect::<Vec<_>>(), vec![2]);
        assert!(b.descends(&a));
        assert!(!a.descends(&b));
    }

    #[test]
    fn concurrent_writes_become_siblings_and_a_later_write_collapses_them() {
        let base = DvvSet::new().update(&VersionVector::new(), &id("a"), 0);
        let x = base.update(&base.context(), &id("a"), 1);
        let y = base.update(&base.context(), &id("b"), 2);
        let merged = x.sync(&y);
        let mut vals: Vec<_> = merged.values().copied().collect();
        vals.sort();
        assert_eq!(vals, vec![1, 2]);
        let resolved = merged.update(&merged.context(), &id("b"), 3);
        assert_eq!(resolved.values().copied().collect::<Vec<_>>(), vec![3]);
        // The resolution wins against both parents wherever it is merged.
        assert_eq!(x.sync(&resolved), resolved);
        assert_eq!(resolved.sync(&y), resolved);
    }

    #[test]
    fn write_with_empty_context_keeps_existing_values_as_siblings() {
        let a = DvvSet::new().update(&VersionVector::new(), &id("a"), 1);
        let b = a.update(&VersionVector::new(), &id("a"), 2);
        assert_eq!(b.values().copied().collect::<Vec<_>>(), vec![2, 1]);
    }

    #[test]
    fn a_recreated_key_gets_a_dot_above_the_floor_and_beats_the_old_tombstone() {
        let old = DvvSet::new().update(&VersionVector::new(), &id("a"), Some(1));
        let tombstone = old.update(&old.context(), &id("b"), None);
        // "b" reclaimed the tombstone and writes the key again from scratch.
        let fresh = DvvSet::new().update_after(&VersionVector::new(), &id("b"), Some(2), 7);
        assert_eq!(fresh.context().counter(&id("b")), 8);
        let merged = tombstone.sync(&fresh);
        assert_eq!(merged.values().cloned().collect::<Vec<_>>(), vec![Some(2)]);
        // Own surviving values keep the next dot contiguous.
        let next = fresh.update_after(&VersionVector::new(), &id("b"), Some(3), 100);
        assert_eq!(next.context().counter(&id("b")), 9);
    }

    #[test]
    fn retain_keeps_history() {
        let mut a = DvvSet::new().update(&VersionVector::new(), &id("a"), 1);
        a.retain(|_| false);
        assert!(a.is_empty());
        assert_eq!(a.context().counter(&id("a")), 1);
    }

    /// A random history: writes at random replicas with the context of that replica's current
    /// state or an empty context, and random merges between replicas.
    fn history() -> impl Strategy<Value = Vec<DvvSet<u32>>> {
        prop::collection::vec((0usize..3, 0u8..3, any::<u32>()), 1..30).prop_map(|ops| {
            let ids = [id("a"), id("b"), id("c")];
            let mut reps: Vec<DvvSet<u32>> = vec![DvvSet::new(); 3];
            for (r, kind, v) in ops {
                reps[r] = match kind {
                    0 => reps[r].update(&reps[r].context(), &ids[r], v),
                    1 => reps[r].update(&VersionVector::new(), &ids[r], v),
                    _ => reps[r].sync(&reps[(r + 1) % 3]),
                };
            }
            reps
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 128,
            failure_persistence: Some(Box::new(
                proptest::test_runner::FileFailurePersistence::Direct(
                    "../proptest-regressions/plumtree-dvv_laws.txt",
                ),
            )),
            ..ProptestConfig::default()
        })]

        #[test]
        fn sync_is_commutative_associative_and_idempotent(reps in history()) {
            let (a, b, c) = (&reps[0], &reps[1], &reps[2]);
            prop_assert_eq!(a.sync(b), b.sync(a));
            prop_assert_eq!(a.sync(&b.sync(c)), a.sync(b).sync(c));
            prop_assert_eq!(a.sync(a), a.clone());
            let ab = a.sync(b);
            prop_assert!(ab.descends(a) && ab.descends(b));
        }
    }
}
