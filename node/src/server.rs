//! A running node: binds the listeners, runs the session sweeper, shuts down gracefully.
//!
//! [`Node::start`] takes a validated [`Config`] and returns once every listener is bound
//! (tests use port 0 and read [`Node::local_addrs`]); [`Node::shutdown`] stops accepting,
//! disconnects clients (publishing their wills), waits for their tasks and flushes the store.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::info;

pub use crate::storage::NodeStorage;

use crate::authorize::Authorizer;
use crate::broker::queue::QueueLimits;
use crate::broker::{Broker, BrokerSettings, NetsplitAction};
use crate::cluster::Cluster;
use crate::file_auth::FileAuth;
use crate::http::{self, HttpState};
use crate::listener::{ConnectionContext, ListenerError, Listeners};
use vmq_config::{Config, ListenAddr};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// An MQTT listener could not be started.
    #[error(transparent)]
    Listener(#[from] ListenerError),
    /// The message store could not be opened.
    #[error("cannot open the message store: {0}")]
    Storage(#[from] vmq_storage::StoreError),
    /// A delegated configuration entry is invalid.
    #[error(transparent)]
    Config(#[from] vmq_config::ConfigError),
    /// An HTTP listener address could not be bound.
    #[error("cannot listen on {addr} (listener.http.{name}): {source}")]
    BindHttp {
        /// Listener name.
        name: String,
        /// Address.
        addr: SocketAddr,
        /// OS error.
        source: std::io::Error,
    },
    /// The cluster layer could not start.
    #[error("cannot start clustering: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
    /// The configuration has no MQTT listener.
    #[error("no MQTT listener configured (add e.g. listener.tcp.default = 127.0.0.1:1883)")]
    NoListener,
}

/// A started node.
pub struct Node {
    broker: Arc<Broker>,
    local_addrs: Vec<(String, SocketAddr)>,
    http_addrs: Vec<(String, SocketAddr)>,
    listeners: Arc<Listeners>,
    shutdown_tx: watch::Sender<bool>,
    tasks_rx: mpsc::Receiver<()>,
    storage: NodeStorage,
    cluster: Arc<Cluster>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("local_addrs", &self.local_addrs).finish_non_exhaustive()
    }
}

/// Broker settings from the configuration.
pub fn broker_settings(cfg: &Config) -> BrokerSettings {
    let m = &cfg.mqtt;
    BrokerSettings {
        queue: QueueLimits {
            max_online: m.max_online_messages,
            max_offline: m.max_offline_messages,
            override_max_online: m.override_max_online_messages,
            queue_type: m.queue_type,
        },
        upgrade_outgoing_qos: m.upgrade_outgoing_qos,
        shared_policy: m.shared_subscription_policy,
        persistent_client_expiration: m.persistent_client_expiration,
    }
}

/// How often offline sessions are checked for expiry.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

impl Node {
    /// Starts a node with in-memory storage.
    pub async fn start(cfg: &Config) -> Result<Node, StartError> {
        Self::start_with(cfg, NodeStorage::in_memory()?).await
    }

    /// Starts a node on `storage`.
    pub async fn start_with(cfg: &Config, storage: NodeStorage) -> Result<Node, StartError> {
        if cfg.listeners.is_empty() {
            return Err(StartError::NoListener);
        }
        let broker = Broker::with_records(broker_settings(cfg), storage.messages.clone(), Some(storage.store.clone()));
        let n = &cfg.netsplit;
        for (action, allow) in [
            (NetsplitAction::Register, n.allow_register),
            (NetsplitAction::Publish, n.allow_publish),
            (NetsplitAction::Subscribe, n.allow_subscribe),
            (NetsplitAction::Unsubscribe, n.allow_unsubscribe),
        ] {
            broker.netsplit.set(action, allow);
        }
        // Before the listeners: the routing table is rebuilt from the replica first.
        let cluster = Arc::new(Cluster::start(cfg, &storage, broker.clone()).await?);
        let authorizer = FileAuth::start(&cfg.auth_files).map(|a| a as Arc<dyn Authorizer>);
        let ctx = Arc::new(ConnectionContext { broker: broker.clone(), mqtt: Arc::new(cfg.mqtt.clone()), authorizer });
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (tasks_tx, tasks_rx) = mpsc::channel(1);
        let listeners = Arc::new(Listeners::new(ctx, tasks_tx.clone()));
        // Every listener is bound before any accepts, so that a node that cannot start has
        // accepted no client.
        let mut bound = Vec::new();
        for l in &cfg.listeners {
            bound.push(Listeners::bind(l.clone()).await?);
        }
        let mut local_addrs = Vec::new();
        for b in bound {
            if let ListenAddr::Inet(addr) = b.local_addr() {
                local_addrs.push((b.spec().name.clone(), *addr));
            }
            listeners.start_bound(b)?;
        }
        let http_state = Arc::new(HttpState {
            broker: broker.clone(),
            nodename: cfg.nodename.clone(),
            cluster: cluster.view(),
            listeners: listeners.clone(),
            api_keys: Vec::new(),
            systree: watch::channel(crate::systree::Schedule::from(&cfg.systree)).0,
        });
        let mut http_addrs = Vec::new();
        for l in vmq_config::http::http_listeners(cfg)? {
            let socket = TcpListener::bind(l.addr).await.map_err(|source| StartError::BindHttp {
                name: l.name.clone(),
                addr: l.addr,
                source,
            })?;
            http_addrs.push((l.name.clone(), socket.local_addr().unwrap_or(l.addr)));
            tokio::spawn(http::serve(socket, l.name, http_state.clone(), shutdown_rx.clone()));
        }
        tokio::spawn(crate::systree::run(http_state.clone(), cfg.systree.clone(), shutdown_rx.clone()));
        tokio::spawn(sweep_sessions(broker.clone(), shutdown_rx, tasks_tx));
        Ok(Node { broker, local_addrs, http_addrs, listeners, shutdown_tx, tasks_rx, storage, cluster })
    }

    /// The bound address of every IP listener started with the node, by name (Unix socket
    /// listeners are in [`Node::listeners`]).
    pub fn local_addrs(&self) -> &[(String, SocketAddr)] {
        &self.local_addrs
    }

    /// The MQTT listeners, to list, start and stop them while the node runs.
    pub fn listeners(&self) -> &Arc<Listeners> {
        &self.listeners
    }

    /// The bound address of every HTTP listener, by name.
    pub fn http_addrs(&self) -> &[(String, SocketAddr)] {
        &self.http_addrs
    }

    /// The first listener's address.
    pub fn mqtt_addr(&self) -> SocketAddr {
        self.local_addrs.first().map(|(_, a)| *a).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// The node's storage.
    pub fn storage(&self) -> &NodeStorage {
        &self.storage
    }

    /// The cluster layer.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// The address of the cluster endpoint (`listener.vmq.clustering`, as peers dial it).
    pub fn cluster_addr(&self) -> SocketAddr {
        self.cluster.addr()
    }

    /// The broker state.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Stops accepting, disconnects every client (publishing wills as MQTT requires), waits
    /// for all connection tasks, then flushes the message store.
    pub async fn shutdown(mut self) {
        info!("shutting down");
        self.listeners.shutdown();
        let _ = self.shutdown_tx.send(true);
        // Every listener and connection task holds a sender; `recv` returns `None` once all
        // have finished (the registry let go of its own in `shutdown`).
        while self.tasks_rx.recv().await.is_some() {}
        // After the sessions: the removal of their clean-session subscriptions goes out first.
        self.cluster.shutdown().await;
        drop(self.storage);
        info!("stopped");
    }
}

/// Ends expired offline sessions and publishes delayed wills when they are due.
async fn sweep_sessions(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>, _tasks: mpsc::Sender<()>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        let will_due = broker.next_will_due().map(tokio::time::Instant::from_std);
        tokio::select! {
            _ = tick.tick() => {
                let n = broker.expire_sessions(Instant::now());
                if n > 0 {
                    info!(sessions = n, "expired offline sessions");
                }
            }
            () = tokio::time::sleep_until(will_due.unwrap_or_else(tokio::time::Instant::now)), if will_due.is_some() => {
                broker.publish_due_wills(tokio::time::Instant::now().into_std());
            }
            // An earlier will was scheduled: sleep until it instead.
            () = broker.will_scheduled() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
}
