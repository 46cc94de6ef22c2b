//! The cluster data path between real `vernemq` processes: every QoS 1/2 message acknowledged
//! to its publisher reaches its subscriber on another node, once (QoS 2) and in order, at full
//! speed and across a paused peer, with no false netsplit; and the `allow_*_during_netsplit`
//! policies (VerneMQ's `vmq_cluster_netsplit_SUITE`), for both metadata backends.
// Test helpers stop the test on anything unexpected, as the tests themselves do.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::nodes::session_options as v4;
use common::nodes::{Nodes, wait_until};
use common::{V4, V5};
use rumqttc::{Event, Packet, QoS};

fn config(backend: &str, extra: &str) -> String {
    format!("metadata_plugin = {backend}\nmax_inflight_messages = 100\nmax_online_messages = -1\n{extra}")
}

both_backends!(
    qos1_pairs_across_two_nodes_lose_nothing_and_keep_order,
    qos2_pairs_across_three_nodes_deliver_exactly_once_in_order,
    paused_peer_loses_nothing_acknowledged,
    register_not_ready_test,
    register_allowed_during_netsplit,
    publish_qos0_test,
    remote_enqueue_cant_block_the_publisher,
    publish_refused_during_netsplit_unless_allowed,
    subscribe_refused_during_netsplit_unless_allowed,
    unsubscribe_refused_during_netsplit_unless_allowed,
    policies_set_at_runtime_take_effect_at_once,
    puback_says_success_when_the_only_subscriber_is_remote,
    outbox_delivers_publishes_acknowledged_during_a_split_after_the_heal_in_order,
    a_message_larger_than_16_mib_is_forwarded_whole,
);

/// Subscribes a fresh client on `addr` to `filter` and waits until a publish from `from` on
/// a topic it matches reaches it: the subscription has replicated to `from`.
async fn routed_subscriber(from: SocketAddr, addr: SocketAddr, id: &str, filter: &str, qos: QoS) -> V4 {
    let (mut sub, _) = V4::connect(v4(addr, id, true)).await;
    sub.subscribe(filter, qos).await;
    let topic = filter.strip_prefix("$share/").and_then(|f| f.split_once('/')).map_or(filter, |(_, t)| t);
    let (probe, _) = V4::connect(v4(from, &format!("{id}-probe"), true)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        probe.client.publish(topic, QoS::AtMostOnce, false, b"probe".to_vec()).await.unwrap();
        let got = tokio::time::timeout(Duration::from_millis(200), async {
            loop {
                if let Ok(Event::Incoming(Packet::Publish(p))) = sub.next().await {
                    return p.payload.as_ref() == b"probe";
                }
            }
        })
        .await;
        if got == Ok(true) {
            break;
        }
        assert!(Instant::now() < deadline, "{topic} on {addr} never routed from {from}");
    }
    let _ = probe.client.disconnect().await;
    // Probes still in flight are skipped by the checks (their payload is not a number).
    sub
}

/// What one subscriber saw of one publisher: sequence numbers in arrival order.
#[derive(Default)]
struct Seen {
    arrivals: Vec<u32>,
}

impl Seen {
    /// Checks that every number below `acked` arrived, that first arrivals are in order, and
    /// returns the number of duplicate arrivals.
    fn check(&self, what: &str, acked: u32) -> usize {
        let mut count: HashMap<u32, usize> = HashMap::new();
        let mut last_first = None;
        for &n in &self.arrivals {
            let c = count.entry(n).or_default();
            *c += 1;
            if *c == 1 {
                assert!(last_first.is_none_or(|l| n > l), "{what}: {n} arrived after {last_first:?}: order broken");
                last_first = Some(n);
            }
        }
        let lost: Vec<u32> = (0..acked).filter(|n| !count.contains_key(n)).collect();
        assert!(
            lost.is_empty(),
            "{what}: {} acknowledged messages lost, first {:?}",
            lost.len(),
            &lost[..lost.len().min(10)]
        );
        count.values().map(|c| c - 1).sum()
    }
}

