//! The cluster: everything that crosses between nodes.
//!
//! [`transport`] is the bottom layer: one QUIC endpoint per node, cookie-authenticated
//! connections, one ordered stream per purpose. On top of it:
//!
//! - `membership`: the add-wins set of members with their cluster addresses, persisted and
//!   gossiped; `join` (only from a node with an empty history) and `leave`;
//! - `metadata`: the driver task owning the metadata replica (`vmq_swc` or `vmq_plumtree`),
//!   which replicates subscriptions (prefix `subscriber`) and retained messages (`retain`);
//! - `remote`: what other nodes subscribe to, so that a publish is forwarded once to each
//!   node with a matching subscriber (the `Publish` stream, in order per publisher);
//! - readiness: a node is ready when every member is reachable (transport `Up`/`Down`, about
//!   a second to detect), with the counters `netsplit_detected` / `netsplit_resolved`.
//!
//! The broker does not know this module: it calls [`crate::broker::ClusterLink`], which
//! [`Cluster`] implements, and the HTTP layer sees it through [`ClusterView`].

mod leave;
pub(crate) mod membership;
mod metadata;
mod migration;
mod outbox;
mod registration;
mod remote;
mod router;
mod rpc;
pub mod transport;
pub mod view;
pub(crate) mod wire;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use vmq_storage::metadata::{MetaKey, MetaValue, NodeId, PREFIX_RETAIN, PREFIX_SUBSCRIBER};
use vmq_storage::{QueueKey, StoreError};

use self::membership::Membership;
use self::metadata::{Backend, Command, Driver, ExchangeBoard, JOIN_TIMEOUT, PendingWrites};
use self::outbox::Outboxes;
use self::remote::RemoteRoutes;
use self::transport::{SendError, Transport, TransportConfig, TransportError, TransportEvent};
use self::wire::{NodeSubscriptions, RetainValue, SubscriberValue, WireSubscription};
use crate::broker::message::Msg;
use crate::broker::queue::Durable;
use crate::broker::{Broker, ClusterLink, Forward, GrantFuture, RemoteMatches, SessionAnnounce};
use crate::storage::NodeStorage;
use view::{
    AdminFuture, ClusterListener, ClusterView, LeaveStatus, LeaveStatusFuture, MemberStatus, MetadataExchanges,
};
use vmq_config::{Config, ConfigError, MetadataPlugin};
use vmq_mqtt::QoS;

/// The default port of `listener.vmq.clustering` (VerneMQ's).
pub const DEFAULT_CLUSTER_PORT: u16 = 44053;

/// Why the cluster layer could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A clustering or metadata setting is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The cluster endpoint could not be bound.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The membership or the replica state could not be read.
    #[error("cannot load the cluster state: {0}")]
    Storage(#[from] StoreError),
}

/// The cluster as this node sees it; shared by the driver, the broker's link and HTTP.
pub(crate) struct Shared {
    me: NodeId,
    transport: Transport,
    /// The address peers dial this node at.
    addr: SocketAddr,
    /// Admin commands for the driver (join, leave, shutdown): few, from awaiting callers.
    commands: mpsc::Sender<Command>,
    /// Local metadata writes for the driver, coalesced per key: bounded by the number of keys
    /// (clients, retained topics), not by how fast clients change them.
    writes: PendingWrites,
    /// Durable outboxes of unreachable peers.
    outboxes: Outboxes,
    view: Mutex<View>,
    routes: RwLock<RemoteRoutes>,
    netsplit_detected: AtomicU64,
    netsplit_resolved: AtomicU64,
    /// Shared with the broker's handle, which reads it on every publish without upgrading
    /// its weak reference.
    ready: Arc<AtomicBool>,
    hlc: AtomicU64,
    /// Forwarded publishes that could not be handed to the transport (metric).
    forward_failed: AtomicU64,
    /// When a forward failure was last logged (ms since the epoch); logs are rate-limited.
    forward_failed_logged: AtomicU64,
    /// The metadata backend's anti-entropy figures, published by the driver.
    exchanges: ExchangeBoard,
    /// Requests to other nodes waiting for their answers.
    calls: rpc::Calls,
    /// Registration leader and session owners.
    registrar: registration::Registrar,
    /// The broker (weak: the broker holds the cluster's link).
    broker: std::sync::Weak<Broker>,
    /// This node's cluster leave, and what leaving nodes reported.
    leave: Mutex<leave::LeaveState>,
    /// Told when an operator has read the final status of this node's leave.
    final_status_read: tokio::sync::Notify,
    /// Set once this node has left the cluster and should stop.
    left: tokio::sync::watch::Sender<bool>,
    /// Itself, for the admin futures that outlive a call.
    this: std::sync::OnceLock<std::sync::Weak<Shared>>,
}

