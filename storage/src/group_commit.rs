//! Group commit for the offline message store: appends from many callers are combined into one
//! store write with one fsync, and each caller is told once its own messages are durable.
//!
//! This is the classic group commit of database logs: while the writer thread waits for one
//! fsync, new appends queue up, and the next write takes all of them. Under load the number of
//! fsyncs per second stays about constant while the messages per fsync grow, so durability
//! costs far less than one fsync per message.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::{self, JoinHandle, ThreadId};

use crate::message_store::{
    AppendDone, DeleteDone, QueueMeta, append_batch, delete_all, delete_present, load_queues, nonempty_queues,
    read_queue,
};
use crate::{Durability, MessageSeq, MessageStore, QueueKey, Store, StoreError, StoredMessage, WriteBatch};

/// When an append to the offline message store counts as done (config key
/// `message_store.durability`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DurabilityPolicy {
    /// `sync`: appends are grouped and each group is written with one fsync; an append is done
    /// once its group is on disk. Survives power loss. The default.
    #[default]
    Sync,
    /// `buffered`: appends are grouped and written to the write-ahead log without fsync; an
    /// append is done once the operating system has it. Survives a crash of the process
    /// (`kill -9`), not of the machine.
    Buffered,
    /// `always`: every append is its own write with its own fsync, never grouped. The slowest;
    /// what LevelDB's `sync_on_write = on` did.
    Always,
}

impl DurabilityPolicy {
    /// The durability of each store write under this policy.
    pub fn durability(self) -> Durability {
        match self {
            DurabilityPolicy::Sync | DurabilityPolicy::Always => Durability::Sync,
            DurabilityPolicy::Buffered => Durability::Buffered,
        }
    }
}

impl FromStr for DurabilityPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "sync" => Ok(DurabilityPolicy::Sync),
            "buffered" => Ok(DurabilityPolicy::Buffered),
            "always" => Ok(DurabilityPolicy::Always),
            other => Err(format!("unknown durability {other:?}: expected sync, buffered or always")),
        }
    }
}

impl fmt::Display for DurabilityPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DurabilityPolicy::Sync => "sync",
            DurabilityPolicy::Buffered => "buffered",
            DurabilityPolicy::Always => "always",
        })
    }
}

/// Settings of a [`GroupCommitMessageStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCommitConfig {
    /// When an append is done. Default [`DurabilityPolicy::Sync`].
    pub policy: DurabilityPolicy,
    /// Most messages in one group write (`message_store.max_group_messages`). Default 4096.
    pub max_group_messages: usize,
    /// Most payload bytes in one group write (`message_store.max_group_bytes`); a single
    /// larger append still goes alone. Default 4 MiB.
    pub max_group_bytes: usize,
}

impl Default for GroupCommitConfig {
    fn default() -> Self {
        Self { policy: DurabilityPolicy::Sync, max_group_messages: 4096, max_group_bytes: 4 << 20 }
    }
}

/// Counters of a [`GroupCommitMessageStore`], for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GroupCommitStats {
    /// Appends completed, successfully or not.
    pub appends: u64,
    /// Messages in those appends.
    pub messages: u64,
    /// Store writes that carried appends (the fsyncs, under `sync` and `always`).
    pub groups: u64,
    /// Of those, the writes that failed (every append in them got the error).
    pub failed_groups: u64,
}

/// A [`MessageStore`] on any [`Store`] whose appends are group-committed by one writer thread.
///
/// Ordering: every append, delete and queue deletion goes through one FIFO that the writer
/// thread applies in order, so sequence order is on-disk order, and a delete is applied after
/// every append issued before it. Reads go straight to the store and see completed writes.
///
/// Durability contract: `done` of [`MessageStore::append_deferred`] (and the return of
/// [`MessageStore::append`]) happens only after the store write holding those messages
/// returned `Ok` with the durability of the configured [`DurabilityPolicy`]. When that write
/// fails, every append in it gets the error and none of its messages is stored or counted.
///
/// Callbacks run on the writer thread, after the write, without any lock held; they must be
/// short, must not panic, and must not call the blocking methods of this store (those return
/// an error when called there rather than deadlock).
///
/// Dropping the store completes every queued operation first, then stops the writer thread.
pub struct GroupCommitMessageStore<S: Store> {
    shared: Arc<Shared<S>>,
    writer: Option<JoinHandle<()>>,
}

