//! The plumtree replica: objects, broadcast trees, timers and outputs.
//!
//! Anti-entropy exchanges and tombstone reclamation are in `exchange.rs`, as a second `impl`
//! block of [`Replica`].

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use rand::SeedableRng;
use rand::rngs::StdRng;
use vmq_storage::WriteBatch;
use vmq_storage::metadata::{
    LocalOp, MetaKey, MetaValue, MetadataBackend, MetadataEvent, Millis, NodeId, PendingWrite, Read, WriteToken,
};

use crate::broadcast::Trees;
use crate::config::PlumtreeConfig;
use crate::dvv::VersionVector;
use crate::exchange::Exchange;
use crate::hashtree::{HashTree, fnv1a};
use crate::message::{Hello, IHave, Message, MessageV1, Object, WireError, check_hello};
use crate::persist::{self, Recovered};

/// Announcements per `i_have` frame, so that one frame stays small.
const IHAVE_CHUNK: usize = 1000;

/// An object with the hash it contributes to the hash tree.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub(crate) object: Object,
    pub(crate) hash: u64,
}

/// A key whose every value is a delete, awaiting reclamation.
#[derive(Debug, Clone)]
pub(crate) struct Tombstone {
    /// When this node last saw the tombstone change.
    pub(crate) since: Millis,
    /// Peers an exchange found holding this exact tombstone.
    pub(crate) confirmed: BTreeSet<NodeId>,
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaStats {
    /// Exchanges started by this node that ran to the end.
    pub exchanges_completed: u64,
    /// Exchanges started by this node that were abandoned on `metadata_exchange_timeout`.
    pub exchanges_timed_out: u64,
    /// Keys changed by anti-entropy (both roles).
    pub keys_repaired: u64,
    /// Tombstones reclaimed.
    pub tombstones_reclaimed: u64,
    /// Grafts sent (messages this node missed on the tree and asked for).
    pub grafts_sent: u64,
    /// Exchanges started because a peer became reachable or joined, not by the timer.
    pub heal_exchanges: u64,
    /// Announcements (`i_have`) of local writes sent to a peer on its heal.
    pub writes_offered: u64,
}

/// Anti-entropy with one peer, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeerExchangeStats {
    /// Exchanges this node started with the peer that ran to the end.
    pub completed: u64,
    /// When the last of them ended (the replica's clock).
    pub last_completed: Option<Millis>,
    /// Keys changed here by exchanges with the peer (both roles).
    pub keys_repaired: u64,
}

/// Local writes made while a peer was unreachable, to announce to it on the heal. Bounded:
/// past `outstanding_limit` keys only the exchange repairs, which costs the same per key.
#[derive(Debug, Clone, Default)]
pub(crate) enum Missed {
    #[default]
    None,
    Keys(BTreeSet<MetaKey>),
    Overflowed,
}

#[derive(Debug, Default)]
struct Timers {
    lazy: Option<Millis>,
    exchange: Option<Millis>,
    sweep: Option<Millis>,
}

/// Grafts sent for one `(root, key)`: to whom, and the versions asked for, merged.
#[derive(Debug, Default)]
struct Asked {
    peers: Vec<NodeId>,
    context: VersionVector,
}

/// A plumtree metadata replica (sans-IO).
///
/// Drive it as the [`MetadataBackend`] contract says: after each input, drain `poll_write`
/// (persist, then `handle_persisted`), `poll_transmit`, `poll_event`, then arm `poll_timeout`.
/// A message is released by `poll_transmit` only once every write staged before it is
/// persisted, so no peer learns of a state this node could lose in a crash. Timers are armed
/// by the first input that carries `now` (normally the initial `handle_membership`).
#[derive(Debug)]
pub struct Replica {
    pub(crate) config: PlumtreeConfig,
    pub(crate) me: NodeId,
    pub(crate) rng: StdRng,
    pub(crate) objects: BTreeMap<MetaKey, Stored>,
    pub(crate) tree: HashTree,
    pub(crate) tombstones: BTreeMap<MetaKey, Tombstone>,
    history: bool,
    /// The highest counter this node used for a dot of its own, on any key (persisted).
    own_counter: u64,
    pub(crate) members: BTreeSet<NodeId>,
    pub(crate) unreachable: BTreeSet<NodeId>,
    refused: BTreeMap<NodeId, WireError>,
    trees: Trees,
    subscriptions: BTreeMap<String, bool>,
    writes: VecDeque<PendingWrite>,
    batch: Option<(WriteToken, WriteBatch)>,
    next_token: u64,
    last_token: Option<u64>,
    unpersisted: BTreeSet<u64>,
    transmits: VecDeque<(Option<u64>, NodeId, Message)>,
    events: VecDeque<MetadataEvent>,
    timers: Timers,
    pub(crate) exchanges: BTreeMap<u64, Exchange>,
    pub(crate) stats: ReplicaStats,
    pub(crate) peer_stats: BTreeMap<NodeId, PeerExchangeStats>,
    /// Per unreachable peer, the local writes it did not get.
    missed: BTreeMap<NodeId, Missed>,
    /// Versions asked for by a graft since the last lazy tick, per `(root, key)`: the same
    /// version announced by another peer meanwhile is not asked for again, since a second
    /// copy would arrive as a duplicate and prune a link that is repairing the tree.
    /// The peers asked are kept: their answers are never duplicates.
    grafting: BTreeMap<(NodeId, MetaKey), Asked>,
    /// Per key (hashed): the tree (its root, hashed) whose broadcast brought the version held
    /// now, for versions that arrived since the last lazy tick. A copy of that version on
    /// another tree (the key's object travels on the tree of every node that wrote it) says
    /// nothing about the link it came over; only a second copy on the same tree prunes.
    delivered: HashMap<u64, u64>,
}

