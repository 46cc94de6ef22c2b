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
use super::queue::Queue;
use crate::mqtt::SubscriptionOptions;
use crate::session::SavedInflight;

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
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

impl Broker {
    pub(super) fn restore_offline_session(&self, key: QueueKey) {
        let queue = self.new_queue(key.clone());
        let state = SlotState {
            disconnected_at: Some(Instant::now()),
            expiry: self.settings.persistent_client_expiration,
            ..SlotState::default()
        };
        let slot = Arc::new(SessionSlot { key: key.clone(), queue, state: Mutex::new(state) });
        self.sessions().insert(key, slot);
    }

    /// Registers a connection for `key`, taking over any live connection with the same client
    /// id and waiting until it has finished. With `clean_start` an existing session is
    /// discarded [MQTT-3.1.2-4]; otherwise it is resumed [MQTT-3.1.2-5].
    pub async fn register(&self, key: QueueKey, clean_start: bool, conn: ConnectionHandle) -> Registration {
        loop {
            let live = {
                let sessions = self.sessions();
                sessions.get(&key).and_then(|slot| slot.state().connection.clone())
            };
            if let Some(old) = live {
                info!(client_id = %key.client_id, "session taken over by a new connection");
                old.kick(Kick::TakenOver);
                let finished = tokio::time::timeout(TAKEOVER_WAIT, old.finished()).await;
                if finished.is_err() {
                    // The old connection is stuck (e.g. blocked writing to a dead peer): detach it.
                    let sessions = self.sessions();
                    if let Some(slot) = sessions.get(&key) {
                        let mut st = slot.state();
                        if st.connection.as_ref().is_some_and(|c| c.id == old.id) {
                            st.connection = None;
                        }
                    }
                }
                continue;
            }
            let mut sessions = self.sessions();
            if let Some(slot) = sessions.get(&key).cloned() {
                if slot.state().connection.is_some() {
                    continue; // another connection won the race; take it over in turn
                }
                if clean_start {
                    self.destroy_locked(&mut sessions, &slot);
                } else {
                    let (inflight, generation) = {
                        let mut st = slot.state();
                        st.connection = Some(conn);
                        st.disconnected_at = None;
                        st.generation += 1;
                        (std::mem::take(&mut st.inflight), st.generation)
                    };
                    slot.queue.set_online();
                    return Registration { slot, session_present: true, inflight, generation };
                }
            }
            let queue = self.new_queue(key.clone());
            let state = SlotState { connection: Some(conn), generation: 1, clean_session: clean_start, ..SlotState::default() };
            let slot = Arc::new(SessionSlot { key: key.clone(), queue, state: Mutex::new(state) });
            sessions.insert(key, slot.clone());
            drop(sessions);
            slot.queue.set_online();
            return Registration { slot, session_present: false, inflight: SavedInflight::default(), generation: 1 };
        }
    }

    /// The connection `conn_id` of `slot` closed. Its in-flight messages are kept for the next
    /// connection; the session ends now when `expiry` is zero, or later when it elapses.
    pub fn disconnected(&self, slot: &Arc<SessionSlot>, conn_id: u64, inflight: SavedInflight, expiry: Option<Duration>) {
        let mut sessions = self.sessions();
        {
            let mut st = slot.state();
            if st.connection.as_ref().map(|c| c.id) != Some(conn_id) {
                return;
            }
            st.connection = None;
            st.inflight = inflight;
            st.disconnected_at = Some(Instant::now());
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

    /// Tells the cluster (if any) the current subscriptions of `slot`; an empty list removes
    /// the session from the replicated `subscriber` prefix.
    pub(super) fn announce_subscriptions(&self, slot: &Arc<SessionSlot>) {
        let Some(cluster) = self.cluster() else { return };
        let (clean, subs) = {
            let st = slot.state();
            let mut subs: Vec<(String, SubscriptionRecord)> = st.subscriptions.iter().map(|(f, r)| (f.clone(), *r)).collect();
            subs.sort_by(|a, b| a.0.cmp(&b.0));
            (st.clean_session, subs)
        };
        cluster.subscriptions_changed(&slot.key, clean, subs);
    }

    /// Recreates an offline persistent session with `subscriptions`, from the replicated
    /// `subscriber` entries this node held before a restart (VerneMQ rebuilds its queues from
    /// metadata the same way), so that messages published meanwhile are queued for it.
    pub fn restore_subscriptions(&self, key: QueueKey, subscriptions: Vec<(String, SubscriptionRecord)>) {
        let slot = match self.session(&key) {
            Some(slot) => slot,
            None => {
                self.restore_offline_session(key.clone());
                let Some(slot) = self.session(&key) else { return };
                slot
            }
        };
        for (filter, record) in subscriptions {
            let Ok(parsed) = crate::mqtt::topic::parse_filter(&filter) else { continue };
            let entry = super::trie::SubEntry {
                client_id: key.client_id.as_str().into(),
                queue: slot.queue.clone(),
                options: record.options,
                id: record.id,
            };
            {
                let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
                routes.entry(key.mountpoint.as_str().into()).or_default().insert(parsed.share, parsed.filter, entry);
            }
            slot.state().subscriptions.insert(filter, record);
        }
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
        let had_subscriptions = !subs.is_empty();
        for filter in subs {
            self.remove_route(&slot.key, &filter);
        }
        if had_subscriptions {
            self.announce_subscriptions(slot);
        }
        slot.queue.destroy();
    }
}
