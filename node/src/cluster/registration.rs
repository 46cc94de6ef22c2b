//! One session per client id, cluster-wide (docs/architecture.md "Registration").
//!
//! Every registration of a client id goes through its leader, picked by rendezvous hashing of
//! the client id over the cluster *members*: when a node is unreachable only the client ids it
//! leads (about 1/N) cannot register, and leaders do not move when a node flaps. The leader
//! serialises the registrations of one client id, hands out a fencing epoch (a hybrid
//! timestamp, above every epoch it knows for the client id) and, before granting, has every
//! other node holding a session of the client id disconnect it; a persistent session is then
//! handed over and its queue drained to the registering node (`drain`).
//!
//! The epoch is stored with the replicated `subscriber` entry. A node holding a session with a
//! lower epoch than the entry's closes it when it sees the entry: this resolves the duplicates
//! that registrations during a netsplit (`allow_register_during_netsplit = on`) or without a
//! leader (`coordinate_registrations = off`) leave behind, and a migration interrupted by a
//! crash resumes the same way after the restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};
use vmq_storage::QueueKey;
use vmq_storage::metadata::NodeId;

use super::Shared;
use super::wire::{HandOver, Request, Response, WireInflight, WireKey, WireSubscription};
use crate::broker::inflight::{OutFlight, OutState, SavedInflight};
use crate::broker::persist;
use crate::broker::queue::Queued;
use crate::broker::{Grant, NetsplitAction, SessionHandOver};

/// How long a node waits for the leader's answer to a registration.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(8);
/// How long the leader waits for a node to disconnect a session it takes over (the node
/// itself waits up to 5 s for the connection's teardown).
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(6);
/// The pause before asking the leader again after a lost request.
const RETRY_PAUSE: Duration = Duration::from_millis(20);
/// How long a grant is remembered by the leader: longer than the `subscriber` entry of the
/// registration takes to reach every node.
const GRANT_MEMORY: Duration = Duration::from_secs(60);

/// The registration leader of `key` among `members`: the member with the highest hash of
/// (member, mountpoint, client id). Deterministic across nodes and releases.
pub(crate) fn leader_of<'a>(members: &'a [NodeId], key: &QueueKey) -> Option<&'a NodeId> {
    members.iter().max_by_key(|m| rendezvous(m, key))
}

fn rendezvous<'a>(member: &'a NodeId, key: &QueueKey) -> (u64, &'a str) {
    // FNV-1a over the three parts (separated, so that shifting bytes between them changes the
    // hash), then a splitmix finaliser to spread nearby names; the name breaks ties.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [member.0.as_bytes(), key.mountpoint.as_bytes(), key.client_id.as_bytes()] {
        for b in part.iter().chain(std::iter::once(&0xff)) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (h ^ (h >> 31), member.0.as_str())
}

/// Where a client id's session lives, as the replicated `subscriber` entry says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Owner {
    pub node: NodeId,
    pub epoch: u64,
    pub clean_session: bool,
}

