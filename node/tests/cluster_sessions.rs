//! One session per client id across real `vernemq` processes, for both metadata backends:
//! takeover between nodes, a persistent session resumed on another node with its offline
//! messages, and VerneMQ's racing connect tests (`vmq_cluster_SUITE`:
//! `multiple_connect_test`, `racing_connect_test`).
// Test helpers stop the test on anything unexpected, as the tests themselves do.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use std::collections::BTreeSet;

use common::nodes::Nodes;
use common::nodes::session_options as v4;
use common::{V4, V5};
use rumqttc::{Event, Packet, QoS};

fn config(backend: &str) -> String {
    format!(
        "metadata_plugin = {backend}\nmax_inflight_messages = 100\nmax_online_messages = -1\nmax_offline_messages = -1\n"
    )
}

both_backends!(
    persistent_session_resumes_on_another_node_with_1000_offline_messages_in_order,
    a_client_id_connected_on_two_nodes_keeps_the_newer_connection,
    multiple_connect_test,
    racing_connect_test,
    a_clean_start_elsewhere_discards_the_old_session_and_its_messages,
    aborted_queue_migration_test,
    a_migration_whose_new_node_is_killed_resumes_after_its_restart,
    without_coordination_the_older_session_is_closed_too,
    messages_in_flight_at_a_takeover_come_again_on_the_new_node_with_their_packet_ids,
    backlog_first_and_nothing_missing_while_a_publisher_goes_on_during_a_migration,
);

/// Waits until a QoS 0 publish on `from` to `topic` reaches `sub` (the subscription has
/// replicated to `from`), then drains what arrived.
async fn routable(from: SocketAddr, sub: &mut V4, topic: &str) {
    let (probe, _) = V4::connect(v4(from, &format!("probe-{}", unique()), true)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        probe.client.publish(topic, QoS::AtMostOnce, false, b"probe".to_vec()).await.unwrap();
        if let Ok(Some(Ok(Event::Incoming(Packet::Publish(_))))) =
            tokio::time::timeout(Duration::from_millis(100), sub.events.recv()).await
        {
            break;
        }
        assert!(Instant::now() < deadline, "the subscription on another node never became routable");
    }
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), sub.events.recv()).await {}
    let _ = probe.client.disconnect().await;
}

fn unique() -> usize {
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// The acceptance scenario: subscribe on vmq1, go offline, 1,000 QoS 1 messages
/// published on vmq2, reconnect on vmq3: session present, all 1,000 in order.
async fn persistent_session_resumes_on_another_node_with_1000_offline_messages_in_order(backend: &str) {
    common::init_tracing();
    let cluster = Nodes::start(3, &config(backend));
    let (n1, n2, n3) = (cluster.node(0).mqtt, cluster.node(1).mqtt, cluster.node(2).mqtt);
    let (mut sub, present) = V4::connect(v4(n1, "mover", false)).await;
    assert!(!present);
    sub.subscribe("move/t", QoS::AtLeastOnce).await;
    routable(n2, &mut sub, "move/t").await;
    sub.client.disconnect().await.unwrap();
    // The session is offline on vmq1 once its disconnect is processed: a publish from now on is
    // queued there.
    while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_secs(5), sub.events.recv()).await {}

    let (mut publisher, _) = V4::connect(v4(n2, "mover-pub", true)).await;
    for i in 0..1000u32 {
        publisher.client.publish("move/t", QoS::AtLeastOnce, false, i.to_be_bytes().to_vec()).await.unwrap();
    }
    let mut acked = 0;
    while acked < 1000 {
        if let Event::Incoming(Packet::PubAck(_)) = publisher.next().await.unwrap() {
            acked += 1;
        }
    }

    let (mut resumed, present) = V4::connect(v4(n3, "mover", false)).await;
    assert!(present, "{backend}: the session moved from vmq1 to vmq3 must be present");
    let mut next = 0u32;
    while next < 1000 {
        let p = resumed.publish_event().await;
        let n = u32::from_be_bytes(p.payload[..4].try_into().unwrap());
        assert_eq!(n, next, "{backend}: offline messages out of order");
        next += 1;
    }
    // And the subscription lives on vmq3 now: a new publish on vmq1 reaches it.
    let (late, _) = V4::connect(v4(n1, "mover-late", true)).await;
    late.client.publish("move/t", QoS::AtLeastOnce, false, b"late".to_vec()).await.unwrap();
    loop {
        let p = resumed.publish_event().await;
        if p.payload.as_ref() == b"late" {
            break;
        }
        assert!(u32::from_be_bytes(p.payload[..4].try_into().unwrap()) < 1000, "unexpected {p:?}");
    }
}

