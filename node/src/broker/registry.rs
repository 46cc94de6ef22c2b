//! Sessions by client id: registration with takeover, disconnection, expiry (VerneMQ's
//! `vmq_reg` / `vmq_reg_mgr` on one node).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tracing::{debug, info};
use vmq_storage::QueueKey;

use super::Broker;
use super::inflight::SavedInflight;
use super::queue::Queue;
use vmq_mqtt::SubscriptionOptions;

/// Why a connection is told to go away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kick {
    /// Another connection registered the same client id [MQTT-3.1.4-3].
    TakenOver,
    /// An operator disconnected it.
    Administrative,
    /// The broker is shutting down.
    Shutdown,
}

impl Kick {
    fn to_u8(self) -> u8 {
        match self {
            Kick::TakenOver => 1,
            Kick::Administrative => 2,
            Kick::Shutdown => 3,
        }
    }

    fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Kick::TakenOver),
            2 => Some(Kick::Administrative),
            3 => Some(Kick::Shutdown),
            _ => None,
        }
    }
}

/// How the registry reaches a live connection: it can tell the connection to leave and wait
/// until it has. One small shared block per connection (two flags, two wake-up lists) rather
/// than a channel each way, since every idle connection carries one.
#[derive(Debug, Clone)]
pub struct ConnectionHandle {
    /// Connection id, unique per broker run.
    pub id: u64,
    control: Arc<ConnControl>,
}

#[derive(Debug, Default)]
struct ConnControl {
    /// The first [`Kick`] reason (0 = none yet).
    kick: AtomicU8,
    kicked: Notify,
    /// Set when the connection has finished its teardown.
    done: AtomicBool,
    finished: Notify,
}

impl ConnectionHandle {
    /// A handle for connection `id`.
    pub fn new(id: u64) -> Self {
        Self { id, control: Arc::default() }
    }

    /// Asks the connection to close; the first reason given wins.
    pub fn kick(&self, why: Kick) {
        let _ = self.control.kick.compare_exchange(0, why.to_u8(), Ordering::AcqRel, Ordering::Acquire);
        // Stores a permit when the connection is not waiting right now.
        self.control.kicked.notify_one();
    }

    /// Resolves once the connection was asked to close, with the reason.
    pub async fn kicked(&self) -> Kick {
        loop {
            let notified = self.control.kicked.notified();
            if let Some(why) = Kick::from_u8(self.control.kick.load(Ordering::Acquire)) {
                return why;
            }
            notified.await;
        }
    }

    /// The connection finished its teardown (session released, will published).
    pub fn finish(&self) {
        self.control.done.store(true, Ordering::Release);
        self.control.finished.notify_waiters();
    }