struct Shared<S: Store> {
    store: Arc<S>,
    config: GroupCommitConfig,
    // A std mutex: held for map updates and queue pushes only, never during a store write or
    // a callback, so callers on async threads are not stalled by the disk.
    state: Mutex<State>,
    work: Condvar,
    writer_thread: OnceLock<ThreadId>,
}

struct State {
    queues: HashMap<QueueKey, Meta>,
    jobs: VecDeque<Job>,
    shutdown: bool,
    /// Set when the writer thread is gone (it panicked): new work fails at once instead of
    /// waiting forever.
    writer_gone: bool,
    stats: GroupCommitStats,
}

#[derive(Debug, Default, Clone, Copy)]
struct Meta {
    stored: QueueMeta,
    /// Appends queued or being written; while any is, the entry (and its `next_seq`) is kept
    /// even if the queue is deleted, so sequence numbers are never reused out of order.
    pending: u64,
}

/// One operation in the writer's FIFO. Deletes run after everything queued before them is
/// written, so they see (and remove) earlier appends and their counts stay exact.
enum Job {
    Append(PendingAppend),
    Delete { queue: QueueKey, seqs: Vec<MessageSeq>, done: DeleteDone },
    DeleteQueue { queue: QueueKey, done: DeleteDone },
}

impl Job {
    fn fail(self, e: StoreError) {
        match self {
            Job::Append(a) => (a.done)(Err(e)),
            Job::Delete { done, .. } | Job::DeleteQueue { done, .. } => done(Err(e)),
        }
    }
}

struct PendingAppend {
    queue: QueueKey,
    batch: WriteBatch,
    seqs: Vec<MessageSeq>,
    bytes: usize,
    done: AppendDone,
}

impl<S: Store> GroupCommitMessageStore<S> {
    /// Opens the message store on `store`, rebuilding sequence numbers and counts from the
    /// stored keys, and starts the writer thread.
    pub fn open(store: Arc<S>, config: GroupCommitConfig) -> Result<Self, StoreError> {
        let queues = load_queues(&*store)?.into_iter().map(|(q, stored)| (q, Meta { stored, pending: 0 })).collect();
        let shared = Arc::new(Shared {
            store,
            config,
            state: Mutex::new(State {
                queues,
                jobs: VecDeque::new(),
                shutdown: false,
                writer_gone: false,
                stats: GroupCommitStats::default(),
            }),
            work: Condvar::new(),
            writer_thread: OnceLock::new(),
        });
        let writer = {
            let shared = shared.clone();
            thread::Builder::new()
                .name("vmq-msg-store-writer".into())
                .spawn(move || shared.run_writer())
                .map_err(|e| StoreError::Engine(format!("cannot start the message store writer: {e}")))?
        };
        // Set before any job exists: none can be submitted until `open` returns.
        let _ = shared.writer_thread.set(writer.thread().id());
        Ok(Self { shared, writer: Some(writer) })
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> GroupCommitConfig {
        self.shared.config
    }

    /// Counters since open.
    pub fn stats(&self) -> GroupCommitStats {
        self.shared.lock_state().stats
    }

    /// Operations waiting for the writer thread (not counting the one it is writing).
    pub fn pending(&self) -> usize {
        self.shared.lock_state().jobs.len()
    }

    /// Queues a job, or fails it at once when the writer is gone.
    fn submit(&self, job: Job) {
        let mut st = self.shared.lock_state();
        if st.writer_gone {
            drop(st);
            return job.fail(writer_gone());
        }
        st.jobs.push_back(job);
        drop(st);
        self.shared.work.notify_one();
    }

    /// Runs a deferred operation and waits for its result.
    fn blocking<T: Send + 'static>(
        &self,
        op: impl FnOnce(Box<dyn FnOnce(Result<T, StoreError>) + Send>),
    ) -> Result<T, StoreError> {
        if self.shared.on_writer_thread() {
            return Err(StoreError::Engine(
                "blocking message store call from a completion callback would deadlock".into(),
            ));
        }
        let (tx, rx) = mpsc::sync_channel(1);
        op(Box::new(move |r| {
            // The receiver is this caller, which is waiting; a failed send cannot happen.
            let _ = tx.send(r);
        }));
        // Every job calls its callback exactly once (run or failed), so the sender is never
        // dropped unused; the fallback only guards that invariant.
        rx.recv().unwrap_or_else(|_| Err(writer_gone()))
    }
}

