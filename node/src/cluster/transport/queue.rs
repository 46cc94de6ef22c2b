//! The outgoing queue of one peer and the transport's counters. Sans-IO: the connection
//! writers pop from it, [`super::Transport::send`] pushes into it.
//!
//! Buffering follows VerneMQ's `vmq_cluster_node`: while the peer is unreachable, frames are
//! kept until `outgoing_clustering_buffer_size` bytes are pending, then new frames are dropped
//! and counted (`cluster_bytes_dropped`). While the peer is reachable VerneMQ's buffer is
//! unbounded; here a second, larger limit (`connected_limit`) bounds the memory a slow peer can
//! hold.

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

/// Pending frames of one peer, one FIFO per [`StreamKind`], with a byte total.
#[derive(Debug, Default)]
pub struct PeerQueue {
    frames: [VecDeque<Bytes>; 3],
    pending_bytes: usize,
}

impl PeerQueue {
    /// Queues `payload` on `kind` unless `limit` bytes are already pending. As in
    /// `vmq_cluster_node`, the limit is checked before adding, so the last accepted frame may
    /// overshoot it: a limit smaller than one frame never blocks a peer for good.
    pub fn push(&mut self, kind: StreamKind, payload: Bytes, limit: usize) -> Result<(), Full> {
        if self.pending_bytes >= limit {
            return Err(Full {
                pending: self.pending_bytes,
                limit,
            });
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

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: usize) -> Bytes {
        Bytes::from(vec![0u8; n])
    }

    #[test]
    fn frames_pop_in_order_per_kind() {
        let mut q = PeerQueue::default();
        q.push(StreamKind::Publish, Bytes::from_static(b"p1"), 100)
            .unwrap();
        q.push(StreamKind::Metadata, Bytes::from_static(b"m1"), 100)
            .unwrap();
        q.push(StreamKind::Publish, Bytes::from_static(b"p2"), 100)
            .unwrap();
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
        assert_eq!(
            q.push(StreamKind::Rpc, frame(1), 100),
            Err(Full {
                pending: 100,
                limit: 100
            })
        );
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
