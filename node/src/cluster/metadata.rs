//! The cluster driver: one task that owns the metadata replica of the configured backend and
//! the membership, and feeds them the transport's events, the broker's local writes and time
//! (the driving loop of `vmq_storage::metadata`).
//!
//! After every input the outputs are drained in the contract's order: batches are written to
//! the store (off the async threads) and acknowledged, then messages are sent, then events
//! update the remote routing table and the retained store. Membership changes and join
//! requests arrive on the same event stream and are handled here too, so that membership,
//! reachability and the replica never disagree about who the members are. Forwarded publishes
//! do not come here: they are routed by each link's reader (`router`), so metadata
//! persistence never delays them.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{Notify, mpsc, oneshot};
use tracing::{debug, info, warn};
use vmq_storage::metadata::{
    LocalOp, MetaKey, MetaValue, MetadataBackend, MetadataEvent, Millis, NodeId, PREFIX_RETAIN, PREFIX_SUBSCRIBER, lww,
};
use vmq_storage::{Durability, QueueKey, Store, WriteBatch};

use super::Shared;
use super::leave::Orphan;
use super::membership::{Membership, MembershipState};
use super::registration::Owner;
use super::transport::{StreamKind, TransportEvent};
use super::view::{MetadataExchanges, PeerExchange};
use super::wire::{self, MetadataFrame, NodeSubscriptions, RetainValue, RpcFrame, SubscriberValue, decode_key};
use crate::broker::Broker;

/// How often the membership is gossiped to reachable members (repairs lost gossip).
const GOSSIP_INTERVAL: Duration = Duration::from_secs(2);
/// How long a join waits for the discovery node's answer.
pub(crate) const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a removed node stays dialable, so that it learns of its removal.
const FORGET_DELAY: Duration = Duration::from_secs(3);

/// The answer to an admin command: the text to show, or why it was refused.
pub(crate) type Reply = oneshot::Sender<Result<String, String>>;

/// Local writes waiting for the driver: put (`Some`) or delete (`None`) a key, superseding
/// every value seen here. Only the latest write of a key is kept (it supersedes the earlier
/// ones anyway), so this holds at most one entry per client and retained topic however fast
/// they change, and a writer never waits.
#[derive(Debug, Default)]
pub(crate) struct PendingWrites {
    writes: Mutex<HashMap<MetaKey, PendingWrite>>,
    notify: Notify,
}

/// One pending write, and the registration epoch that fences it (`subscriber` entries).
#[derive(Debug)]
struct PendingWrite {
    value: Option<MetaValue>,
    epoch: Option<u64>,
}

impl PendingWrites {
    /// Records the write and wakes the driver.
    pub(crate) fn put(&self, key: MetaKey, value: Option<MetaValue>) {
        self.insert(key, PendingWrite { value, epoch: None });
    }

    /// Records a write of a `subscriber` entry by a registration with `epoch`; the driver
    /// drops it if the replica holds an entry of a higher epoch (a newer registration
    /// elsewhere owns the client id).
    pub(crate) fn put_fenced(&self, key: MetaKey, value: Option<MetaValue>, epoch: u64) {
        self.insert(key, PendingWrite { value, epoch: Some(epoch) });
    }

    fn insert(&self, key: MetaKey, write: PendingWrite) {
        self.writes.lock().unwrap_or_else(|e| e.into_inner()).insert(key, write);
        self.notify.notify_one();
    }

