//! A simulated cluster of plumtree replicas: a virtual clock, a network that drops, duplicates
//! and reorders frames from one seed, `cut` / `isolate` / `heal`, and crash-and-recover from
//! each node's [`MemStore`]. Frames go through the real postcard encoding.
//!
//! Like raft-rs's `Network` and quinn's test `Pair`: a test is a script of operations and
//! `run_*` calls, then assertions on reads, digests and counters.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vmq_storage::metadata::{
    LocalOp, MetaKey, MetaValue, MetadataBackend, MetadataEvent, Millis, NodeId,
};
use vmq_storage::{Column, Durability, MemStore, Store, WriteBatch};

use crate::config::PlumtreeConfig;
use crate::message::Message;
use crate::persist::Recovered;
use crate::replica::Replica;

/// Network faults, applied independently to every frame.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    /// Probability that a frame is lost.
    pub drop: f64,
    /// Probability that a frame is delivered twice.
    pub duplicate: f64,
    /// Probability that a frame gets an extra random delay (up to 10 latencies), so that it
    /// overtakes or is overtaken by others.
    pub reorder: f64,
}

/// One simulated node.
#[derive(Debug)]
pub struct SimNode {
    /// Its id.
    pub id: NodeId,
    /// The replica; `None` while crashed.
    pub replica: Option<Replica>,
    /// Its durable state, surviving crashes.
    pub store: Arc<MemStore>,
    /// Every event it emitted, in order.
    pub events: Vec<MetadataEvent>,
    lives: u64,
}

#[derive(Debug)]
struct Envelope {
    from: usize,
    to: usize,
    bytes: Vec<u8>,
}

