//! One deterministic simulation for every metadata backend (feature `sim`).
//!
//! [`Sim`] runs N replicas of any [`SimBackend`] on a virtual clock, in the style of quinn's
//! test `Pair` and raft-rs's `Network` (STYLE.md). One seed decides every random choice. It
//! models what the node's driver and the cluster around it do:
//!
//! - **Network**: links are one-way, so a partition can be one-way ([`Sim::cut_one_way`]); a
//!   message is lost when its link is cut at delivery time or its receiver crashed since it
//!   was sent; [`NetConfig`] adds random loss, duplication and delay (which reorders).
//!   Messages cross the postcard encoding, as on a real link.
//! - **Persistence**: each batch from `poll_write` becomes durable after a random delay
//!   ([`Sim::set_persist_delay`]), in order, and only then is `handle_persisted` called; a
//!   crash loses the batches not yet durable and restarts the replica from its [`MemStore`],
//!   through the backend's own recovery ([`SimBackend::boot`]).
//! - **Failure detection**: not an oracle. A node learns that a peer became unreachable or
//!   reachable again ([`MetadataBackend::handle_reachability`]) only after its own detection
//!   delay ([`Sim::set_detection_delay`]) plus jitter, and a link is up only when it works
//!   both ways (a one-way cut breaks a connection that needs acknowledgements). Every
//!   transition is reported, late and in order; a restarted process believes every peer
//!   reachable until its detector says otherwise.
//! - **Membership** as the node's driver applies it: members get the member list, a node that
//!   leaves gets the list without itself and then itself alone.
//!
//! [`History`] records what the tests wrote, which writes were acknowledged (persisted where
//! they were made) and what they superseded, and says what a converged cluster must hold.
//! [`suite`] holds the scenarios and properties every backend must pass, and
//! [`metadata_backend_suite!`](crate::metadata_backend_suite) instantiates them in a
//! backend's tests.

mod detector;
mod history;
mod node;
pub mod suite;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::metadata::{LocalOp, MetaKey, MetaValue, MetadataBackend, MetadataEvent, Millis, NodeId};
use crate::{MemStore, Store, StoreError};

use detector::Detector;
pub use history::{Expected, History};
use node::SimNode;

/// What the simulation needs from a backend beyond [`MetadataBackend`].
pub trait SimBackend: MetadataBackend + Sized {
    /// The backend's configuration.
    type Config: Clone + fmt::Debug;

    /// Starts the replica of `node` from what `store` holds durably (an empty store is a new
    /// node), as the node does at start-up.
    fn boot(config: &Self::Config, node: NodeId, seed: u64, store: &MemStore) -> Result<Self, StoreError>;

    /// Anti-entropy exchanges this replica completed (the bound after a heal counts them).
    fn exchanges_completed(&self) -> u64;

    /// Deleted keys still remembered (tombstones, delete markers); zero once collected.
    fn tombstones(&self) -> usize;

    /// Internal consistency of the replica's structures.
    fn check_invariants(&self) -> Result<(), String> {
        Ok(())
    }

    /// A short name of a message's kind, for counters and [`Sim::drop_next`].
    fn message_kind(_msg: &Self::Message) -> &'static str {
        "message"
    }
}

/// How the simulated network treats each message.
#[derive(Debug, Clone, Copy, PartialEq)]
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

impl NetConfig {
    /// In order and lossless, 1 ms: a connected QUIC link on one host.
    pub const RELIABLE: NetConfig = NetConfig { drop: 0.0, duplicate: 0.0, min_delay: 1, max_delay: 1 };
}

impl Default for NetConfig {
    fn default() -> Self {
        Self::RELIABLE
    }
}

/// What crossed the simulated network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Messages handed to the network, by [`SimBackend::message_kind`].
    pub sent: BTreeMap<&'static str, u64>,
    /// Their encoded size in bytes.
    pub bytes: u64,
    /// Encoded size of the largest message.
    pub largest: u64,
    /// Messages lost (random loss, cut link, crashed receiver).
    pub lost: u64,
}

