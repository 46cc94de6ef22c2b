//! The SWC replica: `swc_groups` groups behind the [`MetadataBackend`] contract.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tracing::{debug, warn};
use vmq_storage::metadata::{
    LocalOp, MetaKey, MetaValue, MetadataBackend, MetadataEvent, Millis, NodeId, PendingWrite, Read, WriteToken,
};
use vmq_storage::{Column, WriteBatch};

use crate::clock::{NodeClock, ReplicaId, VersionVector};
use crate::config::SwcConfig;
use crate::group::{Effects, Group};
use crate::persist::{self, Recovered, StoredIdentity};
use crate::watermark::Watermark;
use crate::wire::{Body, Envelope, SwcMessage};

/// VerneMQ starts the first exchange of a group one second after the store starts.
const FIRST_SYNC_DELAY: u64 = 1000;

/// What this replica knows of a cluster member.
#[derive(Debug, Clone)]
struct Peer {
    /// Its replica id, learned from its messages (unknown until it first talks to us).
    replica: Option<ReplicaId>,
    /// Whether anti-entropy may pick it and broadcasts go to it.
    reachable: bool,
    /// While it is unreachable: per group, this replica's own counter when it became so. The
    /// writes made since are the broadcasts it missed; they are offered to it on the heal.
    missed_after: Option<Vec<u64>>,
}

/// Anti-entropy with one peer, for metrics: when the last exchange this replica started with
/// it completed, and what exchanges with it repaired here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeerExchangeStats {
    /// Exchanges with this peer completed since start (one per group).
    pub completed: u64,
    /// When the last one completed (the replica's clock).
    pub last_completed: Option<Millis>,
    /// Keys an exchange with this peer changed here.
    pub keys_repaired: u64,
}

/// One anti-entropy exchange this replica started (`vmq_swc_exchange_fsm`).
#[derive(Debug)]
struct Exchange {
    id: u64,
    peer: NodeId,
    deadline: Millis,
    phase: Phase,
}

#[derive(Debug)]
enum Phase {
    AwaitClock,
    AwaitObjects {
        remote: ReplicaId,
        clock: NodeClock,
        watermark: Watermark,
        retired: VersionVector,
        remaining: VecDeque<(ReplicaId, Vec<u64>)>,
        batch: u32,
    },
}

/// Counters describing a replica's state, for metrics (`swc_object_count`,
/// `swc_tombstone_count`) and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplicaStats {
    /// Keys with at least one live value.
    pub live_keys: usize,
    /// Keys held only as tombstones.
    pub tombstones: usize,
    /// Delete markers held (in tombstones or beside live siblings), not yet collected.
    pub delete_markers: usize,
    /// Entries of the dot-key maps.
    pub dkm_entries: usize,
    /// Node-clock entries summed over groups.
    pub clock_entries: usize,
    /// Exchanges completed since start.
    pub exchanges_completed: u64,
    /// Objects received by anti-entropy since start.
    pub objects_repaired: u64,
    /// Keys anti-entropy changed here since start (objects that were news).
    pub keys_repaired: u64,
    /// Exchanges started because a peer became reachable or joined, not by the timer.
    pub heal_exchanges: u64,
    /// Objects offered to peers on a heal (local writes they missed).
    pub objects_offered: u64,
}

/// A Server-Wide Clocks metadata replica (sans-IO).
///
/// Drive it as the [`MetadataBackend`] documentation says: after each input, drain
/// `poll_write` (persist, then `handle_persisted`), `poll_transmit`, `poll_event`, then read
/// `poll_timeout`. Messages that reveal state wait in `poll_transmit` until every write issued
/// before them is acknowledged, so a peer never learns of a write that a crash could undo.
#[derive(Debug)]
pub struct Replica {
    config: SwcConfig,
    node: NodeId,
    me: ReplicaId,
    rng: StdRng,
    groups: Vec<Group>,
    peers: BTreeMap<NodeId, Peer>,
    subscriptions: BTreeMap<String, bool>,
    exchanges: Vec<Option<Exchange>>,
    /// Per group, peers owed an exchange (healed or joined) while the group was busy.
    pending: Vec<BTreeSet<NodeId>>,
    peer_stats: BTreeMap<NodeId, PeerExchangeStats>,
    sync_timers: Vec<Option<Millis>>,
    gc_timer: Option<Millis>,
    armed: bool,
    next_exchange: u64,
    fx: Effects,
    writes: VecDeque<PendingWrite>,
    next_token: u64,
    unacked: BTreeSet<u64>,
    staged: Vec<(NodeId, SwcMessage)>,
    outbox: VecDeque<(u64, NodeId, SwcMessage)>,
    events: VecDeque<MetadataEvent>,
    stats: ReplicaStats,
}