/// The simulated cluster.
#[derive(Debug)]
pub struct Sim {
    now: Millis,
    config: PlumtreeConfig,
    seed: u64,
    rng: StdRng,
    nodes: Vec<SimNode>,
    members: BTreeSet<usize>,
    queue: BTreeMap<(Millis, u64), Envelope>,
    seq: u64,
    latency: u64,
    faults: Faults,
    cut: BTreeSet<(usize, usize)>,
    drop_next: BTreeSet<(usize, usize, &'static str)>,
    sent: BTreeMap<&'static str, u64>,
    bytes: u64,
    stamp: u64,
}

fn pair(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

impl Sim {
    /// `n` nodes named `n00`, `n01`, ..., all members of one cluster, 1 ms latency, no faults.
    pub fn new(n: usize, config: PlumtreeConfig, seed: u64) -> Sim {
        let mut sim = Sim {
            now: Millis(0),
            config,
            seed,
            rng: StdRng::seed_from_u64(seed),
            nodes: Vec::new(),
            members: BTreeSet::new(),
            queue: BTreeMap::new(),
            seq: 0,
            latency: 1,
            faults: Faults::default(),
            cut: BTreeSet::new(),
            drop_next: BTreeSet::new(),
            sent: BTreeMap::new(),
            bytes: 0,
            stamp: 0,
        };
        for _ in 0..n {
            sim.add_node();
        }
        let all: Vec<usize> = (0..n).collect();
        sim.set_members(&all);
        sim
    }

    /// Adds a node with an empty store; it is not a member until [`Sim::set_members`].
    pub fn add_node(&mut self) -> usize {
        let i = self.nodes.len();
        let id = NodeId::new(format!("n{i:02}"));
        let store = Arc::new(MemStore::new());
        let replica = self.boot(&id, 0, Recovered::empty());
        self.nodes.push(SimNode {
            id,
            replica: Some(replica),
            store,
            events: Vec::new(),
            lives: 0,
        });
        i
    }

    fn boot(&self, id: &NodeId, life: u64, recovered: Recovered) -> Replica {
        let seed = self.seed
            ^ (life << 32)
            ^ u64::from(id.as_str().bytes().fold(0u32, |h, b| h * 31 + u32::from(b)));
        let mut r = Replica::new(self.config.clone(), id.clone(), seed, recovered);
        r.subscribe(vmq_storage::metadata::PREFIX_SUBSCRIBER, false);
        r.subscribe(vmq_storage::metadata::PREFIX_RETAIN, false);
        r
    }

    /// Sets the cluster members; nodes outside the set are told they are alone.
    pub fn set_members(&mut self, members: &[usize]) {
        self.members = members.iter().copied().collect();
        for i in 0..self.nodes.len() {
            self.tell_membership(i);
        }
    }

    fn tell_membership(&mut self, i: usize) {
        let ids: Vec<NodeId> = if self.members.contains(&i) {
            self.members
                .iter()
                .map(|m| self.nodes[*m].id.clone())
                .collect()
        } else {
            vec![self.nodes[i].id.clone()]
        };
        let now = self.now;
        if let Some(r) = self.nodes[i].replica.as_mut() {
            r.handle_membership(now, &ids);
        }
        self.drain(i);
    }

    /// Sets the faults for frames sent from now on.
    pub fn set_faults(&mut self, faults: Faults) {
        self.faults = faults;
    }

    /// Sets the one-way latency in milliseconds (default 1).
    pub fn set_latency(&mut self, ms: u64) {
        self.latency = ms.max(1);
    }

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

    /// Node `i`.
    pub fn node(&self, i: usize) -> &SimNode {
        &self.nodes[i]
    }

    /// The replica of node `i`; panics while it is crashed (a test bug).
    pub fn replica(&self, i: usize) -> &Replica {
        match &self.nodes[i].replica {
            Some(r) => r,
            None => panic!("node {i} is crashed"),
        }
    }

    /// Mutable access to the replica of node `i` (drain with [`Sim::drain`] afterwards).
    pub fn replica_mut(&mut self, i: usize) -> &mut Replica {
        match &mut self.nodes[i].replica {
            Some(r) => r,
            None => panic!("node {i} is crashed"),
        }
    }

    /// Writes `data` under `key` at node `i`, superseding what node `i` reads there now.
    pub fn put(&mut self, i: usize, key: &MetaKey, data: &[u8]) -> MetaValue {
        self.stamp += 1;
        let value = MetaValue {
            timestamp: (self.now.0 << 16) | (self.stamp & 0xffff),
            data: data.to_vec(),
        };
        let now = self.now;
        let r = self.replica_mut(i);
        let context = r.read(key).context;
        r.handle_local(
            now,
            LocalOp::Put {
                key: key.clone(),
                value: value.clone(),
                context,
            },
        );
        self.drain(i);
        value
    }

    /// Deletes `key` at node `i`, superseding what node `i` reads there now.
    pub fn delete(&mut self, i: usize, key: &MetaKey) {
        let now = self.now;
        let r = self.replica_mut(i);
        let context = r.read(key).context;
        r.handle_local(
            now,
            LocalOp::Delete {
                key: key.clone(),
                context,
            },
        );
        self.drain(i);
    }

    /// The values of `key` at node `i` (siblings included, sorted).
    pub fn read(&self, i: usize, key: &MetaKey) -> Vec<MetaValue> {
        let mut v = self.replica(i).read(key).values;
        v.sort();
        v
    }

    /// Last-writer-wins read with write-back at node `i`.
    pub fn read_resolved(&mut self, i: usize, key: &MetaKey) -> Option<MetaValue> {
        let now = self.now;
        let v = self.replica_mut(i).read_resolved(now, key);
        self.drain(i);
        v
    }

    fn tell_reachability(&mut self, a: usize, b: usize, reachable: bool) {
        self.tell_one(a, b, reachable);
        self.tell_one(b, a, reachable);
    }

    /// Tells `at` only that `peer` is (un)reachable, and sends what that starts.
    fn tell_one(&mut self, at: usize, peer: usize, reachable: bool) {
        let now = self.now;
        let id = self.nodes[peer].id.clone();
        if let Some(r) = self.nodes[at].replica.as_mut() {
            r.handle_reachability(now, &id, reachable);
        }
        self.drain(at);
    }

    /// Cuts the link between `a` and `b` both ways (frames in flight are lost too); both learn
    /// that the other is unreachable, as the node's failure detector would tell them.
    pub fn cut(&mut self, a: usize, b: usize) {
        if a != b && self.cut.insert(pair(a, b)) {
            self.tell_reachability(a, b, false);
        }
    }

    /// Cuts every link of `a`.
    pub fn isolate(&mut self, a: usize) {
        for b in 0..self.nodes.len() {
            self.cut(a, b);
        }
    }

    /// Splits the cluster in two: every link between `side` and the other nodes is cut.
    pub fn partition(&mut self, side: &[usize]) {
        for &a in side {
            for b in 0..self.nodes.len() {
                if !side.contains(&b) {
                    self.cut(a, b);
                }
            }
        }
    }

    /// Loses the next frame of `kind` (see [`Message::kind`]) sent from `from` to `to`.
    pub fn drop_next(&mut self, from: usize, to: usize, kind: &'static str) {
        self.drop_next.insert((from, to, kind));
    }

    /// Restores every link. No link comes up to a crashed node: its recovery reports it.
    pub fn heal(&mut self) {
        for (a, b) in std::mem::take(&mut self.cut) {
            if self.nodes[a].replica.is_some() && self.nodes[b].replica.is_some() {
                self.tell_reachability(a, b, true);
            }
        }
    }

    /// Restores every link now, but lets each side's failure detector learn of it only after
    /// a random delay of up to `max_delay` ms (per side, as each transport redials on its own
    /// schedule); the network runs meanwhile. Returns when the last side has learned.
    pub fn heal_late(&mut self, max_delay: u64) {
        let start = self.now;
        let mut notices: Vec<(u64, usize, usize)> = Vec::new();
        for (a, b) in std::mem::take(&mut self.cut) {
            notices.push((self.rng.random_range(0..=max_delay), a, b));
            notices.push((self.rng.random_range(0..=max_delay), b, a));
        }
        notices.sort();
        for (delay, at, peer) in notices {
            let due = start.plus(delay);
            self.run_for(due.0.saturating_sub(self.now.0));
            if self.nodes[peer].replica.is_some() {
                self.tell_one(at, peer, true);
            }
        }
    }

    /// Crashes node `i`: its replica is gone, its store stays.
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].replica = None;
        for b in 0..self.nodes.len() {
            if b != i && !self.cut.contains(&pair(i, b)) {
                self.tell_reachability(i, b, false);
            }
        }
    }

