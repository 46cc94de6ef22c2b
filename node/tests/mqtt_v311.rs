//! MQTT 3.1.1 behaviour through rumqttc, an independent client library.

mod common;

use common::{V4, wait_until};
use rumqttc::{LastWill, QoS};

#[tokio::test]
async fn publish_and_subscribe_at_every_qos_mqtt_4_3() {
    let node = common::start(|_| {}).await;
    let addr = node.mqtt_addr();
    let (mut sub, _) = V4::connect(V4::options(addr, "sub")).await;
    sub.subscribe("q/#", QoS::ExactlyOnce).await;
    let (publ, _) = V4::connect(V4::options(addr, "pub")).await;
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce].into_iter().enumerate() {
        publ.client.publish(format!("q/{i}"), qos, false, vec![i as u8]).await.unwrap();
        let p = sub.publish_event().await;
        assert_eq!(p.topic, format!("q/{i}"));
        assert_eq!(p.qos, qos, "delivered at min(publish QoS, granted QoS)");
        assert_eq!(p.payload.as_ref(), &[i as u8]);
        assert!(!p.retain, "forwarded messages carry RETAIN 0 [MQTT-3.3.1-9]");
    }
    node.shutdown().await;
}

#[tokio::test]
async fn delivery_qos_is_downgraded_to_the_granted_qos_mqtt_3_8_4_6() {
    let node = common::start(|_| {}).await;
    let (mut sub, _) = V4::connect(V4::options(node.mqtt_addr(), "sub")).await;
    sub.subscribe("t", QoS::AtMostOnce).await;
    let (publ, _) = V4::connect(V4::options(node.mqtt_addr(), "pub")).await;
    publ.client.publish("t", QoS::ExactlyOnce, false, "x").await.unwrap();
    assert_eq!(sub.publish_event().await.qos, QoS::AtMostOnce);
    node.shutdown().await;
}

#[tokio::test]
async fn messages_of_one_publisher_arrive_in_order_mqtt_4_6_0_6() {
    let node = common::start(|_| {}).await;
    let (mut sub, _) = V4::connect(V4::options(node.mqtt_addr(), "sub")).await;
    sub.subscribe("o", QoS::AtLeastOnce).await;
    let (publ, _) = V4::connect(V4::options(node.mqtt_addr(), "pub")).await;
    for i in 0..200u32 {
        publ.client.publish("o", QoS::AtLeastOnce, false, i.to_be_bytes().to_vec()).await.unwrap();
    }
    for i in 0..200u32 {
        let p = sub.publish_event().await;
        assert_eq!(p.payload.as_ref(), &i.to_be_bytes());
    }
    node.shutdown().await;
}

#[tokio::test]
async fn persistent_session_keeps_subscriptions_and_offline_messages_mqtt_3_1_2_4() {
    let node = common::start(|_| {}).await;
    let addr = node.mqtt_addr();
    let mut opts = V4::options(addr, "persistent");
    opts.set_clean_session(false);
    let (mut sub, present) = V4::connect(opts.clone()).await;
    assert!(!present, "first connection has no session");
    sub.subscribe("off/+", QoS::AtLeastOnce).await;
    sub.client.disconnect().await.unwrap();
    let key = vmq_storage::QueueKey::new("", "persistent");
    wait_until("the session is offline", || node.broker().session(&key).is_some_and(|s| !s.queue.is_online())).await;

    let (publ, _) = V4::connect(V4::options(addr, "pub")).await;
    for i in 0..5 {
        publ.client.publish("off/x", QoS::AtLeastOnce, false, format!("m{i}")).await.unwrap();
    }
    publ.client.publish("off/x", QoS::AtMostOnce, false, "qos0 is not kept offline").await.unwrap();
    wait_until("offline messages are queued", || node.broker().session(&key).is_some_and(|s| s.queue.len() == 5)).await;

    let (mut sub, present) = V4::connect(opts).await;
    assert!(present, "session present on reconnect [MQTT-3.2.2-2]");
    for i in 0..5 {
        assert_eq!(sub.publish_event().await.payload, format!("m{i}").as_bytes());
    }
    node.shutdown().await;
}

#[tokio::test]
async fn clean_session_discards_the_previous_session_mqtt_3_1_2_6() {
    let node = common::start(|_| {}).await;
    let addr = node.mqtt_addr();
    let mut opts = V4::options(addr, "c1");
    opts.set_clean_session(false);
    let (mut c, _) = V4::connect(opts.clone()).await;
    c.subscribe("a", QoS::AtLeastOnce).await;
    c.client.disconnect().await.unwrap();
    wait_until("offline", || {
        node.broker().session(&vmq_storage::QueueKey::new("", "c1")).is_some_and(|s| !s.queue.is_online())
    })
    .await;
    let mut clean = V4::options(addr, "c1");
    clean.set_clean_session(true);
    let (_c, present) = V4::connect(clean).await;
    assert!(!present, "clean session never resumes [MQTT-3.2.2-1]");
    assert_eq!(node.broker().subscription_count(), 0, "old subscriptions are gone");
    node.shutdown().await;
}

