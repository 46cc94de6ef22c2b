//! The cluster transport: one QUIC endpoint per node, bound on `listener.vmq.clustering`
//! (UDP, default `0.0.0.0:44053`), used both to accept and to dial. It replaces VerneMQ's
//! `vmq_cluster_node` (outgoing links, buffering) and `vmq_cluster_com` (incoming links).
//!
//! # What the layers above get
//!
//! - [`Transport::bind`] returns the transport and the receiver of [`TransportEvent`]s.
//! - [`Transport::connect`] makes the transport keep a connection to a member: it dials, and
//!   redials with a backoff of 100 ms doubling to 1 s, forever, until [`Transport::forget`].
//!   Inbound connections from any node that proves the cookie are accepted too, members or
//!   not: the layer above decides what a non-member may do (e.g. only send a join request).
//! - [`Transport::send`] queues a frame for `(peer, kind)` and returns at once. Frames of one
//!   `(peer, kind)` are written in order on one QUIC stream; kinds do not block each other.
//!   While the peer is unreachable, frames are buffered up to `outgoing_clustering_buffer_size`
//!   bytes, then dropped and counted ([`Transport::stats`]). Buffered frames are sent, in
//!   order, once a connection is up again. A `Metadata` or `Rpc` frame already handed to a
//!   connection that then fails may be lost: the layers above (anti-entropy, RPC timeouts)
//!   recover.
//! - [`Transport::send_publish`] appends a forwarded publish to the peer's lossless log
//!   (`reliable`): numbered, kept until the peer acknowledges it, written again on every new
//!   connection, delivered once and in order. Its [`crate::ack::Ticket`] resolves when the
//!   peer's [`PublishSink`] accepted it. Only frames the caller marks droppable (QoS 0) are
//!   ever refused for lack of room.
//! - Payloads are opaque bytes; the layers above encode versioned enums with postcard.
//! - All events share one bounded channel and frame delivery waits for room in it, so the
//!   consumer should hand frames off quickly (e.g. to one task per [`StreamKind`]); a stalled
//!   consumer stalls every peer's reads (QUIC flow control then slows the senders).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use bytes::Bytes;
//! use vmq_node::cluster::transport::{StreamKind, Transport, TransportConfig, TransportEvent};
//! use vmq_config::MetadataPlugin;
//! use vmq_storage::metadata::NodeId;
//!
//! let node = NodeId::new("vmq1@10.0.0.1");
//! let config = TransportConfig::new(node, "cookie", MetadataPlugin::VmqSwc);
//! let (transport, mut events) = Transport::bind(config)?;
//! let peer = NodeId::new("vmq2@10.0.0.2");
//! transport.connect(peer.clone(), "10.0.0.2:44053".parse()?);
//! // Buffered until the link is up (or dropped and counted beyond the buffer).
//! transport.send(&peer, StreamKind::Metadata, Bytes::from_static(b"postcard bytes"))?;
//! while let Some(event) = events.recv().await {
//!     match event {
//!         TransportEvent::Up(node) => { /* reachable: readiness, replica reachability */ }
//!         TransportEvent::Down(node) => { /* netsplit detection */ }
//!         TransportEvent::Frame { from, kind, payload } => { /* decode, dispatch by kind */ }
//!         TransportEvent::Refused { addr, node, reason } => { /* already logged; metrics */ }
//!     }
//! }
//! transport.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Event ordering
//!
//! Events of one peer are delivered in this order per connection: `Up`, then its frames (in
//! order per kind), then `Down`. A new connection's `Up` comes after the previous
//! connection's `Down`, so `Up`/`Down` strictly alternate per peer. `Refused` events are
//! independent and may be dropped when the channel is full (an unauthenticated sender must not
//! be able to fill memory).
//!
//! # Connection setup
//!
//! 1. QUIC + TLS 1.3 handshake (ALPN `vmq-cluster/1`), see `tls` for the two certificate modes.
//! 2. The dialer opens a bidirectional stream and sends its hello (node name, protocol
//!    version, metadata backend, cookie MAC over exported keying material; see `hello`).
//! 3. The acceptor checks it and answers with its own hello, or closes the connection with
//!    an application error code and the reason as text.
//! 4. The dialer checks the answer (including that it reached the node it meant to dial) and
//!    finishes the stream; that end-of-stream confirms the connection to the acceptor.
//!
//! Nothing a peer sends is delivered before both hellos checked out. Exactly one connection
//! is kept per pair of nodes: when both dial at once, the connection dialed by the node with
//! the smaller name wins (docs/architecture.md "Between nodes"); a newer connection from the same
//! dialer replaces an older one (the dialer saw the old one die, e.g. it restarted).
//!
//! # Failure detection
//!
//! Application heartbeats on the `Control` stream every 200 ms; any frame read from a peer
//! counts as a sign of life. A peer silent for 600 ms is suspected (logged) and nothing else
//! happens: heard again, it is simply alive. Silent for 1.2 s it is reported `Down`
//! (unreachable), well within VerneMQ's ~60 s `net_ticktime` (docs/architecture.md "Netsplit",
//! **beyond**), and its connection is closed: after seconds of loss QUIC has backed its
//! retransmissions off by as long again, while a fresh connection, redialed every 250 ms with a
//! 1 s handshake bound, is up within a fraction of a second of the heal. Nothing queued is
//! discarded: the publish log is written again on the new connection.