fn writer_gone() -> StoreError {
    StoreError::Engine("the message store writer thread has stopped".into())
}

/// Runs a store operation, turning a panic inside the store into an error for the callers
/// waiting on it, so that a bug in one write does not leave every later caller hanging.
fn guarded<T>(op: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(op)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(StoreError::Engine(format!("the store panicked during a write: {what}")))
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the state consistent, so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<S: Store> Shared<S> {
    fn lock_state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    fn on_writer_thread(&self) -> bool {
        self.writer_thread.get() == Some(&thread::current().id())
    }

    fn run_writer(&self) {
        // If a callback panics, mark the writer gone and fail what is queued, so no caller
        // waits forever.
        struct Guard<'a, S: Store>(&'a Shared<S>);
        impl<S: Store> Drop for Guard<'_, S> {
            fn drop(&mut self) {
                let jobs: Vec<_> = {
                    let mut st = self.0.lock_state();
                    st.writer_gone = true;
                    st.jobs.drain(..).collect()
                };
                for job in jobs {
                    job.fail(writer_gone());
                }
            }
        }
        let _guard = Guard(self);
        loop {
            let mut st = self.lock_state();
            while st.jobs.is_empty() && !st.shutdown {
                st = self.work.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            match st.jobs.pop_front() {
                None => return,
                Some(Job::Delete { queue, seqs, done }) => {
                    drop(st);
                    self.delete(&queue, &seqs, done);
                }
                Some(Job::DeleteQueue { queue, done }) => {
                    drop(st);
                    self.delete_queue(&queue, done);
                }
                Some(Job::Append(first)) => {
                    let group = self.take_group(&mut st, first);
                    drop(st);
                    self.commit(group);
                }
            }
        }
    }

    /// Takes `first` and the appends queued right behind it, up to the group limits; under
    /// [`DurabilityPolicy::Always`] every append is its own group.
    fn take_group(&self, st: &mut State, first: PendingAppend) -> Vec<PendingAppend> {
        let (mut messages, mut bytes) = (first.seqs.len(), first.bytes);
        let mut group = vec![first];
        if self.config.policy == DurabilityPolicy::Always {
            return group;
        }
        while let Some(Job::Append(next)) = st.jobs.front() {
            if messages + next.seqs.len() > self.config.max_group_messages
                || bytes + next.bytes > self.config.max_group_bytes
            {
                break;
            }
            messages += next.seqs.len();
            bytes += next.bytes;
            if let Some(Job::Append(next)) = st.jobs.pop_front() {
                group.push(next);
            }
        }
        group
    }

    fn delete(&self, queue: &QueueKey, seqs: &[MessageSeq], done: DeleteDone) {
        let result = guarded(|| delete_present(&*self.store, queue, seqs));
        if let Ok(n) = result {
            let mut st = self.lock_state();
            if let Some(meta) = st.queues.get_mut(queue) {
                meta.stored.count = meta.stored.count.saturating_sub(n);
            }
        }
        done(result);
    }

    fn delete_queue(&self, queue: &QueueKey, done: DeleteDone) {
        let result = guarded(|| delete_all(&*self.store, queue));
        let mut st = self.lock_state();
        if let Some(meta) = st.queues.get_mut(queue) {
            match (&result, meta.pending) {
                (Ok(_), 0) => {
                    st.queues.remove(queue);
                }
                (Ok(_), _) => meta.stored.count = 0,
                // A failed delete may have removed some pages already; the exact count comes
                // back with the next open.
                (Err(_), _) => {}
            }
        }
        drop(st);
        done(result);
    }

    fn commit(&self, group: Vec<PendingAppend>) {
        let mut batch = WriteBatch::new();
        let mut done = Vec::with_capacity(group.len());
        for a in group {
            batch.extend(a.batch);
            done.push((a.queue, a.seqs, a.done));
        }
        let durability = self.config.policy.durability();
        let result = guarded(|| self.store.write(batch, durability));
        {
            let mut st = self.lock_state();
            st.stats.groups += 1;
            st.stats.failed_groups += u64::from(result.is_err());
            for (queue, seqs, _) in &done {
                st.stats.appends += 1;
                st.stats.messages += seqs.len() as u64;
                if let Some(meta) = st.queues.get_mut(queue) {
                    meta.pending = meta.pending.saturating_sub(1);
                    if result.is_ok() {
                        meta.stored.count += seqs.len() as u64;
                    }
                }
            }
        }
        if let Err(e) = &result {
            tracing::warn!(error = %e, appends = done.len(), "message store group write failed");
        }
        for (_, seqs, callback) in done {
            callback(result.clone().map(|()| seqs));
        }
    }
}

