//! The `Publish` stream as a lossless log, and the `Control` stream that carries its
//! acknowledgements and the heartbeats of the failure detector.
//!
//! Sender: every frame is numbered in the peer's [`super::queue::ReliableLog`]; a new `Publish`
//! stream starts with the sender's incarnation (a random number drawn at bind, so that a
//! restarted node's numbering is not mistaken for the old one's) and each frame is
//! `seq (u64) || payload`. Frames stay in the log until the receiver acknowledges them; a new
//! connection writes every unacknowledged one again.
//!
//! Receiver: frames of one incarnation are delivered once, in order (a replayed frame at or
//! below the highest delivered one is skipped). The [`PublishSink`] says when a batch is
//! accepted (enqueued to local subscribers, durable for offline ones); one acker task per
//! peer turns those verdicts, in order, into cumulative [`ControlFrame::Ack`]s, so a later
//! batch is never acknowledged before an earlier one.

use std::future::Future;
use std::pin::Pin;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::sync::mpsc;
use vmq_storage::metadata::NodeId;

/// Bytes before each payload on the `Publish` stream (the sequence number).
pub const SEQ_LEN: usize = 8;
/// Bytes of the incarnation that opens a `Publish` stream.
pub const INCARNATION_LEN: usize = 8;
/// Verdicts queued per peer for its acker; a full queue holds the stream's reader, and QUIC
/// flow control then holds the sender.
const ACKER_QUEUE: usize = 256;
/// Verdicts folded into one ack at most while more keep arriving.
const ACK_EVERY: usize = 16;

/// Where forwarded publishes go on the receiving node. Called from the reader of the peer's
/// `Publish` stream, with the frames of one read (in order, already de-duplicated): it must
/// not block, and returns when the batch counts as accepted.
pub trait PublishSink: Send + Sync + 'static {
    /// Handles `frames` (sequence number, payload) of `from`.
    fn deliver(&self, from: &NodeId, frames: Vec<(u64, Bytes)>) -> Acceptance;
}

/// Where `Rpc` frames go on the receiving node, instead of the event channel. Called from the
/// reader of the peer's `Rpc` stream: it must not block. A frame it returns is not its own and
/// goes to the event channel as before.
pub trait RpcSink: Send + Sync + 'static {
    /// Handles `payload` from `from`, or gives it back.
    fn deliver(&self, from: &NodeId, payload: Bytes) -> Option<Bytes>;
}

/// When a delivered batch is accepted.
pub enum Acceptance {
    /// Now; the listed sequence numbers were refused (not accepted, e.g. a failed store).
    Done(Vec<u64>),
    /// Once the future resolves, to the refused sequence numbers.
    Later(Pin<Box<dyn Future<Output = Vec<u64>> + Send>>),
}

impl std::fmt::Debug for Acceptance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Acceptance::Done(r) => f.debug_tuple("Done").field(r).finish(),
            Acceptance::Later(_) => f.write_str("Later(..)"),
        }
    }
}

/// A frame on the `Control` stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlFrame {
    /// "I am alive"; sent every heartbeat interval. Any frame counts as a sign of life.
    Heartbeat,
    /// Every `Publish` frame of `incarnation` up to `upto` was accepted, except `refused`.
    Ack {
        /// The incarnation of the log's sender the numbers belong to.
        incarnation: u64,
        /// Cumulative: all frames up to this number.
        upto: u64,
        /// Frames among them that were refused.
        refused: Vec<u64>,
    },
}

const TAG_HEARTBEAT: u8 = 1;
const TAG_ACK: u8 = 2;
/// Refused numbers one ack may carry; a longer list is malformed.
const MAX_REFUSED_PER_ACK: usize = 65_536;

impl ControlFrame {
    /// The frame's payload.
    pub fn encode(&self) -> Bytes {
        match self {
            ControlFrame::Heartbeat => Bytes::from_static(&[TAG_HEARTBEAT]),
            ControlFrame::Ack { incarnation, upto, refused } => {
                let mut b = BytesMut::with_capacity(21 + refused.len() * 8);
                b.put_u8(TAG_ACK);
                b.put_u64(*incarnation);
                b.put_u64(*upto);
                b.put_u32(refused.len().min(MAX_REFUSED_PER_ACK) as u32);
                refused.iter().take(MAX_REFUSED_PER_ACK).for_each(|s| b.put_u64(*s));
                b.freeze()
            }
        }
    }

    /// Parses a payload from a peer; `None` when malformed.
    pub fn decode(mut b: &[u8]) -> Option<ControlFrame> {
        match b.try_get_u8().ok()? {
            TAG_HEARTBEAT if b.is_empty() => Some(ControlFrame::Heartbeat),
            TAG_ACK => {
                let incarnation = b.try_get_u64().ok()?;
                let upto = b.try_get_u64().ok()?;
                let n = b.try_get_u32().ok()? as usize;
                if n > MAX_REFUSED_PER_ACK || b.len() != n * 8 {
                    return None;
                }
                let refused = (0..n).filter_map(|_| b.try_get_u64().ok()).collect();
                Some(ControlFrame::Ack { incarnation, upto, refused })
            }
            _ => None,
        }
    }
}

/// Splits `seq || payload`; `None` when too short.
pub fn split_seq(mut frame: Bytes) -> Option<(u64, Bytes)> {
    if frame.len() < SEQ_LEN {
        return None;
    }
    let seq = frame.get_u64();
    Some((seq, frame))
}

/// What a receiver knows of one peer's `Publish` log.
#[derive(Debug, Default)]
pub struct Inbound {
    /// The sender incarnation the numbers below belong to.
    pub incarnation: u64,
    /// Highest number delivered to the sink (or as an event).
    pub delivered: u64,
    /// Verdicts for the acker, created on first use.
    pub acker: Option<mpsc::Sender<Verdict>>,
}

