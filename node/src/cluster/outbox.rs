//! The durable outbox of each peer (**beyond** VerneMQ, which keeps what it forwards to an
//! unreachable node in memory and drops it when `outgoing_clustering_buffer_size` is full).
//!
//! While a peer is unreachable, the QoS 1/2 publishes forwarded to it wait in its publish log
//! for the heal. With `allow_publish_during_netsplit = on` their publishers must not wait that
//! long, and must not be told "accepted" about something only memory holds: this task writes
//! the log's entries to the message store (one queue per peer, through the same group commit
//! as offline messages) and marks them *secured* once durable, which resolves their tickets.
//! Entries stay in the log and go out as soon as the peer is back; once the peer acknowledges
//! them they are deleted from the store. After a restart the stored entries are put back into
//! the log first, so nothing secured is lost with the process.
//!
//! `outgoing_clustering_outbox_size` bounds the bytes held per peer; beyond it, forwards to the
//! unreachable peer are refused (the publisher is not acknowledged) rather than accepted and
//! dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::Bytes;
use tokio::sync::{Notify, oneshot};
use tracing::{info, warn};
use vmq_storage::metadata::NodeId;
use vmq_storage::{MessageSeq, MessageStore, QueueKey};

use super::Shared;
use crate::broker::CLUSTER_OUTBOX_MOUNTPOINT as OUTBOX_MOUNTPOINT;
/// Default `outgoing_clustering_outbox_size`: bytes held for one unreachable peer.
pub(crate) const DEFAULT_OUTBOX_SIZE: usize = 64 * 1024 * 1024;
/// Entries written to the store per append.
const SECURE_BATCH: usize = 1024;

/// Every peer's outbox.
pub(crate) struct Outboxes {
    store: Arc<dyn MessageStore>,
    limit: usize,
    peers: Mutex<HashMap<NodeId, Arc<PeerOutbox>>>,
    /// The cluster the tasks serve; set once it exists.
    shared: std::sync::OnceLock<Weak<Shared>>,
}

/// One peer's outbox.
struct PeerOutbox {
    /// Woken when the peer goes down, when something is forwarded to it while it is down.
    wake: Notify,
    /// Payload bytes stored or being stored (what the limit bounds).
    bytes: AtomicUsize,
    /// What is in the store, oldest first: log number, store number, payload bytes.
    stored: Mutex<VecDeque<(u64, MessageSeq, usize)>>,
}

impl PeerOutbox {
    fn stored(&self) -> MutexGuard<'_, VecDeque<(u64, MessageSeq, usize)>> {
        self.stored.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn queue_key(peer: &NodeId) -> QueueKey {
    QueueKey::new(OUTBOX_MOUNTPOINT, peer.as_str())
}

impl Outboxes {
    pub(crate) fn new(store: Arc<dyn MessageStore>, limit: usize) -> Self {
        Outboxes { store, limit, peers: Mutex::new(HashMap::new()), shared: std::sync::OnceLock::new() }
    }

    /// Connects the outboxes to their cluster (before any other call).
    pub(crate) fn attach(&self, shared: &Arc<Shared>) {
        let _ = self.shared.set(Arc::downgrade(shared));
    }

    fn entry(&self, peer: &NodeId) -> Arc<PeerOutbox> {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = peers.get(peer) {
            return p.clone();
        }
        let p = Arc::new(PeerOutbox {
            wake: Notify::new(),
            bytes: AtomicUsize::new(0),
            stored: Mutex::new(VecDeque::new()),
        });
        peers.insert(peer.clone(), p.clone());
        let shared = self.shared.get().cloned().unwrap_or_default();
        tokio::spawn(run(shared, peer.clone(), p.clone(), self.store.clone()));
        p
    }

    /// `outgoing_clustering_outbox_size`.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Whether an outbox is configured at all (`outgoing_clustering_outbox_size` > 0).
    pub(crate) fn enabled(&self) -> bool {
        self.limit > 0
    }

    /// Whether `len` more bytes fit in `peer`'s outbox.
    pub(crate) fn has_room(&self, peer: &NodeId, len: usize) -> bool {
        self.entry(peer).bytes.load(Ordering::Relaxed).saturating_add(len) <= self.limit
    }

    /// Something changed for `peer` (it went down, or was forwarded to while down).
    pub(crate) fn wake(&self, peer: &NodeId) {
        if self.enabled() {
            self.entry(peer).wake.notify_one();
        }
    }