/// The same client id on vmq1, then on vmq2: the first connection is disconnected with "session
/// taken over" (MQTT 5, 0x8E) before the second gets its CONNACK, and only the second lives.
async fn a_client_id_connected_on_two_nodes_keeps_the_newer_connection(backend: &str) {
    common::init_tracing();
    let cluster = Nodes::start(3, &config(backend));
    let (n1, n2) = (cluster.node(0).mqtt, cluster.node(1).mqtt);
    let (mut first, _) = V5::connect(V5::options(n1, "twice")).await;
    let (mut second, _) = V5::connect(V5::options(n2, "twice")).await;
    // The first connection was told before the second's CONNACK arrived: the DISCONNECT is
    // already waiting for it (rumqttc reports it as the end of its event loop).
    let told = match tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            match first.events.recv().await {
                Some(Ok(rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::Disconnect(d)))) => {
                    return format!("{:?}", d.reason_code);
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return e,
                None => return "closed without DISCONNECT".to_string(),
            }
        }
    })
    .await
    {
        Ok(told) => told,
        Err(_) => panic!("{backend}: the first connection is still open"),
    };
    assert!(told.contains("SessionTakenOver"), "{backend}: {told}");
    // The second connection works: it receives what it subscribes to.
    second.subscribe("twice/t", rumqttc::v5::mqttbytes::QoS::AtLeastOnce).await;
    second.client.publish("twice/t", rumqttc::v5::mqttbytes::QoS::AtLeastOnce, false, b"hi".to_vec()).await.unwrap();
    assert_eq!(second.publish_event().await.payload.as_ref(), b"hi");
}

/// VerneMQ's `multiple_connect_test`: 250 concurrent connects of one client id spread over
/// three nodes leave exactly one connection cluster-wide.
async fn multiple_connect_test(backend: &str) {
    common::init_tracing();
    let cluster = Nodes::start(3, &config(backend));
    let addrs: Vec<SocketAddr> = cluster.nodes.iter().map(|n| n.mqtt).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..250 {
        let addr = addrs[i % addrs.len()];
        tasks.spawn(async move { V4::try_connect(v4(addr, "racer", true)).await.ok().map(|(c, _)| c) });
    }
    let mut clients = Vec::new();
    while let Some(done) = tasks.join_next().await {
        if let Some(c) = done.unwrap() {
            clients.push(c);
        }
    }
    assert!(!clients.is_empty(), "{backend}: no connect succeeded");
    // Every connection but one is closed: their event loops end with an error.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut open: Vec<V4> = clients;
    while open.len() > 1 {
        assert!(Instant::now() < deadline, "{backend}: {} connections of one client id still open", open.len());
        let mut still = Vec::new();
        for mut c in open {
            let closed = loop {
                match c.events.try_recv() {
                    Ok(Err(_)) | Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                        break true;
                    }
                    Ok(Ok(_)) => {}
                    Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break false,
                }
            };
            if !closed {
                still.push(c);
            }
        }
        open = still;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(open.len(), 1, "{backend}: every connection was closed");
    // The one left is a working session: a publish from every node reaches it.
    let mut last = open.pop().unwrap();
    last.subscribe("racer/t", QoS::AtLeastOnce).await;
    for addr in &addrs {
        if std::env::var("DEBUG_KEEP").is_ok() {
            for n in &cluster.nodes {
                let _ = std::fs::copy(n.dir.join("console.log"), format!("/tmp/mc-{}.log", n.name));
            }
        }
        routable(*addr, &mut last, "racer/t").await;
    }
}

/// VerneMQ's `racing_connect_test`: five connections of one client id with clean session off,
/// one after another on alternating nodes: the first finds no session, every later one finds
/// it, and only the last one stays connected.
async fn racing_connect_test(backend: &str) {
    common::init_tracing();
    let cluster = Nodes::start(3, &config(backend));
    let addrs: Vec<SocketAddr> = cluster.nodes.iter().map(|n| n.mqtt).collect();
    let mut previous: Option<V4> = None;
    for i in 0..5 {
        let (c, present) = V4::connect(v4(addrs[i % addrs.len()], "relay", false)).await;
        assert_eq!(present, i > 0, "{backend}: racer {i} session present");
        if let Some(mut p) = previous.take() {
            // Closed before this CONNACK: its loop already ended or ends at once.
            let closed = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    match p.events.recv().await {
                        Some(Ok(_)) => {}
                        _ => return,
                    }
                }
            })
            .await;
            assert!(closed.is_ok(), "{backend}: racer {} still connected after racer {i}", i - 1);
        }
        previous = Some(c);
    }
}

