//! A deterministic simulation of N replicas on a lossy network with a virtual clock.
//!
//! One seed decides every drop, duplicate and delay (delays reorder messages). Links can be
//! `cut`, nodes `isolate`d and everything `heal`ed; nodes can `crash` (their in-memory state is
//! lost, their store kept) and `recover` from what they persisted. Messages go through the
//! postcard encoding, so byte counts are what a real link would carry. Modelled on raft-rs's
//! `Network` and quinn's `Pair` (STYLE.md).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vmq_storage::metadata::{
    LocalOp, MetaKey, MetaValue, MetadataBackend, MetadataEvent, Millis, NodeId,
};
use vmq_storage::{Durability, MemStore, Store};

use crate::{Recovered, Replica, SwcConfig, SwcMessage};

/// Network behaviour of a simulation.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConfig {
    /// Probability that a message is lost.
    pub drop: f64,
    /// Probability that a message is delivered twice.
    pub duplicate: f64,
    /// Smallest delivery delay in milliseconds (at least 1).
    pub min_delay: u64,
    /// Largest delivery delay in milliseconds; a spread reorders messages.
    pub max_delay: u64,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self { drop: 0.0, duplicate: 0.0, min_delay: 1, max_delay: 10 }
    }
}

/// Counters of what crossed the simulated network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NetStats {
    /// Messages handed to the network.
    pub messages: u64,
    /// Their encoded size in bytes.
    pub bytes: u64,
    /// Objects carried by broadcasts and anti-entropy replies.
    pub objects: u64,
    /// Messages lost (dropped, cut link or crashed receiver).
    pub lost: u64,
    /// Encoded size of the largest message.
    pub largest: u64,
}

struct SimNode {
    replica: Option<Replica>,
    store: Arc<MemStore>,
    events: Vec<MetadataEvent>,
    seed: u64,
}

/// A message on the wire: delivery time, sequence number (ties), sender, receiver, bytes.
type InFlight = (Millis, u64, NodeId, NodeId, Vec<u8>);

/// The simulation.
pub struct Sim {
    now: Millis,
    rng: StdRng,
    net: NetConfig,
    config: SwcConfig,
    nodes: BTreeMap<NodeId, SimNode>,
    members: Vec<NodeId>,
    in_flight: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    cut: BTreeSet<(NodeId, NodeId)>,
    clock: u64,
    /// What crossed the network so far.
    pub stats: NetStats,
}

impl Sim {
    /// `n` nodes named `n1..nN`, all members and reachable, on a network behaving as `net`;
    /// every random choice derives from `seed`.
    pub fn new(seed: u64, n: usize, config: SwcConfig, net: NetConfig) -> Self {
        let mut sim = Self {
            now: Millis(0),
            rng: StdRng::seed_from_u64(seed),
            net,
            config,
            nodes: BTreeMap::new(),
            members: Vec::new(),
            in_flight: BinaryHeap::new(),
            seq: 0,
            cut: BTreeSet::new(),
            clock: 0,
            stats: NetStats::default(),
        };
        for i in 1..=n {
            let name = NodeId::new(format!("n{i}"));
            sim.spawn(&name);
            sim.members.push(name);
        }
        sim.broadcast_membership();
        sim
    }

    fn spawn(&mut self, name: &NodeId) {
        let seed = self.rng.random();
        let store = Arc::new(MemStore::new());
        let replica = Replica::new(self.config.clone(), name.clone(), seed, Recovered::empty());
        self.nodes.insert(name.clone(), SimNode { replica: Some(replica), store, events: Vec::new(), seed });
        self.drain(name);
    }

    fn broadcast_membership(&mut self) {
        let members = self.members.clone();
        let names: Vec<NodeId> = self.nodes.keys().cloned().collect();
        for n in names {
            let now = self.now;
            if let Some(r) = self.replica_mut(&n) {
                r.handle_membership(now, &members);
            }
            self.drain(&n);
        }
    }

    /// The current virtual time.
    pub fn now(&self) -> Millis {
        self.now
    }

    /// Every node name, members or not.
    pub fn nodes(&self) -> Vec<NodeId> {
        self.nodes.keys().cloned().collect()
    }

    /// The current members.
    pub fn members(&self) -> &[NodeId] {
        &self.members
    }

    /// A node's replica, unless it is crashed.
    pub fn replica(&self, node: &NodeId) -> Option<&Replica> {
        self.nodes.get(node).and_then(|n| n.replica.as_ref())
    }

    /// A node's replica for direct input; call [`Sim::drain`] afterwards.
    pub fn replica_mut(&mut self, node: &NodeId) -> Option<&mut Replica> {
        self.nodes.get_mut(node).and_then(|n| n.replica.as_mut())
    }

    /// A node's store.
    pub fn store(&self, node: &NodeId) -> Option<Arc<MemStore>> {
        self.nodes.get(node).map(|n| n.store.clone())
    }

