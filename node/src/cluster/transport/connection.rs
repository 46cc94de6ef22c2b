//! An established connection's task: emits `Up`, runs one writer per [`StreamKind`] and one
//! reader per incoming stream, and emits `Down` once all readers are done, so every frame of
//! the connection is delivered between its `Up` and its `Down`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use bytes::Bytes;
use quinn::{ReadExactError, RecvStream, SendStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};
use vmq_storage::metadata::NodeId;

use super::endpoint::{Shared, until_true};
use super::frame::{FrameError, STREAM_HEADER_LEN, StreamKind, frame_prefix, parse_frame_len};
use super::{CloseCode, TransportEvent};

/// Longest wait for a writer to flush and for the peer to acknowledge at shutdown.
const FLUSH_GRACE: Duration = Duration::from_secs(2);
/// Bytes of frames written per stream write (VerneMQ's `outgoing_clustering_flush_threshold`).
const BATCH_BYTES: usize = 64 * 1024;

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

/// Runs `established` on its own task.
pub(crate) fn spawn(shared: Arc<Shared>, established: Established) {
    tokio::spawn(run(shared, established));
}

async fn run(shared: Arc<Shared>, established: Established) {
    let Established {
        peer,
        conn,
        id,
        previous,
        done,
    } = established;
    if let Some(mut previous) = previous {
        until_true(&mut previous).await;
    }
    let addr = conn.remote_address();
    info!(peer = %peer, %addr, "cluster link up");
    let _ = shared.events.send(TransportEvent::Up(peer.clone())).await;

    let mut writers = JoinSet::new();
    for kind in StreamKind::ALL {
        writers.spawn(write_stream(
            shared.clone(),
            peer.clone(),
            conn.clone(),
            kind,
        ));
    }
    let mut readers = JoinSet::new();
    let seen = Arc::new(AtomicU8::new(0));
    let mut shutdown = shared.shutdown.subscribe();
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
                    ));
                }
                Err(_) => break,
            },
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
    let reason = conn
        .close_reason()
        .map(|e| e.to_string())
        .unwrap_or_default();
    info!(peer = %peer, %addr, %reason, "cluster link down");
    let _ = shared.events.send(TransportEvent::Down(peer)).await;
    done.send_replace(true);
}

/// Writes `(peer, kind)`'s queued frames on one stream, opened at the first frame. At shutdown
/// it writes what is queued, finishes the stream and waits (bounded) for the acknowledgement.
async fn write_stream(
    shared: Arc<Shared>,
    peer: NodeId,
    conn: quinn::Connection,
    kind: StreamKind,
) {
    let wake = shared.wake(&peer, kind);
    let mut shutdown = shared.shutdown.subscribe();
    let mut stream: Option<SendStream> = None;
    loop {
        let batch = shared.pop_batch(&peer, kind, BATCH_BYTES);
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
        let bytes = batch.iter().map(|f| f.len() as u64).sum::<u64>();
        if write_frames(&conn, &mut stream, kind, batch).await.is_err() {
            return;
        }
        shared.count(&peer, |c| {
            c.frames_sent += frames;
            c.bytes_sent += bytes;
        });
    }
    if let Some(mut stream) = stream
        && stream.finish().is_ok()
    {
        let _ = tokio::time::timeout(FLUSH_GRACE, stream.stopped()).await;
    }
}

async fn write_frames(
    conn: &quinn::Connection,
    stream: &mut Option<SendStream>,
    kind: StreamKind,
    batch: Vec<Bytes>,
) -> Result<(), ()> {
    if stream.is_none() {
        let mut opened = conn.open_uni().await.map_err(|_| ())?;
        opened.write_all(&kind.header()).await.map_err(|_| ())?;
        *stream = Some(opened);
    }
    let Some(stream) = stream.as_mut() else {
        return Err(());
    };
    let mut chunks = Vec::with_capacity(batch.len() * 2);
    for frame in batch {
        // `send` bounds frames by `max_frame_size`; a frame above 4 GiB (only possible with
        // such a maximum configured) is not representable on the wire and is skipped rather
        // than corrupting the stream.
        let Some(prefix) = frame_prefix(frame.len()) else {
            continue;
        };
        chunks.push(Bytes::copy_from_slice(&prefix));
        chunks.push(frame);
    }
    stream.write_all_chunks(&mut chunks).await.map_err(|_| ())
}

