//! Requests between nodes on the `Rpc` stream, each answered once: registration, takeover,
//! drain steps (docs/architecture.md "Between nodes"). A request whose answer does not come in time
//! (the frame was lost with its connection, the peer is down) fails; callers decide whether
//! to try again. Requests are served in tasks of their own, never in the stream's reader.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use tracing::{debug, warn};
use vmq_storage::QueueKey;
use vmq_storage::metadata::NodeId;

use super::Shared;
use super::transport::{RpcSink, StreamKind};
use super::wire::{self, Request, Response, RpcFrame};

/// Requests waiting for their answers.
#[derive(Debug, Default)]
pub(crate) struct Calls {
    next: AtomicU64,
    pending: Mutex<HashMap<u64, (NodeId, oneshot::Sender<Response>)>>,
}

impl Calls {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (NodeId, oneshot::Sender<Response>)>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `body` to `peer` and waits up to `timeout` for the answer.
    pub(crate) async fn call(
        &self,
        shared: &Shared,
        peer: &NodeId,
        body: Request,
        timeout: Duration,
    ) -> Result<Response, String> {
        let sent = self.send(shared, peer, body)?;
        self.answer(sent, timeout).await
    }

    /// Sends `body` to `peer` now; [`Calls::answer`] waits for its answer. Requests sent one
    /// after the other reach the peer in that order.
    pub(crate) fn send(&self, shared: &Shared, peer: &NodeId, body: Request) -> Result<Sent, String> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending().insert(id, (peer.clone(), tx));
        let frame = Bytes::from(wire::encode(&RpcFrame::Request { id, body }));
        if let Err(e) = shared.transport.send(peer, StreamKind::Rpc, frame) {
            self.pending().remove(&id);
            return Err(e.to_string());
        }
        Ok(Sent { id, peer: peer.clone(), rx })
    }

    /// Waits up to `timeout` for the answer to `sent`.
    pub(crate) async fn answer(&self, sent: Sent, timeout: Duration) -> Result<Response, String> {
        let Sent { id, peer, rx } = sent;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(format!("{peer} became unreachable")),
            Err(_) => {
                self.pending().remove(&id);
                Err(format!("{peer} did not answer within {} ms", timeout.as_millis()))
            }
        }
    }

    /// `peer` is unreachable: its pending requests fail now rather than at their timeout.
    pub(crate) fn peer_down(&self, peer: &NodeId) {
        self.pending().retain(|_, (p, _)| p != peer);
    }

    /// The answer `id` from `from`; ignored unless that peer was asked.
    fn answered(&self, from: &NodeId, id: u64, body: Response) {
        let mut pending = self.pending();
        match pending.get(&id) {
            Some((peer, _)) if peer == from => {
                if let Some((_, tx)) = pending.remove(&id) {
                    let _ = tx.send(body);
                }
            }
            _ => debug!(peer = %from, id, "late or unexpected answer ignored"),
        }
    }
}

/// A request sent, waiting for its answer.
pub(crate) struct Sent {
    id: u64,
    peer: NodeId,
    rx: oneshot::Receiver<Response>,
}

/// Takes the `Rpc` frames of every link: answers go to their callers, requests are served in
/// a task each; join requests are the driver's and go on to it.
pub(crate) struct Dispatch(pub(crate) Weak<Shared>);

impl RpcSink for Dispatch {
    fn deliver(&self, from: &NodeId, payload: Bytes) -> Option<Bytes> {
        let shared = self.0.upgrade()?;
        match wire::decode::<RpcFrame>(&payload) {
            Some(RpcFrame::Response { id, body }) => shared.calls.answered(from, id, body),
            // Drain steps are queued here, in the order they come on the stream, so that a
            // window of steps in flight keeps the queue's order; only the answer waits.
            Some(RpcFrame::Request { id, body: Request::Drain { key, epoch, messages } }) => {
                let key = QueueKey::new(key.0, key.1);
                let pending = shared.accept_drain_now(&key, epoch, messages);
                let from = from.clone();
                tokio::spawn(async move {
                    let answer = pending.await;
                    let frame = Bytes::from(wire::encode(&RpcFrame::Response { id, body: answer }));
                    if let Err(e) = shared.transport.send(&from, StreamKind::Rpc, frame) {
                        debug!(peer = %from, error = %e, "answer not sent");
                    }
                });
            }
            Some(RpcFrame::Request { id, body }) => {
                let from = from.clone();
                tokio::spawn(async move {
                    let answer = shared.serve(&from, body).await;
                    let frame = Bytes::from(wire::encode(&RpcFrame::Response { id, body: answer }));
                    if let Err(e) = shared.transport.send(&from, StreamKind::Rpc, frame) {
                        debug!(peer = %from, error = %e, "answer not sent");
                    }
                });
            }
            Some(RpcFrame::JoinRequest { .. }) => return Some(payload),
            None => warn!(peer = %from, "malformed cluster request ignored"),
        }
        None
    }
}