    /// Events a node emitted so far.
    pub fn events(&self, node: &NodeId) -> &[MetadataEvent] {
        self.nodes.get(node).map_or(&[], |n| n.events.as_slice())
    }

    /// Subscribes `node`'s replica to `prefix` (a recovered replica starts unsubscribed, as a
    /// restarted node subscribes again).
    pub fn subscribe(&mut self, node: &NodeId, prefix: &str, skip_local: bool) {
        if let Some(r) = self.replica_mut(node) {
            r.subscribe(prefix, skip_local);
        }
    }

    /// A value with a fresh, strictly increasing timestamp.
    pub fn value(&mut self, data: &[u8]) -> MetaValue {
        self.clock += 1;
        MetaValue { timestamp: (self.now.0 << 16) | (self.clock & 0xffff), data: data.to_vec() }
    }

    /// Puts `data` under `key` on `node`, superseding what that node currently sees.
    pub fn put(&mut self, node: &NodeId, key: &MetaKey, data: &[u8]) {
        let value = self.value(data);
        let now = self.now;
        if let Some(r) = self.replica_mut(node) {
            let context = r.read(key).context;
            r.handle_local(now, LocalOp::Put { key: key.clone(), value, context });
        }
        self.drain(node);
    }

    /// Puts on `node` and crashes it before the write's batch is persisted: the write is lost
    /// with the process, and nothing it produced may have left the node.
    pub fn put_then_crash_before_persist(&mut self, node: &NodeId, key: &MetaKey, data: &[u8]) {
        let value = self.value(data);
        let now = self.now;
        if let Some(r) = self.replica_mut(node) {
            let context = r.read(key).context;
            r.handle_local(now, LocalOp::Put { key: key.clone(), value, context });
            // What the driver would have sent had it not crashed: nothing may be released.
            if r.poll_transmit().is_some() {
                panic!("a message was released before its write was persisted");
            }
        }
        self.crash(node);
    }

    /// Deletes `key` on `node`, superseding what that node currently sees.
    pub fn delete(&mut self, node: &NodeId, key: &MetaKey) {
        let now = self.now;
        if let Some(r) = self.replica_mut(node) {
            let context = r.read(key).context;
            r.handle_local(now, LocalOp::Delete { key: key.clone(), context });
        }
        self.drain(node);
    }

    /// Reads `key` on `node` resolving siblings last-writer-wins with write-back.
    pub fn resolve(&mut self, node: &NodeId, key: &MetaKey) -> Option<MetaValue> {
        let now = self.now;
        let out = self.replica_mut(node).and_then(|r| r.read_resolved(now, key));
        self.drain(node);
        out
    }

    /// Starts an exchange from `node` with `peer` in every group now.
    pub fn sync_with(&mut self, node: &NodeId, peer: &NodeId) {
        let now = self.now;
        if let Some(r) = self.replica_mut(node) {
            r.sync_with(now, peer);
        }
        self.drain(node);
    }

    /// Cuts the link between `a` and `b` in both directions and tells both sides.
    pub fn cut(&mut self, a: &NodeId, b: &NodeId) {
        self.cut.insert((a.clone(), b.clone()));
        self.cut.insert((b.clone(), a.clone()));
        self.tell_reachability(a, b, false);
        self.tell_reachability(b, a, false);
    }

    /// Cuts every link of `node`.
    pub fn isolate(&mut self, node: &NodeId) {
        for other in self.nodes() {
            if other != *node {
                self.cut(node, &other);
            }
        }
    }

    /// Splits the nodes into two sides that cannot talk to each other.
    pub fn partition(&mut self, side: &[NodeId]) {
        for a in side {
            for b in self.nodes() {
                if !side.contains(&b) {
                    self.cut(a, &b);
                }
            }
        }
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        let cut = std::mem::take(&mut self.cut);
        for (a, b) in cut {
            self.tell_reachability(&a, &b, true);
        }
    }

    /// Restores every link now, but lets each side's failure detector learn of it only after
    /// a random delay of up to `max_delay` ms (per side and link, as transports redial on
    /// their own schedules); the network runs meanwhile. Returns when the last side learns.
    pub fn heal_late(&mut self, max_delay: u64) {
        let cut = std::mem::take(&mut self.cut);
        let start = self.now;
        let mut notices: Vec<(u64, NodeId, NodeId)> =
            cut.into_iter().map(|(a, b)| (self.rng.random_range(0..=max_delay), a, b)).collect();
        notices.sort();
        for (delay, at, peer) in notices {
            let due = start.plus(delay);
            self.run_for(due.0.saturating_sub(self.now.0));
            // No link comes up to a crashed node; its recovery reports it.
            if self.replica(&peer).is_some() {
                self.tell_reachability(&at, &peer, true);
            }
        }
    }

