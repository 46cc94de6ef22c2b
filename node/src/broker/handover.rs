//! A session leaving this node for another (takeover by a registration elsewhere, or a
//! duplicate fenced after a heal), and the messages of a session arriving from another node
//! (docs/architecture.md "Registration", "Queue migration").
//!
//! The leaving session keeps its routes until the cluster layer has drained its queue: what is
//! published meanwhile lands in its store and follows the drain, so nothing routed here in the
//! moments before every node knows of the move is lost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};
use vmq_storage::{MessageSeq, QueueKey, StoredMessage};

use super::inflight::SavedInflight;
use super::queue::{Durable, EnqueueOutcome, Wakes};
use super::registry::{SessionSlot, SubscriptionRecord};
use super::{Broker, persist};

/// How long a fence is remembered for a client id that had no session here when a later
/// registration elsewhere took it over: longer than any registration takes to complete.
const FENCE_MEMORY: Duration = Duration::from_secs(60);

/// A persistent session taken out of this node, to be drained to its new node.
#[derive(Debug)]
pub struct HandedOver {
    /// The session; its routes stay until [`Broker::retire`].
    pub slot: Arc<SessionSlot>,
    /// Its subscriptions, sorted by filter.
    pub subscriptions: Vec<(String, SubscriptionRecord)>,
    /// What was in flight to its last connection (packet ids, states, messages).
    pub inflight: SavedInflight,
    /// Messages in its store now.
    pub stored: u64,
}

impl HandedOver {
    /// The in-flight messages that exist only in memory (not in the store), encoded, in the
    /// order they were sent: what a drain must carry first when the in-flight state itself is
    /// not handed over.
    pub fn memory_only_inflight(&self) -> Vec<Vec<u8>> {
        let mut outgoing: Vec<_> = self.inflight.outgoing.values().collect();
        outgoing.sort_by_key(|o| o.order);
        outgoing
            .iter()
            .filter(|o| o.queued.stored.is_none())
            .map(|o| persist::encode_delivery(&o.queued.delivery))
            .collect()
    }

    /// Store positions of the in-flight messages that are also in the store.
    pub fn stored_inflight(&self) -> std::collections::HashSet<MessageSeq> {
        self.inflight.outgoing.values().filter_map(|o| o.queued.stored).collect()
    }
}

impl Broker {
    /// Whether a registration of `key` with a higher epoch than `epoch` was seen here.
    pub(super) fn fenced_above(&self, key: &QueueKey, epoch: u64) -> bool {
        let mut fences = self.fences();
        let now = Instant::now();
        fences.retain(|_, (_, at)| now.duration_since(*at) < FENCE_MEMORY);
        fences.get(key).is_some_and(|(fence, _)| *fence > epoch)
    }

    /// Remembers that a registration of `key` with `epoch` exists elsewhere: a registration
    /// here with a lower epoch must not install its session.
    pub fn fence(&self, key: &QueueKey, epoch: u64) {
        let mut fences = self.fences();
        let entry = fences.entry(key.clone()).or_insert((epoch, Instant::now()));
        if entry.0 <= epoch {
            *entry = (epoch, Instant::now());
        }
    }

    /// The session of `key` is superseded by a registration with `epoch` on another node:
    /// its connection (if any) is disconnected with "session taken over" and waited for. When
    /// `keep` (the new connection resumes the session) and the session here is persistent, it
    /// is taken out for draining; otherwise it ends here. `None` when there was no session
    /// here, or only a newer one (which is left alone).
    pub async fn hand_over(&self, key: &QueueKey, epoch: u64, keep: bool) -> Option<HandedOver> {
        self.fence(key, epoch);
        loop {
            let slot = self.session(key)?;
            if slot.state().epoch > epoch {
                return None;
            }
            let live = slot.state().connection.clone();
            if let Some(old) = live {
                info!(client_id = %key.client_id, "session taken over by a connection on another node");
                self.take_over_local(key, old).await;
                continue;
            }
            let mut sessions = self.sessions();
            match sessions.get(key) {
                Some(s) if Arc::ptr_eq(s, &slot) && s.state().connection.is_none() => {}
                _ => continue, // changed while the connection finished
            }
            if !keep || slot.state().clean_session {
                // Ends here; the new node announces the client id, so nothing is announced.
                sessions.remove(key);
                drop(sessions);
                self.retire(&slot);
                return None;
            }
            sessions.remove(key);
            drop(sessions);
            let (subscriptions, inflight) = {
                let mut st = slot.state();
                let mut subscriptions: Vec<(String, SubscriptionRecord)> =
                    st.subscriptions.iter().map(|(f, r)| (f.clone(), *r)).collect();
                subscriptions.sort_by(|a, b| a.0.cmp(&b.0));
                (subscriptions, std::mem::take(&mut st.inflight))
            };
            let stored = self.store.count(key);
            return Some(HandedOver { slot, subscriptions, inflight, stored });
        }
    }

