//! What the tests wrote, and what a converged cluster must therefore hold.
//!
//! A write is *acknowledged* once the batch it produced is durable on the node that made it
//! (the node answers its client then). An acknowledged value must survive every split, heal
//! and crash unless an acknowledged write or delete made on a node that saw it superseded
//! it. A write lost in a crash before it was durable was never revealed, so its value must
//! never appear anywhere, and what it superseded is not superseded.

use std::collections::{BTreeMap, BTreeSet};

use super::{Sim, SimBackend};
use crate::metadata::{MetaKey, lww};

/// One local operation and its fate.
#[derive(Debug, Clone)]
struct Op {
    key: MetaKey,
    node: usize,
    life: u64,
    /// Durable once the node has persisted this many batches in `life`.
    mark: u64,
    /// The value written, if any (a put, or a resolution's write-back).
    wrote: Option<Vec<u8>>,
    /// The values the node saw, which this operation supersedes.
    supersedes: Vec<Vec<u8>>,
    fate: Fate,
    /// Made by a node that later left the cluster before it may have spread.
    uncertain: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Pending,
    Acknowledged,
    Lost,
}

/// What a key must hold after convergence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    /// Values that must be there.
    pub required: BTreeSet<Vec<u8>>,
    /// Values that may be there besides (required ones included).
    pub allowed: BTreeSet<Vec<u8>>,
}

/// Records local operations made through a [`Sim`] (see the module documentation).
#[derive(Debug, Default)]
pub struct History {
    ops: Vec<Op>,
    counter: u64,
    /// Values that a node held when it left: it may bring them back when it rejoins.
    tainted: BTreeSet<Vec<u8>>,
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    fn record<B: SimBackend>(
        &mut self,
        sim: &Sim<B>,
        node: usize,
        key: &MetaKey,
        wrote: Option<Vec<u8>>,
        supersedes: Vec<Vec<u8>>,
    ) {
        let (life, polled, _) = sim.write_marks(node);
        self.ops.push(Op {
            key: key.clone(),
            node,
            life,
            mark: polled,
            wrote,
            supersedes,
            fate: Fate::Pending,
            uncertain: false,
        });
    }

    fn visible<B: SimBackend>(sim: &Sim<B>, node: usize, key: &MetaKey) -> Vec<Vec<u8>> {
        sim.read(node, key).into_iter().map(|v| v.data).collect()
    }

    /// Puts a fresh, unique value under `key` at `node`; returns it.
    pub fn put<B: SimBackend>(&mut self, sim: &mut Sim<B>, node: usize, key: &MetaKey) -> Vec<u8> {
        self.counter += 1;
        let data = self.counter.to_be_bytes().to_vec();
        let seen = Self::visible(sim, node, key);
        sim.put(node, key, &data);
        self.record(sim, node, key, Some(data.clone()), seen);
        data
    }

    /// Deletes `key` at `node`.
    pub fn delete<B: SimBackend>(&mut self, sim: &mut Sim<B>, node: usize, key: &MetaKey) {
        let seen = Self::visible(sim, node, key);
        sim.delete(node, key);
        self.record(sim, node, key, None, seen);
    }

    /// Resolves `key`'s siblings at `node` last-writer-wins, writing the winner back.
    pub fn resolve<B: SimBackend>(&mut self, sim: &mut Sim<B>, node: usize, key: &MetaKey) {
        let values = sim.read(node, key);
        let winner = lww(&values).map(|w| w.data.clone());
        sim.read_resolved(node, key);
        if let Some(w) = winner.filter(|_| values.len() > 1) {
            let losers = values.into_iter().map(|v| v.data).filter(|d| *d != w).collect();
            self.record(sim, node, key, Some(w), losers);
        }
    }

