use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::{Column, Durability, Store, StoreError, WriteBatch};

/// Identifies one offline queue: a client id within a mountpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
///
/// Its parts are shared, not copied, by its clones: the broker, the queue, the session and
/// the cluster's registration state each keep one per client, for the client's whole life.
pub struct QueueKey {
    /// The listener mountpoint ("" when none).
    pub mountpoint: Arc<str>,
    /// The MQTT client identifier.
    pub client_id: Arc<str>,
}

impl QueueKey {
    /// A queue key for `client_id` under `mountpoint`.
    pub fn new(mountpoint: impl Into<Arc<str>>, client_id: impl Into<Arc<str>>) -> Self {
        let mountpoint = mountpoint.into();
        // Most clients have no mountpoint: they share one empty string.
        let mountpoint = if mountpoint.is_empty() { no_mountpoint() } else { mountpoint };
        Self { mountpoint, client_id: client_id.into() }
    }

    /// Key prefix shared by every message of this queue. Length-prefixed parts keep the
    /// encoding prefix-free: no queue's prefix is a prefix of another queue's.
    pub(crate) fn prefix(&self) -> Vec<u8> {
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
        Some((QueueKey::new(mountpoint, client_id), rest))
    }
}

fn no_mountpoint() -> Arc<str> {
    static EMPTY: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from(""));
    EMPTY.clone()
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

/// Called once with the outcome of a deferred append: the sequence numbers of the messages,
/// in order, once they are as durable as the store's policy says, or the error that kept them
/// from being stored (then none of them is).
pub type AppendDone = Box<dyn FnOnce(Result<Vec<MessageSeq>, StoreError>) + Send>;

/// Called once with the outcome of a deferred delete (the number of messages removed for
/// [`MessageStore::delete_queue_deferred`], the number found and removed for
/// [`MessageStore::delete_deferred`]).
pub type DeleteDone = Box<dyn FnOnce(Result<u64, StoreError>) + Send>;

/// Offline queues of persistent sessions: append per client, read in order in batches, delete
/// what was delivered, count.
///
/// An append that returns `Ok` (or whose `done` callback gets `Ok`) is as durable as the
/// store's configured policy; the broker acknowledges a QoS 1/2 publish only after that.
///
/// The blocking methods may wait for a disk write. Async callers use the `*_deferred` methods,
/// which return at once and call `done` later, from another thread, e.g. to complete a
/// `tokio::sync::oneshot`:
///
/// ```
/// # use vmq_storage::{MessageStore, QueueKey};
/// # fn f(ms: &dyn MessageStore) {
/// let (tx, rx) = std::sync::mpsc::channel();
/// ms.append_deferred(&QueueKey::new("", "c1"), &[b"m"], Box::new(move |r| {
///     let _ = tx.send(r);
/// }));
/// let seqs = rx.recv();
/// # }
/// ```
///
/// `done` must not call the blocking methods of the same store (it may run on the store's
/// writer thread); it may call the `*_deferred` ones. Counts ([`MessageStore::count`],
/// [`MessageStore::queues`]) include only messages whose append has completed.
pub trait MessageStore: Send + Sync + 'static {
    /// Appends `messages` to the end of `queue`, atomically, and returns their sequence numbers.
    fn append(&self, queue: &QueueKey, messages: &[&[u8]]) -> Result<Vec<MessageSeq>, StoreError>;

    /// Appends like [`MessageStore::append`] without waiting: the messages are copied and get
    /// their sequence numbers before this returns (so two calls on one queue keep their
    /// order), and `done` is called once they are durable or have failed.
    ///
    /// The default runs [`MessageStore::append`] and calls `done` before returning.
    fn append_deferred(&self, queue: &QueueKey, messages: &[&[u8]], done: AppendDone) {
        done(self.append(queue, messages));
    }

    /// Reads up to `limit` messages of `queue` in order, strictly after `after` when given.
    fn read(&self, queue: &QueueKey, after: Option<MessageSeq>, limit: usize)
    -> Result<Vec<StoredMessage>, StoreError>;

    /// Deletes delivered messages (absent ones are ignored).
    fn delete(&self, queue: &QueueKey, seqs: &[MessageSeq]) -> Result<(), StoreError>;

    /// Deletes like [`MessageStore::delete`] without waiting; `done` gets the number of
    /// messages that were present and are now gone. Ordered after every append and delete
    /// issued before it. The default runs the delete and calls `done` before returning.
    fn delete_deferred(&self, queue: &QueueKey, seqs: &[MessageSeq], done: DeleteDone) {
        let before = self.count(queue);
        done(self.delete(queue, seqs).map(|()| before.saturating_sub(self.count(queue))));
    }

    /// Deletes a whole queue and returns how many messages it held.
    fn delete_queue(&self, queue: &QueueKey) -> Result<u64, StoreError>;

    /// Deletes a whole queue like [`MessageStore::delete_queue`] without waiting. The default
    /// runs it and calls `done` before returning.
    fn delete_queue_deferred(&self, queue: &QueueKey, done: DeleteDone) {
        done(self.delete_queue(queue));
    }

    /// Number of messages in `queue`.
    fn count(&self, queue: &QueueKey) -> u64;

    /// Every non-empty queue with its message count (used at start to restore sessions).
    fn queues(&self) -> Vec<(QueueKey, u64)>;
}

