//! MQTT 5.0 behaviour through rumqttc's v5 client, an independent implementation.

mod common;

use bytes::Bytes;
use common::{V5, wait_until};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Filter, PublishProperties, RetainForwardRule, SubscribeProperties};

#[tokio::test]
async fn server_assigns_a_client_identifier_mqtt_3_1_3_6() {
    let node = common::start(|_| {}).await;
    let (_c, ack) = V5::connect(V5::options(node.mqtt_addr(), "")).await;
    let props = ack.properties.expect("CONNACK properties");
    let id = props.assigned_client_identifier.expect("Assigned Client Identifier [MQTT-3.2.2-16]");
    assert!(!id.is_empty());
    node.shutdown().await;
}

#[tokio::test]
async fn max_keepalive_is_announced_as_server_keep_alive_mqtt_3_2_2_21() {
    let node = common::start(|cfg| cfg.mqtt.max_keepalive = Some(10)).await;
    let (_c, ack) = V5::connect(V5::options(node.mqtt_addr(), "ka")).await;
    assert_eq!(ack.properties.and_then(|p| p.server_keep_alive), Some(10));
    node.shutdown().await;
}

#[tokio::test]
async fn user_properties_and_request_response_pass_through_mqtt_3_3_2_17_to_20() {
    let node = common::start(|_| {}).await;
    let addr = node.mqtt_addr();
    let (mut sub, _) = V5::connect(V5::options(addr, "responder")).await;
    sub.subscribe("req", QoS::AtLeastOnce).await;
    let (publ, _) = V5::connect(V5::options(addr, "requester")).await;
    let props = PublishProperties {
        response_topic: Some("resp/requester".into()),
        correlation_data: Some(Bytes::from_static(b"corr-1")),
        user_properties: vec![("k1".into(), "v1".into()), ("k1".into(), "v2".into())],
        content_type: Some("text/plain".into()),
        payload_format_indicator: Some(1),
        ..Default::default()
    };
    publ.client.publish_with_properties("req", QoS::AtLeastOnce, false, "ping", props).await.unwrap();
    let p = sub.publish_event().await;
    let got = p.properties.expect("properties forwarded");
    assert_eq!(got.response_topic.as_deref(), Some("resp/requester"));
    assert_eq!(got.correlation_data.as_deref(), Some(&b"corr-1"[..]));
    assert_eq!(
        got.user_properties,
        vec![("k1".into(), "v1".into()), ("k1".into(), "v2".into())],
        "order kept [MQTT-3.3.2-18]"
    );
    assert_eq!(got.content_type.as_deref(), Some("text/plain"));
    assert_eq!(got.payload_format_indicator, Some(1));
    node.shutdown().await;
}

#[tokio::test]
async fn subscription_identifier_is_returned_with_matching_publishes_mqtt_3_3_4_3() {
    let node = common::start(|_| {}).await;
    let addr = node.mqtt_addr();
    let (mut sub, _) = V5::connect(V5::options(addr, "sid")).await;
    let props = SubscribeProperties { id: Some(42), user_properties: vec![] };
    sub.client.subscribe_with_properties("s/+", QoS::AtLeastOnce, props).await.unwrap();
    sub.suback().await;
    let (publ, _) = V5::connect(V5::options(addr, "p")).await;
    publ.client.publish("s/1", QoS::AtLeastOnce, false, "x").await.unwrap();
    let p = sub.publish_event().await;
    assert_eq!(p.properties.map(|p| p.subscription_identifiers), Some(vec![42]));
    node.shutdown().await;
}

#[tokio::test]
async fn no_local_suppresses_own_publishes_mqtt_3_8_3_3() {
    let node = common::start(|_| {}).await;
    let addr = node.mqtt_addr();
    let (mut c, _) = V5::connect(V5::options(addr, "self")).await;
    let mut f = Filter::new("nl", QoS::AtLeastOnce);
    f.nolocal = true;
    c.client.subscribe_many([f]).await.unwrap();
    c.suback().await;
    c.client.publish("nl", QoS::AtLeastOnce, false, "mine").await.unwrap();
    let (other, _) = V5::connect(V5::options(addr, "other")).await;
    other.client.publish("nl", QoS::AtLeastOnce, false, "theirs").await.unwrap();
    assert_eq!(c.publish_event().await.payload.as_ref(), b"theirs", "own message not delivered");
    node.shutdown().await;
}

