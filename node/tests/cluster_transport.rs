//! The cluster transport over real QUIC on 127.0.0.1: full mesh, simultaneous dialing,
//! cookie and backend refusals, failure detection, buffering, oversized frames and the
//! cluster-CA certificate mode. Every wait is on an event, bounded by a generous timeout.

// Helpers outside `#[test]` functions fail the test on setup errors, like the tests do.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::mpsc::Receiver;
use vmq_config::MetadataPlugin;
use vmq_node::cluster::transport::{
    ClusterTlsFiles, RefuseReason, SendError, StreamKind, Transport, TransportConfig, TransportEvent,
};
use vmq_storage::metadata::NodeId;

/// Upper bound for anything to happen; never a speed assertion.
const WAIT: Duration = Duration::from_secs(10);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "vmq_node=debug".into()),
        )
        .with_test_writer()
        .try_init();
}

fn config(name: &str) -> TransportConfig {
    let mut config = TransportConfig::new(NodeId::new(name), "secret", MetadataPlugin::VmqSwc);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config
}

struct Node {
    transport: Transport,
    events: Receiver<TransportEvent>,
    name: NodeId,
    addr: SocketAddr,
}

fn start(config: TransportConfig) -> Node {
    let name = config.node.clone();
    let (transport, events) = Transport::bind(config).unwrap();
    let addr = transport.local_addr().unwrap();
    Node { transport, events, name, addr }
}

/// Binds `config` on an address a previous transport just released; the OS may need a
/// moment to free the UDP port after the old endpoint's task ends.
async fn restart(config: TransportConfig) -> Node {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match Transport::bind(config.clone()) {
            Ok((transport, events)) => {
                let addr = transport.local_addr().unwrap();
                return Node { transport, events, name: config.node.clone(), addr };
            }
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(%e, "address not free yet");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("rebinding {}: {e}", config.listen),
        }
    }
}

/// The kinds the layers above send on (`Control` is the transport's own).
const DATA_KINDS: [StreamKind; 3] = [StreamKind::Metadata, StreamKind::Publish, StreamKind::Rpc];

async fn next(events: &mut Receiver<TransportEvent>) -> TransportEvent {
    tokio::time::timeout(WAIT, events.recv()).await.expect("no transport event in time").expect("event channel closed")
}

/// Skips events until one matches; returns it and the events skipped.
async fn until(
    events: &mut Receiver<TransportEvent>,
    mut matches: impl FnMut(&TransportEvent) -> bool,
) -> (TransportEvent, Vec<TransportEvent>) {
    let mut skipped = Vec::new();
    loop {
        let event = next(events).await;
        if matches(&event) {
            return (event, skipped);
        }
        skipped.push(event);
    }
}

async fn until_up(node: &mut Node, peer: &NodeId) -> Vec<TransportEvent> {
    until(&mut node.events, |e| *e == TransportEvent::Up(peer.clone())).await.1
}

async fn until_down(node: &mut Node, peer: &NodeId) -> Vec<TransportEvent> {
    until(&mut node.events, |e| *e == TransportEvent::Down(peer.clone())).await.1
}

async fn until_refused(node: &mut Node) -> (Option<NodeId>, RefuseReason) {
    match until(&mut node.events, |e| matches!(e, TransportEvent::Refused { .. })).await.0 {
        TransportEvent::Refused { node, reason, .. } => (node, reason),
        _ => unreachable!("matched Refused"),
    }
}

/// Collects `n` frames of `(from, kind)`, failing on a `Down` of `from` on the way.
async fn frames(node: &mut Node, from: &NodeId, kind: StreamKind, n: usize) -> Vec<Bytes> {
    let mut out = Vec::new();
    while out.len() < n {
        match next(&mut node.events).await {
            TransportEvent::Frame { from: f, kind: k, payload } if f == *from && k == kind => {
                out.push(payload);
            }
            TransportEvent::Down(peer) if peer == *from => {
                panic!("{} lost {from} after {} frames", node.name, out.len())
            }
            _ => {}
        }
    }
    out
}