#[tokio::test]
async fn retained_messages_set_replace_clear_and_deliver_on_subscribe_mqtt_3_3_1_5_to_11() {
    let node = common::start(|_| {}).await;
    let addr = node.mqtt_addr();
    let (publ, _) = V4::connect(V4::options(addr, "pub")).await;
    publ.client.publish("r/a", QoS::AtLeastOnce, true, "one").await.unwrap();
    publ.client.publish("r/a", QoS::AtLeastOnce, true, "two").await.unwrap();
    publ.client.publish("r/b", QoS::AtLeastOnce, true, "b").await.unwrap();
    wait_until("both topics retained", || node.broker().retained_count() == 2).await;
    let (mut s1, _) = V4::connect(V4::options(addr, "s1")).await;
    s1.subscribe("r/+", QoS::AtLeastOnce).await;
    let mut got = [s1.publish_event().await, s1.publish_event().await];
    got.sort_by(|a, b| a.topic.cmp(&b.topic));
    assert_eq!((got[0].topic.as_str(), got[0].payload.as_ref()), ("r/a", &b"two"[..]), "replaced");
    assert!(got.iter().all(|p| p.retain), "sent on subscribe with RETAIN 1 [MQTT-3.3.1-8]");
    publ.client.publish("r/a", QoS::AtLeastOnce, true, "").await.unwrap();
    wait_until("an empty payload clears the topic [MQTT-3.3.1-10]", || node.broker().retained_count() == 1).await;
    node.shutdown().await;
}

#[tokio::test]
async fn will_is_published_when_the_connection_breaks_mqtt_3_1_2_8() {
    let node = common::start(|_| {}).await;
    let addr = node.mqtt_addr();
    let (mut watcher, _) = V4::connect(V4::options(addr, "watcher")).await;
    watcher.subscribe("will/#", QoS::AtLeastOnce).await;
    // A raw client, so the connection can be dropped without DISCONNECT.
    let mut connect = common::RawClient::connect_packet("dying", true);
    connect.will = Some(vmq_mqtt::Will {
        topic: "will/dying".into(),
        payload: bytes::Bytes::from_static(b"gone"),
        qos: vmq_mqtt::QoS::AtLeastOnce,
        ..Default::default()
    });
    let (raw, _) = common::RawClient::connect(addr, vmq_mqtt::ProtocolVersion::V4, connect).await;
    drop(raw);
    let p = watcher.publish_event().await;
    assert_eq!((p.topic.as_str(), p.payload.as_ref()), ("will/dying", &b"gone"[..]));
    node.shutdown().await;
}

#[tokio::test]
async fn will_is_discarded_on_normal_disconnect_mqtt_3_1_2_10() {
    let node = common::start(|_| {}).await;
    let addr = node.mqtt_addr();
    let (mut watcher, _) = V4::connect(V4::options(addr, "watcher")).await;
    watcher.subscribe("will/#", QoS::AtLeastOnce).await;
    let mut opts = V4::options(addr, "polite");
    opts.set_last_will(LastWill::new("will/polite", "gone", QoS::AtLeastOnce, false));
    let (c, _) = V4::connect(opts).await;
    c.client.disconnect().await.unwrap();
    wait_until("the session ended", || node.broker().session_count() == 1).await;
    // Anything published to the will topic after the session ended arrives first only if
    // no will was published before it.
    let (publ, _) = V4::connect(V4::options(addr, "marker")).await;
    publ.client.publish("will/marker", QoS::AtLeastOnce, false, "marker").await.unwrap();
    assert_eq!(watcher.publish_event().await.topic, "will/marker");
    node.shutdown().await;
}

#[tokio::test]
async fn session_takeover_disconnects_the_old_connection_mqtt_3_1_4_3() {
    let node = common::start(|_| {}).await;
    let addr = node.mqtt_addr();
    let mut opts = V4::options(addr, "twin");
    opts.set_clean_session(false);
    let (mut first, _) = V4::connect(opts.clone()).await;
    first.subscribe("tw", QoS::AtLeastOnce).await;
    let (mut second, present) = V4::connect(opts).await;
    assert!(present, "the new connection resumes the session");
    loop {
        match first.next().await {
            Err(_) => break,
            Ok(_) => continue,
        }
    }
    let (publ, _) = V4::connect(V4::options(addr, "pub")).await;
    publ.client.publish("tw", QoS::AtLeastOnce, false, "to the new one").await.unwrap();
    assert_eq!(second.publish_event().await.payload.as_ref(), b"to the new one");
    node.shutdown().await;
}