/// The hash a key contributes to the hash tree: over prefix, key and the encoded object.
fn key_id(key: &MetaKey) -> u64 {
    fnv1a(&[key.prefix.as_bytes(), &key.key])
}

fn root_id(root: &NodeId) -> u64 {
    fnv1a(&[root.as_str().as_bytes()])
}

pub(crate) fn object_hash(key: &MetaKey, object: &Object) -> u64 {
    let bytes = postcard::to_stdvec(object).unwrap_or_default();
    fnv1a(&[key.prefix.as_bytes(), &key.key, &bytes])
}

fn live(object: &Object) -> Vec<MetaValue> {
    object.values().filter_map(|v| v.clone()).collect()
}

fn is_tombstone(object: &Object) -> bool {
    object.values().all(Option::is_none)
}

impl Replica {
    /// A replica of `node_id` starting from `recovered` (see [`Recovered::load`]), with all
    /// randomness drawn from `rng_seed`.
    pub fn new(config: PlumtreeConfig, node_id: NodeId, rng_seed: u64, recovered: Recovered) -> Replica {
        let mut tree = HashTree::new();
        let mut objects = BTreeMap::new();
        let mut tombstones = BTreeMap::new();
        let mut own_counter = recovered.counter;
        for (key, object) in recovered.objects {
            own_counter = own_counter.max(object.context().counter(&node_id));
            let hash = object_hash(&key, &object);
            tree.update(&key.prefix, &key.key, None, Some(hash));
            if is_tombstone(&object) {
                // Confirmations are not persisted: a restart only delays reclamation.
                tombstones.insert(key.clone(), Tombstone { since: Millis(0), confirmed: BTreeSet::new() });
            }
            objects.insert(key, Stored { object, hash });
        }
        let outstanding_limit = config.outstanding_limit.max(1);
        Replica {
            config,
            trees: Trees::new(node_id.clone(), outstanding_limit),
            members: BTreeSet::from([node_id.clone()]),
            me: node_id,
            rng: StdRng::seed_from_u64(rng_seed),
            objects,
            tree,
            tombstones,
            history: recovered.history,
            own_counter,
            unreachable: BTreeSet::new(),
            refused: BTreeMap::new(),
            subscriptions: BTreeMap::new(),
            writes: VecDeque::new(),
            batch: None,
            next_token: 0,
            last_token: None,
            unpersisted: BTreeSet::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            timers: Timers::default(),
            exchanges: BTreeMap::new(),
            stats: ReplicaStats::default(),
            peer_stats: BTreeMap::new(),
            missed: BTreeMap::new(),
            grafting: BTreeMap::new(),
            delivered: HashMap::new(),
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.me
    }

    /// Counters.
    pub fn stats(&self) -> &ReplicaStats {
        &self.stats
    }

    /// Anti-entropy per peer, for metrics.
    pub fn peer_exchange_stats(&self) -> &BTreeMap<NodeId, PeerExchangeStats> {
        &self.peer_stats
    }

    /// Peers refused at the handshake (they run `vmq_swc` or an unknown protocol version),
    /// with the reason to show the operator.
    pub fn refused_peers(&self) -> impl Iterator<Item = (&NodeId, &WireError)> {
        self.refused.iter()
    }

    /// True when `peer` was refused at the handshake.
    pub fn is_refused(&self, peer: &NodeId) -> bool {
        self.refused.contains_key(peer)
    }

    /// Number of stored objects, tombstones included.
    pub fn object_count(&self) -> usize {
        self.objects.len()
    }

    /// Number of tombstones awaiting reclamation.
    pub fn tombstone_count(&self) -> usize {
        self.tombstones.len()
    }

    /// Hash of every non-empty prefix: two replicas with equal digests hold the same objects.
    pub fn digest(&self) -> Vec<(String, u64)> {
        self.tree.prefixes()
    }

    /// The eager peers of `root`'s broadcast tree on this node.
    pub fn eager_peers(&self, root: &NodeId) -> BTreeSet<NodeId> {
        self.trees.eager_of(root)
    }

    /// The lazy peers of `root`'s broadcast tree on this node.
    pub fn lazy_peers(&self, root: &NodeId) -> BTreeSet<NodeId> {
        self.trees.lazy_of(root)
    }

    /// Announcements not yet acknowledged by lazy peers.
    pub fn outstanding_len(&self) -> usize {
        self.trees.outstanding_len()
    }

    // ----- outputs -------------------------------------------------------------------------

    fn batch_mut(&mut self) -> &mut WriteBatch {
        if self.batch.is_none() {
            let token = self.next_token;
            self.next_token += 1;
            self.unpersisted.insert(token);
            self.last_token = Some(token);
            self.batch = Some((WriteToken(token), WriteBatch::new()));
        }
        &mut self.batch.get_or_insert_with(|| (WriteToken(0), WriteBatch::new())).1
    }

    /// Closes the batch of the current input so `poll_write` can hand it out.
    fn seal(&mut self) {
        if let Some((token, batch)) = self.batch.take() {
            self.writes.push_back(PendingWrite { token, batch });
        }
    }

    /// Queues `msg` for `peer`, released once every write staged so far is durable.
    pub(crate) fn send(&mut self, peer: &NodeId, msg: MessageV1) {
        if *peer == self.me || self.refused.contains_key(peer) {
            return;
        }
        self.transmits.push_back((self.last_token, peer.clone(), Message::V1(msg)));
    }

    // ----- state changes -------------------------------------------------------------------

    /// Stores `object` under `key`: hash tree, write batch, tombstone index and event.
    pub(crate) fn store(&mut self, now: Millis, key: &MetaKey, object: Object, local: bool) {
        if !self.delivered.is_empty() {
            // A broadcast that brought this version records its tree after storing it.
            self.delivered.remove(&key_id(key));
        }
        let hash = object_hash(key, &object);
        let old = self.objects.get(key).map(|s| (s.hash, live(&s.object)));
        self.tree.update(&key.prefix, &key.key, old.as_ref().map(|(h, _)| *h), Some(hash));
        if !self.history {
            self.history = true;
            persist::put_history(self.batch_mut());
        }
        persist::put_object(self.batch_mut(), key, &object);
        let own = object.context().counter(&self.me);
        if own > self.own_counter {
            self.own_counter = own;
            persist::put_counter(self.batch_mut(), own);
        }
        if is_tombstone(&object) {
            self.tombstones.insert(key.clone(), Tombstone { since: now, confirmed: BTreeSet::new() });
        } else {
            self.tombstones.remove(key);
        }
        let new_values = live(&object);
        let old_values = old.map(|(_, v)| v).unwrap_or_default();
        self.objects.insert(key.clone(), Stored { object, hash });
        if old_values != new_values
            && let Some(skip_local) = self.subscriptions.get(&key.prefix)
            && !(local && *skip_local)
        {
            self.events.push_back(MetadataEvent { key: key.clone(), old: old_values, new: new_values, local });
        }
    }

    /// Removes a reclaimed tombstone.
    pub(crate) fn forget(&mut self, key: &MetaKey) {
        if let Some(s) = self.objects.remove(key) {
            self.tree.update(&key.prefix, &key.key, Some(s.hash), None);
            persist::delete_object(self.batch_mut(), key);
        }
        self.tombstones.remove(key);
    }

    /// Merges a peer's version of `key`; true when the local object changed.
    pub(crate) fn merge_remote(&mut self, now: Millis, key: &MetaKey, remote: &Object) -> bool {
        let merged = match self.objects.get(key) {
            Some(s) if s.object.descends(remote) => return false,
            Some(s) => s.object.sync(remote),
            None => remote.clone(),
        };
        if merged.is_empty() {
            // A set without any value carries no information worth storing.
            return false;
        }
        self.store(now, key, merged, false);
        true
    }

    // ----- broadcast -----------------------------------------------------------------------

    /// Eager push to `root`'s eager peers (except `from`), lazy announcement to its lazy peers.
    ///
    /// Nothing is pushed to an unreachable peer: the version is announced to it when the link
    /// heals instead. A push queued for a peer that is down arrives after the heal, when the
    /// heal's offers and exchange have usually delivered it already; as a duplicate it would
    /// prune the link, and enough such prunes leave the peer off the tree, hearing of new
    /// writes only at the next lazy tick, seconds later.
    fn push(&mut self, root: &NodeId, from: &NodeId, key: &MetaKey, object: &Object) {
        let mut targets = self.trees.eager_peers(root, from);
        let down: Vec<NodeId> = targets.iter().filter(|p| self.unreachable.contains(*p)).cloned().collect();
        if !down.is_empty() {
            // The tree runs through a peer that is down: the reachable lazy peers become eager
            // and get it now, instead of at their next lazy tick (the paper's NeighborDown
            // repair; duplicates prune the tree back). They must become eager, not only be
            // sent this one: a peer that gets it here first prunes whoever sends it next, and
            // a link pushed over but still lazy on this side would leave it off the tree.
            targets.retain(|p| !self.unreachable.contains(p));
            let lazy: Vec<NodeId> = self
                .trees
                .lazy_of(root)
                .into_iter()
                .filter(|p| p != from && p != root && !self.unreachable.contains(p))
                .collect();
            for peer in &lazy {
                self.trees.add_eager(root, peer);
            }
            targets.extend(lazy);
            let context = object.context();
            for peer in down {
                self.trees.announce_to(peer, root, key, &context);
            }
        }
        for peer in targets {
            let msg = MessageV1::Broadcast { root: root.clone(), key: key.clone(), object: object.clone() };
            self.send(&peer, msg);
        }
        self.trees.schedule_lazy(root, from, key, &object.context());
    }

    fn handle_broadcast(&mut self, now: Millis, from: &NodeId, root: NodeId, key: MetaKey, object: Object) {
        // The answer to this node's own graft repairs the tree, even when another root's
        // write of the same key brought the same version first.
        let answers_graft = !self.grafting.is_empty() && {
            let slot = (root.clone(), key.clone());
            let answered = self.grafting.get_mut(&slot).is_some_and(|asked| {
                let before = asked.peers.len();
                asked.peers.retain(|p| p != from);
                asked.peers.len() < before
            });
            if self.grafting.get(&slot).is_some_and(|asked| asked.peers.is_empty()) {
                self.grafting.remove(&slot);
            }
            answered
        };
        if self.merge_remote(now, &key, &object) {
            self.delivered.insert(key_id(&key), root_id(&root));
            if self.trees.is_lazy(&root, from) {
                // Pushed over a link this side had pruned (the push crossed the prune, or the
                // sender repairs around a dead peer): the link is eager again, on both sides.
                self.send(from, MessageV1::Eager { root: root.clone() });
            }
            self.trees.add_eager(&root, from);
            self.push(&root, from, &key, &object);
        } else if !answers_graft && self.delivered.get(&key_id(&key)) == Some(&root_id(&root)) {
            // A duplicate: this link is redundant on root's tree (paper §3.3, PRUNE).
            self.trees.add_lazy(&root, from);
            tracing::debug!(peer = %from, %root, key = ?key, "duplicate: pruning the link");
            self.send(from, MessageV1::Prune { root });
        }
    }

    fn is_stale(&self, ihave: &IHave) -> bool {
        self.objects.get(&ihave.key).is_some_and(|s| s.object.context().descends(&ihave.context))
    }

    fn handle_ihave(&mut self, from: &NodeId, list: Vec<IHave>) {
        let mut ignored = Vec::new();
        for ihave in list {
            if self.is_stale(&ihave) {
                ignored.push(ihave);
            } else {
                let asked = self.grafting.entry((ihave.root.clone(), ihave.key.clone())).or_default();
                if !asked.peers.is_empty() && asked.context.descends(&ihave.context) {
                    // Already asked for (the announcer keeps it outstanding and announces it
                    // again at its next tick, should the answer be lost).
                    continue;
                }
                if !asked.peers.contains(from) {
                    asked.peers.push(from.clone());
                }
                asked.context.merge(&ihave.context);
                // Missed on the tree: repair the tree through this link (paper §3.4, GRAFT).
                self.trees.add_eager(&ihave.root, from);
                self.stats.grafts_sent += 1;
                tracing::debug!(peer = %from, root = %ihave.root, key = ?ihave.key, "grafting");
                self.send(from, MessageV1::Graft(ihave));
            }
        }
        if !ignored.is_empty() {
            self.send(from, MessageV1::IgnoredIHave(ignored));
        }
    }

    fn handle_graft(&mut self, from: &NodeId, ihave: IHave) {
        self.trees.ack(from, &ihave);
        self.trees.add_eager(&ihave.root, from);
        if let Some(s) = self.objects.get(&ihave.key)
            && s.object.context().descends(&ihave.context)
        {
            // The current version covers the one asked for (riak_core would answer `stale`
            // and let the newer broadcast arrive; sending it now is cheaper than waiting).
            let msg = MessageV1::Broadcast { root: ihave.root, key: ihave.key, object: s.object.clone() };
            self.send(from, msg);
        }
    }

    fn lazy_tick(&mut self) {
        // A graft whose answer was lost is asked again when the version is next announced.
        self.grafting.clear();
        // Copies of one version arrive within round trips of each other, not a tick apart.
        self.delivered.clear();
        self.announce_outstanding(None);
    }

    /// Sends the outstanding announcements to every reachable lazy peer but `except`.
    fn announce_outstanding(&mut self, except: Option<&NodeId>) {
        if self.transmits.len() > self.config.drop_i_have_threshold {
            // Overloaded: announcements stay outstanding for the next tick.
            return;
        }
        for (peer, list) in self.trees.outstanding() {
            if self.unreachable.contains(&peer) || !self.members.contains(&peer) || Some(&peer) == except {
                continue;
            }
            for chunk in list.chunks(IHAVE_CHUNK) {
                self.send(&peer, MessageV1::IHave(chunk.to_vec()));
            }
        }
    }

    fn handle_hello(&mut self, from: &NodeId, hello: &Hello) {
        match check_hello(from, hello) {
            Ok(()) => {
                self.refused.remove(from);
            }
            Err(e) => {
                tracing::error!(peer = %from, error = %e, "refusing metadata peer");
                self.refused.insert(from.clone(), e);
            }
        }
    }

    // ----- heals ---------------------------------------------------------------------------

    /// `peer` can be talked to again: announce the local writes it missed and what its lazy
    /// link still owes it, then start an exchange with it now, not at the next
    /// `broadcast_exchange_timer` tick. Its side does the same on the same event.
    fn sync_after_heal(&mut self, now: Millis, peer: &NodeId, missed: Missed) {
        // `min_lazy_tick_interval = 0` switches announcements off, heal offers included, so
        // that only the exchange repairs.
        if self.config.min_lazy_tick_interval > 0 {
            self.offer_missed(peer, missed);
        }
        if !self.exchanges.values().any(|x| x.peer == *peer) && !self.is_refused(peer) {
            self.stats.heal_exchanges += 1;
            self.start_heal_exchange(now, peer.clone());
        }
    }

    /// A link changed: what was pushed eagerly over a link that has just been declared dead
    /// may have died with it (the failure detector speaks a second or more after the link
    /// stops), and the subtree behind that link would wait for the next lazy tick (seconds)
    /// to hear of it. Announcing what is outstanding to the lazy peers now lets them graft
    /// within a round trip. `min_lazy_tick_interval = 0` switches announcements off.
    fn announce_outstanding_now(&mut self, except: Option<&NodeId>) {
        if self.config.min_lazy_tick_interval > 0 {
            self.announce_outstanding(except);
        }
    }

    /// Announces to `peer` the local writes it missed (current versions) and the
    /// announcements its lazy link still owes it; it grafts what it lacks.
    fn offer_missed(&mut self, peer: &NodeId, missed: Missed) {
        // One announcement per key, of the current version: the peer grafts each key once.
        let mut offer: BTreeMap<(NodeId, MetaKey), VersionVector> = BTreeMap::new();
        for (to, list) in self.trees.outstanding() {
            if to == *peer {
                offer.extend(list.into_iter().map(|i| ((i.root, i.key), i.context)));
            }
        }
        if let Missed::Keys(keys) = missed {
            for key in keys {
                if let Some(s) = self.objects.get(&key) {
                    self.stats.writes_offered += 1;
                    offer.insert((self.me.clone(), key), s.object.context());
                }
            }
        }
        let offer: Vec<IHave> = offer.into_iter().map(|((root, key), context)| IHave { root, key, context }).collect();
        for chunk in offer.chunks(IHAVE_CHUNK) {
            self.send(peer, MessageV1::IHave(chunk.to_vec()));
        }
    }

    // ----- timers --------------------------------------------------------------------------

    fn arm(&mut self, now: Millis) {
        let every = |ms: u64| (ms > 0).then(|| now.plus(ms));
        if self.timers.lazy.is_none() && self.timers.exchange.is_none() && self.timers.sweep.is_none() {
            self.timers.lazy = every(self.config.min_lazy_tick_interval);
            self.timers.exchange = every(self.config.broadcast_exchange_timer);
            self.timers.sweep = every(self.config.metadata_hashtree_timer);
            // Recovered tombstones start their grace period when this life of the node starts.
            for t in self.tombstones.values_mut() {
                t.since = now;
            }
        }
    }

    fn due(slot: &mut Option<Millis>, now: Millis, interval: u64) -> bool {
        match *slot {
            Some(t) if t <= now => {
                *slot = Some(now.plus(interval.max(1)));
                true
            }
            _ => false,
        }
    }
}

impl MetadataBackend for Replica {
    type Message = Message;
    type Context = VersionVector;

