//! QoS flows, the inflight window, retries, resends and aliases, observed packet by packet
//! with a raw client (no library would let us withhold acknowledgements on purpose).

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::RawClient;
use vmq_mqtt::{
    Connect, Packet, PacketId, ProtocolVersion, PubResp, Publish, QoS, ReasonCode, Subscribe, SubscribeFilter,
    SubscriptionOptions, Will,
};

fn subscribe(filter: &str, qos: QoS) -> Packet {
    Packet::Subscribe(Subscribe {
        packet_id: PacketId(1),
        filters: vec![SubscribeFilter {
            filter: filter.into(),
            options: SubscriptionOptions { qos, ..Default::default() },
        }],
        ..Default::default()
    })
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

async fn subscribed(
    addr: std::net::SocketAddr,
    version: ProtocolVersion,
    connect: Connect,
    filter: &str,
    qos: QoS,
) -> RawClient {
    let (mut c, _) = RawClient::connect(addr, version, connect).await;
    c.send(&subscribe(filter, qos)).await;
    assert!(matches!(c.recv().await, Some(Packet::SubAck(_))));
    c
}

#[tokio::test]
async fn inflight_window_holds_back_messages_until_acknowledged() {
    let node = common::start(|cfg| cfg.mqtt.max_inflight_messages = 2).await;
    let addr = node.mqtt_addr();
    let mut sub =
        subscribed(addr, ProtocolVersion::V4, RawClient::connect_packet("slow", true), "w", QoS::AtLeastOnce).await;
    let (mut publ, _) = RawClient::connect(addr, ProtocolVersion::V4, RawClient::connect_packet("pub", true)).await;
    for (i, payload) in [&b"1"[..], b"2", b"3", b"4"].into_iter().enumerate() {
        publ.send(&publish("w", QoS::AtLeastOnce, i as u16 + 1, payload)).await;
        assert!(matches!(publ.recv().await, Some(Packet::PubAck(_))));
    }
    let first = next_publish(&mut sub).await;
    let second = next_publish(&mut sub).await;
    assert_eq!((first.payload.as_ref(), second.payload.as_ref()), (&b"1"[..], &b"2"[..]));
    // Two in flight: the third comes only after an acknowledgement, and it is the third.
    sub.send(&Packet::PubAck(PubResp { packet_id: first.packet_id.unwrap(), ..Default::default() })).await;
    let third = next_publish(&mut sub).await;
    assert_eq!(third.payload.as_ref(), b"3");
    assert_ne!(third.packet_id, second.packet_id, "packet ids in flight are distinct [MQTT-2.2.1-3]");
    node.shutdown().await;
}

#[tokio::test]
async fn unacknowledged_message_is_retried_with_dup_in_mqtt_3() {
    let node = common::start(|cfg| cfg.mqtt.retry_interval = Duration::from_millis(200)).await;
    let addr = node.mqtt_addr();
    let mut sub =
        subscribed(addr, ProtocolVersion::V4, RawClient::connect_packet("forgetful", true), "r", QoS::AtLeastOnce)
            .await;
    let (mut publ, _) = RawClient::connect(addr, ProtocolVersion::V4, RawClient::connect_packet("pub", true)).await;
    publ.send(&publish("r", QoS::AtLeastOnce, 1, b"again")).await;
    let first = next_publish(&mut sub).await;
    assert!(!first.dup);
    let retry = next_publish(&mut sub).await;
    assert!(retry.dup, "DUP set on redelivery [MQTT-3.3.1-1]");
    assert_eq!(retry.packet_id, first.packet_id, "same packet id");
    node.shutdown().await;
}

#[tokio::test]
async fn inflight_messages_are_resent_on_reconnect_with_their_ids_mqtt_4_4_0_1() {
    let node = common::start(|_| {}).await;
    let addr = node.mqtt_addr();
    let mut connect = RawClient::connect_packet("resume", false);
    connect.properties.session_expiry_interval = Some(60);
    let mut sub = subscribed(addr, ProtocolVersion::V5, connect.clone(), "re", QoS::ExactlyOnce).await;
    let (mut publ, _) = RawClient::connect(addr, ProtocolVersion::V5, RawClient::connect_packet("pub", true)).await;
    publ.send(&publish("re", QoS::AtLeastOnce, 1, b"q1")).await;
    publ.send(&publish("re", QoS::ExactlyOnce, 2, b"q2")).await;
    let a = next_publish(&mut sub).await;
    let b = next_publish(&mut sub).await;
    drop(sub);
    let (mut sub, ack) = RawClient::connect(addr, ProtocolVersion::V5, connect).await;
    assert!(matches!(ack, Packet::ConnAck(ref c) if c.session_present));
    let a2 = next_publish(&mut sub).await;
    let b2 = next_publish(&mut sub).await;
    assert_eq!((a2.packet_id, a2.payload.clone(), a2.dup), (a.packet_id, a.payload.clone(), true));
    assert_eq!((b2.packet_id, b2.payload.clone(), b2.dup), (b.packet_id, b.payload.clone(), true));
    node.shutdown().await;
}

#[tokio::test]
async fn qos2_incoming_is_routed_once_despite_resends_mqtt_4_3_3() {
    let node = common::start(|_| {}).await;
    let addr = node.mqtt_addr();
    let mut sub =
        subscribed(addr, ProtocolVersion::V4, RawClient::connect_packet("sub", true), "x2", QoS::AtMostOnce).await;
    let (mut publ, _) = RawClient::connect(addr, ProtocolVersion::V4, RawClient::connect_packet("pub", true)).await;
    publ.send(&publish("x2", QoS::ExactlyOnce, 9, b"once")).await;
    assert!(matches!(publ.recv().await, Some(Packet::PubRec(r)) if r.packet_id == PacketId(9)));
    // The client did not see PUBREC and sends again with DUP: acknowledged, not re-routed.
    if let Packet::Publish(mut p) = publish("x2", QoS::ExactlyOnce, 9, b"once") {
        p.dup = true;
        publ.send(&Packet::Publish(p)).await;
    }
    assert!(matches!(publ.recv().await, Some(Packet::PubRec(_))));
    publ.send(&Packet::PubRel(PubResp { packet_id: PacketId(9), ..Default::default() })).await;
    assert!(matches!(publ.recv().await, Some(Packet::PubComp(r)) if r.code == ReasonCode::SUCCESS));
    publ.send(&publish("x2", QoS::AtMostOnce, 0, b"marker")).await;
    assert_eq!(next_publish(&mut sub).await.payload.as_ref(), b"once");
    assert_eq!(next_publish(&mut sub).await.payload.as_ref(), b"marker", "no second copy");
    node.shutdown().await;
}

#[tokio::test]
async fn qos2_outgoing_flow_pubrec_pubrel_pubcomp_mqtt_4_3_3() {
    let node = common::start(|_| {}).await;
    let addr = node.mqtt_addr();
    let mut sub =
        subscribed(addr, ProtocolVersion::V5, RawClient::connect_packet("sub", true), "q2", QoS::ExactlyOnce).await;
    let (mut publ, _) = RawClient::connect(addr, ProtocolVersion::V5, RawClient::connect_packet("pub", true)).await;
    publ.send(&publish("q2", QoS::ExactlyOnce, 3, b"x")).await;
    let p = next_publish(&mut sub).await;
    assert_eq!(p.qos, QoS::ExactlyOnce);
    let id = p.packet_id.unwrap();
    sub.send(&Packet::PubRec(PubResp { packet_id: id, ..Default::default() })).await;
    assert!(matches!(sub.recv().await, Some(Packet::PubRel(r)) if r.packet_id == id));
    sub.send(&Packet::PubComp(PubResp { packet_id: id, ..Default::default() })).await;
    sub.send(&Packet::PingReq).await;
    assert!(matches!(sub.recv().await, Some(Packet::PingResp)), "nothing resent after PUBCOMP");
    node.shutdown().await;
}

#[tokio::test]
async fn server_uses_topic_aliases_towards_the_client_mqtt_3_3_2_12() {
    let node = common::start(|cfg| cfg.mqtt.topic_alias_max_client = 4).await;
    let addr = node.mqtt_addr();
    let mut connect = RawClient::connect_packet("aliased", true);
    connect.properties.topic_alias_maximum = Some(4);
    let mut sub = subscribed(addr, ProtocolVersion::V5, connect, "al/#", QoS::AtMostOnce).await;
    let (mut publ, _) = RawClient::connect(addr, ProtocolVersion::V5, RawClient::connect_packet("pub", true)).await;
    publ.send(&publish("al/one", QoS::AtMostOnce, 0, b"1")).await;
    publ.send(&publish("al/one", QoS::AtMostOnce, 0, b"2")).await;
    let first = next_publish(&mut sub).await;
    let second = next_publish(&mut sub).await;
    assert_eq!(first.topic.as_ref(), "al/one");
    let alias = first.properties.topic_alias.expect("alias assigned");
    assert!((1..=4).contains(&alias));
    assert_eq!((second.topic.as_ref(), second.properties.topic_alias), ("", Some(alias)));
    node.shutdown().await;
}

#[tokio::test]
async fn messages_over_the_clients_maximum_packet_size_are_not_sent_mqtt_3_1_2_25() {
    let node = common::start(|_| {}).await;
    let addr = node.mqtt_addr();
    let mut connect = RawClient::connect_packet("small", true);
    connect.properties.maximum_packet_size = Some(64);
    let mut sub = subscribed(addr, ProtocolVersion::V5, connect, "m", QoS::AtLeastOnce).await;
    let (mut publ, _) = RawClient::connect(addr, ProtocolVersion::V5, RawClient::connect_packet("pub", true)).await;
    publ.send(&publish("m", QoS::AtLeastOnce, 1, &[b'x'; 200])).await;
    publ.send(&publish("m", QoS::AtLeastOnce, 2, b"fits")).await;
    assert_eq!(next_publish(&mut sub).await.payload.as_ref(), b"fits");
    node.shutdown().await;
}

#[tokio::test]
async fn will_delay_postpones_the_will_mqtt_3_1_3_9() {
    let node = common::start(|_| {}).await;
    let addr = node.mqtt_addr();
    let mut watcher =
        subscribed(addr, ProtocolVersion::V5, RawClient::connect_packet("watch", true), "wd/#", QoS::AtLeastOnce).await;
    let mut connect = RawClient::connect_packet("delayed", false);
    connect.properties.session_expiry_interval = Some(60);
    let mut will = Will {
        topic: "wd/will".into(),
        payload: Bytes::from_static(b"late"),
        qos: QoS::AtLeastOnce,
        ..Default::default()
    };
    will.properties.will_delay_interval = Some(1);
    connect.will = Some(will);
    let (c, _) = RawClient::connect(addr, ProtocolVersion::V5, connect).await;
    drop(c);
    let (mut publ, _) = RawClient::connect(addr, ProtocolVersion::V5, RawClient::connect_packet("pub", true)).await;
    publ.send(&publish("wd/marker", QoS::AtMostOnce, 0, b"now")).await;
    // The marker, published after the connection broke, arrives before the delayed will.
    assert_eq!(next_publish(&mut watcher).await.topic.as_ref(), "wd/marker");
    assert_eq!(next_publish(&mut watcher).await.topic.as_ref(), "wd/will");
    node.shutdown().await;
}

#[tokio::test]
async fn unsubscribe_reports_missing_subscriptions_in_mqtt_5() {
    let node = common::start(|_| {}).await;
    let mut c = subscribed(
        node.mqtt_addr(),
        ProtocolVersion::V5,
        RawClient::connect_packet("u", true),
        "have",
        QoS::AtMostOnce,
    )
    .await;
    c.send(&Packet::Unsubscribe(vmq_mqtt::Unsubscribe {
        packet_id: PacketId(5),
        filters: vec!["have".into(), "never".into()],
        ..Default::default()
    }))
    .await;
    match c.recv().await {
        Some(Packet::UnsubAck(a)) => {
            assert_eq!(a.packet_id, PacketId(5));
            assert_eq!(a.codes, vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED]);
        }
        other => panic!("expected UNSUBACK, got {other:?}"),
    }
    node.shutdown().await;
}

