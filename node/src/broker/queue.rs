//! Per-client message queues (VerneMQ's `vmq_queue`).
//!
//! A queue outlives its connection for persistent sessions. While its session is connected it
//! is *online*: messages wait in memory (at most `max_online_messages`) until the connection's
//! inflight window has room. While disconnected it is *offline*: QoS 1/2 messages go to the
//! [`MessageStore`] (at most `max_offline_messages`) and QoS 0 messages are dropped. A message
//! read back from the store keeps its sequence number and is deleted from the store only when
//! its delivery completes, so a crash never loses an offline message that was accepted.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, oneshot};
use tracing::warn;
use vmq_config::QueueType;
use vmq_storage::{MessageSeq, MessageStore, QueueKey, StoreError};

use super::message::Delivery;
use super::persist;
use vmq_mqtt::QoS;

/// Size limits of a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// `max_online_messages`; `None` = unlimited.
    pub max_online: Option<usize>,
    /// `max_offline_messages`; `None` = unlimited.
    pub max_offline: Option<usize>,
    /// `override_max_online_messages`.
    pub override_max_online: bool,
    /// `queue_type`.
    pub queue_type: QueueType,
}

impl Default for QueueLimits {
    fn default() -> Self {
        Self {
            max_online: Some(1000),
            max_offline: Some(1000),
            override_max_online: false,
            queue_type: QueueType::Fifo,
        }
    }
}

/// A queued message and, if it is also in the message store, its sequence number there.
#[derive(Debug, Clone, PartialEq)]
pub struct Queued {
    /// The message and how to deliver it.
    pub delivery: Delivery,
    /// Position in the message store; delete it once delivered.
    pub stored: Option<MessageSeq>,
}

/// Resolves once what a QoS 1/2 publish was handed to holds it: an offline queue's message
/// store (durable on disk), or another node that must deliver it (accepted there). The broker
/// acknowledges a publish only after every such ticket resolved `Ok`.
#[derive(Debug)]
#[must_use]
pub enum Durable {
    /// An append to the message store.
    Stored(oneshot::Receiver<Result<(), StoreError>>),
    /// A forward to another node.
    Remote(crate::ack::Ticket),
    /// Could not even be handed over (e.g. the node shuts down); the reason.
    Failed(String),
}

/// Why a [`Durable`] ticket failed.
#[derive(Debug, thiserror::Error)]
pub enum NotDurable {
    /// The message store refused the message.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The other node did not accept it.
    #[error(transparent)]
    Remote(#[from] crate::ack::NotAccepted),
    /// The forward could not be handed over.
    #[error("{0}")]
    Failed(String),
}

impl Durable {
    /// Waits for the answer.
    pub async fn wait(self) -> Result<(), NotDurable> {
        match self {
            Durable::Stored(rx) => {
                rx.await.unwrap_or_else(|_| Err(StoreError::Engine("message store stopped".into())))?
            }
            Durable::Remote(ticket) => ticket.wait().await?,
            Durable::Failed(why) => return Err(NotDurable::Failed(why)),
        }
        Ok(())
    }