    fn handle_local(&mut self, now: Millis, op: LocalOp<VersionVector>) {
        self.arm(now);
        let (key, value, context) = match op {
            LocalOp::Put { key, value, context } => (key, Some(value), context),
            LocalOp::Delete { key, context } => {
                if self.objects.get(&key).is_none_or(|s| is_tombstone(&s.object)) {
                    // Nothing live to delete here: a tombstone would only add a sibling.
                    return;
                }
                (key, None, context)
            }
        };
        // Dots above every counter issued so far: the key may have lived before, with a
        // tombstone since reclaimed here but still held elsewhere.
        let floor = self.own_counter;
        let object = match self.objects.get(&key) {
            Some(s) => s.object.update_after(&context, &self.me, value, floor),
            None => Object::new().update_after(&context, &self.me, value, floor),
        };
        self.store(now, &key, object.clone(), true);
        let limit = self.config.outstanding_limit.max(1);
        for missed in self.missed.values_mut() {
            if let Missed::Keys(keys) = missed {
                keys.insert(key.clone());
                if keys.len() > limit {
                    *missed = Missed::Overflowed;
                }
            }
        }
        let me = self.me.clone();
        self.push(&me, &me, &key, &object);
        self.seal();
    }

    fn handle_message(&mut self, now: Millis, from: &NodeId, msg: Message) {
        self.arm(now);
        let msg = match msg {
            Message::Hello(h) => return self.handle_hello(from, &h),
            Message::V1(m) => m,
        };
        if self.refused.contains_key(from) || !self.members.contains(from) || *from == self.me {
            tracing::debug!(peer = %from, kind = Message::V1(msg).kind(), "ignoring message");
            return;
        }
        match msg {
            MessageV1::Broadcast { root, key, object } => self.handle_broadcast(now, from, root, key, object),
            MessageV1::IHave(list) => self.handle_ihave(from, list),
            MessageV1::IgnoredIHave(list) => {
                for ihave in &list {
                    self.trees.ack(from, ihave);
                }
            }
            MessageV1::Graft(ihave) => self.handle_graft(from, ihave),
            MessageV1::Prune { root } => {
                tracing::debug!(peer = %from, %root, "pruned by the peer");
                self.trees.add_lazy(&root, from);
            }
            MessageV1::Eager { root } => {
                tracing::debug!(peer = %from, %root, "made eager by the peer");
                self.trees.add_eager(&root, from);
            }
            other => self.handle_exchange(now, from, other),
        }
        self.seal();
    }

