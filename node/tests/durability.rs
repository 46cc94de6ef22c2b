//! Offline messages are acknowledged only once stored; when the store refuses them (a full
//! disk) the publisher is told instead of being acknowledged and losing the message.
// Test helpers stop the test on anything unexpected, as the tests themselves do.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{RawClient, V4, wait_until};
use vmq_config::Config;
use vmq_mqtt::{Packet, PacketId, ProtocolVersion, Publish, QoS, ReasonCode};
use vmq_node::server::Node;
use vmq_node::storage::NodeStorage;
use vmq_storage::{
    AppendDone, MemStore, MessageSeq, MessageStore, QueueKey, StoreError, StoreMessageStore, StoredMessage,
};

/// A message store whose disk can be made full.
struct FillableDisk {
    inner: StoreMessageStore<MemStore>,
    full: AtomicBool,
}

impl MessageStore for FillableDisk {
    fn append(&self, queue: &QueueKey, messages: &[&[u8]]) -> Result<Vec<MessageSeq>, StoreError> {
        if self.full.load(Ordering::SeqCst) {
            return Err(StoreError::NoSpace("No space left on device (os error 28)".into()));
        }
        self.inner.append(queue, messages)
    }
    fn append_deferred(&self, queue: &QueueKey, messages: &[&[u8]], done: AppendDone) {
        done(self.append(queue, messages));
    }
    fn read(
        &self,
        queue: &QueueKey,
        after: Option<MessageSeq>,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.inner.read(queue, after, limit)
    }
    fn delete(&self, queue: &QueueKey, seqs: &[MessageSeq]) -> Result<(), StoreError> {
        self.inner.delete(queue, seqs)
    }
    fn delete_queue(&self, queue: &QueueKey) -> Result<u64, StoreError> {
        self.inner.delete_queue(queue)
    }
    fn count(&self, queue: &QueueKey) -> u64 {
        self.inner.count(queue)
    }
    fn queues(&self) -> Vec<(QueueKey, u64)> {
        self.inner.queues()
    }
}

async fn node_with(disk: Arc<FillableDisk>) -> Node {
    common::init_tracing();
    let mut cfg = Config::embedded_default();
    cfg.listeners[0].addr = "127.0.0.1:0".parse().unwrap();
    cfg.delegated.clear();
    let store = Arc::new(MemStore::new());
    Node::start_with(&cfg, NodeStorage { store, messages: disk }).await.unwrap()
}

async fn offline_subscriber(node: &Node, id: &str) {
    let mut opts = V4::options(node.mqtt_addr(), id);
    opts.set_clean_session(false);
    let (mut c, _) = V4::connect(opts).await;
    c.subscribe("d/#", rumqttc::QoS::AtLeastOnce).await;
    c.client.disconnect().await.unwrap();
    let key = QueueKey::new("", id);
    let broker = node.broker().clone();
    wait_until("the session is offline", || broker.session(&key).is_some_and(|s| !s.queue.is_online())).await;
}

fn publish(id: u16) -> Packet {
    Packet::Publish(Publish {
        topic: "d/x".into(),
        qos: QoS::AtLeastOnce,
        packet_id: Some(PacketId(id)),
        ..Publish::default()
    })
}

#[tokio::test]
async fn full_disk_refuses_offline_publishes_with_a_reason_code_in_mqtt_5() {
    let disk = Arc::new(FillableDisk {
        inner: StoreMessageStore::open(Arc::new(MemStore::new()), vmq_storage::Durability::Buffered).unwrap(),
        full: AtomicBool::new(false),
    });
    let node = node_with(disk.clone()).await;
    offline_subscriber(&node, "sleeper").await;
    let (mut p, _) =
        RawClient::connect(node.mqtt_addr(), ProtocolVersion::V5, RawClient::connect_packet("p5", true)).await;
    p.send(&publish(1)).await;
    assert!(
        matches!(p.recv().await, Some(Packet::PubAck(a)) if a.code == ReasonCode::SUCCESS),
        "stored, then acknowledged"
    );
    disk.full.store(true, Ordering::SeqCst);
    p.send(&publish(2)).await;
    match p.recv().await {
        Some(Packet::PubAck(a)) => {
            assert_eq!(a.code, ReasonCode::QUOTA_EXCEEDED, "refused, not acknowledged and lost");
            assert!(a.properties.reason_string.unwrap_or_default().contains("No space left"));
        }
        other => panic!("expected PUBACK, got {other:?}"),
    }
    assert_eq!(disk.count(&QueueKey::new("", "sleeper")), 1, "nothing pretends to be stored");
    node.shutdown().await;
}

#[tokio::test]
async fn full_disk_closes_mqtt_3_publishers_without_acknowledging() {
    let disk = Arc::new(FillableDisk {
        inner: StoreMessageStore::open(Arc::new(MemStore::new()), vmq_storage::Durability::Buffered).unwrap(),
        full: AtomicBool::new(true),
    });
    let node = node_with(disk).await;
    offline_subscriber(&node, "sleeper4").await;
    let (mut p, _) =
        RawClient::connect(node.mqtt_addr(), ProtocolVersion::V4, RawClient::connect_packet("p4", true)).await;
    p.send(&publish(1)).await;
    let got = p.until_closed().await;
    assert!(
        !got.iter().any(|x| matches!(x, Packet::PubAck(_))),
        "no PUBACK for a message that was not stored: {got:?}"
    );
    node.shutdown().await;
}