impl NetStats {
    /// Messages sent of every kind.
    pub fn messages(&self) -> u64 {
        self.sent.values().sum()
    }
}

/// A message on the wire.
#[derive(Debug)]
struct Envelope {
    from: usize,
    to: usize,
    /// The receiver's incarnation when sent: a restarted process has new connections.
    to_life: u64,
    bytes: Vec<u8>,
}

/// The simulated cluster. Nodes are named `n0`, `n1`, ... and addressed by index.
pub struct Sim<B: SimBackend> {
    now: Millis,
    seed: u64,
    rng: StdRng,
    config: B::Config,
    net: NetConfig,
    persist_delay: u64,
    nodes: Vec<SimNode<B>>,
    members: BTreeSet<usize>,
    in_flight: BTreeMap<(Millis, u64), Envelope>,
    seq: u64,
    /// Directed links that are down: `(from, to)`.
    cut: BTreeSet<(usize, usize)>,
    detector: Detector,
    drop_next: BTreeSet<(usize, usize, &'static str)>,
    stamp: u64,
    keys: BTreeSet<MetaKey>,
    /// What crossed the network so far.
    pub stats: NetStats,
}

impl<B: SimBackend> Sim<B> {
    /// `n` nodes, all members and reachable, on a reliable network with writes durable at
    /// once and failure detection without delay; every random choice derives from `seed`.
    pub fn new(n: usize, config: B::Config, seed: u64) -> Self {
        let mut sim = Sim {
            now: Millis(0),
            seed,
            rng: StdRng::seed_from_u64(seed),
            config,
            net: NetConfig::RELIABLE,
            persist_delay: 0,
            nodes: Vec::new(),
            members: BTreeSet::new(),
            in_flight: BTreeMap::new(),
            seq: 0,
            cut: BTreeSet::new(),
            detector: Detector::default(),
            drop_next: BTreeSet::new(),
            stamp: 0,
            keys: BTreeSet::new(),
            stats: NetStats::default(),
        };
        for _ in 0..n {
            sim.add_node();
        }
        let all: Vec<usize> = (0..n).collect();
        sim.set_members(&all);
        sim
    }

    /// Adds a node with an empty store; it is not a member until [`Sim::set_members`] or
    /// [`Sim::join`].
    pub fn add_node(&mut self) -> usize {
        let i = self.nodes.len();
        self.nodes.push(SimNode::new(NodeId::new(format!("n{i}"))));
        self.detector.add_node();
        self.boot(i);
        self.tell_membership(i);
        i
    }

    fn boot(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let seed = self.seed ^ (node.life << 32) ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut replica = match B::boot(&self.config, node.id.clone(), seed, &node.store) {
            Ok(r) => r,
            Err(e) => panic!("{} cannot recover from its store: {e}", node.id),
        };
        for (prefix, skip_local) in &node.subscriptions {
            replica.subscribe(prefix, *skip_local);
        }
        node.replica = Some(replica);
    }

    // ----- configuration ----------------------------------------------------------------

    /// Changes the network's behaviour from now on (messages in flight keep their fate).
    pub fn set_net(&mut self, net: NetConfig) {
        self.net = net;
    }

    /// Each batch becomes durable up to `max_ms` after `poll_write` returned it (0: at once).
    pub fn set_persist_delay(&mut self, max_ms: u64) {
        self.persist_delay = max_ms;
    }

    /// Node `i`'s failure detector reports a change `ms` after it happened.
    pub fn set_detection_delay(&mut self, i: usize, ms: u64) {
        self.detector.set_delay(i, ms);
    }

    /// Every node's failure detector reports changes `ms` late.
    pub fn set_detection_delay_all(&mut self, ms: u64) {
        for i in 0..self.nodes.len() {
            self.detector.set_delay(i, ms);
        }
    }

