//! Opening a cluster connection: TLS, the hello exchange and the one-connection-per-pair rule,
//! from the dialer's side ([`dial`]) and the acceptor's ([`accept`]). The message order is in
//! the parent module's doc.

use std::net::SocketAddr;
use std::sync::Arc;

use quinn::{ConnectionError, ReadExactError, ReadToEndError, RecvStream};
use tracing::debug;
use vmq_storage::metadata::NodeId;

use super::connection::{self, Established};
use super::endpoint::Shared;
use super::hello::{self, EXPORTED_LEN, EXPORTER_LABEL, Hello, PROTOCOL_VERSION, Role};
use super::{CloseCode, RefuseReason, tls};

/// Why a connection attempt did not end in an established connection.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Refused (by us or the peer), logged and reported as `Refused`.
    Refused {
        /// The node name claimed or dialed.
        node: Option<NodeId>,
        /// Why.
        reason: RefuseReason,
    },
    /// Another connection between the same pair is kept; not an error.
    Duplicate,
    /// The network failed (unreachable, reset, timed out); worth a debug line only.
    Lost(String),
}

impl Failure {
    fn refused(node: Option<NodeId>, reason: RefuseReason) -> Self {
        Failure::Refused { node, reason }
    }
}

/// Dials `peer` at `addr`. On success the connection's task is running.
pub(crate) async fn dial(shared: &Arc<Shared>, peer: &NodeId, addr: SocketAddr) -> Result<(), Failure> {
    let connecting = shared.endpoint.connect(addr, tls::SERVER_NAME).map_err(|e| Failure::Lost(e.to_string()))?;
    let conn = connecting.await.map_err(|e| connection_failure(e, Some(peer)))?;
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| connection_failure(e, Some(peer)))?;
    let exported = export(&conn)?;
    let ours = own_hello(shared, Role::Dialer, &exported)?;
    send.write_all(&ours).await.map_err(|e| Failure::Lost(e.to_string()))?;

    let body = read_hello(&mut recv, Some(peer)).await?;
    let theirs = match check_hello(shared, &body, Role::Acceptor, &exported) {
        Ok(hello) if hello.node != *peer => Err(Failure::refused(
            Some(hello.node.clone()),
            RefuseReason::WrongPeer { expected: peer.clone(), actual: hello.node },
        )),
        other => other,
    };
    let theirs = theirs.inspect_err(|failure| refuse(&conn, failure))?;

    let Some(registered) = shared.register(peer, &conn, true) else {
        conn.close(CloseCode::Duplicate.varint(), b"duplicate connection");
        return Err(Failure::Duplicate);
    };
    // End of the hello stream confirms the connection to the acceptor. A failure here means
    // the connection is already gone, which its task reports as `Down`.
    let _ = send.finish();
    debug!(%addr, "cluster connection dialed");
    connection::spawn(
        shared.clone(),
        Established {
            peer: theirs.node,
            conn,
            id: registered.id,
            previous: registered.previous,
            done: registered.done,
        },
    );
    Ok(())
}

/// Handles one incoming connection to its end, refusing it or running it.
pub(crate) async fn accept(shared: Arc<Shared>, incoming: quinn::Incoming) {
    let addr = incoming.remote_address();
    let result = tokio::time::timeout(shared.config.handshake_timeout, accept_inner(&shared, incoming)).await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(Failure::Refused { node, reason })) => shared.refused(addr, node, reason),
        Ok(Err(Failure::Duplicate)) => debug!("refused a duplicate cluster connection"),
        Ok(Err(Failure::Lost(why))) => debug!(%why, "incoming cluster connection failed"),
        Err(_elapsed) => debug!("incoming cluster handshake timed out"),
    }
}

async fn accept_inner(shared: &Arc<Shared>, incoming: quinn::Incoming) -> Result<(), Failure> {
    if shared.is_shutting_down() {
        incoming.refuse();
        return Err(Failure::Lost("shutting down".into()));
    }
    let conn = incoming.await.map_err(|e| connection_failure(e, None))?;
    let (mut send, mut recv) = conn.accept_bi().await.map_err(|e| connection_failure(e, None))?;
    let exported = export(&conn)?;
    let body = read_hello(&mut recv, None).await?;
    let theirs = check_hello(shared, &body, Role::Dialer, &exported).inspect_err(|failure| refuse(&conn, failure))?;
    let peer = theirs.node;
    tracing::Span::current().record("peer", tracing::field::display(&peer));
    let Some(_accepting) = shared.begin_accept(&peer) else {
        conn.close(CloseCode::Duplicate.varint(), b"duplicate connection");
        return Err(Failure::Duplicate);
    };
    let ours = own_hello(shared, Role::Acceptor, &exported)?;
    send.write_all(&ours).await.map_err(|e| Failure::Lost(e.to_string()))?;
    // Nothing else goes on this stream from our side.
    let _ = send.finish();
    // The dialer finishes the stream once it accepted our hello: until then nothing of this
    // connection is delivered.
    match recv.read_to_end(0).await {
        Ok(_) => {}
        Err(ReadToEndError::TooLong) => {
            let failure = Failure::refused(Some(peer.clone()), RefuseReason::Malformed("bytes after the hello".into()));
            refuse(&conn, &failure);
            return Err(failure);
        }
        Err(ReadToEndError::Read(e)) => return Err(read_failure(e, Some(&peer))),
    }
    let Some(registered) = shared.register(&peer, &conn, false) else {
        conn.close(CloseCode::Duplicate.varint(), b"duplicate connection");
        return Err(Failure::Duplicate);
    };
    debug!("cluster connection accepted");
    connection::spawn(
        shared.clone(),
        Established { peer, conn, id: registered.id, previous: registered.previous, done: registered.done },
    );
    Ok(())
}