    /// At start: puts what the outboxes held when the node stopped back into the publish logs,
    /// in order, secured. Runs after the members' links were set up.
    pub(crate) fn recover(&self, shared: &Arc<Shared>) {
        for (queue, count) in self.store.queues() {
            if &*queue.mountpoint != OUTBOX_MOUNTPOINT {
                continue;
            }
            let peer = NodeId::new(queue.client_id.to_string());
            let outbox = self.entry(&peer);
            let mut after = None;
            let mut last = None;
            loop {
                let batch = match self.store.read(&queue, after, SECURE_BATCH) {
                    Ok(b) if !b.is_empty() => b,
                    Ok(_) => break,
                    Err(e) => {
                        warn!(%peer, error = %e, "cluster outbox unreadable; its messages stay on disk");
                        break;
                    }
                };
                after = batch.last().map(|m| m.seq);
                for m in batch {
                    let len = m.data.len();
                    match shared.transport.send_publish(&peer, Bytes::from(m.data), false) {
                        Ok(ticket) => {
                            last = Some(ticket.seq());
                            outbox.stored().push_back((ticket.seq(), m.seq, len));
                            outbox.bytes.fetch_add(len, Ordering::Relaxed);
                        }
                        Err(e) => {
                            warn!(%peer, error = %e, "outbox message for a node that is no longer a member dropped")
                        }
                    }
                }
            }
            if let Some(last) = last {
                shared.transport.secure(&peer, last);
            }
            info!(%peer, messages = count, "cluster outbox restored; delivered when the node is reachable");
            outbox.wake.notify_one();
        }
    }
}

/// The task of one peer's outbox: secures what the log holds while the peer is unreachable,
/// deletes what the peer acknowledged.
async fn run(shared: Weak<Shared>, peer: NodeId, outbox: Arc<PeerOutbox>, store: Arc<dyn MessageStore>) {
    let key = queue_key(&peer);
    let Some(mut progress) = shared.upgrade().and_then(|s| s.transport.progress(&peer)) else { return };
    let mut secured_upto = 0u64;
    loop {
        // Acknowledged by the peer: gone from the store.
        let accepted = progress.borrow_and_update().accepted;
        let done: Vec<(MessageSeq, usize)> = {
            let mut stored = outbox.stored();
            let mut done = Vec::new();
            while stored.front().is_some_and(|(seq, _, _)| *seq <= accepted) {
                if let Some((_, mseq, len)) = stored.pop_front() {
                    done.push((mseq, len));
                }
            }
            done
        };
        if !done.is_empty() {
            let seqs: Vec<MessageSeq> = done.iter().map(|(s, _)| *s).collect();
            let bytes: usize = done.iter().map(|(_, l)| l).sum();
            let outbox = outbox.clone();
            store.delete_deferred(
                &key,
                &seqs,
                Box::new(move |_| {
                    outbox.bytes.fetch_sub(bytes, Ordering::Relaxed);
                }),
            );
        }
        secured_upto = secured_upto.max(outbox.stored().back().map_or(0, |(seq, _, _)| *seq)).max(accepted);
        // The cluster is held only for this look, never across an await: a task holding it
        // would keep the node's endpoint (and its UDP port) alive after shutdown.
        let entries = match shared.upgrade() {
            None => return,
            Some(s) if !s.peer_reachable(&peer) => s.transport.unacked_after(&peer, secured_upto, SECURE_BATCH),
            Some(_) => Vec::new(),
        };
        if let Some(&(last, _)) = entries.last() {
            let len: usize = entries.iter().map(|(_, b)| b.len()).sum();
            outbox.bytes.fetch_add(len, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            let data: Vec<&[u8]> = entries.iter().map(|(_, b)| b.as_ref()).collect();
            store.append_deferred(&key, &data, Box::new(move |r| drop(tx.send(r))));
            match rx.await {
                Ok(Ok(mseqs)) => {
                    let mut stored = outbox.stored();
                    for ((seq, b), mseq) in entries.iter().zip(mseqs) {
                        stored.push_back((*seq, mseq, b.len()));
                    }
                    drop(stored);
                    secured_upto = last;
                    match shared.upgrade() {
                        Some(s) => s.transport.secure(&peer, last),
                        None => return,
                    }
                    // More may be waiting: go round at once.
                    continue;
                }
                Ok(Err(e)) => {
                    // Retried on the next wake-up; meanwhile those publishers wait for the
                    // node itself.
                    outbox.bytes.fetch_sub(len, Ordering::Relaxed);
                    warn!(%peer, error = %e, "cluster outbox not written; those publishes wait for the node");
                }
                Err(_) => return,
            }
        }
        if !wait(&outbox, &mut progress).await {
            return;
        }
    }
}

/// Waits for a wake-up or an acknowledgement; false once the link is gone for good.
async fn wait(outbox: &PeerOutbox, progress: &mut tokio::sync::watch::Receiver<crate::ack::Progress>) -> bool {
    tokio::select! {
        () = outbox.wake.notified() => true,
        changed = progress.changed() => changed.is_ok(),
    }
}