#[derive(Debug, Default)]
struct View {
    members: Vec<NodeId>,
    reachable: BTreeSet<NodeId>,
    // True between a member going down and every member being reachable again.
    split: bool,
}

impl Shared {
    fn view(&self) -> MutexGuard<'_, View> {
        // Sections leave the view consistent; a poisoned lock is still usable.
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_member(&self, node: &NodeId) -> bool {
        self.view().members.contains(node)
    }

    fn set_members(&self, members: Vec<NodeId>) {
        let mut view = self.view();
        view.members = members;
        self.update_readiness(&mut view, false);
    }

    /// Whether `peer` counts as reachable. On a ready node (every member reachable, the usual
    /// case) the view's lock is not taken, so forwarding a publish takes no lock for it; a node
    /// that is not a member has no link and its forward is refused by the transport anyway.
    fn peer_reachable(&self, peer: &NodeId) -> bool {
        self.ready.load(Ordering::Relaxed) || self.view().reachable.contains(peer)
    }

    fn set_reachable(&self, peer: &NodeId, up: bool) {
        if !up {
            self.outboxes.wake(peer);
            // Requests waiting for this peer's answer give up now.
            self.calls.peer_down(peer);
        }
        let mut view = self.view();
        if up {
            view.reachable.insert(peer.clone());
        } else {
            view.reachable.remove(peer);
        }
        let member = view.members.contains(peer);
        if member {
            info!(%peer, reachable = up, "cluster member reachability changed");
        }
        self.update_readiness(&mut view, member && !up);
    }

    fn update_readiness(&self, view: &mut View, member_went_down: bool) {
        let ready = view.members.iter().all(|m| *m == self.me || view.reachable.contains(m));
        let was_ready = self.ready.swap(ready, Ordering::Relaxed);
        if was_ready && !ready && member_went_down {
            view.split = true;
            self.netsplit_detected.fetch_add(1, Ordering::Relaxed);
            warn!("netsplit detected: a cluster member is unreachable");
        }
        if ready && view.split {
            view.split = false;
            self.netsplit_resolved.fetch_add(1, Ordering::Relaxed);
            info!("netsplit resolved: every cluster member is reachable");
        }
    }

    /// A hybrid logical timestamp (wall-clock milliseconds << 16, bumped to stay increasing)
    /// for last-writer-wins between concurrent values.
    fn timestamp(&self) -> u64 {
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0) << 16;
        let mut current = self.hlc.load(Ordering::Relaxed);
        loop {
            let next = wall.max(current + 1);
            match self.hlc.compare_exchange(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return next,
                Err(actual) => current = actual,
            }
        }
    }

    fn write(&self, key: MetaKey, value: Option<MetaValue>) {
        self.writes.put(key, value);
    }

    /// Counts a forward that could not be handed over, and logs it at most once a second.
    fn forward_failed(&self, peer: &NodeId, error: &SendError) {
        self.forward_failed.fetch_add(1, Ordering::Relaxed);
        let now = wire::unix_ms();
        let last = self.forward_failed_logged.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 1000
            && self.forward_failed_logged.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            warn!(%peer, %error, total = self.forward_failed.load(Ordering::Relaxed), "forwarded publish not sent");
        }
    }
}

/// The broker's handle on the cluster. It is weak so that the broker (which outlives the
/// node in tasks finishing their teardown) does not keep the cluster endpoint, and with it
/// the UDP port, alive after shutdown: a restarted node must be able to bind it again.
struct Link(std::sync::Weak<Shared>, Arc<AtomicBool>);

impl ClusterLink for Link {
    fn session_changed(&self, key: &QueueKey, epoch: u64, session: Option<SessionAnnounce>) {
        if let Some(shared) = self.0.upgrade() {
            shared.session_changed(key, epoch, session);
        }
    }

