//! An established connection's task: emits `Up`, runs one writer per [`StreamKind`] and one
//! reader per incoming stream, judges the peer's liveness from what it reads, and emits
//! `Down` once all readers are done (or earlier, when the peer falls silent), so every frame of
//! the connection is delivered between an `Up` and a `Down` or while the peer counts as silent.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use quinn::{RecvStream, SendStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{Instrument, info, info_span, warn};
use vmq_storage::metadata::NodeId;

use super::endpoint::{Shared, until_true};
use super::frame::{FRAME_PREFIX_LEN, FrameError, STREAM_HEADER_LEN, StreamKind, frame_prefix, parse_frame_len};
use super::reliable::{self, Acceptance, ControlFrame, INCARNATION_LEN, Verdict};
use super::{CloseCode, TransportEvent};

/// Longest wait for a writer to flush and for the peer to acknowledge at shutdown.
const FLUSH_GRACE: Duration = Duration::from_secs(2);
/// Bytes of frames written per stream write (VerneMQ's `outgoing_clustering_flush_threshold`).
const BATCH_BYTES: usize = 64 * 1024;
/// Largest read from a stream at once.
const READ_CHUNK: usize = 256 * 1024;
/// Frames shorter than this are copied into the batch's buffer when written.
const COPY_BELOW: usize = 4096;

/// A connection that passed the hello exchange and was registered for its peer.
pub(crate) struct Established {
    pub(crate) peer: NodeId,
    pub(crate) conn: quinn::Connection,
    /// Its id in the peer table.
    pub(crate) id: u64,
    /// The connection it replaced, which must emit `Down` before this one emits `Up`.
    pub(crate) previous: Option<watch::Receiver<bool>>,
    /// Set once this connection emitted `Down`.
    pub(crate) done: watch::Sender<bool>,
}

/// Runs `established` on its own task, in a `cluster_link` span naming the peer and its
/// address: every event of the link, its readers' and its writers', carries them. The span is a
/// root: the link outlives the dial or accept that made it.
pub(crate) fn spawn(shared: Arc<Shared>, established: Established) {
    let span = info_span!(
        parent: None,
        "cluster_link",
        peer = %established.peer,
        addr = %established.conn.remote_address(),
    );
    tokio::spawn(run(shared, established).instrument(span));
}

/// The failure detector's verdict on a connected peer (docs/architecture.md "Netsplit"): any frame
/// read counts as a sign of life; heartbeats make sure there is one every `keep_alive`.
/// Silent for `suspect_after`: suspected (logged); silent for `down_after`: reported
/// unreachable: its connection is closed and redialed, and nothing queued for it is discarded.
struct Liveness {
    alive: bool,
    suspected: bool,
}

impl Liveness {
    async fn check(&mut self, shared: &Shared, peer: &NodeId, conn: &quinn::Connection) {
        let silence = shared.silence(peer);
        let config = &shared.config;
        if silence < config.suspect_after {
            if !self.alive {
                info!("cluster peer heard again: reachable");
                self.alive = true;
                shared.reachability_changed(peer, true);
                let _ = shared.events.send(TransportEvent::Up(peer.clone())).await;
            }
            self.suspected = false;
        } else if self.alive && silence >= config.down_after {
            warn!(silent_ms = silence.as_millis() as u64, "cluster peer silent: unreachable");
            self.alive = false;
            shared.reachability_changed(peer, false);
            let _ = shared.events.send(TransportEvent::Down(peer.clone())).await;
            // After seconds of loss QUIC has backed its retransmissions off by as long again,
            // so a connection kept through a cut recovers seconds after the heal; a fresh one
            // (redialed at once) is up within a fraction of a second. Nothing is lost with it:
            // the publish log is written again on the new connection.
            conn.close(CloseCode::Silent.varint(), b"peer silent");
        } else if self.alive && !self.suspected {
            info!(silent_ms = silence.as_millis() as u64, "cluster peer suspected");
            self.suspected = true;
        }
    }
}