mod config;
mod connection;
mod endpoint;
pub(crate) mod frame;
mod handshake;
pub(crate) mod hello;
mod queue;
pub(crate) mod reliable;
mod tls;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use bytes::Bytes;
use thiserror::Error;
use vmq_storage::metadata::NodeId;

pub use config::{
    ClusterTlsFiles, DEFAULT_CONNECTED_QUEUE_LIMIT, DEFAULT_LISTEN, DEFAULT_OUTGOING_BUFFER_SIZE, TransportConfig,
    backend_name,
};
pub use endpoint::Transport;
pub use frame::{DEFAULT_MAX_FRAME_SIZE, FrameError, StreamKind};
pub use hello::PROTOCOL_VERSION;
pub use queue::Counters;
pub use reliable::{Acceptance, PublishSink, RpcSink};
pub use tls::TlsError;

/// What the transport reports, in the order described in the module doc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportEvent {
    /// A connection to this peer is established and authenticated.
    Up(NodeId),
    /// The peer's connection is gone (closed, timed out, replaced or forgotten).
    Down(NodeId),
    /// A frame from a peer, on the stream of `kind`.
    Frame {
        /// The sender.
        from: NodeId,
        /// The stream it came on.
        kind: StreamKind,
        /// The payload, as given to the sender's [`Transport::send`].
        payload: Bytes,
    },
    /// A connection was refused, by this node or by the peer; it was logged at warn level.
    /// A dial loop refused again for the same reason reports it once, until it connects or
    /// is refused for another reason.
    Refused {
        /// The peer's address.
        addr: SocketAddr,
        /// The node name it claimed in its hello, or the name dialed.
        node: Option<NodeId>,
        /// Why.
        reason: RefuseReason,
    },
}

/// Why a connection was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefuseReason {
    /// The hello could not be decoded.
    Malformed(String),
    /// The cookie MAC did not verify: another `distributed_cookie`, or a man in the middle.
    BadCookie,
    /// The peer speaks another protocol version.
    VersionMismatch {
        /// Ours.
        ours: u16,
        /// The peer's.
        theirs: u16,
    },
    /// The peer runs the other metadata backend.
    BackendMismatch {
        /// Ours (`vmq_swc` / `vmq_plumtree`).
        ours: String,
        /// The peer's.
        theirs: String,
    },
    /// A hello carrying this node's own name.
    SelfConnection,
    /// The dialed address answered with another node's name.
    WrongPeer {
        /// The node dialed.
        expected: NodeId,
        /// The node that answered.
        actual: NodeId,
    },
    /// The TLS handshake failed (e.g. a certificate not signed by the cluster CA).
    Tls(String),
    /// The peer refused us; its reason as it sent it.
    ByPeer(String),
}

