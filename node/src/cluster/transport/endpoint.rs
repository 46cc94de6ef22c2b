//! [`Transport`]: the endpoint, the peer table and the dial loops.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tracing::{Instrument, debug, info, info_span, warn};
use vmq_storage::metadata::NodeId;

use super::config::TransportConfig;
use super::frame::StreamKind;
use super::handshake::{self, Failure};
use super::queue::{Counters, Full, PeerQueue, ReliableLog};
use super::reliable::{self, ControlFrame, Inbound, PublishSink, RpcSink};
use super::{CloseCode, PeerStats, RefuseReason, SendError, TransportError, TransportEvent, TransportStats, tls};
use crate::ack::{self, Progress, Ticket};

/// Longest wait for queued frames to be written and acknowledged at shutdown.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(2);

/// The node's cluster endpoint. See the module doc for the contract.
///
/// Must be created inside a tokio runtime. Dropping it closes every connection at once (peers
/// see `Down`); [`Transport::shutdown`] first flushes what is queued. It is not `Clone`: share
/// it behind an `Arc`.
pub struct Transport {
    shared: Arc<Shared>,
}

/// State shared by the handle and the tasks.
pub(crate) struct Shared {
    /// This node's name.
    pub(crate) local: NodeId,
    pub(crate) config: TransportConfig,
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) events: mpsc::Sender<TransportEvent>,
    /// `true` once shutdown began; every loop watches it.
    pub(crate) shutdown: watch::Sender<bool>,
    next_conn_id: AtomicU64,
    /// Permits for incoming connections still in their handshake.
    handshakes: Arc<Semaphore>,
    /// A std mutex: held only for short table updates, never across an await.
    peers: Mutex<HashMap<NodeId, Peer>>,
    /// Drawn at bind: tells peers that this node's `Publish` numbering started afresh.
    pub(crate) incarnation: u64,
    /// Where forwarded publishes go; without one they are delivered as events.
    pub(crate) sink: OnceLock<Arc<dyn PublishSink>>,
    /// Where `Rpc` frames go; without one (or for frames it gives back) they are events.
    pub(crate) rpc_sink: OnceLock<Arc<dyn RpcSink>>,
    /// Told at once when a peer becomes reachable or unreachable (before the event).
    reachability: OnceLock<ReachabilityHook>,
}

/// Called with a peer and whether it is reachable now.
type ReachabilityHook = Box<dyn Fn(&NodeId, bool) + Send + Sync>;

/// One peer's entry; kept for the transport's life so counters survive reconnects.
struct Peer {
    /// Where to dial, if [`Transport::connect`]ed.
    dial: Option<SocketAddr>,
    /// Bumped by `connect`/`forget`: a dial loop of an older generation exits.
    generation: watch::Sender<u64>,
    /// A dial to this peer is in progress (for the simultaneous-dial rule).
    dialing: bool,
    /// Incoming connections from this peer past the duplicate check, not yet registered;
    /// the dial loop holds off meanwhile so the two do not race.
    accepting: u32,
    active: Option<Active>,
    queue: PeerQueue,
    /// Forwarded publishes, kept until acknowledged.
    log: ReliableLog,
    /// How far the peer accepted `log`; tickets watch it.
    progress: watch::Sender<Progress>,
    /// The peer's log as this node receives it.
    inbound: Inbound,
    /// When a frame of the peer was last read (the failure detector's input).
    last_heard: Instant,
    counters: Counters,
    /// Wakes the writer of each kind when a frame is queued.
    wake: [Arc<Notify>; StreamKind::ALL.len()],
}

/// The established connection of a peer.
struct Active {
    id: u64,
    conn: quinn::Connection,
    dialed_by_us: bool,
    /// Becomes `true` once its task emitted `Down`.
    done: watch::Receiver<bool>,
}

impl Peer {
    fn new() -> Self {
        Self {
            dial: None,
            generation: watch::channel(0).0,
            dialing: false,
            accepting: 0,
            active: None,
            queue: PeerQueue::default(),
            log: ReliableLog::default(),
            progress: watch::channel(Progress::default()).0,
            inbound: Inbound::default(),
            last_heard: Instant::now(),
            counters: Counters::default(),
            wake: std::array::from_fn(|_| Arc::new(Notify::new())),
        }
    }
}