/// Publishes `n` numbered messages at `qos` on `topic` through `publisher` as fast as its
/// window allows; returns how many were acknowledged (PUBACK / PUBCOMP).
async fn publish_numbered(publisher: &mut V4, topic: &str, qos: QoS, n: u32) -> u32 {
    let client = publisher.client.clone();
    let topic = topic.to_string();
    tokio::spawn(async move {
        for i in 0..n {
            if client.publish(topic.as_str(), qos, false, i.to_be_bytes().to_vec()).await.is_err() {
                return;
            }
        }
    });
    let mut acked = 0;
    while acked < n {
        match publisher.next().await {
            Ok(Event::Incoming(Packet::PubAck(_))) if qos == QoS::AtLeastOnce => acked += 1,
            Ok(Event::Incoming(Packet::PubComp(_))) if qos == QoS::ExactlyOnce => acked += 1,
            Ok(_) => {}
            Err(e) => panic!("publisher failed after {acked} acknowledgements: {e}"),
        }
    }
    acked
}

/// Collects numbered payloads until `n` distinct numbers arrived (or `within` passed).
async fn collect(sub: &mut V4, n: u32, within: Duration) -> Seen {
    let mut seen = Seen::default();
    let mut distinct = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + within;
    while (distinct.len() as u32) < n {
        let next = tokio::time::timeout_at(deadline, sub.events.recv()).await;
        match next {
            Ok(Some(Ok(Event::Incoming(Packet::Publish(p))))) => {
                if let Ok(b) = <[u8; 4]>::try_from(p.payload.as_ref()) {
                    let v = u32::from_be_bytes(b);
                    seen.arrivals.push(v);
                    distinct.insert(v);
                }
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => panic!("subscriber failed: {e}"),
            Ok(None) | Err(_) => break,
        }
    }
    seen
}

/// `pairs` publisher/subscriber pairs, publishers on node `from`, subscribers on node `to`,
/// `n` messages each; checks losses, order, duplicates (none allowed at QoS 2).
async fn cross_node_pairs(nodes: &Nodes, from: usize, to: usize, pairs: usize, n: u32, qos: QoS) {
    let (src, dst) = (nodes.node(from).mqtt, nodes.node(to).mqtt);
    let mut tasks = Vec::new();
    for p in 0..pairs {
        let topic = format!("pairs/{from}-{to}/{p}");
        let mut sub = routed_subscriber(src, dst, &format!("sub-{from}-{to}-{p}"), &topic, qos).await;
        tasks.push(tokio::spawn(async move {
            let (mut publisher, _) = V4::connect(v4(src, &format!("pub-{from}-{to}-{p}"), true)).await;
            let collector = tokio::spawn(async move { collect(&mut sub, n, Duration::from_secs(120)).await });
            let acked = publish_numbered(&mut publisher, &topic, qos, n).await;
            let seen = collector.await.unwrap();
            (topic, acked, seen)
        }));
    }
    for t in tasks {
        let (topic, acked, seen) = t.await.unwrap();
        let dups = seen.check(&topic, acked);
        if qos == QoS::ExactlyOnce {
            assert_eq!(dups, 0, "{topic}: QoS 2 delivered duplicates");
        }
    }
}

async fn qos1_pairs_across_two_nodes_lose_nothing_and_keep_order(backend: &str) {
    common::init_tracing();
    let nodes = Nodes::start(2, &config(backend, ""));
    cross_node_pairs(&nodes, 0, 1, 8, 5_000, QoS::AtLeastOnce).await;
    for node in &nodes.nodes {
        assert_eq!(node.metric("netsplit_detected"), 0, "{}: a busy peer is not a netsplit", node.name);
        assert_eq!(node.metric("cluster_forward_failed"), 0, "{}", node.name);
    }
}

async fn qos2_pairs_across_three_nodes_deliver_exactly_once_in_order(backend: &str) {
    common::init_tracing();
    let nodes = Nodes::start(3, &config(backend, ""));
    let runs = [(0, 1), (1, 2), (2, 0)].map(|(from, to)| {
        let nodes = &nodes;
        async move { cross_node_pairs(nodes, from, to, 2, 2_000, QoS::ExactlyOnce).await }
    });
    let [a, b, c] = runs;
    tokio::join!(a, b, c);
    for node in &nodes.nodes {
        assert_eq!(node.metric("netsplit_detected"), 0, "{}", node.name);
    }
}

async fn paused_peer_loses_nothing_acknowledged(backend: &str) {
    common::init_tracing();
    // Publishing goes on during the pause: the forwards wait for the peer, nothing is refused.
    let nodes = Nodes::start(2, &config(backend, "allow_publish_during_netsplit = on"));
    let (src, dst) = (nodes.node(0).mqtt, nodes.node(1).mqtt);
    let n = 3_000;
    let mut sub = routed_subscriber(src, dst, "paused-sub", "paused/t", QoS::AtLeastOnce).await;
    let (mut publisher, _) = V4::connect(v4(src, "paused-pub", true)).await;
    let collector = tokio::spawn(async move { collect(&mut sub, n, Duration::from_secs(120)).await });
    let publishing =
        tokio::spawn(async move { publish_numbered(&mut publisher, "paused/t", QoS::AtLeastOnce, n).await });
    // Pause the subscriber's node mid-run (once it has routed a first part of the messages),
    // long enough to be declared unreachable.
    let node1 = nodes.node(1);
    let started = tokio::task::block_in_place(|| {
        wait_until("the subscriber's node routes messages", Duration::from_secs(30), || {
            node1.metric("router_matches_local") >= 300
        })
    });
    tracing::info!(?started, "load running");
    nodes.node(1).pause();
    let detected = wait_until("vmq1 sees vmq2 unreachable", Duration::from_secs(10), || !nodes.node(0).is_ready());
    tracing::info!(?detected, "paused peer reported unreachable");
    // The detector says 1.2 s of silence; the margin is for polling /health on a loaded machine.
    assert!(detected < Duration::from_secs(2), "a stopped peer is reported unreachable within 1.2 s: {detected:?}");
    nodes.node(1).resume();
    let healed = wait_until("vmq1 sees vmq2 again", Duration::from_secs(10), || nodes.node(0).is_ready());
    tracing::info!(?healed, "resumed peer reachable again");
    assert!(healed < Duration::from_secs(3), "the cluster heals within 3 s of the peer's return: {healed:?}");
    let acked = publishing.await.unwrap();
    let seen = collector.await.unwrap();
    seen.check("paused/t", acked);
    assert_eq!(nodes.node(0).metric("netsplit_detected"), 1);
    assert_eq!(nodes.node(0).metric("netsplit_resolved"), 1);
}

/// Pauses the last node and waits until every other node counts a netsplit.
fn split_last(nodes: &Nodes) {
    let last = nodes.nodes.len() - 1;
    nodes.node(last).pause();
    for node in &nodes.nodes[..last] {
        wait_until(&format!("{} is not ready", node.name), Duration::from_secs(10), || !node.is_ready());
    }
}

fn heal_last(nodes: &Nodes) {
    let last = nodes.nodes.len() - 1;
    nodes.node(last).resume();
    nodes.wait_all_running();
    for node in &nodes.nodes {
        wait_until(&format!("{} is ready", node.name), Duration::from_secs(10), || node.is_ready());
    }
}

/// The CONNACK return code a fresh MQTT 3.1.1 client gets from `addr`.
async fn connack_code(addr: SocketAddr, id: &str) -> rumqttc::ConnectReturnCode {
    let (_client, mut eventloop) = rumqttc::AsyncClient::new(v4(addr, id, true), 10);
    match tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await.expect("an answer") {
        Ok(Event::Incoming(Packet::ConnAck(a))) => a.code,
        Err(rumqttc::ConnectionError::ConnectionRefused(code)) => code,
        other => panic!("unexpected {other:?}"),
    }
}

async fn register_not_ready_test(backend: &str) {
    common::init_tracing();
    let nodes = Nodes::start(3, &config(backend, ""));
    let (_connected, _) = V4::connect(v4(nodes.node(0).mqtt, "connected-before", true)).await;
    split_last(&nodes);
    for (i, node) in nodes.nodes[..2].iter().enumerate() {
        assert_eq!(node.metric("netsplit_detected"), 1);
        let code = connack_code(node.mqtt, &format!("during-{i}")).await;
        assert_eq!(code, rumqttc::ConnectReturnCode::ServiceUnavailable, "{}", node.name);
    }
    heal_last(&nodes);
    for (i, node) in nodes.nodes.iter().enumerate() {
        assert_eq!(connack_code(node.mqtt, &format!("after-{i}")).await, rumqttc::ConnectReturnCode::Success);
        assert_eq!(node.metric("netsplit_resolved"), node.metric("netsplit_detected"));
    }
}

async fn register_allowed_during_netsplit(backend: &str) {
    common::init_tracing();
    let nodes = Nodes::start(3, &config(backend, "allow_register_during_netsplit = on"));
    split_last(&nodes);
    for (i, node) in nodes.nodes[..2].iter().enumerate() {
        assert_eq!(connack_code(node.mqtt, &format!("during-{i}")).await, rumqttc::ConnectReturnCode::Success);
    }
    heal_last(&nodes);
}

async fn publish_qos0_test(backend: &str) {
    common::init_tracing();
    // VerneMQ's case: a QoS 0 publish made during the split reaches the other side's
    // subscriber after the heal (held in the link's buffer meanwhile).
    let nodes =
        Nodes::start(2, &config(backend, "allow_publish_during_netsplit = on\nallow_register_during_netsplit = on"));
    let (src, dst) = (nodes.node(0).mqtt, nodes.node(1).mqtt);
    let mut sub = routed_subscriber(src, dst, "q0-sub", "q0/t", QoS::AtMostOnce).await;
    split_last(&nodes);
    let (publisher, _) = V4::connect(v4(src, "q0-pub", true)).await;
    publisher.client.publish("q0/t", QoS::AtMostOnce, false, 7u32.to_be_bytes().to_vec()).await.unwrap();
    heal_last(&nodes);
    let seen = collect(&mut sub, 1, Duration::from_secs(10)).await;
    assert_eq!(seen.arrivals, vec![7]);
}

async fn remote_enqueue_cant_block_the_publisher(backend: &str) {
    common::init_tracing();
    let nodes = Nodes::start(2, &config(backend, "allow_publish_during_netsplit = on"));
    let (src, dst) = (nodes.node(0).mqtt, nodes.node(1).mqtt);
    // The only member of the shared subscription is on the node that will be cut off.
    let _member = routed_subscriber(src, dst, "shared-member", "$share/g/shared/t", QoS::AtLeastOnce).await;
    let (mut publisher, _) = V4::connect(v4(src, "shared-pub", true)).await;
    split_last(&nodes);
    let started = Instant::now();
    let acked = publish_numbered(&mut publisher, "shared/t", QoS::AtLeastOnce, 1).await;
    assert_eq!(acked, 1);
    assert!(started.elapsed() < Duration::from_secs(5), "PUBACK within 5 s: {:?}", started.elapsed());
    heal_last(&nodes);
}

/// The reason code of the acknowledgement an MQTT 5 QoS 1 publish gets.
async fn v5_puback_code(addr: SocketAddr, id: &str, topic: &str) -> rumqttc::v5::mqttbytes::v5::PubAckReason {
    use rumqttc::v5::Event as E5;
    use rumqttc::v5::mqttbytes::v5::Packet as P5;
    let (mut c, _) = V5::connect(V5::options(addr, id)).await;
    c.client.publish(topic, rumqttc::v5::mqttbytes::QoS::AtLeastOnce, false, b"x".to_vec()).await.unwrap();
    loop {
        if let Ok(E5::Incoming(P5::PubAck(a))) = c.next().await {
            return a.reason;
        }
    }
}

async fn publish_refused_during_netsplit_unless_allowed(backend: &str) {
    use rumqttc::v5::mqttbytes::v5::PubAckReason;
    common::init_tracing();
    let nodes = Nodes::start(2, &config(backend, "allow_register_during_netsplit = on"));
    let (src, dst) = (nodes.node(0).mqtt, nodes.node(1).mqtt);
    let (mut local, _) = V4::connect(v4(src, "local-sub", true)).await;
    local.subscribe("refused/t", QoS::AtLeastOnce).await;
    let _remote = routed_subscriber(src, dst, "remote-sub", "refused/t", QoS::AtLeastOnce).await;
    split_last(&nodes);
    assert_eq!(v5_puback_code(src, "p-off", "refused/t").await, PubAckReason::UnspecifiedError);
    assert_eq!(nodes.node(0).http_get("/api/v1/set?allow_publish_during_netsplit=on").0, 200);
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _ = tx.send(v5_puback_code(src, "p-on", "refused/t").await);
    });
    // Allowed: routed locally at once (the probes that found the remote route come first).
    while local.publish_event().await.payload.as_ref() != b"x" {}
    heal_last(&nodes);
    let code = tokio::time::timeout(Duration::from_secs(10), rx).await.expect("PUBACK after the heal").unwrap();
    assert_eq!(code, PubAckReason::Success);
}

