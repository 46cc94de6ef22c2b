//! The outgoing queue of one peer and the transport's counters. Sans-IO: the connection
//! writers pop from it, [`super::Transport::send`] pushes into it.
//!
//! Buffering follows VerneMQ's `vmq_cluster_node`: while the peer is unreachable, frames are
//! kept until `outgoing_clustering_buffer_size` bytes are pending, then new frames are dropped
//! and counted (`cluster_bytes_dropped`). While the peer is reachable VerneMQ's buffer is
//! unbounded; here a second, larger limit (`connected_limit`) bounds the memory a slow peer can
//! hold.
//!
//! Forwarded publishes are kept apart, in a [`ReliableLog`]: numbered, kept until the peer
//! acknowledges them, written again on a new connection, never dropped once accepted unless
//! the caller marked them droppable (QoS 0).

use std::collections::VecDeque;

use bytes::Bytes;

use super::frame::StreamKind;

/// Frame and byte counters, per peer and in total. Bytes count payloads, not framing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames written to a connection.
    pub frames_sent: u64,
    /// Payload bytes written to a connection.
    pub bytes_sent: u64,
    /// Frames received and delivered as [`super::TransportEvent::Frame`].
    pub frames_received: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// Frames dropped: buffer full, or discarded by `forget` or a closed inbound-only peer.
    pub frames_dropped: u64,
    /// Payload bytes dropped.
    pub bytes_dropped: u64,
}

impl Counters {
    pub(crate) fn add(&mut self, other: &Counters) {
        self.frames_sent += other.frames_sent;
        self.bytes_sent += other.bytes_sent;
        self.frames_received += other.frames_received;
        self.bytes_received += other.bytes_received;
        self.frames_dropped += other.frames_dropped;
        self.bytes_dropped += other.bytes_dropped;
    }

    pub(crate) fn count_dropped(&mut self, frames: u64, bytes: u64) {
        self.frames_dropped += frames;
        self.bytes_dropped += bytes;
    }
}

/// A frame refused by a full queue; the caller counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full {
    /// Bytes pending when the frame was refused.
    pub pending: usize,
    /// The limit that applied.
    pub limit: usize,
}

/// Pending frames of one peer, one FIFO per [`StreamKind`], with a byte total. The
/// `Publish` kind is not kept here but in the peer's [`ReliableLog`].
#[derive(Debug, Default)]
pub struct PeerQueue {
    frames: [VecDeque<Bytes>; StreamKind::ALL.len()],
    pending_bytes: usize,
}

impl PeerQueue {
    /// Queues `payload` on `kind` unless `limit` bytes are already pending. As in
    /// `vmq_cluster_node`, the limit is checked before adding, so the last accepted frame may
    /// overshoot it: a limit smaller than one frame never blocks a peer for good.
    pub fn push(&mut self, kind: StreamKind, payload: Bytes, limit: usize) -> Result<(), Full> {
        if self.pending_bytes >= limit {
            return Err(Full { pending: self.pending_bytes, limit });
        }
        self.pending_bytes += payload.len();
        self.frames[kind.index()].push_back(payload);
        Ok(())
    }

    /// The oldest pending frame of `kind`.
    pub fn pop(&mut self, kind: StreamKind) -> Option<Bytes> {
        let frame = self.frames[kind.index()].pop_front()?;
        self.pending_bytes -= frame.len();
        Some(frame)
    }

    /// The oldest pending frames of `kind`, in order: at least one if any is pending, then
    /// more while their total stays within `max_bytes`. Writing them together saves a lock and
    /// a stream write per frame, as `vmq_cluster_node` batches up to
    /// `outgoing_clustering_flush_threshold`.
    pub fn pop_batch(&mut self, kind: StreamKind, max_bytes: usize) -> Vec<Bytes> {
        let mut batch = Vec::new();
        let mut total = 0;
        while let Some(next) = self.frames[kind.index()].front() {
            if !batch.is_empty() && total + next.len() > max_bytes {
                break;
            }
            total += next.len();
            if let Some(frame) = self.pop(kind) {
                batch.push(frame);
            }
        }
        batch
    }

