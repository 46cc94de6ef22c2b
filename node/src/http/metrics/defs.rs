//! Every metric the node exports, in one table: VerneMQ's name, its Prometheus type, its help
//! text and the labels it carries beside `node`. A new metric is added here and read in
//! [`super::NodeCollector`]; the `prometheus` crate does the naming checks, the escaping and
//! the text format.

use prometheus::proto::MetricType;

/// One exported metric.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Def {
    /// VerneMQ's name, with no `_total` suffix (dashboards use these names as they are). For
    /// the anti-entropy series it follows the backend's prefix (`swc_`, `plumtree_`).
    pub(crate) name: &'static str,
    /// Counter or gauge.
    pub(crate) kind: MetricType,
    /// The `# HELP` text.
    pub(crate) help: &'static str,
    /// Label names besides `node`, which every sample has.
    pub(crate) labels: &'static [&'static str],
}

const fn counter(name: &'static str, help: &'static str) -> Def {
    Def { name, kind: MetricType::COUNTER, help, labels: &[] }
}

const fn gauge(name: &'static str, help: &'static str) -> Def {
    Def { name, kind: MetricType::GAUGE, help, labels: &[] }
}

pub(crate) const MQTT_PUBLISH_RECEIVED: Def =
    counter("mqtt_publish_received", "PUBLISH packets received from clients.");
pub(crate) const ROUTER_MATCHES_LOCAL: Def =
    counter("router_matches_local", "Messages routed to local subscriber queues.");
pub(crate) const ROUTER_MATCHES_NONE: Def =
    counter("router_matches_none", "Published messages that matched no subscriber.");
pub(crate) const QUEUE_MESSAGE_DROP: Def =
    counter("queue_message_drop", "Messages dropped by full queues or offline QoS 0.");
pub(crate) const QUEUE_SESSION_EXPIRED: Def = counter("queue_session_expired", "Sessions removed after their expiry.");
pub(crate) const SOCKET_OPEN: Def = counter("socket_open", "Client connections accepted.");
pub(crate) const SOCKET_CLOSE: Def = counter("socket_close", "Client connections closed.");
pub(crate) const MQTT_RATE_LIMITED: Def =
    counter("mqtt_rate_limited", "Times a connection paused reading for max_message_rate.");
pub(crate) const QUEUE_PROCESSES: Def = gauge("queue_processes", "Sessions (connected or offline).");
pub(crate) const ROUTER_SUBSCRIPTIONS: Def = gauge("router_subscriptions", "Subscriptions in the routing table.");
pub(crate) const NETSPLIT_DETECTED: Def = counter("netsplit_detected", "Times a cluster member became unreachable.");
pub(crate) const NETSPLIT_RESOLVED: Def =
    counter("netsplit_resolved", "Times every cluster member became reachable again.");
pub(crate) const CLUSTER_BYTES_SENT: Def = counter("cluster_bytes_sent", "Bytes sent to other cluster nodes.");
pub(crate) const CLUSTER_BYTES_RECEIVED: Def =
    counter("cluster_bytes_received", "Bytes received from other cluster nodes.");
pub(crate) const CLUSTER_BYTES_DROPPED: Def =
    counter("cluster_bytes_dropped", "Bytes dropped because a node's outgoing cluster buffer was full.");
pub(crate) const RETAIN_MESSAGES: Def = gauge("retain_messages", "Retained messages.");
pub(crate) const CLUSTER_FORWARD_FAILED: Def =
    counter("cluster_forward_failed", "Forwarded publishes that could not be handed to the link of their node.");
/// One series per request kind, in the order of [`NETSPLIT_REQUESTS`].
pub(crate) const NETSPLIT_REFUSED: Def = Def {
    name: "netsplit_refused",
    kind: MetricType::COUNTER,
    help: "Requests refused while a cluster member was unreachable (allow_*_during_netsplit off).",
    labels: &["request"],
};
/// The `request` label values of [`NETSPLIT_REFUSED`], indexed as `Counters::netsplit_refused`.
pub(crate) const NETSPLIT_REQUESTS: [&str; 4] = ["connect", "publish", "subscribe", "unsubscribe"];

/// The node-wide metrics, each with one sample labelled `node` only.
pub(crate) const NODE: &[Def] = &[
    MQTT_PUBLISH_RECEIVED,
    ROUTER_MATCHES_LOCAL,
    ROUTER_MATCHES_NONE,
    QUEUE_MESSAGE_DROP,
    QUEUE_SESSION_EXPIRED,
    SOCKET_OPEN,
    SOCKET_CLOSE,
    MQTT_RATE_LIMITED,
    QUEUE_PROCESSES,
    ROUTER_SUBSCRIPTIONS,
    NETSPLIT_DETECTED,
    NETSPLIT_RESOLVED,
    CLUSTER_BYTES_SENT,
    CLUSTER_BYTES_RECEIVED,
    CLUSTER_BYTES_DROPPED,
    RETAIN_MESSAGES,
    CLUSTER_FORWARD_FAILED,
];

// Anti-entropy per peer, labelled `peer`. VerneMQ exports no per-peer exchange metrics, so the
// names are new, under its backend prefixes: `swc_exchange_completed`, ...

pub(crate) const EXCHANGE_COMPLETED: Def = Def {
    name: "exchange_completed",
    kind: MetricType::COUNTER,
    help: "Anti-entropy exchanges this node started with the peer that completed.",
    labels: &["peer"],
};
/// Absent for a peer with no completed exchange yet.
pub(crate) const EXCHANGE_LAST_COMPLETED_SECONDS: Def = Def {
    name: "exchange_last_completed_seconds",
    kind: MetricType::GAUGE,
    help: "Unix time of the last completed anti-entropy exchange with the peer.",
    labels: &["peer"],
};
pub(crate) const EXCHANGE_KEYS_REPAIRED: Def = Def {
    name: "exchange_keys_repaired",
    kind: MetricType::COUNTER,
    help: "Keys that anti-entropy exchanges with the peer changed on this node.",
    labels: &["peer"],
};

/// The per-peer series, named `<backend>_<name>`.
pub(crate) const EXCHANGE: [Def; 3] = [EXCHANGE_COMPLETED, EXCHANGE_LAST_COMPLETED_SECONDS, EXCHANGE_KEYS_REPAIRED];
/// The metadata backends' metric prefixes, as `MetadataExchanges::backend` names them.
pub(crate) const BACKENDS: [&str; 2] = ["swc", "plumtree"];