    /// Crashes `node`, settling the fate of its operations: those not yet durable are lost.
    pub fn crash<B: SimBackend>(&mut self, sim: &mut Sim<B>, node: usize) {
        if !sim.is_up(node) {
            return;
        }
        let (life, _, persisted) = sim.write_marks(node);
        for op in self.ops.iter_mut().filter(|o| o.node == node && o.life == life && o.fate == Fate::Pending) {
            op.fate = if op.mark <= persisted { Fate::Acknowledged } else { Fate::Lost };
        }
        sim.crash(node);
    }

    /// `node` leaves the cluster: what it wrote may leave with it, and what it holds may come
    /// back should it rejoin with its data.
    pub fn leave<B: SimBackend>(&mut self, sim: &mut Sim<B>, node: usize) {
        for op in self.ops.iter_mut().filter(|o| o.node == node) {
            op.uncertain = true;
        }
        if sim.is_up(node) {
            for k in sim.keys() {
                self.tainted.extend(Self::visible(sim, node, k));
            }
        }
        sim.leave(node);
    }

    /// Settles every pending operation from the nodes' persistence marks (call when idle).
    fn settle<B: SimBackend>(&mut self, sim: &Sim<B>) {
        for op in self.ops.iter_mut().filter(|o| o.fate == Fate::Pending) {
            let (life, _, persisted) = sim.write_marks(op.node);
            if life == op.life && op.mark <= persisted {
                op.fate = Fate::Acknowledged;
            } else if life != op.life {
                op.fate = Fate::Lost;
            }
        }
    }

    /// Every key an operation touched.
    pub fn keys(&self) -> BTreeSet<MetaKey> {
        self.ops.iter().map(|o| o.key.clone()).collect()
    }

    /// What `key` must hold once the cluster has converged with every node up.
    pub fn expected<B: SimBackend>(&mut self, sim: &Sim<B>, key: &MetaKey) -> Expected {
        self.settle(sim);
        let ops: Vec<&Op> = self.ops.iter().filter(|o| o.key == *key && o.fate != Fate::Lost).collect();
        let mut superseded_for_sure = BTreeSet::new();
        let mut maybe_superseded = BTreeSet::new();
        // Per value: how many operations wrote it (a resolution writes the winner again, as
        // a new version that superseding the old one says nothing about), and whether one of
        // them is certainly acknowledged.
        let mut written: BTreeMap<&Vec<u8>, (usize, bool)> = BTreeMap::new();
        for op in &ops {
            for d in &op.supersedes {
                maybe_superseded.insert(d.clone());
                if op.fate == Fate::Acknowledged && !op.uncertain {
                    superseded_for_sure.insert(d.clone());
                }
            }
            if let Some(d) = &op.wrote {
                let e = written.entry(d).or_default();
                e.0 += 1;
                e.1 |= op.fate == Fate::Acknowledged && !op.uncertain;
            }
        }
        let mut out = Expected::default();
        for (d, (versions, certain)) in written {
            if certain && !maybe_superseded.contains(d) {
                out.required.insert(d.clone());
            }
            if !superseded_for_sure.contains(d) || versions > 1 || self.tainted.contains(d) {
                out.allowed.insert(d.clone());
            }
        }
        out
    }

    /// Checks every written key on every live member against [`History::expected`]; the
    /// first difference, described.
    pub fn check<B: SimBackend>(&mut self, sim: &Sim<B>) -> Result<(), String> {
        for key in self.keys() {
            let want = self.expected(sim, &key);
            for i in sim.live_members() {
                let held: BTreeSet<Vec<u8>> = Self::visible(sim, i, &key).into_iter().collect();
                if let Some(missing) = want.required.difference(&held).next() {
                    return Err(format!("{} lost acknowledged value {missing:?} of {key:?}", sim.id(i)));
                }
                if let Some(extra) = held.difference(&want.allowed).next() {
                    return Err(format!(
                        "{} holds {extra:?} under {key:?}, superseded or never acknowledged",
                        sim.id(i)
                    ));
                }
            }
        }
        Ok(())
    }
}