#[tokio::test]
async fn invalid_filters_get_failure_codes_in_suback() {
    let node = common::start(|_| {}).await;
    let (mut c, _) =
        RawClient::connect(node.mqtt_addr(), ProtocolVersion::V4, RawClient::connect_packet("f", true)).await;
    c.send(&Packet::Subscribe(Subscribe {
        packet_id: PacketId(2),
        filters: vec![
            SubscribeFilter {
                filter: "ok/+".into(),
                options: SubscriptionOptions { qos: QoS::AtLeastOnce, ..Default::default() },
            },
            SubscribeFilter { filter: "bad/#/x".into(), options: SubscriptionOptions::default() },
        ],
        ..Default::default()
    }))
    .await;
    match c.recv().await {
        // MQTT 3.1.1 has a single failure code, 0x80 [MQTT-3.9.3-2].
        Some(Packet::SubAck(a)) => assert_eq!(a.codes, vec![ReasonCode::GRANTED_QOS_1, ReasonCode::UNSPECIFIED_ERROR]),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    node.shutdown().await;
}

/// A client that stopped reading (its TCP window full) is taken over by a new connection of the
/// same client id: the stuck write gives way to the takeover, and the QoS 1 messages that were in
/// flight to the old connection are sent again on the new one, with DUP set.
#[tokio::test]
async fn a_client_that_stopped_reading_is_taken_over_and_its_in_flight_messages_are_sent_again() {
    let node = common::start(|c| c.mqtt.max_online_messages = None).await;
    let addr = node.mqtt_addr();
    let (mut stuck, ack) =
        RawClient::connect(addr, ProtocolVersion::V4, RawClient::connect_packet("stuck", false)).await;
    assert!(matches!(ack, Packet::ConnAck(_)));
    stuck.send(&subscribe("stuck/#", QoS::AtLeastOnce)).await;
    assert!(matches!(stuck.recv().await, Some(Packet::SubAck(_))));
    // From here on `stuck` reads nothing.
    let (mut publisher, _) =
        RawClient::connect(addr, ProtocolVersion::V4, RawClient::connect_packet("filler", true)).await;
    for id in 1..=10u16 {
        publisher.send(&publish("stuck/acked", QoS::AtLeastOnce, id, b"in flight")).await;
    }
    // Enough QoS 0 bulk to fill both socket buffers behind them.
    static BULK: [u8; 65_536] = [0; 65_536];
    for _ in 0..400 {
        publisher
            .send(&Packet::Publish(Publish {
                topic: "stuck/bulk".into(),
                payload: Bytes::from_static(&BULK),
                ..Default::default()
            }))
            .await;
    }
    let mut acked = 0;
    while acked < 10 {
        if let Some(Packet::PubAck(_)) = publisher.recv().await {
            acked += 1;
        }
    }

    let mut o = common::V4::options(addr, "stuck");
    o.set_clean_session(false);
    o.set_max_packet_size(1 << 20, 1 << 20);
    let (mut resumed, present) = common::V4::connect(o).await;
    assert!(present);
    let mut again = std::collections::BTreeSet::new();
    while again.len() < 10 {
        let p = resumed.publish_event().await;
        if p.topic == "stuck/acked" {
            assert!(p.dup, "a message sent to the old connection comes again with DUP set");
            again.insert(p.pkid);
        }
    }
    drop(stuck);
    node.shutdown().await;
}
