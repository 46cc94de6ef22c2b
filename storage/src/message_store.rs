use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::{Column, Durability, Store, StoreError, WriteBatch};

/// Identifies one offline queue: a client id within a mountpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueKey {
    /// The listener mountpoint ("" when none).
    pub mountpoint: String,
    /// The MQTT client identifier.
    pub client_id: String,
}

impl QueueKey {
    /// A queue key for `client_id` under `mountpoint`.
    pub fn new(mountpoint: impl Into<String>, client_id: impl Into<String>) -> Self {
        Self { mountpoint: mountpoint.into(), client_id: client_id.into() }
    }

    /// Key prefix shared by every message of this queue. Length-prefixed parts keep the
    /// encoding prefix-free: no queue's prefix is a prefix of another queue's.
    fn prefix(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.mountpoint.len() + self.client_id.len());
        for part in [&self.mountpoint, &self.client_id] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part.as_bytes());
        }
        out
    }

    fn decode_prefix(key: &[u8]) -> Option<(QueueKey, &[u8])> {
        let (mountpoint, rest) = read_part(key)?;
        let (client_id, rest) = read_part(rest)?;
        Some((QueueKey { mountpoint, client_id }, rest))
    }
}

fn read_part(buf: &[u8]) -> Option<(String, &[u8])> {
    let len = u32::from_be_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    let bytes = buf.get(4..4 + len)?;
    Some((String::from_utf8(bytes.to_vec()).ok()?, &buf[4 + len..]))
}

/// Position of a message in its queue; increases with every append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageSeq(pub u64);

/// A message read back from a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Its position in the queue.
    pub seq: MessageSeq,
    /// The encoded message, opaque to the store.
    pub data: Vec<u8>,
}

/// Offline queues of persistent sessions: append per client, read in order in batches, delete
/// what was delivered, count.
///
/// An append that returns `Ok` is as durable as the store's configured [`Durability`]; the
/// broker acknowledges a QoS 1/2 publish only after that.
pub trait MessageStore: Send + Sync + 'static {
    /// Appends `messages` to the end of `queue`, atomically, and returns their sequence numbers.
    fn append(&self, queue: &QueueKey, messages: &[&[u8]]) -> Result<Vec<MessageSeq>, StoreError>;

    /// Reads up to `limit` messages of `queue` in order, strictly after `after` when given.
    fn read(
        &self,
        queue: &QueueKey,
        after: Option<MessageSeq>,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError>;

    /// Deletes delivered messages (absent ones are ignored).
    fn delete(&self, queue: &QueueKey, seqs: &[MessageSeq]) -> Result<(), StoreError>;

    /// Deletes a whole queue and returns how many messages it held.
    fn delete_queue(&self, queue: &QueueKey) -> Result<u64, StoreError>;

    /// Number of messages in `queue`.
    fn count(&self, queue: &QueueKey) -> u64;

    /// Every non-empty queue with its message count (used at start to restore sessions).
    fn queues(&self) -> Vec<(QueueKey, u64)>;
}

#[derive(Debug, Default, Clone, Copy)]
struct QueueMeta {
    next_seq: u64,
    count: u64,
}

/// A [`MessageStore`] on top of any [`Store`], in the [`Column::Messages`] column.
///
/// Keys are `queue prefix ++ seq (big-endian u64)`, so a prefix scan reads a queue in order.
/// Sequence numbers and counts are kept in memory and rebuilt from the keys on open.
pub struct StoreMessageStore<S: Store> {
    store: Arc<S>,
    durability: Durability,
    // Guards seq assignment and counts; held only around map updates and the batch write of
    // one append, never across an await.
    queues: Mutex<HashMap<QueueKey, QueueMeta>>,
}