impl Replica {
    /// A replica for `node_id`, continuing from `recovered` (use [`Recovered::empty`] on first
    /// start). The replica id is taken from the store, or drawn from `rng_seed` and written in
    /// the first batch.
    pub fn new(config: SwcConfig, node_id: NodeId, rng_seed: u64, recovered: Recovered) -> Self {
        let mut rng = StdRng::seed_from_u64(rng_seed);
        let groups_n = config.swc_groups.max(1);
        let mut fx = Effects::default();
        let incarnation = match &recovered.identity {
            Some((node, incarnation, groups)) if *node == node_id => {
                if *groups != groups_n {
                    warn!(stored = groups, configured = groups_n, "vmq_swc.swc_groups changed");
                }
                *incarnation
            }
            _ => {
                let incarnation = rng.random::<u32>();
                write_identity(&mut fx.batch, &node_id, incarnation, groups_n);
                incarnation
            }
        };
        let mut recovered_groups = recovered.groups;
        let groups =
            (0..groups_n).map(|g| Group::recover(g, recovered_groups.remove(&g).unwrap_or_default())).collect();
        let n = usize::from(groups_n);
        let mut replica = Self {
            me: ReplicaId::new(node_id.clone(), incarnation),
            node: node_id,
            config,
            rng,
            groups,
            peers: BTreeMap::new(),
            subscriptions: BTreeMap::new(),
            exchanges: (0..n).map(|_| None).collect(),
            pending: vec![BTreeSet::new(); n],
            peer_stats: BTreeMap::new(),
            sync_timers: vec![None; n],
            gc_timer: None,
            armed: false,
            next_exchange: 1,
            fx,
            writes: VecDeque::new(),
            next_token: 1,
            unacked: BTreeSet::new(),
            staged: Vec::new(),
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            stats: ReplicaStats::default(),
        };
        replica.finish();
        replica
    }

    /// This replica's id.
    pub fn replica_id(&self) -> &ReplicaId {
        &self.me
    }

    /// The node this replica runs on.
    pub fn node_id(&self) -> &NodeId {
        &self.node
    }

    /// Whether this node may join a cluster: always when `prevent_nonempty_join` is off,
    /// otherwise only with an empty history (`vmq_swc_peer_service:join/1` refuses with
    /// `non_empty_node`). The node checks this before it announces the join.
    pub fn may_join(&self) -> bool {
        !self.config.prevent_nonempty_join || self.is_empty_history()
    }

    /// The configuration.
    pub fn config(&self) -> &SwcConfig {
        &self.config
    }