/// Reads one incoming stream: its header, then frames until the stream or the connection
/// ends. A framing violation closes the connection.
async fn read_stream(
    shared: Arc<Shared>,
    peer: NodeId,
    conn: quinn::Connection,
    mut recv: RecvStream,
    seen: Arc<AtomicU8>,
) {
    let mut header = [0u8; STREAM_HEADER_LEN];
    if recv.read_exact(&mut header).await.is_err() {
        return;
    }
    let kind = match StreamKind::parse_header(header) {
        Ok(kind) => kind,
        Err(e) => return protocol_error(&conn, &peer, e),
    };
    let bit = 1u8 << kind.tag();
    if seen.fetch_or(bit, Ordering::Relaxed) & bit != 0 {
        return protocol_error(&conn, &peer, FrameError::DuplicateStream(kind));
    }
    let max = shared.config.max_frame_size;
    loop {
        let mut prefix = [0u8; 4];
        match recv.read_exact(&mut prefix).await {
            Ok(()) => {}
            // The sender finished the stream between frames: a clean end.
            Err(ReadExactError::FinishedEarly(0)) => return,
            Err(ReadExactError::FinishedEarly(_)) => {
                return protocol_error(&conn, &peer, FrameError::Truncated);
            }
            Err(ReadExactError::ReadError(_)) => return,
        }
        let len = match parse_frame_len(prefix, max) {
            Ok(len) => len,
            Err(e) => return protocol_error(&conn, &peer, e),
        };
        let mut payload = vec![0u8; len];
        match recv.read_exact(&mut payload).await {
            Ok(()) => {}
            Err(ReadExactError::FinishedEarly(_)) => {
                return protocol_error(&conn, &peer, FrameError::Truncated);
            }
            Err(ReadExactError::ReadError(_)) => return,
        }
        shared.count(&peer, |c| {
            c.frames_received += 1;
            c.bytes_received += len as u64;
        });
        let event = TransportEvent::Frame {
            from: peer.clone(),
            kind,
            payload: Bytes::from(payload),
        };
        if shared.events.send(event).await.is_err() {
            return;
        }
    }
}

fn protocol_error(conn: &quinn::Connection, peer: &NodeId, error: FrameError) {
    warn!(peer = %peer, addr = %conn.remote_address(), %error, "closing cluster connection");
    conn.close(CloseCode::Protocol.varint(), error.to_string().as_bytes());
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::mpsc::Receiver;

    use super::*;
    use crate::cluster::transport::{Transport, TransportConfig};
    use crate::config::MetadataPlugin;

    const WAIT: Duration = Duration::from_secs(10);

    fn bind(name: &str) -> (Transport, Receiver<TransportEvent>) {
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
        let mut config = TransportConfig::new(NodeId::new(name), "c", MetadataPlugin::VmqSwc);
        config.listen = "127.0.0.1:0".parse().unwrap();
        Transport::bind(config).unwrap()
    }

    async fn until(
        rx: &mut Receiver<TransportEvent>,
        event: TransportEvent,
    ) -> Vec<TransportEvent> {
        let mut skipped = Vec::new();
        loop {
            let next = tokio::time::timeout(WAIT, rx.recv())
                .await
                .unwrap()
                .unwrap();
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
        assert!(
            before_down
                .iter()
                .all(|e| !matches!(e, TransportEvent::Frame { .. }))
        );
        until(&mut b_rx, TransportEvent::Down(a_name)).await;
        let reason = conn
            .close_reason()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            reason.contains("3"),
            "closed with the protocol error code: {reason}"
        );
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
            first
                .write_all(&StreamKind::Metadata.header())
                .await
                .unwrap();
            let mut second = conn.open_uni().await.unwrap();
            second
                .write_all(&StreamKind::Metadata.header())
                .await
                .unwrap();
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
