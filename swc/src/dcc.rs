//! The per-key object: a dotted causal container (`swc_kv`; paper §4.2).
//!
//! An object maps dots to versions and carries a causal context (a version vector) that covers
//! every dot it holds and every dot it knows to be obsolete. A version is a value or the delete
//! marker (`None`, VerneMQ's `'$deleted'`), so a tombstone keeps the dot that deleted the key until
//! garbage collection proves every peer has it.

use serde::{Deserialize, Serialize};
use vmq_storage::metadata::MetaValue;

use crate::clock::{Dot, NodeClock, VersionVector};

/// The versions of an object, sorted by dot.
///
/// Almost every object holds one version, rarely a few siblings: a sorted vector costs one
/// small allocation where a `BTreeMap` allocates a node for eleven entries. Postcard encodes it
/// exactly like a map (a length, then dot and version pairs).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Versions(Vec<(Dot, Option<MetaValue>)>);

impl Versions {
    /// The version with `dot`.
    pub fn get(&self, dot: &Dot) -> Option<&Option<MetaValue>> {
        self.0.iter().find(|(d, _)| d == dot).map(|(_, v)| v)
    }

    /// True when a version has `dot`.
    pub fn contains_key(&self, dot: &Dot) -> bool {
        self.0.iter().any(|(d, _)| d == dot)
    }

    /// Adds or replaces the version with `dot`.
    pub fn insert(&mut self, dot: Dot, version: Option<MetaValue>) {
        match self.0.binary_search_by(|(d, _)| d.cmp(&dot)) {
            Ok(i) => self.0[i].1 = version,
            Err(i) => self.0.insert(i, (dot, version)),
        }
    }

    /// Removes the version with `dot`.
    pub fn remove(&mut self, dot: &Dot) {
        self.0.retain(|(d, _)| d != dot);
    }

    /// Keeps the versions for which `f` holds.
    pub fn retain(&mut self, mut f: impl FnMut(&Dot, &Option<MetaValue>) -> bool) {
        self.0.retain(|(d, v)| f(d, v));
    }

    /// Dots and versions in dot order.
    pub fn iter(&self) -> impl Iterator<Item = (&Dot, &Option<MetaValue>)> {
        self.0.iter().map(|(d, v)| (d, v))
    }

    /// The dots in order.
    pub fn keys(&self) -> impl Iterator<Item = &Dot> {
        self.0.iter().map(|(d, _)| d)
    }

    /// The versions in dot order.
    pub fn values(&self) -> impl Iterator<Item = &Option<MetaValue>> {
        self.0.iter().map(|(_, v)| v)
    }

    /// Releases spare capacity: a vector's first allocation has room for four versions, and
    /// a replica keeps one object per key for its whole life.
    pub fn shrink_to_fit(&mut self) {
        self.0.shrink_to_fit();
    }

    /// Number of versions.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there is no version.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A dotted causal container.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Dcc {
    /// Concurrent versions by dot; `None` is a delete marker.
    pub versions: Versions,
    /// Dots this object has seen (held or superseded). Stored stripped of the node-clock base.
    pub context: VersionVector,
}

impl Dcc {
    /// The live values, in dot order (the same order on every replica).
    pub fn values(&self) -> Vec<MetaValue> {
        self.versions.values().flatten().cloned().collect()
    }

    /// True when the object holds versions but all of them are delete markers.
    pub fn is_tombstone(&self) -> bool {
        !self.versions.is_empty() && self.versions.values().all(Option::is_none)
    }

    /// True when some version is a delete marker (the key is a collection candidate).
    pub fn has_delete_marker(&self) -> bool {
        self.versions.values().any(Option::is_none)
    }

    /// Drops every version whose dot is covered by `context` (`swc_kv:discard/2`).
    pub fn discard(&mut self, context: &VersionVector) {
        self.versions.retain(|dot, _| !context.covers(dot));
        self.context.join(context);
    }

    /// Adds a version under a fresh dot (`swc_kv:add/3`).
    pub fn add(&mut self, dot: Dot, version: Option<MetaValue>) {
        self.context.raise(&dot.id, dot.counter);
        self.versions.insert(dot, version);
    }

    /// Re-adds the node-clock base to the context before use (`swc_kv:fill/2`).
    pub fn fill(&mut self, base: &VersionVector) {
        self.context.join(base);
    }