/// Registration state of one node: as a leader (grants, serialisation) and as a holder of
/// sessions (who owns which client id).
#[derive(Debug)]
pub(crate) struct Registrar {
    /// `coordinate_registrations`.
    pub coordinate: bool,
    /// `max_msgs_per_drain_step`.
    pub drain_step: usize,
    /// `max_drain_time`: how long a drained session keeps receiving what is still routed to
    /// its old node, once the new node's entry is known here.
    pub max_drain_time: Duration,
    /// One lock per client id being registered through this node as leader.
    locks: Mutex<HashMap<QueueKey, Arc<tokio::sync::Mutex<()>>>>,
    /// Recent grants of this leader: node and epoch, until the entry has spread.
    granted: Mutex<Grants>,
    /// The replicated owner of every client id with a session.
    owners: Mutex<HashMap<QueueKey, Owner>>,
    /// Client ids registering on this node right now: a drain step for one of them waits
    /// for its session instead of finding none.
    pub(super) registering: Mutex<HashMap<QueueKey, usize>>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Registrar {
    pub(crate) fn new(coordinate: bool, drain_step: usize, max_drain_time: Duration) -> Self {
        Registrar {
            coordinate,
            drain_step: drain_step.max(1),
            max_drain_time,
            locks: Mutex::default(),
            granted: Mutex::default(),
            owners: Mutex::default(),
            registering: Mutex::default(),
        }
    }

    /// The replicated owner of `key`.
    pub(crate) fn owner(&self, key: &QueueKey) -> Option<Owner> {
        lock(&self.owners).get(key).cloned()
    }

    /// Records the replicated owner of `key` (`None`: no session anywhere).
    pub(crate) fn set_owner(&self, key: QueueKey, owner: Option<Owner>) {
        if let Some(o) = &owner {
            lock(&self.granted).forget_covered(&key, o.epoch);
        }
        let mut owners = lock(&self.owners);
        match owner {
            Some(o) => owners.insert(key, o),
            None => owners.remove(&key),
        };
    }

    fn key_lock(&self, key: &QueueKey) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.locks).entry(key.clone()).or_default().clone()
    }

    fn release_key_lock(&self, key: &QueueKey, held: Arc<tokio::sync::Mutex<()>>) {
        let mut locks = lock(&self.locks);
        drop(held);
        // Only this map holds it: nobody waits for the client id any more.
        if locks.get(key).is_some_and(|l| Arc::strong_count(l) == 1) {
            locks.remove(key);
        }
    }

    fn remember_grant(&self, key: &QueueKey, node: &NodeId, epoch: u64) {
        lock(&self.granted).insert(key, node, epoch, Instant::now());
    }

    /// The nodes that may hold a session of `key`, and the highest epoch known for it.
    fn holders(&self, key: &QueueKey) -> (Vec<NodeId>, u64) {
        let mut nodes = Vec::new();
        let mut epoch = 0;
        if let Some(o) = self.owner(key) {
            epoch = o.epoch;
            nodes.push(o.node);
        }
        if let Some((node, e)) = lock(&self.granted).get(key, Instant::now()) {
            epoch = epoch.max(e);
            if !nodes.contains(&node) {
                nodes.push(node);
            }
        }
        (nodes, epoch)
    }
}

/// A leader's recent grants, each remembered for [`GRANT_MEMORY`].
///
/// Expired grants are swept once per half of that period, not on every grant: a sweep walks
/// every grant, and a burst of connections would make each registration pay for all the
/// others. Lookups ignore a grant past its time that the next sweep has not removed yet.
#[derive(Debug, Default)]
struct Grants {
    by_key: HashMap<QueueKey, (NodeId, u64, Instant)>,
    next_sweep: Option<Instant>,
}

impl Grants {
    fn insert(&mut self, key: &QueueKey, node: &NodeId, epoch: u64, now: Instant) {
        if self.next_sweep.is_none_or(|at| now >= at) {
            self.by_key.retain(|_, (_, _, at)| now.duration_since(*at) < GRANT_MEMORY);
            self.next_sweep = Some(now + GRANT_MEMORY / 2);
        }
        self.by_key.insert(key.clone(), (node.clone(), epoch, now));
    }

    /// The entry here has caught up with the grant of `key` (its epoch or a newer one): the
    /// grant tells nothing more, and a burst of registrations does not keep one per client.
    fn forget_covered(&mut self, key: &QueueKey, epoch: u64) {
        if self.by_key.get(key).is_some_and(|(_, granted, _)| *granted <= epoch) {
            self.by_key.remove(key);
        }
    }

    fn get(&self, key: &QueueKey, now: Instant) -> Option<(NodeId, u64)> {
        let (node, epoch, at) = self.by_key.get(key)?;
        (now.duration_since(*at) < GRANT_MEMORY).then(|| (node.clone(), *epoch))
    }
}

/// Marks a client id as registering on this node until dropped.
pub(crate) struct Registering {
    shared: Arc<Shared>,
    key: QueueKey,
}

impl Registering {
    fn new(shared: Arc<Shared>, key: QueueKey) -> Self {
        *lock(&shared.registrar.registering).entry(key.clone()).or_default() += 1;
        Registering { shared, key }
    }
}

impl Drop for Registering {
    fn drop(&mut self) {
        let mut registering = lock(&self.shared.registrar.registering);
        if let Some(n) = registering.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                registering.remove(&self.key);
            }
        }
    }
}

pub(super) fn wire_key(key: &QueueKey) -> WireKey {
    (key.mountpoint.to_string(), key.client_id.to_string())
}

fn queue_key((mountpoint, client_id): WireKey) -> QueueKey {
    QueueKey::new(mountpoint, client_id)
}

