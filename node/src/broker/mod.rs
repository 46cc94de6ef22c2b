//! Broker state shared by every connection: sessions by client id, the routing trie per
//! mountpoint, retained messages and the offline message store.
//!
//! Connections run in their own tasks and call into [`Broker`] to register, subscribe and
//! publish. Locks here are std mutexes held for short sections that never await.

mod expiry;
mod handover;
pub mod inflight;
pub mod message;
pub mod persist;
pub mod queue;
mod registry;
pub mod retain;
mod routing;
pub mod trie;
mod wills;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::Duration;

use vmq_config::SharedSubscriptionPolicy;
use vmq_storage::MessageStore;
use vmq_storage::metadata::NodeId;

pub use handover::HandedOver;
pub use registry::{
    ConnectionHandle, Grant, GrantFuture, Kick, RegisterError, Registration, SessionHandOver, SessionSlot, SlotState,
    SubscriptionRecord,
};
pub use routing::PublishOutcome;

use self::queue::{Queue, QueueLimits};
use self::retain::RetainStore;
use self::trie::Trie;

/// The mountpoint of the message-store queues that hold a cluster node's outbox for an
/// unreachable peer; they are not sessions.
pub const CLUSTER_OUTBOX_MOUNTPOINT: &str = "$cluster-outbox";

/// Broker-wide behaviour settings (from `vernemq.conf`).
#[derive(Debug, Clone)]
pub struct BrokerSettings {
    /// Queue limits for every queue.
    pub queue: QueueLimits,
    /// `upgrade_outgoing_qos`.
    pub upgrade_outgoing_qos: bool,
    /// `shared_subscription_policy`.
    pub shared_policy: SharedSubscriptionPolicy,
    /// `persistent_client_expiration`: offline persistent sessions older than this are removed.
    pub persistent_client_expiration: Option<Duration>,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        Self {
            queue: QueueLimits::default(),
            upgrade_outgoing_qos: false,
            shared_policy: SharedSubscriptionPolicy::PreferLocal,
            persistent_client_expiration: None,
        }
    }
}

/// Counters exposed as metrics.
#[derive(Debug, Default)]
pub struct Counters {
    /// PUBLISH packets received from clients.
    pub publish_received: AtomicU64,
    /// Messages handed to queues.
    pub messages_routed: AtomicU64,
    /// Messages dropped by full queues or offline QoS 0.
    pub queue_message_drop: AtomicU64,
    /// Requests refused because the node was not ready (a netsplit) and its
    /// `allow_*_during_netsplit` setting is off: CONNECT, PUBLISH, SUBSCRIBE, UNSUBSCRIBE.
    pub netsplit_refused: [AtomicU64; 4],
    /// Messages that matched no subscriber.
    pub router_matches_none: AtomicU64,
    /// Sessions expired by `persistent_client_expiration` or Session Expiry Interval.
    pub sessions_expired: AtomicU64,
    /// Client connections accepted.
    pub socket_open: AtomicU64,
    /// Client connections closed.
    pub socket_close: AtomicU64,
    /// Times a connection stopped reading to honour `max_message_rate`.
    pub rate_limited: AtomicU64,
}

/// Remote subscriptions matching one topic, as the cluster knows them.
#[derive(Debug, Default)]
pub struct RemoteMatches {
    /// Remote nodes with at least one matching plain (non-shared) subscription.
    pub nodes: Vec<NodeId>,
    /// Matching shared subscriptions with remote members.
    pub shared: Vec<RemoteShared>,
}

/// The remote members of one shared subscription `$share/<group>/<filter>`.
#[derive(Debug, Clone)]
pub struct RemoteShared {
    /// Share group name.
    pub group: String,
    /// Topic filter (without the `$share/<group>/` prefix).
    pub filter: String,
    /// Members: node and client id.
    pub members: Vec<(NodeId, Arc<str>)>,
}

/// A publish to send to one remote node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    /// The node.
    pub node: NodeId,
    /// Deliver to the node's matching plain subscriptions.
    pub plain: bool,
    /// Deliver to these shared-subscription members only: client id and the full
    /// `$share/<group>/<filter>` filter.
    pub shared: Vec<(Arc<str>, String)>,
}

