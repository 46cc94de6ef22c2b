//! Per-root eager and lazy peer sets and the outstanding `i_have` bookkeeping of Plumtree
//! (Leitão, Pereira, Rodrigues, SRDS 2007, §3; riak_core's `riak_core_broadcast`, VerneMQ's
//! `plumtree_broadcast`).
//!
//! Every broadcast travels on the tree of its root (the node that wrote). A tree starts as the
//! common eager/lazy sets built by [`init_peers`] and is then shaped by the protocol: a
//! duplicate makes its link lazy (`prune`), a missed message makes its link eager (`graft`).

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;
use rand::rngs::StdRng;
use vmq_storage::metadata::{MetaKey, NodeId};

use crate::dvv::VersionVector;
use crate::message::IHave;

/// `riak_core_util:build_tree(N, Nodes, [cycles])`: node `i` of `nodes` gets the next `n`
/// entries of `nodes` repeated, so every node has `n` children and the graph is strongly
/// connected.
pub fn build_tree(n: usize, nodes: &[NodeId]) -> BTreeMap<NodeId, Vec<NodeId>> {
    let expand: Vec<&NodeId> = nodes.iter().cycle().take(nodes.len() * (n + 1)).collect();
    let mut work = expand.into_iter().skip(1);
    nodes.iter().map(|node| (node.clone(), work.by_ref().take(n).cloned().collect())).collect()
}

/// `plumtree_broadcast:init_peers/1`: the initial (eager, lazy) sets of `me` for a cluster of
/// `members` (which includes `me`). The fan-out grows with the cluster: 1 below 5 nodes, 2
/// below 10, `round(ln N + 1)` from 10 on; one random other node starts lazy.
pub fn init_peers(me: &NodeId, members: &BTreeSet<NodeId>, rng: &mut StdRng) -> (BTreeSet<NodeId>, BTreeSet<NodeId>) {
    let nodes: Vec<NodeId> = members.iter().cloned().collect();
    let others: BTreeSet<NodeId> = members.iter().filter(|m| *m != me).cloned().collect();
    let fanout = match nodes.len() {
        0 | 1 => return (BTreeSet::new(), BTreeSet::new()),
        2 => return (others, BTreeSet::new()),
        n if n < 5 => 1,
        n if n < 10 => 2,
        n => ((n as f64).ln() + 1.0).round() as usize,
    };
    let tree = build_tree(fanout, &nodes);
    // With cycles a node can be its own child; a self-link carries nothing.
    let eager: BTreeSet<NodeId> = tree.get(me).into_iter().flatten().filter(|n| *n != me).cloned().collect();
    let rest: Vec<&NodeId> = others.iter().filter(|n| !eager.contains(*n)).collect();
    let mut lazy = BTreeSet::new();
    if !rest.is_empty() {
        lazy.insert(rest[rng.random_range(0..rest.len())].clone());
    }
    (eager, lazy)
}

/// The broadcast trees of one node.
#[derive(Debug)]
pub struct Trees {
    me: NodeId,
    common_eager: BTreeSet<NodeId>,
    common_lazy: BTreeSet<NodeId>,
    eager: BTreeMap<NodeId, BTreeSet<NodeId>>,
    lazy: BTreeMap<NodeId, BTreeSet<NodeId>>,
    /// Per lazy peer: `(root, key)` -> context of the newest version announced and not yet
    /// acknowledged. Only the newest version of a key matters, so a newer one replaces it.
    outstanding: BTreeMap<NodeId, BTreeMap<(NodeId, MetaKey), VersionVector>>,
    outstanding_limit: usize,
}

impl Trees {
    /// No peers yet.
    pub fn new(me: NodeId, outstanding_limit: usize) -> Self {
        Self {
            me,
            common_eager: BTreeSet::new(),
            common_lazy: BTreeSet::new(),
            eager: BTreeMap::new(),
            lazy: BTreeMap::new(),
            outstanding: BTreeMap::new(),
            outstanding_limit,
        }
    }

    /// Members were added: start every tree over from [`init_peers`], as
    /// `plumtree_broadcast` does (`reset_peers`).
    pub fn reset(&mut self, members: &BTreeSet<NodeId>, rng: &mut StdRng) {
        let (eager, lazy) = init_peers(&self.me, members, rng);
        self.common_eager = eager;
        self.common_lazy = lazy;
        self.eager.clear();
        self.lazy.clear();
        self.outstanding.retain(|peer, _| members.contains(peer));
    }