    /// Copies every metadata row of node `from`'s store into crashed node `to`'s store, so that
    /// `to` recovers as an exact replica of `from` (for building large identical states fast).
    pub fn copy_store(&mut self, from: usize, to: usize) {
        assert!(
            self.nodes[to].replica.is_none(),
            "node {to} must be crashed"
        );
        let mut after: Option<Vec<u8>> = None;
        loop {
            let rows = match self.nodes[from].store.scan_prefix(
                Column::Metadata,
                b"",
                after.as_deref(),
                4096,
            ) {
                Ok(rows) => rows,
                Err(e) => panic!("memory store scan failed: {e}"),
            };
            let Some((last, _)) = rows.last() else { return };
            after = Some(last.clone());
            let mut batch = WriteBatch::new();
            for (k, v) in rows {
                batch.put(Column::Metadata, k, v);
            }
            if let Err(e) = self.nodes[to].store.write(batch, Durability::Buffered) {
                panic!("memory store refused a write: {e}");
            }
        }
    }

    /// Restarts node `i` from its store.
    pub fn recover(&mut self, i: usize) {
        let recovered = match Recovered::load(self.nodes[i].store.as_ref()) {
            Ok(r) => r,
            Err(e) => panic!("node {i} cannot recover: {e}"),
        };
        self.nodes[i].lives += 1;
        let replica = self.boot(&self.nodes[i].id.clone(), self.nodes[i].lives, recovered);
        self.nodes[i].replica = Some(replica);
        self.tell_membership(i);
        for b in 0..self.nodes.len() {
            if b == i {
                continue;
            }
            if self.cut.contains(&pair(i, b)) || self.nodes[b].replica.is_none() {
                // Down for the new process too, as its transport finds.
                self.tell_one(i, b, false);
            } else {
                self.tell_reachability(i, b, true);
            }
        }
    }