    /// The group a key belongs to (`vmq_swc_plugin` `group_for_key`): FNV-1a of the prefix and
    /// the key, modulo `swc_groups`. Stable across builds and platforms, which every node of a
    /// cluster needs.
    pub fn group_for_key(key: &MetaKey, groups: u16) -> u16 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let prefix_len = u32::try_from(key.prefix.len()).unwrap_or(u32::MAX).to_be_bytes();
        for b in prefix_len.iter().chain(key.prefix.as_bytes()).chain(&key.key) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        u16::try_from(h % u64::from(groups.max(1))).unwrap_or(0)
    }

    fn group_index(&self, key: &MetaKey) -> usize {
        usize::from(Self::group_for_key(key, self.config.swc_groups.max(1)))
    }

    /// Starts an exchange with `peer` in every idle group now (VerneMQ's `{sync_with, Peer}`
    /// test hook; also what an operator "sync now" would call).
    pub fn sync_with(&mut self, now: Millis, peer: &NodeId) {
        self.arm(now);
        if self.peers.contains_key(peer) {
            for g in 0..self.groups.len() {
                if self.exchanges[g].is_none() {
                    self.start_exchange(now, g, peer.clone());
                }
            }
        }
        self.finish();
    }

    /// Anti-entropy per peer, for metrics. Cheap: no scan of the objects.
    pub fn peer_exchange_stats(&self) -> &BTreeMap<NodeId, PeerExchangeStats> {
        &self.peer_stats
    }

    /// Counters for metrics and tests.
    pub fn stats(&self) -> ReplicaStats {
        let mut s = self.stats;
        s.live_keys = 0;
        s.tombstones = 0;
        s.delete_markers = 0;
        s.dkm_entries = 0;
        s.clock_entries = 0;
        for g in &self.groups {
            s.tombstones += g.tombstones();
            s.delete_markers +=
                g.objects.values().map(|o| o.versions.values().filter(|v| v.is_none()).count()).sum::<usize>();
            s.live_keys += g.objects.values().filter(|o| !o.values().is_empty()).count();
            s.dkm_entries += g.dkm.len();
            s.clock_entries += g.clock.len();
        }
        s
    }

    /// Checks the internal invariants: the dot-key map indexes exactly the dots the objects
    /// hold, its gc candidates are exactly the tombstones, and the node clock has seen every
    /// held dot. Returns a description of the first violation.
    pub fn check_invariants(&self) -> Result<(), String> {
        for g in &self.groups {
            let mut expected = BTreeSet::new();
            for (key, obj) in &g.objects {
                if obj.versions.is_empty() {
                    return Err(format!("group {}: empty object {key:?}", g.index));
                }
                for dot in obj.versions.keys() {
                    if !g.clock.contains(dot) && !g.retired.covers(dot) {
                        return Err(format!("group {}: clock misses {dot:?}", g.index));
                    }
                    expected.insert((dot.clone(), key.clone()));
                }
                if obj.has_delete_marker() != g.dkm.gc_candidates().contains(key) {
                    return Err(format!("group {}: gc candidate mismatch for {key:?}", g.index));
                }
            }
            let indexed: BTreeSet<_> = g.dkm.iter().map(|(d, k)| (d, k.clone())).collect();
            if indexed != expected {
                return Err(format!("group {}: dot-key map out of sync", g.index));
            }
            if g.dkm.gc_candidates().iter().any(|k| !g.objects.contains_key(k)) {
                return Err(format!("group {}: gc candidate without object", g.index));
            }
        }
        Ok(())
    }

    /// The replica ids that have a node-clock entry in some group (retired ones excluded).
    pub fn known_replicas(&self) -> BTreeSet<ReplicaId> {
        self.groups.iter().flat_map(|g| g.clock.ids().cloned()).collect()
    }

    /// Every live key with its values, across groups (for tests and the status page).
    pub fn snapshot(&self) -> BTreeMap<MetaKey, Vec<MetaValue>> {
        let mut out = BTreeMap::new();
        for g in &self.groups {
            for (k, o) in &g.objects {
                let v = o.values();
                if !v.is_empty() {
                    out.insert(k.clone(), v);
                }
            }
        }
        out
    }

    fn arm(&mut self, now: Millis) {
        if self.armed {
            return;
        }
        self.armed = true;
        for g in 0..self.groups.len() {
            self.sync_timers[g] = (self.config.sync_interval > 0).then(|| {
                let jitter = self.rng.random_range(0..=self.config.sync_interval_leeway);
                now.plus(FIRST_SYNC_DELAY).plus(jitter)
            });
        }
        if self.config.periodic_gc {
            self.gc_timer = Some(now.plus(self.config.gc_interval));
        }
    }

    fn next_sync(&mut self, from: u64) -> Option<Millis> {
        if self.config.sync_interval == 0 {
            return None;
        }
        let jitter = self.rng.random_range(0..=self.config.sync_interval_leeway);
        Some(Millis(from).plus(self.config.sync_interval).plus(jitter))
    }

    /// Replica ids of this node and every member, or `None` while some member's id is unknown
    /// (then nothing can be proven seen by everyone).
    fn columns(&self) -> Option<Vec<ReplicaId>> {
        let mut cols = vec![self.me.clone()];
        for p in self.peers.values() {
            cols.push(p.replica.clone()?);
        }
        Some(cols)
    }

    fn send(&mut self, to: NodeId, group: usize, body: Body) {
        let group = u16::try_from(group).unwrap_or(u16::MAX);
        self.staged.push((to, SwcMessage::V1(Envelope { from: self.me.clone(), group, body })));
    }

    fn start_exchange(&mut self, now: Millis, g: usize, peer: NodeId) {
        let id = self.next_exchange;
        self.next_exchange += 1;
        debug!(group = g, %peer, exchange = id, "anti-entropy exchange started");
        self.exchanges[g] = Some(Exchange {
            id,
            peer: peer.clone(),
            deadline: now.plus(self.config.sync_timeout),
            phase: Phase::AwaitClock,
        });
        self.send(peer, g, Body::ClockRequest { exchange: id });
    }

    /// This replica's own counter in group `g`: its writes there are the dots up to it.
    fn own_counter(&self, g: usize) -> u64 {
        self.groups[g].clock.entry(&self.me).map_or(0, |e| e.max())
    }

    /// `peer` can be talked to again (or is new): offer it the writes it missed, then pull
    /// from it in every group, now rather than at the next tick, so that a heal repairs
    /// within round trips. Its own exchanges, started on the same event on its side, pull
    /// the rest from here.
    fn sync_after_heal(&mut self, now: Millis, peer: &NodeId, missed_after: Option<Vec<u64>>) {
        if let Some(marks) = missed_after.filter(|_| self.config.enable_broadcast) {
            self.offer_missed(peer, &marks);
        }
        for g in 0..self.groups.len() {
            match &self.exchanges[g] {
                None => {
                    self.stats.heal_exchanges += 1;
                    self.start_exchange(now, g, peer.clone());
                }
                Some(ex) if ex.peer == *peer => {}
                // One exchange per group at a time (`vmq_swc_exchange_fsm` locks the group):
                // this one starts as soon as the running one ends.
                Some(_) => {
                    self.pending[g].insert(peer.clone());
                }
            }
        }
    }

    /// Broadcasts to `peer` the objects holding a dot this replica minted after `marks` (per
    /// group): what its broadcasts while the peer was unreachable carried. The dot-key map
    /// finds them by range, so this costs what was written during the split. Writes lost
    /// between the cut and its detection are not covered; the exchange that follows is.
    fn offer_missed(&mut self, peer: &NodeId, marks: &[u64]) {
        let batch = self.config.exchange_batch_size.max(1);
        for g in 0..self.groups.len() {
            let mark = marks.get(g).copied().unwrap_or(0);
            let group = &self.groups[g];
            let keys = group.dkm.keys_above(&self.me, mark);
            if keys.is_empty() {
                continue;
            }
            let objects: Vec<_> = keys.iter().filter_map(|k| group.wire_object(k)).collect();
            let base = group.base();
            self.stats.objects_offered += objects.len() as u64;
            debug!(group = g, %peer, objects = objects.len(), "offering writes missed during the split");
            for chunk in objects.chunks(batch) {
                let body = Body::Broadcast { base: base.clone(), objects: chunk.to_vec() };
                self.send(peer.clone(), g, body);
            }
        }
    }

    /// Starts the exchanges owed to healed or new peers in groups that became idle.
    fn start_pending(&mut self, now: Millis) {
        for g in 0..self.groups.len() {
            if self.exchanges[g].is_some() {
                continue;
            }
            while let Some(peer) = self.pending[g].pop_first() {
                if self.peers.get(&peer).is_some_and(|p| p.reachable) {
                    self.stats.heal_exchanges += 1;
                    self.start_exchange(now, g, peer);
                    break;
                }
            }
        }
    }

    fn pick_peer(&mut self) -> Option<NodeId> {
        let reachable: Vec<&NodeId> = self.peers.iter().filter(|(_, p)| p.reachable).map(|(n, _)| n).collect();
        if reachable.is_empty() {
            return None;
        }
        let i = self.rng.random_range(0..reachable.len());
        Some(reachable[i].clone())
    }

    /// Asks for the next batch of missing dots, or ends the exchange when none remain.
    fn continue_exchange(&mut self, now: Millis, g: usize) {
        let Some(mut ex) = self.exchanges[g].take() else { return };
        let Phase::AwaitObjects { remote, clock, watermark, retired, remaining, batch } = &mut ex.phase else {
            return;
        };
        if remaining.is_empty() {
            let columns = self.columns();
            let group = &mut self.groups[g];
            let cols = columns.clone().unwrap_or_else(|| vec![self.me.clone(), remote.clone()]);
            group.finish_exchange(remote, clock, retired, watermark, &cols);
            if let Some(cols) = columns {
                group.collect(&self.me, &cols, &mut self.fx);
            }
            self.stats.exchanges_completed += 1;
            let peer_stats = self.peer_stats.entry(ex.peer.clone()).or_default();
            peer_stats.completed += 1;
            peer_stats.last_completed = Some(now);
            debug!(group = g, peer = %ex.peer, exchange = ex.id, "anti-entropy exchange done");
            return;
        }
        let mut dots = Vec::new();
        let mut budget = self.config.exchange_batch_size.max(1);
        while budget > 0 {
            let Some((id, counters)) = remaining.front_mut() else { break };
            let take = budget.min(counters.len());
            let rest = counters.split_off(take);
            let chunk = std::mem::replace(counters, rest);
            budget -= chunk.len();
            dots.push((id.clone(), chunk));
            if counters.is_empty() {
                remaining.pop_front();
            }
        }
        *batch += 1;
        let body = Body::MissingRequest { exchange: ex.id, batch: *batch, dots };
        ex.deadline = now.plus(self.config.sync_timeout);
        let peer = ex.peer.clone();
        self.exchanges[g] = Some(ex);
        self.send(peer, g, body);
    }

    /// Learns `from`'s replica id; a new one retires the previous incarnation.
    fn learn_peer(&mut self, from: &NodeId, id: &ReplicaId) -> bool {
        let Some(peer) = self.peers.get_mut(from) else { return false };
        if id.node != *from {
            return false;
        }
        if peer.replica.as_ref() != Some(id) {
            if let Some(old) = &peer.replica {
                debug!(%old, new = %id, "peer has a new replica id; retiring the old one");
            }
            peer.replica = Some(id.clone());
        }
        true
    }

    fn dispatch(&mut self, now: Millis, from: &NodeId, env: Envelope) {
        let g = usize::from(env.group);
        if g >= self.groups.len() {
            warn!(%from, group = env.group, "message for an unknown group (swc_groups differ?)");
            return;
        }
        if !self.learn_peer(from, &env.from) {
            debug!(%from, "message from a non-member ignored");
            return;
        }
        match env.body {
            Body::Broadcast { base, objects } => {
                self.groups[g].apply_remote(&base, objects, &mut self.fx);
            }
            Body::ClockRequest { exchange } => {
                let group = &self.groups[g];
                let body = Body::ClockReply {
                    exchange,
                    clock: group.clock.clone(),
                    watermark: group.watermark.clone(),
                    retired: group.retired.clone(),
                };
                self.send(from.clone(), g, body);
            }
            Body::MissingRequest { exchange, batch, dots } => {
                let group = &self.groups[g];
                let (objects, unserved) = group.objects_within(&dots, self.config.exchange_reply_bytes);
                let base = group.base();
                let body = if unserved.is_empty() {
                    Body::MissingReply { exchange, batch, base, objects }
                } else {
                    Body::MissingReplyPart { exchange, batch, base, objects, unserved }
                };
                self.send(from.clone(), g, body);
            }
            Body::ClockReply { exchange, clock, watermark, retired } => {
                let Some(ex) = self.exchanges[g].as_mut() else { return };
                if ex.id != exchange || ex.peer != *from || !matches!(ex.phase, Phase::AwaitClock) {
                    return;
                }
                let missing = clock.missing_dots(&self.groups[g].clock_with_retired());
                ex.phase = Phase::AwaitObjects {
                    remote: env.from,
                    clock,
                    watermark,
                    retired,
                    remaining: missing.into(),
                    batch: 0,
                };
                self.continue_exchange(now, g);
            }
            Body::MissingReplyPart { exchange, batch, base, objects, unserved } => {
                let Some(ex) = self.exchanges[g].as_mut() else { return };
                let (current, remaining) = match &mut ex.phase {
                    Phase::AwaitObjects { batch, remaining, .. } => (*batch, remaining),
                    Phase::AwaitClock => return,
                };
                if ex.id != exchange || ex.peer != *from || current != batch {
                    return;
                }
                // Asked for again before the rest, so the dots keep their order.
                for dots in unserved.into_iter().rev() {
                    remaining.push_front(dots);
                }
                self.stats.objects_repaired += objects.len() as u64;
                self.groups[g].apply_remote(&base, objects, &mut self.fx);
                self.continue_exchange(now, g);
            }
            Body::MissingReply { exchange, batch, base, objects } => {
                let Some(ex) = self.exchanges[g].as_ref() else { return };
                let current = match &ex.phase {
                    Phase::AwaitObjects { batch, .. } => *batch,
                    Phase::AwaitClock => return,
                };
                if ex.id != exchange || ex.peer != *from || current != batch {
                    return;
                }
                self.stats.objects_repaired += objects.len() as u64;
                let changed = self.groups[g].apply_remote(&base, objects, &mut self.fx) as u64;
                self.stats.keys_repaired += changed;
                self.peer_stats.entry(from.clone()).or_default().keys_repaired += changed;
                self.continue_exchange(now, g);
            }
        }
    }

    /// This node was removed from the cluster: retire the replica id and start over empty, so
    /// the node can join again (with an empty history) under a fresh id.
    fn leave(&mut self) {
        let mut incarnation = self.rng.random::<u32>();
        while incarnation == self.me.incarnation {
            incarnation = self.rng.random::<u32>();
        }
        debug!(old = %self.me, incarnation, "left the cluster; replica id retired");
        self.me = ReplicaId::new(self.node.clone(), incarnation);
        for g in 0..self.groups.len() {
            let old = std::mem::replace(&mut self.groups[g], Group::new(u16::try_from(g).unwrap_or(0)));
            for (key, obj) in old.objects {
                self.fx.batch.delete(Column::Metadata, persist::object_key(old.index, &key));
                let values = obj.values();
                if !values.is_empty() {
                    self.fx.changes.push(crate::group::Change { key, old: values, new: Vec::new(), local: true });
                }
            }
            self.fx.batch.delete(Column::Metadata, persist::clock_key(old.index));
            self.fx.batch.delete(Column::Metadata, persist::watermark_key(old.index));
            self.exchanges[g] = None;
            self.pending[g].clear();
        }
        self.peers.clear();
        self.peer_stats.clear();
        write_identity(&mut self.fx.batch, &self.node, incarnation, self.config.swc_groups.max(1));
    }

    /// Ends the handling of one input: persists dirty clocks, issues the write batch, releases
    /// staged messages behind it and turns changes into events.
    fn finish(&mut self) {
        for g in &mut self.groups {
            g.flush(&mut self.fx);
        }
        let fx = std::mem::take(&mut self.fx);
        if !fx.batch.is_empty() {
            let token = self.next_token;
            self.next_token += 1;
            self.unacked.insert(token);
            self.writes.push_back(PendingWrite { token: WriteToken(token), batch: fx.batch });
        }
        let barrier = self.next_token - 1;
        for (to, msg) in self.staged.drain(..) {
            self.outbox.push_back((barrier, to, msg));
        }
        for c in fx.changes {
            let Some(skip_local) = self.subscriptions.get(&c.key.prefix) else { continue };
            if c.local && *skip_local {
                continue;
            }
            self.events.push_back(MetadataEvent { key: c.key, old: c.old, new: c.new, local: c.local });
        }
    }
}