    fn handle_timeout(&mut self, now: Millis) {
        self.arm(now);
        let c = self.config.clone();
        if Self::due(&mut self.timers.lazy, now, c.min_lazy_tick_interval) {
            self.lazy_tick();
        }
        self.expire_exchanges(now);
        if Self::due(&mut self.timers.exchange, now, c.broadcast_exchange_timer) {
            self.start_exchange(now);
        }
        if Self::due(&mut self.timers.sweep, now, c.metadata_hashtree_timer) {
            self.sweep_tombstones(now);
        }
        self.seal();
    }

    fn handle_persisted(&mut self, token: WriteToken) {
        self.unpersisted.remove(&token.0);
    }

    fn handle_membership(&mut self, now: Millis, members: &[NodeId]) {
        self.arm(now);
        let mut new: BTreeSet<NodeId> = members.iter().cloned().collect();
        new.insert(self.me.clone());
        let added: BTreeSet<NodeId> = new.difference(&self.members).cloned().collect();
        let removed: BTreeSet<NodeId> = self.members.difference(&new).cloned().collect();
        if !added.is_empty() {
            self.trees.reset(&new, &mut self.rng);
        }
        if !removed.is_empty() {
            self.trees.remove(&removed);
            for t in self.tombstones.values_mut() {
                t.confirmed.retain(|p| !removed.contains(p));
            }
            self.exchanges.retain(|_, x| !removed.contains(&x.peer));
            self.unreachable.retain(|p| !removed.contains(p));
            self.refused.retain(|p, _| !removed.contains(p));
        }
        self.members = new;
        self.peer_stats.retain(|p, _| self.members.contains(p));
        self.missed.retain(|p, _| self.members.contains(p));
        for peer in added {
            if peer != self.me {
                self.transmits.push_back((self.last_token, peer.clone(), Message::Hello(Hello::ours())));
                // A joining node, or this one starting, catches up with each new member at
                // once (after the hello, which the peer checks first).
                if !self.unreachable.contains(&peer) {
                    self.sync_after_heal(now, &peer, Missed::None);
                }
            }
        }
        self.seal();
    }