/// The outcome of [`Shared::register`].
pub(crate) struct Registered {
    pub(crate) id: u64,
    /// The replaced connection's `done`, to wait for before emitting `Up`.
    pub(crate) previous: Option<watch::Receiver<bool>>,
    pub(crate) done: watch::Sender<bool>,
}

impl Transport {
    /// Binds the endpoint on `config.listen` and starts accepting. Returns the transport and
    /// the receiver of its events; dropping the receiver stops frame delivery for good.
    pub fn bind(mut config: TransportConfig) -> Result<(Transport, mpsc::Receiver<TransportEvent>), TransportError> {
        // The wire's length prefix is a u32.
        config.max_frame_size = config.max_frame_size.min(u32::MAX as usize);
        let configs = tls::build(&config)?;
        let mut endpoint = quinn::Endpoint::server(configs.server, config.listen)
            .map_err(|source| TransportError::Bind { addr: config.listen, source })?;
        endpoint.set_default_client_config(configs.client);
        let (events, rx) = mpsc::channel(config.event_capacity.max(1));
        let config_handshakes = config.max_pending_handshakes.max(1);
        let shared = Arc::new(Shared {
            local: config.node.clone(),
            config,
            endpoint,
            events,
            shutdown: watch::channel(false).0,
            next_conn_id: AtomicU64::new(1),
            handshakes: Arc::new(Semaphore::new(config_handshakes)),
            peers: Mutex::new(HashMap::new()),
            incarnation: incarnation(),
            sink: OnceLock::new(),
            rpc_sink: OnceLock::new(),
            reachability: OnceLock::new(),
        });
        tokio::spawn(accept_loop(shared.clone()));
        info!(node = %shared.local, addr = ?shared.endpoint.local_addr().ok(), "cluster endpoint bound");
        Ok((Transport { shared }, rx))
    }

    /// This node's name.
    pub fn local_node(&self) -> &NodeId {
        &self.shared.local
    }