    /// Changes the network's behaviour from now on (messages in flight keep their fate).
    pub fn set_net(&mut self, net: NetConfig) {
        self.net = net;
    }

    /// True when no message is in flight.
    pub fn is_idle(&self) -> bool {
        self.in_flight.is_empty()
    }

    fn tell_reachability(&mut self, at: &NodeId, peer: &NodeId, reachable: bool) {
        let now = self.now;
        if let Some(r) = self.replica_mut(at) {
            r.handle_reachability(now, peer, reachable);
        }
        self.drain(at);
    }

    /// Crashes `node`: its in-memory state is gone, its store stays. The others' failure
    /// detectors notice (the transport reports the link down).
    pub fn crash(&mut self, node: &NodeId) {
        let Some(n) = self.nodes.get_mut(node) else { return };
        if n.replica.take().is_none() {
            return;
        }
        for other in self.nodes() {
            if other != *node {
                self.tell_reachability(&other, node, false);
            }
        }
    }

    /// Restarts a crashed `node` from its store, with the current membership and reachability.
    pub fn recover(&mut self, node: &NodeId) {
        let Some(n) = self.nodes.get_mut(node) else { return };
        if n.replica.is_some() {
            return;
        }
        let recovered = match Recovered::load(n.store.as_ref()) {
            Ok(r) => r,
            Err(e) => panic!("store of {node} unreadable after crash: {e}"),
        };
        n.seed = n.seed.wrapping_add(1);
        n.replica = Some(Replica::new(self.config.clone(), node.clone(), n.seed, recovered));
        let members = self.members.clone();
        let now = self.now;
        if let Some(r) = self.replica_mut(node) {
            r.handle_membership(now, &members);
        }
        // Cut links and crashed peers are down for the new process too, as its transport finds.
        let mut unreachable: BTreeSet<NodeId> =
            self.cut.iter().filter(|(a, _)| a == node).map(|(_, b)| b.clone()).collect();
        unreachable.extend(self.nodes.iter().filter(|(_, n)| n.replica.is_none()).map(|(id, _)| id.clone()));
        for peer in unreachable {
            self.tell_reachability(node, &peer, false);
        }
        self.drain(node);
        // The others see the link come up again where it is not cut.
        for other in self.nodes() {
            if other != *node && !self.cut.contains(&(other.clone(), node.clone())) {
                self.tell_reachability(&other, node, true);
            }
        }
    }

    /// Adds a new, empty node to the cluster.
    pub fn join(&mut self, name: &NodeId) {
        if !self.nodes.contains_key(name) {
            self.spawn(name);
        }
        if !self.members.contains(name) {
            self.members.push(name.clone());
        }
        self.broadcast_membership();
    }

    /// Removes `name` from the cluster; it retires its replica id and stays idle until it
    /// joins again.
    pub fn leave(&mut self, name: &NodeId) {
        self.members.retain(|m| m != name);
        self.broadcast_membership();
    }

    /// Feeds outputs of `node` to the store and the network until it has nothing left.
    pub fn drain(&mut self, node: &NodeId) {
        loop {
            let Some(n) = self.nodes.get_mut(node) else { return };
            let Some(r) = n.replica.as_mut() else { return };
            let mut progressed = false;
            while let Some(w) = r.poll_write() {
                if let Err(e) = n.store.write(w.batch, Durability::Buffered) {
                    panic!("memory store refused a write: {e}");
                }
                r.handle_persisted(w.token);
                progressed = true;
            }
            let mut out = Vec::new();
            while let Some(m) = r.poll_transmit() {
                out.push(m);
            }
            while let Some(e) = r.poll_event() {
                n.events.push(e);
            }
            progressed |= !out.is_empty();
            for (to, msg) in out {
                self.send(node, &to, &msg);
            }
            if !progressed {
                return;
            }
        }
    }

    fn send(&mut self, from: &NodeId, to: &NodeId, msg: &SwcMessage) {
        let bytes = match msg.to_bytes() {
            Ok(b) => b,
            Err(e) => panic!("message does not encode: {e}"),
        };
        self.stats.messages += 1;
        self.stats.bytes += bytes.len() as u64;
        self.stats.largest = self.stats.largest.max(bytes.len() as u64);
        let SwcMessage::V1(env) = msg;
        self.stats.objects += match &env.body {
            crate::wire::Body::Broadcast { objects, .. }
            | crate::wire::Body::MissingReply { objects, .. }
            | crate::wire::Body::MissingReplyPart { objects, .. } => objects.len() as u64,
            _ => 0,
        };
        if self.rng.random_bool(self.net.drop.clamp(0.0, 1.0)) {
            self.stats.lost += 1;
            return;
        }
        let copies = if self.rng.random_bool(self.net.duplicate.clamp(0.0, 1.0)) { 2 } else { 1 };
        for _ in 0..copies {
            let lo = self.net.min_delay.max(1);
            let delay = self.rng.random_range(lo..=self.net.max_delay.max(lo));
            self.seq += 1;
            self.in_flight.push(Reverse((
                self.now.plus(delay),
                self.seq,
                from.clone(),
                to.clone(),
                bytes.clone(),
            )));
        }
    }