    /// Drains node `i`'s outputs: persists writes, sends frames, records events.
    pub fn drain(&mut self, i: usize) {
        loop {
            let node = &mut self.nodes[i];
            let Some(r) = node.replica.as_mut() else {
                return;
            };
            let mut progressed = false;
            while let Some(w) = r.poll_write() {
                if let Err(e) = node.store.write(w.batch, Durability::Buffered) {
                    panic!("memory store refused a write: {e}");
                }
                r.handle_persisted(w.token);
                progressed = true;
            }
            let mut out = Vec::new();
            while let Some(t) = r.poll_transmit() {
                out.push(t);
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

    fn transmit(&mut self, from: usize, peer: &NodeId, msg: &Message) {
        let Some(to) = self.nodes.iter().position(|n| n.id == *peer) else {
            return;
        };
        *self.sent.entry(msg.kind()).or_default() += 1;
        let bytes = msg.encode();
        self.bytes += bytes.len() as u64;
        if self.drop_next.remove(&(from, to, msg.kind()))
            || self.cut.contains(&pair(from, to))
            || self.rng.random_bool(self.faults.drop.clamp(0.0, 1.0))
        {
            return;
        }
        let copies = if self.rng.random_bool(self.faults.duplicate.clamp(0.0, 1.0)) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut delay = self.latency;
            if self.rng.random_bool(self.faults.reorder.clamp(0.0, 1.0)) {
                delay += self.rng.random_range(0..=10 * self.latency);
            }
            self.seq += 1;
            self.queue.insert(
                (self.now.plus(delay), self.seq),
                Envelope {
                    from,
                    to,
                    bytes: bytes.clone(),
                },
            );
        }
    }

    fn next_timer(&self) -> Option<(Millis, usize)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                n.replica
                    .as_ref()
                    .and_then(|r| r.poll_timeout())
                    .map(|t| (t, i))
            })
            .min()
    }

    /// Processes the next frame or timer, advancing the clock to it. False when nothing is
    /// scheduled at or before `limit`.
    pub fn step(&mut self, limit: Millis) -> bool {
        let frame = self.queue.keys().next().map(|(t, _)| *t);
        let timer = self.next_timer();
        match (frame, timer) {
            (Some(f), t) if f <= limit && t.is_none_or(|(t, _)| f <= t) => {
                let Some((_, env)) = self.queue.pop_first() else {
                    return false;
                };
                self.now = self.now.max(f);
                self.deliver(env);
                true
            }
            (_, Some((t, i))) if t <= limit => {
                self.now = self.now.max(t);
                let now = self.now;
                if let Some(r) = self.nodes[i].replica.as_mut() {
                    r.handle_timeout(now);
                }
                self.drain(i);
                true
            }
            _ => false,
        }
    }

    fn deliver(&mut self, env: Envelope) {
        if self.cut.contains(&pair(env.from, env.to)) {
            return;
        }
        let from = self.nodes[env.from].id.clone();
        let now = self.now;
        let Some(r) = self.nodes[env.to].replica.as_mut() else {
            return;
        };
        match Message::decode(&env.bytes) {
            Ok(msg) => r.handle_message(now, &from, msg),
            Err(e) => panic!("frame from {from} does not decode: {e}"),
        }
        self.drain(env.to);
    }

    /// Runs for `ms` of virtual time.
    pub fn run_for(&mut self, ms: u64) {
        let limit = self.now.plus(ms);
        while self.step(limit) {}
        self.now = limit;
    }

    /// Delivers frames until none is in flight (timers due meanwhile fire too), for at most
    /// `max_ms`. True when the network went quiet.
    pub fn run_until_quiet(&mut self, max_ms: u64) -> bool {
        let limit = self.now.plus(max_ms);
        while !self.queue.is_empty() {
            if !self.step(limit) {
                return false;
            }
        }
        true
    }

    /// Runs until every live member holds the same objects, for at most `max_ms`. True on
    /// convergence.
    pub fn run_until_converged(&mut self, max_ms: u64) -> bool {
        let limit = self.now.plus(max_ms);
        loop {
            if self.queue.is_empty() && self.converged() {
                return true;
            }
            if !self.step(limit) {
                return self.converged();
            }
        }
    }

    /// True when every live member has the same digest.
    pub fn converged(&self) -> bool {
        let mut digests = self
            .members
            .iter()
            .filter_map(|i| self.nodes[*i].replica.as_ref())
            .map(Replica::digest);
        match digests.next() {
            Some(first) => digests.all(|d| d == first),
            None => true,
        }
    }

    /// Frames sent of `kind` (see [`Message::kind`]) since the last [`Sim::reset_counters`].
    pub fn sent(&self, kind: &str) -> u64 {
        self.sent.get(kind).copied().unwrap_or(0)
    }

    /// Every frame counter.
    pub fn counters(&self) -> &BTreeMap<&'static str, u64> {
        &self.sent
    }

    /// Total frames and bytes sent since the last reset.
    pub fn totals(&self) -> (u64, u64) {
        (self.sent.values().sum(), self.bytes)
    }

    /// Zeroes the frame counters.
    pub fn reset_counters(&mut self) {
        self.sent.clear();
        self.bytes = 0;
    }

    /// The members, crashed or not.
    pub fn members(&self) -> Vec<usize> {
        self.members.iter().copied().collect()
    }

    /// The live members.
    pub fn live_members(&self) -> Vec<usize> {
        self.members
            .iter()
            .copied()
            .filter(|i| self.nodes[*i].replica.is_some())
            .collect()
    }
}