fn write_identity(batch: &mut WriteBatch, node: &NodeId, incarnation: u32, groups: u16) {
    let rec = StoredIdentity::V1 { node: node.clone(), incarnation, groups };
    batch.put(Column::Metadata, persist::identity_key(), persist::encode(&rec));
}

impl MetadataBackend for Replica {
    type Message = SwcMessage;
    type Context = VersionVector;

    fn handle_local(&mut self, now: Millis, op: LocalOp<VersionVector>) {
        self.arm(now);
        let (key, version, context) = match op {
            LocalOp::Put { key, value, context } => (key, Some(value), context),
            LocalOp::Delete { key, context } => (key, None, context),
        };
        let g = self.groups.len().min(self.group_index(&key));
        let Some(group) = self.groups.get_mut(g) else { return };
        let object = group.write_local(&self.me, &key, version, &context, &mut self.fx);
        if self.config.enable_broadcast {
            let base = group.base();
            // Unreachable peers too: the cluster link keeps what is sent to a peer it cannot
            // reach (bounded by `outgoing_clustering_buffer_size`) and delivers it when the
            // link works again, before the failure detector says so; the offer and exchange of
            // the heal repair whatever did not get through.
            let targets: Vec<NodeId> = self.peers.keys().cloned().collect();
            for peer in targets {
                let body = Body::Broadcast { base: base.clone(), objects: vec![object.clone()] };
                self.send(peer, g, body);
            }
        }
        self.finish();
    }