/// A client id with a persistent session and queued messages on vmq1 reconnects on vmq2 with
/// clean start: no session present, none of the old messages, and the old session is gone
/// from vmq1 (a later resume there finds nothing).
async fn a_clean_start_elsewhere_discards_the_old_session_and_its_messages(backend: &str) {
    common::init_tracing();
    let cluster = Nodes::start(3, &config(backend));
    let (n1, n2) = (cluster.node(0).mqtt, cluster.node(1).mqtt);
    let (mut sub, _) = V4::connect(v4(n1, "fresh", false)).await;
    sub.subscribe("fresh/t", QoS::AtLeastOnce).await;
    sub.client.disconnect().await.unwrap();
    while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_secs(5), sub.events.recv()).await {}
    let (mut publisher, _) = V4::connect(v4(n1, "fresh-pub", true)).await;
    publisher.client.publish("fresh/t", QoS::AtLeastOnce, false, b"old".to_vec()).await.unwrap();
    while !matches!(publisher.next().await.unwrap(), Event::Incoming(Packet::PubAck(_))) {}

    let (mut clean, present) = V4::connect(v4(n2, "fresh", true)).await;
    assert!(!present, "{backend}: a clean start never resumes");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), async {
            loop {
                if let Ok(Event::Incoming(Packet::Publish(p))) = clean.next().await {
                    return p;
                }
            }
        })
        .await
        .is_err(),
        "{backend}: a clean session received an old message"
    );
    clean.client.disconnect().await.unwrap();
    while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_secs(5), clean.events.recv()).await {}
    let (_, present) = V4::connect(v4(n1, "fresh", false)).await;
    assert!(!present, "{backend}: the old session on vmq1 must be gone");
}

/// VerneMQ's `aborted_queue_migration_test`, with a harder fault: the node a queue drains from
/// is killed with SIGKILL in the middle of the drain and restarted; every acknowledged message
/// still reaches the client on its new node (at least once: QoS 1).
async fn aborted_queue_migration_test(backend: &str) {
    common::init_tracing();
    const N: u32 = 5000;
    // One message per step makes the drain long enough to be cut in the middle.
    let mut cluster = Nodes::start(3, &format!("{}max_msgs_per_drain_step = 1\n", config(backend)));
    let (n1, n2, n3) = (cluster.node(0).mqtt, cluster.node(1).mqtt, cluster.node(2).mqtt);
    let (mut sub, _) = V4::connect(v4(n1, "aborted", false)).await;
    sub.subscribe("aborted/t", QoS::AtLeastOnce).await;
    routable(n2, &mut sub, "aborted/t").await;
    sub.client.disconnect().await.unwrap();
    while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_secs(5), sub.events.recv()).await {}
    let (mut publisher, _) = V4::connect(v4(n2, "aborted-pub", true)).await;
    for i in 0..N {
        publisher.client.publish("aborted/t", QoS::AtLeastOnce, false, i.to_be_bytes().to_vec()).await.unwrap();
    }
    let mut acked = 0;
    while acked < N {
        if let Event::Incoming(Packet::PubAck(_)) = publisher.next().await.unwrap() {
            acked += 1;
        }
    }

    let (mut resumed, present) = V4::connect(v4(n3, "aborted", false)).await;
    assert!(present);
    let mut seen = BTreeSet::new();
    let first = resumed.publish_event().await;
    seen.insert(u32::from_be_bytes(first.payload[..4].try_into().unwrap()));
    cluster.kill_and_restart(0);
    // The restarted node finds the rest of the queue and resumes the drain.
    cluster.node(0).wait_for_log("queue migration started", Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < N as usize {
        let left = deadline.saturating_duration_since(Instant::now());
        let p = match tokio::time::timeout(left, resumed.events.recv()).await {
            Ok(Some(Ok(Event::Incoming(Packet::Publish(p))))) => p,
            Ok(Some(Ok(_))) => continue,
            other => panic!("{backend}: {} of {N} messages arrived, then {other:?}", seen.len()),
        };
        seen.insert(u32::from_be_bytes(p.payload[..4].try_into().unwrap()));
    }
}