    /// [`Durable::wait`] without giving the ticket up: the wait may be dropped and begun again
    /// (in a `select!`) until it returned once; it must not be called after that.
    pub async fn settled(&mut self) -> Result<(), NotDurable> {
        match self {
            Durable::Stored(rx) => {
                rx.await.unwrap_or_else(|_| Err(StoreError::Engine("message store stopped".into())))?
            }
            Durable::Remote(ticket) => ticket.settled().await?,
            Durable::Failed(why) => return Err(NotDurable::Failed(why.clone())),
        }
        Ok(())
    }
}

/// What happened to an enqueued message.
#[derive(Debug)]
pub enum EnqueueOutcome {
    /// Waiting in memory for the connected session.
    Queued,
    /// Handed to the message store; durable when the ticket resolves.
    Stored(Durable),
    /// Dropped: queue full, QoS 0 to an offline session, or a storage failure.
    Dropped,
}

impl EnqueueOutcome {
    /// True for [`EnqueueOutcome::Dropped`].
    pub fn is_dropped(&self) -> bool {
        matches!(self, EnqueueOutcome::Dropped)
    }
}

#[derive(Debug, Default)]
struct Inner {
    online: bool,
    pending: VecDeque<Queued>,
    /// Messages of this queue in the store that are not yet in `pending` (offline backlog
    /// still to stream in after reconnect, or everything while offline).
    backlog: u64,
    /// Appends handed to the store and not yet durable; they join `backlog` when they are.
    appending: u64,
    /// Highest sequence already loaded from the store into `pending`.
    loaded_upto: Option<MessageSeq>,
    dropped: u64,
    /// Something of this queue was handed to the store at some point; a queue that never was
    /// (every clean session's) has nothing to delete there when it ends.
    used_store: bool,
    /// While the session's older messages still drain from its previous node, what arrives
    /// by routing waits here, so that it is delivered after them (order per publisher).
    held: Option<VecDeque<Delivery>>,
}

/// Queues whose consumers are still to be woken: a connection that routes a batch of
/// publishes wakes each subscriber once, after the batch, instead of once per message, so a
/// subscriber takes many messages per wake-up.
#[derive(Debug, Default)]
pub struct Wakes(Vec<Arc<Queue>>);

impl Wakes {
    /// Wakes every consumer collected so far.
    pub fn wake_all(&mut self) {
        for q in self.0.drain(..) {
            q.notify.notify_one();
        }
    }
}

/// One client's queue.
pub struct Queue {
    key: QueueKey,
    limits: QueueLimits,
    store: Arc<dyn MessageStore>,
    // A std mutex: sections are short and never await; publishers of many tasks enqueue here.
    inner: Mutex<Inner>,
    notify: Notify,
    /// See [`Queue::set_moved`].
    moved: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("key", &self.key).finish_non_exhaustive()
    }
}

/// Number of stored messages read per batch when streaming a backlog.
const LOAD_BATCH: usize = 100;

/// Messages per store append when a queue going offline writes out its in-memory messages.
const PERSIST_CHUNK: usize = 1024;