impl<S: Store> MessageStore for GroupCommitMessageStore<S> {
    fn append(&self, queue: &QueueKey, messages: &[&[u8]]) -> Result<Vec<MessageSeq>, StoreError> {
        self.blocking(|done| self.append_deferred(queue, messages, done))
    }

    fn append_deferred(&self, queue: &QueueKey, messages: &[&[u8]], done: AppendDone) {
        if messages.is_empty() {
            return done(Ok(Vec::new()));
        }
        let bytes = messages.iter().map(|m| m.len()).sum();
        let mut st = self.shared.lock_state();
        if st.writer_gone {
            drop(st);
            return done(Err(writer_gone()));
        }
        let meta = st.queues.entry(queue.clone()).or_default();
        // Numbered and queued under one lock: FIFO order is sequence order, per queue.
        let (batch, seqs) = append_batch(&queue.prefix(), meta.stored.next_seq, messages);
        meta.stored.next_seq += messages.len() as u64;
        meta.pending += 1;
        st.jobs.push_back(Job::Append(PendingAppend { queue: queue.clone(), batch, seqs, bytes, done }));
        drop(st);
        self.shared.work.notify_one();
    }

    fn read(
        &self,
        queue: &QueueKey,
        after: Option<MessageSeq>,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        read_queue(&*self.shared.store, queue, after, limit)
    }

    fn delete(&self, queue: &QueueKey, seqs: &[MessageSeq]) -> Result<(), StoreError> {
        self.blocking(|done| self.delete_deferred(queue, seqs, done)).map(|_| ())
    }

    fn delete_deferred(&self, queue: &QueueKey, seqs: &[MessageSeq], done: DeleteDone) {
        self.submit(Job::Delete { queue: queue.clone(), seqs: seqs.to_vec(), done });
    }

    fn delete_queue(&self, queue: &QueueKey) -> Result<u64, StoreError> {
        self.blocking(|done| self.delete_queue_deferred(queue, done))
    }

    fn delete_queue_deferred(&self, queue: &QueueKey, done: DeleteDone) {
        self.submit(Job::DeleteQueue { queue: queue.clone(), done });
    }

    fn count(&self, queue: &QueueKey) -> u64 {
        self.shared.lock_state().queues.get(queue).map_or(0, |m| m.stored.count)
    }

    fn queues(&self) -> Vec<(QueueKey, u64)> {
        nonempty_queues(self.shared.lock_state().queues.iter().map(|(q, m)| (q, m.stored.count)))
    }
}