    fn take(&self) -> HashMap<MetaKey, PendingWrite> {
        std::mem::take(&mut *self.writes.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The value of `key` every node settles on among concurrent ones: last writer wins, except
/// that a `subscriber` entry of a later registration (higher fencing epoch) beats any entry
/// of an earlier one however recently that was written, so that duplicate sessions resolve
/// to the newest registration everywhere.
fn winner_of<'a>(key: &MetaKey, values: &'a [MetaValue]) -> Option<&'a MetaValue> {
    if key.prefix != PREFIX_SUBSCRIBER {
        return lww(values);
    }
    let epoch = |v: &MetaValue| wire::decode::<SubscriberValue>(&v.data).map_or(0, |s| s.into_parts().0);
    values.iter().max_by(|a, b| (epoch(a), a.timestamp, &a.data).cmp(&(epoch(b), b.timestamp, &b.data)))
}

/// What an operator asks of the driver.
#[derive(Debug)]
pub(crate) enum Command {
    /// Join the cluster of `node`, reachable at `addr`.
    Join { node: NodeId, addr: SocketAddr, reply: Reply },
    /// `vmq-admin cluster leave`: `node` leaves (see `leave`).
    Leave { node: NodeId, kill_sessions: bool, timeout: Duration, reply: Reply },
    /// Remove `node` from the member set (the last step of a leave).
    Remove { node: NodeId, reply: Reply },
    /// Flush and stop.
    Shutdown,
}

/// One peer's anti-entropy figures as a backend keeps them: `(peer, exchanges completed, when
/// the last one completed, keys repaired)`.
pub(crate) type PeerFigures = (NodeId, u64, Option<Millis>, u64);

/// The driver's latest anti-entropy figures, for `/metrics`. The driver publishes after its
/// inputs, only when the figures moved; scrapes read a copy and never wait on the driver.
#[derive(Debug, Default)]
pub(crate) struct ExchangeBoard {
    /// A digest of what was last published, so that unchanged figures cost no lock.
    digest: AtomicU64,
    published: Mutex<MetadataExchanges>,
}

impl ExchangeBoard {
    /// What `/metrics` shows.
    pub(crate) fn snapshot(&self) -> MetadataExchanges {
        self.published.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Publishes `figures` unless they are what was published last. `unix_ms_at` turns the
    /// replica's clock into wall-clock milliseconds.
    fn publish(&self, backend: &'static str, figures: Vec<PeerFigures>, unix_ms_at: impl Fn(Millis) -> f64) {
        let digest = figures.iter().fold(figures.len() as u64, |h, (_, completed, _, keys)| {
            h.wrapping_mul(0x0000_0100_0000_01b3) ^ completed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ keys
        });
        if self.digest.swap(digest, Ordering::Relaxed) == digest {
            return;
        }
        let peers = figures
            .into_iter()
            .map(|(peer, completed, last, keys_repaired)| PeerExchange {
                peer: peer.0,
                completed,
                last_completed_unix: last.map(|at| unix_ms_at(at) / 1000.0),
                keys_repaired,
            })
            .collect();
        *self.published.lock().unwrap_or_else(|e| e.into_inner()) = MetadataExchanges { backend, peers };
    }
}

/// What the driver needs of a backend beyond the metadata contract: its wire encoding, its
/// join rule and its anti-entropy figures.
pub(crate) trait Backend: MetadataBackend + Send + 'static {
    /// The prefix of its metric names (VerneMQ's `swc_*`; `plumtree_*`).
    const METRIC_PREFIX: &'static str;
    /// Anti-entropy per peer; cheap (no scan of the objects), called after every input.
    fn exchange_figures(&self) -> Vec<PeerFigures>;
    /// Encodes a replica message.
    fn encode_message(msg: &Self::Message) -> Vec<u8>;
    /// Decodes a replica message from a peer; `None` when malformed.
    fn decode_message(bytes: &[u8]) -> Option<Self::Message>;
    /// Whether this node may join a cluster (empty history, `prevent_nonempty_join`).
    fn may_join(&self) -> bool;
}

impl Backend for vmq_swc::Replica {
    const METRIC_PREFIX: &'static str = "swc";
    fn exchange_figures(&self) -> Vec<PeerFigures> {
        self.peer_exchange_stats()
            .iter()
            .map(|(peer, s)| (peer.clone(), s.completed, s.last_completed, s.keys_repaired))
            .collect()
    }
    fn encode_message(msg: &Self::Message) -> Vec<u8> {
        msg.to_bytes().unwrap_or_default()
    }
    fn decode_message(bytes: &[u8]) -> Option<Self::Message> {
        vmq_swc::SwcMessage::from_bytes(bytes).ok()
    }
    fn may_join(&self) -> bool {
        vmq_swc::Replica::may_join(self)
    }
}

impl Backend for vmq_plumtree::Replica {
    const METRIC_PREFIX: &'static str = "plumtree";
    fn exchange_figures(&self) -> Vec<PeerFigures> {
        self.peer_exchange_stats()
            .iter()
            .map(|(peer, s)| (peer.clone(), s.completed, s.last_completed, s.keys_repaired))
            .collect()
    }
    fn encode_message(msg: &Self::Message) -> Vec<u8> {
        msg.encode()
    }
    fn decode_message(bytes: &[u8]) -> Option<Self::Message> {
        vmq_plumtree::Message::decode(bytes).ok()
    }
    fn may_join(&self) -> bool {
        self.is_empty_history()
    }
}

/// The driver task's state.
pub(crate) struct Driver<B: Backend> {
    pub shared: Arc<Shared>,
    pub replica: B,
    pub membership: Membership,
    pub store: Arc<dyn Store>,
    pub broker: Arc<Broker>,
    pub epoch: Instant,
    /// Members the transport was told to keep connected to.
    pub dialed: BTreeSet<NodeId>,
    pub pending_join: Option<(NodeId, Reply, Instant)>,
}

impl<B: Backend> Driver<B> {
    fn now(&self) -> Millis {
        Millis(self.epoch.elapsed().as_millis() as u64)
    }