/// Per-queue bookkeeping rebuilt from the keys on open.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueMeta {
    /// Sequence number of the next append.
    pub(crate) next_seq: u64,
    /// Messages stored (durable appends minus deletes).
    pub(crate) count: u64,
}

/// A [`MessageStore`] on top of any [`Store`], in the [`Column::Messages`] column, writing each
/// append on the caller's thread (one store write, and with [`Durability::Sync`] one fsync,
/// per append). [`crate::GroupCommitMessageStore`] is the one to use with many concurrent
/// appenders.
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
        let queues = load_queues(&*store)?;
        Ok(Self { store, durability, queues: Mutex::new(queues) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<QueueKey, QueueMeta>> {
        // Each critical section leaves the map consistent, so a poisoned lock is still usable.
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Scans the whole [`Column::Messages`] column and rebuilds every queue's next sequence number
/// and count. A key that does not decode is corruption: refusing to start beats silently
/// dropping a queue.
pub(crate) fn load_queues<S: Store + ?Sized>(store: &S) -> Result<HashMap<QueueKey, QueueMeta>, StoreError> {
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
    Ok(queues)
}

pub(crate) fn message_key(prefix: &[u8], seq: MessageSeq) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 8);
    key.extend_from_slice(prefix);
    key.extend_from_slice(&seq.0.to_be_bytes());
    key
}

pub(crate) fn decode_key(key: &[u8]) -> Option<(QueueKey, MessageSeq)> {
    let (queue, rest) = QueueKey::decode_prefix(key)?;
    let seq = u64::from_be_bytes(rest.try_into().ok()?);
    Some((queue, MessageSeq(seq)))
}

/// The batch that appends `messages` to the queue with key prefix `prefix` from `first`.
pub(crate) fn append_batch(prefix: &[u8], first: u64, messages: &[&[u8]]) -> (WriteBatch, Vec<MessageSeq>) {
    let mut batch = WriteBatch::new();
    let mut seqs = Vec::with_capacity(messages.len());
    for (i, data) in messages.iter().enumerate() {
        let seq = MessageSeq(first + i as u64);
        batch.put(Column::Messages, message_key(prefix, seq), data.to_vec());
        seqs.push(seq);
    }
    (batch, seqs)
}

pub(crate) fn read_queue<S: Store + ?Sized>(
    store: &S,
    queue: &QueueKey,
    after: Option<MessageSeq>,
    limit: usize,
) -> Result<Vec<StoredMessage>, StoreError> {
    let prefix = queue.prefix();
    let after_key = after.map(|s| message_key(&prefix, s));
    store
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

/// Deletes the messages of `seqs` that exist and returns how many did. The caller serialises
/// this with other writes to the queue, so the count stays exact.
pub(crate) fn delete_present<S: Store + ?Sized>(
    store: &S,
    queue: &QueueKey,
    seqs: &[MessageSeq],
) -> Result<u64, StoreError> {
    let prefix = queue.prefix();
    let mut batch = WriteBatch::new();
    let mut present = 0u64;
    for seq in seqs {
        let key = message_key(&prefix, *seq);
        if store.get(Column::Messages, &key)?.is_some() {
            present += 1;
            batch.delete(Column::Messages, key);
        }
    }
    if !batch.is_empty() {
        // Buffered: a delete lost to a power failure only means a redelivery, which QoS 1
        // allows; the next synced write makes it durable anyway.
        store.write(batch, Durability::Buffered)?;
    }
    Ok(present)
}

/// Deletes every message of `queue`, page by page, and returns how many there were.
pub(crate) fn delete_all<S: Store + ?Sized>(store: &S, queue: &QueueKey) -> Result<u64, StoreError> {
    let prefix = queue.prefix();
    let mut deleted = 0u64;
    loop {
        let page = store.scan_prefix(Column::Messages, &prefix, None, 4096)?;
        if page.is_empty() {
            return Ok(deleted);
        }
        let mut batch = WriteBatch::new();
        for (key, _) in page {
            batch.delete(Column::Messages, key);
            deleted += 1;
        }
        store.write(batch, Durability::Buffered)?;
    }
}

pub(crate) fn nonempty_queues<'a>(queues: impl Iterator<Item = (&'a QueueKey, u64)>) -> Vec<(QueueKey, u64)> {
    let mut out: Vec<_> = queues.filter(|(_, n)| *n > 0).map(|(q, n)| (q.clone(), n)).collect();
    out.sort();
    out
}