    fn coordinate(&self, key: &QueueKey, clean_start: bool) -> GrantFuture {
        let shared = self.0.upgrade();
        let key = key.clone();
        Box::pin(async move {
            match shared {
                Some(shared) => shared.coordinate(key, clean_start).await,
                None => Err("the node is shutting down".into()),
            }
        })
    }

    fn retained_changed(&self, msg: &Arc<Msg>) {
        if let Some(shared) = self.0.upgrade() {
            shared.retained_changed(msg);
        }
    }

    fn remote_matches(&self, mountpoint: &str, topic: &str) -> RemoteMatches {
        self.0.upgrade().map(|shared| shared.remote_matches(mountpoint, topic)).unwrap_or_default()
    }

    fn forward(&self, msg: &Arc<Msg>, forwards: Vec<Forward>) -> Vec<Durable> {
        match self.0.upgrade() {
            Some(shared) => shared.forward(msg, forwards),
            None if msg.qos == QoS::AtMostOnce => Vec::new(),
            None => vec![Durable::Failed("the node is shutting down".into())],
        }
    }

    fn is_ready(&self) -> bool {
        self.1.load(Ordering::Relaxed)
    }

    fn is_reachable(&self, node: &NodeId) -> bool {
        self.0.upgrade().is_some_and(|s| s.peer_reachable(node))
    }
}

impl Shared {
    fn broker(&self) -> Option<Arc<Broker>> {
        self.broker.upgrade()
    }

    fn session_changed(&self, key: &QueueKey, epoch: u64, session: Option<SessionAnnounce>) {
        let meta_key = MetaKey::new(PREFIX_SUBSCRIBER, wire::encode_key(&key.mountpoint, &key.client_id));
        // The newest registration owns the client: its node's entry replaces any other, and
        // the driver drops this write if a registration with a higher epoch is known.
        let value = session.map(|s| MetaValue {
            timestamp: self.timestamp(),
            data: wire::encode(&SubscriberValue::V2 {
                epoch,
                entries: vec![NodeSubscriptions {
                    node: self.me.clone(),
                    clean_session: s.clean_session,
                    subscriptions: s.subscriptions.into_iter().map(|(f, r)| WireSubscription::new(f, &r)).collect(),
                }],
            }),
        });
        self.writes.put_fenced(meta_key, value, epoch);
    }

    fn retained_changed(&self, msg: &Arc<Msg>) {
        let key = MetaKey::new(PREFIX_RETAIN, wire::encode_key(&msg.mountpoint, &msg.topic));
        // Written through at once (**beyond** VerneMQ's 1 s write-behind).
        let value = (!msg.payload.is_empty())
            .then(|| MetaValue { timestamp: self.timestamp(), data: wire::encode(&RetainValue::from_msg(msg)) });
        self.write(key, value);
    }

    fn remote_matches(&self, mountpoint: &str, topic: &str) -> RemoteMatches {
        self.routes.read().unwrap_or_else(|e| e.into_inner()).matches(mountpoint, topic)
    }

    fn forward(&self, msg: &Arc<Msg>, forwards: Vec<Forward>) -> Vec<Durable> {
        // QoS 0 may be dropped (counted) when the link's buffer is full; anything else is
        // acknowledged to its publisher only once the receiving node accepted it.
        let droppable = msg.qos == QoS::AtMostOnce;
        let mut tickets = Vec::new();
        let now = Instant::now();
        for f in forwards {
            let frame = wire::publish::encode(msg, f.plain, &f.shared, now);
            // To an unreachable peer a QoS 1/2 forward is secured in its durable outbox; one
            // that does not fit is refused rather than accepted and lost.
            let unreachable = !droppable && self.outboxes.enabled() && !self.peer_reachable(&f.node);
            if unreachable && !self.outboxes.has_room(&f.node, frame.len()) {
                self.forward_failed(
                    &f.node,
                    &SendError::BufferFull { peer: f.node.clone(), pending: frame.len(), limit: self.outboxes.limit() },
                );
                tickets.push(Durable::Failed(format!("the cluster outbox for {} is full", f.node)));
                continue;
            }
            let sent = self.transport.send_publish(&f.node, frame, droppable);
            if unreachable {
                self.outboxes.wake(&f.node);
            }
            match sent {
                Ok(ticket) if !droppable => tickets.push(Durable::Remote(ticket)),
                Ok(_) => {}
                // A route to a node this one does not keep a link to (it left the cluster):
                // there is nobody to deliver to.
                Err(e @ SendError::UnknownPeer(_)) => self.forward_failed(&f.node, &e),
                Err(e) => {
                    self.forward_failed(&f.node, &e);
                    if !droppable {
                        tickets.push(Durable::Failed(e.to_string()));
                    }
                }
            }
        }
        tickets
    }
}

