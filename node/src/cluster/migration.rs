//! Queue migration (docs/architecture.md "Queue migration"): a session handed over to another node
//! takes its queue along in acknowledged drain steps on the `Rpc` stream, in order, each on disk
//! at the new node before the old node deletes it; messages routed to the new node directly wait
//! behind the backlog until the old node reports the drain complete.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};
use vmq_storage::metadata::NodeId;
use vmq_storage::{MessageSeq, QueueKey};

use super::Shared;
use super::registration::{lock, wire_key};
use super::wire::{Request, Response};
use crate::broker::HandedOver;

/// Drain steps in flight at once.
const DRAIN_WINDOW: usize = 4;
/// How long one drain step may take to be stored.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a migrating queue keeps taking what other nodes still route to it once the new
/// owner is known here (capped by `max_drain_time`).
const DRAIN_LINGER: Duration = Duration::from_secs(2);
/// How often an empty queue being drained is looked at again.
const DRAIN_POLL: Duration = Duration::from_millis(20);

impl Shared {
    /// A drain step arrived for the session of `key` here. Its messages are queued at once, in
    /// the order the steps arrive on the stream (the caller does not spawn before this); the
    /// answer waits for the disk where it must.
    pub(crate) fn accept_drain_now(
        &self,
        key: &QueueKey,
        epoch: u64,
        messages: Vec<Vec<u8>>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send>> {
        let answer = |r: Response| -> std::pin::Pin<Box<dyn std::future::Future<Output = Response> + Send>> {
            Box::pin(async move { r })
        };
        let Some(broker) = self.broker() else {
            return answer(Response::Refused { reason: "shutting down".into() });
        };
        if let Some(durable) = broker.accept_drained(key, &messages) {
            return Box::pin(async move {
                for d in durable {
                    if let Err(e) = d.wait().await {
                        return Response::Refused { reason: format!("not stored: {e}") };
                    }
                }
                Response::Stored
            });
        }
        if lock(&self.registrar.registering).contains_key(key) {
            return answer(Response::Refused { reason: "the session is still registering".into() });
        }
        answer(match self.registrar.owner(key) {
            Some(o) if o.node != self.me && o.epoch >= epoch => Response::Moved { node: o.node },
            None => {
                // No session of the client id anywhere: it ended (clean disconnect or expiry),
                // and its messages with it.
                info!(client_id = %key.client_id, messages = messages.len(), "drained messages for a session that has ended are dropped");
                Response::Stored
            }
            // The entries are still on their way: the sender keeps the messages and tries again.
            Some(_) => Response::Refused { reason: "no session of the client id here yet".into() },
        })
    }

    /// Moves the queue of a handed-over session to `to` in acknowledged steps of
    /// `max_msgs_per_drain_step`, several in flight, deleting each step here once `to` stored
    /// it. What is still routed here keeps following until the new entry is known here and
    /// `max_drain_time` has passed; then the session's routes and queue are removed.
    pub(crate) async fn drain(self: Arc<Self>, h: HandedOver, to: NodeId, epoch: u64) {
        // Without a takeover answer to carry them, in-flight messages go first.
        let first = h.memory_only_inflight();
        self.drain_counted(h, to, epoch, first, HashSet::new(), None).await;
    }

    /// [`Shared::drain`], sending `first` before the stored messages, not sending the stored
    /// ones in `skip` (they went with the in-flight state), and adding the messages moved to
    /// `counter` as they move.
    pub(crate) async fn drain_counted(
        self: Arc<Self>,
        h: HandedOver,
        mut to: NodeId,
        epoch: u64,
        first: Vec<Vec<u8>>,
        skip: HashSet<MessageSeq>,
        counter: Option<Arc<std::sync::atomic::AtomicU64>>,
    ) {
        let count = |n: u64| {
            if let Some(c) = &counter {
                c.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            }
        };
        let Some(broker) = self.broker() else { return };
        let key = h.slot.key.clone();
        let started = Instant::now();
        info!(client_id = %key.client_id, %to, messages = h.stored + first.len() as u64, "queue migration started");
        let mut moved = 0u64;
        if !first.is_empty() {
            let n = first.len() as u64;
            self.send_step(&key, &mut to, epoch, first).await;
            moved += n;
            count(n);
        }
        let mut unrouted = false;
        let mut session_there = moved > 0;
        let mut owner_known_at: Option<Instant> = None;
        let mut done_sent = false;
        loop {
            // Once this node knows the new owner, what is published here goes there by forward
            // (routing it into the queue too would deliver it twice); what other nodes still
            // route here keeps going into the queue and follows the drain, for DRAIN_LINGER
            // (nodes learn of the move at slightly different times), at most `max_drain_time`.
            if owner_known_at.is_none() && self.registrar.owner(&key).is_some_and(|o| o.epoch >= epoch) {
                broker.mark_moved(&h.slot);
                owner_known_at = Some(Instant::now());
                info!(client_id = %key.client_id, %to, "queue migration: routing to the new node only");
            }
            let linger_over = owner_known_at.is_some_and(|at| at.elapsed() >= DRAIN_LINGER);
            if !unrouted && (linger_over || started.elapsed() >= self.registrar.max_drain_time) {
                broker.unroute(&h.slot);
                unrouted = true;
            }
            let mut pages = Vec::new();
            let mut after = None;
            for _ in 0..DRAIN_WINDOW {
                match broker.read_stored(&key, after, self.registrar.drain_step) {
                    Ok(page) if page.is_empty() => break,
                    Ok(page) => {
                        after = page.last().map(|m| m.seq);
                        pages.push(page);
                    }
                    Err(e) => {
                        warn!(client_id = %key.client_id, error = %e, "cannot read the queue to migrate; retrying");
                        break;
                    }
                }
            }
            if pages.is_empty() {
                if unrouted
                    && broker.is_settled(&h.slot)
                    && broker.read_stored(&key, None, 1).is_ok_and(|p| p.is_empty())
                {
                    break;
                }
                if owner_known_at.is_some() && !done_sent {
                    // The backlog has moved: the new session may deliver what it held back;
                    // stragglers from the linger follow.
                    done_sent = true;
                    let (shared, key, to) = (self.clone(), key.clone(), to.clone());
                    tokio::spawn(async move { shared.drain_done(&key, &to).await });
                }
                tokio::time::sleep(DRAIN_POLL).await;
                continue;
            }
            let mut steps: Vec<(Vec<MessageSeq>, Vec<Vec<u8>>)> = pages
                .into_iter()
                .map(|page| {
                    let seqs: Vec<_> = page.iter().map(|m| m.seq).collect();
                    let messages = page.into_iter().filter(|m| !skip.contains(&m.seq)).map(|m| m.data).collect();
                    (seqs, messages)
                })
                .collect();
            if !session_there {
                // The first step goes alone: until it is stored the new session may still be
                // registering, and a refused step must not be overtaken by the next one.
                steps.truncate(1);
            }
            self.send_window(&key, &mut to, epoch, &steps).await;
            session_there = true;
            for (seqs, messages) in steps {
                broker.delete_stored(&key, &seqs);
                moved += messages.len() as u64;
                count(messages.len() as u64);
            }
        }
        broker.retire(&h.slot);
        if !done_sent {
            self.drain_done(&key, &to).await;
        }
        info!(client_id = %key.client_id, %to, messages = moved, ms = started.elapsed().as_millis() as u64, "queue migration finished");
    }

    /// Tells `to` that the drain of `key` is complete: the new session delivers what it held
    /// back from now on (or at its own deadline, if this does not arrive).
    async fn drain_done(&self, key: &QueueKey, to: &NodeId) {
        for _ in 0..3 {
            let request = Request::DrainDone { key: wire_key(key) };
            if matches!(self.calls.call(self, to, request, DRAIN_TIMEOUT).await, Ok(Response::Stored)) {
                return;
            }
        }
    }

    /// Sends `steps` to `to` in order, several in flight, until each is stored there (or at
    /// the node the session moved on to). The receiver queues them in the order they arrive;
    /// after a failure the whole window goes again (at least once).
    async fn send_window(
        &self,
        key: &QueueKey,
        to: &mut NodeId,
        epoch: u64,
        steps: &[(Vec<MessageSeq>, Vec<Vec<u8>>)],
    ) {
        let mut backoff = Duration::from_millis(20);
        loop {
            let mut sent = Vec::new();
            for (_, messages) in steps.iter().filter(|(_, m)| !m.is_empty()) {
                let request = Request::Drain { key: wire_key(key), epoch, messages: messages.clone() };
                match self.calls.send(self, to, request) {
                    Ok(s) => sent.push(s),
                    Err(e) => {
                        debug!(client_id = %key.client_id, peer = %to, error = %e, "drain step not sent; retrying");
                        break;
                    }
                }
            }
            let complete = sent.len() == steps.iter().filter(|(_, m)| !m.is_empty()).count();
            let mut stored = complete;
            let mut moved_on = None;
            for s in sent {
                match self.calls.answer(s, DRAIN_TIMEOUT).await {
                    Ok(Response::Stored) => {}
                    Ok(Response::Moved { node }) => {
                        stored = false;
                        moved_on = Some(node);
                    }
                    other => {
                        stored = false;
                        debug!(client_id = %key.client_id, peer = %to, answer = ?other, "drain step not stored; retrying");
                    }
                }
            }
            if stored {
                return;
            }
            if let Some(node) = moved_on {
                info!(client_id = %key.client_id, from = %to, %node, "session moved on; draining there");
                *to = node;
                continue;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// Sends one drain step until `to` (or the node the session moved on to) has stored it.
    async fn send_step(&self, key: &QueueKey, to: &mut NodeId, epoch: u64, messages: Vec<Vec<u8>>) {
        let mut backoff = Duration::from_millis(20);
        loop {
            let request = Request::Drain { key: wire_key(key), epoch, messages: messages.clone() };
            match self.calls.call(self, to, request, DRAIN_TIMEOUT).await {
                Ok(Response::Stored) => return,
                Ok(Response::Moved { node }) => {
                    info!(client_id = %key.client_id, from = %to, %node, "session moved on; draining there");
                    *to = node;
                    continue;
                }
                Ok(other) => {
                    debug!(client_id = %key.client_id, peer = %to, answer = ?other, "drain step not stored; retrying")
                }
                Err(e) => {
                    debug!(client_id = %key.client_id, peer = %to, error = %e, "drain step not answered; retrying")
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }
}