    fn handle_message(&mut self, now: Millis, from: &NodeId, msg: SwcMessage) {
        self.arm(now);
        match msg {
            SwcMessage::V1(env) => self.dispatch(now, from, env),
        }
        self.start_pending(now);
        self.finish();
    }

    fn handle_timeout(&mut self, now: Millis) {
        self.arm(now);
        for g in 0..self.groups.len() {
            if self.exchanges[g].as_ref().is_some_and(|ex| ex.deadline <= now) {
                debug!(group = g, "anti-entropy exchange timed out");
                self.exchanges[g] = None;
            }
            if self.sync_timers[g].is_some_and(|t| t <= now) {
                self.sync_timers[g] = self.next_sync(now.0);
                if self.exchanges[g].is_none()
                    && let Some(peer) = self.pick_peer()
                {
                    self.start_exchange(now, g, peer);
                }
            }
        }
        self.start_pending(now);
        if self.gc_timer.is_some_and(|t| t <= now) {
            self.gc_timer = Some(now.plus(self.config.gc_interval));
            if let Some(cols) = self.columns() {
                for g in &mut self.groups {
                    g.collect(&self.me, &cols, &mut self.fx);
                }
            }
        }
        self.finish();
    }

    fn handle_persisted(&mut self, token: WriteToken) {
        self.unacked.remove(&token.0);
    }