    /// Bytes pending over all kinds.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Frames pending over all kinds.
    pub fn pending_frames(&self) -> usize {
        self.frames.iter().map(VecDeque::len).sum()
    }

    /// Discards everything; returns `(frames, bytes)` discarded.
    pub fn clear(&mut self) -> (u64, u64) {
        let frames = self.pending_frames() as u64;
        let bytes = self.pending_bytes as u64;
        self.frames.iter_mut().for_each(VecDeque::clear);
        self.pending_bytes = 0;
        (frames, bytes)
    }
}

/// The forwarded-publish log of one peer: entries numbered from 1, kept until the peer
/// acknowledges them cumulatively, and written from a cursor that a new connection rewinds,
/// so nothing handed to a connection that then fails is lost (docs/architecture.md "Between
/// nodes").
#[derive(Debug)]
pub struct ReliableLog {
    entries: VecDeque<(u64, Bytes)>,
    /// Index in `entries` of the next entry to write.
    cursor: usize,
    /// The number the next appended entry gets.
    next_seq: u64,
    bytes: usize,
}

impl Default for ReliableLog {
    fn default() -> Self {
        Self { entries: VecDeque::new(), cursor: 0, next_seq: 1, bytes: 0 }
    }
}

impl ReliableLog {
    /// Appends `payload` and returns its number. A droppable entry (QoS 0) is refused once
    /// `limit` bytes are unacknowledged; any other entry is always taken: its sender waits
    /// for the acknowledgement and so stops taking more (backpressure, not loss).
    pub fn push(&mut self, payload: Bytes, droppable: bool, limit: usize) -> Result<u64, Full> {
        if droppable && self.bytes >= limit {
            return Err(Full { pending: self.bytes, limit });
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.bytes += payload.len();
        self.entries.push_back((seq, payload));
        Ok(seq)
    }

    /// The next unwritten entries, at least one if any, then more while within `max_bytes`;
    /// they stay in the log until acknowledged.
    pub fn next_batch(&mut self, max_bytes: usize) -> Vec<(u64, Bytes)> {
        let mut batch = Vec::new();
        let mut total = 0;
        while let Some((seq, frame)) = self.entries.get(self.cursor) {
            if !batch.is_empty() && total + frame.len() > max_bytes {
                break;
            }
            total += frame.len();
            batch.push((*seq, frame.clone()));
            self.cursor += 1;
        }
        batch
    }

    /// Clones of up to `max` entries numbered above `after`, oldest first.
    pub fn after(&self, after: u64, max: usize) -> Vec<(u64, Bytes)> {
        let start = self.entries.partition_point(|(seq, _)| *seq <= after);
        self.entries.range(start..).take(max).map(|(s, f)| (*s, f.clone())).collect()
    }

    /// Makes every unacknowledged entry due again (a new connection replays them).
    pub fn rewind(&mut self) {
        self.cursor = 0;
    }

    /// Drops the entries up to `upto`, acknowledged by the peer.
    pub fn acknowledge(&mut self, upto: u64) {
        while let Some((seq, frame)) = self.entries.front() {
            if *seq > upto {
                break;
            }
            self.bytes -= frame.len();
            self.entries.pop_front();
            self.cursor = self.cursor.saturating_sub(1);
        }
    }

    /// Discards everything; returns `(frames, bytes, highest number handed out)`.
    pub fn clear(&mut self) -> (u64, u64, u64) {
        let out = (self.entries.len() as u64, self.bytes as u64, self.next_seq - 1);
        self.entries.clear();
        self.cursor = 0;
        self.bytes = 0;
        out
    }

    /// Unacknowledged entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Unacknowledged payload bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_replays_unacknowledged_entries_after_a_rewind() {
        let mut log = ReliableLog::default();
        for i in 0..4u8 {
            assert_eq!(log.push(Bytes::from(vec![i; 10]), false, 0), Ok(u64::from(i) + 1));
        }
        let seqs = |b: Vec<(u64, Bytes)>| b.into_iter().map(|(s, _)| s).collect::<Vec<_>>();
        assert_eq!(seqs(log.next_batch(25)), vec![1, 2]);
        assert_eq!(seqs(log.next_batch(100)), vec![3, 4]);
        assert!(log.next_batch(100).is_empty());
        log.acknowledge(2);
        assert_eq!((log.len(), log.bytes()), (2, 20));
        // The connection failed before 3 and 4 were acknowledged: they go out again.
        log.rewind();
        assert_eq!(seqs(log.next_batch(100)), vec![3, 4]);
        assert_eq!(log.clear(), (2, 20, 4));
    }