async fn run(shared: Arc<Shared>, established: Established) {
    let Established { peer, conn, id, previous, done } = established;
    if let Some(mut previous) = previous {
        until_true(&mut previous).await;
    }
    info!("cluster link up");
    shared.heard(&peer, 0, 0);
    shared.reachability_changed(&peer, true);
    let _ = shared.events.send(TransportEvent::Up(peer.clone())).await;
    let mut liveness = Liveness { alive: true, suspected: false };
    // Whatever the previous connection had not seen acknowledged goes out again.
    shared.rewind_publish_log(&peer);

    let mut writers = JoinSet::new();
    for kind in StreamKind::ALL {
        writers.spawn(write_stream(shared.clone(), peer.clone(), conn.clone(), kind).in_current_span());
    }
    let mut readers = JoinSet::new();
    let seen = Arc::new(AtomicU8::new(0));
    let mut shutdown = shared.shutdown.subscribe();
    let mut tick = tokio::time::interval(shared.config.keep_alive / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beat = false;
    loop {
        tokio::select! {
            stream = conn.accept_uni() => match stream {
                Ok(recv) => {
                    readers.spawn(read_stream(
                        shared.clone(),
                        peer.clone(),
                        conn.clone(),
                        recv,
                        seen.clone(),
                    ).in_current_span());
                }
                Err(_) => break,
            },
            _ = tick.tick() => {
                beat = !beat;
                if beat {
                    shared.queue_control(&peer, ControlFrame::Heartbeat);
                }
                liveness.check(&shared, &peer, &conn).await;
            }
            _ = until_true(&mut shutdown) => {
                // Writers see the same flag, flush and finish their streams.
                let flush = async { while writers.join_next().await.is_some() {} };
                let _ = tokio::time::timeout(FLUSH_GRACE, flush).await;
                conn.close(CloseCode::Shutdown.varint(), b"node shutting down");
                break;
            }
        }
    }
    // Readers and writers end on the connection's closure.
    while readers.join_next().await.is_some() {}
    writers.abort_all();
    while writers.join_next().await.is_some() {}

    shared.deregister(&peer, id);
    let reason = conn.close_reason().map(|e| e.to_string()).unwrap_or_default();
    info!(%reason, "cluster link down");
    if liveness.alive {
        shared.reachability_changed(&peer, false);
        let _ = shared.events.send(TransportEvent::Down(peer)).await;
    }
    done.send_replace(true);
}

/// Writes `(peer, kind)`'s queued frames on one stream, opened at the first frame. At shutdown
/// it writes what is queued, finishes the stream and waits (bounded) for the acknowledgement.
async fn write_stream(shared: Arc<Shared>, peer: NodeId, conn: quinn::Connection, kind: StreamKind) {
    let wake = shared.wake(&peer, kind);
    let mut shutdown = shared.shutdown.subscribe();
    let mut stream: Option<SendStream> = None;
    loop {
        let batch = if kind == StreamKind::Publish {
            shared.next_publish_batch(&peer, BATCH_BYTES)
        } else {
            shared.pop_batch(&peer, kind, BATCH_BYTES).into_iter().map(|f| (0, f)).collect()
        };
        if batch.is_empty() {
            if shared.is_shutting_down() {
                break;
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = conn.closed() => return,
                _ = until_true(&mut shutdown) => {}
            }
            continue;
        }
        let frames = batch.len() as u64;
        let bytes = batch.iter().map(|(_, f)| f.len() as u64).sum::<u64>();
        if write_frames(&shared, &conn, &mut stream, kind, batch).await.is_err() {
            return;
        }
        // The counters are about what the layers above sent, not heartbeats and acks.
        if kind != StreamKind::Control {
            shared.count(&peer, |c| {
                c.frames_sent += frames;
                c.bytes_sent += bytes;
            });
        }
    }
    if let Some(mut stream) = stream
        && stream.finish().is_ok()
    {
        let _ = tokio::time::timeout(FLUSH_GRACE, stream.stopped()).await;
    }
}

/// Writes a batch; `Publish` frames are `seq || payload` and their stream opens with this
/// node's incarnation.
async fn write_frames(
    shared: &Shared,
    conn: &quinn::Connection,
    stream: &mut Option<SendStream>,
    kind: StreamKind,
    batch: Vec<(u64, Bytes)>,
) -> Result<(), ()> {
    let numbered = kind == StreamKind::Publish;
    if stream.is_none() {
        let mut opened = conn.open_uni().await.map_err(|_| ())?;
        let mut head = Vec::with_capacity(STREAM_HEADER_LEN + INCARNATION_LEN);
        head.extend_from_slice(&kind.header());
        if numbered {
            head.extend_from_slice(&shared.incarnation.to_be_bytes());
        }
        opened.write_all(&head).await.map_err(|_| ())?;
        *stream = Some(opened);
    }
    let Some(stream) = stream.as_mut() else {
        return Err(());
    };
    // Small frames are copied into one buffer with their prefixes: one chunk for QUIC per
    // batch instead of two per frame, and no allocation per frame. Large payloads go as their
    // own chunk rather than being copied.
    let extra = if numbered { reliable::SEQ_LEN } else { 0 };
    let small: usize =
        batch.iter().map(|(_, f)| FRAME_PREFIX_LEN + extra + if f.len() < COPY_BELOW { f.len() } else { 0 }).sum();
    let mut out = BytesMut::with_capacity(small);
    let mut chunks = Vec::new();
    for (seq, frame) in batch {
        // `send` bounds frames by `max_frame_size`; a frame above 4 GiB (only possible with
        // such a maximum configured) is not representable on the wire and is skipped rather
        // than corrupting the stream.
        let Some(prefix) = frame_prefix(frame.len() + extra) else {
            continue;
        };
        out.put_slice(&prefix);
        if numbered {
            out.put_u64(seq);
        }
        if frame.len() < COPY_BELOW {
            out.put_slice(&frame);
        } else {
            chunks.push(out.split().freeze());
            chunks.push(frame);
        }
    }
    if !out.is_empty() {
        chunks.push(out.freeze());
    }
    stream.write_all_chunks(&mut chunks).await.map_err(|_| ())
}

/// Reads one incoming stream: its header, then frames until the stream or the connection
/// ends, a whole read at a time. A framing violation closes the connection.
async fn read_stream(
    shared: Arc<Shared>,
    peer: NodeId,
    conn: quinn::Connection,
    mut recv: RecvStream,
    seen: Arc<AtomicU8>,
) {
    let mut buf = BytesMut::new();
    let want = STREAM_HEADER_LEN;
    if !fill(&mut recv, &mut buf, want).await {
        return;
    }
    let mut header = [0u8; STREAM_HEADER_LEN];
    header.copy_from_slice(&buf.split_to(STREAM_HEADER_LEN));
    let kind = match StreamKind::parse_header(header) {
        Ok(kind) => kind,
        Err(e) => return protocol_error(&conn, e),
    };
    let bit = 1u8 << kind.tag();
    if seen.fetch_or(bit, Ordering::Relaxed) & bit != 0 {
        return protocol_error(&conn, FrameError::DuplicateStream(kind));
    }
    let mut incarnation = 0;
    if kind == StreamKind::Publish {
        if !fill(&mut recv, &mut buf, INCARNATION_LEN).await {
            return;
        }
        let mut b = [0u8; INCARNATION_LEN];
        b.copy_from_slice(&buf.split_to(INCARNATION_LEN));
        incarnation = u64::from_be_bytes(b);
    }
    let max = shared.config.max_frame_size;
    loop {
        let mut frames = Vec::new();
        // A framing violation ends the stream, after the whole frames before it.
        let mut violation = None;
        loop {
            if buf.len() < FRAME_PREFIX_LEN {
                break;
            }
            let mut prefix = [0u8; FRAME_PREFIX_LEN];
            prefix.copy_from_slice(&buf[..FRAME_PREFIX_LEN]);
            let len = match parse_frame_len(prefix, max) {
                Ok(len) => len,
                Err(e) => {
                    violation = Some(e);
                    break;
                }
            };
            if buf.len() < FRAME_PREFIX_LEN + len {
                buf.reserve(FRAME_PREFIX_LEN + len - buf.len());
                break;
            }
            let _ = buf.split_to(FRAME_PREFIX_LEN);
            frames.push(buf.split_to(len).freeze());
        }
        if !frames.is_empty() {
            let (n, bytes) = match kind {
                StreamKind::Control => (0, 0),
                _ => (frames.len() as u64, frames.iter().map(|f| f.len() as u64).sum()),
            };
            shared.heard(&peer, n, bytes);
            if !dispatch(&shared, &peer, &conn, kind, incarnation, frames).await {
                return;
            }
        }
        if let Some(e) = violation {
            return protocol_error(&conn, e);
        }
        match recv.read_chunk(READ_CHUNK, true).await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
            // The sender finished the stream: clean between frames, truncated inside one.
            Ok(None) if buf.is_empty() => return,
            Ok(None) => return protocol_error(&conn, FrameError::Truncated),
            Err(_) => return,
        }
    }
}

