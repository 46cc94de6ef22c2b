//! `vmq-admin cluster leave` (docs/architecture.md "Cluster membership", VerneMQ's "Leaving a
//! cluster").
//!
//! A live node leaves in steps, each safe to run again: its MQTT listeners stop accepting;
//! with `-k` its clients are disconnected, and those that reconnect elsewhere take their
//! sessions with them (registration and queue migration); after the timeout the offline
//! queues still here are moved to the other members in turn, each adopted by its new node
//! and drained to it; then the node leaves the member set, so the others see a departure, not
//! a netsplit, and stops. A node that is down cannot hand anything over: the members re-home
//! its persistent sessions (subscriptions only; its queued messages are lost with it).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing::{info, warn};
use vmq_storage::QueueKey;
use vmq_storage::metadata::NodeId;

use super::Shared;
use super::metadata::Command;
use super::wire::{LeaveProgress, Request, Response, WireSubscription};
use crate::broker::{Kick, SubscriptionRecord};

/// How long a leave step asked of another node may take to answer.
const LEAVE_RPC_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a node that has left keeps answering status requests before it stops, when
/// nobody asks for the final status.
const LINGER: Duration = Duration::from_secs(10);
/// Queues moved at once.
const MOVES_IN_FLIGHT: usize = 8;

/// The leave of this node, as it goes.
#[derive(Debug, Default)]
pub(crate) struct LeaveState {
    running: bool,
    progress: LeaveProgress,
    /// The last progress each leaving node reported, for when it is gone.
    relayed: HashMap<NodeId, LeaveProgress>,
}

/// A persistent session of a node that is down, to be re-homed.
#[derive(Debug, Clone)]
pub(crate) struct Orphan {
    pub key: QueueKey,
    pub epoch: u64,
    pub subscriptions: Vec<(String, SubscriptionRecord)>,
}

impl Shared {
    fn leave_state(&self) -> std::sync::MutexGuard<'_, LeaveState> {
        self.leave.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_phase(&self, phase: impl Into<String>) {
        let phase = phase.into();
        info!(%phase, "cluster leave");
        self.leave_state().progress.phase = phase;
    }

    /// This node is asked to leave: stops its MQTT listeners and, with `kill_sessions`, starts
    /// the rest in the background. The answer is for the operator.
    pub(crate) fn leave_here(self: &Arc<Self>, kill_sessions: bool, timeout: Duration) -> String {
        let Some(broker) = self.broker() else { return "the node is shutting down".into() };
        broker.stop_listeners();
        if !kill_sessions {
            self.set_phase("MQTT listeners stopped; connections stay");
            return format!(
                "{}: MQTT listeners stopped; existing connections stay. Run 'vmq-admin cluster leave node={} -k' \
                 to disconnect them, move the remaining queues and leave.",
                self.me, self.me
            );
        }
        {
            let mut state = self.leave_state();
            if state.running {
                return format!("{} is already leaving: {}", self.me, state.progress.phase);
            }
            state.running = true;
            state.progress = LeaveProgress::default();
        }
        tokio::spawn(self.clone().leave_task(timeout));
        format!("{} is leaving: clients disconnected, remaining queues move in {} s", self.me, timeout.as_secs())
    }

    async fn leave_task(self: Arc<Self>, timeout: Duration) {
        let Some(broker) = self.broker() else { return };
        self.set_phase("disconnecting clients");
        for conn in broker.connections() {
            conn.kick(Kick::Administrative);
        }
        // Clients that reconnect elsewhere take their sessions with them.
        self.set_phase(format!("waiting up to {} s for clients to reconnect elsewhere", timeout.as_secs()));
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline && !broker.sessions_here().is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.move_remaining_queues().await;
        self.set_phase("leaving the member set");
        let (reply, answer) = tokio::sync::oneshot::channel();
        if self.commands.send(Command::Remove { node: self.me.clone(), reply }).await.is_ok() {
            let _ = answer.await;
        }
        {
            let mut state = self.leave_state();
            state.progress.done = true;
            state.progress.phase = "left the cluster; stopping".into();
        }
        info!("left the cluster; stopping");
        // Answer the operator's next status request, then stop.
        let _ = tokio::time::timeout(LINGER, self.final_status_read.notified()).await;
        self.left.send_replace(true);
    }