impl fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RefuseReason::Malformed(why) => write!(f, "malformed hello: {why}"),
            RefuseReason::BadCookie => {
                f.write_str("wrong cookie: the hello's MAC does not verify with this node's distributed_cookie")
            }
            RefuseReason::VersionMismatch { ours, theirs } => {
                write!(f, "cluster protocol version mismatch: this node speaks {ours}, the peer {theirs}")
            }
            RefuseReason::BackendMismatch { ours, theirs } => write!(
                f,
                "metadata backend mismatch: this node runs {ours}, the peer runs {theirs}; \
                 all nodes of a cluster need the same metadata_plugin"
            ),
            RefuseReason::SelfConnection => f.write_str("the peer has this node's own name"),
            RefuseReason::WrongPeer { expected, actual } => {
                write!(f, "dialed {expected} but {actual} answered")
            }
            RefuseReason::Tls(why) => write!(f, "TLS handshake failed: {why}"),
            RefuseReason::ByPeer(why) => write!(f, "refused by the peer: {why}"),
        }
    }
}

/// Why [`Transport::send`] did not queue a frame.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SendError {
    /// The peer is neither [`Transport::connect`]ed nor connected: nobody would deliver it.
    #[error("unknown peer {0}")]
    UnknownPeer(NodeId),
    /// The peer's buffer is full; the frame was dropped and counted.
    #[error("buffer for {peer} full ({pending} of {limit} bytes pending), frame dropped")]
    BufferFull {
        /// The peer.
        peer: NodeId,
        /// Bytes pending.
        pending: usize,
        /// The limit that applied.
        limit: usize,
    },
    /// The payload exceeds the configured maximum frame size.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Payload length.
        len: usize,
        /// `max_frame_size`.
        max: usize,
    },
    /// The transport is shutting down.
    #[error("transport shut down")]
    Shutdown,
    /// The stream is the transport's own (`Control`).
    #[error("the {0} stream is reserved for the transport")]
    Reserved(StreamKind),
}

/// Why [`Transport::bind`] failed.
#[derive(Debug, Error)]
pub enum TransportError {
    /// The UDP socket could not be bound.
    #[error("binding cluster endpoint on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TLS settings are unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// A snapshot of the transport's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Sums over all peers.
    pub total: Counters,
    /// Per peer ever known (connected, connected to us, or buffered for).
    pub peers: BTreeMap<NodeId, PeerStats>,
}

/// One peer's state and counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Frame and byte counters.
    pub counters: Counters,
    /// Whether a connection is established.
    pub connected: bool,
    /// The address dialed, if [`Transport::connect`]ed.
    pub dial_addr: Option<SocketAddr>,
    /// Frames queued, not yet written.
    pub pending_frames: usize,
    /// Payload bytes queued, not yet written.
    pub pending_bytes: usize,
}

/// QUIC application error codes a cluster connection is closed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseCode {
    /// The node shuts down.
    Shutdown = 0,
    /// The hello was refused; the reason text follows.
    Refused = 1,
    /// Another connection between the same pair is kept.
    Duplicate = 2,
    /// A data stream broke the framing rules.
    Protocol = 3,
    /// The peer was forgotten.
    Forgotten = 4,
    /// The peer was silent past the failure detector's bound.
    Silent = 5,
}

impl CloseCode {
    pub(crate) fn varint(self) -> quinn::VarInt {
        quinn::VarInt::from_u32(self as u32)
    }

    pub(crate) fn from_varint(code: quinn::VarInt) -> Option<Self> {
        [Self::Shutdown, Self::Refused, Self::Duplicate, Self::Protocol, Self::Forgotten, Self::Silent]
            .into_iter()
            .find(|c| c.varint() == code)
    }
}
