//! One simulated node: its process (the replica) and what outlives it (the store).

use std::collections::VecDeque;

use crate::metadata::{MetadataBackend, MetadataEvent, Millis, NodeId, WriteToken};
use crate::{Durability, MemStore, Store, WriteBatch};

pub(super) struct SimNode<B> {
    pub(super) id: NodeId,
    /// The process; `None` while crashed.
    pub(super) replica: Option<B>,
    /// The durable state, surviving crashes.
    pub(super) store: MemStore,
    /// Incarnation: bumped by every crash, so that what was addressed to the old process
    /// (messages, detector reports) dies with it.
    pub(super) life: u64,
    /// Batches handed out by `poll_write` and not durable yet, oldest first, with the time
    /// each becomes durable.
    pub(super) pending: VecDeque<(Millis, WriteToken, WriteBatch)>,
    /// Batches handed out in this life, and how many of them are durable.
    pub(super) polled: u64,
    pub(super) persisted: u64,
    pub(super) events: Vec<MetadataEvent>,
    /// Prefixes the node subscribes to at every start.
    pub(super) subscriptions: Vec<(String, bool)>,
}

impl<B: MetadataBackend> SimNode<B> {
    pub(super) fn new(id: NodeId) -> Self {
        Self {
            id,
            replica: None,
            store: MemStore::new(),
            life: 0,
            pending: VecDeque::new(),
            polled: 0,
            persisted: 0,
            events: Vec::new(),
            subscriptions: Vec::new(),
        }
    }

    /// Ends the process; returns false when it was not running.
    pub(super) fn crash(&mut self) -> bool {
        if self.replica.take().is_none() {
            return false;
        }
        self.pending.clear();
        self.life += 1;
        self.polled = 0;
        self.persisted = 0;
        true
    }

    pub(super) fn next_due(&self) -> Option<Millis> {
        self.pending.front().map(|(due, ..)| *due)
    }

    /// Makes the oldest queued batch durable if it is due, and tells the replica.
    pub(super) fn persist_due(&mut self, now: Millis) {
        if self.next_due().is_none_or(|due| due > now) {
            return;
        }
        let Some((_, token, batch)) = self.pending.pop_front() else { return };
        write(&self.store, batch);
        self.persisted += 1;
        if let Some(r) = self.replica.as_mut() {
            r.handle_persisted(token);
        }
    }
}

pub(super) fn write(store: &MemStore, batch: WriteBatch) {
    if let Err(e) = store.write(batch, Durability::Buffered) {
        panic!("memory store refused a write: {e}");
    }
}

/// Queues a batch that becomes durable at `due`, but never before an earlier one (one writer,
/// as the node's driver).
pub(super) fn queue_write(
    pending: &mut VecDeque<(Millis, WriteToken, WriteBatch)>,
    due: Millis,
    token: WriteToken,
    batch: WriteBatch,
) {
    let due = pending.back().map_or(due, |(last, ..)| due.max(*last));
    pending.push_back((due, token, batch));
}