    /// The bound UDP address (the real port when bound on port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.shared.endpoint.local_addr()
    }

    /// Keeps a connection to `peer` at `addr`: dials now and redials whenever it is lost,
    /// until [`Transport::forget`]. Frames sent meanwhile are buffered. Calling it again with
    /// another address redials there; with the same address it does nothing.
    pub fn connect(&self, peer: NodeId, addr: SocketAddr) {
        if peer == self.shared.local || *self.shared.shutdown.borrow() {
            return;
        }
        let generation = {
            let mut peers = self.shared.lock();
            let entry = peers.entry(peer.clone()).or_insert_with(Peer::new);
            if entry.dial == Some(addr) {
                return;
            }
            entry.dial = Some(addr);
            entry.generation.send_modify(|g| *g += 1);
            *entry.generation.borrow()
        };
        let span = info_span!("cluster_dial", peer = %peer);
        tokio::spawn(dial_loop(self.shared.clone(), peer, generation).instrument(span));
    }

    /// Stops keeping a connection to `peer`: stops dialing, closes its connection if any and
    /// discards its queued frames (counted as dropped). It may still connect to us.
    pub fn forget(&self, peer: &NodeId) {
        let mut peers = self.shared.lock();
        let Some(entry) = peers.get_mut(peer) else {
            return;
        };
        entry.dial = None;
        entry.generation.send_modify(|g| *g += 1);
        if let Some(active) = &entry.active {
            active.conn.close(CloseCode::Forgotten.varint(), b"forgotten");
        }
        let (frames, bytes) = entry.queue.clear();
        entry.counters.count_dropped(frames, bytes);
        abandon_log(entry);
    }

    /// Routes forwarded publishes to `sink` (the node's router) instead of the event channel.
    /// Only the first call has an effect.
    pub fn set_publish_sink(&self, sink: Arc<dyn PublishSink>) {
        let _ = self.shared.sink.set(sink);
    }

    /// Routes `Rpc` frames to `sink` (requests and answers between nodes) before the event
    /// channel. Only the first call has an effect.
    pub fn set_rpc_sink(&self, sink: Arc<dyn RpcSink>) {
        let _ = self.shared.rpc_sink.set(sink);
    }

    /// Calls `hook(peer, reachable)` whenever a peer becomes reachable or unreachable, from
    /// the task that decides it, before the matching event is queued: readiness must not wait
    /// behind a backlog of frames. Only the first call has an effect.
    pub fn set_reachability_hook(&self, hook: impl Fn(&NodeId, bool) + Send + Sync + 'static) {
        let _ = self.shared.reachability.set(Box::new(hook));
    }

    /// Appends a forwarded publish to `peer`'s log; the ticket resolves once the peer has
    /// accepted it. A `droppable` frame (QoS 0) is refused and counted when the unacknowledged
    /// log holds `outgoing_clustering_buffer_size` bytes (the peer unreachable) or the
    /// connected limit; any other frame is always taken, and its sender waiting on the ticket
    /// is what bounds the log (backpressure).
    pub fn send_publish(&self, peer: &NodeId, payload: Bytes, droppable: bool) -> Result<Ticket, SendError> {
        let max = self.shared.config.max_frame_size.saturating_sub(reliable::SEQ_LEN);
        self.enqueue(peer, StreamKind::Publish, payload, max, |entry, payload, limit| {
            let seq = entry.log.push(payload, droppable, limit)?;
            Ok(Ticket::new(entry.progress.subscribe(), seq))
        })
    }

    /// What [`Transport::send`] and [`Transport::send_publish`] share: refuses at shutdown,
    /// above `max` bytes and for a peer nobody keeps a link to; `push` adds the frame under the
    /// limit that applies (connected or not); a refused frame is counted as dropped.
    fn enqueue<T>(
        &self,
        peer: &NodeId,
        kind: StreamKind,
        payload: Bytes,
        max: usize,
        push: impl FnOnce(&mut Peer, Bytes, usize) -> Result<T, Full>,
    ) -> Result<T, SendError> {
        if *self.shared.shutdown.borrow() {
            return Err(SendError::Shutdown);
        }
        if payload.len() > max {
            return Err(SendError::TooLarge { len: payload.len(), max });
        }
        let mut peers = self.shared.lock();
        let entry = match peers.get_mut(peer) {
            Some(entry) if entry.dial.is_some() || entry.active.is_some() => entry,
            _ => return Err(SendError::UnknownPeer(peer.clone())),
        };
        let limit = if entry.active.is_some() {
            self.shared.config.connected_queue_limit
        } else {
            self.shared.config.outgoing_buffer_size
        };
        let len = payload.len() as u64;
        match push(entry, payload, limit) {
            Ok(out) => {
                entry.wake[kind.index()].notify_one();
                Ok(out)
            }
            Err(full) => {
                entry.counters.count_dropped(1, len);
                Err(SendError::BufferFull { peer: peer.clone(), pending: full.pending, limit: full.limit })
            }
        }
    }

    /// Unacknowledged entries of `peer`'s publish log numbered above `after`, oldest first,
    /// at most `max` (the outbox persists them while the peer is unreachable).
    pub fn unacked_after(&self, peer: &NodeId, after: u64, max: usize) -> Vec<(u64, Bytes)> {
        self.shared.lock().get(peer).map(|p| p.log.after(after, max)).unwrap_or_default()
    }

    /// Entries of `peer`'s log up to `upto` are durable on this node: their tickets resolve.
    pub fn secure(&self, peer: &NodeId, upto: u64) {
        if let Some(p) = self.shared.lock().get(peer) {
            p.progress.send_if_modified(|p| {
                let changed = upto > p.secured;
                p.secured = p.secured.max(upto);
                changed
            });
        }
    }

    /// Follows how far `peer` accepted this node's publish log.
    pub fn progress(&self, peer: &NodeId) -> Option<watch::Receiver<Progress>> {
        self.shared.lock().get(peer).map(|p| p.progress.subscribe())
    }

    /// Queues `payload` for `peer` on the stream of `kind`; never waits for the network.
    /// `Publish` frames sent this way are droppable (see [`Transport::send_publish`]).
    pub fn send(&self, peer: &NodeId, kind: StreamKind, payload: Bytes) -> Result<(), SendError> {
        match kind {
            StreamKind::Publish => self.send_publish(peer, payload, true).map(drop),
            StreamKind::Control => Err(SendError::Reserved(kind)),
            StreamKind::Metadata | StreamKind::Rpc => {
                let max = self.shared.config.max_frame_size;
                self.enqueue(peer, kind, payload, max, |entry, payload, limit| entry.queue.push(kind, payload, limit))
            }
        }
    }

    /// Whether a connection to `peer` is established.
    pub fn is_connected(&self, peer: &NodeId) -> bool {
        self.shared.lock().get(peer).is_some_and(|p| p.active.is_some())
    }

    /// QUIC connections open on the endpoint, including ones still in their handshake or
    /// closing; for metrics and tests of the one-connection-per-pair rule.
    pub fn open_connections(&self) -> usize {
        self.shared.endpoint.open_connections()
    }

    /// The peers with an established connection, sorted.
    pub fn connected_peers(&self) -> Vec<NodeId> {
        let mut out: Vec<NodeId> =
            self.shared.lock().iter().filter(|(_, p)| p.active.is_some()).map(|(n, _)| n.clone()).collect();
        out.sort();
        out
    }

    /// A snapshot of the counters and queues.
    pub fn stats(&self) -> TransportStats {
        let peers = self.shared.lock();
        let mut stats = TransportStats::default();
        for (node, peer) in peers.iter() {
            stats.total.add(&peer.counters);
            stats.peers.insert(
                node.clone(),
                PeerStats {
                    counters: peer.counters,
                    connected: peer.active.is_some(),
                    dial_addr: peer.dial,
                    pending_frames: peer.queue.pending_frames() + peer.log.len(),
                    pending_bytes: peer.queue.pending_bytes() + peer.log.bytes(),
                },
            );
        }
        stats
    }

    /// Closes every connection gracefully: stops dialing and accepting, writes what is
    /// queued on established connections (bounded by a 2 s grace period), closes them
    /// (peers see `Down`), and waits until the endpoint is idle. Later `send`s fail with
    /// [`SendError::Shutdown`].
    pub async fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
        let dones: Vec<watch::Receiver<bool>> =
            self.shared.lock().values().filter_map(|p| p.active.as_ref().map(|a| a.done.clone())).collect();
        let wait_all = async {
            for mut done in dones {
                until_true(&mut done).await;
            }
        };
        // Connection tasks flush within SHUTDOWN_FLUSH; the margin covers the close itself.
        let _ = tokio::time::timeout(SHUTDOWN_FLUSH * 2, wait_all).await;
        self.shared.endpoint.close(CloseCode::Shutdown.varint(), b"node shutting down");
        let _ = tokio::time::timeout(SHUTDOWN_FLUSH, self.shared.endpoint.wait_idle()).await;
        info!(node = %self.shared.local, "cluster endpoint shut down");
    }
}