async fn subscribe_refused_during_netsplit_unless_allowed(backend: &str) {
    use rumqttc::v5::mqttbytes::v5::SubscribeReasonCode;
    common::init_tracing();
    let nodes = Nodes::start(2, &config(backend, ""));
    let addr = nodes.node(0).mqtt;
    let (mut c, _) = V5::connect(V5::options(addr, "subscriber")).await;
    let (mut v3, _) = V4::connect(v4(addr, "subscriber-v3", true)).await;
    split_last(&nodes);
    c.client.subscribe("split/t", rumqttc::v5::mqttbytes::QoS::AtLeastOnce).await.unwrap();
    assert_eq!(c.suback().await.return_codes, vec![SubscribeReasonCode::Unspecified]);
    v3.client.subscribe("split/t", QoS::AtLeastOnce).await.unwrap();
    let suback = loop {
        if let Ok(Event::Incoming(Packet::SubAck(a))) = v3.next().await {
            break a;
        }
    };
    assert_eq!(suback.return_codes, vec![rumqttc::SubscribeReasonCode::Failure]);
    assert_eq!(nodes.node(0).http_get("/api/v1/set?allow_subscribe_during_netsplit=on").0, 200);
    c.client.subscribe("split/t", rumqttc::v5::mqttbytes::QoS::AtLeastOnce).await.unwrap();
    assert_eq!(
        c.suback().await.return_codes,
        vec![SubscribeReasonCode::Success(rumqttc::v5::mqttbytes::QoS::AtLeastOnce)]
    );
    heal_last(&nodes);
}