/// `coordinate_registrations = off`: every node registers on its own (no leader), and the
/// client id's session on another node is still closed, with its persistent session handed over.
async fn without_coordination_the_older_session_is_closed_too(backend: &str) {
    common::init_tracing();
    let cluster = Nodes::start(3, &format!("{}coordinate_registrations = off\n", config(backend)));
    let (n1, n2) = (cluster.node(0).mqtt, cluster.node(1).mqtt);
    let (mut first, _) = V4::connect(v4(n1, "uncoordinated", false)).await;
    first.subscribe("uncoordinated/t", QoS::AtLeastOnce).await;
    routable(n2, &mut first, "uncoordinated/t").await;
    let (mut second, present) = V4::connect(v4(n2, "uncoordinated", false)).await;
    assert!(present, "{backend}: the session moved from vmq1");
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match first.events.recv().await {
                Some(Ok(_)) => {}
                _ => return,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "{backend}: the connection on vmq1 is still open");
    // The subscription moved with the session: a publish on vmq1 reaches vmq2.
    routable(n1, &mut second, "uncoordinated/t").await;
}

/// QoS 1 messages delivered to a connection on vmq1 and not yet acknowledged when the client id
/// reconnects on vmq2 are sent again there, with DUP set and the same packet ids (the in-flight
/// state moves with the session).
async fn messages_in_flight_at_a_takeover_come_again_on_the_new_node_with_their_packet_ids(backend: &str) {
    common::init_tracing();
    let cluster = Nodes::start(3, &config(backend));
    let (n1, n2) = (cluster.node(0).mqtt, cluster.node(1).mqtt);
    let mut o = v4(n1, "unacked", false);
    o.set_manual_acks(true);
    let (mut first, _) = V4::connect(o).await;
    first.subscribe("unacked/t", QoS::AtLeastOnce).await;
    let (publisher, _) = V4::connect(v4(n1, "unacked-pub", true)).await;
    for i in 0..10u8 {
        publisher.client.publish("unacked/t", QoS::AtLeastOnce, false, vec![i]).await.unwrap();
    }
    let mut sent = Vec::new();
    while sent.len() < 10 {
        let p = first.publish_event().await;
        sent.push((p.pkid, p.payload[0]));
    }
    // Never acknowledged: the client id moves to vmq2.
    let (mut second, present) = V4::connect(v4(n2, "unacked", false)).await;
    assert!(present, "{backend}");
    let mut again = Vec::new();
    while again.len() < 10 {
        let p = second.publish_event().await;
        assert!(p.dup, "{backend}: a resend must have DUP set: {p:?}");
        again.push((p.pkid, p.payload[0]));
    }
    assert_eq!(again, sent, "{backend}: the same messages with the same packet ids, in order");
}

/// A publisher keeps publishing while its subscriber's session migrates from vmq1 to vmq3 (in
/// small drain steps): the backlog arrives first and in order, what reaches vmq3 directly waits
/// behind it, and nothing acknowledged is missing.
async fn backlog_first_and_nothing_missing_while_a_publisher_goes_on_during_a_migration(backend: &str) {
    common::init_tracing();
    const BACKLOG: u32 = 2000;
    const DURING: u32 = 2000;
    let cluster = Nodes::start(3, &format!("{}max_msgs_per_drain_step = 10\n", config(backend)));
    let (n1, n2, n3) = (cluster.node(0).mqtt, cluster.node(1).mqtt, cluster.node(2).mqtt);
    let (mut sub, _) = V4::connect(v4(n1, "ordered", false)).await;
    sub.subscribe("ordered/t", QoS::AtLeastOnce).await;
    routable(n2, &mut sub, "ordered/t").await;
    sub.client.disconnect().await.unwrap();
    while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_secs(5), sub.events.recv()).await {}
    let (mut publisher, _) = V4::connect(v4(n2, "ordered-pub", true)).await;
    for i in 0..BACKLOG {
        publisher.client.publish("ordered/t", QoS::AtLeastOnce, false, i.to_be_bytes().to_vec()).await.unwrap();
    }
    let mut acked = 0;
    while acked < BACKLOG {
        if let Event::Incoming(Packet::PubAck(_)) = publisher.next().await.unwrap() {
            acked += 1;
        }
    }
    // Publishing goes on while the session moves.
    let publishing = tokio::spawn(async move {
        for i in BACKLOG..BACKLOG + DURING {
            publisher.client.publish("ordered/t", QoS::AtLeastOnce, false, i.to_be_bytes().to_vec()).await.unwrap();
        }
        let mut acked = 0;
        while acked < DURING {
            if let Event::Incoming(Packet::PubAck(_)) = publisher.next().await.unwrap() {
                acked += 1;
            }
        }
    });
    let (mut moved, present) = V4::connect(v4(n3, "ordered", false)).await;
    assert!(present);
    let mut seen = std::collections::BTreeSet::new();
    let mut next_backlog = 0u32;
    while seen.len() < (BACKLOG + DURING) as usize {
        let p = moved.publish_event().await;
        let n = u32::from_be_bytes(p.payload[..4].try_into().unwrap());
        if n < BACKLOG && !seen.contains(&n) {
            assert_eq!(n, next_backlog, "{backend}: backlog message {next_backlog} expected, {n} arrived");
            next_backlog += 1;
        } else if n >= BACKLOG {
            assert_eq!(next_backlog, BACKLOG, "{backend}: message {n} overtook the backlog at {next_backlog}");
        }
        seen.insert(n);
    }
    publishing.await.unwrap();
}