#[cfg(test)]
impl Transport {
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
        self.shared.endpoint.close(CloseCode::Shutdown.varint(), b"node stopped");
    }
}

/// An incoming connection between the duplicate check and its registration; see
/// [`Shared::begin_accept`]. Dropping it (also on timeout or failure) releases the dial loop.
pub(crate) struct AcceptGuard {
    shared: Arc<Shared>,
    peer: NodeId,
}

impl Drop for AcceptGuard {
    fn drop(&mut self) {
        if let Some(entry) = self.shared.lock().get_mut(&self.peer) {
            entry.accepting = entry.accepting.saturating_sub(1);
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, HashMap<NodeId, Peer>> {
        // A poisoned lock means a panic while updating the table; the table itself is still
        // consistent (every update is a few field writes), so keep going.
        self.peers.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Decides, before answering its hello, whether an incoming connection from `peer` goes
    /// ahead. It does not when we have the smaller name and are dialing it (or hold our own
    /// connection to it): our connection is the one both sides keep. When it goes ahead, the
    /// returned guard keeps our dial loop from dialing until the connection is registered or
    /// has failed.
    pub(crate) fn begin_accept(self: &Arc<Self>, peer: &NodeId) -> Option<AcceptGuard> {
        let mut peers = self.lock();
        let entry = peers.entry(peer.clone()).or_insert_with(Peer::new);
        let ours_wins = self.local < *peer && (entry.dialing || entry.active.as_ref().is_some_and(|a| a.dialed_by_us));
        if ours_wins {
            return None;
        }
        entry.accepting += 1;
        Some(AcceptGuard { shared: self.clone(), peer: peer.clone() })
    }

    /// Installs `conn` as `peer`'s connection, applying the one-connection-per-pair rule:
    /// a newer connection from the same dialer replaces the old one; otherwise the connection
    /// dialed by the node with the smaller name wins. `None` if `conn` loses (the caller
    /// closes it as a duplicate). No await may separate this call from spawning the
    /// connection's task, or the entry would wait for a `Down` that never comes.
    pub(crate) fn register(&self, peer: &NodeId, conn: &quinn::Connection, dialed_by_us: bool) -> Option<Registered> {
        let mut peers = self.lock();
        let entry = peers.entry(peer.clone()).or_insert_with(Peer::new);
        let we_are_preferred_dialer = self.local < *peer;
        let mut previous = None;
        if let Some(old) = &entry.active {
            let keep_new = old.dialed_by_us == dialed_by_us || dialed_by_us == we_are_preferred_dialer;
            if !keep_new {
                return None;
            }
            // In the dial or accept span, which names the peer.
            debug!(old = old.id, "replacing cluster connection");
            old.conn.close(CloseCode::Duplicate.varint(), b"replaced by a newer connection");
            previous = Some(old.done.clone());
        }
        let id = self.next_conn_id.fetch_add(1, Ordering::Relaxed);
        entry.last_heard = Instant::now();
        let (done, done_rx) = watch::channel(false);
        entry.active = Some(Active { id, conn: conn.clone(), dialed_by_us, done: done_rx });
        Some(Registered { id, previous, done })
    }

    /// Removes connection `id` if it is still `peer`'s; a peer nobody dials loses its queue.
    pub(crate) fn deregister(&self, peer: &NodeId, id: u64) {
        let mut peers = self.lock();
        let Some(entry) = peers.get_mut(peer) else {
            return;
        };
        if entry.active.as_ref().is_some_and(|a| a.id == id) {
            entry.active = None;
            if entry.dial.is_none() {
                let (frames, bytes) = entry.queue.clear();
                entry.counters.count_dropped(frames, bytes);
                abandon_log(entry);
            }
        }
    }

    /// `peer`'s established QUIC connection, for tests that speak raw QUIC on it.
    #[cfg(test)]
    pub(crate) fn connection_of(&self, peer: &NodeId) -> Option<quinn::Connection> {
        self.lock().get(peer).and_then(|p| p.active.as_ref().map(|a| a.conn.clone()))
    }

    /// The next queued frames of `(peer, kind)`, see [`PeerQueue::pop_batch`].
    pub(crate) fn pop_batch(&self, peer: &NodeId, kind: StreamKind, max_bytes: usize) -> Vec<Bytes> {
        self.lock().get_mut(peer).map(|p| p.queue.pop_batch(kind, max_bytes)).unwrap_or_default()
    }

    /// The next unwritten entries of `peer`'s publish log, see [`ReliableLog::next_batch`].
    pub(crate) fn next_publish_batch(&self, peer: &NodeId, max_bytes: usize) -> Vec<(u64, Bytes)> {
        self.lock().get_mut(peer).map(|p| p.log.next_batch(max_bytes)).unwrap_or_default()
    }

    /// A new connection to `peer` writes every unacknowledged publish again.
    pub(crate) fn rewind_publish_log(&self, peer: &NodeId) {
        if let Some(p) = self.lock().get_mut(peer) {
            p.log.rewind();
        }
    }

    /// `peer` acknowledged our publish log up to `upto`.
    pub(crate) fn handle_ack(&self, peer: &NodeId, incarnation: u64, upto: u64, refused: Vec<u64>) {
        if incarnation != self.incarnation {
            return; // an acknowledgement of this node's previous run
        }
        let mut peers = self.lock();
        let Some(entry) = peers.get_mut(peer) else { return };
        entry.log.acknowledge(upto);
        entry.progress.send_if_modified(|p| {
            let advanced = upto > p.accepted;
            p.accepted = p.accepted.max(upto);
            if !refused.is_empty() {
                let mut all: Vec<u64> = p.refused.iter().copied().chain(refused).collect();
                all.sort_unstable();
                all.dedup();
                let keep = all.len().saturating_sub(ack::MAX_REFUSED);
                p.refused = Arc::from(&all[keep..]);
                return true;
            }
            advanced
        });
    }

    /// Frames of `peer`'s publish log that are new (a replay skips what was delivered), and
    /// the highest number already delivered when some were skipped.
    pub(crate) fn admit_publishes(
        &self,
        peer: &NodeId,
        incarnation: u64,
        batch: Vec<(u64, Bytes)>,
    ) -> (Vec<(u64, Bytes)>, Option<u64>) {
        self.lock().entry(peer.clone()).or_insert_with(Peer::new).inbound.admit(incarnation, batch)
    }

    /// The acker of `peer`'s inbound log, started on first use.
    pub(crate) fn acker(self: &Arc<Self>, peer: &NodeId) -> tokio::sync::mpsc::Sender<reliable::Verdict> {
        let mut peers = self.lock();
        let entry = peers.entry(peer.clone()).or_insert_with(Peer::new);
        if let Some(acker) = &entry.inbound.acker {
            return acker.clone();
        }
        let weak = Arc::downgrade(self);
        let to = peer.clone();
        let acker = reliable::spawn_acker(move |frame| {
            if let Some(shared) = weak.upgrade() {
                shared.queue_control(&to, frame);
            }
        });
        entry.inbound.acker = Some(acker.clone());
        acker
    }

    /// Queues a control frame for `peer` (never refused: control frames are small and few).
    pub(crate) fn queue_control(&self, peer: &NodeId, frame: ControlFrame) {
        if let Some(entry) = self.lock().get_mut(peer) {
            let _ = entry.queue.push(StreamKind::Control, frame.encode(), usize::MAX);
            entry.wake[StreamKind::Control.index()].notify_one();
        }
    }

    /// Records that something of `peer` was read: `frames` frames of `bytes` payload bytes.
    pub(crate) fn heard(&self, peer: &NodeId, frames: u64, bytes: u64) {
        if let Some(entry) = self.lock().get_mut(peer) {
            entry.last_heard = Instant::now();
            entry.counters.frames_received += frames;
            entry.counters.bytes_received += bytes;
        }
    }

    /// How long `peer` has been silent.
    pub(crate) fn silence(&self, peer: &NodeId) -> Duration {
        self.lock().get(peer).map_or(Duration::MAX, |p| p.last_heard.elapsed())
    }

    /// Tells the reachability hook, if any.
    pub(crate) fn reachability_changed(&self, peer: &NodeId, reachable: bool) {
        if let Some(hook) = self.reachability.get() {
            hook(peer, reachable);
        }
    }

    /// The notifier of `(peer, kind)`'s writer.
    pub(crate) fn wake(&self, peer: &NodeId, kind: StreamKind) -> Arc<Notify> {
        self.lock().entry(peer.clone()).or_insert_with(Peer::new).wake[kind.index()].clone()
    }

    /// Updates `peer`'s counters.
    pub(crate) fn count(&self, peer: &NodeId, f: impl FnOnce(&mut Counters)) {
        if let Some(entry) = self.lock().get_mut(peer) {
            f(&mut entry.counters);
        }
    }

    /// Logs a refused connection and reports it (dropped if the channel is full).
    pub(crate) fn refused(&self, addr: SocketAddr, node: Option<NodeId>, reason: RefuseReason) {
        let claimed = node.as_ref().map_or("-", NodeId::as_str);
        warn!(%addr, node = claimed, %reason, "cluster connection refused");
        let _ = self.events.try_send(TransportEvent::Refused { addr, node, reason });
    }
}

async fn accept_loop(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let incoming = tokio::select! {
            incoming = shared.endpoint.accept() => incoming,
            _ = until_true(&mut shutdown) => break,
        };
        let Some(incoming) = incoming else { break };
        let Ok(permit) = shared.handshakes.clone().try_acquire_owned() else {
            debug!(addr = %incoming.remote_address(), "too many pending cluster handshakes");
            incoming.refuse();
            continue;
        };
        let task_shared = shared.clone();
        // The peer is known, and recorded, once its hello is read.
        let span = info_span!("cluster_accept", addr = %incoming.remote_address(), peer = tracing::field::Empty);
        tokio::spawn(
            async move {
                handshake::accept(task_shared, incoming).await;
                drop(permit);
            }
            .instrument(span),
        );
    }
}

/// Keeps `peer` connected while its generation is current. Only one loop per peer runs past
/// the generation check, because `connect` bumps the generation before spawning a new one.
async fn dial_loop(shared: Arc<Shared>, peer: NodeId, generation: u64) {
    let Some(mut generation_rx) = shared.lock().get(&peer).map(|p| p.generation.subscribe()) else {
        return;
    };
    let mut shutdown = shared.shutdown.subscribe();
    let min = shared.config.reconnect_min;
    let mut backoff = min;
    // A refusal repeated on every redial is reported once, until something else happens.
    let mut last_refusal: Option<RefuseReason> = None;
    loop {
        enum Next {
            Wait(watch::Receiver<bool>),
            Dial(SocketAddr),
            Backoff,
        }
        let next = {
            let mut peers = shared.lock();
            let Some(entry) = peers.get_mut(&peer) else {
                return;
            };
            match (entry.dial, &entry.active) {
                (Some(_), _) if *entry.generation.borrow() != generation => return,
                (None, _) => return,
                (Some(_), Some(active)) => Next::Wait(active.done.clone()),
                (Some(_), None) if entry.accepting > 0 => Next::Backoff,
                (Some(addr), None) => {
                    entry.dialing = true;
                    Next::Dial(addr)
                }
            }
        };
        match next {
            Next::Backoff => {}
            Next::Wait(mut done) => {
                tokio::select! {
                    _ = until_true(&mut done) => {}
                    _ = generation_rx.changed() => continue,
                    _ = until_true(&mut shutdown) => return,
                }
                // The link was up: start over with the shortest delay.
                backoff = min;
            }
            Next::Dial(addr) => {
                let dial = tokio::time::timeout(shared.config.handshake_timeout, handshake::dial(&shared, &peer, addr));
                let result = tokio::select! {
                    result = dial => Some(result),
                    _ = generation_rx.changed() => None,
                    _ = until_true(&mut shutdown) => None,
                };
                if let Some(entry) = shared.lock().get_mut(&peer) {
                    entry.dialing = false;
                }
                match result {
                    None => continue,
                    // The connection's task runs; the next round waits for its end.
                    Some(Ok(Ok(()))) => {
                        last_refusal = None;
                        continue;
                    }
                    Some(Ok(Err(Failure::Refused { node, reason }))) => {
                        if last_refusal.as_ref() == Some(&reason) {
                            debug!(%addr, %reason, "cluster dial refused again");
                        } else {
                            last_refusal = Some(reason.clone());
                            shared.refused(addr, node.or_else(|| Some(peer.clone())), reason);
                        }
                    }
                    Some(Ok(Err(Failure::Duplicate))) => {
                        debug!(%addr, "kept the other connection");
                    }
                    Some(Ok(Err(Failure::Lost(why)))) => {
                        debug!(%addr, %why, "cluster dial failed");
                    }
                    Some(Err(_elapsed)) => {
                        debug!(%addr, "cluster dial timed out");
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = generation_rx.changed() => {}
            _ = until_true(&mut shutdown) => return,
        }
        backoff = (backoff * 2).min(shared.config.reconnect_max);
    }
}

/// Gives up `entry`'s publish log: its frames are dropped and counted, and tickets still
/// waiting on them fail.
fn abandon_log(entry: &mut Peer) {
    let (frames, bytes, highest) = entry.log.clear();
    entry.counters.count_dropped(frames, bytes);
    entry.progress.send_if_modified(|p| {
        let changed = highest > p.abandoned;
        p.abandoned = p.abandoned.max(highest);
        changed
    });
}

/// A number that differs between runs of a node (and between transports of one process).
fn incarnation() -> u64 {
    static INSTANCES: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let instance = INSTANCES.fetch_add(1, Ordering::Relaxed);
    (nanos ^ (u64::from(std::process::id()) << 32) ^ instance.wrapping_mul(0x9E37_79B9_7F4A_7C15)).max(1)
}

/// Resolves once the flag is `true` (or its sender is gone). Returns nothing, so no watch
/// guard is held across the caller's awaits.
pub(crate) async fn until_true(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|set| *set).await;
}
