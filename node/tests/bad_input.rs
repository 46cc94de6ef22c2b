//! Malformed or hostile clients close their own connection with the right reason code and
//! affect no one else. Each test keeps a healthy rumqttc client connected and checks it still
//! works after the bad one was thrown out.
// Test helpers stop the test on anything unexpected, as the tests themselves do.
#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::{RawClient, V4};
use vmq_mqtt::{Disconnect, Packet, PacketId, ProtocolVersion, Publish, QoS, ReasonCode};

async fn healthy(addr: std::net::SocketAddr) -> V4 {
    let (mut c, _) = V4::connect(V4::options(addr, "healthy")).await;
    c.subscribe("health", rumqttc::QoS::AtLeastOnce).await;
    c
}

async fn still_works(addr: std::net::SocketAddr, c: &mut V4) {
    let (p, _) = V4::connect(V4::options(addr, "checker")).await;
    p.client.publish("health", rumqttc::QoS::AtLeastOnce, false, "ok").await.unwrap();
    assert_eq!(c.publish_event().await.payload.as_ref(), b"ok", "other clients are unaffected");
}

fn disconnect_code(packets: &[Packet]) -> Option<ReasonCode> {
    packets.iter().find_map(|p| match p {
        Packet::Disconnect(Disconnect { code, .. }) => Some(*code),
        _ => None,
    })
}

async fn v5_client(addr: std::net::SocketAddr, id: &str) -> RawClient {
    let (c, ack) = RawClient::connect(addr, ProtocolVersion::V5, RawClient::connect_packet(id, true)).await;
    assert!(matches!(ack, Packet::ConnAck(ref a) if a.code == ReasonCode::SUCCESS), "{ack:?}");
    c
}

#[tokio::test]
async fn packet_before_connect_closes_the_connection_mqtt_3_1_0_1() {
    let node = common::start(|_| {}).await;
    let mut h = healthy(node.mqtt_addr()).await;
    let mut c = RawClient::open(node.mqtt_addr(), ProtocolVersion::V4).await;
    c.send(&Packet::PingReq).await;
    assert!(c.until_closed().await.is_empty(), "closed without an answer");
    still_works(node.mqtt_addr(), &mut h).await;
    node.shutdown().await;
}

#[tokio::test]
async fn second_connect_is_a_protocol_error_mqtt_3_1_0_2() {
    let node = common::start(|_| {}).await;
    let mut h = healthy(node.mqtt_addr()).await;
    let mut c = v5_client(node.mqtt_addr(), "twice").await;
    let mut again = RawClient::connect_packet("twice", true);
    again.protocol = Some(ProtocolVersion::V5);
    c.send(&Packet::Connect(Box::new(again))).await;
    assert_eq!(disconnect_code(&c.until_closed().await), Some(ReasonCode::PROTOCOL_ERROR));
    still_works(node.mqtt_addr(), &mut h).await;
    node.shutdown().await;
}

#[tokio::test]
async fn unsupported_protocol_level_gets_connack_and_close_mqtt_3_1_2_2() {
    let node = common::start(|_| {}).await;
    let mut c = RawClient::open(node.mqtt_addr(), ProtocolVersion::V4).await;
    // CONNECT, protocol name "MQTT", level 9.
    c.send_bytes(&[0x10, 12, 0, 4, b'M', b'Q', b'T', b'T', 9, 0x02, 0, 60, 0, 0]).await;
    let got = c.until_closed().await;
    match got.as_slice() {
        [Packet::ConnAck(a)] => assert_eq!(a.code, ReasonCode::UNSUPPORTED_PROTOCOL_VERSION),
        other => panic!("expected one CONNACK, got {other:?}"),
    }
    node.shutdown().await;
}

#[tokio::test]
async fn malformed_remaining_length_closes_the_connection() {
    let node = common::start(|_| {}).await;
    let mut h = healthy(node.mqtt_addr()).await;
    let mut c = v5_client(node.mqtt_addr(), "badlen").await;
    // PUBLISH whose remaining length varint has five continuation bytes [MQTT-1.5.5].
    c.send_bytes(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x7f]).await;
    assert_eq!(disconnect_code(&c.until_closed().await), Some(ReasonCode::MALFORMED_PACKET));
    still_works(node.mqtt_addr(), &mut h).await;
    node.shutdown().await;
}

