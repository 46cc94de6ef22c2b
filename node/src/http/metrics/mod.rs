//! `/metrics` in the Prometheus text exposition format, with VerneMQ's metric names.
//!
//! What is exported is listed once, in [`defs`]. The per-message counters stay plain atomics
//! that the hot path bumps (`broker::Counters`); [`NodeCollector`] reads them, and the cluster's
//! figures, only when `/metrics` is scraped, and hands them to a `prometheus` registry whose
//! `TextEncoder` writes the exposition (names checked, label values escaped).

mod defs;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Registry, TEXT_FORMAT, TextEncoder};

use self::defs::Def;
use super::HttpState;
use crate::cluster::view::MetadataExchanges;

/// The registry behind one HTTP listener's `/metrics`.
pub(super) struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// A registry holding the node's collector.
    pub(super) fn new(state: Arc<HttpState>) -> Metrics {
        let registry = Registry::new();
        // The definitions are constants whose names a unit test registers
        // (`every_definition_registers`), and label values (the node name) are not validated:
        // registering cannot fail on anything read from the configuration or the network.
        let descs = descs(&state.nodename).expect("metric definitions are valid");
        registry.register(Box::new(NodeCollector { state, descs })).expect("one collector, registered once");
        Metrics { registry }
    }
}

/// `vmq-admin metrics show`: one `<type>.<name> = <value>` line per series, VerneMQ's format,
/// a labelled series with its labels (`counter.netsplit_refused{request="publish"} = 0`); with
/// `describe`, each metric's help above it. Only series carrying every one of `labels` (name,
/// value) are shown.
pub(super) fn show(state: Arc<HttpState>, describe: bool, labels: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for family in Metrics::new(state).registry.gather() {
        let kind = if family.get_field_type() == MetricType::GAUGE { "gauge" } else { "counter" };
        for metric in family.get_metric() {
            let own: Vec<(&str, &str)> =
                metric.get_label().iter().filter(|l| l.name() != "node").map(|l| (l.name(), l.value())).collect();
            if !labels.iter().all(|wanted| own.contains(wanted)) {
                continue;
            }
            let value = if kind == "gauge" { metric.get_gauge().get_value() } else { metric.get_counter().get_value() };
            if describe {
                out.push_str(&format!("# {}\n", family.help()));
            }
            out.push_str(&format!("{kind}.{}", family.name()));
            if !own.is_empty() {
                let pairs: Vec<String> = own.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
                out.push_str(&format!("{{{}}}", pairs.join(",")));
            }
            // Counts print as integers, as VerneMQ's do.
            if value.fract() == 0.0 && value.abs() < 1e15 {
                out.push_str(&format!(" = {}\n", value as i64));
            } else {
                out.push_str(&format!(" = {value}\n"));
            }
            if describe {
                out.push('\n');
            }
        }
    }
    // The CLI ends the text with its own newline.
    out.truncate(out.trim_end().len());
    out
}

/// `GET /metrics`.
pub(super) async fn prometheus(State(m): State<Arc<Metrics>>) -> Response {
    let mut out = String::with_capacity(4096);
    match TextEncoder::new().encode_utf8(&m.registry.gather(), &mut out) {
        Ok(()) => ([(header::CONTENT_TYPE, TEXT_FORMAT)], out).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "metrics could not be encoded");
            (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
        }
    }
}

/// The descriptors of every metric the collector may export, labelled with this node's name.
/// The per-peer series are described under each backend's prefix; a node exports one of them.
fn descs(node: &str) -> prometheus::Result<Vec<Desc>> {
    let desc = |name: String, def: &Def| {
        let labels = def.labels.iter().map(|l| l.to_string()).collect();
        Desc::new(name, def.help.to_string(), labels, HashMap::from([("node".to_string(), node.to_string())]))
    };
    let node_wide = defs::NODE.iter().chain([&defs::NETSPLIT_REFUSED]).map(|def| desc(def.name.to_string(), def));
    let per_peer = defs::BACKENDS
        .iter()
        .flat_map(|b| defs::EXCHANGE.iter().map(move |def| (format!("{b}_{}", def.name), def)))
        .map(|(name, def)| desc(name, def));
    node_wide.chain(per_peer).collect()
}

/// Reads the node's figures at scrape time.
struct NodeCollector {
    state: Arc<HttpState>,
    descs: Vec<Desc>,
}

