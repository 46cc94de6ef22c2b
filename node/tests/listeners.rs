//! MQTT listeners started and stopped while the node runs (VerneMQ's `vmq-admin listener`
//! semantics: a stopped listener refuses new clients and keeps its connections unless told to
//! kill them), and listeners of transports that are not implemented.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

use common::{V4, wait_until};
use rumqttc::QoS;
use vmq_config::{ListenerConfig, Transport};
use vmq_node::listener::{ListenerError, Listeners};

/// The status code of `GET path` on the HTTP listener at `addr`.
async fn http_status(addr: SocketAddr, path: &'static str) -> u16 {
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).expect("HTTP listener up");
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").expect("request sent");
        let mut raw = String::new();
        s.read_to_string(&mut raw).expect("response read");
        raw.split_whitespace().nth(1).and_then(|code| code.parse().ok()).expect("a status line")
    })
    .await
    .expect("request task")
}

fn default_listener(listeners: &Listeners) -> (bool, usize) {
    let list = listeners.list();
    let info = list.iter().find(|l| l.spec.key() == "listener.tcp.default").expect("listener.tcp.default listed");
    (info.running, info.connections)
}

/// Waits until the rumqttc client's connection has ended.
async fn closed(client: &mut V4) {
    loop {
        if client.next().await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn stopped_listener_refuses_new_clients_keeps_open_ones_and_starts_again() {
    let node = common::start(|_| {}).await;
    let listeners = node.listeners().clone();
    let http = node.http_addrs()[0].1;
    let addr = node.mqtt_addr();
    let (mut a, _) = V4::connect(V4::options(addr, "a")).await;
    a.subscribe("t", QoS::AtLeastOnce).await;
    wait_until("the listener counts a's connection", || default_listener(&listeners) == (true, 1)).await;
    assert_eq!(http_status(http, "/health/listeners").await, 200);

    listeners.stop(Transport::Tcp, "default", false).await.expect("stopped");
    let refused = tokio::net::TcpStream::connect(addr).await.expect_err("a stopped listener accepts nothing");
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
    assert_eq!(default_listener(&listeners), (false, 1));
    assert_eq!(http_status(http, "/health/listeners").await, 503);
    a.client.publish("t", QoS::AtLeastOnce, false, "kept").await.expect("queued");
    assert_eq!(&a.publish_event().await.payload[..], b"kept");

    // Started again from what the registry kept, on the address it had.
    let spec = listeners.list()[0].spec.clone();
    let again = listeners.start(ListenerConfig::clone(&spec)).await.expect("started again");
    let again = again.inet().expect("an IP listener");
    assert_eq!(again, addr);
    assert!(matches!(
        listeners.start(ListenerConfig::clone(&spec)).await,
        Err(ListenerError::Running { key }) if key == "listener.tcp.default"
    ));
    let (mut b, _) = V4::connect(V4::options(again, "b")).await;
    b.client.publish("t", QoS::AtLeastOnce, false, "via the restarted listener").await.expect("queued");
    assert_eq!(&a.publish_event().await.payload[..], b"via the restarted listener");
    wait_until("both connections are counted", || default_listener(&listeners) == (true, 2)).await;
    assert_eq!(http_status(http, "/health/listeners").await, 200);

    // Killing closes the connections of both runs.
    listeners.stop(Transport::Tcp, "default", true).await.expect("stopped");
    closed(&mut a).await;
    closed(&mut b).await;
    wait_until("no connection is left", || default_listener(&listeners) == (false, 0)).await;
    assert!(matches!(
        listeners.stop(Transport::Tcp, "nope", false).await,
        Err(ListenerError::Unknown { key }) if key == "listener.tcp.nope"
    ));
    node.shutdown().await;
}

#[tokio::test]
async fn listener_started_at_runtime_serves_its_own_mountpoint() {
    let node = common::start(|_| {}).await;
    let mut spec = ListenerConfig::new(Transport::Tcp, "isolated", "127.0.0.1:0".parse().expect("an address"));
    spec.mountpoint = "other".into();
    let isolated = node.listeners().start(spec).await.expect("started").inet().expect("an IP listener");
    let (mut inside, _) = V4::connect(V4::options(isolated, "inside")).await;
    inside.subscribe("t", QoS::AtMostOnce).await;
    let (mut outside, _) = V4::connect(V4::options(node.mqtt_addr(), "outside")).await;
    outside.client.publish("t", QoS::AtMostOnce, false, "default mountpoint").await.expect("queued");
    // A connection's packets are handled in order: once this SUBACK is back, the publish
    // above has been routed.
    outside.subscribe("sync", QoS::AtMostOnce).await;
    let (same, _) = V4::connect(V4::options(isolated, "same")).await;
    same.client.publish("t", QoS::AtMostOnce, false, "mountpoint other").await.expect("queued");
    assert_eq!(&inside.publish_event().await.payload[..], b"mountpoint other");
    let keys: Vec<String> = node.listeners().list().iter().map(|l| l.spec.key()).collect();
    assert_eq!(keys, ["listener.tcp.default", "listener.tcp.isolated"]);
    node.shutdown().await;
}

#[tokio::test]
async fn listeners_with_unusable_settings_are_refused_naming_the_setting() {
    let node = common::start(|_| {}).await;
    let mut ws = ListenerConfig::new(Transport::Ws, "web", "127.0.0.1:0".parse().expect("an address"));
    ws.transport_settings.insert("max_header_value_length".into(), "lots".into());
    let err = node.listeners().start(ws).await.expect_err("a bad header limit");
    assert!(matches!(err, ListenerError::Setting(_)), "{err:?}");
    assert!(err.to_string().contains("listener.ws.web.max_header_value_length = lots"), "{err}");
    let mut ssl = ListenerConfig::new(Transport::Ssl, "default", "127.0.0.1:0".parse().expect("an address"));
    ssl.transport_settings.insert("certfile".into(), "/nonexistent/cert.pem".into());
    ssl.transport_settings.insert("keyfile".into(), "/nonexistent/key.pem".into());
    let err = node.listeners().start(ssl).await.expect_err("no certificate");
    assert!(matches!(err, ListenerError::Tls(_)), "{err:?}");
    assert!(
        err.to_string().contains("listener.ssl.default") && err.to_string().contains("/nonexistent/cert.pem"),
        "{err}"
    );
    let listed: Vec<Arc<ListenerConfig>> = node.listeners().list().into_iter().map(|l| l.spec).collect();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].transport, Transport::Tcp);
    node.shutdown().await;
}

