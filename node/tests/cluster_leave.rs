//! `vmq-admin cluster leave` against real `vernemq` processes, for both metadata backends:
//! VerneMQ's `cluster_leave_test`, `cluster_leave_myself_test` and `cluster_leave_dead_node_test`,
//! with the messages of the leaving node's offline queues counted on arrival.
// Test helpers stop the test on anything unexpected, as the tests themselves do.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::V4;
use common::nodes::session_options as v4;
use common::nodes::{NodeProcess, Nodes, wait_until};
use rumqttc::{Event, Packet, QoS};

fn config(backend: &str) -> String {
    format!(
        "metadata_plugin = {backend}\nmax_inflight_messages = 100\nmax_online_messages = -1\nmax_offline_messages = -1\n"
    )
}

both_backends!(cluster_leave_test, cluster_leave_myself_test, cluster_leave_dead_node_test);

/// A persistent client subscribed on `home` and offline again, with `n` QoS 1 messages
/// published (and acknowledged) on `publish_on` while it is away.
async fn offline_queue(home: SocketAddr, publish_on: SocketAddr, id: &str, topic: &str, n: u32) {
    let (mut sub, _) = V4::connect(v4(home, id, false)).await;
    sub.subscribe(topic, QoS::AtLeastOnce).await;
    // Routable from the publishing node before going offline.
    let (mut publisher, _) = V4::connect(v4(publish_on, &format!("{id}-pub"), true)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        publisher.client.publish(topic, QoS::AtMostOnce, false, b"probe".to_vec()).await.unwrap();
        if let Ok(Some(Ok(Event::Incoming(Packet::Publish(_))))) =
            tokio::time::timeout(Duration::from_millis(100), sub.events.recv()).await
        {
            break;
        }
        assert!(Instant::now() < deadline, "the subscription never became routable");
    }
    sub.client.disconnect().await.unwrap();
    while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_secs(5), sub.events.recv()).await {}
    for i in 0..n {
        publisher.client.publish(topic, QoS::AtLeastOnce, false, i.to_be_bytes().to_vec()).await.unwrap();
    }
    let mut acked = 0;
    while acked < n {
        if let Event::Incoming(Packet::PubAck(_)) = publisher.next().await.unwrap() {
            acked += 1;
        }
    }
}

/// Reconnects `id` on `addr`: session present, and the `n` messages in order.
async fn resume_and_count(addr: SocketAddr, id: &str, n: u32, backend: &str) {
    let (mut c, present) = V4::connect(v4(addr, id, false)).await;
    assert!(present, "{backend}: the session of {id} must be present on its new node");
    for expected in 0..n {
        let p = c.publish_event().await;
        let got = u32::from_be_bytes(p.payload[..4].try_into().unwrap());
        assert_eq!(got, expected, "{backend}: offline messages out of order");
    }
}

/// Asks `via` to make `leaving` leave with `-k -t 1`, then follows its progress until done.
fn leave_with_kill(via: &NodeProcess, leaving: &NodeProcess) -> Vec<String> {
    let (status, body) = via.http_get(&format!("/api/v1/cluster/leave?node={}&-k&timeout=1", leaving.name));
    assert_eq!(status, 200, "{body}");
    let mut lines = vec![body];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "the leave never finished: {lines:#?}");
        std::thread::sleep(Duration::from_millis(200));
        let (status, body) = via.http_get(&format!("/api/v1/cluster/leave-status?node={}", leaving.name));
        if status != 200 {
            // The leaving node answered for itself, and has stopped since.
            lines.push(format!("HTTP {status}"));
            break;
        }
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        lines.push(v["text"].as_str().unwrap_or_default().to_string());
        if v["status"]["done"] == true {
            break;
        }
    }
    lines
}

/// The leaving process exits by itself once it has left.
fn exits(node: &mut NodeProcess) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = node.child.try_wait() {
            assert!(status.success(), "{} exited with {status}", node.name);
            return;
        }
        assert!(Instant::now() < deadline, "{} still runs after leaving", node.name);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// VerneMQ's `cluster_leave_test`: vmq3 is asked (through vmq1) to leave with `-k`; its offline