/// What the broker tells the cluster, and asks it, so that the broker does not depend on the
/// cluster's implementation. Without a cluster (a single node) none of it is called.
/// Implementations must not call back into the broker's locking paths (they are called with
/// no broker lock held, but from connection tasks, so they must return quickly).
pub trait ClusterLink: Send + Sync + 'static {
    /// A session registered with `epoch` exists with these subscriptions (`Some`), or has
    /// ended (`None`).
    fn session_changed(&self, key: &vmq_storage::QueueKey, epoch: u64, session: Option<SessionAnnounce>);
    /// Asks the client id's registration leader whether this node may register the client:
    /// the fencing epoch, and the session another node handed over. Resolves once every other
    /// session of the client id is disconnected; an error says why the CONNECT is refused.
    fn coordinate(&self, key: &vmq_storage::QueueKey, clean_start: bool) -> registry::GrantFuture;
    /// A retained message was set (an empty payload clears the topic).
    fn retained_changed(&self, msg: &Arc<message::Msg>);
    /// Remote subscriptions matching `topic` in `mountpoint`.
    fn remote_matches(&self, mountpoint: &str, topic: &str) -> RemoteMatches;
    /// Sends `msg` to remote nodes, one frame per node, in the order of the calls. For a QoS
    /// 1/2 message, one ticket per node that resolves once that node accepted it.
    fn forward(&self, msg: &Arc<message::Msg>, forwards: Vec<Forward>) -> Vec<queue::Durable>;
    /// Whether every cluster member is reachable (VerneMQ's "ready"; the netsplit policies).
    fn is_ready(&self) -> bool;
    /// Whether `node` is reachable now.
    fn is_reachable(&self, node: &NodeId) -> bool;
}

/// What the cluster is told of a live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionAnnounce {
    /// Started clean: it does not outlive the node run that holds it.
    pub clean_session: bool,
    /// Its subscriptions, sorted by filter.
    pub subscriptions: Vec<(String, SubscriptionRecord)>,
}

/// The `allow_*_during_netsplit` policies: what a node that is not ready (a cluster member is
/// unreachable) still accepts. Settable at runtime (`/api/v1/set`); read on every CONNECT,
/// PUBLISH, SUBSCRIBE and UNSUBSCRIBE only while the node is not ready.
#[derive(Debug, Default)]
pub struct NetsplitPolicy {
    /// `allow_register_during_netsplit`.
    pub allow_register: std::sync::atomic::AtomicBool,
    /// `allow_publish_during_netsplit`.
    pub allow_publish: std::sync::atomic::AtomicBool,
    /// `allow_subscribe_during_netsplit`.
    pub allow_subscribe: std::sync::atomic::AtomicBool,
    /// `allow_unsubscribe_during_netsplit`.
    pub allow_unsubscribe: std::sync::atomic::AtomicBool,
}

/// What the netsplit policies govern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetsplitAction {
    /// CONNECT.
    Register,
    /// PUBLISH.
    Publish,
    /// SUBSCRIBE.
    Subscribe,
    /// UNSUBSCRIBE.
    Unsubscribe,
}

impl NetsplitPolicy {
    fn flag(&self, action: NetsplitAction) -> &std::sync::atomic::AtomicBool {
        match action {
            NetsplitAction::Register => &self.allow_register,
            NetsplitAction::Publish => &self.allow_publish,
            NetsplitAction::Subscribe => &self.allow_subscribe,
            NetsplitAction::Unsubscribe => &self.allow_unsubscribe,
        }
    }

    /// Whether `action` is allowed while the node is not ready.
    pub fn allows(&self, action: NetsplitAction) -> bool {
        self.flag(action).load(Ordering::Relaxed)
    }

    /// Sets the policy of `action`.
    pub fn set(&self, action: NetsplitAction, allow: bool) {
        self.flag(action).store(allow, Ordering::Relaxed);
    }
}

/// The shared broker state.
pub struct Broker {
    settings: BrokerSettings,
    store: Arc<dyn MessageStore>,
    // Read on every publish, written on (un)subscribe: a RwLock keeps publishers parallel.
    routes: RwLock<HashMap<Arc<str>, Trie<Arc<Queue>>>>,
    retained: Mutex<RetainStore>,
    sessions: Mutex<HashMap<vmq_storage::QueueKey, Arc<SessionSlot>>>,
    /// Where the disconnect time of offline sessions is kept across restarts (none: in memory
    /// only).
    records: Option<Arc<dyn vmq_storage::Store>>,
    /// Client ids whose session a registration on another node superseded: its epoch, and
    /// since when (see `handover`).
    fences: Mutex<HashMap<vmq_storage::QueueKey, (u64, std::time::Instant)>>,
    next_connection_id: AtomicU64,
    rng_state: AtomicU64,
    cluster: OnceLock<Arc<dyn ClusterLink>>,
    /// The `allow_*_during_netsplit` settings.
    pub netsplit: NetsplitPolicy,
    /// Set when the node leaves the cluster: its MQTT listeners stop accepting.
    listeners_stopped: tokio::sync::watch::Sender<bool>,
    /// Metrics counters.
    pub counters: Counters,
    /// Wills waiting for their Will Delay Interval.
    wills: Mutex<wills::DelayedWills>,
    /// Wakes the task that publishes delayed wills when one is due earlier than the others.
    will_scheduled: tokio::sync::Notify,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").finish_non_exhaustive()
    }
}