impl ClusterView for Shared {
    fn members(&self) -> Vec<MemberStatus> {
        let view = self.view();
        view.members
            .iter()
            .map(|m| MemberStatus { node: m.0.clone(), running: *m == self.me || view.reachable.contains(m) })
            .collect()
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    fn listener(&self) -> Option<ClusterListener> {
        let addr = self.transport.local_addr().ok()?;
        Some(ClusterListener { addr, connections: self.transport.open_connections() })
    }

    fn join(&self, discovery_node: &str) -> AdminFuture {
        let commands = self.commands.clone();
        let discovery_node = discovery_node.to_string();
        Box::pin(async move {
            let (node, addr) = parse_discovery_node(&discovery_node).await?;
            let (reply, answer) = oneshot::channel();
            commands
                .send(Command::Join { node, addr, reply })
                .await
                .map_err(|_| "the cluster is shutting down".to_string())?;
            match tokio::time::timeout(JOIN_TIMEOUT * 2, answer).await {
                Ok(Ok(result)) => result,
                _ => Err("the join did not complete".into()),
            }
        })
    }

    fn leave(&self, node: &str, kill_sessions: bool, timeout: std::time::Duration) -> AdminFuture {
        let commands = self.commands.clone();
        let node = NodeId::new(node);
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            commands
                .send(Command::Leave { node, kill_sessions, timeout, reply })
                .await
                .map_err(|_| "the cluster is shutting down".to_string())?;
            answer.await.map_err(|_| "the cluster is shutting down".to_string())?
        })
    }

    fn leave_status(&self, node: &str) -> LeaveStatusFuture {
        let shared = self.this.get().and_then(std::sync::Weak::upgrade);
        let node = NodeId::new(node);
        Box::pin(async move {
            let shared = shared.ok_or("the cluster is shutting down")?;
            let p = shared.leave_status(&node).await?;
            Ok(LeaveStatus {
                phase: p.phase,
                queues_total: p.queues_total,
                queues_moved: p.queues_moved,
                messages_total: p.messages_total,
                messages_moved: p.messages_moved,
                done: p.done,
            })
        })
    }

    fn netsplit_counts(&self) -> (u64, u64) {
        (self.netsplit_detected.load(Ordering::Relaxed), self.netsplit_resolved.load(Ordering::Relaxed))
    }

    fn cluster_bytes(&self) -> (u64, u64, u64) {
        let total = self.transport.stats().total;
        (total.bytes_sent, total.bytes_received, total.bytes_dropped)
    }

    fn forward_failures(&self) -> u64 {
        self.forward_failed.load(Ordering::Relaxed)
    }

    fn metadata_exchanges(&self) -> MetadataExchanges {
        self.exchanges.snapshot()
    }
}

/// Parses `name@host[:port]` (VerneMQ's `discovery-node`; the port is the peer's
/// `listener.vmq.clustering`, default 44053) into the node name and its address.
async fn parse_discovery_node(text: &str) -> Result<(NodeId, SocketAddr), String> {
    let bad = || format!("'{text}' is not a node name: expected <name>@<host>[:<port>], e.g. vmq2@127.0.0.1:44053");
    let (name, host) = text.split_once('@').ok_or_else(bad)?;
    if name.is_empty() || host.is_empty() {
        return Err(bad());
    }
    if let Ok(addr) = host.parse::<SocketAddr>() {
        return Ok((NodeId::new(format!("{name}@{}", addr.ip())), addr));
    }
    let (hostname, port) = match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse::<u16>().map_err(|_| bad())?),
        _ => (host, DEFAULT_CLUSTER_PORT),
    };
    let hostname = hostname.trim_start_matches('[').trim_end_matches(']');
    let addr = tokio::net::lookup_host((hostname, port))
        .await
        .map_err(|e| format!("cannot resolve {hostname}: {e}"))?
        .next()
        .ok_or_else(|| format!("{hostname} resolves to no address"))?;
    Ok((NodeId::new(format!("{name}@{hostname}")), addr))
}