#[tokio::test]
async fn shared_subscription_delivers_each_message_to_one_member_mqtt_4_8_2() {
    let node = common::start(|_| {}).await;
    let addr = node.mqtt_addr();
    let (mut a, _) = V4::connect(V4::options(addr, "a")).await;
    let (mut b, _) = V4::connect(V4::options(addr, "b")).await;
    a.subscribe("$share/g/work/#", QoS::AtLeastOnce).await;
    b.subscribe("$share/g/work/#", QoS::AtLeastOnce).await;
    let (publ, _) = V4::connect(V4::options(addr, "pub")).await;
    let n = 40;
    for i in 0..n {
        publ.client.publish("work/x", QoS::AtLeastOnce, false, format!("{i}")).await.unwrap();
    }
    let routed = || node.broker().counters.messages_routed.load(std::sync::atomic::Ordering::Relaxed);
    wait_until("all messages routed", || routed() >= n).await;
    let mut seen = Vec::new();
    while seen.len() < n as usize {
        tokio::select! {
            p = a.publish_event() => seen.push(String::from_utf8(p.payload.to_vec()).unwrap()),
            p = b.publish_event() => seen.push(String::from_utf8(p.payload.to_vec()).unwrap()),
        }
    }
    seen.sort_by_key(|s| s.parse::<u32>().unwrap());
    let want: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    assert_eq!(seen, want, "every message exactly once across the group");
    node.shutdown().await;
}

#[tokio::test]
async fn mountpoints_isolate_topic_trees() {
    let node = common::start(|cfg| {
        let mut other = cfg.listeners[0].clone();
        other.name = "tenant".into();
        other.mountpoint = "tenant/".into();
        cfg.listeners.push(other);
    })
    .await;
    let plain = node.local_addrs()[0].1;
    let tenant = node.local_addrs()[1].1;
    let (mut in_tenant, _) = V4::connect(V4::options(tenant, "t-sub")).await;
    in_tenant.subscribe("#", QoS::AtLeastOnce).await;
    let (mut in_plain, _) = V4::connect(V4::options(plain, "p-sub")).await;
    in_plain.subscribe("#", QoS::AtLeastOnce).await;
    let (p_pub, _) = V4::connect(V4::options(plain, "p-pub")).await;
    p_pub.client.publish("x", QoS::AtLeastOnce, false, "plain").await.unwrap();
    let (t_pub, _) = V4::connect(V4::options(tenant, "t-pub")).await;
    t_pub.client.publish("x", QoS::AtLeastOnce, false, "tenant").await.unwrap();
    assert_eq!(in_tenant.publish_event().await.payload.as_ref(), b"tenant");
    assert_eq!(in_plain.publish_event().await.payload.as_ref(), b"plain");
    node.shutdown().await;
}

#[tokio::test]
async fn offline_queue_limit_drops_and_counts_the_excess() {
    let node = common::start(|cfg| cfg.mqtt.max_offline_messages = Some(3)).await;
    let addr = node.mqtt_addr();
    let mut opts = V4::options(addr, "limited");
    opts.set_clean_session(false);
    let (mut c, _) = V4::connect(opts.clone()).await;
    c.subscribe("l", QoS::AtLeastOnce).await;
    c.client.disconnect().await.unwrap();
    let key = vmq_storage::QueueKey::new("", "limited");
    wait_until("offline", || node.broker().session(&key).is_some_and(|s| !s.queue.is_online())).await;
    let (publ, _) = V4::connect(V4::options(addr, "pub")).await;
    for i in 0..5 {
        publ.client.publish("l", QoS::AtLeastOnce, false, format!("{i}")).await.unwrap();
    }
    wait_until("two dropped", || node.broker().session(&key).is_some_and(|s| s.queue.dropped() == 2)).await;
    let (mut c, _) = V4::connect(opts).await;
    for i in 0..3 {
        assert_eq!(c.publish_event().await.payload, format!("{i}").as_bytes(), "fifo keeps the oldest");
    }
    node.shutdown().await;
}

#[tokio::test]
async fn dollar_topics_do_not_match_leading_wildcards_mqtt_4_7_2_1() {
    let node = common::start(|_| {}).await;
    let addr = node.mqtt_addr();
    let (mut all, _) = V4::connect(V4::options(addr, "all")).await;
    all.subscribe("#", QoS::AtLeastOnce).await;
    let (publ, _) = V4::connect(V4::options(addr, "pub")).await;
    publ.client.publish("$internal/x", QoS::AtLeastOnce, false, "hidden").await.unwrap();
    publ.client.publish("visible", QoS::AtLeastOnce, false, "shown").await.unwrap();
    assert_eq!(all.publish_event().await.topic, "visible");
    node.shutdown().await;
}

#[tokio::test]
async fn graceful_shutdown_publishes_wills_and_closes_clients() {
    let node = common::start(|_| {}).await;
    let broker = node.broker().clone();
    let mut opts = V4::options(node.mqtt_addr(), "will-at-shutdown");
    opts.set_last_will(LastWill::new("w", "bye", QoS::AtLeastOnce, true));
    let (mut c, _) = V4::connect(opts).await;
    node.shutdown().await;
    while c.next().await.is_ok() {} // ends when the broker closes the connection
    // The will was retained: shutdown published it before the node stopped.
    assert_eq!(broker.retained_count(), 1);
}