    /// Moves every queue still here to the other members in turn: each is adopted by its new
    /// node, then drained to it.
    async fn move_remaining_queues(self: &Arc<Self>) {
        let Some(broker) = self.broker() else { return };
        let remaining = broker.sessions_here();
        let mut targets: Vec<NodeId> = self.view().members.iter().filter(|m| **m != self.me).cloned().collect();
        targets.retain(|m| self.peer_reachable(m));
        {
            let mut state = self.leave_state();
            state.progress.queues_total = remaining.len() as u64;
            state.progress.messages_total = remaining.iter().map(|(k, _, _)| broker.stored_count(k)).sum();
        }
        if remaining.is_empty() {
            return;
        }
        if targets.is_empty() {
            warn!(queues = remaining.len(), "no reachable member to move the remaining queues to; they stay here");
            return;
        }
        self.set_phase(format!("moving {} offline queues", remaining.len()));
        let moved = Arc::new(AtomicU64::new(0));
        let mut moves = tokio::task::JoinSet::new();
        for (i, (key, epoch, _)) in remaining.into_iter().enumerate() {
            while moves.len() >= MOVES_IN_FLIGHT {
                moves.join_next().await;
                self.leave_state().progress.queues_moved += 1;
            }
            let target = targets[i % targets.len()].clone();
            moves.spawn(self.clone().move_queue(key, epoch, target, moved.clone()));
            self.leave_state().progress.messages_moved = moved.load(Ordering::Relaxed);
        }
        while moves.join_next().await.is_some() {
            let mut state = self.leave_state();
            state.progress.queues_moved += 1;
            state.progress.messages_moved = moved.load(Ordering::Relaxed);
        }
        self.leave_state().progress.messages_moved = moved.load(Ordering::Relaxed);
    }

    async fn move_queue(self: Arc<Self>, key: QueueKey, epoch: u64, target: NodeId, moved: Arc<AtomicU64>) {
        let Some(broker) = self.broker() else { return };
        let epoch = self.timestamp().max(epoch.saturating_add(1));
        let Some(h) = broker.hand_over(&key, epoch, true).await else { return };
        let subscriptions: Vec<WireSubscription> =
            h.subscriptions.iter().map(|(f, r)| WireSubscription::new(f.clone(), r)).collect();
        let request =
            Request::Adopt { key: (key.mountpoint.to_string(), key.client_id.to_string()), epoch, subscriptions };
        match self.calls.call(&self, &target, request, LEAVE_RPC_TIMEOUT).await {
            Ok(Response::Stored) => {}
            other => {
                warn!(client_id = %key.client_id, %target, answer = ?other, "queue not adopted; draining to it all the same")
            }
        }
        let first = h.memory_only_inflight();
        self.drain_counted(h, target, epoch, first, std::collections::HashSet::new(), Some(moved)).await;
    }

    /// Takes over a session of a leaving node (`Request::Adopt`).
    pub(crate) fn adopt(&self, key: QueueKey, epoch: u64, subscriptions: Vec<WireSubscription>) -> Response {
        let Some(broker) = self.broker() else { return Response::Refused { reason: "shutting down".into() } };
        broker.adopt(key, epoch, subscriptions.iter().map(|s| (s.filter.clone(), s.record())).collect());
        Response::Stored
    }

    /// This node's leave progress (`Request::LeaveStatus`).
    pub(crate) fn leave_progress(&self) -> LeaveProgress {
        let progress = self.leave_state().progress.clone();
        if progress.done {
            self.final_status_read.notify_one();
        }
        progress
    }