/// A running cluster layer. Started by `Node::start_with`; one per node.
pub struct Cluster {
    shared: Arc<Shared>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("node", &self.shared.me)
            .field("addr", &self.shared.addr)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Binds the cluster endpoint, loads the membership and the metadata replica from
    /// `storage`, rebuilds the remote routes and the retained store of `broker` from it,
    /// connects the broker's link and starts the driver task.
    pub async fn start(cfg: &Config, storage: &NodeStorage, broker: Arc<Broker>) -> Result<Cluster, ClusterError> {
        let transport_config = TransportConfig::from_config(cfg)?;
        let (transport, events) = bind_retrying(cfg, transport_config).await?;
        let me = transport.local_node().clone();
        let addr = advertised_addr(&me, transport.local_addr().unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0))));
        let membership = Membership::load(&*storage.store, &me, addr)?;
        let (commands, commands_rx) = mpsc::channel(COMMAND_QUEUE);
        let shared = Arc::new(Shared {
            me: me.clone(),
            transport,
            addr,
            commands,
            writes: PendingWrites::default(),
            outboxes: Outboxes::new(storage.messages.clone(), outbox_size(cfg)?),
            view: Mutex::new(View::default()),
            routes: RwLock::new(RemoteRoutes::default()),
            netsplit_detected: AtomicU64::new(0),
            netsplit_resolved: AtomicU64::new(0),
            ready: Arc::new(AtomicBool::new(true)),
            hlc: AtomicU64::new(0),
            forward_failed: AtomicU64::new(0),
            forward_failed_logged: AtomicU64::new(0),
            exchanges: ExchangeBoard::default(),
            calls: rpc::Calls::default(),
            registrar: registration::Registrar::new(
                cfg.netsplit.coordinate_registrations,
                drain_step(cfg)?,
                max_drain_time(cfg)?,
            ),
            broker: Arc::downgrade(&broker),
            leave: Mutex::new(leave::LeaveState::default()),
            final_status_read: tokio::sync::Notify::new(),
            left: tokio::sync::watch::channel(false).0,
            this: std::sync::OnceLock::new(),
        });
        let _ = shared.this.set(Arc::downgrade(&shared));
        // Readiness follows the failure detector at once, not behind the driver's backlog.
        let weak = Arc::downgrade(&shared);
        shared.transport.set_reachability_hook(move |peer, up| {
            if let Some(shared) = weak.upgrade() {
                shared.set_reachable(peer, up);
            }
        });
        shared.transport.set_publish_sink(Arc::new(router::Router::new(broker.clone())));
        shared.transport.set_rpc_sink(Arc::new(rpc::Dispatch(Arc::downgrade(&shared))));
        shared.outboxes.attach(&shared);
        let seed = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
            ^ u64::from(std::process::id()).rotate_left(32);
        let task = match cfg.metadata_plugin {
            MetadataPlugin::VmqSwc => {
                let mut config = vmq_swc::SwcConfig::default();
                for entry in cfg.delegated_entries("vmq_swc.") {
                    config
                        .set(&entry.key, &entry.value)
                        .map_err(|e| cfg.invalid_entry(entry, e, "see the vmq_swc settings in the documentation"))?;
                }
                let recovered = vmq_swc::load(&*storage.store)?;
                let replica = vmq_swc::Replica::new(config, me.clone(), seed, recovered);
                spawn_driver(replica, &shared, membership, storage, broker.clone(), events, commands_rx)
            }
            MetadataPlugin::VmqPlumtree => {
                let mut config = vmq_plumtree::PlumtreeConfig::default();
                for entry in cfg.delegated_entries("vmq_plumtree.") {
                    config.set(&entry.key, &entry.value).map_err(|e| {
                        cfg.invalid_entry(entry, e, "see the vmq_plumtree settings in the documentation")
                    })?;
                }
                let recovered = vmq_plumtree::load(&*storage.store)?;
                let replica = vmq_plumtree::Replica::new(config, me.clone(), seed, recovered);
                spawn_driver(replica, &shared, membership, storage, broker.clone(), events, commands_rx)
            }
        };
        // The links to the members exist now (the driver's recovery set them up).
        shared.outboxes.recover(&shared);
        broker.set_cluster(Arc::new(Link(Arc::downgrade(&shared), shared.ready.clone())));
        info!(node = %me, %addr, backend = ?cfg.metadata_plugin, "cluster layer started");
        Ok(Cluster { shared, task: Mutex::new(Some(task)) })
    }

    /// This node's name.
    pub fn node(&self) -> &NodeId {
        &self.shared.me
    }

    /// The address peers dial this node's cluster endpoint at.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// Every member with its reachability (`vmq-admin cluster show`).
    pub fn members(&self) -> Vec<MemberStatus> {
        self.shared.members()
    }

    /// True when every member is reachable.
    pub fn is_ready(&self) -> bool {
        self.shared.ready.load(Ordering::Relaxed)
    }

    /// Joins the cluster of `discovery_node` (`name@host[:port]`); only from a node with an
    /// empty history. The answer is the text to show the operator.
    pub async fn join(&self, discovery_node: &str) -> Result<String, String> {
        self.shared.join(discovery_node).await
    }

    /// Removes `node` from the cluster.
    pub async fn leave(&self, node: &str, kill_sessions: bool, timeout: std::time::Duration) -> Result<String, String> {
        self.shared.leave(node, kill_sessions, timeout).await
    }

    /// Resolves once this node has left the cluster (`cluster leave ... -k`): it should stop.
    pub async fn left(&self) {
        let mut rx = self.shared.left.subscribe();
        let _ = rx.wait_for(|left| *left).await;
    }

    /// `(netsplit_detected, netsplit_resolved)`.
    pub fn netsplit_counts(&self) -> (u64, u64) {
        self.shared.netsplit_counts()
    }

    /// Bytes to and from the other nodes: `(sent, received, dropped)`.
    pub fn cluster_bytes(&self) -> (u64, u64, u64) {
        self.shared.cluster_bytes()
    }

    /// Number of subscriptions held by other nodes that this node routes to.
    pub fn remote_subscription_count(&self) -> usize {
        self.shared.routes.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// The view the HTTP layer uses.
    pub fn view(&self) -> Arc<dyn ClusterView> {
        self.shared.clone()
    }

    /// Stops the driver after it has handled every command sent so far (e.g. the removal of
    /// the subscriptions of sessions that just ended), then closes the endpoint after
    /// flushing what is queued.
    pub async fn shutdown(&self) {
        let _ = self.shared.commands.send(Command::Shutdown).await;
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
        self.shared.transport.shutdown().await;
    }
}

