//! Listener and broker limits from `vernemq.conf`.

mod common;

use std::time::Duration;

use common::{RawClient, V4, wait_until};
use vmq_mqtt::{Packet, ProtocolVersion, ReasonCode};

#[tokio::test]
async fn max_connections_refuses_connections_over_the_limit() {
    let node = common::start(|cfg| cfg.listeners[0].max_connections = Some(1)).await;
    let (_first, ack) =
        RawClient::connect(node.mqtt_addr(), ProtocolVersion::V4, RawClient::connect_packet("one", true)).await;
    assert!(matches!(ack, Packet::ConnAck(_)));
    let mut second = RawClient::open(node.mqtt_addr(), ProtocolVersion::V4).await;
    second
        .send(&Packet::Connect(Box::new({
            let mut c = RawClient::connect_packet("two", true);
            c.protocol = Some(ProtocolVersion::V4);
            c
        })))
        .await;
    assert!(second.until_closed().await.is_empty(), "closed without CONNACK");
    node.shutdown().await;
}

#[tokio::test]
async fn max_connection_lifetime_disconnects_with_maximum_connect_time() {
    let node = common::start(|cfg| cfg.listeners[0].max_connection_lifetime = Some(Duration::from_millis(300))).await;
    let (mut c, _) =
        RawClient::connect(node.mqtt_addr(), ProtocolVersion::V5, RawClient::connect_packet("short", true)).await;
    let got = c.until_closed().await;
    assert!(
        got.iter().any(|p| matches!(p, Packet::Disconnect(d) if d.code == ReasonCode::MAXIMUM_CONNECT_TIME)),
        "{got:?}"
    );
    node.shutdown().await;
}

#[tokio::test]
async fn upgrade_outgoing_qos_delivers_at_the_subscription_qos() {
    let node = common::start(|cfg| cfg.mqtt.upgrade_outgoing_qos = true).await;
    let (mut sub, _) = V4::connect(V4::options(node.mqtt_addr(), "sub")).await;
    sub.subscribe("up", rumqttc::QoS::ExactlyOnce).await;
    let (p, _) = V4::connect(V4::options(node.mqtt_addr(), "pub")).await;
    p.client.publish("up", rumqttc::QoS::AtMostOnce, false, "x").await.unwrap();
    assert_eq!(sub.publish_event().await.qos, rumqttc::QoS::ExactlyOnce);
    node.shutdown().await;
}

#[tokio::test]
async fn persistent_client_expiration_removes_offline_sessions() {
    let node = common::start(|cfg| cfg.mqtt.persistent_client_expiration = Some(Duration::from_millis(500))).await;
    let mut opts = V4::options(node.mqtt_addr(), "old");
    opts.set_clean_session(false);
    let (mut c, _) = V4::connect(opts).await;
    c.subscribe("x", rumqttc::QoS::AtLeastOnce).await;
    c.client.disconnect().await.unwrap();
    let broker = node.broker().clone();
    let key = vmq_storage::QueueKey::new("", "old");
    wait_until("the persistent session expired", || broker.session(&key).is_none()).await;
    assert_eq!(broker.subscription_count(), 0);
    node.shutdown().await;
}

#[tokio::test]
async fn suppress_lwt_on_session_takeover_keeps_the_will_back() {
    let node = common::start(|cfg| cfg.mqtt.suppress_lwt_on_session_takeover = true).await;
    let addr = node.mqtt_addr();
    let (mut watcher, _) = V4::connect(V4::options(addr, "watcher")).await;
    watcher.subscribe("lwt/#", rumqttc::QoS::AtLeastOnce).await;
    let mut opts = V4::options(addr, "dup");
    opts.set_last_will(rumqttc::LastWill::new("lwt/dup", "gone", rumqttc::QoS::AtLeastOnce, false));
    let (_first, _) = V4::connect(opts.clone()).await;
    let (_second, _) = V4::connect(opts).await;
    let (p, _) = V4::connect(V4::options(addr, "marker")).await;
    p.client.publish("lwt/marker", rumqttc::QoS::AtLeastOnce, false, "m").await.unwrap();
    assert_eq!(watcher.publish_event().await.topic, "lwt/marker", "no will from the takeover");
    node.shutdown().await;
}

#[tokio::test]
async fn max_message_rate_throttles_without_losing_messages() {
    let node = common::start(|cfg| cfg.mqtt.max_message_rate = 5).await;
    let (mut sub, _) = V4::connect(V4::options(node.mqtt_addr(), "sub")).await;
    sub.subscribe("rate", rumqttc::QoS::AtLeastOnce).await;
    let (p, _) = V4::connect(V4::options(node.mqtt_addr(), "pub")).await;
    for i in 0..8u8 {
        p.client.publish("rate", rumqttc::QoS::AtLeastOnce, false, vec![i]).await.unwrap();
    }
    for i in 0..8u8 {
        assert_eq!(sub.publish_event().await.payload.as_ref(), &[i]);
    }
    // Eight publishes against a limit of five per second: the connection paused reading.
    assert!(node.broker().counters.rate_limited.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    node.shutdown().await;
}