impl Inbound {
    /// Keeps the frames of `batch` not delivered yet, in order; a frame of a new incarnation
    /// starts the numbering afresh. `(new frames, highest already delivered among the
    /// skipped)`.
    pub fn admit(&mut self, incarnation: u64, batch: Vec<(u64, Bytes)>) -> (Vec<(u64, Bytes)>, Option<u64>) {
        if incarnation != self.incarnation {
            self.incarnation = incarnation;
            self.delivered = 0;
        }
        let mut fresh = Vec::with_capacity(batch.len());
        let mut skipped = None;
        for (seq, payload) in batch {
            if seq <= self.delivered {
                skipped = Some(self.delivered);
            } else {
                self.delivered = seq;
                fresh.push((seq, payload));
            }
        }
        (fresh, skipped)
    }
}

/// A verdict to turn into an acknowledgement.
pub struct Verdict {
    /// The sender incarnation.
    pub incarnation: u64,
    /// The highest number the verdict covers.
    pub upto: u64,
    /// When it is accepted.
    pub acceptance: Acceptance,
}

/// Starts the acker of one peer: it resolves verdicts in order and calls `send_ack` with a
/// cumulative ack whenever it has caught up with what is queued.
pub fn spawn_acker(send_ack: impl Fn(ControlFrame) + Send + 'static) -> mpsc::Sender<Verdict> {
    let (tx, mut rx) = mpsc::channel::<Verdict>(ACKER_QUEUE);
    tokio::spawn(async move {
        let mut pending: Option<(u64, u64, Vec<u64>)> = None;
        let mut batched = 0usize;
        while let Some(v) = rx.recv().await {
            let refused = match v.acceptance {
                Acceptance::Done(r) => r,
                Acceptance::Later(f) => f.await,
            };
            match &mut pending {
                Some((inc, upto, all)) if *inc == v.incarnation => {
                    *upto = (*upto).max(v.upto);
                    all.extend(refused);
                }
                _ => {
                    if let Some((incarnation, upto, refused)) = pending.take() {
                        send_ack(ControlFrame::Ack { incarnation, upto, refused });
                    }
                    pending = Some((v.incarnation, v.upto, refused));
                }
            }
            batched += 1;
            // Caught up, or long enough behind a steady stream that the sender must not wait.
            if rx.is_empty() || batched >= ACK_EVERY {
                batched = 0;
                if let Some((incarnation, upto, refused)) = pending.take() {
                    send_ack(ControlFrame::Ack { incarnation, upto, refused });
                }
            }
        }
    });
    tx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_frames_round_trip_and_garbage_is_refused() {
        for f in [
            ControlFrame::Heartbeat,
            ControlFrame::Ack { incarnation: 7, upto: 42, refused: vec![] },
            ControlFrame::Ack { incarnation: u64::MAX, upto: 1, refused: vec![1, 3] },
        ] {
            assert_eq!(ControlFrame::decode(&f.encode()), Some(f));
        }
        // tag, incarnation, upto, count 1 but no refused number
        let mut short = ControlFrame::Ack { incarnation: 1, upto: 2, refused: vec![] }.encode().to_vec();
        short[20] = 1;
        for bad in [&[][..], &[9], &[TAG_HEARTBEAT, 0], &short[..], &[TAG_ACK, 1, 2]] {
            assert_eq!(ControlFrame::decode(bad), None, "{bad:?}");
        }
        assert_eq!(split_seq(Bytes::from_static(&[0, 0, 0])), None);
        assert_eq!(split_seq(Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 9, b'x'])), Some((9, Bytes::from_static(b"x"))));
    }

    #[test]
    fn replayed_frames_are_delivered_once_and_a_new_incarnation_starts_afresh() {
        let f = |seqs: &[u64]| seqs.iter().map(|s| (*s, Bytes::new())).collect::<Vec<_>>();
        let seqs = |v: Vec<(u64, Bytes)>| v.into_iter().map(|(s, _)| s).collect::<Vec<_>>();
        let mut inbound = Inbound::default();
        let (fresh, skipped) = inbound.admit(5, f(&[1, 2, 3]));
        assert_eq!((seqs(fresh), skipped), (vec![1, 2, 3], None));
        // After a reconnect the sender replays 2..=4: only 4 is new.
        let (fresh, skipped) = inbound.admit(5, f(&[2, 3, 4]));
        assert_eq!((seqs(fresh), skipped), (vec![4], Some(3)));
        // The sender restarted: its numbering begins again.
        let (fresh, _) = inbound.admit(6, f(&[1]));
        assert_eq!(seqs(fresh), vec![1]);
    }

    #[tokio::test]
    async fn acks_are_cumulative_and_never_overtake_a_pending_verdict() {
        let (acks_tx, mut acks) = mpsc::unbounded_channel();
        let acker = spawn_acker(move |f| {
            let _ = acks_tx.send(f);
        });
        let (release, wait) = tokio::sync::oneshot::channel::<()>();
        let later = Acceptance::Later(Box::pin(async move {
            let _ = wait.await;
            vec![2]
        }));
        acker.send(Verdict { incarnation: 1, upto: 2, acceptance: later }).await.unwrap();
        acker.send(Verdict { incarnation: 1, upto: 5, acceptance: Acceptance::Done(vec![]) }).await.unwrap();
        tokio::task::yield_now().await;
        assert!(acks.try_recv().is_err(), "5 must wait for 2");
        release.send(()).unwrap();
        assert_eq!(acks.recv().await, Some(ControlFrame::Ack { incarnation: 1, upto: 5, refused: vec![2] }));
    }
}