fn spawn_driver<B: Backend>(
    mut replica: B,
    shared: &Arc<Shared>,
    membership: Membership,
    storage: &NodeStorage,
    broker: Arc<Broker>,
    events: mpsc::Receiver<TransportEvent>,
    commands: mpsc::Receiver<Command>,
) -> JoinHandle<()> {
    replica.subscribe(PREFIX_SUBSCRIBER, false);
    replica.subscribe(PREFIX_RETAIN, false);
    let mut driver = Driver {
        shared: shared.clone(),
        replica,
        membership,
        store: storage.store.clone(),
        broker,
        epoch: Instant::now(),
        dialed: BTreeSet::new(),
        pending_join: None,
    };
    driver.recover();
    tokio::spawn(driver.run(events, commands))
}

/// `outgoing_clustering_outbox_size` (bytes, `0` = no outbox).
fn outbox_size(cfg: &Config) -> Result<usize, ConfigError> {
    match cfg.delegated.iter().rev().find(|e| e.key == "outgoing_clustering_outbox_size") {
        None => Ok(outbox::DEFAULT_OUTBOX_SIZE),
        Some(entry) => vmq_config::parse_bytes(&entry.value)
            .map_err(|e| cfg.invalid_entry(entry, e.to_string(), "a size in bytes, e.g. 64MB, or 0 for no outbox")),
    }
}