fn own_hello(shared: &Shared, role: Role, exported: &[u8]) -> Result<Vec<u8>, Failure> {
    Hello::new(shared.local.clone(), shared.config.backend_name())
        .encode(shared.config.cookie.as_bytes(), role, exported)
        .ok_or_else(|| Failure::Lost("own node name too long for a hello".into()))
}

fn export(conn: &quinn::Connection) -> Result<[u8; EXPORTED_LEN], Failure> {
    let mut exported = [0u8; EXPORTED_LEN];
    conn.export_keying_material(&mut exported, EXPORTER_LABEL, b"")
        .map_err(|_| Failure::Lost("exporting TLS keying material failed".into()))?;
    Ok(exported)
}

/// Reads a length-prefixed hello body, at most `MAX_HELLO_LEN` bytes.
async fn read_hello(recv: &mut RecvStream, peer: Option<&NodeId>) -> Result<Vec<u8>, Failure> {
    let mut prefix = [0u8; 2];
    recv.read_exact(&mut prefix).await.map_err(|e| read_exact_failure(e, peer))?;
    let len = hello::decode_len(prefix)
        .map_err(|e| Failure::refused(peer.cloned(), RefuseReason::Malformed(e.to_string())))?;
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await.map_err(|e| read_exact_failure(e, peer))?;
    Ok(body)
}

/// Checks a peer's hello: format, version, cookie MAC (for the peer's `role`), backend, name.
fn check_hello(shared: &Shared, body: &[u8], role: Role, exported: &[u8]) -> Result<Hello, Failure> {
    let malformed = |e: hello::HelloError| Failure::refused(None, RefuseReason::Malformed(e.to_string()));
    let version = hello::decode_version(body).map_err(malformed)?;
    if version != PROTOCOL_VERSION {
        return Err(Failure::refused(None, RefuseReason::VersionMismatch { ours: PROTOCOL_VERSION, theirs: version }));
    }
    let received = hello::decode(body).map_err(malformed)?;
    let node = Some(received.hello.node.clone());
    if !received.verify(shared.config.cookie.as_bytes(), role, exported) {
        return Err(Failure::refused(node, RefuseReason::BadCookie));
    }
    let ours = shared.config.backend_name();
    if received.hello.backend != ours {
        return Err(Failure::refused(
            node,
            RefuseReason::BackendMismatch { ours: ours.to_string(), theirs: received.hello.backend },
        ));
    }
    if received.hello.node == shared.local {
        return Err(Failure::refused(node, RefuseReason::SelfConnection));
    }
    Ok(received.hello)
}

/// Closes a refused connection with the reason, so the peer can log why.
fn refuse(conn: &quinn::Connection, failure: &Failure) {
    /// QUIC close frames must fit one packet; reasons are far shorter, the bound only guards
    /// the peer-chosen names quoted in them.
    const MAX_REASON: usize = 900;
    if let Failure::Refused { reason, .. } = failure {
        let text = reason.to_string();
        let mut end = text.len().min(MAX_REASON);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        conn.close(CloseCode::Refused.varint(), &text.as_bytes()[..end]);
    }
}

fn read_exact_failure(e: ReadExactError, peer: Option<&NodeId>) -> Failure {
    match e {
        ReadExactError::FinishedEarly(_) => {
            Failure::refused(peer.cloned(), RefuseReason::Malformed("hello truncated".into()))
        }
        ReadExactError::ReadError(e) => read_failure(e, peer),
    }
}

fn read_failure(e: quinn::ReadError, peer: Option<&NodeId>) -> Failure {
    match e {
        quinn::ReadError::ConnectionLost(e) => connection_failure(e, peer),
        other => Failure::Lost(other.to_string()),
    }
}

/// Turns a connection error during setup into a failure: the peer's refusal (with its text),
/// a duplicate, a TLS failure, or a plain network failure.
fn connection_failure(e: ConnectionError, peer: Option<&NodeId>) -> Failure {
    match e {
        ConnectionError::ApplicationClosed(close) => match CloseCode::from_varint(close.error_code) {
            Some(CloseCode::Refused) => Failure::refused(
                peer.cloned(),
                RefuseReason::ByPeer(String::from_utf8_lossy(&close.reason).into_owned()),
            ),
            Some(CloseCode::Duplicate) => Failure::Duplicate,
            _ => Failure::Lost(format!("closed by the peer: {close}")),
        },
        ConnectionError::TransportError(e) if is_tls_error(e.code) => {
            Failure::refused(peer.cloned(), RefuseReason::Tls(e.to_string()))
        }
        ConnectionError::ConnectionClosed(close) if is_tls_error(close.error_code) => {
            Failure::refused(peer.cloned(), RefuseReason::ByPeer(format!("TLS handshake failed: {close}")))
        }
        other => Failure::Lost(other.to_string()),
    }
}

/// QUIC carries TLS alerts as transport error codes 0x100..=0x1ff (RFC 9001 §4.8).
fn is_tls_error(code: quinn::TransportErrorCode) -> bool {
    (0x100..=0x1ff).contains(&u64::from(code))
}