    fn handle_reachability(&mut self, now: Millis, peer: &NodeId, reachable: bool) {
        self.arm(now);
        if *peer == self.me {
            return;
        }
        if reachable {
            if self.unreachable.remove(peer) && self.members.contains(peer) {
                let missed = self.missed.remove(peer).unwrap_or_default();
                self.sync_after_heal(now, peer, missed);
                self.announce_outstanding_now(Some(peer));
            }
        } else if self.unreachable.insert(peer.clone()) {
            self.missed.insert(peer.clone(), Missed::Keys(BTreeSet::new()));
            // Its answers cannot come; the heal starts a fresh exchange.
            self.exchanges.retain(|_, x| x.peer != *peer);
            self.announce_outstanding_now(None);
        }
        self.seal();
    }

    fn subscribe(&mut self, prefix: &str, skip_local: bool) {
        self.subscriptions.insert(prefix.to_owned(), skip_local);
    }

    fn read(&self, key: &MetaKey) -> Read<VersionVector> {
        match self.objects.get(key) {
            Some(s) => Read { values: live(&s.object), context: s.object.context() },
            None => Read { values: Vec::new(), context: VersionVector::new() },
        }
    }

    fn fold(&self, prefix: &str, f: &mut dyn FnMut(&MetaKey, &[MetaValue])) {
        let start = MetaKey::new(prefix, Vec::new());
        for (key, s) in self.objects.range(start..).take_while(|(k, _)| k.prefix == prefix) {
            let values = live(&s.object);
            if !values.is_empty() {
                f(key, &values);
            }
        }
    }