    /// Adds a random extra delay of up to `ms` to each report.
    pub fn set_detection_jitter(&mut self, ms: u64) {
        self.detector.set_jitter(ms);
    }

    // ----- inspection -------------------------------------------------------------------

    /// The virtual clock.
    pub fn now(&self) -> Millis {
        self.now
    }

    /// Number of nodes (members or not, crashed or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when there is no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The name of node `i`.
    pub fn id(&self, i: usize) -> &NodeId {
        &self.nodes[i].id
    }

    /// True unless node `i` is crashed.
    pub fn is_up(&self, i: usize) -> bool {
        self.nodes[i].replica.is_some()
    }

    /// The members, crashed or not.
    pub fn members(&self) -> Vec<usize> {
        self.members.iter().copied().collect()
    }

    /// The members that are not crashed.
    pub fn live_members(&self) -> Vec<usize> {
        self.members.iter().copied().filter(|i| self.is_up(*i)).collect()
    }

    /// The replica of node `i`; panics while it is crashed (a test bug).
    pub fn replica(&self, i: usize) -> &B {
        match &self.nodes[i].replica {
            Some(r) => r,
            None => panic!("node {i} is crashed"),
        }
    }

    /// The replica of node `i` for direct input; call [`Sim::drain`] afterwards.
    pub fn replica_mut(&mut self, i: usize) -> &mut B {
        match &mut self.nodes[i].replica {
            Some(r) => r,
            None => panic!("node {i} is crashed"),
        }
    }

    /// Node `i`'s durable state.
    pub fn store(&self, i: usize) -> &MemStore {
        &self.nodes[i].store
    }

    /// Every event node `i` emitted, across restarts.
    pub fn events(&self, i: usize) -> &[MetadataEvent] {
        &self.nodes[i].events
    }

    /// Batches node `i` handed out that are not durable yet.
    pub fn unpersisted(&self, i: usize) -> usize {
        self.nodes[i].pending.len()
    }

    /// Whether node `i` currently believes `peer` reachable.
    pub fn believes_reachable(&self, i: usize, peer: usize) -> bool {
        self.detector.believes_up(i, peer)
    }

    /// The values of `key` at node `i`, siblings sorted; empty when absent or crashed.
    pub fn read(&self, i: usize, key: &MetaKey) -> Vec<MetaValue> {
        let mut v = self.nodes[i].replica.as_ref().map(|r| r.read(key).values).unwrap_or_default();
        v.sort();
        v
    }

    /// Every key written through this simulation.
    pub fn keys(&self) -> &BTreeSet<MetaKey> {
        &self.keys
    }

    /// Every written key node `i` holds a value for, with its sorted values.
    pub fn snapshot(&self, i: usize) -> BTreeMap<MetaKey, Vec<MetaValue>> {
        self.keys.iter().map(|k| (k.clone(), self.read(i, k))).filter(|(_, v)| !v.is_empty()).collect()
    }

    /// True when every live member holds the same values for every written key.
    pub fn converged(&self) -> bool {
        let live = self.live_members();
        let Some((first, rest)) = live.split_first() else { return true };
        self.keys.iter().all(|k| {
            let want = self.read(*first, k);
            rest.iter().all(|i| self.read(*i, k) == want)
        })
    }

    /// True when nothing is in flight, no batch awaits persistence and no detector report
    /// is due.
    pub fn is_idle(&self) -> bool {
        self.in_flight.is_empty() && self.nodes.iter().all(|n| n.pending.is_empty()) && self.detector.is_idle()
    }

    /// Messages sent of `kind` since the last [`Sim::reset_counters`].
    pub fn sent(&self, kind: &str) -> u64 {
        self.stats.sent.get(kind).copied().unwrap_or(0)
    }

    /// Zeroes the network counters.
    pub fn reset_counters(&mut self) {
        self.stats = NetStats::default();
    }

    /// Exchanges completed by the live members.
    pub fn exchanges_completed(&self) -> u64 {
        self.live_members().iter().map(|i| self.replica(*i).exchanges_completed()).sum()
    }