/// The session a node handed over, as the broker takes it: in-flight messages keep their
/// packet ids and states.
fn session_of(handover: HandOver) -> SessionHandOver {
    let mut inflight = SavedInflight::default();
    for (order, w) in handover.inflight.into_iter().enumerate() {
        let state = match w.state {
            0 => OutState::AwaitPubAck,
            1 => OutState::AwaitPubRec,
            _ => OutState::AwaitPubComp,
        };
        let Some(delivery) = persist::decode_delivery(&w.delivery) else {
            warn!(packet_id = w.packet_id, "undecodable in-flight message handed over; skipped");
            continue;
        };
        inflight.next_packet_id = inflight.next_packet_id.max(w.packet_id);
        inflight.outgoing.insert(
            w.packet_id,
            OutFlight {
                queued: Queued { delivery, stored: None },
                state,
                sent_at: Instant::now(),
                order: order as u64,
            },
        );
    }
    inflight.next_order = inflight.outgoing.len() as u64;
    inflight.incoming_qos2 = handover.incoming_qos2.into_iter().collect();
    SessionHandOver {
        subscriptions: handover.subscriptions.into_iter().map(|s| (s.filter.clone(), s.record())).collect(),
        inflight,
    }
}

/// The in-flight state of a session leaving this node, for the wire.
fn wire_inflight(inflight: &SavedInflight) -> (Vec<WireInflight>, Vec<u16>) {
    let mut outgoing: Vec<(&u16, &OutFlight)> = inflight.outgoing.iter().collect();
    outgoing.sort_by_key(|(_, o)| o.order);
    let wire = outgoing
        .into_iter()
        .map(|(id, o)| WireInflight {
            packet_id: *id,
            state: match o.state {
                OutState::AwaitPubAck => 0,
                OutState::AwaitPubRec => 1,
                OutState::AwaitPubComp => 2,
            },
            delivery: persist::encode_delivery(&o.queued.delivery),
        })
        .collect();
    (wire, inflight.incoming_qos2.iter().copied().collect())
}

