//! Session behaviour that the connection task relies on for throughput: bounded pumping and
//! one wake-up per batch of publishes.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::Instant;

use bytes::Bytes;
use vmq_storage::{Durability, MemStore, MessageStore, QueueKey, StoreMessageStore};

use super::*;
use crate::broker::message::{Delivery, Msg};
use crate::broker::queue::{Queue, Wakes};
use crate::broker::{BrokerSettings, ConnectionHandle, Registration};
use vmq_mqtt::SubscriptionOptions;

fn broker() -> Arc<Broker> {
    let store = StoreMessageStore::open(Arc::new(MemStore::new()), Durability::Buffered).unwrap();
    let mut settings = BrokerSettings::default();
    settings.queue.max_online = None;
    Broker::new(settings, Arc::new(store) as Arc<dyn MessageStore>)
}

async fn connect(broker: &Broker, client_id: &str) -> Registration {
    broker
        .register(QueueKey::new("", client_id), true, ConnectionHandle::new(broker.next_connection_id()))
        .await
        .expect("a single node always registers")
}

fn msg(topic: &str, qos: QoS) -> Arc<Msg> {
    Arc::new(Msg {
        mountpoint: "".into(),
        topic: topic.into(),
        payload: Bytes::from_static(b"x"),
        qos,
        retain: false,
        properties: None,
        expires_at: None,
        publisher: None,
    })
}

/// True when the queue's consumer has a wake-up waiting (consumes it).
fn woken(q: &Queue) -> bool {
    let notified = q.notified();
    let mut notified = std::pin::pin!(notified);
    notified.as_mut().poll(&mut Context::from_waker(Waker::noop())).is_ready()
}

#[tokio::test]
async fn pump_takes_one_batch_at_a_time_and_says_when_more_wait() {
    let broker = broker();
    let reg = connect(&broker, "sub").await;
    let queue = reg.slot.queue.clone();
    let total = PUMP_BATCH * 3 + 7;
    for _ in 0..total {
        let d =
            Delivery { msg: msg("t", QoS::AtMostOnce), qos: QoS::AtMostOnce, retain: false, subscription_ids: vec![] };
        let _ = queue.enqueue(d);
    }
    let mut session = Session::new(
        broker.clone(),
        reg.slot.clone(),
        SessionConfig::default(),
        ProtocolVersion::V4,
        ClientLimits { receive_maximum: u16::MAX, ..ClientLimits::default() },
        reg.inflight,
        Instant::now(),
    );
    let mut rounds = Vec::new();
    loop {
        let more = session.pump(Instant::now());
        rounds.push(session.take_packets().len());
        if !more {
            break;
        }
    }
    assert_eq!(rounds, vec![PUMP_BATCH, PUMP_BATCH, PUMP_BATCH, 7]);
}

#[tokio::test]
async fn batched_publishes_wake_each_subscriber_once_after_the_batch() {
    let broker = broker();
    let reg = connect(&broker, "sub").await;
    let options = SubscriptionOptions { qos: QoS::AtLeastOnce, ..SubscriptionOptions::default() };
    broker.subscribe(&reg.slot, "t/#", SubscriptionRecord { options, id: None }).unwrap();
    let queue = reg.slot.queue.clone();
    let _ = woken(&queue); // the wake-up from going online

    let mut wakes = Wakes::default();
    for _ in 0..5 {
        let outcome = broker.publish_batched(msg("t/a", QoS::AtLeastOnce), &mut wakes);
        assert_eq!(outcome.matched, 1);
    }
    assert!(!woken(&queue), "no wake-up before the batch ends");
    wakes.wake_all();
    assert!(woken(&queue), "woken after the batch");
    assert!(!woken(&queue), "and only once for five messages");
    assert_eq!(queue.len(), 5);
}

#[tokio::test]
async fn qos0_messages_do_not_count_against_the_inflight_window() {
    let broker = broker();
    let reg = connect(&broker, "sub").await;
    let queue = reg.slot.queue.clone();
    // 30 QoS 0, then 30 QoS 1, with a window of 20.
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
        for _ in 0..30 {
            let _ = queue.enqueue(Delivery { msg: msg("t", qos), qos, retain: false, subscription_ids: vec![] });
        }
    }
    let cfg = Arc::new(MqttConfig { max_inflight_messages: 20, ..MqttConfig::default() });
    let limits = ClientLimits { receive_maximum: u16::MAX, ..ClientLimits::default() };
    let mut session =
        Session::new(broker.clone(), reg.slot.clone(), cfg, ProtocolVersion::V4, limits, reg.inflight, Instant::now());
    assert!(!session.pump(Instant::now()), "stopped by the window, not by the batch limit");
    assert_eq!(session.take_packets().len(), 50);
    assert_eq!(queue.len(), 10, "the rest waits for acknowledgements");
}

#[tokio::test]
async fn a_forwarded_message_for_a_shared_member_gone_meanwhile_goes_to_another_member() {
    let broker = broker();
    let options = SubscriptionOptions { qos: QoS::AtLeastOnce, ..SubscriptionOptions::default() };
    let a = connect(&broker, "a").await;
    let b = connect(&broker, "b").await;
    for reg in [&a, &b] {
        broker.subscribe(&reg.slot, "$share/g/t/+", SubscriptionRecord { options, id: None }).unwrap();
    }
    // The sending node picked "gone", whose session ended before the message arrived.
    let shared = [(Arc::from("gone"), "$share/g/t/+".to_string())];
    let mut wakes = Wakes::default();
    let outcome = broker.publish_remote_batched(msg("t/x", QoS::AtLeastOnce), false, &shared, &mut wakes);
    assert_eq!(outcome.matched, 1);
    assert_eq!(a.slot.queue.len() + b.slot.queue.len(), 1, "delivered to exactly one remaining member");
}
