//! Three-node clusters in one process, over real QUIC on 127.0.0.1, for both metadata
//! backends: the scenarios of VerneMQ's `vmq_cluster_SUITE` that need no queue migration,
//! plus cookie refusal and failure detection as `vmq-admin cluster show` reports it.
//!
//! Every scenario is an `async fn(MetadataPlugin)` run once per backend by `both_backends!`.
//! Absence of a delivery is checked with a barrier: after the messages under test, the same
//! publisher sends one message to a topic every subscriber has, and the forwarding stream per
//! node pair is ordered, so once a subscriber has the barrier it has everything sent before.
// Test helpers stop the test on anything unexpected, as the tests themselves do.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{V4, set_delegated, test_config, wait_until};
use rumqttc::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vmq_config::{Config, MetadataPlugin, SharedSubscriptionPolicy};
use vmq_node::server::{Node, NodeStorage};

const BARRIER: &str = "barrier";

struct Member {
    name: String,
    cfg: Config,
    storage: NodeStorage,
    node: Option<Node>,
}

struct TestCluster {
    members: Vec<Member>,
}

fn config(name: &str, plugin: MetadataPlugin, f: &impl Fn(&mut Config)) -> Config {
    let mut cfg = test_config();
    cfg.nodename = name.into();
    cfg.metadata_plugin = plugin;
    // Quick anti-entropy so that late joiners and restarted nodes catch up within a test.
    set_delegated(&mut cfg, "vmq_swc.sync_interval", "300");
    set_delegated(&mut cfg, "vmq_plumtree.broadcast_exchange_timer", "300");
    f(&mut cfg);
    cfg
}

impl TestCluster {
    /// Starts `n` nodes and joins every other one to the first.
    async fn start(plugin: MetadataPlugin, n: usize, f: impl Fn(&mut Config)) -> TestCluster {
        common::init_tracing();
        let mut c = TestCluster { members: Vec::new() };
        for i in 0..n {
            c.add(plugin, &f).await;
            if i > 0 {
                c.join(i).await;
            }
        }
        c.wait_all_running().await;
        c
    }

    async fn add(&mut self, plugin: MetadataPlugin, f: &impl Fn(&mut Config)) -> usize {
        let i = self.members.len();
        let name = format!("n{i}@127.0.0.1");
        let cfg = config(&name, plugin, f);
        let storage = NodeStorage::in_memory().unwrap();
        let node = Node::start_with(&cfg, storage.clone()).await.expect("node starts");
        self.members.push(Member { name, cfg, storage, node: Some(node) });
        i
    }

    fn node(&self, i: usize) -> &Node {
        self.members[i].node.as_ref().expect("node is running")
    }

    fn mqtt(&self, i: usize) -> SocketAddr {
        self.node(i).mqtt_addr()
    }

    fn discovery(&self, i: usize) -> String {
        format!("{}:{}", self.members[i].name, self.node(i).cluster_addr().port())
    }

    async fn join(&self, i: usize) {
        let answer = self.node(i).cluster().join(&self.discovery(0)).await;
        assert_eq!(answer, Ok("Done".to_string()), "n{i} joins n0");
    }

    async fn wait_all_running(&self) {
        let running: Vec<usize> = (0..self.members.len()).filter(|i| self.members[*i].node.is_some()).collect();
        for &i in &running {
            let node = self.node(i);
            wait_until(&format!("n{i} sees every member running"), || {
                let members = node.cluster().members();
                members.len() == self.members.len() && members.iter().all(|m| m.running)
            })
            .await;
        }
    }

    async fn stop(&mut self, i: usize) {
        if let Some(node) = self.members[i].node.take() {
            node.shutdown().await;
        }
    }

    /// A new node with the same name, cluster address and storage.
    async fn restart(&mut self, i: usize) {
        let addr = {
            let node = self.node(i);
            node.cluster_addr()
        };
        self.stop(i).await;
        let m = &mut self.members[i];
        let mut cfg = m.cfg.clone();
        set_delegated(&mut cfg, "listener.vmq.clustering", &addr.to_string());
        m.node = Some(Node::start_with(&cfg, m.storage.clone()).await.expect("node restarts"));
    }

    async fn shutdown(mut self) {
        for i in 0..self.members.len() {
            self.stop(i).await;
        }
    }
}

macro_rules! both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod swc {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(vmq_config::MetadataPlugin::VmqSwc).await;
                }
            )*
        }
        mod plumtree {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(vmq_config::MetadataPlugin::VmqPlumtree).await;
                }
            )*
        }
    };
}

both_backends!(
    distributed_subscribe_and_cross_node_publish,
    shared_subs_prefer_local_policy,
    shared_subs_local_only_policy,
    shared_subs_random_policy,
    late_join_node_syncs_subscriptions,
    late_join_node_syncs_retained_messages,
    routing_table_survives_node_restart,
    restarted_node_has_no_stale_sessions,
    wrong_cookie_is_refused,
    killed_node_shows_not_running_then_running_after_restart,
);