#[tokio::test]
async fn invalid_utf8_topic_closes_the_connection_mqtt_1_5_4_1() {
    let node = common::start(|_| {}).await;
    let mut h = healthy(node.mqtt_addr()).await;
    let mut c = v5_client(node.mqtt_addr(), "badutf8").await;
    // PUBLISH QoS 0, topic of 2 bytes 0xC3 0x28 (invalid UTF-8), no properties, no payload.
    c.send_bytes(&[0x30, 5, 0, 2, 0xc3, 0x28, 0]).await;
    assert_eq!(disconnect_code(&c.until_closed().await), Some(ReasonCode::MALFORMED_PACKET));
    still_works(node.mqtt_addr(), &mut h).await;
    node.shutdown().await;
}

#[tokio::test]
async fn wildcard_in_publish_topic_is_refused_mqtt_3_3_2_2() {
    let node = common::start(|_| {}).await;
    let mut h = healthy(node.mqtt_addr()).await;
    let mut c = v5_client(node.mqtt_addr(), "wild").await;
    // PUBLISH QoS 0, topic "a/+", no properties.
    c.send_bytes(&[0x30, 6, 0, 3, b'a', b'/', b'+', 0]).await;
    assert_eq!(disconnect_code(&c.until_closed().await), Some(ReasonCode::TOPIC_NAME_INVALID));
    still_works(node.mqtt_addr(), &mut h).await;
    node.shutdown().await;
}

#[tokio::test]
async fn topic_deeper_than_topic_max_depth_is_refused() {
    let node = common::start(|cfg| cfg.mqtt.topic_max_depth = 3).await;
    let mut h = healthy(node.mqtt_addr()).await;
    let mut c = v5_client(node.mqtt_addr(), "deep").await;
    c.send(&Packet::Publish(Publish { topic: "a/b/c/d".into(), ..Publish::default() })).await;
    assert_eq!(disconnect_code(&c.until_closed().await), Some(ReasonCode::TOPIC_NAME_INVALID));
    still_works(node.mqtt_addr(), &mut h).await;
    node.shutdown().await;
}

#[tokio::test]
async fn payload_over_max_message_size_is_refused() {
    let node = common::start(|cfg| cfg.mqtt.max_message_size = 16).await;
    let mut h = healthy(node.mqtt_addr()).await;
    let mut c = v5_client(node.mqtt_addr(), "big").await;
    c.send(&Packet::Publish(Publish { topic: "t".into(), payload: Bytes::from(vec![7u8; 17]), ..Publish::default() }))
        .await;
    assert_eq!(disconnect_code(&c.until_closed().await), Some(ReasonCode::PACKET_TOO_LARGE));
    still_works(node.mqtt_addr(), &mut h).await;
    node.shutdown().await;
}

#[tokio::test]
async fn oversize_packet_is_refused_from_its_header() {
    let node = common::start(|cfg| cfg.mqtt.max_message_size = 1024).await;
    let mut c = v5_client(node.mqtt_addr(), "huge").await;
    // Only the fixed header of a 200 MB PUBLISH: refused before any body arrives.
    c.send_bytes(&[0x30, 0x80, 0x80, 0xe4, 0x5f]).await;
    assert_eq!(disconnect_code(&c.until_closed().await), Some(ReasonCode::PACKET_TOO_LARGE));
    node.shutdown().await;
}