/// `max_msgs_per_drain_step` (VerneMQ's default 1000).
fn drain_step(cfg: &Config) -> Result<usize, ConfigError> {
    match cfg.delegated.iter().rev().find(|e| e.key == "max_msgs_per_drain_step") {
        None => Ok(1000),
        Some(entry) => match entry.value.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(cfg.invalid_entry(
                entry,
                "not a positive integer".to_string(),
                "messages per drain step, e.g. 1000",
            )),
        },
    }
}

/// `max_drain_time` in milliseconds (VerneMQ's default 20000).
fn max_drain_time(cfg: &Config) -> Result<std::time::Duration, ConfigError> {
    match cfg.delegated.iter().rev().find(|e| e.key == "max_drain_time") {
        None => Ok(std::time::Duration::from_millis(20_000)),
        Some(entry) => match entry.value.trim().parse::<u64>() {
            Ok(ms) => Ok(std::time::Duration::from_millis(ms)),
            _ => Err(cfg.invalid_entry(entry, "not a number of milliseconds".to_string(), "milliseconds, e.g. 20000")),
        },
    }
}

/// Admin commands queued for the driver at most; senders wait for room.
const COMMAND_QUEUE: usize = 64;

/// How long a start waits for the cluster port to become free: the endpoint of a node that
/// just stopped in this process (or a supervisor's quick restart) releases its UDP socket
/// only once its closed connections have drained.
const BIND_RETRY: std::time::Duration = std::time::Duration::from_secs(3);

async fn bind_retrying(
    cfg: &Config,
    config: TransportConfig,
) -> Result<(Transport, mpsc::Receiver<TransportEvent>), TransportError> {
    let deadline = tokio::time::Instant::now() + BIND_RETRY;
    loop {
        match bind(cfg, config.clone()) {
            Err(TransportError::Bind { addr, source })
                if source.kind() == std::io::ErrorKind::AddrInUse && tokio::time::Instant::now() < deadline =>
            {
                debug!(%addr, "cluster address still in use; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

/// Binds the endpoint. When `listener.vmq.clustering` is not configured and its default
/// port is taken (another node on the same machine), a free port is used instead, with a
/// warning: an explicitly configured address that cannot be bound stays an error.
fn bind(cfg: &Config, config: TransportConfig) -> Result<(Transport, mpsc::Receiver<TransportEvent>), TransportError> {
    let explicit = cfg.delegated_entries("listener.vmq.clustering").next().is_some()
        || cfg.delegated_entries("listener.vmqs.clustering").next().is_some();
    match Transport::bind(config.clone()) {
        Err(TransportError::Bind { addr, source }) if !explicit => {
            let mut fallback = config;
            fallback.listen.set_port(0);
            warn!(%addr, error = %source, "default cluster address taken; binding a free port (set listener.vmq.clustering)");
            Transport::bind(fallback)
        }
        other => other,
    }
}

/// The address to announce: the bound one, with the host of the node name when bound to
/// the unspecified address (VerneMQ's node names carry the host peers reach it at).
fn advertised_addr(me: &NodeId, bound: SocketAddr) -> SocketAddr {
    if !bound.ip().is_unspecified() {
        return bound;
    }
    let host = me.0.split_once('@').map(|(_, h)| h).unwrap_or("127.0.0.1");
    let ip = host.parse().unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
    SocketAddr::new(ip, bound.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn discovery_node_names_parse_with_and_without_port() {
        let (node, addr) = parse_discovery_node("vmq2@127.0.0.1:44054").await.unwrap();
        assert_eq!((node.0.as_str(), addr), ("vmq2@127.0.0.1", "127.0.0.1:44054".parse().unwrap()));
        let (node, addr) = parse_discovery_node("vmq2@127.0.0.1").await.unwrap();
        assert_eq!((node.0.as_str(), addr.port()), ("vmq2@127.0.0.1", DEFAULT_CLUSTER_PORT));
        assert!(parse_discovery_node("vmq2").await.is_err());
        assert!(parse_discovery_node("@127.0.0.1").await.is_err());
    }

    #[test]
    fn unspecified_bind_announces_the_node_name_host() {
        let me = NodeId::new("vmq1@10.1.2.3");
        assert_eq!(advertised_addr(&me, "0.0.0.0:44053".parse().unwrap()), "10.1.2.3:44053".parse().unwrap());
        assert_eq!(advertised_addr(&me, "127.0.0.1:5".parse().unwrap()), "127.0.0.1:5".parse().unwrap());
    }
}