    /// `vmq-admin cluster leave` of another live member: it does the work.
    pub(crate) async fn ask_to_leave(
        &self,
        node: &NodeId,
        kill_sessions: bool,
        timeout: Duration,
    ) -> Result<String, String> {
        let request = Request::Leave { kill_sessions, timeout_ms: timeout.as_millis() as u64 };
        match self.calls.call(self, node, request, LEAVE_RPC_TIMEOUT).await {
            Ok(Response::Text { text }) => Ok(text),
            Ok(Response::Refused { reason }) => Err(reason),
            Ok(other) => Err(format!("unexpected answer from {node}: {other:?}")),
            Err(e) => Err(format!("{node} did not answer: {e}")),
        }
    }

    /// Where the leave of `node` stands, asked of it (or known from before it left).
    pub(crate) async fn leave_status(&self, node: &NodeId) -> Result<LeaveProgress, String> {
        if *node == self.me {
            return Ok(self.leave_progress());
        }
        if !self.is_member(node) {
            // A node that has just left still answers for a while: its own final figures.
            if let Ok(Response::Progress { progress }) =
                self.calls.call(self, node, Request::LeaveStatus, Duration::from_secs(1)).await
            {
                return Ok(progress);
            }
            // It leaves the member set only after its queues have moved.
            let mut last = self.leave_state().relayed.get(node).cloned().unwrap_or_default();
            last.done = true;
            last.phase = format!("{node} has left the cluster");
            last.queues_moved = last.queues_total;
            last.messages_moved = last.messages_total;
            return Ok(last);
        }
        match self.calls.call(self, node, Request::LeaveStatus, LEAVE_RPC_TIMEOUT).await {
            Ok(Response::Progress { progress }) => {
                self.leave_state().relayed.insert(node.clone(), progress.clone());
                Ok(progress)
            }
            Ok(other) => Err(format!("unexpected answer from {node}: {other:?}")),
            Err(e) => Err(format!("{node} did not answer: {e}")),
        }
    }

    /// A node that is down was removed: its persistent sessions are re-homed on the remaining
    /// members in turn (their subscriptions; the messages queued on it are lost with it).
    pub(crate) async fn rehome(self: Arc<Self>, gone: NodeId, orphans: Vec<Orphan>) -> String {
        let mut targets: Vec<NodeId> = self.view().members.iter().filter(|m| **m != gone).cloned().collect();
        targets.retain(|m| *m == self.me || self.peer_reachable(m));
        if targets.is_empty() {
            return format!("Done: {gone} removed; no member to re-home its {} persistent sessions on", orphans.len());
        }
        let mut rehomed = 0;
        for (i, orphan) in orphans.iter().enumerate() {
            let target = &targets[i % targets.len()];
            let epoch = self.timestamp().max(orphan.epoch.saturating_add(1));
            let subscriptions: Vec<WireSubscription> =
                orphan.subscriptions.iter().map(|(f, r)| WireSubscription::new(f.clone(), r)).collect();
            let answer = if *target == self.me {
                self.adopt(orphan.key.clone(), epoch, subscriptions)
            } else {
                let key = (orphan.key.mountpoint.to_string(), orphan.key.client_id.to_string());
                self.calls
                    .call(&self, target, Request::Adopt { key, epoch, subscriptions }, LEAVE_RPC_TIMEOUT)
                    .await
                    .unwrap_or_else(|e| Response::Refused { reason: e })
            };
            match answer {
                Response::Stored => rehomed += 1,
                other => warn!(client_id = %orphan.key.client_id, %target, answer = ?other, "session not re-homed"),
            }
        }
        info!(%gone, sessions = rehomed, "persistent sessions of a removed node re-homed");
        format!(
            "Done: {gone} removed. {rehomed} of its {} persistent sessions re-homed on the remaining nodes; \
             the offline messages queued on {gone} are lost with it (their number is unknown while it is down).",
            orphans.len()
        )
    }
}