/// Reads until `buf` holds `n` bytes; false when the stream ended or failed first.
async fn fill(recv: &mut RecvStream, buf: &mut BytesMut, n: usize) -> bool {
    while buf.len() < n {
        match recv.read_chunk(READ_CHUNK, true).await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
            _ => return false,
        }
    }
    true
}

/// Hands the frames of one read on; false when the connection is to be dropped.
async fn dispatch(
    shared: &Arc<Shared>,
    peer: &NodeId,
    conn: &quinn::Connection,
    kind: StreamKind,
    incarnation: u64,
    frames: Vec<Bytes>,
) -> bool {
    match kind {
        StreamKind::Control => {
            for frame in frames {
                match ControlFrame::decode(&frame) {
                    Some(ControlFrame::Heartbeat) => {}
                    Some(ControlFrame::Ack { incarnation, upto, refused }) => {
                        shared.handle_ack(peer, incarnation, upto, refused);
                    }
                    None => {
                        warn!("malformed control frame");
                        conn.close(CloseCode::Protocol.varint(), b"malformed control frame");
                        return false;
                    }
                }
            }
            true
        }
        StreamKind::Publish => {
            let mut numbered = Vec::with_capacity(frames.len());
            for frame in frames {
                match reliable::split_seq(frame) {
                    Some(f) => numbered.push(f),
                    None => {
                        protocol_error(conn, FrameError::Truncated);
                        return false;
                    }
                }
            }
            let (fresh, skipped) = shared.admit_publishes(peer, incarnation, numbered);
            let acker = shared.acker(peer);
            if let Some(upto) = skipped {
                // A replay of what was delivered before: acknowledge it again (after whatever
                // verdicts are still pending), or the sender would keep it for ever.
                let v = Verdict { incarnation, upto, acceptance: Acceptance::Done(Vec::new()) };
                if acker.send(v).await.is_err() {
                    return false;
                }
            }
            let Some(upto) = fresh.last().map(|(seq, _)| *seq) else { return true };
            let acceptance = match shared.sink.get() {
                Some(sink) => sink.deliver(peer, fresh),
                None => {
                    for (_, payload) in fresh {
                        let event = TransportEvent::Frame { from: peer.clone(), kind, payload };
                        if shared.events.send(event).await.is_err() {
                            return false;
                        }
                    }
                    Acceptance::Done(Vec::new())
                }
            };
            acker.send(Verdict { incarnation, upto, acceptance }).await.is_ok()
        }
        StreamKind::Metadata | StreamKind::Rpc => {
            for payload in frames {
                let payload = match (kind, shared.rpc_sink.get()) {
                    (StreamKind::Rpc, Some(sink)) => match sink.deliver(peer, payload) {
                        Some(theirs) => theirs,
                        None => continue,
                    },
                    _ => payload,
                };
                let event = TransportEvent::Frame { from: peer.clone(), kind, payload };
                if shared.events.send(event).await.is_err() {
                    return false;
                }
            }
            true
        }
    }
}

