//! Keys of `docs/configuration.md` whose effect no other test showed: each test starts from
//! `vernemq.conf` text, so it covers the key's parsing and its consumer together.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::RawClient;
use vmq_config::Config;
use vmq_mqtt::{
    Connect, Packet, PacketId, ProtocolVersion, PubResp, Publish, QoS, ReasonCode, Subscribe, SubscribeFilter,
    SubscriptionOptions, Will,
};
use vmq_node::server::Node;

/// A node configured by `text`, with its MQTT listeners and cluster endpoint moved to free
/// ports so that tests can run in parallel.
async fn start(text: &str) -> Node {
    common::init_tracing();
    let mut cfg = Config::parse(text, None).expect("the configuration parses");
    for l in &mut cfg.listeners {
        l.addr = SocketAddr::from(([127, 0, 0, 1], 0)).into();
    }
    common::set_delegated(&mut cfg, "listener.vmq.clustering", "127.0.0.1:0");
    Node::start(&cfg).await.expect("broker starts")
}

fn addr_of(node: &Node, listener: &str) -> SocketAddr {
    node.local_addrs().iter().find(|(n, _)| n == listener).map(|(_, a)| *a).expect("listener bound")
}

fn publish(topic: &str, qos: QoS, id: u16, payload: &'static [u8]) -> Packet {
    Packet::Publish(Publish {
        topic: topic.into(),
        qos,
        packet_id: (qos != QoS::AtMostOnce).then_some(PacketId(id)),
        payload: Bytes::from_static(payload),
        ..Default::default()
    })
}

async fn next_publish(c: &mut RawClient) -> Publish {
    loop {
        match c.recv().await {
            Some(Packet::Publish(p)) => return p,
            Some(_) => continue,
            None => panic!("connection closed while waiting for a PUBLISH"),
        }
    }
}

async fn subscribed(addr: SocketAddr, version: ProtocolVersion, connect: Connect, filter: &str, qos: QoS) -> RawClient {
    let (mut c, _) = RawClient::connect(addr, version, connect).await;
    c.send(&Packet::Subscribe(Subscribe {
        packet_id: PacketId(1),
        filters: vec![SubscribeFilter {
            filter: filter.into(),
            options: SubscriptionOptions { qos, ..Default::default() },
        }],
        ..Default::default()
    }))
    .await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    c
}

#[tokio::test]
async fn allow_anonymous_override_admits_anonymous_clients_on_its_listener_only() {
    let node = start(
        "allow_anonymous = off\n\
         listener.tcp.open = 127.0.0.1:1883\n\
         listener.tcp.closed = 127.0.0.1:1884\n\
         listener.tcp.open.allow_anonymous_override = on\n",
    )
    .await;
    let connect = RawClient::connect_packet("anon", true);
    let (_open, ack) = RawClient::connect(addr_of(&node, "open"), ProtocolVersion::V4, connect.clone()).await;
    assert!(matches!(ack, Packet::ConnAck(ref a) if a.code == ReasonCode::SUCCESS), "{ack:?}");
    let (_closed, ack) = RawClient::connect(addr_of(&node, "closed"), ProtocolVersion::V4, connect).await;
    assert!(matches!(ack, Packet::ConnAck(ref a) if a.code == ReasonCode::NOT_AUTHORIZED), "{ack:?}");
    node.shutdown().await;
}

#[tokio::test]
async fn mqtt_connect_timeout_closes_a_connection_that_sends_no_connect() {
    let node = start("allow_anonymous = on\nmqtt.connect.timeout = 200\n").await;
    let started = Instant::now();
    let mut silent = RawClient::open(node.mqtt_addr(), ProtocolVersion::V4).await;
    assert!(silent.until_closed().await.is_empty());
    // The default, 30 s, would outlast the test's wait.
    assert!(started.elapsed() < Duration::from_secs(5), "closed after {:?}", started.elapsed());
    node.shutdown().await;
}

#[tokio::test]
async fn max_last_will_delay_caps_the_will_delay_interval() {
    let node = start("allow_anonymous = on\nmax_last_will_delay = 1s\n").await;
    let addr = node.mqtt_addr();
    let mut watcher =
        subscribed(addr, ProtocolVersion::V5, RawClient::connect_packet("watch", true), "wd/#", QoS::AtLeastOnce).await;
    let mut connect = RawClient::connect_packet("delayed", false);
    connect.properties.session_expiry_interval = Some(3600);
    let mut will = Will {
        topic: "wd/will".into(),
        payload: Bytes::from_static(b"late"),
        qos: QoS::AtLeastOnce,
        ..Default::default()
    };
    will.properties.will_delay_interval = Some(3600);
    connect.will = Some(will);
    let (c, _) = RawClient::connect(addr, ProtocolVersion::V5, connect).await;
    drop(c);
    let (mut publ, _) = RawClient::connect(addr, ProtocolVersion::V5, RawClient::connect_packet("pub", true)).await;
    publ.send(&publish("wd/marker", QoS::AtMostOnce, 0, b"now")).await;
    // Still delayed (the marker comes first), but by 1 s, not the hour the client asked for:
    // `next_publish` gives up after common::WAIT.
    assert_eq!(next_publish(&mut watcher).await.topic.as_ref(), "wd/marker");
    assert_eq!(next_publish(&mut watcher).await.topic.as_ref(), "wd/will");
    node.shutdown().await;
}