/// queue moves with its 1,000 messages, the others see a departure, not a netsplit.
async fn cluster_leave_test(backend: &str) {
    common::init_tracing();
    let mut cluster = Nodes::start(3, &config(backend));
    let (n1, n3) = (cluster.node(0).mqtt, cluster.node(2).mqtt);
    offline_queue(n3, n1, "leaver", "leave/t", 1000).await;
    let lines = leave_with_kill(cluster.node(0), cluster.node(2));
    let last = lines.last().unwrap();
    assert!(last.contains("left the cluster") && last.contains("1/1 queues, 1000/1000 messages moved"), "{lines:#?}");
    exits(&mut cluster.nodes[2]);
    for n in &cluster.nodes[..2] {
        let members: Vec<String> = n.cluster_show().into_iter().map(|(name, _)| name).collect();
        assert_eq!(members.len(), 2, "{}: {members:?}", n.name);
        assert_eq!(n.metric("netsplit_detected"), 0, "{}: a graceful leave counted as a netsplit", n.name);
    }
    resume_and_count(n1, "leaver", 1000, backend).await;
}

/// VerneMQ's `cluster_leave_myself_test`: vmq3 is asked to leave on its own API.
async fn cluster_leave_myself_test(backend: &str) {
    common::init_tracing();
    let mut cluster = Nodes::start(3, &config(backend));
    let (n2, n3) = (cluster.node(1).mqtt, cluster.node(2).mqtt);
    offline_queue(n3, n2, "myself", "myself/t", 300).await;
    let lines = leave_with_kill(cluster.node(2), cluster.node(2));
    assert!(lines.iter().any(|l| l.contains("left the cluster")), "{lines:#?}");
    exits(&mut cluster.nodes[2]);
    wait_until("vmq1 and vmq2 see two members", Duration::from_secs(10), || {
        cluster.nodes[..2].iter().all(|n| n.cluster_show().len() == 2)
    });
    resume_and_count(n2, "myself", 300, backend).await;
}

/// VerneMQ's `cluster_leave_dead_node_test`: vmq2 is killed holding an offline persistent
/// session; its leave (through vmq1) re-homes the session, which queues what is published
/// from then on.
async fn cluster_leave_dead_node_test(backend: &str) {
    common::init_tracing();
    let mut cluster = Nodes::start(3, &config(backend));
    let (n1, n2) = (cluster.node(0).mqtt, cluster.node(1).mqtt);
    offline_queue(n2, n1, "orphan", "orphan/t", 0).await;
    let _ = cluster.nodes[1].child.kill();
    let _ = cluster.nodes[1].child.wait();
    let gone = cluster.nodes[1].name.clone();
    wait_until("vmq1 sees vmq2 down", Duration::from_secs(10), || {
        cluster.node(0).cluster_show().iter().any(|(n, up)| *n == gone && !up)
    });
    let (status, body) = cluster.node(0).http_get(&format!("/api/v1/cluster/leave?node={gone}"));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("1 of its 1 persistent sessions re-homed"), "{body}");
    wait_until("vmq1 and vmq3 see two members, all running", Duration::from_secs(10), || {
        [0, 2].iter().all(|&i| {
            let show = cluster.node(i).cluster_show();
            show.len() == 2 && show.iter().all(|(_, up)| *up)
        })
    });
    // Queued for the re-homed session from now on.
    let (mut publisher, _) = V4::connect(v4(n1, "orphan-pub", true)).await;
    for i in 0..10u32 {
        publisher.client.publish("orphan/t", QoS::AtLeastOnce, false, i.to_be_bytes().to_vec()).await.unwrap();
    }
    let mut acked = 0;
    while acked < 10 {
        if let Event::Incoming(Packet::PubAck(_)) = publisher.next().await.unwrap() {
            acked += 1;
        }
    }
    resume_and_count(n1, "orphan", 10, backend).await;
}