impl<S: Store> StoreMessageStore<S> {
    /// Opens the message store on `store`, rebuilding sequence numbers and counts.
    pub fn open(store: Arc<S>, durability: Durability) -> Result<Self, StoreError> {
        let mut queues: HashMap<QueueKey, QueueMeta> = HashMap::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = store.scan_prefix(Column::Messages, &[], after.as_deref(), 4096)?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            for (key, _) in &page {
                let (queue, seq) = decode_key(key).ok_or_else(|| StoreError::Corrupt {
                    column: Column::Messages.name(),
                    reason: format!("undecodable message key of {} bytes", key.len()),
                })?;
                let meta = queues.entry(queue).or_default();
                meta.count += 1;
                meta.next_seq = meta.next_seq.max(seq.0 + 1);
            }
        }
        Ok(Self { store, durability, queues: Mutex::new(queues) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<QueueKey, QueueMeta>> {
        // Each critical section leaves the map consistent, so a poisoned lock is still usable.
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn message_key(prefix: &[u8], seq: MessageSeq) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 8);
    key.extend_from_slice(prefix);
    key.extend_from_slice(&seq.0.to_be_bytes());
    key
}

fn decode_key(key: &[u8]) -> Option<(QueueKey, MessageSeq)> {
    let (queue, rest) = QueueKey::decode_prefix(key)?;
    let seq = u64::from_be_bytes(rest.try_into().ok()?);
    Some((queue, MessageSeq(seq)))
}

impl<S: Store> MessageStore for StoreMessageStore<S> {
    fn append(&self, queue: &QueueKey, messages: &[&[u8]]) -> Result<Vec<MessageSeq>, StoreError> {
        let prefix = queue.prefix();
        let mut queues = self.lock();
        let meta = queues.get(queue).copied().unwrap_or_default();
        let mut batch = WriteBatch::new();
        let mut seqs = Vec::with_capacity(messages.len());
        for (i, data) in messages.iter().enumerate() {
            let seq = MessageSeq(meta.next_seq + i as u64);
            batch.put(Column::Messages, message_key(&prefix, seq), data.to_vec());
            seqs.push(seq);
        }
        // Written under the lock so that sequence order equals on-disk order even with
        // concurrent appenders to the same queue.
        self.store.write(batch, self.durability)?;
        let n = messages.len() as u64;
        queues.insert(queue.clone(), QueueMeta { next_seq: meta.next_seq + n, count: meta.count + n });
        Ok(seqs)
    }

    fn read(
        &self,
        queue: &QueueKey,
        after: Option<MessageSeq>,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let prefix = queue.prefix();
        let after_key = after.map(|s| message_key(&prefix, s));
        self.store
            .scan_prefix(Column::Messages, &prefix, after_key.as_deref(), limit)?
            .into_iter()
            .map(|(key, data)| {
                let seq = decode_key(&key).map(|(_, s)| s).ok_or_else(|| StoreError::Corrupt {
                    column: Column::Messages.name(),
                    reason: "undecodable message key".into(),
                })?;
                Ok(StoredMessage { seq, data })
            })
            .collect()
    }

    fn delete(&self, queue: &QueueKey, seqs: &[MessageSeq]) -> Result<(), StoreError> {
        let prefix = queue.prefix();
        let mut queues = self.lock();
        let mut batch = WriteBatch::new();
        let mut present = 0u64;
        for seq in seqs {
            let key = message_key(&prefix, *seq);
            if self.store.get(Column::Messages, &key)?.is_some() {
                present += 1;
                batch.delete(Column::Messages, key);
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        self.store.write(batch, Durability::Buffered)?;
        if let Some(meta) = queues.get_mut(queue) {
            meta.count = meta.count.saturating_sub(present);
        }
        Ok(())
    }

    fn delete_queue(&self, queue: &QueueKey) -> Result<u64, StoreError> {
        let prefix = queue.prefix();
        let mut queues = self.lock();
        let mut deleted = 0u64;
        loop {
            let page = self.store.scan_prefix(Column::Messages, &prefix, None, 4096)?;
            if page.is_empty() {
                break;
            }
            let mut batch = WriteBatch::new();
            for (key, _) in page {
                batch.delete(Column::Messages, key);
                deleted += 1;
            }
            self.store.write(batch, Durability::Buffered)?;
        }
        queues.remove(queue);
        Ok(deleted)
    }

    fn count(&self, queue: &QueueKey) -> u64 {
        self.lock().get(queue).map_or(0, |m| m.count)
    }

    fn queues(&self) -> Vec<(QueueKey, u64)> {
        let mut out: Vec<_> =
            self.lock().iter().filter(|(_, m)| m.count > 0).map(|(q, m)| (q.clone(), m.count)).collect();
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemStore;

    fn q(c: &str) -> QueueKey {
        QueueKey::new("", c)
    }

    #[test]
    fn append_read_delete_keeps_order_and_count() {
        let ms = StoreMessageStore::open(Arc::new(MemStore::new()), Durability::Buffered).unwrap();
        let seqs = ms.append(&q("a"), &[b"1", b"2", b"3"]).unwrap();
        ms.append(&q("ab"), &[b"x"]).unwrap();
        assert_eq!(ms.count(&q("a")), 3);
        let read = ms.read(&q("a"), None, 10).unwrap();
        assert_eq!(read.iter().map(|m| m.data.as_slice()).collect::<Vec<_>>(), [b"1", b"2", b"3"]);
        let page = ms.read(&q("a"), Some(seqs[0]), 1).unwrap();
        assert_eq!(page[0].data, b"2");
        ms.delete(&q("a"), &seqs[..2]).unwrap();
        ms.delete(&q("a"), &seqs[..2]).unwrap();
        assert_eq!(ms.count(&q("a")), 1);
        assert_eq!(ms.read(&q("a"), None, 10).unwrap()[0].data, b"3");
        assert_eq!(ms.read(&q("ab"), None, 10).unwrap().len(), 1, "queues are prefix-free");
    }

    #[test]
    fn reopen_rebuilds_sequence_numbers_and_counts() {
        let store = Arc::new(MemStore::new());
        let ms = StoreMessageStore::open(store.clone(), Durability::Buffered).unwrap();
        ms.append(&q("a"), &[b"1", b"2"]).unwrap();
        ms.append(&QueueKey::new("mp", "a"), &[b"m"]).unwrap();
        drop(ms);
        let ms = StoreMessageStore::open(store, Durability::Buffered).unwrap();
        assert_eq!(ms.queues(), vec![(q("a"), 2), (QueueKey::new("mp", "a"), 1)]);
        let next = ms.append(&q("a"), &[b"3"]).unwrap();
        assert_eq!(next, vec![MessageSeq(2)]);
        assert_eq!(ms.delete_queue(&q("a")).unwrap(), 3);
        assert_eq!(ms.count(&q("a")), 0);
    }
}