async fn client(addr: SocketAddr, id: &str, clean: bool) -> V4 {
    let mut o = V4::options(addr, id);
    o.set_clean_session(clean);
    V4::connect(o).await.0
}

/// Publishes collected until the barrier message arrives.
async fn until_barrier(c: &mut V4) -> Vec<rumqttc::Publish> {
    let mut got = Vec::new();
    loop {
        let p = c.publish_event().await;
        if p.topic == BARRIER {
            return got;
        }
        got.push(p);
    }
}

async fn wait_remote_subscriptions(c: &TestCluster, i: usize, n: usize) {
    let node = c.node(i);
    wait_until(&format!("n{i} routes to {n} remote subscriptions"), || node.cluster().remote_subscription_count() == n)
        .await;
}

async fn distributed_subscribe_and_cross_node_publish(plugin: MetadataPlugin) {
    let c = TestCluster::start(plugin, 3, |_| {}).await;
    let mut subs = Vec::new();
    for i in 0..3 {
        let mut s = client(c.mqtt(i), &format!("sub{i}"), true).await;
        s.subscribe("a/+", QoS::AtLeastOnce).await;
        subs.push(s);
    }
    // distributed_subscribe: every node knows the other two nodes' subscriptions.
    for i in 0..3 {
        wait_remote_subscriptions(&c, i, 2).await;
    }
    // cross_node_publish_subscribe: what is published on any node reaches every subscriber
    // once, in the publisher's order.
    for from in 0..3 {
        let p = client(c.mqtt(from), &format!("pub{from}"), true).await;
        for n in 0..20 {
            p.client.publish(format!("a/{from}"), QoS::AtLeastOnce, false, format!("{n}")).await.unwrap();
        }
        for s in &mut subs {
            let mut got = Vec::new();
            while got.len() < 20 {
                got.push(s.publish_event().await);
            }
            let payloads: Vec<String> = got.iter().map(|p| String::from_utf8_lossy(&p.payload).into_owned()).collect();
            let expected: Vec<String> = (0..20).map(|n| n.to_string()).collect();
            assert_eq!(payloads, expected);
            assert!(got.iter().all(|p| p.topic == format!("a/{from}")));
        }
    }
    // The bytes between nodes are counted (the /metrics cluster_bytes_* counters); nothing was
    // dropped on this light load.
    for i in 0..3 {
        let (sent, received, dropped) = c.node(i).cluster().cluster_bytes();
        assert!(sent > 0 && received > 0, "node {i}: sent {sent}, received {received}");
        assert_eq!(dropped, 0, "node {i}");
    }
    c.shutdown().await;
}

/// Shared subscribers `$share/g/t` on the nodes in `on`, each also subscribed to the barrier.
async fn shared_subscribers(c: &TestCluster, on: &[usize]) -> Vec<(usize, V4)> {
    let mut out = Vec::new();
    for &i in on {
        let mut s = client(c.mqtt(i), &format!("shared{i}"), true).await;
        s.subscribe("$share/g/t", QoS::AtLeastOnce).await;
        s.subscribe(BARRIER, QoS::AtLeastOnce).await;
        out.push((i, s));
    }
    let total = on.len() * 2;
    for i in 0..c.members.len() {
        let remote = total - 2 * on.iter().filter(|n| **n == i).count();
        wait_remote_subscriptions(c, i, remote).await;
    }
    out
}

/// Publishes `n` messages to `t` and then the barrier from node `from`; the publisher is
/// returned so that it stays connected until its messages were seen.
async fn publish_then_barrier(c: &TestCluster, from: usize, n: usize) -> V4 {
    let p = client(c.mqtt(from), &format!("pub{from}-{n}"), true).await;
    for k in 0..n {
        p.client.publish("t", QoS::AtLeastOnce, false, format!("{k}")).await.unwrap();
    }
    p.client.publish(BARRIER, QoS::AtLeastOnce, false, "end").await.unwrap();
    p
}

fn policy(p: SharedSubscriptionPolicy) -> impl Fn(&mut Config) {
    move |cfg: &mut Config| cfg.mqtt.shared_subscription_policy = p
}

async fn shared_subs_prefer_local_policy(plugin: MetadataPlugin) {
    let c = TestCluster::start(plugin, 3, policy(SharedSubscriptionPolicy::PreferLocal)).await;
    let mut subs = shared_subscribers(&c, &[0, 1, 2]).await;
    let _publisher = publish_then_barrier(&c, 1, 10).await;
    for (i, s) in &mut subs {
        let got = until_barrier(s).await;
        assert_eq!(got.len(), if *i == 1 { 10 } else { 0 }, "n{i}: the local member gets everything");
    }
    // Without a local member, remote members get the messages.
    let mut subs = shared_subscribers_without(&c, subs, 1).await;
    let _publisher = publish_then_barrier(&c, 1, 10).await;
    let mut total = 0;
    for (_, s) in &mut subs {
        total += until_barrier(s).await.len();
    }
    assert_eq!(total, 10);
    c.shutdown().await;
}