    fn is_empty_history(&self) -> bool {
        !self.history
    }

    fn poll_write(&mut self) -> Option<PendingWrite> {
        self.seal();
        self.writes.pop_front()
    }

    fn poll_transmit(&mut self) -> Option<(NodeId, Message)> {
        let (required, _, _) = self.transmits.front()?;
        let durable = match (required, self.unpersisted.first()) {
            (Some(req), Some(oldest)) => oldest > req,
            _ => true,
        };
        if !durable {
            return None;
        }
        self.transmits.pop_front().map(|(_, peer, msg)| (peer, msg))
    }

    fn poll_event(&mut self) -> Option<MetadataEvent> {
        self.events.pop_front()
    }

    fn poll_timeout(&self) -> Option<Millis> {
        let t = &self.timers;
        [t.lazy, t.exchange, t.sweep].into_iter().flatten().chain(self.exchanges.values().map(|x| x.deadline)).min()
    }
}

#[cfg(test)]
mod tests {
    use vmq_storage::metadata::MetadataBackend;

    use rand::Rng;

    use super::*;

    fn replica(name: &str) -> Replica {
        Replica::new(PlumtreeConfig::default(), NodeId::new(name), 1, Recovered::empty())
    }

    fn put(r: &mut Replica, key: &MetaKey, ts: u64, data: &[u8]) {
        let context = r.read(key).context;
        r.handle_local(
            Millis(1),
            LocalOp::Put { key: key.clone(), value: MetaValue { timestamp: ts, data: data.to_vec() }, context },
        );
    }

    #[test]
    fn a_broadcast_waits_for_its_write_to_be_durable() {
        let mut a = replica("a");
        a.handle_membership(Millis(0), &[NodeId::new("a"), NodeId::new("b")]);
        // The hello and the first exchange step with the new member reveal nothing written
        // and go out at once.
        assert!(matches!(a.poll_transmit(), Some((_, Message::Hello(_)))));
        assert!(matches!(a.poll_transmit(), Some((_, m)) if m.kind() == "exchange_root"));
        let key = MetaKey::new("retain", b"t".to_vec());
        put(&mut a, &key, 1, b"x");
        let write = a.poll_write().expect("a write");
        assert!(a.poll_transmit().is_none(), "broadcast before the write is durable");
        a.handle_persisted(write.token);
        let (peer, msg) = a.poll_transmit().expect("broadcast");
        assert_eq!(peer, NodeId::new("b"));
        assert_eq!(msg.kind(), "broadcast");
    }

    #[test]
    fn events_follow_subscriptions_and_skip_local() {
        let mut a = replica("a");
        a.subscribe("retain", true);
        a.subscribe("subscriber", false);
        put(&mut a, &MetaKey::new("retain", b"t".to_vec()), 1, b"x");
        assert!(a.poll_event().is_none());
        put(&mut a, &MetaKey::new("subscriber", b"c".to_vec()), 1, b"x");
        let ev = a.poll_event().expect("event");
        assert!(ev.local && ev.old.is_empty() && ev.new.len() == 1);
        put(&mut a, &MetaKey::new("other", b"c".to_vec()), 1, b"x");
        assert!(a.poll_event().is_none());
    }