    fn handle_membership(&mut self, now: Millis, members: &[NodeId]) {
        self.arm(now);
        if members.is_empty() {
            // The contract lists this node too; an empty list is a caller bug, and treating it
            // as "we left" would throw the replica's state away.
            warn!("empty membership ignored");
            return;
        }
        if !members.contains(&self.node) {
            self.leave();
            self.finish();
            return;
        }
        let wanted: BTreeSet<&NodeId> = members.iter().filter(|m| **m != self.node).collect();
        self.peers.retain(|n, _| wanted.contains(n));
        self.peer_stats.retain(|n, _| wanted.contains(n));
        let mut added = Vec::new();
        for n in wanted {
            if !self.peers.contains_key(n) {
                self.peers.insert(n.clone(), Peer { replica: None, reachable: true, missed_after: None });
                added.push(n.clone());
            }
        }
        for (ex, pending) in self.exchanges.iter_mut().zip(&mut self.pending) {
            if ex.as_ref().is_some_and(|e| !self.peers.contains_key(&e.peer)) {
                *ex = None;
            }
            pending.retain(|p| self.peers.contains_key(p));
        }
        // A joining node, or this one starting, catches up with each new member at once
        // instead of after `sync_interval`s of random picks.
        for peer in added {
            self.sync_after_heal(now, &peer, None);
        }
        self.start_pending(now);
        self.finish();
    }