    /// Members left: forget them everywhere (`neighbors_down`).
    pub fn remove(&mut self, gone: &BTreeSet<NodeId>) {
        for set in [&mut self.common_eager, &mut self.common_lazy] {
            set.retain(|p| !gone.contains(p));
        }
        for set in self.eager.values_mut().chain(self.lazy.values_mut()) {
            set.retain(|p| !gone.contains(p));
        }
        self.eager.retain(|root, _| !gone.contains(root));
        self.lazy.retain(|root, _| !gone.contains(root));
        self.outstanding.retain(|peer, _| !gone.contains(peer));
    }

    fn ensure_root(&mut self, root: &NodeId) {
        if !self.eager.contains_key(root) {
            self.eager.insert(root.clone(), self.common_eager.clone());
            self.lazy.insert(root.clone(), self.common_lazy.clone());
        }
    }

    /// Eager peers of `root`'s tree, except `from` and the root itself: the root has every
    /// version of its tree, and a copy sent back would only make it prune the sender.
    pub fn eager_peers(&mut self, root: &NodeId, from: &NodeId) -> Vec<NodeId> {
        self.ensure_root(root);
        self.eager.get(root).into_iter().flatten().filter(|p| *p != from && *p != root).cloned().collect()
    }

    /// Eager peers of `root`'s tree (for inspection in tests and the simulation).
    pub fn eager_of(&self, root: &NodeId) -> BTreeSet<NodeId> {
        self.eager.get(root).cloned().unwrap_or_else(|| self.common_eager.clone())
    }

    /// Lazy peers of `root`'s tree.
    pub fn lazy_of(&self, root: &NodeId) -> BTreeSet<NodeId> {
        self.lazy.get(root).cloned().unwrap_or_else(|| self.common_lazy.clone())
    }

    /// Whether the link to `peer` is lazy on `root`'s tree.
    pub fn is_lazy(&self, root: &NodeId, peer: &NodeId) -> bool {
        match self.lazy.get(root) {
            Some(lazy) => lazy.contains(peer),
            None => self.common_lazy.contains(peer),
        }
    }

    /// Announces a version to the lazy peers of `root` except `from`: it stays outstanding
    /// until they acknowledge it (`schedule_lazy_push`).
    pub fn schedule_lazy(&mut self, root: &NodeId, from: &NodeId, key: &MetaKey, ctx: &VersionVector) {
        self.ensure_root(root);
        let peers: Vec<NodeId> =
            self.lazy.get(root).into_iter().flatten().filter(|p| *p != from && *p != root).cloned().collect();
        for peer in peers {
            self.announce_to(peer, root, key, ctx);
        }
    }

    /// Makes a version of `root`'s `key` outstanding for `peer`: it is announced to it at the
    /// next lazy tick (or, for an unreachable peer, when the link heals) until acknowledged.
    pub fn announce_to(&mut self, peer: NodeId, root: &NodeId, key: &MetaKey, ctx: &VersionVector) {
        let out = self.outstanding.entry(peer).or_default();
        out.insert((root.clone(), key.clone()), ctx.clone());
        if out.len() > self.outstanding_limit {
            // Bounded memory for a peer that never answers; anti-entropy repairs what the
            // dropped announcements would have.
            out.pop_first();
        }
    }

    /// `peer` delivered a new message of `root`'s tree first: keep the link eager
    /// (`add_eager`).
    pub fn add_eager(&mut self, root: &NodeId, peer: &NodeId) {
        self.ensure_root(root);
        if let Some(s) = self.eager.get_mut(root) {
            s.insert(peer.clone());
        }
        if let Some(s) = self.lazy.get_mut(root) {
            s.remove(peer);
        }
    }

    /// `peer` sent a duplicate or pruned us on `root`'s tree: make the link lazy (`add_lazy`).
    pub fn add_lazy(&mut self, root: &NodeId, peer: &NodeId) {
        self.ensure_root(root);
        if let Some(s) = self.eager.get_mut(root) {
            s.remove(peer);
        }
        if let Some(s) = self.lazy.get_mut(root) {
            s.insert(peer.clone());
        }
    }

    /// `peer` acknowledged an announcement (`ignored_i_have` or `graft`): drop it from the
    /// outstanding set unless a newer version was announced since.
    pub fn ack(&mut self, peer: &NodeId, ihave: &IHave) {
        if let Some(out) = self.outstanding.get_mut(peer) {
            let slot = (ihave.root.clone(), ihave.key.clone());
            if out.get(&slot).is_some_and(|ctx| ihave.context.descends(ctx)) {
                out.remove(&slot);
            }
            if out.is_empty() {
                self.outstanding.remove(peer);
            }
        }
    }