    /// Removes context entries the node-clock base already covers (`swc_kv:strip/2`).
    pub fn strip(&mut self, base: &VersionVector) {
        self.context.strip(base);
    }

    /// The context a reader passes back to supersede exactly the versions it saw: the dots of
    /// those versions. Dots of one replica on one key are causally ordered (each write there read
    /// the previous one), so the maximum per replica covers exactly what was seen.
    pub fn read_context(&self) -> VersionVector {
        let mut vv = VersionVector::new();
        for dot in self.versions.keys() {
            vv.raise(&dot.id, dot.counter);
        }
        vv
    }

    /// Merges a remote object into this one (`swc_kv:sync/2`).
    ///
    /// Both contexts must be filled. A local version survives unless the remote context covers it
    /// and the remote no longer holds it (the remote saw it and superseded it). A remote version
    /// is taken unless this replica already saw its dot (in this object's context or anywhere in
    /// the node clock, bitmap included) and no longer holds it: that is what keeps a deleted or
    /// overwritten value from coming back after its tombstone was collected.
    pub fn sync(&mut self, remote: &Dcc, clock: &NodeClock) {
        let local_context = &self.context;
        let mut versions = Versions::default();
        for (dot, v) in self.versions.iter() {
            if remote.versions.contains_key(dot) || !remote.context.covers(dot) {
                versions.insert(dot.clone(), v.clone());
            }
        }
        for (dot, v) in remote.versions.iter() {
            if self.versions.contains_key(dot) {
                continue;
            }
            if !local_context.covers(dot) && !clock.contains(dot) {
                versions.insert(dot.clone(), v.clone());
            }
        }
        self.versions = versions;
        self.context.join(&remote.context);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ReplicaId;
    use vmq_storage::metadata::NodeId;

    fn id(n: &str) -> ReplicaId {
        ReplicaId::new(NodeId::new(n), 1)
    }
    fn dot(n: &str, c: u64) -> Dot {
        Dot::new(id(n), c)
    }
    fn val(s: &str) -> Option<MetaValue> {
        Some(MetaValue { timestamp: 1, data: s.as_bytes().to_vec() })
    }

    #[test]
    fn discard_removes_covered_versions_only() {
        let mut o = Dcc::default();
        o.add(dot("a", 1), val("x"));
        o.add(dot("b", 1), val("y"));
        let mut ctx = VersionVector::new();
        ctx.raise(&id("a"), 1);
        o.discard(&ctx);
        assert_eq!(o.values(), vec![val("y").expect("value")]);
    }

    #[test]
    fn sync_keeps_concurrent_versions_as_siblings() {
        let clock = NodeClock::new();
        let mut a = Dcc::default();
        a.add(dot("a", 1), val("x"));
        let mut b = Dcc::default();
        b.add(dot("b", 1), val("y"));
        let mut ab = a.clone();
        ab.sync(&b, &clock);
        let mut ba = b.clone();
        ba.sync(&a, &clock);
        assert_eq!(ab, ba);
        assert_eq!(ab.versions.len(), 2);
    }

    #[test]
    fn sync_drops_a_local_version_the_remote_superseded() {
        let clock = NodeClock::new();
        let mut local = Dcc::default();
        local.add(dot("a", 1), val("old"));
        let mut remote = local.clone();
        remote.discard(&remote.read_context());
        remote.add(dot("b", 1), val("new"));
        local.sync(&remote, &clock);
        assert_eq!(local.values(), vec![val("new").expect("value")]);
    }

    #[test]
    fn sync_refuses_a_version_whose_dot_the_node_clock_has_seen() {
        let mut clock = NodeClock::new();
        clock.add(&dot("a", 1));
        let mut local = Dcc::default();
        let mut stale = Dcc::default();
        stale.add(dot("a", 1), val("deleted long ago"));
        local.sync(&stale, &clock);
        assert!(local.versions.is_empty());
    }

    #[test]
    fn strip_then_fill_restores_the_context() {
        let mut o = Dcc::default();
        o.add(dot("a", 3), val("x"));
        o.context.raise(&id("b"), 2);
        let full = o.context.clone();
        let mut base = VersionVector::new();
        base.raise(&id("a"), 3);
        base.raise(&id("b"), 2);
        o.strip(&base);
        assert!(o.context.is_empty());
        o.fill(&base);
        assert_eq!(o.context, full);
    }
}