    #[test]
    fn delete_hides_the_key_and_read_resolved_collapses_siblings() {
        let mut a = replica("a");
        let key = MetaKey::new("subscriber", b"c".to_vec());
        put(&mut a, &key, 1, b"x");
        let ctx = a.read(&key).context;
        a.handle_local(Millis(2), LocalOp::Delete { key: key.clone(), context: ctx });
        assert!(a.read(&key).values.is_empty());
        assert_eq!(a.tombstone_count(), 1);
        let mut seen = 0;
        a.fold("subscriber", &mut |_, _| seen += 1);
        assert_eq!(seen, 0);
        // Two writes without context are siblings; the resolved read writes the winner back.
        let v1 = MetaValue { timestamp: 5, data: b"1".to_vec() };
        let v2 = MetaValue { timestamp: 9, data: b"2".to_vec() };
        a.handle_local(Millis(3), LocalOp::Put { key: key.clone(), value: v1, context: VersionVector::new() });
        a.handle_local(Millis(4), LocalOp::Put { key: key.clone(), value: v2.clone(), context: VersionVector::new() });
        assert_eq!(a.read(&key).values.len(), 2);
        assert_eq!(a.read_resolved(Millis(5), &key), Some(v2.clone()));
        assert_eq!(a.read(&key).values, vec![v2]);
        assert!(!a.is_empty_history());
    }

    #[test]
    fn messages_from_a_swc_peer_are_refused_and_nothing_is_sent_to_it() {
        let mut a = replica("a");
        let b = NodeId::new("b");
        a.handle_membership(Millis(0), &[NodeId::new("a"), b.clone()]);
        while a.poll_transmit().is_some() {}
        a.handle_message(Millis(1), &b, Message::Hello(Hello { backend: "vmq_swc".into(), protocol_version: 1 }));
        let refused: Vec<_> = a.refused_peers().collect();
        assert_eq!(refused.len(), 1);
        assert!(refused[0].1.to_string().contains("vmq_swc"));
        put(&mut a, &MetaKey::new("retain", b"t".to_vec()), 1, b"x");
        while let Some(w) = a.poll_write() {
            a.handle_persisted(w.token);
        }
        assert!(a.poll_transmit().is_none());
    }

    /// Every frame `replicas` have to send, their writes persisted first, as `(from, to, msg)`.
    fn outgoing(replicas: &mut [Replica]) -> Vec<(NodeId, NodeId, Message)> {
        let mut frames = Vec::new();
        for r in replicas.iter_mut() {
            while let Some(w) = r.poll_write() {
                r.handle_persisted(w.token);
            }
            let from = r.node_id().clone();
            while let Some((to, msg)) = r.poll_transmit() {
                frames.push((from.clone(), to, msg));
            }
        }
        frames
    }

    /// Delivers every frame among `replicas` (persisting writes first) until none is left,
    /// except frames to or from a node in `cut` (lost, as on a link that died); returns how
    /// many were lost so.
    fn pump(replicas: &mut [Replica], cut: &[&NodeId], now: Millis) -> usize {
        let mut lost = 0;
        loop {
            let frames = outgoing(replicas);
            if frames.is_empty() {
                return lost;
            }
            for (from, to, msg) in frames {
                if cut.contains(&&from) || cut.contains(&&to) {
                    lost += 1;
                    continue;
                }
                if let Some(r) = replicas.iter_mut().find(|r| *r.node_id() == to) {
                    r.handle_message(now, &from, msg);
                }
            }
        }
    }

    /// A broadcast pushed to a peer whose link had already died (its failure detector had not
    /// said so yet) is lost with the link; the writer's lazy peers must hear of it as soon as
    /// the writer learns that the peer is down, not at the next lazy tick seconds later.
    #[test]
    fn a_broadcast_lost_with_a_dead_eager_link_is_announced_to_lazy_peers_when_the_link_is_declared_down() {
        let names: Vec<NodeId> = ["a", "b", "c"].into_iter().map(NodeId::new).collect();
        let mut rs: Vec<Replica> = names.iter().map(|n| replica(n.as_str())).collect();
        for r in rs.iter_mut() {
            r.handle_membership(Millis(0), &names);
        }
        pump(&mut rs, &[], Millis(0));
        let key = MetaKey::new("retain", b"t".to_vec());
        put(&mut rs[0], &key, 1, b"x");
        pump(&mut rs, &[], Millis(1));
        assert!(rs.iter().all(|r| r.read(&key).values.len() == 1), "the write reached everyone");

        // The writer is b; its tree has one eager and one lazy peer in a cluster of three.
        let b = names[1].clone();
        let eager: Vec<NodeId> = rs[1].eager_peers(&b).into_iter().collect();
        let lazy: Vec<NodeId> = rs[1].lazy_peers(&b).into_iter().collect();
        assert_eq!((eager.len(), lazy.len()), (1, 1), "eager {eager:?} lazy {lazy:?}");
        let (dead, other) = (&eager[0], &lazy[0]);

        let context = rs[1].read(&key).context;
        rs[1].handle_local(Millis(2), LocalOp::Delete { key: key.clone(), context });
        pump(&mut rs, &[dead], Millis(2));
        let i_other = names.iter().position(|n| n == other).expect("a member");
        assert_eq!(rs[i_other].read(&key).values.len(), 1, "the delete went to the dead link only");

        rs[1].handle_reachability(Millis(3), dead, false);
        pump(&mut rs, &[dead], Millis(3));
        assert!(rs[i_other].read(&key).values.is_empty(), "the lazy peer grafted the delete");
    }

