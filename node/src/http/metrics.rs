//! `/metrics` in the Prometheus text exposition format, with VerneMQ's metric names.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use super::{HttpState, MetadataExchanges, PeerExchange};

pub(super) async fn prometheus(State(s): State<Arc<HttpState>>) -> impl IntoResponse {
    let c = &s.broker.counters;
    let node = &s.nodename;
    let mut out = String::with_capacity(2048);
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{{node=\"{node}\"}} {value}");
    };
    metric("mqtt_publish_received", "counter", "PUBLISH packets received from clients.", c.publish_received.load(Ordering::Relaxed));
    metric("router_matches_local", "counter", "Messages routed to local subscriber queues.", c.messages_routed.load(Ordering::Relaxed));
    metric("router_matches_none", "counter", "Published messages that matched no subscriber.", c.router_matches_none.load(Ordering::Relaxed));
    metric("queue_message_drop", "counter", "Messages dropped by full queues or offline QoS 0.", c.queue_message_drop.load(Ordering::Relaxed));
    metric("queue_session_expired", "counter", "Sessions removed after their expiry.", c.sessions_expired.load(Ordering::Relaxed));
    metric("socket_open", "counter", "Client connections accepted.", c.socket_open.load(Ordering::Relaxed));
    metric("socket_close", "counter", "Client connections closed.", c.socket_close.load(Ordering::Relaxed));
    metric("mqtt_rate_limited", "counter", "Times a connection paused reading for max_message_rate.", c.rate_limited.load(Ordering::Relaxed));
    metric("queue_processes", "gauge", "Sessions (connected or offline).", s.broker.session_count() as u64);
    metric("router_subscriptions", "gauge", "Subscriptions in the routing table.", s.broker.subscription_count() as u64);
    let (detected, resolved) = s.cluster.netsplit_counts();
    metric("netsplit_detected", "counter", "Times a cluster member became unreachable.", detected);
    metric("netsplit_resolved", "counter", "Times every cluster member became reachable again.", resolved);
    let (sent, received, dropped) = s.cluster.cluster_bytes();
    metric("cluster_bytes_sent", "counter", "Bytes sent to other cluster nodes.", sent);
    metric("cluster_bytes_received", "counter", "Bytes received from other cluster nodes.", received);
    metric("cluster_bytes_dropped", "counter", "Bytes dropped because a node's outgoing cluster buffer was full.", dropped);
    metric("retain_messages", "gauge", "Retained messages.", s.broker.retained_count() as u64);
    metric(
        "cluster_forward_failed",
        "counter",
        "Forwarded publishes that could not be handed to the link of their node.",
        s.cluster.forward_failures(),
    );
    let _ = writeln!(
        out,
        "# HELP netsplit_refused Requests refused while a cluster member was unreachable (allow_*_during_netsplit off).\n# TYPE netsplit_refused counter"
    );
    for (i, request) in ["connect", "publish", "subscribe", "unsubscribe"].into_iter().enumerate() {
        let value = c.netsplit_refused[i].load(Ordering::Relaxed);
        let _ = writeln!(out, "netsplit_refused{{node=\"{node}\",request=\"{request}\"}} {value}");
    }
    render_exchanges(&mut out, node, &s.cluster.metadata_exchanges());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

/// Anti-entropy per peer, labelled `peer`. VerneMQ exports no per-peer exchange metrics, so
/// the names are new, under its backend prefixes (`swc_`, `plumtree_`).
fn render_exchanges(out: &mut String, node: &str, m: &MetadataExchanges) {
    if m.backend.is_empty() || m.peers.is_empty() {
        return;
    }
    let b = m.backend;
    let series: [(&str, &str, &str, &dyn Fn(&PeerExchange) -> Option<String>); 3] = [
        (
            "exchange_completed",
            "counter",
            "Anti-entropy exchanges this node started with the peer that completed.",
            &|p| Some(p.completed.to_string()),
        ),
        (
            "exchange_last_completed_seconds",
            "gauge",
            "Unix time of the last completed anti-entropy exchange with the peer.",
            &|p| p.last_completed_unix.map(|t| format!("{t:.3}")),
        ),
        (
            "exchange_keys_repaired",
            "counter",
            "Keys that anti-entropy exchanges with the peer changed on this node.",
            &|p| Some(p.keys_repaired.to_string()),
        ),
    ];
    for (name, kind, help, value) in series {
        // Writing to a String cannot fail.
        let _ = writeln!(out, "# HELP {b}_{name} {help}\n# TYPE {b}_{name} {kind}");
        for p in &m.peers {
            if let Some(v) = value(p) {
                let _ = writeln!(out, "{b}_{name}{{node=\"{node}\",peer=\"{}\"}} {v}", p.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exchanges_render_per_peer_with_the_backend_prefix() {
        let m = MetadataExchanges {
            backend: "swc",
            peers: vec![
                PeerExchange { peer: "b@h".into(), completed: 10, last_completed_unix: Some(1.5), keys_repaired: 3 },
                PeerExchange { peer: "c@h".into(), completed: 0, last_completed_unix: None, keys_repaired: 0 },
            ],
        };
        let mut out = String::new();
        render_exchanges(&mut out, "a@h", &m);
        assert!(out.contains("# TYPE swc_exchange_completed counter\n"), "{out}");
        assert!(out.contains("swc_exchange_completed{node=\"a@h\",peer=\"b@h\"} 10\n"), "{out}");
        assert!(out.contains("swc_exchange_last_completed_seconds{node=\"a@h\",peer=\"b@h\"} 1.500\n"), "{out}");
        assert!(!out.contains("swc_exchange_last_completed_seconds{node=\"a@h\",peer=\"c@h\"}"), "{out}");
        assert!(out.contains("swc_exchange_keys_repaired{node=\"a@h\",peer=\"c@h\"} 0\n"), "{out}");
        let mut none = String::new();
        render_exchanges(&mut none, "a@h", &MetadataExchanges::default());
        assert!(none.is_empty());
    }
}
