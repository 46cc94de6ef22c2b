//! What the rest of the node (the HTTP API, `/metrics`, health checks) may know of the
//! cluster: members and their reachability, admin operations, and the figures the metrics
//! show. The cluster implements [`ClusterView`]; a node started alone is a cluster of one.

/// A cluster member as the admin path shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    /// The member's node name.
    pub node: String,
    /// True when it is reachable (VerneMQ's `Running`).
    pub running: bool,
}

/// The cluster endpoint (`listener.vmq.clustering`) as `vmq-admin listener show` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterListener {
    /// The address it is bound to.
    pub addr: std::net::SocketAddr,
    /// Connections with other nodes open on it now.
    pub connections: usize,
}

/// Anti-entropy of the metadata backend with one peer, for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PeerExchange {
    /// The peer's node name.
    pub peer: String,
    /// Exchanges started by this node with the peer that completed (swc: one per group).
    pub completed: u64,
    /// When the last of them completed, in seconds since the Unix epoch.
    pub last_completed_unix: Option<f64>,
    /// Keys an exchange with the peer changed on this node.
    pub keys_repaired: u64,
}

/// The metadata backend's anti-entropy as the metrics show it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetadataExchanges {
    /// The metric name prefix of the backend: `swc` or `plumtree` (VerneMQ's `swc_*` names).
    pub backend: &'static str,
    /// Per peer, in node-name order.
    pub peers: Vec<PeerExchange>,
}

/// The answer to an admin command that needs the cluster: the text to show, or why it was
/// refused.
pub type AdminFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send>>;

/// Where the leave of a node stands (`vmq-admin cluster leave ... -k` prints it as it goes).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LeaveStatus {
    /// What the node is doing now.
    pub phase: String,
    /// Offline queues it had to move when the timeout came.
    pub queues_total: u64,
    /// How many of them have moved.
    pub queues_moved: u64,
    /// Messages in those queues.
    pub messages_total: u64,
    /// How many of them have moved.
    pub messages_moved: u64,
    /// The node has left the cluster.
    pub done: bool,
}

/// The answer to `cluster leave-status`.
pub type LeaveStatusFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<LeaveStatus, String>> + Send>>;

/// What the HTTP layer needs to know of the cluster. A single node is its own cluster.
pub trait ClusterView: Send + Sync + 'static {
    /// Every member with its reachability.
    fn members(&self) -> Vec<MemberStatus>;
    /// The cluster endpoint; `None` when there is none to show.
    fn listener(&self) -> Option<ClusterListener> {
        None
    }
    /// True when every member is reachable.
    fn is_ready(&self) -> bool {
        self.members().iter().all(|m| m.running)
    }
    /// `vmq-admin cluster join discovery-node=<name>@<host>[:<port>]`.
    fn join(&self, _discovery_node: &str) -> AdminFuture {
        Box::pin(async { Err("clustering is not enabled on this node".to_string()) })
    }
    /// `vmq-admin cluster leave node=<name> [-k] [-t <seconds>]`.
    fn leave(&self, _node: &str, _kill_sessions: bool, _timeout: std::time::Duration) -> AdminFuture {
        Box::pin(async { Err("clustering is not enabled on this node".to_string()) })
    }
    /// How far the leave of `node` is.
    fn leave_status(&self, _node: &str) -> LeaveStatusFuture {
        Box::pin(async { Err("clustering is not enabled on this node".to_string()) })
    }
    /// `(netsplit_detected, netsplit_resolved)`.
    fn netsplit_counts(&self) -> (u64, u64) {
        (0, 0)
    }
    /// Bytes between this node and the others: `(sent, received, dropped)`; dropped counts
    /// frames refused by a full outgoing buffer (`outgoing_clustering_buffer_size`).
    fn cluster_bytes(&self) -> (u64, u64, u64) {
        (0, 0, 0)
    }
    /// Forwarded publishes that could not be handed to the link of their node.
    fn forward_failures(&self) -> u64 {
        0
    }
    /// The metadata backend's anti-entropy per peer.
    fn metadata_exchanges(&self) -> MetadataExchanges {
        MetadataExchanges::default()
    }
}