    fn instant_of(&self, at: Millis) -> tokio::time::Instant {
        // Far in the future rather than a panic if a deadline is beyond what an Instant holds.
        let at = self
            .epoch
            .checked_add(Duration::from_millis(at.0))
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400));
        tokio::time::Instant::from_std(at)
    }

    /// Runs until [`Command::Shutdown`] or until the transport's events end.
    pub async fn run(mut self, mut events: mpsc::Receiver<TransportEvent>, mut commands: mpsc::Receiver<Command>) {
        let shared = self.shared.clone();
        self.drain().await;
        let mut gossip = tokio::time::interval(GOSSIP_INTERVAL);
        loop {
            let deadline = self.replica.poll_timeout().map(|at| self.instant_of(at));
            let timer = async move {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                event = events.recv() => match event {
                    Some(event) => self.handle_transport(event).await,
                    None => break,
                },
                command = commands.recv() => match command {
                    Some(Command::Shutdown) | None => {
                        // What sessions that just ended wrote goes out before the driver stops.
                        self.apply_writes();
                        self.drain().await;
                        break;
                    }
                    Some(command) => self.handle_command(command).await,
                },
                () = shared.writes.notify.notified() => self.apply_writes(),
                () = timer => {
                    let now = self.now();
                    self.replica.handle_timeout(now);
                }
                _ = gossip.tick() => self.handle_gossip_tick(),
            }
            self.drain().await;
        }
    }

    /// Drains the replica's outputs in the contract's order until none is left.
    pub async fn drain(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(write) = self.replica.poll_write() {
                progressed = true;
                if Self::persist(self.store.clone(), write.batch).await {
                    self.replica.handle_persisted(write.token);
                }
            }
            while let Some((peer, msg)) = self.replica.poll_transmit() {
                progressed = true;
                let frame = MetadataFrame::Replica(B::encode_message(&msg));
                self.send(&peer, StreamKind::Metadata, &frame);
            }
            while let Some(event) = self.replica.poll_event() {
                progressed = true;
                self.apply_event(event);
            }
            if !progressed {
                break;
            }
        }
        self.publish_exchanges();
    }

    fn publish_exchanges(&self) {
        // Wall-clock time of the replica's clock origin: read per publication (rare), so a
        // clock step shows up in the next one.
        let unix_now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0);
        let origin = unix_now - self.epoch.elapsed().as_secs_f64() * 1000.0;
        self.shared.exchanges.publish(B::METRIC_PREFIX, self.replica.exchange_figures(), |at| origin + at.0 as f64);
    }

    /// Writes `batch` off the async threads; false (logged) when it failed, in which case
    /// the replica is not told, so nothing depending on it is ever sent.
    async fn persist(store: Arc<dyn Store>, batch: WriteBatch) -> bool {
        match tokio::task::spawn_blocking(move || store.write(batch, Durability::Buffered)).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                warn!(error = %e, "writing cluster metadata failed");
                false
            }
            Err(e) => {
                warn!(error = %e, "cluster metadata writer failed");
                false
            }
        }
    }

    fn send<T: serde::Serialize>(&self, peer: &NodeId, kind: StreamKind, frame: &T) {
        if let Err(e) = self.shared.transport.send(peer, kind, Bytes::from(wire::encode(frame))) {
            debug!(%peer, error = %e, "cluster frame not sent");
        }
    }

    /// Updates the routing table and the retained store from a replicated change.
    pub fn apply_event(&mut self, event: MetadataEvent) {
        let Some((mountpoint, name)) = decode_key(&event.key.key) else {
            warn!(prefix = %event.key.prefix, "undecodable metadata key ignored");
            return;
        };
        if event.new.len() > 1 {
            self.resolve_siblings(&event.key, &event.new);
        }
        let winner = winner_of(&event.key, &event.new);
        match event.key.prefix.as_str() {
            PREFIX_SUBSCRIBER => {
                let (epoch, entries) = match winner.map(|v| wire::decode::<SubscriberValue>(&v.data)) {
                    Some(Some(value)) => value.into_parts(),
                    Some(None) => {
                        warn!(client_id = %name, "undecodable subscriber value ignored");
                        return;
                    }
                    None => (0, Vec::new()),
                };
                {
                    let mut routes = self.shared.routes.write().unwrap_or_else(|e| e.into_inner());
                    routes.apply(&self.shared.me, &mountpoint, &name, &entries);
                }
                let owner =
                    entries.first().map(|e| Owner { node: e.node.clone(), epoch, clean_session: e.clean_session });
                self.shared.observe_owner(QueueKey::new(mountpoint, name), owner);
            }
            // The broker already holds its own retained messages.
            PREFIX_RETAIN if !event.local => match winner.map(|v| wire::decode::<RetainValue>(&v.data)) {
                Some(Some(value)) => self.broker.set_retained_replica(Arc::new(value.to_msg(&mountpoint, &name))),
                Some(None) => warn!(topic = %name, "undecodable retained value ignored"),
                None => self.broker.clear_retained_replica(&mountpoint, &name),
            },
            _ => {}
        }
    }

    /// Concurrent writes of one key: the last-writer-wins winner is written back so that the
    /// siblings collapse everywhere, as VerneMQ does. Identical siblings (two nodes writing
    /// back the same winner) are left alone, otherwise the write-backs would never end.
    fn resolve_siblings(&mut self, key: &MetaKey, values: &[MetaValue]) {
        let Some(winner) = winner_of(key, values) else { return };
        if values.iter().all(|v| v == winner) {
            return;
        }
        let now = self.now();
        let read = self.replica.read(key);
        if let Some(winner) = winner_of(key, &read.values).cloned() {
            self.replica.handle_local(now, LocalOp::Put { key: key.clone(), value: winner, context: read.context });
        }
    }

    fn apply_writes(&mut self) {
        for (key, write) in self.shared.writes.take() {
            if let Some(epoch) = write.epoch {
                let newer = self
                    .replica
                    .read(&key)
                    .values
                    .iter()
                    .any(|v| wire::decode::<SubscriberValue>(&v.data).is_some_and(|s| s.into_parts().0 > epoch));
                if newer {
                    debug!(epoch, "subscriber entry of a superseded registration not written");
                    continue;
                }
            }
            self.write(key, write.value);
        }
    }

    /// Puts or deletes `key`, superseding what this replica has seen of it.
    pub fn write(&mut self, key: MetaKey, value: Option<MetaValue>) {
        let now = self.now();
        let read = self.replica.read(&key);
        match value {
            Some(value) => self.replica.handle_local(now, LocalOp::Put { key, value, context: read.context }),
            None if !read.values.is_empty() => {
                self.replica.handle_local(now, LocalOp::Delete { key, context: read.context })
            }
            None => {}
        }
    }

    async fn handle_command(&mut self, command: Command) {
        match command {
            Command::Join { node, addr, reply } => self.handle_join_command(node, addr, reply),
            Command::Leave { node, kill_sessions, timeout, reply } => {
                self.handle_leave(node, kill_sessions, timeout, reply).await;
            }
            Command::Remove { node, reply } => {
                let answer = self.handle_leave_command(&node).await;
                let _ = reply.send(answer);
            }
            Command::Shutdown => {}
        }
    }

    fn handle_join_command(&mut self, node: NodeId, addr: SocketAddr, reply: Reply) {
        let me = self.shared.me.clone();
        let refusal = if node == me {
            Some("a node cannot join itself".to_string())
        } else if self.membership.contains(&node) {
            let _ = reply.send(Ok("Done".into()));
            return;
        } else if self.membership.members().len() > 1 {
            Some(format!("{me} is already in a cluster; remove it with 'vmq-admin cluster leave node={me}' first"))
        } else if !self.replica.may_join() {
            Some(format!(
                "{me} refuses to join: it already holds metadata (subscriptions or retained messages); \
                 only a node with an empty history can join a cluster"
            ))
        } else {
            None
        };
        if let Some(text) = refusal {
            let _ = reply.send(Err(text));
            return;
        }
        info!(discovery_node = %node, %addr, "joining cluster");
        self.shared.transport.connect(node.clone(), addr);
        self.send(&node, StreamKind::Rpc, &RpcFrame::JoinRequest { node: me, addr: self.shared.addr });
        if let Some((_, old, _)) = self.pending_join.replace((node, reply, Instant::now() + JOIN_TIMEOUT)) {
            let _ = old.send(Err("superseded by another join".into()));
        }
    }

    /// A leave of this node is run here; of another live member, by it; of a member that is
    /// down, here: it is removed and its persistent sessions re-homed. Answers that take
    /// requests to other nodes are sent from a task of their own, not the driver's.
    async fn handle_leave(&mut self, node: NodeId, kill_sessions: bool, timeout: Duration, reply: Reply) {
        if !self.membership.contains(&node) {
            let _ = reply.send(Err(format!("{node} is not a member of this cluster")));
            return;
        }
        if node == self.shared.me {
            let _ = reply.send(Ok(self.shared.leave_here(kill_sessions, timeout)));
        } else if self.shared.peer_reachable(&node) {
            let shared = self.shared.clone();
            tokio::spawn(async move {
                let _ = reply.send(shared.ask_to_leave(&node, kill_sessions, timeout).await);
            });
        } else {
            let orphans = self.orphans_of(&node);
            match self.handle_leave_command(&node).await {
                Ok(_) => {
                    let shared = self.shared.clone();
                    tokio::spawn(async move {
                        let _ = reply.send(Ok(shared.rehome(node, orphans).await));
                    });
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            }
        }
    }

    /// The persistent sessions `gone` holds, as the replica knows them; its clean sessions
    /// died with it and their entries are deleted now.
    fn orphans_of(&mut self, gone: &NodeId) -> Vec<Orphan> {
        let mut owned: Vec<(MetaKey, u64, NodeSubscriptions)> = Vec::new();
        self.replica.fold(PREFIX_SUBSCRIBER, &mut |key, values| {
            let Some(v) = winner_of(key, values) else { return };
            let Some((epoch, entries)) = wire::decode::<SubscriberValue>(&v.data).map(SubscriberValue::into_parts)
            else {
                return;
            };
            if let Some(entry) = entries.into_iter().find(|e| e.node == *gone) {
                owned.push((key.clone(), epoch, entry));
            }
        });
        let mut orphans = Vec::new();
        for (key, epoch, entry) in owned {
            let Some((mountpoint, client_id)) = decode_key(&key.key) else { continue };
            if entry.clean_session {
                self.write(key, None);
            } else {
                orphans.push(Orphan {
                    key: QueueKey::new(mountpoint, client_id),
                    epoch,
                    subscriptions: entry.subscriptions.iter().map(|s| (s.filter.clone(), s.record())).collect(),
                });
            }
        }
        orphans
    }

    async fn handle_leave_command(&mut self, node: &NodeId) -> Result<String, String> {
        if !self.membership.contains(node) {
            return Err(format!("{node} is not a member of this cluster"));
        }
        let before = self.membership.members();
        if before.len() == 1 {
            return Err(format!("{node} is not clustered"));
        }
        info!(%node, "removing node from the cluster");
        self.membership.remove(node);
        // Everyone learns of the removal, the removed node included (it then resets itself).
        let frame = MetadataFrame::Membership(self.membership.state().clone());
        for peer in before.iter().filter(|p| **p != self.shared.me) {
            self.send(peer, StreamKind::Metadata, &frame);
        }
        if *node == self.shared.me {
            self.left().await;
        } else {
            self.membership_changed().await;
        }
        Ok("Done".into())
    }

    async fn handle_transport(&mut self, event: TransportEvent) {
        let now = self.now();
        match event {
            TransportEvent::Up(peer) => {
                if self.membership.contains(&peer) {
                    self.replica.handle_reachability(now, &peer, true);
                    self.send(&peer, StreamKind::Metadata, &MetadataFrame::Membership(self.membership.state().clone()));
                }
            }
            // The view's reachability and readiness were updated by the transport's hook
            // already, before this event was queued.
            TransportEvent::Down(peer) => {
                if self.membership.contains(&peer) {
                    self.replica.handle_reachability(now, &peer, false);
                }
            }
            TransportEvent::Refused { addr, node, reason } => {
                let for_join = matches!((&self.pending_join, &node), (Some((target, _, _)), Some(n)) if target == n);
                if for_join && let Some((target, reply, _)) = self.pending_join.take() {
                    self.shared.transport.forget(&target);
                    let _ = reply.send(Err(format!("cannot join {target} at {addr}: {reason}")));
                }
            }
            TransportEvent::Frame { from, kind, payload } => self.handle_frame(from, kind, &payload).await,
        }
    }

    async fn handle_frame(&mut self, from: NodeId, kind: StreamKind, payload: &[u8]) {
        match kind {
            StreamKind::Metadata => match wire::decode::<MetadataFrame>(payload) {
                Some(MetadataFrame::Replica(bytes)) => match B::decode_message(&bytes) {
                    Some(msg) => {
                        let now = self.now();
                        self.replica.handle_message(now, &from, msg);
                    }
                    None => warn!(peer = %from, "malformed metadata message ignored"),
                },
                Some(MetadataFrame::Membership(state)) => self.handle_gossip(from, state).await,
                None => warn!(peer = %from, "malformed metadata frame ignored"),
            },
            StreamKind::Rpc => match wire::decode::<RpcFrame>(payload) {
                Some(RpcFrame::JoinRequest { node, addr }) if node == from => {
                    info!(%node, %addr, "node joins the cluster");
                    self.membership.add(&node, addr);
                    self.membership_changed().await;
                }
                Some(RpcFrame::JoinRequest { node, .. }) => {
                    warn!(peer = %from, claimed = %node, "join request for another node ignored");
                }
                // Requests and answers are served by the `rpc` dispatcher before the driver.
                Some(RpcFrame::Request { .. } | RpcFrame::Response { .. }) => {}
                None => warn!(peer = %from, "malformed RPC frame ignored"),
            },
            // The transport hands forwarded publishes to the router and control frames to
            // itself; neither reaches the driver.
            StreamKind::Publish | StreamKind::Control => debug!(peer = %from, %kind, "unexpected frame ignored"),
        }
    }

    async fn handle_gossip(&mut self, from: NodeId, state: MembershipState) {
        let joining = self.pending_join.as_ref().is_some_and(|(target, _, _)| *target == from);
        if !self.membership.contains(&from) && !joining {
            debug!(peer = %from, "membership gossip from a non-member ignored");
            return;
        }
        if joining && !Membership::state_contains(&state, &self.shared.me) {
            return; // the discovery node has not added us yet
        }
        let changed = self.membership.merge(state);
        if !self.membership.contains(&self.shared.me) {
            self.left().await;
            return;
        }
        if changed {
            self.membership_changed().await;
        }
        if joining
            && self.membership.contains(&from)
            && let Some((target, reply, _)) = self.pending_join.take()
        {
            info!(discovery_node = %target, members = ?self.membership.members(), "joined cluster");
            let _ = reply.send(Ok("Done".into()));
        }
    }

    /// Persists the membership and makes the transport, the replica and the view follow it.
    async fn membership_changed(&mut self) {
        let _ = Self::persist(self.store.clone(), self.membership.batch()).await;
        let members = self.membership.members();
        let now = self.now();
        self.replica.handle_membership(now, &members);
        for peer in members.iter().filter(|m| **m != self.shared.me) {
            if self.dialed.insert(peer.clone())
                && let Some(addr) = self.membership.addr(peer)
            {
                self.shared.transport.connect(peer.clone(), addr);
            }
            let up = self.shared.transport.is_connected(peer);
            self.replica.handle_reachability(now, peer, up);
        }
        let gone: Vec<NodeId> = self.dialed.iter().filter(|d| !members.contains(d)).cloned().collect();
        for peer in gone {
            self.dialed.remove(&peer);
            self.forget_later(peer);
        }
        self.shared.set_members(members);
        self.gossip_all();
    }

    /// This node was removed from the cluster: it wipes what it replicated (the backend
    /// does so when the member list no longer names it) and stands alone again.
    async fn left(&mut self) {
        warn!("this node was removed from the cluster");
        let now = self.now();
        let others: Vec<NodeId> = self.membership.members();
        self.replica.handle_membership(now, &others);
        self.drain().await;
        self.membership = Membership::alone(&self.shared.me, self.shared.addr);
        let _ = Self::persist(self.store.clone(), self.membership.batch()).await;
        self.replica.handle_membership(now, std::slice::from_ref(&self.shared.me));
        for peer in std::mem::take(&mut self.dialed) {
            self.forget_later(peer);
        }
        self.shared.set_members(vec![self.shared.me.clone()]);
    }

    fn forget_later(&self, peer: NodeId) {
        let shared = self.shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep(FORGET_DELAY).await;
            if !shared.is_member(&peer) {
                shared.transport.forget(&peer);
            }
        });
    }

    fn gossip_all(&self) {
        let frame = MetadataFrame::Membership(self.membership.state().clone());
        for peer in self.membership.members().iter().filter(|m| **m != self.shared.me) {
            self.send(peer, StreamKind::Metadata, &frame);
        }
    }

    fn handle_gossip_tick(&mut self) {
        if self.pending_join.as_ref().is_some_and(|(_, _, deadline)| Instant::now() >= *deadline)
            && let Some((target, reply, _)) = self.pending_join.take()
        {
            if !self.membership.contains(&target) {
                self.shared.transport.forget(&target);
            }
            let _ = reply.send(Err(format!(
                "no answer from {target} within {} s (is it running, and is listener.vmq.clustering right?)",
                JOIN_TIMEOUT.as_secs()
            )));
        }
        let frame = MetadataFrame::Membership(self.membership.state().clone());
        for peer in self.membership.members().iter().filter(|m| **m != self.shared.me) {
            if self.shared.transport.is_connected(peer) {
                self.send(peer, StreamKind::Metadata, &frame);
            }
        }
    }

    /// At start: builds the remote routing table and the retained store from the replica,
    /// restores this node's persistent sessions, and removes this node's clean-session
    /// entries (they died with the previous run, VerneMQ's `restarted_node_has_no_stale_sessions`).
    pub fn recover(&mut self) {
        let mut subscribers: Vec<(MetaKey, MetaValue)> = Vec::new();
        self.replica.fold(PREFIX_SUBSCRIBER, &mut |key, values| {
            if let Some(v) = winner_of(key, values) {
                subscribers.push((key.clone(), v.clone()));
            }
        });
        let me = self.shared.me.clone();
        let members = self.membership.members();
        let now = self.now();
        self.replica.handle_membership(now, &members);
        for peer in members.iter().filter(|m| **m != me) {
            if let Some(addr) = self.membership.addr(peer) {
                self.shared.transport.connect(peer.clone(), addr);
                self.dialed.insert(peer.clone());
            }
            self.replica.handle_reachability(now, peer, false);
        }
        self.shared.set_members(members);
        let mut owned_elsewhere = Vec::new();
        for (key, value) in subscribers {
            let (Some((mountpoint, client_id)), Some((epoch, entries))) =
                (decode_key(&key.key), wire::decode::<SubscriberValue>(&value.data).map(SubscriberValue::into_parts))
            else {
                continue;
            };
            let owner = entries.first().map(|e| Owner { node: e.node.clone(), epoch, clean_session: e.clean_session });
            let queue_key = QueueKey::new(mountpoint.clone(), client_id.clone());
            if let Some(o) = owner.clone().filter(|o| o.node != me) {
                owned_elsewhere.push((queue_key.clone(), o));
            }
            self.shared.registrar.set_owner(queue_key, owner);
            {
                let mut routes = self.shared.routes.write().unwrap_or_else(|e| e.into_inner());
                routes.apply(&me, &mountpoint, &client_id, &entries);
            }
            let Some(mine) = entries.iter().find(|e| e.node == me) else { continue };
            if mine.clean_session {
                let others: Vec<NodeSubscriptions> = entries.iter().filter(|e| e.node != me).cloned().collect();
                let value = (!others.is_empty()).then(|| MetaValue {
                    timestamp: self.shared.timestamp(),
                    data: wire::encode(&SubscriberValue::V2 { epoch, entries: others }),
                });
                self.write(key, value);
            } else {
                let subs = mine.subscriptions.iter().map(|s| (s.filter.clone(), s.record())).collect();
                self.broker.restore_subscriptions(QueueKey::new(mountpoint, client_id), epoch, subs);
            }
        }
        // Queues kept here of sessions that live on another node now (a migration this node
        // was killed in the middle of, or a session that moved while it was down) resume
        // draining to that node.
        for (key, owner) in owned_elsewhere {
            self.shared.observe_owner(key, Some(owner));
        }
        let mut retained: Vec<(MetaKey, MetaValue)> = Vec::new();
        self.replica.fold(PREFIX_RETAIN, &mut |key, values| {
            if let Some(v) = lww(values) {
                retained.push((key.clone(), v.clone()));
            }
        });
        for (key, value) in retained {
            if let (Some((mountpoint, topic)), Some(v)) =
                (decode_key(&key.key), wire::decode::<RetainValue>(&value.data))
            {
                self.broker.set_retained_replica(Arc::new(v.to_msg(&mountpoint, &topic)));
            }
        }
    }
}