/// Disconnects the member on node `gone` and waits until every node forgot it.
async fn shared_subscribers_without(c: &TestCluster, subs: Vec<(usize, V4)>, gone: usize) -> Vec<(usize, V4)> {
    let mut kept = Vec::new();
    for (i, s) in subs {
        if i == gone {
            s.client.disconnect().await.unwrap();
        } else {
            kept.push((i, s));
        }
    }
    let on: Vec<usize> = kept.iter().map(|(i, _)| *i).collect();
    for i in 0..c.members.len() {
        let remote = on.len() * 2 - 2 * on.iter().filter(|n| **n == i).count();
        wait_remote_subscriptions(c, i, remote).await;
    }
    kept
}

async fn shared_subs_local_only_policy(plugin: MetadataPlugin) {
    let c = TestCluster::start(plugin, 3, policy(SharedSubscriptionPolicy::LocalOnly)).await;
    // No member on the publisher's node: nobody gets the messages.
    let mut subs = shared_subscribers(&c, &[0, 2]).await;
    let _publisher = publish_then_barrier(&c, 1, 10).await;
    for (i, s) in &mut subs {
        assert!(until_barrier(s).await.is_empty(), "n{i} is not local to the publisher");
    }
    // Published where a member is: only that one.
    let _publisher = publish_then_barrier(&c, 2, 10).await;
    for (i, s) in &mut subs {
        assert_eq!(until_barrier(s).await.len(), if *i == 2 { 10 } else { 0 });
    }
    c.shutdown().await;
}

async fn shared_subs_random_policy(plugin: MetadataPlugin) {
    let c = TestCluster::start(plugin, 3, policy(SharedSubscriptionPolicy::Random)).await;
    let mut subs = shared_subscribers(&c, &[0, 1, 2]).await;
    let _publisher = publish_then_barrier(&c, 0, 60).await;
    let mut counts = Vec::new();
    for (_, s) in &mut subs {
        counts.push(until_barrier(s).await.len());
    }
    assert_eq!(counts.iter().sum::<usize>(), 60, "each message to exactly one member: {counts:?}");
    // With 60 messages over 3 members, all on one node has probability 3 * 3^-60.
    assert!(counts.iter().filter(|n| **n > 0).count() > 1, "spread over the cluster: {counts:?}");
    c.shutdown().await;
}

async fn late_join_node_syncs_subscriptions(plugin: MetadataPlugin) {
    let mut c = TestCluster::start(plugin, 2, |_| {}).await;
    let mut s0 = client(c.mqtt(0), "s0", true).await;
    s0.subscribe("late/#", QoS::AtLeastOnce).await;
    let mut s1 = client(c.mqtt(1), "s1", true).await;
    s1.subscribe("late/#", QoS::AtLeastOnce).await;
    let i = c.add(plugin, &|_: &mut Config| {}).await;
    c.join(i).await;
    c.wait_all_running().await;
    wait_remote_subscriptions(&c, i, 2).await;
    let p = client(c.mqtt(i), "p", true).await;
    p.client.publish("late/x", QoS::AtLeastOnce, false, "hi").await.unwrap();
    assert_eq!(&s0.publish_event().await.payload[..], b"hi");
    assert_eq!(&s1.publish_event().await.payload[..], b"hi");
    c.shutdown().await;
}

async fn late_join_node_syncs_retained_messages(plugin: MetadataPlugin) {
    let mut c = TestCluster::start(plugin, 2, |_| {}).await;
    let p = client(c.mqtt(0), "p", true).await;
    p.client.publish("r/1", QoS::AtLeastOnce, true, "kept").await.unwrap();
    p.client.publish("r/2", QoS::AtLeastOnce, true, "gone").await.unwrap();
    p.client.publish("r/2", QoS::AtLeastOnce, true, "").await.unwrap();
    wait_until("n1 has the retained message", || c.node(1).broker().retained_count() == 1).await;
    let i = c.add(plugin, &|_: &mut Config| {}).await;
    c.join(i).await;
    wait_until("the late node has the retained message", || c.node(i).broker().retained_count() == 1).await;
    let mut s = client(c.mqtt(i), "s", true).await;
    s.subscribe("r/#", QoS::AtLeastOnce).await;
    let got = s.publish_event().await;
    assert_eq!((got.topic.as_str(), &got.payload[..], got.retain), ("r/1", &b"kept"[..], true));
    c.shutdown().await;
}