async fn unsubscribe_refused_during_netsplit_unless_allowed(backend: &str) {
    use rumqttc::v5::Event as E5;
    use rumqttc::v5::mqttbytes::v5::{Packet as P5, UnsubAckReason};
    common::init_tracing();
    let nodes = Nodes::start(2, &config(backend, ""));
    let addr = nodes.node(0).mqtt;
    let (mut c, _) = V5::connect(V5::options(addr, "unsubscriber")).await;
    c.subscribe("split/u", rumqttc::v5::mqttbytes::QoS::AtLeastOnce).await;
    let (mut v3, _) = V4::connect(v4(addr, "unsubscriber-v3", true)).await;
    split_last(&nodes);
    c.client.unsubscribe("split/u").await.unwrap();
    let reasons = loop {
        if let Ok(E5::Incoming(P5::UnsubAck(a))) = c.next().await {
            break a.reasons;
        }
    };
    assert_eq!(reasons, vec![UnsubAckReason::UnspecifiedError]);
    // MQTT 3.1.1 has no refusal code in UNSUBACK: none is sent and the connection stays; a
    // SUBSCRIBE sent after it is answered (refused too) with no UNSUBACK before its SUBACK.
    v3.client.unsubscribe("split/u").await.unwrap();
    v3.client.subscribe("split/sentinel", QoS::AtMostOnce).await.unwrap();
    loop {
        match v3.next().await {
            Ok(Event::Incoming(Packet::UnsubAck(_))) => {
                panic!("an MQTT 3.1.1 UNSUBSCRIBE was acknowledged during a netsplit")
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => break,
            Ok(_) => {}
            Err(e) => panic!("the connection must stay open: {e}"),
        }
    }
    assert_eq!(nodes.node(0).http_get("/api/v1/set?allow_unsubscribe_during_netsplit=on").0, 200);
    c.client.unsubscribe("split/u").await.unwrap();
    let reasons = loop {
        if let Ok(E5::Incoming(P5::UnsubAck(a))) = c.next().await {
            break a.reasons;
        }
    };
    assert_eq!(reasons, vec![UnsubAckReason::Success]);
    heal_last(&nodes);
}

async fn policies_set_at_runtime_take_effect_at_once(backend: &str) {
    common::init_tracing();
    let nodes = Nodes::start(2, &config(backend, ""));
    let node = nodes.node(0);
    split_last(&nodes);
    assert_eq!(connack_code(node.mqtt, "before-set").await, rumqttc::ConnectReturnCode::ServiceUnavailable);
    let (status, body) = node.http_get("/api/v1/set?allow_register_during_netsplit=on");
    assert_eq!(status, 200, "{body}");
    assert_eq!(connack_code(node.mqtt, "after-set").await, rumqttc::ConnectReturnCode::Success);
    assert_eq!(node.http_get("/api/v1/set?allow_register_during_netsplit=off").0, 200);
    assert_eq!(connack_code(node.mqtt, "after-unset").await, rumqttc::ConnectReturnCode::ServiceUnavailable);
    let (status, body) = node.http_get("/api/v1/set?allow_everything=on");
    assert_eq!(status, 400, "{body}");
    assert!(node.metric("netsplit_refused") >= 2);
    heal_last(&nodes);
}

async fn puback_says_success_when_the_only_subscriber_is_remote(backend: &str) {
    use rumqttc::v5::mqttbytes::v5::PubAckReason;
    common::init_tracing();
    let nodes = Nodes::start(2, &config(backend, ""));
    let (src, dst) = (nodes.node(0).mqtt, nodes.node(1).mqtt);
    let _remote = routed_subscriber(src, dst, "only-remote", "remote/only", QoS::AtLeastOnce).await;
    assert_eq!(v5_puback_code(src, "pub5", "remote/only").await, PubAckReason::Success);
    assert_eq!(v5_puback_code(src, "pub5-none", "nobody/here").await, PubAckReason::NoMatchingSubscribers);
}

async fn outbox_delivers_publishes_acknowledged_during_a_split_after_the_heal_in_order(backend: &str) {
    common::init_tracing();
    let mut nodes = Nodes::start(2, &config(backend, "allow_publish_during_netsplit = on"));
    let (src, dst) = (nodes.node(0).mqtt, nodes.node(1).mqtt);
    let mut sub = routed_subscriber(src, dst, "outbox-sub", "outbox/t", QoS::AtLeastOnce).await;
    let (mut publisher, _) = V4::connect(v4(src, "outbox-pub", true)).await;
    split_last(&nodes);
    // Acknowledged while the subscriber's node is still unreachable: the outbox has them.
    let n = 200;
    let acked = tokio::time::timeout(
        Duration::from_secs(20),
        publish_numbered(&mut publisher, "outbox/t", QoS::AtLeastOnce, n),
    )
    .await
    .expect("publishes to an unreachable node are acknowledged once in the outbox");
    assert_eq!(acked, n);
    drop(publisher);
    // The publishing node dies with the messages only in its outbox, and comes back.
    nodes.kill_and_restart(0);
    heal_last(&nodes);
    let seen = collect(&mut sub, n, Duration::from_secs(30)).await;
    seen.check("outbox/t", n);
}

async fn a_message_larger_than_16_mib_is_forwarded_whole(backend: &str) {
    common::init_tracing();
    // The cluster frame limit follows the largest message a client may publish: 16 MiB used
    // to be the limit, and larger messages were dropped after their PUBACK.
    let nodes = Nodes::start(2, &config(backend, ""));
    let (src, dst) = (nodes.node(0).mqtt, nodes.node(1).mqtt);
    let big = 20 * 1024 * 1024;
    let options = |addr, id| {
        let mut o = v4(addr, id, true);
        o.set_max_packet_size(big + 1024, big + 1024);
        o
    };
    let (mut sub, _) = V4::connect(options(dst, "big-sub")).await;
    sub.subscribe("big/t", QoS::AtLeastOnce).await;
    drop(routed_subscriber(src, dst, "big-probe-sub", "big/t", QoS::AtMostOnce).await);
    let (mut publisher, _) = V4::connect(options(src, "big-pub")).await;
    let payload: Vec<u8> = (0..big).map(|i| (i % 251) as u8).collect();
    publisher.client.publish("big/t", QoS::AtLeastOnce, false, payload.clone()).await.unwrap();
    loop {
        match publisher.next().await {
            Ok(Event::Incoming(Packet::PubAck(_))) => break,
            Ok(_) => {}
            Err(e) => panic!("publisher failed: {e}"),
        }
    }
    loop {
        let p = sub.publish_event().await;
        if p.payload.len() == big {
            assert!(p.payload.as_ref() == payload.as_slice(), "the payload arrives intact");
            break;
        }
    }
}