impl Collector for NodeCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        use defs::*;
        let s = &self.state;
        let c = &s.broker.counters;
        let node = s.nodename.as_str();
        let values = node_figures(s);
        let mut families: Vec<MetricFamily> =
            values.iter().map(|(def, v)| family(def.name.to_string(), def, node, [(NO_LABELS, *v as f64)])).collect();
        let refused = NETSPLIT_REQUESTS
            .iter()
            .zip(&c.netsplit_refused)
            .map(|(request, v)| (std::slice::from_ref(request), load(v) as f64));
        families.push(family(NETSPLIT_REFUSED.name.to_string(), &NETSPLIT_REFUSED, node, refused));
        families.extend(exchange_families(node, &s.cluster.metadata_exchanges()));
        families
    }
}

/// The node-wide figures, read now: every series `/metrics` exports with no label but `node`,
/// which is also what the `$SYS` tree publishes.
pub(crate) fn node_figures(s: &HttpState) -> [(Def, u64); defs::NODE.len()] {
    use defs::*;
    let c = &s.broker.counters;
    let (detected, resolved) = s.cluster.netsplit_counts();
    let (sent, received, dropped) = s.cluster.cluster_bytes();
    [
        (MQTT_PUBLISH_RECEIVED, load(&c.publish_received)),
        (ROUTER_MATCHES_LOCAL, load(&c.messages_routed)),
        (ROUTER_MATCHES_NONE, load(&c.router_matches_none)),
        (QUEUE_MESSAGE_DROP, load(&c.queue_message_drop)),
        (QUEUE_SESSION_EXPIRED, load(&c.sessions_expired)),
        (SOCKET_OPEN, load(&c.socket_open)),
        (SOCKET_CLOSE, load(&c.socket_close)),
        (MQTT_RATE_LIMITED, load(&c.rate_limited)),
        (QUEUE_PROCESSES, s.broker.session_count() as u64),
        (ROUTER_SUBSCRIPTIONS, s.broker.subscription_count() as u64),
        (NETSPLIT_DETECTED, detected),
        (NETSPLIT_RESOLVED, resolved),
        (CLUSTER_BYTES_SENT, sent),
        (CLUSTER_BYTES_RECEIVED, received),
        (CLUSTER_BYTES_DROPPED, dropped),
        (RETAIN_MESSAGES, s.broker.retained_count() as u64),
        (CLUSTER_FORWARD_FAILED, s.cluster.forward_failures()),
    ]
}

/// The label values of a sample labelled `node` only.
const NO_LABELS: &[&str] = &[];

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// The per-peer anti-entropy series of the node's backend. Empty families are left out of the
/// exposition by the registry.
fn exchange_families(node: &str, m: &MetadataExchanges) -> Vec<MetricFamily> {
    if m.backend.is_empty() {
        return Vec::new();
    }
    let [completed, last, repaired] = &defs::EXCHANGE;
    let name = |def: &Def| format!("{}_{}", m.backend, def.name);
    let peers = || m.peers.iter().map(|p| (std::slice::from_ref(&p.peer), p));
    vec![
        family(name(completed), completed, node, peers().map(|(l, p)| (l, p.completed as f64))),
        family(
            name(last),
            last,
            node,
            // Whole milliseconds, as the replica's clock has them.
            peers().filter_map(|(l, p)| p.last_completed_unix.map(|t| (l, (t * 1000.0).round() / 1000.0))),
        ),
        family(name(repaired), repaired, node, peers().map(|(l, p)| (l, p.keys_repaired as f64))),
    ]
}