    /// Tombstones held by the live members.
    pub fn tombstones(&self) -> usize {
        self.live_members().iter().map(|i| self.replica(*i).tombstones()).sum()
    }

    // ----- local operations -------------------------------------------------------------

    /// A value with a fresh, strictly increasing hybrid timestamp.
    pub fn value(&mut self, data: &[u8]) -> MetaValue {
        self.stamp += 1;
        MetaValue { timestamp: (self.now.0 << 16) | (self.stamp & 0xffff), data: data.to_vec() }
    }

    /// Subscribes node `i` to events of `prefix`, now and after every restart.
    pub fn subscribe(&mut self, i: usize, prefix: &str, skip_local: bool) {
        self.nodes[i].subscriptions.push((prefix.to_owned(), skip_local));
        if let Some(r) = self.nodes[i].replica.as_mut() {
            r.subscribe(prefix, skip_local);
        }
    }

    /// Puts `data` under `key` at node `i`, superseding what node `i` reads there now.
    pub fn put(&mut self, i: usize, key: &MetaKey, data: &[u8]) -> MetaValue {
        let value = self.value(data);
        self.keys.insert(key.clone());
        let now = self.now;
        let r = self.replica_mut(i);
        let context = r.read(key).context;
        r.handle_local(now, LocalOp::Put { key: key.clone(), value: value.clone(), context });
        self.drain(i);
        value
    }

    /// Deletes `key` at node `i`, superseding what node `i` reads there now.
    pub fn delete(&mut self, i: usize, key: &MetaKey) {
        self.keys.insert(key.clone());
        let now = self.now;
        let r = self.replica_mut(i);
        let context = r.read(key).context;
        r.handle_local(now, LocalOp::Delete { key: key.clone(), context });
        self.drain(i);
    }

    /// Last-writer-wins read with write-back at node `i`.
    pub fn read_resolved(&mut self, i: usize, key: &MetaKey) -> Option<MetaValue> {
        let now = self.now;
        let v = self.replica_mut(i).read_resolved(now, key);
        self.drain(i);
        v
    }

    /// Batches node `i` handed out so far in its current life, and how many are durable: a
    /// write made now is acknowledged once the second reaches the first.
    pub fn write_marks(&self, i: usize) -> (u64, u64, u64) {
        let n = &self.nodes[i];
        (n.life, n.polled, n.persisted)
    }

    // ----- faults -----------------------------------------------------------------------

    /// Messages from `from` to `to` are lost from now on (those in flight too); replies may
    /// still flow the other way. Both detectors see the connection fail, late.
    pub fn cut_one_way(&mut self, from: usize, to: usize) {
        if from != to {
            self.cut.insert((from, to));
            self.refresh_detectors();
        }
    }

    /// Cuts the link between `a` and `b` both ways.
    pub fn cut(&mut self, a: usize, b: usize) {
        if a != b {
            self.cut.insert((a, b));
            self.cut.insert((b, a));
            self.refresh_detectors();
        }
    }

    /// Cuts every link of `a`.
    pub fn isolate(&mut self, a: usize) {
        for b in 0..self.nodes.len() {
            if b != a {
                self.cut.insert((a, b));
                self.cut.insert((b, a));
            }
        }
        self.refresh_detectors();
    }

    /// Splits the cluster in two: every link between `side` and the other nodes is cut.
    pub fn partition(&mut self, side: &[usize]) {
        for &a in side {
            for b in 0..self.nodes.len() {
                if !side.contains(&b) {
                    self.cut.insert((a, b));
                    self.cut.insert((b, a));
                }
            }
        }
        self.refresh_detectors();
    }

    /// Restores every link; each detector learns of it after its delay.
    pub fn heal(&mut self) {
        self.cut.clear();
        self.refresh_detectors();
    }