    fn next_timeout(&self) -> Option<(Millis, NodeId)> {
        self.nodes
            .iter()
            .filter_map(|(n, s)| Some((s.replica.as_ref()?.poll_timeout()?, n.clone())))
            .min()
    }

    /// Advances to the next delivery or timer and handles it. Returns false when nothing is
    /// scheduled.
    pub fn step(&mut self) -> bool {
        let next_msg = self.in_flight.peek().map(|Reverse((t, ..))| *t);
        let next_timer = self.next_timeout();
        match (next_msg, next_timer) {
            (Some(t), timer) if timer.as_ref().is_none_or(|(tt, _)| t <= *tt) => {
                let Some(Reverse((t, _, from, to, bytes))) = self.in_flight.pop() else {
                    return false;
                };
                self.now = self.now.max(t);
                self.deliver(&from, &to, &bytes);
                true
            }
            (_, Some((t, node))) => {
                self.now = self.now.max(t);
                let now = self.now;
                if let Some(r) = self.replica_mut(&node) {
                    r.handle_timeout(now);
                }
                self.drain(&node);
                true
            }
            _ => false,
        }
    }

    fn deliver(&mut self, from: &NodeId, to: &NodeId, bytes: &[u8]) {
        if self.cut.contains(&(from.clone(), to.clone())) {
            self.stats.lost += 1;
            return;
        }
        let msg = match SwcMessage::from_bytes(bytes) {
            Ok(m) => m,
            Err(e) => panic!("message does not decode: {e}"),
        };
        let now = self.now;
        match self.replica_mut(to) {
            Some(r) => r.handle_message(now, from, msg),
            None => {
                self.stats.lost += 1;
                return;
            }
        }
        self.drain(to);
    }

    /// Runs until `ms` of virtual time have passed.
    pub fn run_for(&mut self, ms: u64) {
        let until = self.now.plus(ms);
        loop {
            let next_msg = self.in_flight.peek().map(|Reverse((t, ..))| *t);
            let next = [next_msg, self.next_timeout().map(|(t, _)| t)].into_iter().flatten().min();
            match next {
                Some(t) if t <= until => {
                    self.step();
                }
                _ => break,
            }
        }
        self.now = self.now.max(until);
    }

    /// Delivers every message in flight (timers that fall due meanwhile fire too).
    pub fn deliver_all(&mut self) {
        while let Some(Reverse((t, ..))) = self.in_flight.peek() {
            let t = *t;
            let ms = t.0.saturating_sub(self.now.0);
            self.run_for(ms);
        }
    }

    /// The live members' replicas.
    fn live_members(&self) -> Vec<&Replica> {
        self.members.iter().filter_map(|m| self.replica(m)).collect()
    }

    /// True when every live member holds the same keys with the same values.
    pub fn converged(&self) -> bool {
        let snaps: Vec<_> = self.live_members().iter().map(|r| r.snapshot()).collect();
        snaps.windows(2).all(|w| w[0] == w[1])
    }

    /// True when no live member holds a tombstone or any other delete marker.
    pub fn tombstones_collected(&self) -> bool {
        self.live_members().iter().all(|r| {
            let s = r.stats();
            s.tombstones == 0 && s.delete_markers == 0
        })
    }

    /// Runs in steps of `step_ms` until every live member agrees and no message is in flight,
    /// for at most `max_ms`. Returns whether that state was reached.
    pub fn run_until_quiet(&mut self, step_ms: u64, max_ms: u64) -> bool {
        let until = self.now.plus(max_ms);
        loop {
            if self.in_flight.is_empty() && self.converged() {
                return true;
            }
            if self.now >= until {
                return false;
            }
            self.run_for(step_ms);
        }
    }

    /// Runs until every live member agrees and holds no tombstone, for at most `max_ms`.
    pub fn run_until_collected(&mut self, step_ms: u64, max_ms: u64) -> bool {
        let until = self.now.plus(max_ms);
        loop {
            if self.in_flight.is_empty() && self.converged() && self.tombstones_collected() {
                return true;
            }
            if self.now >= until {
                return false;
            }
            self.run_for(step_ms);
        }
    }

    /// The values of `key` on `node` (empty when absent, deleted or crashed).
    pub fn values(&self, node: &NodeId, key: &MetaKey) -> Vec<MetaValue> {
        self.replica(node).map(|r| r.read(key).values).unwrap_or_default()
    }
}