/// A family of `def`'s type named `name`, one sample per `(label values, value)`; the label
/// values follow `def.labels`, after `node`.
fn family<'a, S: AsRef<str> + 'a>(
    name: String,
    def: &Def,
    node: &str,
    samples: impl IntoIterator<Item = (&'a [S], f64)>,
) -> MetricFamily {
    let metrics = samples
        .into_iter()
        .map(|(values, value)| {
            let mut labels = vec![label("node", node)];
            labels.extend(def.labels.iter().zip(values).map(|(name, value)| label(name, value.as_ref())));
            let mut metric = Metric::default();
            metric.set_label(labels);
            if def.kind == MetricType::GAUGE {
                let mut g = Gauge::default();
                g.set_value(value);
                metric.set_gauge(g);
            } else {
                let mut c = Counter::default();
                c.set_value(value);
                metric.set_counter(c);
            }
            metric
        })
        .collect();
    let mut family = MetricFamily::default();
    family.set_name(name);
    family.set_help(def.help.to_string());
    family.set_field_type(def.kind);
    family.set_metric(metrics);
    family
}

fn label(name: &str, value: &str) -> LabelPair {
    let mut pair = LabelPair::default();
    pair.set_name(name.to_string());
    pair.set_value(value.to_string());
    pair
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::view::PeerExchange;

    /// A registry exporting `families` as they are.
    struct Fixed(Vec<Desc>, Vec<MetricFamily>);

    impl Collector for Fixed {
        fn desc(&self) -> Vec<&Desc> {
            self.0.iter().collect()
        }
        fn collect(&self) -> Vec<MetricFamily> {
            self.1.clone()
        }
    }

    fn exposition(node: &str, families: Vec<MetricFamily>) -> String {
        let registry = Registry::new();
        registry.register(Box::new(Fixed(descs(node).expect("valid definitions"), families))).expect("registered");
        TextEncoder::new().encode_to_string(&registry.gather()).expect("encoded")
    }

    #[test]
    fn every_definition_registers() {
        let descs = descs("vmq1@127.0.0.1").expect("valid definitions");
        assert_eq!(descs.len(), defs::NODE.len() + 1 + defs::BACKENDS.len() * defs::EXCHANGE.len());
        let registry = Registry::new();
        registry.register(Box::new(Fixed(descs, Vec::new()))).expect("no name registered twice");
    }

    #[test]
    fn node_wide_metrics_keep_vernemq_names_types_and_the_node_label() {
        let out = exposition(
            "a@h",
            vec![
                family("socket_open".into(), &defs::SOCKET_OPEN, "a@h", [(NO_LABELS, 7.0)]),
                family("queue_processes".into(), &defs::QUEUE_PROCESSES, "a@h", [(NO_LABELS, 2.0)]),
                family(
                    "netsplit_refused".into(),
                    &defs::NETSPLIT_REFUSED,
                    "a@h",
                    defs::NETSPLIT_REQUESTS.iter().map(|r| (std::slice::from_ref(r), 1.0)),
                ),
            ],
        );
        let socket_open = "# HELP socket_open Client connections accepted.\n\
                           # TYPE socket_open counter\n\
                           socket_open{node=\"a@h\"} 7\n";
        assert!(out.contains(socket_open), "{out}");
        assert!(out.contains("# TYPE queue_processes gauge\nqueue_processes{node=\"a@h\"} 2\n"), "{out}");
        assert!(out.contains("netsplit_refused{node=\"a@h\",request=\"unsubscribe\"} 1\n"), "{out}");
        assert!(!out.contains("_total"), "{out}");
    }

    #[test]
    fn label_values_are_escaped() {
        let out = exposition(
            "a\"b\\c\nd",
            vec![family("socket_open".into(), &defs::SOCKET_OPEN, "a\"b\\c\nd", [(NO_LABELS, 1.0)])],
        );
        assert!(out.contains("socket_open{node=\"a\\\"b\\\\c\\nd\"} 1\n"), "{out}");
    }

    #[test]
    fn exchanges_render_per_peer_with_the_backend_prefix() {
        let m = MetadataExchanges {
            backend: "swc",
            peers: vec![
                PeerExchange { peer: "b@h".into(), completed: 10, last_completed_unix: Some(1.5), keys_repaired: 3 },
                PeerExchange { peer: "c@h".into(), completed: 0, last_completed_unix: None, keys_repaired: 0 },
            ],
        };
        let out = exposition("a@h", exchange_families("a@h", &m));
        assert!(out.contains("# TYPE swc_exchange_completed counter\n"), "{out}");
        assert!(out.contains("swc_exchange_completed{node=\"a@h\",peer=\"b@h\"} 10\n"), "{out}");
        assert!(out.contains("# TYPE swc_exchange_last_completed_seconds gauge\n"), "{out}");
        assert!(out.contains("swc_exchange_last_completed_seconds{node=\"a@h\",peer=\"b@h\"} 1.5\n"), "{out}");
        assert!(!out.contains("swc_exchange_last_completed_seconds{node=\"a@h\",peer=\"c@h\"}"), "{out}");
        assert!(out.contains("swc_exchange_keys_repaired{node=\"a@h\",peer=\"c@h\"} 0\n"), "{out}");
        assert!(exposition("a@h", exchange_families("a@h", &MetadataExchanges::default())).is_empty());
        let no_peers = MetadataExchanges { backend: "plumtree", peers: Vec::new() };
        assert!(exposition("a@h", exchange_families("a@h", &no_peers)).is_empty());
    }
}