    #[test]
    fn only_droppable_entries_are_refused_by_a_full_log() {
        let mut log = ReliableLog::default();
        log.push(frame(100), true, 100).unwrap();
        assert_eq!(log.push(frame(1), true, 100), Err(Full { pending: 100, limit: 100 }));
        assert_eq!(log.push(frame(50), false, 100), Ok(2));
        assert_eq!(log.bytes(), 150);
    }

    #[test]
    fn acknowledging_keeps_the_cursor_on_the_next_unwritten_entry() {
        let mut log = ReliableLog::default();
        for _ in 0..3 {
            log.push(frame(1), false, 0).unwrap();
        }
        assert_eq!(log.next_batch(1).len(), 1);
        log.acknowledge(1);
        assert_eq!(log.next_batch(100).iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![2, 3]);
    }

    fn frame(n: usize) -> Bytes {
        Bytes::from(vec![0u8; n])
    }

    #[test]
    fn frames_pop_in_order_per_kind() {
        let mut q = PeerQueue::default();
        q.push(StreamKind::Publish, Bytes::from_static(b"p1"), 100).unwrap();
        q.push(StreamKind::Metadata, Bytes::from_static(b"m1"), 100).unwrap();
        q.push(StreamKind::Publish, Bytes::from_static(b"p2"), 100).unwrap();
        assert_eq!(q.pending_bytes(), 6);
        assert_eq!(q.pop(StreamKind::Publish).unwrap(), "p1");
        assert_eq!(q.pop(StreamKind::Publish).unwrap(), "p2");
        assert_eq!(q.pop(StreamKind::Publish), None);
        assert_eq!(q.pop(StreamKind::Rpc), None);
        assert_eq!(q.pop(StreamKind::Metadata).unwrap(), "m1");
        assert_eq!(q.pending_bytes(), 0);
    }

    #[test]
    fn batches_keep_order_and_respect_the_byte_bound() {
        let mut q = PeerQueue::default();
        for n in [40, 40, 40, 200] {
            q.push(StreamKind::Metadata, frame(n), 1000).unwrap();
        }
        let sizes = |b: Vec<Bytes>| b.iter().map(Bytes::len).collect::<Vec<_>>();
        assert_eq!(sizes(q.pop_batch(StreamKind::Metadata, 100)), vec![40, 40]);
        assert_eq!(sizes(q.pop_batch(StreamKind::Metadata, 100)), vec![40]);
        // A frame above the bound still goes out, alone.
        assert_eq!(sizes(q.pop_batch(StreamKind::Metadata, 100)), vec![200]);
        assert!(q.pop_batch(StreamKind::Metadata, 100).is_empty());
        assert_eq!(q.pending_bytes(), 0);
    }

    #[test]
    fn frames_beyond_the_limit_are_refused() {
        let mut q = PeerQueue::default();
        q.push(StreamKind::Rpc, frame(60), 100).unwrap();
        q.push(StreamKind::Rpc, frame(40), 100).unwrap();
        assert_eq!(q.push(StreamKind::Rpc, frame(1), 100), Err(Full { pending: 100, limit: 100 }));
        q.pop(StreamKind::Rpc);
        q.push(StreamKind::Rpc, frame(61), 100).unwrap();
        assert_eq!(q.pending_frames(), 2);
        assert_eq!(q.pending_bytes(), 101);
    }

    #[test]
    fn the_last_accepted_frame_may_overshoot_the_limit() {
        let mut q = PeerQueue::default();
        q.push(StreamKind::Metadata, frame(500), 100).unwrap();
        assert!(q.push(StreamKind::Metadata, frame(1), 100).is_err());
        assert_eq!(q.clear(), (1, 500));
        assert_eq!(q.pending_bytes(), 0);
    }
}