impl<S: Store> Drop for GroupCommitMessageStore<S> {
    fn drop(&mut self) {
        self.shared.lock_state().shutdown = true;
        self.shared.work.notify_one();
        if self.shared.on_writer_thread() {
            // Dropped by a callback holding the last handle: the writer cannot join itself;
            // it drains the queue and exits on its own.
            return;
        }
        if let Some(writer) = self.writer.take() {
            // A panic of the writer was already reported to every waiting caller by its guard.
            let _ = writer.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::{Receiver, Sender, channel};

    use super::*;
    use crate::{Column, KeyValue, MemStore};

    fn q(c: &str) -> QueueKey {
        QueueKey::new("", c)
    }

    /// A [`MemStore`] that records every write, can hold the next write until released, and
    /// can fail or panic on demand.
    #[derive(Default)]
    struct Recording {
        inner: MemStore,
        writes: Mutex<Vec<(usize, Durability)>>,
        hold: Mutex<Option<(Sender<()>, Receiver<()>)>>,
        fail_with: Mutex<Option<StoreError>>,
        panic_once: Mutex<bool>,
    }

    impl Recording {
        /// Holds the next write: returns (entered, release).
        fn hold_next_write(&self) -> (Receiver<()>, Sender<()>) {
            let (entered_tx, entered_rx) = channel();
            let (release_tx, release_rx) = channel();
            *self.hold.lock().unwrap() = Some((entered_tx, release_rx));
            (entered_rx, release_tx)
        }

        fn writes(&self) -> Vec<(usize, Durability)> {
            self.writes.lock().unwrap().clone()
        }
    }

    impl Store for Recording {
        fn write(&self, batch: WriteBatch, durability: Durability) -> Result<(), StoreError> {
            let hold = self.hold.lock().unwrap().take();
            if let Some((entered, release)) = hold {
                entered.send(()).unwrap();
                release.recv().unwrap();
            }
            if std::mem::take(&mut *self.panic_once.lock().unwrap()) {
                panic!("injected store panic");
            }
            self.writes.lock().unwrap().push((batch.len(), durability));
            if let Some(e) = self.fail_with.lock().unwrap().clone() {
                return Err(e);
            }
            self.inner.write(batch, durability)
        }
        fn get(&self, column: Column, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
            self.inner.get(column, key)
        }
        fn scan_prefix(
            &self,
            column: Column,
            prefix: &[u8],
            after: Option<&[u8]>,
            limit: usize,
        ) -> Result<Vec<KeyValue>, StoreError> {
            self.inner.scan_prefix(column, prefix, after, limit)
        }
        fn flush(&self) -> Result<(), StoreError> {
            Ok(())
        }
    }

    type Results = Receiver<Result<Vec<MessageSeq>, StoreError>>;

    fn sender(tx: &Sender<Result<Vec<MessageSeq>, StoreError>>) -> AppendDone {
        let tx = tx.clone();
        Box::new(move |r| tx.send(r).unwrap())
    }

    /// Appends one message while the writer is held inside a first write, then `n` more, then
    /// releases it; returns every result in completion order.
    fn held_then_released(
        store: &Arc<Recording>,
        config: GroupCommitConfig,
        n: usize,
        size: usize,
    ) -> (GroupCommitMessageStore<Recording>, Vec<Result<Vec<MessageSeq>, StoreError>>) {
        let ms = GroupCommitMessageStore::open(store.clone(), config).unwrap();
        let (entered, release) = store.hold_next_write();
        let (tx, rx): (_, Results) = channel();
        ms.append_deferred(&q("first"), &[&vec![0; size]], sender(&tx));
        entered.recv().unwrap();
        for i in 0..n {
            ms.append_deferred(&q(&format!("c{}", i % 3)), &[&vec![1; size]], sender(&tx));
        }
        assert_eq!(ms.pending(), n, "the writer is held, so everything else waits");
        release.send(()).unwrap();
        let results = (0..=n).map(|_| rx.recv().unwrap()).collect();
        (ms, results)
    }

    #[test]
    fn appends_queued_behind_a_write_go_in_one_group_with_one_sync() {
        let store = Arc::new(Recording::default());
        let (ms, results) = held_then_released(&store, GroupCommitConfig::default(), 10, 8);
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(store.writes(), vec![(1, Durability::Sync), (10, Durability::Sync)]);
        assert_eq!(ms.stats(), GroupCommitStats { appends: 11, messages: 11, groups: 2, failed_groups: 0 });
        assert_eq!(ms.count(&q("c0")), 4);
    }

    #[test]
    fn always_policy_writes_and_syncs_every_append_alone() {
        let store = Arc::new(Recording::default());
        let config = GroupCommitConfig { policy: DurabilityPolicy::Always, ..Default::default() };
        let (ms, _) = held_then_released(&store, config, 5, 8);
        assert_eq!(store.writes(), vec![(1, Durability::Sync); 6]);
        assert_eq!(ms.stats().groups, 6);
    }

    #[test]
    fn buffered_policy_groups_without_sync() {
        let store = Arc::new(Recording::default());
        let config = GroupCommitConfig { policy: DurabilityPolicy::Buffered, ..Default::default() };
        held_then_released(&store, config, 5, 8);
        assert_eq!(store.writes(), vec![(1, Durability::Buffered), (5, Durability::Buffered)]);
    }

    #[test]
    fn groups_respect_the_message_and_byte_limits() {
        let store = Arc::new(Recording::default());
        let config = GroupCommitConfig { max_group_messages: 4, ..Default::default() };
        held_then_released(&store, config, 10, 8);
        let sizes: Vec<usize> = store.writes().iter().map(|w| w.0).collect();
        assert_eq!(sizes, vec![1, 4, 4, 2]);

        let store = Arc::new(Recording::default());
        let config = GroupCommitConfig { max_group_bytes: 250, ..Default::default() };
        held_then_released(&store, config, 5, 100);
        let sizes: Vec<usize> = store.writes().iter().map(|w| w.0).collect();
        assert_eq!(sizes, vec![1, 2, 2, 1]);

        let store = Arc::new(Recording::default());
        let config = GroupCommitConfig { max_group_bytes: 10, ..Default::default() };
        held_then_released(&store, config, 2, 100);
        let sizes: Vec<usize> = store.writes().iter().map(|w| w.0).collect();
        assert_eq!(sizes, vec![1, 1, 1], "an append over the byte limit still goes, alone");
    }

    #[test]
    fn a_failed_group_fails_every_append_in_it_and_stores_none() {
        let store = Arc::new(Recording::default());
        *store.fail_with.lock().unwrap() = Some(StoreError::NoSpace("disk full".into()));
        let (ms, results) = held_then_released(&store, GroupCommitConfig::default(), 3, 8);
        assert!(results.iter().all(|r| r == &Err(StoreError::NoSpace("disk full".into()))));
        assert_eq!(ms.count(&q("first")) + ms.count(&q("c0")), 0);
        assert!(ms.queues().is_empty());
        assert_eq!(ms.stats().failed_groups, 2);
        *store.fail_with.lock().unwrap() = None;
        let seqs = ms.append(&q("first"), &[b"again"]).unwrap();
        assert_eq!(seqs, vec![MessageSeq(1)], "numbering moves on past the failed append");
        assert_eq!(ms.count(&q("first")), 1);
        assert_eq!(ms.read(&q("first"), None, 10).unwrap().len(), 1);
    }

    #[test]
    fn a_panicking_store_fails_the_waiting_appends_and_the_writer_goes_on() {
        let store = Arc::new(Recording::default());
        *store.panic_once.lock().unwrap() = true;
        let ms = GroupCommitMessageStore::open(store.clone(), GroupCommitConfig::default()).unwrap();
        let err = ms.append(&q("a"), &[b"1"]).unwrap_err();
        assert!(matches!(&err, StoreError::Engine(m) if m.contains("injected store panic")), "{err}");
        assert_eq!(ms.append(&q("a"), &[b"2"]).unwrap(), vec![MessageSeq(1)]);
        assert_eq!(ms.count(&q("a")), 1);
    }

    #[test]
    fn deletes_are_ordered_after_earlier_appends() {
        let store = Arc::new(Recording::default());
        let ms = GroupCommitMessageStore::open(store.clone(), GroupCommitConfig::default()).unwrap();
        let (entered, release) = store.hold_next_write();
        let (tx, rx): (_, Results) = channel();
        ms.append_deferred(&q("a"), &[b"0"], sender(&tx));
        entered.recv().unwrap();
        ms.append_deferred(&q("a"), &[b"1", b"2"], sender(&tx));
        let (dtx, drx) = channel();
        let dtx2 = dtx.clone();
        ms.delete_deferred(&q("a"), &[MessageSeq(1)], Box::new(move |r| dtx.send(r).unwrap()));
        ms.delete_queue_deferred(&q("b"), Box::new(move |r| dtx2.send(r).unwrap()));
        ms.append_deferred(&q("a"), &[b"3"], sender(&tx));
        release.send(()).unwrap();
        assert_eq!(drx.recv().unwrap(), Ok(1), "the delete saw the append queued before it");
        assert_eq!(drx.recv().unwrap(), Ok(0));
        for _ in 0..3 {
            rx.recv().unwrap().unwrap();
        }
        let data: Vec<_> = ms.read(&q("a"), None, 10).unwrap().into_iter().map(|m| m.data).collect();
        assert_eq!(data, vec![b"0".to_vec(), b"2".to_vec(), b"3".to_vec()]);
        assert_eq!(ms.count(&q("a")), 3);
    }

    #[test]
    fn delete_queue_with_appends_still_queued_keeps_numbering_monotonic() {
        let store = Arc::new(Recording::default());
        let ms = GroupCommitMessageStore::open(store.clone(), GroupCommitConfig::default()).unwrap();
        ms.append(&q("a"), &[b"old"]).unwrap();
        let (entered, release) = store.hold_next_write();
        let (tx, rx): (_, Results) = channel();
        ms.append_deferred(&q("x"), &[b"hold"], sender(&tx));
        entered.recv().unwrap();
        let (dtx, drx) = channel();
        ms.delete_queue_deferred(&q("a"), Box::new(move |r| dtx.send(r).unwrap()));
        ms.append_deferred(&q("a"), &[b"new"], sender(&tx));
        release.send(()).unwrap();
        assert_eq!(drx.recv().unwrap(), Ok(1));
        rx.recv().unwrap().unwrap();
        assert_eq!(rx.recv().unwrap().unwrap(), vec![MessageSeq(1)]);
        let after = ms.append(&q("a"), &[b"newer"]).unwrap();
        assert_eq!(after, vec![MessageSeq(2)]);
        let data: Vec<_> = ms.read(&q("a"), None, 10).unwrap().into_iter().map(|m| m.data).collect();
        assert_eq!(data, vec![b"new".to_vec(), b"newer".to_vec()]);
        assert_eq!(ms.count(&q("a")), 2);
    }

    #[test]
    fn callbacks_may_defer_but_not_block_and_may_drop_the_last_handle() {
        let ms =
            Arc::new(GroupCommitMessageStore::open(Arc::new(MemStore::new()), GroupCommitConfig::default()).unwrap());
        let (tx, rx) = channel();
        let inner = ms.clone();
        ms.append_deferred(
            &q("a"),
            &[b"1"],
            Box::new(move |r| {
                r.unwrap();
                let blocked = inner.append(&q("a"), &[b"blocked"]);
                let tx2 = tx.clone();
                inner.append_deferred(&q("a"), &[b"2"], Box::new(move |r| tx2.send(r).unwrap()));
                tx.send(blocked.map(|_| Vec::new())).unwrap();
                // `inner` may be the last handle: dropping it here must not deadlock.
                drop(inner);
            }),
        );
        let blocked = rx.recv().unwrap();
        assert!(matches!(&blocked, Err(StoreError::Engine(m)) if m.contains("deadlock")), "{blocked:?}");
        drop(ms);
        assert_eq!(rx.recv().unwrap(), Ok(vec![MessageSeq(1)]));
    }

    #[test]
    fn drop_completes_everything_queued() {
        let store = Arc::new(MemStore::new());
        let ms = GroupCommitMessageStore::open(store.clone(), GroupCommitConfig::default()).unwrap();
        let (tx, rx): (_, Results) = channel();
        for i in 0..200u32 {
            ms.append_deferred(&q("a"), &[&i.to_be_bytes()[..]], sender(&tx));
        }
        drop(ms);
        drop(tx);
        assert_eq!(rx.iter().filter(Result::is_ok).count(), 200);
        let ms = GroupCommitMessageStore::open(store, GroupCommitConfig::default()).unwrap();
        assert_eq!(ms.count(&q("a")), 200);
        let read = ms.read(&q("a"), None, 1000).unwrap();
        assert!(read.iter().enumerate().all(|(i, m)| m.data == (i as u32).to_be_bytes()));
    }

    #[test]
    fn group_commit_on_mem_store_meets_the_message_store_contract() {
        for policy in [DurabilityPolicy::Sync, DurabilityPolicy::Buffered, DurabilityPolicy::Always] {
            crate::contract::run_message_store_all(|| {
                let config = GroupCommitConfig { policy, ..Default::default() };
                GroupCommitMessageStore::open(Arc::new(MemStore::new()), config).unwrap()
            });
        }
    }

    #[test]
    fn policies_parse_and_print_their_config_names() {
        for p in [DurabilityPolicy::Sync, DurabilityPolicy::Buffered, DurabilityPolicy::Always] {
            assert_eq!(p.to_string().parse::<DurabilityPolicy>(), Ok(p));
        }
        assert_eq!(" SYNC ".parse::<DurabilityPolicy>(), Ok(DurabilityPolicy::Sync));
        assert!("fsync".parse::<DurabilityPolicy>().is_err());
        assert_eq!(DurabilityPolicy::default(), DurabilityPolicy::Sync);
    }
}

#[cfg(test)]
mod model_tests {
    //! Both message stores against a model, with reopens in between: what a queue holds, in
    //! which order, its count, and the sequence numbers appends get.

    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use proptest::test_runner::FileFailurePersistence;

    use super::*;
    use crate::{MemStore, StoreMessageStore};

    #[derive(Debug, Clone)]
    enum Op {
        Append {
            queue: usize,
            n: usize,
        },
        /// Deletes the `k` oldest messages plus one sequence number that is not there.
        DeleteOldest {
            queue: usize,
            k: usize,
        },
        DeleteQueue {
            queue: usize,
        },
        Reopen,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..3usize, 0..4usize).prop_map(|(queue, n)| Op::Append { queue, n }),
            2 => (0..3usize, 0..3usize).prop_map(|(queue, k)| Op::DeleteOldest { queue, k }),
            1 => (0..3usize).prop_map(|queue| Op::DeleteQueue { queue }),
            1 => Just(Op::Reopen),
        ]
    }