#[tokio::test]
async fn retain_as_published_and_retain_handling_mqtt_3_3_1_12_and_3_8_4() {
    let node = common::start(|_| {}).await;
    let addr = node.mqtt_addr();
    let (publ, _) = V5::connect(V5::options(addr, "p")).await;
    publ.client.publish("rh", QoS::AtLeastOnce, true, "kept").await.unwrap();
    wait_until("retained", || node.broker().retained_count() == 1).await;

    // Retain Handling 2: no retained message on subscribe; Retain As Published keeps RETAIN.
    let (mut c, _) = V5::connect(V5::options(addr, "c")).await;
    let mut f = Filter::new("rh", QoS::AtLeastOnce);
    f.retain_forward_rule = RetainForwardRule::Never;
    f.preserve_retain = true;
    c.client.subscribe_many([f]).await.unwrap();
    c.suback().await;
    publ.client.publish("rh", QoS::AtLeastOnce, true, "live").await.unwrap();
    let p = c.publish_event().await;
    assert_eq!(p.payload.as_ref(), b"live", "no retained message first");
    assert!(p.retain, "Retain As Published keeps the flag [MQTT-3.3.1-12]");

    // Retain Handling 1: retained message only for a new subscription.
    let (mut d, _) = V5::connect(V5::options(addr, "d")).await;
    let mut f = Filter::new("rh", QoS::AtLeastOnce);
    f.retain_forward_rule = RetainForwardRule::OnNewSubscribe;
    d.client.subscribe_many([f.clone()]).await.unwrap();
    d.suback().await;
    assert_eq!(d.publish_event().await.payload.as_ref(), b"live");
    d.client.subscribe_many([f]).await.unwrap();
    d.suback().await;
    publ.client.publish("rh", QoS::AtLeastOnce, false, "after").await.unwrap();
    let p = d.publish_event().await;
    assert_eq!(p.payload.as_ref(), b"after", "re-subscribing sent no retained message");
    assert!(!p.retain, "without Retain As Published the flag is cleared");
    node.shutdown().await;
}

#[tokio::test]
async fn retained_message_expires_mqtt_3_3_2_5() {
    let node = common::start(|_| {}).await;
    let addr = node.mqtt_addr();
    let (publ, _) = V5::connect(V5::options(addr, "p")).await;
    let props = PublishProperties { message_expiry_interval: Some(1), ..Default::default() };
    publ.client.publish_with_properties("exp", QoS::AtLeastOnce, true, "short-lived", props).await.unwrap();
    let (mut c, _) = V5::connect(V5::options(addr, "c")).await;
    c.subscribe("exp", QoS::AtLeastOnce).await;
    let p = c.publish_event().await;
    let left = p.properties.and_then(|p| p.message_expiry_interval).expect("remaining expiry sent");
    assert!(left <= 1, "the interval counts down [MQTT-3.3.2-6]");
    let broker = node.broker().clone();
    wait_until("the retained message expired", || broker.retained_for("", "exp", std::time::Instant::now()).is_empty())
        .await;
    node.shutdown().await;
}

#[tokio::test]
async fn topic_alias_from_client_is_resolved_mqtt_3_3_2_10() {
    let node = common::start(|cfg| cfg.mqtt.topic_alias_max_broker = 5).await;
    let addr = node.mqtt_addr();
    let (mut sub, _) = V5::connect(V5::options(addr, "sub")).await;
    sub.subscribe("alias/t", QoS::AtLeastOnce).await;
    let (publ, ack) = V5::connect(V5::options(addr, "pub")).await;
    assert_eq!(ack.properties.and_then(|p| p.topic_alias_max), Some(5));
    let with_alias = |a| PublishProperties { topic_alias: Some(a), ..Default::default() };
    publ.client.publish_with_properties("alias/t", QoS::AtLeastOnce, false, "1", with_alias(3)).await.unwrap();
    publ.client.publish_with_properties("", QoS::AtLeastOnce, false, "2", with_alias(3)).await.unwrap();
    for want in ["1", "2"] {
        let p = sub.publish_event().await;
        assert_eq!((p.topic.as_ref(), p.payload.as_ref()), (&b"alias/t"[..], want.as_bytes()));
    }
    node.shutdown().await;
}

#[tokio::test]
async fn session_expiry_ends_the_session_mqtt_3_1_2_11() {
    let node = common::start(|_| {}).await;
    let mut opts = V5::options(node.mqtt_addr(), "expiring");
    opts.set_clean_start(false);
    opts.set_session_expiry_interval(Some(1));
    let (mut c, _) = V5::connect(opts).await;
    c.subscribe("e", QoS::AtLeastOnce).await;
    c.client.disconnect().await.unwrap();
    let broker = node.broker().clone();
    let key = vmq_storage::QueueKey::new("", "expiring");
    wait_until("the session is offline", || broker.session(&key).is_some_and(|s| !s.queue.is_online())).await;
    wait_until("the session expired", || broker.session(&key).is_none()).await;
    assert_eq!(broker.subscription_count(), 0);
    node.shutdown().await;
}

#[tokio::test]
async fn shared_subscription_for_mqtt_5() {
    let node = common::start(|_| {}).await;
    let addr = node.mqtt_addr();
    let (mut a, _) = V5::connect(V5::options(addr, "a")).await;
    a.subscribe("$share/grp/jobs", QoS::AtLeastOnce).await;
    let (publ, _) = V5::connect(V5::options(addr, "p")).await;
    publ.client.publish("jobs", QoS::AtLeastOnce, false, "j1").await.unwrap();
    assert_eq!(a.publish_event().await.payload.as_ref(), b"j1");
    node.shutdown().await;
}