    fn handle_reachability(&mut self, now: Millis, peer: &NodeId, reachable: bool) {
        self.arm(now);
        let marks: Vec<u64> = (0..self.groups.len()).map(|g| self.own_counter(g)).collect();
        let Some(p) = self.peers.get_mut(peer) else {
            self.finish();
            return;
        };
        let was = std::mem::replace(&mut p.reachable, reachable);
        if reachable {
            if !was {
                let missed_after = p.missed_after.take();
                self.sync_after_heal(now, peer, missed_after);
            }
        } else {
            // The first loss counts: writes since then were never broadcast to the peer.
            p.missed_after.get_or_insert(marks);
            for (ex, pending) in self.exchanges.iter_mut().zip(&mut self.pending) {
                if ex.as_ref().is_some_and(|e| e.peer == *peer) {
                    *ex = None;
                }
                pending.remove(peer);
            }
        }
        self.start_pending(now);
        self.finish();
    }

    fn subscribe(&mut self, prefix: &str, skip_local: bool) {
        self.subscriptions.insert(prefix.to_owned(), skip_local);
    }

    fn read(&self, key: &MetaKey) -> Read<VersionVector> {
        let (values, context) = self.groups[self.group_index(key).min(self.groups.len() - 1)].read(key);
        Read { values, context }
    }

    fn fold(&self, prefix: &str, f: &mut dyn FnMut(&MetaKey, &[MetaValue])) {
        let start = MetaKey::new(prefix, Vec::new());
        for g in &self.groups {
            for (k, o) in g.objects.range(start.clone()..) {
                if k.prefix != prefix {
                    break;
                }
                let values = o.values();
                if !values.is_empty() {
                    f(k, &values);
                }
            }
        }
    }

    fn is_empty_history(&self) -> bool {
        self.groups.iter().all(|g| g.objects.is_empty() && g.clock.is_empty() && g.retired.is_empty())
    }

    fn poll_write(&mut self) -> Option<PendingWrite> {
        self.writes.pop_front()
    }

    fn poll_transmit(&mut self) -> Option<(NodeId, SwcMessage)> {
        let (barrier, _, _) = self.outbox.front()?;
        if self.unacked.first().is_some_and(|t| t <= barrier) {
            return None;
        }
        self.outbox.pop_front().map(|(_, to, msg)| (to, msg))
    }