fn numbered(i: usize) -> Bytes {
    Bytes::from(format!("frame-{i:05}"))
}

fn is_frame_from(event: &TransportEvent, peer: &NodeId) -> bool {
    matches!(event, TransportEvent::Frame { from, .. } if from == peer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_mesh_exchanges_frames_in_order_on_every_kind() {
    init_tracing();
    let mut nodes = vec![start(config("a@h")), start(config("b@h")), start(config("c@h"))];
    let addrs: Vec<(NodeId, SocketAddr)> = nodes.iter().map(|n| (n.name.clone(), n.addr)).collect();
    for node in &nodes {
        for (name, addr) in &addrs {
            node.transport.connect(name.clone(), *addr);
        }
    }
    for node in &mut nodes {
        let mut up = std::collections::BTreeSet::new();
        while up.len() < 2 {
            match next(&mut node.events).await {
                TransportEvent::Up(peer) => assert!(up.insert(peer), "{}: Up twice", node.name),
                TransportEvent::Down(peer) => panic!("{}: {peer} went down", node.name),
                _ => {}
            }
        }
    }
    const N: usize = 200;
    for node in &nodes {
        for (peer, _) in &addrs {
            if *peer == node.name {
                continue;
            }
            for i in 0..N {
                for kind in DATA_KINDS {
                    node.transport.send(peer, kind, numbered(i)).unwrap();
                }
            }
        }
    }
    let expected: Vec<Bytes> = (0..N).map(numbered).collect();
    for node in &mut nodes {
        let mut got = std::collections::BTreeMap::new();
        while got.values().map(Vec::len).sum::<usize>() < 2 * 3 * N {
            match next(&mut node.events).await {
                TransportEvent::Frame { from, kind, payload } => {
                    got.entry((from, kind)).or_insert_with(Vec::new).push(payload);
                }
                TransportEvent::Down(peer) => panic!("{} lost {peer}", node.name),
                _ => {}
            }
        }
        assert_eq!(got.len(), 2 * 3, "{}: frames from two peers on three kinds", node.name);
        for ((from, kind), frames) in got {
            assert_eq!(frames, expected, "{} from {from} on {kind}", node.name);
        }
        assert_eq!(node.transport.connected_peers().len(), 2);
        let stats = node.transport.stats();
        assert_eq!(stats.total.frames_received, (2 * 3 * N) as u64);
        assert_eq!(stats.total.frames_dropped, 0);
    }
    for node in &nodes {
        node.transport.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_on_one_stream_arrives_complete_and_in_order() {
    init_tracing();
    let mut a = start(config("a@h"));
    let mut b = start(config("b@h"));
    a.transport.connect(b.name.clone(), b.addr);
    until_up(&mut a, &b.name).await;
    until_up(&mut b, &a.name).await;
    const FRAMES: usize = 10_000;
    let payload = |i: usize| {
        let mut frame = vec![0u8; 1024];
        frame[..8].copy_from_slice(&(i as u64).to_be_bytes());
        Bytes::from(frame)
    };
    let started = tokio::time::Instant::now();
    for i in 0..FRAMES {
        a.transport.send(&b.name, StreamKind::Publish, payload(i)).unwrap();
    }
    let got = frames(&mut b, &a.name, StreamKind::Publish, FRAMES).await;
    let elapsed = started.elapsed();
    assert!(got.iter().enumerate().all(|(i, f)| *f == payload(i)));
    tracing::info!(
        ?elapsed,
        frames_per_s = (FRAMES as f64 / elapsed.as_secs_f64()) as u64,
        "1 KiB frames on one stream"
    );
    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_dialing_leaves_one_connection_per_pair() {
    init_tracing();
    for round in 0..5 {
        let mut a = start(config("a@h"));
        let mut b = start(config("b@h"));
        // Both dial at once: the connection dialed by a (the smaller name) must be the only
        // one kept.
        a.transport.connect(b.name.clone(), b.addr);
        b.transport.connect(a.name.clone(), a.addr);
        until_up(&mut a, &b.name).await;
        until_up(&mut b, &a.name).await;

        // Frames sent now arrive, in order, and neither side saw its link go down: no
        // connection was replaced after `Up`.
        for i in 0..50 {
            a.transport.send(&b.name, StreamKind::Publish, numbered(i)).unwrap();
            b.transport.send(&a.name, StreamKind::Publish, numbered(i)).unwrap();
        }
        let expected: Vec<Bytes> = (0..50).map(numbered).collect();
        assert_eq!(frames(&mut b, &a.name, StreamKind::Publish, 50).await, expected, "round {round}");
        assert_eq!(frames(&mut a, &b.name, StreamKind::Publish, 50).await, expected, "round {round}");

        // Refused duplicates close at once; each endpoint ends with exactly one connection.
        let deadline = tokio::time::Instant::now() + WAIT;
        while a.transport.open_connections() != 1 || b.transport.open_connections() != 1 {
            assert!(tokio::time::Instant::now() < deadline, "duplicate connections linger");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(a.transport.is_connected(&b.name) && b.transport.is_connected(&a.name));
        a.transport.shutdown().await;
        b.transport.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_cookie_is_refused_and_nothing_it_sent_is_delivered() {
    init_tracing();
    let mut a = start(config("a@h"));
    let mut mallory_config = config("mallory@h");
    mallory_config.cookie = "guessed".into();
    let mut mallory = start(mallory_config);
    mallory.transport.connect(a.name.clone(), a.addr);
    for kind in DATA_KINDS {
        mallory.transport.send(&a.name, kind, Bytes::from_static(b"intrusion")).unwrap();
    }

    let (claimed, reason) = until_refused(&mut a).await;
    assert_eq!(claimed, Some(mallory.name.clone()));
    assert_eq!(reason, RefuseReason::BadCookie);
    let (_, reason) = until_refused(&mut mallory).await;
    assert!(matches!(&reason, RefuseReason::ByPeer(text) if text.contains("wrong cookie")), "{reason}");

    // A legitimate node's frame marks a point after mallory's attempts; before it, a must
    // have seen neither `Up(mallory)` nor any of mallory's frames.
    let mut b = start(config("b@h"));
    b.transport.connect(a.name.clone(), a.addr);
    until_up(&mut b, &a.name).await;
    b.transport.send(&a.name, StreamKind::Rpc, Bytes::from_static(b"marker")).unwrap();
    let (_, before) = until(&mut a.events, |e| is_frame_from(e, &b.name)).await;
    assert!(
        before.iter().all(|e| !is_frame_from(e, &mallory.name) && *e != TransportEvent::Up(mallory.name.clone())),
        "{before:?}"
    );
    assert_eq!(a.transport.stats().peers.get(&mallory.name).map(|p| p.counters.frames_received).unwrap_or(0), 0);
    assert!(!mallory.transport.is_connected(&a.name));
    a.transport.shutdown().await;
    b.transport.shutdown().await;
    mallory.transport.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatched_backend_is_refused_naming_both() {
    init_tracing();
    let mut a = start(config("a@h"));
    let mut p_config = config("p@h");
    p_config.backend = MetadataPlugin::VmqPlumtree;
    let mut p = start(p_config);
    p.transport.connect(a.name.clone(), a.addr);

    let (claimed, reason) = until_refused(&mut a).await;
    assert_eq!(claimed, Some(p.name.clone()));
    assert_eq!(reason, RefuseReason::BackendMismatch { ours: "vmq_swc".into(), theirs: "vmq_plumtree".into() });
    let text = reason.to_string();
    assert!(text.contains("vmq_swc") && text.contains("vmq_plumtree"), "{text}");
    // The refused side learns why, in the same words.
    let (_, reason) = until_refused(&mut p).await;
    let text = reason.to_string();
    assert!(text.contains("vmq_swc") && text.contains("vmq_plumtree"), "{text}");
    a.transport.shutdown().await;
    p.transport.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialing_an_address_where_another_node_answers_is_refused() {
    init_tracing();
    let mut a = start(config("a@h"));
    let mut b = start(config("b@h"));
    let expected = NodeId::new("x@h");
    a.transport.connect(expected.clone(), b.addr);
    let (_, reason) = until_refused(&mut a).await;
    assert_eq!(reason, RefuseReason::WrongPeer { expected, actual: b.name.clone() });
    // b accepted a's hello, then saw a close the connection before confirming it: no `Up`.
    let (_, reason) = until_refused(&mut b).await;
    assert!(matches!(&reason, RefuseReason::ByPeer(text) if text.contains("x@h")), "{reason}");
    assert!(!b.transport.is_connected(&a.name));
    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_peer_is_reported_down_and_up_again_when_it_returns() {
    init_tracing();
    let mut a = start(config("a@h"));
    let mut b = start(config("b@h"));
    let b_config = TransportConfig { listen: b.addr, ..config("b@h") };
    a.transport.connect(b.name.clone(), b.addr);
    until_up(&mut a, &b.name).await;
    until_up(&mut b, &a.name).await;

    // Graceful shutdown.
    b.transport.shutdown().await;
    until_down(&mut a, &b.name).await;
    assert!(!a.transport.is_connected(&b.name));
    drop(b);

    let mut b = restart(b_config.clone()).await;
    until_up(&mut a, &b.name).await;
    until_up(&mut b, &a.name).await;
    b.transport.send(&a.name, StreamKind::Metadata, Bytes::from_static(b"back")).unwrap();
    assert_eq!(frames(&mut a, &b.name, StreamKind::Metadata, 1).await, vec![Bytes::from_static(b"back")]);

    // Dropped without shutdown.
    drop(b);
    until_down(&mut a, &b_config.node).await;
    let mut b = restart(b_config).await;
    until_up(&mut a, &b.name).await;
    until_up(&mut b, &a.name).await;
    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

/// A UDP relay that can stop forwarding: packets between the client and `target` vanish
/// while cut, as when a network link fails without closing anything.
struct Relay {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
}

async fn relay(target: SocketAddr) -> Relay {
    let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = socket.local_addr().unwrap();
    let cut = Arc::new(AtomicBool::new(false));
    let cut_flag = cut.clone();
    tokio::spawn(async move {
        let mut client: Option<SocketAddr> = None;
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            if cut_flag.load(Ordering::Relaxed) {
                continue;
            }
            let to = if from == target {
                match client {
                    Some(client) => client,
                    None => continue,
                }
            } else {
                client = Some(from);
                target
            };
            let _ = socket.send_to(&buf[..n], to).await;
        }
    });
    Relay { addr, cut }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_peer_is_reported_down_by_heartbeats_and_up_when_heard_again() {
    init_tracing();
    let mut a = start(config("a@h"));
    let mut b = start(config("b@h"));
    let link = relay(b.addr).await;
    a.transport.connect(b.name.clone(), link.addr);
    until_up(&mut a, &b.name).await;
    until_up(&mut b, &a.name).await;

    // Packets stop in both directions; nothing is closed. Heartbeats go unanswered and the
    // failure detector (1.2 s of silence by default) reports the peer down on both sides.
    link.cut.store(true, Ordering::Relaxed);
    let started = tokio::time::Instant::now();
    until_down(&mut a, &b.name).await;
    until_down(&mut b, &a.name).await;
    tracing::info!(elapsed = ?started.elapsed(), "silent peer detected");

    // The link heals: the peers hear each other again (on the same connection, or a new one).
    link.cut.store(false, Ordering::Relaxed);
    until_up(&mut a, &b.name).await;
    until_up(&mut b, &a.name).await;
    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_are_buffered_while_unreachable_and_dropped_beyond_the_buffer() {
    init_tracing();
    let mut a_config = config("a@h");
    a_config.outgoing_buffer_size = 1000;
    let mut a = start(a_config);
    let b = start(config("b@h"));
    let b_config = TransportConfig { listen: b.addr, ..config("b@h") };
    let b_name = b.name.clone();
    // b is gone before a ever reaches it.
    b.transport.shutdown().await;
    drop(b);
    a.transport.connect(b_name.clone(), b_config.listen);

    // 100-byte frames: ten fill the 1000-byte buffer, the rest are dropped and counted.
    let payload = |i: usize| Bytes::from(format!("{i:0100}"));
    let mut accepted = 0;
    for i in 0..25 {
        match a.transport.send(&b_name, StreamKind::Publish, payload(i)) {
            Ok(()) => accepted += 1,
            Err(SendError::BufferFull { limit: 1000, .. }) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(accepted, 10);
    let stats = a.transport.stats();
    let peer = &stats.peers[&b_name];
    assert_eq!((peer.counters.frames_dropped, peer.counters.bytes_dropped), (15, 1500));
    assert_eq!((peer.pending_frames, peer.pending_bytes), (10, 1000));
    assert!(!peer.connected);

    let mut b = restart(b_config).await;
    until_up(&mut a, &b_name).await;
    let expected: Vec<Bytes> = (0..10).map(payload).collect();
    assert_eq!(frames(&mut b, &a.name, StreamKind::Publish, 10).await, expected);
    // Publish frames stay pending until b acknowledges them.
    let deadline = tokio::time::Instant::now() + WAIT;
    while a.transport.stats().peers[&b_name].pending_frames > 0 {
        assert!(tokio::time::Instant::now() < deadline, "b never acknowledged");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = a.transport.stats();
    assert_eq!(stats.total.frames_sent, 10);
    assert_eq!(stats.total.frames_dropped, 15);
    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_closes_the_connection() {
    init_tracing();
    let mut a = start(config("a@h"));
    let mut b_config = config("b@h");
    b_config.max_frame_size = 1024;
    let mut b = start(b_config);
    a.transport.connect(b.name.clone(), b.addr);
    until_up(&mut a, &b.name).await;
    until_up(&mut b, &a.name).await;

    a.transport.send(&b.name, StreamKind::Rpc, Bytes::from_static(b"small")).unwrap();
    a.transport.send(&b.name, StreamKind::Rpc, Bytes::from(vec![7u8; 2048])).unwrap();
    let (first, _) = until(&mut b.events, |e| is_frame_from(e, &a.name)).await;
    assert!(matches!(first, TransportEvent::Frame { ref payload, .. } if payload == "small"));
    // The next event of a is its connection closing, without the oversized frame.
    let (_, between) = until(&mut b.events, |e| *e == TransportEvent::Down(a.name.clone())).await;
    assert!(between.iter().all(|e| !is_frame_from(e, &a.name)), "{between:?}");
    until_down(&mut a, &b.name).await;
    assert_eq!(b.transport.stats().peers[&a.name].counters.frames_received, 1);

    // Sending is bounded locally too.
    assert_eq!(
        b.transport.send(&a.name, StreamKind::Rpc, Bytes::from(vec![0u8; 1025])),
        Err(SendError::TooLarge { len: 1025, max: 1024 })
    );
    a.transport.shutdown().await;
    b.transport.shutdown().await;
}

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA (`ca.pem`) and, per name, `<name>.pem` / `<name>.key` signed by it.
    fn new(names: &[&str]) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "vmq test cluster CA");
        ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        for name in names {
            let mut params = rcgen::CertificateParams::new(vec![format!("{name}.cluster")]).unwrap();
            params.distinguished_name.push(rcgen::DnType::CommonName, *name);
            params.extended_key_usages =
                vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &*ca).unwrap();
            std::fs::write(dir.path().join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.path().join(format!("{name}.key")), key.serialize_pem()).unwrap();
        }
        Pki { dir }
    }

    fn files(&self, name: &str, ca_of: &Pki) -> ClusterTlsFiles {
        ClusterTlsFiles {
            cafile: ca_of.dir.path().join("ca.pem"),
            certfile: self.dir.path().join(format!("{name}.pem")),
            keyfile: self.dir.path().join(format!("{name}.key")),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_mode_connects_members_of_the_cluster_ca_only() {
    init_tracing();
    let cluster = Pki::new(&["a", "b"]);
    let rogue = Pki::new(&["r"]);
    let with_tls = |name: &str, files: ClusterTlsFiles| {
        let mut c = config(name);
        c.tls = Some(files);
        c
    };
    let mut a = start(with_tls("a@h", cluster.files("a", &cluster)));
    let mut b = start(with_tls("b@h", cluster.files("b", &cluster)));
    a.transport.connect(b.name.clone(), b.addr);
    until_up(&mut a, &b.name).await;
    until_up(&mut b, &a.name).await;
    a.transport.send(&b.name, StreamKind::Rpc, Bytes::from_static(b"over tls")).unwrap();
    assert_eq!(frames(&mut b, &a.name, StreamKind::Rpc, 1).await, vec![Bytes::from_static(b"over tls")]);

    // r trusts the cluster CA, so it accepts a's certificate, but its own certificate is
    // signed by another CA: a refuses it in the TLS handshake, before any hello.
    let mut r = start(with_tls("r@h", rogue.files("r", &cluster)));
    r.transport.connect(a.name.clone(), a.addr);
    let (_, reason) = until_refused(&mut a).await;
    assert!(matches!(reason, RefuseReason::Tls(_)), "{reason}");
    let (_, reason) = until_refused(&mut r).await;
    assert!(matches!(reason, RefuseReason::Tls(_) | RefuseReason::ByPeer(_)), "{reason}");

    // A node without certificates cannot join either: it presents none.
    let mut plain = start(config("plain@h"));
    plain.transport.connect(a.name.clone(), a.addr);
    let (_, reason) = until_refused(&mut a).await;
    assert!(matches!(reason, RefuseReason::Tls(_)), "{reason}");

    // Neither reached a.
    b.transport.send(&a.name, StreamKind::Rpc, Bytes::from_static(b"marker")).unwrap();
    let (_, before) = until(&mut a.events, |e| is_frame_from(e, &b.name)).await;
    assert!(before.iter().all(|e| !matches!(e, TransportEvent::Up(n) if *n != b.name)), "{before:?}");
    let _ = plain.events.try_recv();
    for node in [&a, &b, &r, &plain] {
        node.transport.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_frames_lost_with_a_connection_are_replayed_once_in_order() {
    init_tracing();
    let quick = |name: &str| {
        let mut c = config(name);
        c.idle_timeout = Duration::from_millis(1500);
        c
    };
    let mut a = start(quick("a@h"));
    let mut b = start(quick("b@h"));
    let link = relay(b.addr).await;
    a.transport.connect(b.name.clone(), link.addr);
    until_up(&mut a, &b.name).await;
    until_up(&mut b, &a.name).await;
    for i in 0..50 {
        let _ = a.transport.send_publish(&b.name, numbered(i), false).unwrap();
    }
    assert_eq!(frames(&mut b, &a.name, StreamKind::Publish, 50).await, (0..50).map(numbered).collect::<Vec<_>>());
    // Written into a connection whose packets are all lost, which then times out.
    link.cut.store(true, Ordering::Relaxed);
    let tickets: Vec<_> = (50..100).map(|i| a.transport.send_publish(&b.name, numbered(i), false).unwrap()).collect();
    let deadline = tokio::time::Instant::now() + WAIT;
    while a.transport.is_connected(&b.name) {
        assert!(tokio::time::Instant::now() < deadline, "the cut connection never timed out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    link.cut.store(false, Ordering::Relaxed);
    // Exactly the frames after the ones delivered, once, in order, on the new connection.
    let mut rest = Vec::new();
    while rest.len() < 50 {
        if let TransportEvent::Frame { kind: StreamKind::Publish, payload, .. } = next(&mut b.events).await {
            rest.push(payload)
        }
    }
    assert_eq!(rest, (50..100).map(numbered).collect::<Vec<_>>());
    for t in tickets {
        assert_eq!(tokio::time::timeout(WAIT, t.wait()).await.expect("acknowledged"), Ok(()));
    }
    a.transport.shutdown().await;
    b.transport.shutdown().await;
}