    /// Every peer with outstanding announcements and what to announce, at a lazy tick.
    pub fn outstanding(&self) -> Vec<(NodeId, Vec<IHave>)> {
        self.outstanding
            .iter()
            .map(|(peer, out)| {
                let list = out
                    .iter()
                    .map(|((root, key), ctx)| IHave { root: root.clone(), key: key.clone(), context: ctx.clone() })
                    .collect();
                (peer.clone(), list)
            })
            .collect()
    }

    /// Total number of outstanding announcements.
    pub fn outstanding_len(&self) -> usize {
        self.outstanding.values().map(BTreeMap::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn nodes(n: usize) -> Vec<NodeId> {
        (0..n).map(|i| NodeId::new(format!("n{i:02}"))).collect()
    }

    #[test]
    fn build_tree_matches_riak_core_with_cycles() {
        let ns = nodes(5);
        let t = build_tree(2, &ns);
        assert_eq!(t[&ns[0]], vec![ns[1].clone(), ns[2].clone()]);
        assert_eq!(t[&ns[1]], vec![ns[3].clone(), ns[4].clone()]);
        assert_eq!(t[&ns[2]], vec![ns[0].clone(), ns[1].clone()]);
        // With cycles a node can be its own child; init_peers drops the self-link.
        assert_eq!(t[&ns[4]], vec![ns[4].clone(), ns[0].clone()]);
    }

    #[test]
    fn init_peers_fanout_follows_cluster_size() {
        let mut rng = StdRng::seed_from_u64(1);
        for (n, fanout) in [(2, 1), (3, 1), (4, 1), (7, 2), (10, 3), (50, 5)] {
            let members: BTreeSet<NodeId> = nodes(n).into_iter().collect();
            let me = nodes(n)[n / 2].clone();
            let (eager, lazy) = init_peers(&me, &members, &mut rng);
            assert!(eager.len() <= fanout && !eager.is_empty(), "n={n} eager={eager:?}");
            assert!(!eager.contains(&me) && !lazy.contains(&me));
            assert!(eager.is_disjoint(&lazy));
            assert_eq!(lazy.len(), usize::from(n > 2), "n={n}");
        }
        let one: BTreeSet<NodeId> = nodes(1).into_iter().collect();
        assert_eq!(init_peers(&nodes(1)[0], &one, &mut rng), (BTreeSet::new(), BTreeSet::new()));
    }

    #[test]
    fn initial_trees_reach_every_node() {
        let mut rng = StdRng::seed_from_u64(2);
        for n in [3, 6, 12, 50] {
            let ns = nodes(n);
            let members: BTreeSet<NodeId> = ns.iter().cloned().collect();
            let edges: BTreeMap<NodeId, BTreeSet<NodeId>> =
                ns.iter().map(|m| (m.clone(), init_peers(m, &members, &mut rng).0)).collect();
            for root in &ns {
                let mut seen = BTreeSet::from([root.clone()]);
                let mut todo = vec![root.clone()];
                while let Some(x) = todo.pop() {
                    for y in &edges[&x] {
                        if seen.insert(y.clone()) {
                            todo.push(y.clone());
                        }
                    }
                }
                assert_eq!(seen.len(), n, "root {root} of {n}");
            }
        }
    }

    #[test]
    fn prune_graft_and_ack_move_links_and_announcements() {
        let ns = nodes(4);
        let members: BTreeSet<NodeId> = ns.iter().cloned().collect();
        let mut t = Trees::new(ns[0].clone(), 10);
        t.reset(&members, &mut StdRng::seed_from_u64(3));
        let root = ns[0].clone();
        t.add_lazy(&root, &ns[1]);
        t.add_lazy(&root, &ns[2]);
        assert!(t.eager_peers(&root, &ns[3]).is_empty() || !t.lazy_of(&root).contains(&ns[3]));
        let key = MetaKey::new("p", b"k".to_vec());
        let ctx: VersionVector = [(root.clone(), 1)].into_iter().collect();
        t.schedule_lazy(&root, &root, &key, &ctx);
        assert_eq!(t.outstanding().iter().filter(|(p, _)| *p == ns[1] || *p == ns[2]).count(), 2);
        t.ack(&ns[1], &IHave { root: root.clone(), key: key.clone(), context: ctx.clone() });
        assert!(t.outstanding().iter().all(|(p, _)| *p != ns[1]));
        t.add_eager(&root, &ns[2]);
        assert!(t.eager_of(&root).contains(&ns[2]) && !t.lazy_of(&root).contains(&ns[2]));
        t.remove(&BTreeSet::from([ns[2].clone()]));
        assert!(t.outstanding().iter().all(|(p, _)| *p != ns[2]));
        assert!(!t.eager_of(&root).contains(&ns[2]));
    }
}