    fn poll_event(&mut self) -> Option<MetadataEvent> {
        self.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<Millis> {
        let exchanges = self.exchanges.iter().flatten().map(|e| e.deadline);
        self.sync_timers.iter().flatten().copied().chain(exchanges).chain(self.gc_timer).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replica(name: &str, peers: &[&str]) -> Replica {
        let mut r = Replica::new(SwcConfig::default(), NodeId::new(name), 1, Recovered::empty());
        let mut members: Vec<NodeId> = peers.iter().map(|p| NodeId::new(*p)).collect();
        members.push(NodeId::new(name));
        r.handle_membership(Millis(0), &members);
        while let Some(w) = r.poll_write() {
            r.handle_persisted(w.token);
        }
        // The exchanges a new member gets at once.
        while r.poll_transmit().is_some() {}
        r
    }

    fn put(r: &mut Replica, k: &str) {
        let key = MetaKey::new("p", k.as_bytes().to_vec());
        let value = MetaValue { timestamp: 1, data: b"v".to_vec() };
        r.handle_local(Millis(1), LocalOp::Put { key, value, context: VersionVector::new() });
    }

    #[test]
    fn a_write_is_not_revealed_before_it_is_persisted() {
        let mut r = replica("a", &["b"]);
        put(&mut r, "k");
        let w = r.poll_write().expect("a batch for the write");
        assert!(r.poll_transmit().is_none(), "broadcast held until the batch is durable");
        r.handle_persisted(w.token);
        let (to, msg) = r.poll_transmit().expect("broadcast released");
        assert_eq!(to, NodeId::new("b"));
        let SwcMessage::V1(env) = msg;
        assert!(matches!(env.body, Body::Broadcast { .. }));
    }

    #[test]
    fn a_clock_reply_waits_for_earlier_writes() {
        let mut r = replica("a", &["b"]);
        put(&mut r, "k");
        let w = r.poll_write().expect("batch");
        let from = ReplicaId::new(NodeId::new("b"), 9);
        let ask = SwcMessage::V1(Envelope { from, group: 0, body: Body::ClockRequest { exchange: 1 } });
        r.handle_message(Millis(2), &NodeId::new("b"), ask);
        assert!(r.poll_transmit().is_none());
        r.handle_persisted(w.token);
        let mut bodies = Vec::new();
        while let Some((_, SwcMessage::V1(env))) = r.poll_transmit() {
            bodies.push(env.body);
        }
        assert!(matches!(bodies.last(), Some(Body::ClockReply { exchange: 1, .. })));
    }

    #[test]
    fn join_is_refused_from_a_non_empty_history_unless_allowed() {
        let mut r = replica("a", &[]);
        assert!(r.may_join());
        put(&mut r, "k");
        assert!(!r.is_empty_history());
        assert!(!r.may_join());
        let mut config = SwcConfig::default();
        config.set("vmq_swc.prevent_nonempty_join", "off").expect("flag");
        let mut lenient = Replica::new(config, NodeId::new("b"), 1, Recovered::empty());
        put(&mut lenient, "k");
        assert!(lenient.may_join());
    }

    #[test]
    fn an_empty_membership_does_not_wipe_the_replica() {
        let mut r = replica("a", &["b"]);
        put(&mut r, "k");
        let id = r.replica_id().clone();
        r.handle_membership(Millis(5), &[]);
        assert_eq!(r.replica_id(), &id);
        assert_eq!(r.snapshot().len(), 1);
        r.handle_membership(Millis(6), &[NodeId::new("b")]);
        assert_ne!(r.replica_id(), &id, "removed from the cluster: id retired");
        assert!(r.is_empty_history());
    }

    #[test]
    fn messages_from_non_members_are_ignored() {
        let mut r = replica("a", &["b"]);
        let from = ReplicaId::new(NodeId::new("x"), 1);
        let ask = SwcMessage::V1(Envelope { from, group: 0, body: Body::ClockRequest { exchange: 1 } });
        r.handle_message(Millis(2), &NodeId::new("x"), ask);
        assert!(r.poll_transmit().is_none());
    }

    #[test]
    fn group_for_key_is_stable() {
        // Pinned: every node of a cluster, whatever its build, must agree.
        let k = MetaKey::new("subscriber", b"client-1".to_vec());
        assert_eq!(Replica::group_for_key(&k, 10), Replica::group_for_key(&k.clone(), 10));
        let spread: BTreeSet<u16> =
            (0..200u32).map(|i| Replica::group_for_key(&MetaKey::new("p", i.to_be_bytes().to_vec()), 10)).collect();
        assert_eq!(spread.len(), 10, "keys spread over every group");
        assert_eq!(Replica::group_for_key(&MetaKey::new("p", b"k".to_vec()), 10), GOLDEN_GROUP);
    }

    // FNV-1a 64 of 00 00 00 01 "p" "k", modulo 10, computed independently.
    const GOLDEN_GROUP: u16 = 3;

    #[test]
    fn the_first_batch_persists_the_identity_and_recovery_keeps_it() {
        let store = vmq_storage::MemStore::new();
        let mut r = Replica::new(SwcConfig::default(), NodeId::new("a"), 5, Recovered::empty());
        let w = r.poll_write().expect("identity batch");
        vmq_storage::Store::write(&store, w.batch, vmq_storage::Durability::Sync).expect("write");
        let again = Replica::new(SwcConfig::default(), NodeId::new("a"), 6, Recovered::load(&store).expect("load"));
        assert_eq!(again.replica_id(), r.replica_id());
        assert!(again.is_empty_history());
        assert!(r.poll_write().is_none());
    }
}