    /// Loses the next message of `kind` (see [`SimBackend::message_kind`]) from `from` to `to`.
    pub fn drop_next(&mut self, from: usize, to: usize, kind: &'static str) {
        self.drop_next.insert((from, to, kind));
    }

    /// Copies every metadata row of node `from`'s store into crashed node `to`'s store, so
    /// that `to` recovers as an exact replica of `from` (to build large identical states fast).
    pub fn copy_store(&mut self, from: usize, to: usize) {
        assert!(!self.is_up(to), "node {to} must be crashed");
        let mut after: Option<Vec<u8>> = None;
        loop {
            let rows = match self.nodes[from].store.scan_prefix(crate::Column::Metadata, b"", after.as_deref(), 4096) {
                Ok(rows) => rows,
                Err(e) => panic!("memory store scan failed: {e}"),
            };
            let Some((last, _)) = rows.last() else { return };
            after = Some(last.clone());
            let mut batch = crate::WriteBatch::new();
            for (k, v) in rows {
                batch.put(crate::Column::Metadata, k, v);
            }
            node::write(&self.nodes[to].store, batch);
        }
    }

    /// Crashes node `i`: its process is gone with every batch not yet durable; its store
    /// stays. The others' detectors notice after their delay.
    pub fn crash(&mut self, i: usize) {
        if self.nodes[i].crash() {
            self.detector.forget(i);
            self.refresh_detectors();
        }
    }

    /// Restarts crashed node `i` from its store; it rejoins with the current membership and
    /// believes every peer reachable until its detector reports otherwise.
    pub fn recover(&mut self, i: usize) {
        if self.is_up(i) {
            return;
        }
        self.boot(i);
        self.tell_membership(i);
        self.refresh_detectors();
    }

    /// Sets the cluster members; a node that is no longer one is told it left, and nodes
    /// outside the set stand alone.
    pub fn set_members(&mut self, members: &[usize]) {
        let old = std::mem::replace(&mut self.members, members.iter().copied().collect());
        let now = self.now;
        let listed: Vec<NodeId> = self.members.iter().map(|m| self.nodes[*m].id.clone()).collect();
        for left in old.difference(&self.members).copied().collect::<Vec<_>>() {
            if let Some(r) = self.nodes[left].replica.as_mut() {
                r.handle_membership(now, &listed);
            }
            self.drain(left);
        }
        for i in 0..self.nodes.len() {
            self.tell_membership(i);
        }
    }

    /// Adds node `i` to the members (adding new, empty nodes up to `i` first).
    pub fn join(&mut self, i: usize) {
        while self.nodes.len() <= i {
            self.add_node();
        }
        let mut members = self.members();
        members.push(i);
        self.set_members(&members);
    }

    /// Removes node `i` from the members.
    pub fn leave(&mut self, i: usize) {
        let members: Vec<usize> = self.members().into_iter().filter(|m| *m != i).collect();
        self.set_members(&members);
    }

    /// What the driver does on a membership change: the replica gets the member list (this
    /// node alone when it is not a member), then what the transport knows of each member.
    fn tell_membership(&mut self, i: usize) {
        let ids: Vec<NodeId> = if self.members.contains(&i) {
            self.members.iter().map(|m| self.nodes[*m].id.clone()).collect()
        } else {
            vec![self.nodes[i].id.clone()]
        };
        let now = self.now;
        let believed: Vec<(NodeId, bool)> = self
            .members
            .iter()
            .filter(|m| **m != i)
            .map(|m| (self.nodes[*m].id.clone(), self.detector.believes_up(i, *m)))
            .collect();
        let Some(r) = self.nodes[i].replica.as_mut() else { return };
        r.handle_membership(now, &ids);
        if self.members.contains(&i) {
            for (peer, up) in believed {
                r.handle_reachability(now, &peer, up);
            }
        }
        self.drain(i);
    }

    fn link_up(&self, a: usize, b: usize) -> bool {
        self.is_up(a) && self.is_up(b) && !self.cut.contains(&(a, b)) && !self.cut.contains(&(b, a))
    }