    /// A stored message in the model: `(seq, data)`.
    type Held = Vec<(u64, Vec<u8>)>;

    /// The model: per queue, the stored messages in order and the next sequence number.
    #[derive(Default)]
    struct Model {
        queues: BTreeMap<usize, (Held, u64)>,
    }

    fn check<M: MessageStore>(ops: &[Op], open: impl Fn(&Arc<MemStore>) -> M) -> Result<(), TestCaseError> {
        let store = Arc::new(MemStore::new());
        let mut ms = open(&store);
        let mut model = Model::default();
        let key = |i: usize| QueueKey::new("mp", format!("c{i}"));
        let mut next_data = 0u32;
        for op in ops {
            match *op {
                Op::Append { queue, n } => {
                    let data: Vec<Vec<u8>> = (0..n)
                        .map(|_| {
                            next_data += 1;
                            next_data.to_be_bytes().to_vec()
                        })
                        .collect();
                    let refs: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
                    let seqs = ms.append(&key(queue), &refs).unwrap();
                    if n > 0 {
                        let (held, next) = model.queues.entry(queue).or_default();
                        let want: Vec<MessageSeq> = (*next..*next + n as u64).map(MessageSeq).collect();
                        prop_assert_eq!(&seqs, &want);
                        held.extend(want.iter().map(|s| s.0).zip(data));
                        *next += n as u64;
                    }
                }
                Op::DeleteOldest { queue, k } => {
                    let Some((held, next)) = model.queues.get_mut(&queue) else { continue };
                    let mut seqs: Vec<MessageSeq> = held.iter().take(k).map(|(s, _)| MessageSeq(*s)).collect();
                    seqs.push(MessageSeq(*next + 7));
                    ms.delete(&key(queue), &seqs).unwrap();
                    held.drain(..k.min(held.len()));
                }
                Op::DeleteQueue { queue } => {
                    let removed = ms.delete_queue(&key(queue)).unwrap();
                    let held = model.queues.remove(&queue).map(|(h, _)| h.len()).unwrap_or(0);
                    prop_assert_eq!(removed, held as u64);
                }
                Op::Reopen => {
                    drop(ms);
                    ms = open(&store);
                    // Numbering resumes after the highest stored sequence number.
                    model.queues.retain(|_, (held, _)| !held.is_empty());
                    for (held, next) in model.queues.values_mut() {
                        *next = held.last().map_or(0, |(s, _)| s + 1);
                    }
                }
            }
            for (i, (held, _)) in &model.queues {
                let got: Vec<(u64, Vec<u8>)> =
                    ms.read(&key(*i), None, 100).unwrap().into_iter().map(|m| (m.seq.0, m.data)).collect();
                prop_assert_eq!(&got, held);
                prop_assert_eq!(ms.count(&key(*i)), held.len() as u64);
            }
            let listed: Vec<(QueueKey, u64)> = model
                .queues
                .iter()
                .filter(|(_, (h, _))| !h.is_empty())
                .map(|(i, (h, _))| (key(*i), h.len() as u64))
                .collect();
            prop_assert_eq!(ms.queues(), listed);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 64,
            failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
                "../proptest-regressions/storage-message_store_model.txt",
            ))),
            ..ProptestConfig::default()
        })]

        #[test]
        fn message_stores_agree_with_the_model_across_reopens(ops in prop::collection::vec(op(), 1..40)) {
            check(&ops, |s| GroupCommitMessageStore::open(s.clone(), GroupCommitConfig::default()).unwrap())?;
            check(&ops, |s| StoreMessageStore::open(s.clone(), Durability::Buffered).unwrap())?;
        }
    }
}
