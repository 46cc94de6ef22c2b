//! When each offline persistent session was last disconnected, kept in the node's store, so
//! that `persistent_client_expiration` counts from the disconnect and not from a restart.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::warn;
use vmq_storage::{Column, Durability, QueueKey, Store, WriteBatch};

use super::Broker;

/// Key prefix in the `node` column.
const PREFIX: &[u8] = b"session-disconnected/";

fn key_of(key: &QueueKey) -> Vec<u8> {
    let mut k = PREFIX.to_vec();
    k.extend_from_slice(key.mountpoint.as_bytes());
    k.push(0);
    k.extend_from_slice(key.client_id.as_bytes());
    k
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Broker {
    fn records(&self) -> Option<&dyn Store> {
        self.records.as_deref()
    }

    /// The session of `key` went offline now.
    pub(super) fn note_disconnected(&self, key: &QueueKey) {
        let Some(store) = self.records() else { return };
        let mut batch = WriteBatch::new();
        batch.put(Column::Node, key_of(key), unix_ms().to_be_bytes().to_vec());
        // Not synced: after a crash at worst the expiry counts from an older disconnect.
        if let Err(e) = store.write(batch, Durability::Buffered) {
            warn!(client_id = %key.client_id, error = %e, "cannot record the session's disconnect time");
        }
    }

    /// The session of `key` is connected again, or has ended.
    pub(super) fn forget_disconnected(&self, key: &QueueKey) {
        let Some(store) = self.records() else { return };
        let mut batch = WriteBatch::new();
        batch.delete(Column::Node, key_of(key));
        if let Err(e) = store.write(batch, Durability::Buffered) {
            warn!(client_id = %key.client_id, error = %e, "cannot clear the session's disconnect time");
        }
    }

    /// When the session of `key` was disconnected, as recorded before a restart (now when no
    /// record is found).
    pub(super) fn disconnected_at(&self, key: &QueueKey) -> Instant {
        let now = Instant::now();
        let recorded = self.records().and_then(|s| s.get(Column::Node, &key_of(key)).ok().flatten());
        let Some(ms) = recorded.and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok()).map(u64::from_be_bytes) else {
            return now;
        };
        let ago = Duration::from_millis(unix_ms().saturating_sub(ms));
        now.checked_sub(ago).unwrap_or(now)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use vmq_storage::{MemStore, MessageStore, StoreMessageStore};

    use super::*;
    use crate::broker::{BrokerSettings, ConnectionHandle};

    #[tokio::test]
    async fn a_restarted_node_expires_a_session_counting_from_its_disconnect() {
        let mem = Arc::new(MemStore::new());
        let kv: Arc<dyn Store> = mem.clone();
        let messages: Arc<dyn MessageStore> = Arc::new(StoreMessageStore::open(mem, Durability::Buffered).unwrap());
        let settings = BrokerSettings {
            persistent_client_expiration: Some(Duration::from_secs(3600)),
            ..BrokerSettings::default()
        };
        let key = QueueKey::new("", "expiring");
        {
            let broker = Broker::with_records(settings.clone(), messages.clone(), Some(kv.clone()));
            let conn = ConnectionHandle::new(broker.next_connection_id());
            let reg = broker.register(key.clone(), false, conn.clone()).await.unwrap();
            // A queued message keeps the session's queue in the store across the restart.
            messages.append(&key, &[b"queued"]).unwrap();
            broker.disconnected(
                &reg.slot,
                conn.id,
                crate::broker::inflight::SavedInflight::default(),
                None,
                Instant::now(),
            );
        }
        // The disconnect was two hours ago.
        let mut batch = WriteBatch::new();
        batch.put(Column::Node, key_of(&key), (unix_ms() - 7_200_000).to_be_bytes().to_vec());
        kv.write(batch, Durability::Buffered).unwrap();

        let restarted = Broker::with_records(settings.clone(), messages.clone(), Some(kv.clone()));
        assert!(restarted.session(&key).is_some(), "restored from the store");
        assert_eq!(restarted.expire_sessions(Instant::now()), 1, "an hour past its expiration");

        // Without a record (or counted from the restart) it would live on.
        let fresh = QueueKey::new("", "fresh");
        messages.append(&fresh, &[b"queued"]).unwrap();
        let again = Broker::with_records(settings, messages, Some(kv));
        assert_eq!(again.expire_sessions(Instant::now()), 0);
        assert!(again.session(&fresh).is_some());
    }
}