    /// Schedules a late report wherever a link's state differs from what its detector last
    /// reported or scheduled; reports without delay are delivered at once.
    fn refresh_detectors(&mut self) {
        let n = self.nodes.len();
        for a in 0..n {
            if !self.is_up(a) {
                continue;
            }
            for b in 0..n {
                if a != b {
                    let up = self.link_up(a, b);
                    self.detector.observe(self.now, a, self.nodes[a].life, b, up, &mut self.rng);
                }
            }
        }
        while self.detector.next_due() == Some(self.now) {
            self.report_due();
        }
    }

    /// Delivers the earliest detector report due now.
    fn report_due(&mut self) {
        let now = self.now;
        let Some(r) = self.detector.pop_due(now) else { return };
        let peer = self.nodes[r.peer].id.clone();
        let node = &mut self.nodes[r.at];
        if node.life != r.life {
            return;
        }
        if let Some(replica) = node.replica.as_mut() {
            replica.handle_reachability(now, &peer, r.up);
            self.drain(r.at);
        }
    }

    // ----- driving ----------------------------------------------------------------------

    /// Feeds node `i`'s outputs to its store and the network until it has nothing left.
    pub fn drain(&mut self, i: usize) {
        loop {
            let now = self.now;
            let node = &mut self.nodes[i];
            let Some(r) = node.replica.as_mut() else { return };
            let mut progressed = false;
            while let Some(w) = r.poll_write() {
                node.polled += 1;
                if self.persist_delay == 0 {
                    node::write(&node.store, w.batch);
                    node.persisted += 1;
                    r.handle_persisted(w.token);
                } else {
                    let due = now.plus(self.rng.random_range(0..=self.persist_delay));
                    node::queue_write(&mut node.pending, due, w.token, w.batch);
                }
                progressed = true;
            }
            let mut out = Vec::new();
            while let Some(m) = r.poll_transmit() {
                out.push(m);
            }
            while let Some(e) = r.poll_event() {
                node.events.push(e);
            }
            progressed |= !out.is_empty();
            for (peer, msg) in out {
                self.transmit(i, &peer, &msg);
            }
            if !progressed {
                return;
            }
        }
    }

    fn transmit(&mut self, from: usize, peer: &NodeId, msg: &B::Message) {
        let Some(to) = self.nodes.iter().position(|n| n.id == *peer) else { return };
        let kind = B::message_kind(msg);
        let bytes = match postcard::to_stdvec(msg) {
            Ok(b) => b,
            Err(e) => panic!("message does not encode: {e}"),
        };
        *self.stats.sent.entry(kind).or_default() += 1;
        self.stats.bytes += bytes.len() as u64;
        self.stats.largest = self.stats.largest.max(bytes.len() as u64);
        if self.drop_next.remove(&(from, to, kind)) || self.rng.random_bool(self.net.drop.clamp(0.0, 1.0)) {
            self.stats.lost += 1;
            return;
        }
        let copies = if self.rng.random_bool(self.net.duplicate.clamp(0.0, 1.0)) { 2 } else { 1 };
        for _ in 0..copies {
            let lo = self.net.min_delay.max(1);
            let delay = self.rng.random_range(lo..=self.net.max_delay.max(lo));
            self.seq += 1;
            let to_life = self.nodes[to].life;
            self.in_flight
                .insert((self.now.plus(delay), self.seq), Envelope { from, to, to_life, bytes: bytes.clone() });
        }
    }

    fn deliver(&mut self, env: Envelope) {
        let to = &self.nodes[env.to];
        if self.cut.contains(&(env.from, env.to)) || to.life != env.to_life || to.replica.is_none() {
            self.stats.lost += 1;
            return;
        }
        let msg: B::Message = match postcard::from_bytes(&env.bytes) {
            Ok(m) => m,
            Err(e) => panic!("message does not decode: {e}"),
        };
        let from = self.nodes[env.from].id.clone();
        let now = self.now;
        if let Some(r) = self.nodes[env.to].replica.as_mut() {
            r.handle_message(now, &from, msg);
        }
        self.drain(env.to);
    }