#[tokio::test]
async fn qos2_flood_beyond_receive_maximum_is_refused_mqtt_3_3_4_9() {
    let node = common::start(|cfg| cfg.mqtt.receive_max_broker = 2).await;
    let mut h = healthy(node.mqtt_addr()).await;
    let mut c = v5_client(node.mqtt_addr(), "flood").await;
    for id in 1..=3u16 {
        c.send(&Packet::Publish(Publish {
            topic: "f".into(),
            qos: QoS::ExactlyOnce,
            packet_id: Some(PacketId(id)),
            ..Publish::default()
        }))
        .await;
    }
    let got = c.until_closed().await;
    let recs = got.iter().filter(|p| matches!(p, Packet::PubRec(_))).count();
    assert_eq!(recs, 2, "the two within the window were accepted");
    assert_eq!(disconnect_code(&got), Some(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED));
    still_works(node.mqtt_addr(), &mut h).await;
    node.shutdown().await;
}

#[tokio::test]
async fn silent_client_is_closed_after_one_and_a_half_keep_alives_mqtt_3_1_2_24() {
    let node = common::start(|_| {}).await;
    let mut connect = RawClient::connect_packet("sleepy", true);
    connect.keep_alive = 1;
    let (mut c, _) = RawClient::connect(node.mqtt_addr(), ProtocolVersion::V5, connect).await;
    // A half-open peer: we never send again and the broker must give up on us.
    assert_eq!(disconnect_code(&c.until_closed().await), Some(ReasonCode::KEEP_ALIVE_TIMEOUT));
    node.shutdown().await;
}

#[tokio::test]
async fn takeover_tells_the_old_mqtt5_connection_why_mqtt_3_1_4_3() {
    let node = common::start(|_| {}).await;
    let mut old = v5_client(node.mqtt_addr(), "same-id").await;
    let _new = v5_client(node.mqtt_addr(), "same-id").await;
    let got = old.until_closed().await;
    assert_eq!(disconnect_code(&got), Some(ReasonCode::SESSION_TAKEN_OVER));
    let reason = got.iter().find_map(|p| match p {
        Packet::Disconnect(d) => d.properties.reason_string.clone(),
        _ => None,
    });
    assert_eq!(reason.as_deref(), Some("session taken over"), "reason string sent");
    node.shutdown().await;
}

#[tokio::test]
async fn anonymous_clients_are_refused_when_allow_anonymous_is_off() {
    let node = common::start(|cfg| cfg.mqtt.allow_anonymous = false).await;
    let (mut c, ack) =
        RawClient::connect(node.mqtt_addr(), ProtocolVersion::V4, RawClient::connect_packet("anon", true)).await;
    assert!(matches!(ack, Packet::ConnAck(ref a) if a.code == ReasonCode::NOT_AUTHORIZED), "{ack:?}");
    assert!(c.until_closed().await.is_empty());
    node.shutdown().await;
}

#[tokio::test]
async fn a_connect_larger_than_any_valid_one_is_closed_from_its_header() {
    // `max_message_size = 0` (VerneMQ's default): packets after CONNECT may be 256 MB.
    let node = common::start(|cfg| cfg.mqtt.allow_anonymous = true).await;
    let mut h = healthy(node.mqtt_addr()).await;
    let mut c = RawClient::open(node.mqtt_addr(), ProtocolVersion::V4).await;
    // Only the fixed header of a 200 MB CONNECT: closed before any body is buffered, well
    // before `mqtt.connect.timeout`.
    c.send_bytes(&[0x10, 0x80, 0x80, 0xe4, 0x5f]).await;
    assert!(c.until_closed().await.is_empty());

    // The longest fields a CONNECT may carry still get in.
    let mut connect = RawClient::connect_packet("big-but-valid", true);
    connect.username = Some("u".repeat(65_535));
    connect.password = Some(Bytes::from(vec![b'p'; 65_535]));
    connect.will = Some(vmq_mqtt::Will {
        topic: "w".repeat(65_535),
        payload: Bytes::from(vec![0u8; 65_535]),
        ..vmq_mqtt::Will::default()
    });
    let (_c, ack) = RawClient::connect(node.mqtt_addr(), ProtocolVersion::V4, connect).await;
    assert!(matches!(ack, Packet::ConnAck(ref a) if a.code == ReasonCode::SUCCESS), "{ack:?}");
    still_works(node.mqtt_addr(), &mut h).await;
    node.shutdown().await;
}