#[tokio::test]
async fn receive_max_client_caps_messages_in_flight_towards_a_client() {
    let node = start("allow_anonymous = on\nreceive_max_client = 1\n").await;
    let addr = node.mqtt_addr();
    // The client announces no Receive Maximum (65535), so only receive_max_client limits.
    let mut sub =
        subscribed(addr, ProtocolVersion::V5, RawClient::connect_packet("slow", true), "w", QoS::AtLeastOnce).await;
    let (mut publ, _) = RawClient::connect(addr, ProtocolVersion::V5, RawClient::connect_packet("pub", true)).await;
    for (i, payload) in [&b"1"[..], b"2"].into_iter().enumerate() {
        publ.send(&publish("w", QoS::AtLeastOnce, i as u16 + 1, payload)).await;
        assert!(matches!(publ.recv().await, Some(Packet::PubAck(_))));
    }
    let first = next_publish(&mut sub).await;
    assert_eq!(first.payload.as_ref(), b"1");
    // One in flight: nothing more arrives until it is acknowledged.
    assert!(tokio::time::timeout(Duration::from_millis(300), sub.recv()).await.is_err(), "a second message was sent");
    sub.send(&Packet::PubAck(PubResp { packet_id: first.packet_id.unwrap(), ..Default::default() })).await;
    assert_eq!(next_publish(&mut sub).await.payload.as_ref(), b"2");
    node.shutdown().await;
}

/// Runs `vernemq console` on `text` until it exits; returns its console output.
fn console_until_exit(dir: &std::path::Path, text: &str) -> String {
    let conf = dir.join("vernemq.conf");
    std::fs::write(&conf, text).expect("configuration written");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vernemq"))
        .args(["console", "-c"])
        .arg(&conf)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .output()
        .expect("vernemq runs");
    assert!(!out.status.success(), "the node was expected to stop on its data directory");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    common::process::strip_ansi(&text)
}

#[test]
fn log_console_level_filters_the_console_log_and_warnings_name_silent_keys() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the data directory should be: the node logs its start, then stops with an
    // error, so every run ends by itself after the same log lines.
    let blocker = dir.path().join("not-a-directory");
    std::fs::write(&blocker, "").unwrap();
    let base = format!(
        "listener.tcp.default = 127.0.0.1:0\nlistener.vmq.clustering = 127.0.0.1:0\n\
         allow_anonymous = on\nplatform_data_dir = {}\nplumtree.outstanding_limit = 5\n",
        blocker.display()
    );
    let silent_key = "vernemq.conf:5: 'plumtree.outstanding_limit' has no effect yet";

    let info = console_until_exit(dir.path(), &format!("{base}log.console.level = info\n"));
    assert!(info.contains("starting vmq-rs"), "{info}");
    assert_eq!(info.matches(silent_key).count(), 1, "{info}");

    let warning = console_until_exit(dir.path(), &format!("{base}log.console.level = warning\n"));
    assert!(!warning.contains("starting vmq-rs"), "{warning}");
    assert_eq!(warning.matches(silent_key).count(), 1, "{warning}");
    assert!(warning.contains("cannot create the data directory"), "{warning}");
}

#[test]
fn vernemq_check_prints_the_warnings_of_the_example_configuration() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/vernemq.conf");
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_vernemq")).args(["check", "-c", example]).output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    for key in ["logging.obfuscation_secret", "listener.nr_of_acceptors"] {
        let needle = format!("'{key}' ");
        assert_eq!(
            stdout.lines().filter(|l| l.starts_with("warning: ") && l.contains(&needle)).count(),
            1,
            "{key}: {stdout}"
        );
    }
    assert!(stdout.ends_with(": ok\n"), "{stdout}");
}

#[test]
fn listener_vmqs_clustering_sets_the_cluster_address_over_listener_vmq_clustering() {
    use vmq_node::cluster::transport::TransportConfig;
    let read = |text: &str| {
        let cfg = Config::parse(text, None).expect("the configuration parses");
        TransportConfig::from_config(&cfg).expect("transport settings").listen
    };
    let vmqs: SocketAddr = "127.0.0.1:18884".parse().unwrap();
    assert_eq!(read("listener.vmqs.clustering = 127.0.0.1:18884\n"), vmqs);
    assert_eq!(read("listener.vmqs.clustering = 127.0.0.1:18884\nlistener.vmq.clustering = 127.0.0.1:18883\n"), vmqs);
}