impl Queue {
    /// An offline queue for `key`; messages already in `store` for it become its backlog.
    pub fn new(key: QueueKey, limits: QueueLimits, store: Arc<dyn MessageStore>) -> Self {
        let backlog = store.count(&key);
        let inner = Inner { backlog, used_store: backlog > 0, ..Inner::default() };
        Self { key, limits, store, inner: Mutex::new(inner), notify: Notify::new(), moved: Default::default() }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every section leaves `Inner` consistent, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The queue's key.
    pub fn key(&self) -> &QueueKey {
        &self.key
    }

    /// Messages waiting (in memory and in the store).
    pub fn len(&self) -> u64 {
        let inner = self.lock();
        inner.pending.len() as u64 + inner.backlog
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages dropped so far.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// True while a connection consumes this queue.
    pub fn is_online(&self) -> bool {
        self.lock().online
    }

    /// Wakes the consumer when messages arrive.
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }

    /// Adds a message for the client and wakes its connection.
    pub fn enqueue(self: &Arc<Self>, delivery: Delivery) -> EnqueueOutcome {
        let (outcome, wake) = self.push(delivery, false);
        if wake {
            self.notify.notify_one();
        }
        outcome
    }

    /// Adds a message for the client; its connection is woken by `wakes` later, once per
    /// batch of messages rather than once per message.
    pub fn enqueue_batched(self: &Arc<Self>, delivery: Delivery, wakes: &mut Wakes) -> EnqueueOutcome {
        let (outcome, wake) = self.push(delivery, false);
        if wake {
            wakes.0.push(Arc::clone(self));
        }
        outcome
    }

    /// Adds a message drained from the session's previous node: ahead of what is held back.
    pub fn enqueue_drained(self: &Arc<Self>, delivery: Delivery, wakes: &mut Wakes) -> EnqueueOutcome {
        let (outcome, wake) = self.push(delivery, true);
        if wake {
            wakes.0.push(Arc::clone(self));
        }
        outcome
    }

    /// From now on, routed messages wait until [`Queue::release`]: the session's older
    /// messages are on their way from its previous node.
    pub fn hold(&self) {
        let mut inner = self.lock();
        if inner.held.is_none() {
            inner.held = Some(VecDeque::new());
        }
    }

    /// The drain is complete: what was held back follows the drained messages.
    pub fn release(self: &Arc<Self>) {
        let held = self.lock().held.take();
        for delivery in held.into_iter().flatten() {
            let _ = self.enqueue(delivery);
        }
    }

    /// Adds a message (`drained`: from the session's previous node, ahead of what is held
    /// back); true when the consumer needs a wake-up: the message is the first one
    /// waiting in memory. While messages wait the consumer either was woken already or has a
    /// full inflight window and takes more as acknowledgements arrive.
    fn push(self: &Arc<Self>, delivery: Delivery, drained: bool) -> (EnqueueOutcome, bool) {
        let mut inner = self.lock();
        if drained {
            // Its old node deletes it once this node answers: on disk first, even while online.
            return (self.store(inner, delivery), false);
        }
        {
            let pending = inner.pending.len();
            if let Some(held) = inner.held.as_mut() {
                // A drain into this queue runs: routed messages wait behind it.
                if self.limits.max_online.is_some_and(|max| pending + held.len() >= max) {
                    inner.dropped += 1;
                    return (EnqueueOutcome::Dropped, false);
                }
                held.push_back(delivery);
                return (EnqueueOutcome::Queued, false);
            }
        }
        if inner.online {
            if inner.backlog > 0 || inner.appending > 0 {
                // Older messages are still in the store: keep order by appending behind them.
                // The store's completion wakes the consumer.
                return (self.store(inner, delivery), false);
            }
            if let Some(max) = self.limits.max_online
                && inner.pending.len() >= max
            {
                match self.limits.queue_type {
                    QueueType::Fifo => {
                        inner.dropped += 1;
                        return (EnqueueOutcome::Dropped, false);
                    }
                    QueueType::Lifo => {
                        if max == 0 {
                            inner.dropped += 1;
                            return (EnqueueOutcome::Dropped, false);
                        }
                        // Newest messages are at the front, the oldest at the back.
                        if let Some(old) = inner.pending.pop_back() {
                            inner.dropped += 1;
                            self.forget(&old);
                        }
                    }
                }
            }
            let queued = Queued { delivery, stored: None };
            let first = inner.pending.is_empty();
            match self.limits.queue_type {
                QueueType::Fifo => inner.pending.push_back(queued),
                QueueType::Lifo => inner.pending.push_front(queued),
            }
            (EnqueueOutcome::Queued, first)
        } else {
            if delivery.qos == QoS::AtMostOnce {
                inner.dropped += 1;
                return (EnqueueOutcome::Dropped, false);
            }
            (self.store(inner, delivery), false)
        }
    }

    /// Hands a message to the store. The lock is released before the store is called: its
    /// completion may run synchronously and takes the lock itself.
    fn store(self: &Arc<Self>, mut inner: MutexGuard<'_, Inner>, delivery: Delivery) -> EnqueueOutcome {
        if let Some(max) = self.limits.max_offline
            && (inner.backlog + inner.appending) as usize + inner.pending.len() >= max
        {
            inner.dropped += 1;
            return EnqueueOutcome::Dropped;
        }
        inner.appending += 1;
        inner.used_store = true;
        drop(inner);
        let data = persist::encode_delivery(&delivery);
        let (tx, rx) = oneshot::channel();
        let queue = Arc::clone(self);
        self.store.append_deferred(
            &self.key,
            &[&data],
            Box::new(move |result| {
                let mut inner = queue.lock();
                inner.appending -= 1;
                let answer = match result {
                    Ok(_) => {
                        inner.backlog += 1;
                        Ok(())
                    }
                    Err(e) => {
                        warn!(client_id = %queue.key.client_id, error = %e, "offline message not stored");
                        inner.dropped += 1;
                        Err(e)
                    }
                };
                let online = inner.online;
                drop(inner);
                if online {
                    queue.notify.notify_one();
                }
                let _ = tx.send(answer);
            }),
        );
        EnqueueOutcome::Stored(Durable::Stored(rx))
    }

    fn forget(&self, q: &Queued) {
        self.delivered(q.stored);
    }

    /// Marks the queue online (a connection consumes it). Messages stored while offline are
    /// streamed in as the consumer takes them; without `override_max_online_messages`, those
    /// beyond `max_online_messages` are dropped, as VerneMQ does.
    pub fn set_online(&self) {
        let mut inner = self.lock();
        inner.online = true;
        if !self.limits.override_max_online
            && let Some(max) = self.limits.max_online
        {
            let excess = (inner.backlog as usize + inner.pending.len()).saturating_sub(max);
            if excess > 0 {
                self.drop_newest_stored(&mut inner, excess as u64);
            }
        }
        drop(inner);
        self.notify.notify_one();
    }

    fn drop_newest_stored(&self, inner: &mut Inner, n: u64) {
        // The stored backlog is read in order; the newest `n` are the ones over the limit.
        let mut all = Vec::new();
        let mut after = inner.loaded_upto;
        while let Ok(page) = self.store.read(&self.key, after, 1000) {
            let Some(last) = page.last() else { break };
            after = Some(last.seq);
            all.extend(page.into_iter().map(|m| m.seq));
        }
        let cut = all.len().saturating_sub(n as usize);
        let victims = &all[cut..];
        if let Err(e) = self.store.delete(&self.key, victims) {
            warn!(client_id = %self.key.client_id, error = %e, "cannot drop excess offline messages");
            return;
        }
        inner.backlog = inner.backlog.saturating_sub(victims.len() as u64);
        inner.dropped += victims.len() as u64;
    }

    /// Marks the queue offline. QoS 0 messages waiting in memory are dropped; QoS 1/2 ones
    /// stay, in order, ahead of what the store receives from now on. Messages in the
    /// connection's inflight window stay in the session (and, if read from the store, in the
    /// store) so they are resent with their packet ids on reconnect [MQTT-4.4.0-1].
    pub fn set_offline(self: &Arc<Self>) {
        let mut inner = self.lock();
        // Held-back messages go behind what is queued; an offline queue keeps its order on disk.
        if let Some(held) = inner.held.take() {
            inner.pending.extend(held.into_iter().map(|delivery| Queued { delivery, stored: None }));
        }
        inner.online = false;
        let before = inner.pending.len();
        inner.pending.retain(|q| q.delivery.qos != QoS::AtMostOnce);
        inner.dropped += (before - inner.pending.len()) as u64;
        // Messages that arrived while online live only in memory; an offline session's
        // messages must survive a crash, so they go to the store now. They are newer than every
        // stored message (arrivals go to the store while a backlog exists), so appending keeps
        // the order.
        if inner.backlog > 0 || inner.appending > 0 {
            return;
        }
        let (memory_only, stored): (VecDeque<Queued>, VecDeque<Queued>) =
            std::mem::take(&mut inner.pending).into_iter().partition(|q| q.stored.is_none());
        inner.pending = stored;
        if memory_only.is_empty() {
            return;
        }
        inner.appending += memory_only.len() as u64;
        inner.used_store = true;
        drop(inner);
        // One append per chunk rather than per message: a slow subscriber can leave a long
        // queue behind, and each append is a job for the store's writer.
        let encoded: Vec<Vec<u8>> = memory_only.iter().map(|q| persist::encode_delivery(&q.delivery)).collect();
        for chunk in encoded.chunks(PERSIST_CHUNK) {
            let parts: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
            let queue = Arc::clone(self);
            let n = chunk.len() as u64;
            self.store.append_deferred(
                &self.key,
                &parts,
                Box::new(move |result| queue.appended(n, result.map(|_| ()))),
            );
        }
    }

    /// Completion of an append of `n` messages started by [`Queue::set_offline`]. Runs on the
    /// store's writer thread, so it only takes the queue lock briefly (and never while the
    /// queue waits for the store: see [`Queue::destroy`]).
    fn appended(&self, n: u64, result: Result<(), StoreError>) {
        let mut inner = self.lock();
        inner.appending -= n;
        match result {
            Ok(()) => inner.backlog += n,
            Err(e) => {
                warn!(client_id = %self.key.client_id, error = %e, messages = n, "offline messages not stored");
                inner.dropped += n;
            }
        }
    }

    /// Its session now lives on another node, known here: publishes made here reach it by
    /// forward, so they skip this queue (see `Broker::publish_batched`).
    pub fn set_moved(&self) {
        self.moved.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// See [`Queue::set_moved`].
    pub fn is_moved(&self) -> bool {
        self.moved.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// True when no append of this queue is on its way to the store.
    pub fn is_settled(&self) -> bool {
        self.lock().appending == 0
    }

    /// Moves up to `max` messages into `out` for delivery, of which at most `max_acked` with
    /// QoS 1 or 2 (those take a place in the inflight window; QoS 0 ones do not). Expired
    /// messages are dropped on the way (their stored copies deleted).
    pub fn take(&self, max: usize, max_acked: usize, now: std::time::Instant, out: &mut Vec<Queued>) {
        let mut inner = self.lock();
        if !inner.online {
            return;
        }
        let (mut taken, mut acked) = (0, 0);
        while taken < max {
            if inner.pending.is_empty() && inner.backlog > 0 {
                self.load_batch(&mut inner);
            }
            let Some(front) = inner.pending.front() else { break };
            let needs_ack = front.delivery.qos != QoS::AtMostOnce;
            if needs_ack && acked == max_acked {
                break;
            }
            let Some(q) = inner.pending.pop_front() else { break };
            if q.delivery.msg.is_expired(now) {
                self.forget(&q);
                continue;
            }
            out.push(q);
            taken += 1;
            acked += usize::from(needs_ack);
        }
    }

    fn load_batch(&self, inner: &mut Inner) {
        match self.store.read(&self.key, inner.loaded_upto, LOAD_BATCH) {
            Ok(page) => {
                if page.is_empty() {
                    inner.backlog = 0;
                }
                for m in page {
                    inner.loaded_upto = Some(m.seq);
                    inner.backlog = inner.backlog.saturating_sub(1);
                    match persist::decode_delivery(&m.data) {
                        Some(delivery) => inner.pending.push_back(Queued { delivery, stored: Some(m.seq) }),
                        None => {
                            warn!(client_id = %self.key.client_id, seq = m.seq.0, "undecodable stored message skipped");
                            inner.dropped += 1;
                        }
                    }
                }
            }
            Err(e) => warn!(client_id = %self.key.client_id, error = %e, "cannot read offline messages"),
        }
    }

    /// Puts messages back at the front (a connection closed before sending them).
    pub fn requeue_front(&self, items: Vec<Queued>) {
        let mut inner = self.lock();
        for q in items.into_iter().rev() {
            inner.pending.push_front(q);
        }
    }

    /// The delivery of a message read from the store completed: delete it there. The delete
    /// is not waited for: at worst a crash redelivers it, as QoS 1 allows.
    pub fn delivered(&self, stored: Option<MessageSeq>) {
        if let Some(seq) = stored {
            let client_id = self.key.client_id.clone();
            self.store.delete_deferred(
                &self.key,
                &[seq],
                Box::new(move |r| {
                    if let Err(e) = r {
                        warn!(%client_id, error = %e, "cannot delete delivered message");
                    }
                }),
            );
        }
    }

    /// Deletes everything (the session ended). The store's delete is queued behind the appends
    /// already handed to it, and not waited for: their completions take this queue's lock on
    /// the store's thread, so waiting here with the lock held would deadlock, and waiting
    /// without it would stall the caller's task on the disk.
    pub fn destroy(&self) {
        let mut inner = self.lock();
        inner.pending.clear();
        inner.backlog = 0;
        inner.online = false;
        let used_store = inner.used_store;
        drop(inner);
        if used_store {
            let client_id = self.key.client_id.clone();
            self.store.delete_queue_deferred(
                &self.key,
                Box::new(move |r| {
                    if let Err(e) = r {
                        warn!(%client_id, error = %e, "cannot delete offline queue");
                    }
                }),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use bytes::Bytes;
    use vmq_storage::{Durability, MemStore, StoreMessageStore};

    use super::*;
    use crate::broker::message::Msg;

    fn queue(limits: QueueLimits) -> Arc<Queue> {
        let store = StoreMessageStore::open(Arc::new(MemStore::new()), Durability::Buffered).unwrap();
        Arc::new(Queue::new(QueueKey::new("", "c"), limits, Arc::new(store)))
    }

    fn delivery(n: u8, qos: QoS) -> Delivery {
        let msg = Msg {
            mountpoint: "".into(),
            topic: "t".into(),
            payload: Bytes::from(vec![n]),
            qos,
            retain: false,
            properties: None,
            expires_at: None,
            publisher: None,
        };
        Delivery { msg: Arc::new(msg), qos, retain: false, subscription_ids: vec![] }
    }

    fn drain(q: &Queue) -> Vec<u8> {
        let mut out = Vec::new();
        q.take(usize::MAX, usize::MAX, Instant::now(), &mut out);
        for item in &out {
            q.delivered(item.stored);
        }
        out.iter().map(|q| q.delivery.msg.payload[0]).collect()
    }

    #[test]
    fn fifo_drops_new_messages_when_full() {
        let q = queue(QueueLimits { max_online: Some(2), ..QueueLimits::default() });
        q.set_online();
        for n in 0..4 {
            let _ = q.enqueue(delivery(n, QoS::AtLeastOnce));
        }
        assert_eq!((drain(&q), q.dropped()), (vec![0, 1], 2));
    }

    #[test]
    fn lifo_delivers_newest_first_and_drops_the_oldest() {
        let q = queue(QueueLimits { max_online: Some(2), queue_type: QueueType::Lifo, ..QueueLimits::default() });
        q.set_online();
        for n in 0..4 {
            let _ = q.enqueue(delivery(n, QoS::AtLeastOnce));
        }
        assert_eq!((drain(&q), q.dropped()), (vec![3, 2], 2));
    }

    #[test]
    fn offline_keeps_qos1_in_the_store_and_drops_qos0() {
        let q = queue(QueueLimits::default());
        assert!(q.enqueue(delivery(0, QoS::AtMostOnce)).is_dropped());
        assert!(matches!(q.enqueue(delivery(1, QoS::AtLeastOnce)), EnqueueOutcome::Stored(_)));
        assert_eq!(q.store.count(&q.key), 1);
        q.set_online();
        assert_eq!(drain(&q), vec![1]);
        assert_eq!(q.store.count(&q.key), 0, "deleted from the store once delivered");
    }

    #[test]
    fn reconnect_respects_max_online_unless_overridden() {
        for (override_max_online, want) in [(false, vec![0, 1]), (true, vec![0, 1, 2, 3])] {
            let q = queue(QueueLimits { max_online: Some(2), override_max_online, ..QueueLimits::default() });
            for n in 0..4 {
                let _ = q.enqueue(delivery(n, QoS::AtLeastOnce));
            }
            q.set_online();
            assert_eq!(drain(&q), want, "override_max_online_messages = {override_max_online}");
        }
    }

    #[test]
    fn messages_arriving_online_wait_behind_the_stored_backlog() {
        let q = queue(QueueLimits { override_max_online: true, ..QueueLimits::default() });
        let _ = q.enqueue(delivery(1, QoS::AtLeastOnce));
        q.set_online();
        let _ = q.enqueue(delivery(2, QoS::AtLeastOnce));
        assert_eq!(drain(&q), vec![1, 2]);
    }

    /// A persistent session goes offline with a long in-memory queue (its appends are still on
    /// the store's writer) and ends at once. Ending it used to wait for the store with the
    /// queue locked while the writer's completions waited for that lock: a deadlock.
    #[test]
    fn ending_a_session_while_its_messages_are_written_out_does_not_deadlock() {
        use vmq_storage::{GroupCommitConfig, GroupCommitMessageStore};
        let store: Arc<dyn MessageStore> =
            Arc::new(GroupCommitMessageStore::open(Arc::new(MemStore::new()), GroupCommitConfig::default()).unwrap());
        let key = QueueKey::new("", "c");
        let q = Arc::new(Queue::new(
            key.clone(),
            QueueLimits { max_online: None, ..QueueLimits::default() },
            store.clone(),
        ));
        q.set_online();
        for n in 0..5000u32 {
            let _ = q.enqueue(delivery((n % 251) as u8, QoS::AtLeastOnce));
        }
        // On a thread of its own, so that a deadlock fails the test instead of hanging it. The
        // blocking append at the end returns only after every job queued before it, the
        // delete included.
        let (tx, rx) = std::sync::mpsc::channel();
        let probe = store.clone();
        std::thread::spawn(move || {
            q.set_offline();
            q.destroy();
            tx.send(probe.append(&QueueKey::new("", "probe"), &[b"x"]).is_ok())
        });
        assert_eq!(rx.recv_timeout(std::time::Duration::from_secs(60)), Ok(true), "store writer stuck");
        assert_eq!(store.count(&key), 0, "the ended session's messages are deleted");
    }

    #[test]
    fn set_offline_writes_in_memory_messages_to_the_store_in_order() {
        let q = queue(QueueLimits { max_online: None, override_max_online: true, ..QueueLimits::default() });
        q.set_online();
        for n in 0..3000u32 {
            let _ = q.enqueue(delivery((n % 251) as u8, QoS::AtLeastOnce));
        }
        q.set_offline();
        assert_eq!(q.store.count(&q.key), 3000);
        q.set_online();
        let want: Vec<u8> = (0..3000u32).map(|n| (n % 251) as u8).collect();
        assert_eq!(drain(&q), want);
    }

    #[test]
    fn a_stored_message_whose_expiry_passed_while_offline_is_not_delivered_mqtt_3_3_2_5() {
        let q = queue(QueueLimits::default());
        let mut d = delivery(1, QoS::AtLeastOnce);
        // Expired a second before the session comes back: the stored copy keeps its expiry
        // as a wall-clock time, read back when the queue is taken from.
        Arc::make_mut(&mut d.msg).expires_at = Instant::now().checked_sub(std::time::Duration::from_secs(1));
        let _ = q.enqueue(d);
        let _ = q.enqueue(delivery(2, QoS::AtLeastOnce));
        assert_eq!(q.store.count(&q.key), 2, "both went to the store while offline");
        q.set_online();
        assert_eq!(drain(&q), vec![2]);
    }

    #[test]
    fn expired_messages_are_not_delivered_mqtt_3_3_2_5() {
        let q = queue(QueueLimits::default());
        q.set_online();
        let mut d = delivery(1, QoS::AtLeastOnce);
        Arc::make_mut(&mut d.msg).expires_at = Some(Instant::now());
        let _ = q.enqueue(d);
        let _ = q.enqueue(delivery(2, QoS::AtLeastOnce));
        assert_eq!(drain(&q), vec![2]);
    }
}