    /// Ends a session that left this node: its routes are removed (unless a new session of
    /// the client id lives here again) and its queue deleted. Called once its queue is drained.
    pub fn retire(&self, slot: &Arc<SessionSlot>) {
        let subs: Vec<String> = slot.state().subscriptions.drain().map(|(f, _)| f).collect();
        if self.session(&slot.key).is_none() {
            for filter in subs {
                self.remove_route(&slot.key, &filter);
            }
            self.forget_disconnected(&slot.key);
        }
        slot.queue.destroy();
    }

    /// The new node of a handed-over session is known here: publishes made here go there by
    /// forward and skip its queue here.
    pub fn mark_moved(&self, slot: &Arc<SessionSlot>) {
        slot.queue.set_moved();
    }

    /// Stops routing to a handed-over session: from now on nothing new reaches its queue.
    pub fn unroute(&self, slot: &Arc<SessionSlot>) {
        if self.session(&slot.key).is_some() {
            return;
        }
        let subs: Vec<String> = slot.state().subscriptions.keys().cloned().collect();
        for filter in subs {
            self.remove_route(&slot.key, &filter);
        }
    }

    /// Up to `max` stored messages of `key` after `after`, oldest first (a drain step).
    pub fn read_stored(
        &self,
        key: &QueueKey,
        after: Option<MessageSeq>,
        max: usize,
    ) -> Result<Vec<StoredMessage>, String> {
        self.store.read(key, after, max).map_err(|e| e.to_string())
    }

    /// Deletes drained messages of `key` (the new node has stored them).
    pub fn delete_stored(&self, key: &QueueKey, seqs: &[MessageSeq]) {
        if let Err(e) = self.store.delete(key, seqs) {
            warn!(client_id = %key.client_id, error = %e, "cannot delete drained messages");
        }
    }

    /// Messages drained from the session's previous node, appended to the session of `key`
    /// here. `None` when there is no session of `key` here; otherwise what the enqueues
    /// must wait for before the step counts as stored.
    pub fn accept_drained(&self, key: &QueueKey, messages: &[Vec<u8>]) -> Option<Vec<Durable>> {
        let slot = self.session(key)?;
        let mut wakes = Wakes::default();
        let mut durable = Vec::new();
        for bytes in messages {
            let Some(delivery) = persist::decode_delivery(bytes) else {
                warn!(client_id = %key.client_id, "undecodable drained message skipped");
                continue;
            };
            match slot.queue.enqueue_drained(delivery, &mut wakes) {
                EnqueueOutcome::Stored(d) => durable.push(d),
                EnqueueOutcome::Queued => {}
                EnqueueOutcome::Dropped => {
                    warn!(client_id = %key.client_id, "drained message dropped: the queue is full");
                }
            }
        }
        wakes.wake_all();
        Some(durable)
    }

    /// Every session here: key, registration epoch, whether a connection holds it.
    pub fn sessions_here(&self) -> Vec<(QueueKey, u64, bool)> {
        self.sessions()
            .values()
            .map(|s| {
                let st = s.state();
                (s.key.clone(), st.epoch, st.connection.is_some())
            })
            .collect()
    }

    /// Creates an offline persistent session of `key` with `subscriptions`, registered with
    /// `epoch` (its node leaves the cluster and moves it here), and announces it. A session of
    /// `key` already here is kept, with the subscriptions added.
    pub fn adopt(&self, key: QueueKey, epoch: u64, subscriptions: Vec<(String, SubscriptionRecord)>) {
        if self.session(&key).is_none() {
            self.restore_offline_session(key.clone());
        }
        let Some(slot) = self.session(&key) else { return };
        {
            let mut st = slot.state();
            st.epoch = st.epoch.max(epoch);
        }
        self.add_routes(&slot, subscriptions);
        self.announce_subscriptions(&slot);
    }

    /// The drain into the session of `key` is complete: what was held back is delivered.
    pub fn release_held(&self, key: &QueueKey) {
        if let Some(slot) = self.session(key) {
            slot.queue.release();
        }
    }

    /// Messages of `key` in the message store.
    pub fn stored_count(&self, key: &QueueKey) -> u64 {
        self.store.count(key)
    }

    /// The registration epoch of the session of `key` here, if any.
    pub fn session_epoch(&self, key: &QueueKey) -> Option<u64> {
        self.session(key).map(|s| s.state().epoch)
    }

    /// Whether appends of the queue of `slot` are still on their way to the store.
    pub fn is_settled(&self, slot: &Arc<SessionSlot>) -> bool {
        slot.queue.is_settled()
    }
}