async fn routing_table_survives_node_restart(plugin: MetadataPlugin) {
    let mut c = TestCluster::start(plugin, 3, |_| {}).await;
    let s = client(c.mqtt(1), "persistent", false).await;
    s.client.subscribe("keep/+", QoS::AtLeastOnce).await.unwrap();
    wait_remote_subscriptions(&c, 0, 1).await;
    s.client.disconnect().await.unwrap();
    c.restart(1).await;
    c.wait_all_running().await;
    // The other nodes still route to the restarted node's persistent subscriber, and the
    // restarted node queues for it.
    wait_remote_subscriptions(&c, 0, 1).await;
    wait_remote_subscriptions(&c, 2, 1).await;
    let p = client(c.mqtt(0), "p", true).await;
    p.client.publish("keep/a", QoS::AtLeastOnce, false, "while offline").await.unwrap();
    let mut s = client(c.mqtt(1), "persistent", false).await;
    let got = s.publish_event().await;
    assert_eq!((got.topic.as_str(), &got.payload[..]), ("keep/a", &b"while offline"[..]));
    c.shutdown().await;
}

async fn restarted_node_has_no_stale_sessions(plugin: MetadataPlugin) {
    let mut c = TestCluster::start(plugin, 3, |_| {}).await;
    let clean = client(c.mqtt(1), "clean", true).await;
    clean.client.subscribe("stale/+", QoS::AtLeastOnce).await.unwrap();
    let persistent = client(c.mqtt(1), "persistent", false).await;
    persistent.client.subscribe("kept/+", QoS::AtLeastOnce).await.unwrap();
    wait_remote_subscriptions(&c, 0, 2).await;
    c.restart(1).await;
    c.wait_all_running().await;
    // The clean session's subscription is gone everywhere, the persistent one stays.
    wait_remote_subscriptions(&c, 0, 1).await;
    wait_remote_subscriptions(&c, 2, 1).await;
    let routes = c.node(0).cluster().remote_subscription_count();
    assert_eq!(routes, 1);
    c.shutdown().await;
}

async fn wrong_cookie_is_refused(plugin: MetadataPlugin) {
    let mut c = TestCluster::start(plugin, 2, |_| {}).await;
    let i = c.add(plugin, &|cfg: &mut Config| cfg.distributed_cookie = "not-the-cookie".into()).await;
    let answer = c.node(i).cluster().join(&c.discovery(0)).await;
    let err = answer.expect_err("a node with another cookie cannot join");
    assert!(err.contains("cookie"), "{err}");
    for n in 0..2 {
        let members = c.node(n).cluster().members();
        assert_eq!(members.len(), 2, "n{n}: {members:?}");
    }
    assert_eq!(c.node(i).cluster().members().len(), 1);
    c.shutdown().await;
}

/// `GET /api/v1/cluster/show` on node `i`: (node, running) pairs.
async fn cluster_show(c: &TestCluster, i: usize) -> Vec<(String, bool)> {
    let addr = c.node(i).http_addrs()[0].1;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET /api/v1/cluster/show HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    json["table"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| (row["Node"].as_str().unwrap().to_string(), row["Running"].as_bool().unwrap()))
        .collect()
}

/// Polls `cluster show` on node `on` until `node` has `running`, failing after `within`.
async fn wait_show(c: &TestCluster, on: usize, node: &str, running: bool, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let rows = cluster_show(c, on).await;
        if rows.iter().any(|(n, r)| n == node && *r == running) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "{node} not Running={running} within {within:?}: {rows:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn killed_node_shows_not_running_then_running_after_restart(plugin: MetadataPlugin) {
    let mut c = TestCluster::start(plugin, 3, |_| {}).await;
    assert_eq!(cluster_show(&c, 0).await.len(), 3);
    let name = c.members[2].name.clone();
    let addr = c.node(2).cluster_addr();
    c.stop(2).await;
    wait_show(&c, 0, &name, false, Duration::from_secs(3)).await;
    wait_show(&c, 1, &name, false, Duration::from_secs(3)).await;
    assert!(!c.node(0).cluster().is_ready());
    assert_eq!(c.node(0).cluster().netsplit_counts().0, 1);
    let m = &mut c.members[2];
    let mut cfg = m.cfg.clone();
    set_delegated(&mut cfg, "listener.vmq.clustering", &addr.to_string());
    m.node = Some(Node::start_with(&cfg, m.storage.clone()).await.expect("node restarts"));
    wait_show(&c, 0, &name, true, Duration::from_secs(3)).await;
    wait_show(&c, 1, &name, true, Duration::from_secs(3)).await;
    let node0 = c.node(0);
    wait_until("n0 is ready again", || node0.cluster().is_ready()).await;
    assert_eq!(node0.cluster().netsplit_counts(), (1, 1));
    c.shutdown().await;
}