/// The node a queue drains *to* is killed with SIGKILL in the middle of the drain (once its
/// registration has reached the old node): the old node keeps what it has not seen stored, and
/// once the new node is back (its session restored from disk) the drain goes on; the client
/// reconnecting there gets every message (at least once).
async fn a_migration_whose_new_node_is_killed_resumes_after_its_restart(backend: &str) {
    common::init_tracing();
    const N: u32 = 5000;
    let mut cluster = Nodes::start(3, &format!("{}max_msgs_per_drain_step = 1\n", config(backend)));
    let (n1, n2, n3) = (cluster.node(0).mqtt, cluster.node(1).mqtt, cluster.node(2).mqtt);
    let (mut sub, _) = V4::connect(v4(n1, "target-killed", false)).await;
    sub.subscribe("target/t", QoS::AtLeastOnce).await;
    routable(n2, &mut sub, "target/t").await;
    sub.client.disconnect().await.unwrap();
    while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_secs(5), sub.events.recv()).await {}
    let (mut publisher, _) = V4::connect(v4(n2, "target-pub", true)).await;
    for i in 0..N {
        publisher.client.publish("target/t", QoS::AtLeastOnce, false, i.to_be_bytes().to_vec()).await.unwrap();
    }
    let mut acked = 0;
    while acked < N {
        if let Event::Incoming(Packet::PubAck(_)) = publisher.next().await.unwrap() {
            acked += 1;
        }
    }
    let (mut resumed, present) = V4::connect(v4(n3, "target-killed", false)).await;
    assert!(present);
    let first = resumed.publish_event().await;
    let mut seen = BTreeSet::new();
    seen.insert(u32::from_be_bytes(first.payload[..4].try_into().unwrap()));
    // vmq1 has the new registration (so vmq3 has it on disk: a node persists its metadata
    // before sending it): from here on vmq3 is the session's home, whatever happens to it.
    cluster.node(0).wait_for_log("queue migration: routing to the new node only", Duration::from_secs(20));
    cluster.kill_and_restart(2);
    // What the first connection received (and acknowledged) before the kill counts.
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(1), resumed.events.recv()).await {
        if let Ok(Event::Incoming(Packet::Publish(p))) = event {
            seen.insert(u32::from_be_bytes(p.payload[..4].try_into().unwrap()));
        }
    }
    cluster.wait_all_running();
    let n3 = cluster.node(2).mqtt;
    let (mut again, present) = V4::connect(v4(n3, "target-killed", false)).await;
    assert!(present, "{backend}: the session is restored on the restarted node");
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < N as usize {
        let left = deadline.saturating_duration_since(Instant::now());
        let p = match tokio::time::timeout(left, again.events.recv()).await {
            Ok(Some(Ok(Event::Incoming(Packet::Publish(p))))) => p,
            Ok(Some(Ok(_))) => continue,
            other => panic!("{backend}: {} of {N} messages arrived, then {other:?}", seen.len()),
        };
        seen.insert(u32::from_be_bytes(p.payload[..4].try_into().unwrap()));
    }
    let _ = n1;
}