/// A seed that differs between processes and between brokers of one process: assigned client
/// ids are drawn from it, and two nodes of a cluster must never hand out the same one (a client
/// id is unique cluster-wide, so a collision would take over another client's session).
fn seed() -> u64 {
    static INSTANCES: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let instance = INSTANCES.fetch_add(1, Ordering::Relaxed);
    nanos ^ (u64::from(std::process::id()) << 32) ^ instance.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl Broker {
    /// A broker with `settings`, keeping offline messages in `store`. Queues that already
    /// hold messages in `store` (after a restart) are restored as offline sessions.
    pub fn new(settings: BrokerSettings, store: Arc<dyn MessageStore>) -> Arc<Self> {
        Self::with_records(settings, store, None)
    }

    /// [`Broker::new`], keeping the disconnect time of offline sessions in `records` (the
    /// node's store), so that `persistent_client_expiration` counts across restarts.
    pub fn with_records(
        settings: BrokerSettings,
        store: Arc<dyn MessageStore>,
        records: Option<Arc<dyn vmq_storage::Store>>,
    ) -> Arc<Self> {
        let broker = Arc::new(Self {
            records,
            settings,
            store: store.clone(),
            routes: RwLock::new(HashMap::new()),
            retained: Mutex::new(RetainStore::default()),
            sessions: Mutex::new(HashMap::new()),
            fences: Mutex::new(HashMap::new()),
            next_connection_id: AtomicU64::new(1),
            rng_state: AtomicU64::new(seed()),
            cluster: OnceLock::new(),
            netsplit: NetsplitPolicy::default(),
            listeners_stopped: tokio::sync::watch::channel(false).0,
            counters: Counters::default(),
            wills: Mutex::default(),
            will_scheduled: tokio::sync::Notify::new(),
        });
        for (key, _) in store.queues() {
            if &*key.mountpoint != CLUSTER_OUTBOX_MOUNTPOINT {
                broker.restore_offline_session(key);
            }
        }
        broker
    }

    /// Stops every MQTT listener from accepting (a cluster leave); connections stay.
    pub fn stop_listeners(&self) {
        self.listeners_stopped.send_replace(true);
    }

    /// Resolves once [`Broker::stop_listeners`] was called.
    pub async fn listeners_stopped(&self) {
        let mut rx = self.listeners_stopped.subscribe();
        let _ = rx.wait_for(|stopped| *stopped).await;
    }

    /// Connects the broker to its cluster; only the first call has an effect.
    pub fn set_cluster(&self, link: Arc<dyn ClusterLink>) {
        let _ = self.cluster.set(link);
    }

    fn cluster(&self) -> Option<&Arc<dyn ClusterLink>> {
        self.cluster.get()
    }

    /// Whether `action` may go ahead now: always on a ready node (every member reachable, or
    /// no cluster), otherwise as its `allow_*_during_netsplit` setting says.
    pub fn netsplit_allows(&self, action: NetsplitAction) -> bool {
        self.cluster().is_none_or(|c| c.is_ready()) || self.netsplit.allows(action)
    }

    /// Applies a retained message replicated from another node (an empty payload clears the
    /// topic), without announcing it back to the cluster.
    pub fn set_retained_replica(&self, msg: Arc<message::Msg>) {
        self.retained().set(msg);
    }

    /// Removes the retained message of `topic` in `mountpoint` (replicated delete).
    pub fn clear_retained_replica(&self, mountpoint: &str, topic: &str) {
        self.retained().remove(mountpoint, topic);
    }

    /// Broker settings.
    pub fn settings(&self) -> &BrokerSettings {
        &self.settings
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<vmq_storage::QueueKey, Arc<SessionSlot>>> {
        // Sections leave the map consistent; a poisoned lock is still usable.
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fences(&self) -> MutexGuard<'_, HashMap<vmq_storage::QueueKey, (u64, std::time::Instant)>> {
        self.fences.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn retained(&self) -> MutexGuard<'_, RetainStore> {
        self.retained.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh id for a connection.
    pub fn next_connection_id(&self) -> u64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A pseudo-random number (splitmix64), for picking shared-subscription members.
    pub fn random(&self) -> u64 {
        let mut z = self.rng_state.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Number of sessions (connected or not).
    pub fn session_count(&self) -> usize {
        self.sessions().len()
    }

    /// Number of retained messages.
    pub fn retained_count(&self) -> usize {
        self.retained().len()
    }

    /// Number of subscriptions across mountpoints.
    pub fn subscription_count(&self) -> usize {
        self.routes.read().unwrap_or_else(|e| e.into_inner()).values().map(Trie::len).sum()
    }

    fn new_queue(&self, key: vmq_storage::QueueKey) -> Arc<Queue> {
        Arc::new(Queue::new(key, self.settings.queue, self.store.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brokers_draw_different_assigned_client_ids() {
        let store = |_| {
            let s = vmq_storage::StoreMessageStore::open(
                Arc::new(vmq_storage::MemStore::new()),
                vmq_storage::Durability::Buffered,
            );
            Arc::new(s.unwrap()) as Arc<dyn MessageStore>
        };
        let a = Broker::new(BrokerSettings::default(), store(0));
        let b = Broker::new(BrokerSettings::default(), store(1));
        assert_ne!(a.random(), b.random(), "two nodes must not assign the same client id");
    }
}