#[tokio::test]
async fn a_connection_flood_on_one_listener_does_not_starve_another() {
    let node = common::start(|cfg| {
        cfg.listeners[0].max_connections = Some(3);
        cfg.listeners.push(ListenerConfig::new(Transport::Tcp, "other", "127.0.0.1:0".parse().expect("an address")));
    })
    .await;
    let addr = |name: &str| node.local_addrs().iter().find(|(n, _)| n == name).map(|(_, a)| *a).expect("bound");
    let (flooded, other) = (addr("default"), addr("other"));
    // Clients that connect and never send CONNECT: three pin the flooded listener's slots
    // (until mqtt.connect.timeout), the rest are closed at once.
    let mut idle = Vec::new();
    for _ in 0..50 {
        idle.push(tokio::net::TcpStream::connect(flooded).await.expect("TCP accepted by the OS"));
    }
    wait_until("the flooded listener holds its 3 slots", || default_listener(node.listeners()).1 == 3).await;
    let mut refused = 0;
    for s in &mut idle {
        let mut byte = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(std::time::Duration::from_millis(200), s.peek(&mut byte)).await {
            refused += 1;
        }
    }
    assert_eq!(refused, 47, "connections beyond max_connections are closed at once");
    // The other listener serves a client as if nothing happened.
    let (mut c, _) = V4::connect(V4::options(other, "unaffected")).await;
    c.subscribe("t", QoS::AtLeastOnce).await;
    c.client.publish("t", QoS::AtLeastOnce, false, "ok").await.expect("queued");
    assert_eq!(c.publish_event().await.payload.as_ref(), b"ok");
    drop(idle);
    node.shutdown().await;
}

#[tokio::test]
async fn max_connection_rate_paces_accepting_beyond_a_one_second_burst() {
    const RATE: u32 = 20;
    const CLIENTS: usize = 60;
    let node = common::start(|cfg| cfg.listeners[0].max_connection_rate = Some(RATE)).await;
    let addr = node.mqtt_addr();
    let started = std::time::Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            tokio::spawn(async move {
                let mut c = common::RawClient::open(addr, vmq_mqtt::ProtocolVersion::V4).await;
                let connect = common::RawClient::connect_packet(&format!("paced-{i}"), true);
                c.send(&vmq_mqtt::Packet::Connect(Box::new(connect))).await;
                let ack = c.recv().await;
                assert!(matches!(ack, Some(vmq_mqtt::Packet::ConnAck(_))), "{ack:?}");
                c
            })
        })
        .collect();
    let mut open = Vec::new();
    for c in clients {
        open.push(c.await.expect("client task"));
    }
    // The first second's worth goes through at once; the other 40 take 2 s at 20 a second.
    // (A lower bound only: a slow machine makes it longer, never shorter.)
    let took = started.elapsed();
    let paced = std::time::Duration::from_secs_f64((CLIENTS as f64 - f64::from(RATE)) / f64::from(RATE));
    assert!(took >= paced.mul_f64(0.9), "{CLIENTS} clients were accepted in {took:?} at {RATE}/s");
    node.shutdown().await;
}