impl<S: Store> MessageStore for StoreMessageStore<S> {
    fn append(&self, queue: &QueueKey, messages: &[&[u8]]) -> Result<Vec<MessageSeq>, StoreError> {
        let mut queues = self.lock();
        let meta = queues.get(queue).copied().unwrap_or_default();
        let (batch, seqs) = append_batch(&queue.prefix(), meta.next_seq, messages);
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
        read_queue(&*self.store, queue, after, limit)
    }

    fn delete(&self, queue: &QueueKey, seqs: &[MessageSeq]) -> Result<(), StoreError> {
        let mut queues = self.lock();
        let present = delete_present(&*self.store, queue, seqs)?;
        if let Some(meta) = queues.get_mut(queue) {
            meta.count = meta.count.saturating_sub(present);
        }
        Ok(())
    }

    fn delete_queue(&self, queue: &QueueKey) -> Result<u64, StoreError> {
        let mut queues = self.lock();
        let deleted = delete_all(&*self.store, queue)?;
        queues.remove(queue);
        Ok(deleted)
    }

    fn count(&self, queue: &QueueKey) -> u64 {
        self.lock().get(queue).map_or(0, |m| m.count)
    }

    fn queues(&self) -> Vec<(QueueKey, u64)> {
        nonempty_queues(self.lock().iter().map(|(q, m)| (q, m.count)))
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
    fn store_message_store_on_mem_store_meets_the_message_store_contract() {
        crate::contract::run_message_store_all(|| {
            StoreMessageStore::open(Arc::new(MemStore::new()), Durability::Buffered).unwrap()
        });
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

    #[test]
    fn undecodable_key_in_the_messages_column_refuses_to_open() {
        let store = Arc::new(MemStore::new());
        let mut b = WriteBatch::new();
        b.put(Column::Messages, b"\x00\x00".to_vec(), b"?".to_vec());
        store.write(b, Durability::Sync).unwrap();
        let err = StoreMessageStore::open(store, Durability::Buffered).err();
        assert!(matches!(err, Some(StoreError::Corrupt { column: "messages", .. })), "{err:?}");
    }

    #[test]
    fn queue_key_encoding_round_trips_and_is_pinned() {
        let key = message_key(&QueueKey::new("mp", "c1").prefix(), MessageSeq(258));
        // Golden vector: len(mountpoint) u32 BE, mountpoint, len(client id) u32 BE, client id,
        // seq u64 BE. Changing it needs a new RocksStore::FORMAT_VERSION.
        assert_eq!(key, b"\0\0\0\x02mp\0\0\0\x02c1\0\0\0\0\0\0\x01\x02".to_vec());
        assert_eq!(decode_key(&key), Some((QueueKey::new("mp", "c1"), MessageSeq(258))));
        assert_eq!(decode_key(&key[..key.len() - 1]), None);
    }
}