    /// Resolves once [`ConnectionHandle::finish`] was called.
    pub async fn finished(&self) {
        loop {
            let notified = self.control.finished.notified();
            tokio::pin!(notified);
            // Registered before the check, so a finish() in between is not missed.
            notified.as_mut().enable();
            if self.control.done.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

/// A subscription as the session remembers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriptionRecord {
    /// Options from SUBSCRIBE.
    pub options: SubscriptionOptions,
    /// Subscription Identifier.
    pub id: Option<u32>,
}

/// Mutable part of a session.
#[derive(Debug, Default)]
pub struct SlotState {
    /// Subscriptions by full filter (including any `$share/group/`).
    pub subscriptions: HashMap<String, SubscriptionRecord>,
    /// Messages in flight when the last connection closed, resent on reconnect.
    pub inflight: SavedInflight,
    /// The live connection, if any.
    pub connection: Option<ConnectionHandle>,
    /// When the session expires after disconnecting; `None` = never.
    pub expiry: Option<Duration>,
    /// When the last connection closed.
    pub disconnected_at: Option<Instant>,
    /// Bumped at every registration; a delayed will checks it to see the client came back.
    pub generation: u64,
    /// True when the session was started clean (its subscriptions do not outlive the node
    /// run that holds them, VerneMQ's `clean_session` in the `subscriber` metadata).
    pub clean_session: bool,
    /// The fencing epoch of the registration that owns the session (0 on a single node): a
    /// session of the same client id with a higher epoch elsewhere supersedes this one.
    pub epoch: u64,
}

/// A session: outlives its connections when persistent.
#[derive(Debug)]
pub struct SessionSlot {
    /// Mountpoint and client id.
    pub key: QueueKey,
    /// The client's queue.
    pub queue: Arc<Queue>,
    state: Mutex<SlotState>,
}

impl SessionSlot {
    /// Locks the mutable state.
    pub fn state(&self) -> MutexGuard<'_, SlotState> {
        // Every section leaves the state consistent, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The result of a registration.
#[derive(Debug)]
pub struct Registration {
    /// The session now owned by the connection.
    pub slot: Arc<SessionSlot>,
    /// True when an existing session was resumed (CONNACK Session Present).
    pub session_present: bool,
    /// In-flight messages to resend [MQTT-4.4.0-1].
    pub inflight: SavedInflight,
    /// The registration generation (for delayed wills).
    pub generation: u64,
}

/// How long a new connection waits for the one it takes over to finish its teardown.
pub(super) const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

/// What the registration leader granted a CONNECT.
#[derive(Default)]
pub struct Grant {
    /// The fencing epoch of this registration.
    pub epoch: u64,
    /// A persistent session another node handed over; its messages follow in drain steps.
    pub handed_over: Option<SessionHandOver>,
    /// The cluster's claim on the client id while the session is being installed (drain steps
    /// that arrive meanwhile wait for it); released when dropped.
    pub claim: Option<Box<dyn std::any::Any + Send>>,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("epoch", &self.epoch)
            .field("handed_over", &self.handed_over)
            .finish_non_exhaustive()
    }
}

/// A persistent session another node handed over.
#[derive(Debug, Default)]
pub struct SessionHandOver {
    /// Its subscriptions.
    pub subscriptions: Vec<(String, SubscriptionRecord)>,
    /// What was in flight to its last connection, resent with the same packet ids.
    pub inflight: SavedInflight,
}

/// The cluster's answer to a registration.
pub type GrantFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Grant, String>> + Send>>;

/// Why a CONNECT could not be registered (answered with CONNACK 3 / MQTT 5 0x88).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RegisterError(pub String);

impl Broker {
    pub(super) fn restore_offline_session(&self, key: QueueKey) {
        let queue = self.new_queue(key.clone());
        let state = SlotState {
            disconnected_at: Some(self.disconnected_at(&key)),
            expiry: self.settings.persistent_client_expiration,
            ..SlotState::default()
        };
        let slot = Arc::new(SessionSlot { key: key.clone(), queue, state: Mutex::new(state) });
        self.sessions().insert(key, slot);
    }

    /// Registers a connection for `key`, taking over any live connection with the same client
    /// id, on this node or (through the registration leader) on another, and waiting until it
    /// has finished. With `clean_start` an existing session is discarded [MQTT-3.1.2-4];
    /// otherwise it is resumed [MQTT-3.1.2-5], also when another node handed it over.
    pub async fn register(
        &self,
        key: QueueKey,
        clean_start: bool,
        conn: ConnectionHandle,
    ) -> Result<Registration, RegisterError> {
        let mut grant = match self.cluster() {
            Some(cluster) => cluster.coordinate(&key, clean_start).await.map_err(RegisterError)?,
            None => Grant::default(),
        };
        let claim = grant.claim.take();
        let reg = self.register_local(key, clean_start, conn, grant).await?;
        self.announce_subscriptions(&reg.slot);
        drop(claim);
        Ok(reg)
    }

    async fn register_local(
        &self,
        key: QueueKey,
        clean_start: bool,
        conn: ConnectionHandle,
        grant: Grant,
    ) -> Result<Registration, RegisterError> {
        loop {
            let (live, newer) = {
                let sessions = self.sessions();
                let slot = sessions.get(&key);
                (slot.and_then(|s| s.state().connection.clone()), slot.is_some_and(|s| s.state().epoch > grant.epoch))
            };
            if newer {
                // Granted after this registration by the leader, installed before it here.
                return Err(RegisterError("a newer connection of this client id registered meanwhile".into()));
            }
            if let Some(old) = live {
                info!(client_id = %key.client_id, "session taken over by a new connection");
                self.take_over_local(&key, old).await;
                continue;
            }
            if self.fenced_above(&key, grant.epoch) {
                // A later registration of this client id (on another node) was granted while
                // this one was on its way: it has already won.
                return Err(RegisterError("a newer connection of this client id registered meanwhile".into()));
            }
            let mut sessions = self.sessions();
            if let Some(slot) = sessions.get(&key).cloned() {
                if slot.state().connection.is_some() {
                    continue; // another connection won the race; take it over in turn
                }
                if clean_start {
                    self.destroy_locked(&mut sessions, &slot);
                } else {
                    let was_offline = slot.state().disconnected_at.is_some();
                    let (mut inflight, generation) = {
                        let mut st = slot.state();
                        st.connection = Some(conn);
                        st.disconnected_at = None;
                        st.generation += 1;
                        st.epoch = st.epoch.max(grant.epoch);
                        (std::mem::take(&mut st.inflight), st.generation)
                    };
                    drop(sessions);
                    if was_offline {
                        self.forget_disconnected(&slot.key);
                    }
                    if let Some(h) = grant.handed_over {
                        slot.queue.hold();
                        self.add_routes(&slot, h.subscriptions);
                        if inflight.outgoing.is_empty() && inflight.incoming_qos2.is_empty() {
                            inflight = h.inflight;
                        }
                    }
                    slot.queue.set_online();
                    return Ok(Registration { slot, session_present: true, inflight, generation });
                }
            }
            let queue = self.new_queue(key.clone());
            let state = SlotState {
                connection: Some(conn),
                generation: 1,
                clean_session: clean_start,
                epoch: grant.epoch,
                ..SlotState::default()
            };
            let slot = Arc::new(SessionSlot { key: key.clone(), queue, state: Mutex::new(state) });
            sessions.insert(key, slot.clone());
            drop(sessions);
            // A persistent session resumed from another node: its subscriptions now, its
            // messages as the old node drains them.
            let (session_present, inflight) = match grant.handed_over {
                Some(h) if !clean_start => {
                    // Older messages drain from the previous node: new ones wait behind them.
                    slot.queue.hold();
                    self.add_routes(&slot, h.subscriptions);
                    (true, h.inflight)
                }
                _ => (false, SavedInflight::default()),
            };
            slot.queue.set_online();
            return Ok(Registration { slot, session_present, inflight, generation: 1 });
        }
    }

    /// Kicks the live connection `old` of `key` and waits for its teardown; a connection stuck
    /// in its teardown (e.g. blocked writing to a dead peer) is detached.
    pub(super) async fn take_over_local(&self, key: &QueueKey, old: ConnectionHandle) {
        old.kick(Kick::TakenOver);
        let finished = tokio::time::timeout(TAKEOVER_WAIT, old.finished()).await;
        if finished.is_err() {
            let sessions = self.sessions();
            if let Some(slot) = sessions.get(key) {
                let mut st = slot.state();
                if st.connection.as_ref().is_some_and(|c| c.id == old.id) {
                    st.connection = None;
                }
            }
        }
    }

    /// Routes `subscriptions` to the session of `slot` (a session handed over by another node).
    pub(super) fn add_routes(&self, slot: &Arc<SessionSlot>, subscriptions: Vec<(String, SubscriptionRecord)>) {
        for (filter, record) in subscriptions {
            let Ok(parsed) = vmq_mqtt::topic::parse_filter(&filter) else { continue };
            let entry = super::trie::SubEntry {
                client_id: slot.key.client_id.clone(),
                queue: slot.queue.clone(),
                options: record.options,
                id: record.id,
            };
            {
                let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
                routes.entry(slot.key.mountpoint.clone()).or_default().insert(parsed.share, parsed.filter, entry);
            }
            slot.state().subscriptions.insert(filter, record);
        }
    }

    /// The connection `conn_id` of `slot` closed at `now`. Its in-flight messages are kept for
    /// the next connection; the session ends now when `expiry` is zero, or later when it
    /// elapses.
    pub fn disconnected(
        &self,
        slot: &Arc<SessionSlot>,
        conn_id: u64,
        inflight: SavedInflight,
        expiry: Option<Duration>,
        now: Instant,
    ) {
        let mut sessions = self.sessions();
        {
            let mut st = slot.state();
            if st.connection.as_ref().map(|c| c.id) != Some(conn_id) {
                return;
            }
            st.connection = None;
            st.inflight = inflight;
            st.disconnected_at = Some(now);
            st.expiry = match (expiry, self.settings.persistent_client_expiration) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        if expiry == Some(Duration::ZERO) {
            // The session ends with its connection: nothing of its queue is worth writing out.
            self.destroy_locked(&mut sessions, slot);
        } else {
            slot.queue.set_offline();
            drop(sessions);
            self.note_disconnected(&slot.key);
        }
    }

    /// Ends every offline session whose expiry has elapsed at `now`; returns how many.
    pub fn expire_sessions(&self, now: Instant) -> usize {
        let mut sessions = self.sessions();
        let expired: Vec<Arc<SessionSlot>> = sessions
            .values()
            .filter(|slot| {
                let st = slot.state();
                st.connection.is_none()
                    && matches!((st.disconnected_at, st.expiry), (Some(at), Some(exp)) if now.duration_since(at) >= exp)
            })
            .cloned()
            .collect();
        for slot in &expired {
            debug!(client_id = %slot.key.client_id, "session expired");
            self.destroy_locked(&mut sessions, slot);
        }
        self.counters.sessions_expired.fetch_add(expired.len() as u64, std::sync::atomic::Ordering::Relaxed);
        expired.len()
    }

    /// Live connections, for shutdown and administration.
    pub fn connections(&self) -> Vec<ConnectionHandle> {
        self.sessions().values().filter_map(|s| s.state().connection.clone()).collect()
    }

    /// Tells the cluster (if any) that the session of `slot` exists, with its current
    /// subscriptions.
    pub(super) fn announce_subscriptions(&self, slot: &Arc<SessionSlot>) {
        let Some(cluster) = self.cluster() else { return };
        // Under the sessions lock, as the session's end is announced: a session taken over
        // meanwhile (by another node) must not announce itself after its end.
        let sessions = self.sessions();
        if !sessions.get(&slot.key).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            return;
        }
        let (epoch, announce) = {
            let st = slot.state();
            let mut subscriptions: Vec<(String, SubscriptionRecord)> =
                st.subscriptions.iter().map(|(f, r)| (f.clone(), *r)).collect();
            subscriptions.sort_by(|a, b| a.0.cmp(&b.0));
            (st.epoch, super::SessionAnnounce { clean_session: st.clean_session, subscriptions })
        };
        cluster.session_changed(&slot.key, epoch, Some(announce));
    }

    /// Tells the cluster (if any) that the session of `slot` has ended here.
    fn announce_ended(&self, slot: &Arc<SessionSlot>) {
        if let Some(cluster) = self.cluster() {
            let epoch = slot.state().epoch;
            cluster.session_changed(&slot.key, epoch, None);
        }
    }

    /// Recreates an offline persistent session with `subscriptions`, from the replicated
    /// `subscriber` entries this node held before a restart (VerneMQ rebuilds its queues from
    /// metadata the same way), so that messages published meanwhile are queued for it.
    pub fn restore_subscriptions(&self, key: QueueKey, epoch: u64, subscriptions: Vec<(String, SubscriptionRecord)>) {
        let slot = match self.session(&key) {
            Some(slot) => slot,
            None => {
                self.restore_offline_session(key.clone());
                let Some(slot) = self.session(&key) else { return };
                slot
            }
        };
        slot.state().epoch = epoch;
        self.add_routes(&slot, subscriptions);
    }

    /// Looks a session up.
    pub fn session(&self, key: &QueueKey) -> Option<Arc<SessionSlot>> {
        self.sessions().get(key).cloned()
    }

    fn destroy_locked(&self, sessions: &mut HashMap<QueueKey, Arc<SessionSlot>>, slot: &Arc<SessionSlot>) {
        if sessions.get(&slot.key).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            sessions.remove(&slot.key);
        }
        let subs: Vec<String> = slot.state().subscriptions.drain().map(|(f, _)| f).collect();
        for filter in subs {
            self.remove_route(&slot.key, &filter);
        }
        self.announce_ended(slot);
        if slot.state().disconnected_at.is_some() {
            self.forget_disconnected(&slot.key);
        }
        slot.queue.destroy();
    }
}