fn protocol_error(conn: &quinn::Connection, error: FrameError) {
    warn!(%error, "closing cluster connection");
    conn.close(CloseCode::Protocol.varint(), error.to_string().as_bytes());
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::mpsc::Receiver;

    use super::*;
    use crate::cluster::transport::{Transport, TransportConfig};
    use vmq_config::MetadataPlugin;

    const WAIT: Duration = Duration::from_secs(10);

    fn bind(name: &str) -> (Transport, Receiver<TransportEvent>) {
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
        let mut config = TransportConfig::new(NodeId::new(name), "c", MetadataPlugin::VmqSwc);
        config.listen = "127.0.0.1:0".parse().unwrap();
        Transport::bind(config).unwrap()
    }

    async fn until(rx: &mut Receiver<TransportEvent>, event: TransportEvent) -> Vec<TransportEvent> {
        let mut skipped = Vec::new();
        loop {
            let next = tokio::time::timeout(WAIT, rx.recv()).await.unwrap().unwrap();
            if next == event {
                return skipped;
            }
            skipped.push(next);
        }
    }

    /// Connects a and b, then lets `write` speak raw QUIC from b to a; a must close the
    /// connection (both see `Down`) and deliver no frame from b.
    async fn raw_stream_from_b_closes(write: impl AsyncFnOnce(&quinn::Connection)) {
        let (a, mut a_rx) = bind("a@h");
        let (b, mut b_rx) = bind("b@h");
        let (a_name, b_name) = (a.local_node().clone(), b.local_node().clone());
        a.connect(b_name.clone(), b.local_addr().unwrap());
        until(&mut a_rx, TransportEvent::Up(b_name.clone())).await;
        until(&mut b_rx, TransportEvent::Up(a_name.clone())).await;
        let conn = b.shared().connection_of(&a_name).unwrap();
        write(&conn).await;
        let before_down = until(&mut a_rx, TransportEvent::Down(b_name)).await;
        assert!(before_down.iter().all(|e| !matches!(e, TransportEvent::Frame { .. })));
        until(&mut b_rx, TransportEvent::Down(a_name)).await;
        let reason = conn.close_reason().map(|e| e.to_string()).unwrap_or_default();
        assert!(reason.contains("3"), "closed with the protocol error code: {reason}");
    }

    #[tokio::test]
    async fn malformed_stream_header_closes_the_connection() {
        raw_stream_from_b_closes(async |conn| {
            let mut s = conn.open_uni().await.unwrap();
            s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        })
        .await;
    }

    #[tokio::test]
    async fn second_stream_of_a_kind_closes_the_connection() {
        raw_stream_from_b_closes(async |conn| {
            let mut first = conn.open_uni().await.unwrap();
            first.write_all(&StreamKind::Metadata.header()).await.unwrap();
            let mut second = conn.open_uni().await.unwrap();
            second.write_all(&StreamKind::Metadata.header()).await.unwrap();
        })
        .await;
    }

    #[tokio::test]
    async fn stream_ending_inside_a_frame_closes_the_connection() {
        raw_stream_from_b_closes(async |conn| {
            let mut s = conn.open_uni().await.unwrap();
            s.write_all(&StreamKind::Rpc.header()).await.unwrap();
            s.write_all(&[0, 0, 0, 100]).await.unwrap();
            s.write_all(b"only ten b").await.unwrap();
            s.finish().unwrap();
        })
        .await;
    }
}