    /// A push queued for a peer that is down would arrive after the heal as a duplicate of what
    /// the heal's offers brought, and prune the link: the peer would drop off the tree and hear
    /// of later writes only at the next lazy tick. So nothing is sent to a peer known to be
    /// down; it is offered the version on the heal and grafts it.
    #[test]
    fn nothing_is_pushed_to_a_peer_known_to_be_down_and_it_is_offered_what_it_missed_on_the_heal() {
        let names: Vec<NodeId> = ["a", "b", "c"].into_iter().map(NodeId::new).collect();
        let mut rs: Vec<Replica> = names.iter().map(|n| replica(n.as_str())).collect();
        for r in rs.iter_mut() {
            r.handle_membership(Millis(0), &names);
        }
        pump(&mut rs, &[], Millis(0));
        let c = names[2].clone();
        set_reachable(&mut rs, 2, false, Millis(1));
        pump(&mut rs, &[&c], Millis(1));

        // Writes on a and b: each tree reaches c through a or b.
        let keys: Vec<MetaKey> = (0..8u8).map(|k| MetaKey::new("retain", vec![k])).collect();
        for (n, key) in keys.iter().enumerate() {
            put(&mut rs[n % 2], key, 2, b"during");
        }
        assert_eq!(pump(&mut rs, &[&c], Millis(2)), 0, "frames were queued for the unreachable c");

        // The heal: c learns every key through offers and grafts, no exchange or lazy tick.
        set_reachable(&mut rs, 2, true, Millis(3));
        shuffled_pump(&mut rs, Millis(3), None, false);
        for key in &keys {
            assert_eq!(rs[2].read(key).values.len(), 1, "{key:?} reached c by the heal's offers");
        }
    }

    /// After splits of one node and their heals, with frames delivered in any order and the
    /// exchange repairing too, every node is still on every broadcast tree: a write anywhere
    /// reaches everyone by eager pushes alone, not at the next lazy tick (seconds later).
    #[test]
    fn every_node_stays_on_every_broadcast_tree_across_splits_and_heals() {
        for seed in 0..700u64 {
            // Three nodes (fan-out 1) and five (fan-out 2).
            let n = if seed % 2 == 0 { 3 } else { 5 };
            let names: Vec<NodeId> = (0..n).map(|i| NodeId::new(format!("n{i}"))).collect();
            let mut rng = StdRng::seed_from_u64(seed);
            let mut rs: Vec<Replica> = names
                .iter()
                .zip(0u64..)
                .map(|(n, i)| Replica::new(PlumtreeConfig::default(), n.clone(), seed * 3 + i, Recovered::empty()))
                .collect();
            for r in rs.iter_mut() {
                r.handle_membership(Millis(0), &names);
            }
            shuffled_pump(&mut rs, Millis(0), Some(&mut rng), true);
            let mut ts = 1;
            for round in 0..4 {
                let cut = rng.random_range(0..n);
                set_reachable(&mut rs, cut, false, Millis(ts));
                for _ in 0..rng.random_range(1..6) {
                    let (writer, k) = (rng.random_range(0..n), rng.random_range(0..4u8));
                    ts += 1;
                    put(&mut rs[writer], &MetaKey::new("retain", vec![k]), ts, b"during");
                }
                pump(&mut rs, &[&names[cut]], Millis(ts));
                set_reachable(&mut rs, cut, true, Millis(ts));
                shuffled_pump(&mut rs, Millis(ts), Some(&mut rng), true);
                for (writer, name) in names.iter().enumerate() {
                    ts += 1;
                    let key = MetaKey::new("retain", format!("after-{round}-{name}").into_bytes());
                    put(&mut rs[writer], &key, ts, b"x");
                    shuffled_pump(&mut rs, Millis(ts), Some(&mut rng), false);
                    for r in &rs {
                        assert_eq!(
                            r.read(&key).values.len(),
                            1,
                            "seed {seed} round {round}: {name}'s write did not reach {} on the tree",
                            r.me
                        );
                    }
                }
            }
        }
    }

    /// Tells node `i` and every other node that the link between them is up or down.
    fn set_reachable(rs: &mut [Replica], i: usize, up: bool, now: Millis) {
        let names: Vec<NodeId> = rs.iter().map(|r| r.me.clone()).collect();
        for j in 0..rs.len() {
            if j != i {
                rs[j].handle_reachability(now, &names[i], up);
                rs[i].handle_reachability(now, &names[j], up);
            }
        }
    }

    /// Delivers every frame until none is left, links interleaved as `rng` picks (in order
    /// without one); exchange messages are dropped unless `exchanges`.
    fn shuffled_pump(replicas: &mut [Replica], now: Millis, mut rng: Option<&mut StdRng>, exchanges: bool) {
        loop {
            let mut frames = outgoing(replicas);
            if frames.is_empty() {
                return;
            }
            if let Some(rng) = rng.as_deref_mut() {
                // Frames of one link keep their order (one QUIC stream); links interleave.
                let mut links: BTreeMap<(NodeId, NodeId), VecDeque<Message>> = BTreeMap::new();
                for (from, to, msg) in frames.drain(..) {
                    links.entry((from, to)).or_default().push_back(msg);
                }
                while !links.is_empty() {
                    let pick = rng.random_range(0..links.len());
                    let Some(link) = links.keys().nth(pick).cloned() else { break };
                    let queue = links.entry(link.clone()).or_default();
                    if let Some(msg) = queue.pop_front() {
                        frames.push((link.0.clone(), link.1.clone(), msg));
                    }
                    if queue.is_empty() {
                        links.remove(&link);
                    }
                }
            }
            for (from, to, msg) in frames {
                if !exchanges && msg.kind().starts_with("exchange") {
                    continue;
                }
                if let Some(r) = replicas.iter_mut().find(|r| *r.node_id() == to) {
                    r.handle_message(now, &from, msg);
                }
            }
        }
    }
}