    fn next_timer(&self) -> Option<(Millis, usize)> {
        self.nodes.iter().enumerate().filter_map(|(i, n)| Some((n.replica.as_ref()?.poll_timeout()?, i))).min()
    }

    fn next_persist(&self) -> Option<(Millis, usize)> {
        self.nodes.iter().enumerate().filter_map(|(i, n)| Some((n.next_due()?, i))).min()
    }

    /// Handles the earliest due thing at or before `limit` (a batch becoming durable, a
    /// detector report, a delivery, a timer, in this order on ties), advancing the clock to
    /// it. False when nothing is due by `limit`.
    pub fn step(&mut self, limit: Millis) -> bool {
        let persist = self.next_persist();
        let report = self.detector.next_due();
        let message = self.in_flight.keys().next().map(|(t, _)| *t);
        let timer = self.next_timer();
        let earliest = [persist.map(|p| p.0), report, message, timer.map(|t| t.0)].into_iter().flatten().min();
        let Some(at) = earliest.filter(|t| *t <= limit) else { return false };
        self.now = self.now.max(at);
        let now = self.now;
        if let Some((_, i)) = persist.filter(|p| p.0 == at) {
            self.nodes[i].persist_due(now);
            self.drain(i);
        } else if report == Some(at) {
            self.report_due();
        } else if message == Some(at) {
            if let Some((_, env)) = self.in_flight.pop_first() {
                self.deliver(env);
            }
        } else if let Some((_, i)) = timer {
            if let Some(r) = self.nodes[i].replica.as_mut() {
                r.handle_timeout(now);
            }
            self.drain(i);
        }
        true
    }

    /// Runs for `ms` of virtual time.
    pub fn run_for(&mut self, ms: u64) {
        let limit = self.now.plus(ms);
        while self.step(limit) {}
        self.now = limit;
    }

    /// Runs until every batch node `i` handed out is durable (its writes are acknowledged).
    pub fn run_until_persisted(&mut self, i: usize) {
        while !self.nodes[i].pending.is_empty() && self.step(Millis(u64::MAX)) {}
    }

    /// Runs until `done` holds, checked whenever the simulation is idle (see
    /// [`Sim::is_idle`]), for at most `max_ms`; true when it held.
    pub fn run_until(&mut self, max_ms: u64, mut done: impl FnMut(&Self) -> bool) -> bool {
        let limit = self.now.plus(max_ms);
        loop {
            if self.is_idle() && done(self) {
                return true;
            }
            if !self.step(limit) {
                self.now = limit;
                return self.is_idle() && done(self);
            }
        }
    }

    /// Runs until the simulation is idle and every live member agrees, for at most `max_ms`.
    pub fn run_until_converged(&mut self, max_ms: u64) -> bool {
        self.run_until(max_ms, Self::converged)
    }

    /// Delivers messages until none is in flight (timers, persistence and detector reports
    /// due meanwhile happen too), for at most `max_ms`; true when the network went quiet.
    pub fn run_until_quiet(&mut self, max_ms: u64) -> bool {
        let limit = self.now.plus(max_ms);
        while !self.in_flight.is_empty() {
            if !self.step(limit) {
                return false;
            }
        }
        true
    }

    /// Runs until the simulation is idle, every live member agrees and none holds a
    /// tombstone, for at most `max_ms`.
    pub fn run_until_collected(&mut self, max_ms: u64) -> bool {
        self.run_until(max_ms, |s| s.converged() && s.tombstones() == 0)
    }

    /// Runs until idle, and returns how long it took to agree, for at most `max_ms`.
    pub fn time_to_converge(&mut self, max_ms: u64) -> Option<u64> {
        let start = self.now;
        self.run_until_converged(max_ms).then(|| self.now.0 - start.0)
    }
}