impl Shared {
    /// The registration of `key` on this node: asks its leader (or, without coordination or
    /// when the leader is unreachable and `allow_register_during_netsplit` is on, acts as its
    /// own leader). The grant holds this node's claim on the client id until the session is
    /// installed.
    pub(crate) async fn coordinate(self: Arc<Self>, key: QueueKey, clean_start: bool) -> Result<Grant, String> {
        let claim = Registering::new(self.clone(), key.clone());
        let known = self.registrar.owner(&key).map_or(0, |o| o.epoch);
        let members = self.view().members.clone();
        let leader = match leader_of(&members, &key) {
            Some(l) if self.registrar.coordinate => l.clone(),
            _ => self.me.clone(),
        };
        let (epoch, handover) = if leader == self.me {
            self.grant(&key, &self.me, clean_start, known).await?
        } else if !self.peer_reachable(&leader) {
            // Known to be down: answer at once rather than after a timeout.
            if !self.allows_register_in_split() {
                return Err(format!("registration leader {leader} unreachable (netsplit)"));
            }
            debug!(client_id = %key.client_id, %leader, "registration leader unreachable; registering locally (allow_register_during_netsplit)");
            self.grant(&key, &self.me, clean_start, known).await?
        } else {
            self.ask_leader(&key, &leader, clean_start, known).await?
        };
        if let Some(h) = &handover {
            info!(client_id = %key.client_id, from = %h.from, queued = h.queued, "persistent session handed over from another node");
            // Held-back messages go out at the latest when the drain should be over.
            let (shared, key, wait) = (self.clone(), key.clone(), self.registrar.max_drain_time);
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                if let Some(broker) = shared.broker() {
                    broker.release_held(&key);
                }
            });
        }
        Ok(Grant { epoch, handed_over: handover.map(session_of), claim: Some(Box::new(claim)) })
    }

    /// Asks `leader` for a grant. A request lost with a link that was replaced under it (the
    /// leader reachable again at once) is asked again, within `REGISTER_TIMEOUT` in all.
    async fn ask_leader(
        self: &Arc<Self>,
        key: &QueueKey,
        leader: &NodeId,
        clean_start: bool,
        known: u64,
    ) -> Result<(u64, Option<HandOver>), String> {
        let deadline = Instant::now() + REGISTER_TIMEOUT;
        loop {
            let request = Request::Register { key: wire_key(key), clean_start, known_epoch: known };
            let left = deadline.saturating_duration_since(Instant::now());
            match self.calls.call(self, leader, request, left).await {
                Ok(Response::Granted { epoch, session }) => return Ok((epoch, session)),
                Ok(Response::Refused { reason }) => return Err(reason),
                Ok(other) => {
                    return Err(format!("unexpected answer from the registration leader {leader}: {other:?}"));
                }
                Err(_) if Instant::now() + RETRY_PAUSE < deadline && self.peer_reachable(leader) => {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
                Err(e) if self.allows_register_in_split() => {
                    warn!(client_id = %key.client_id, %leader, error = %e, "registration leader unreachable; registering locally (allow_register_during_netsplit)");
                    return self.grant(key, &self.me, clean_start, known).await;
                }
                Err(e) => return Err(format!("registration leader {leader} unreachable: {e}")),
            }
        }
    }

    fn allows_register_in_split(&self) -> bool {
        self.broker().is_some_and(|b| b.netsplit.allows(NetsplitAction::Register))
    }

    /// The leader's part: serialises the registrations of `key`, picks the epoch and takes
    /// over every other session of the client id before answering.
    async fn grant(
        self: &Arc<Self>,
        key: &QueueKey,
        to: &NodeId,
        clean_start: bool,
        known: u64,
    ) -> Result<(u64, Option<HandOver>), String> {
        let key_lock = self.registrar.key_lock(key);
        let result = {
            let _serialised = key_lock.lock().await;
            self.grant_locked(key, to, clean_start, known).await
        };
        self.registrar.release_key_lock(key, key_lock);
        result
    }

    async fn grant_locked(
        self: &Arc<Self>,
        key: &QueueKey,
        to: &NodeId,
        clean_start: bool,
        known: u64,
    ) -> Result<(u64, Option<HandOver>), String> {
        let (holders, latest) = self.registrar.holders(key);
        let epoch = self.timestamp().max(latest.saturating_add(1)).max(known.saturating_add(1));
        let mut handover = None;
        for node in holders.iter().filter(|n| *n != to) {
            let taken = if *node == self.me {
                Ok(self.hand_over_here(key, epoch, to, clean_start).await)
            } else if !self.is_member(node) {
                continue; // left the cluster: nothing of it to take over
            } else if !self.peer_reachable(node) {
                Err(format!("{node} is unreachable"))
            } else {
                let request = Request::TakeOver { key: wire_key(key), epoch, to: to.clone(), clean_start };
                match self.calls.call(self, node, request, TAKEOVER_TIMEOUT).await {
                    Ok(Response::TakenOver { session }) => Ok(session),
                    Ok(other) => Err(format!("unexpected answer from {node}: {other:?}")),
                    Err(e) => Err(e),
                }
            };
            match taken {
                Ok(session) => handover = handover.or(session),
                Err(e) if self.allows_register_in_split() => {
                    // The other session is closed when its node sees the newer entry.
                    warn!(client_id = %key.client_id, %node, error = %e, "session on another node not taken over; it closes once that node sees this registration");
                }
                Err(e) => {
                    return Err(format!("the session on {node} could not be taken over: {e}"));
                }
            }
        }
        self.registrar.remember_grant(key, to, epoch);
        debug!(client_id = %key.client_id, node = %to, epoch, "registration granted");
        Ok((epoch, handover))
    }

    /// Serves a request of another node.
    pub(crate) async fn serve(self: &Arc<Self>, from: &NodeId, body: Request) -> Response {
        match body {
            Request::Register { key, clean_start, known_epoch } => {
                if !self.is_member(from) {
                    return Response::Refused { reason: format!("{from} is not a cluster member") };
                }
                match self.grant(&queue_key(key), from, clean_start, known_epoch).await {
                    Ok((epoch, session)) => Response::Granted { epoch, session },
                    Err(reason) => Response::Refused { reason },
                }
            }
            Request::TakeOver { key, epoch, to, clean_start } => {
                Response::TakenOver { session: self.hand_over_here(&queue_key(key), epoch, &to, clean_start).await }
            }
            Request::Drain { key, epoch, messages } => self.accept_drain_now(&queue_key(key), epoch, messages).await,
            Request::Leave { kill_sessions, timeout_ms } => {
                Response::Text { text: self.leave_here(kill_sessions, Duration::from_millis(timeout_ms)) }
            }
            Request::DrainDone { key } => {
                if let Some(broker) = self.broker() {
                    broker.release_held(&queue_key(key));
                }
                Response::Stored
            }
            Request::LeaveStatus => Response::Progress { progress: self.leave_progress() },
            Request::Adopt { key, epoch, subscriptions } => self.adopt(queue_key(key), epoch, subscriptions),
        }
    }

    /// Disconnects the session of `key` here for a registration on `to`; a persistent session
    /// that continues there is handed over and its queue drained to it.
    async fn hand_over_here(
        self: &Arc<Self>,
        key: &QueueKey,
        epoch: u64,
        to: &NodeId,
        clean_start: bool,
    ) -> Option<HandOver> {
        let broker = self.broker()?;
        let h = broker.hand_over(key, epoch, !clean_start).await?;
        // The in-flight state goes with the answer; the drain skips what of it is stored.
        let (inflight, incoming_qos2) = wire_inflight(&h.inflight);
        let handover = HandOver {
            from: self.me.clone(),
            subscriptions: h.subscriptions.iter().map(|(f, r)| WireSubscription::new(f.clone(), r)).collect(),
            queued: h.stored,
            inflight,
            incoming_qos2,
        };
        let skip = h.stored_inflight();
        tokio::spawn(self.clone().drain_counted(h, to.clone(), epoch, Vec::new(), skip, None));
        Some(handover)
    }

    /// A `subscriber` entry changed: remember the owner, and close a local session it
    /// supersedes (lower epoch), draining a persistent one to the owner.
    pub(crate) fn observe_owner(self: &Arc<Self>, key: QueueKey, owner: Option<Owner>) {
        self.registrar.set_owner(key.clone(), owner.clone());
        let Some(owner) = owner.filter(|o| o.node != self.me) else {
            return;
        };
        let Some(broker) = self.broker() else { return };
        if lock(&self.registrar.registering).contains_key(&key) {
            // A registration here with a lower epoch must not install its session now.
            broker.fence(&key, owner.epoch);
        }
        let Some(local) = broker.session_epoch(&key) else {
            return;
        };
        if local >= owner.epoch {
            return;
        }
        info!(client_id = %key.client_id, node = %owner.node, "a newer registration of this client id exists on another node; closing the session here");
        let shared = self.clone();
        tokio::spawn(async move {
            if let Some(h) = broker.hand_over(&key, owner.epoch, !owner.clean_session).await {
                shared.drain(h, owner.node, owner.epoch).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize) -> Vec<NodeId> {
        (1..=n).map(|i| NodeId::new(format!("vmq{i}@10.0.0.{i}"))).collect()
    }

    #[test]
    fn a_leader_changes_only_for_the_client_ids_of_a_removed_member() {
        let five = members(5);
        let four: Vec<NodeId> = five[..4].to_vec();
        let (mut moved, mut led_by_fifth) = (0, 0);
        for i in 0..10_000 {
            let key = QueueKey::new("", format!("client-{i}"));
            let before = leader_of(&five, &key).unwrap().clone();
            let after = leader_of(&four, &key).unwrap().clone();
            if before == five[4] {
                led_by_fifth += 1;
            }
            if before != after {
                moved += 1;
                assert_eq!(before, five[4], "only the removed member's client ids move");
            }
        }
        assert_eq!(moved, led_by_fifth);
        // About one in five.
        assert!((1_500..2_500).contains(&moved), "{moved} of 10,000 moved");
    }

    #[test]
    fn a_grant_is_remembered_for_grant_memory_and_swept_after_it() {
        let mut grants = Grants::default();
        let (a, b) = (QueueKey::new("", "a"), QueueKey::new("", "b"));
        let node = NodeId::new("n1@127.0.0.1");
        let t0 = Instant::now();
        grants.insert(&a, &node, 7, t0);
        assert_eq!(grants.get(&a, t0 + GRANT_MEMORY / 2), Some((node.clone(), 7)));
        // Past its time it is not answered, even before a sweep removed it.
        assert_eq!(grants.get(&a, t0 + GRANT_MEMORY), None);
        // The first grant after half the period sweeps it.
        grants.insert(&b, &node, 1, t0 + GRANT_MEMORY + Duration::from_millis(1));
        assert!(!grants.by_key.contains_key(&a));
        assert_eq!(grants.get(&b, t0 + GRANT_MEMORY + Duration::from_millis(2)), Some((node.clone(), 1)));
    }

    #[test]
    fn a_grant_is_forgotten_once_the_entry_has_its_epoch_or_a_newer_one() {
        let mut grants = Grants::default();
        let key = QueueKey::new("", "a");
        let node = NodeId::new("n1@127.0.0.1");
        let t0 = Instant::now();
        grants.insert(&key, &node, 7, t0);
        grants.forget_covered(&key, 6);
        assert_eq!(grants.get(&key, t0), Some((node.clone(), 7)), "an older entry does not cover the grant");
        grants.forget_covered(&key, 7);
        assert_eq!(grants.get(&key, t0), None);
        assert!(grants.by_key.is_empty());
    }

    #[test]
    fn every_node_picks_the_same_leader_whatever_the_member_order() {
        let mut m = members(3);
        let key = QueueKey::new("mp", "c");
        let a = leader_of(&m, &key).cloned();
        m.reverse();
        assert_eq!(leader_of(&m, &key).cloned(), a);
    }
}
