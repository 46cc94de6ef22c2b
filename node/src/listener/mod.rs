//! MQTT listeners: the registry of running listeners ([`Listeners`]), the accept loop with its
//! connection limit, and one task per connection (framing, keep-alive, timers) around a
//! sans-IO [`crate::session::Session`].

mod connection;
pub(crate) mod proxy;
mod registry;
mod tls;
mod verdicts;
pub(crate) mod websocket;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tracing::{info, warn};

use crate::authorize::Authorizer;
use crate::broker::Broker;
use crate::session::SessionConfig;

pub use registry::{Bound, HttpListed, ListenerError, ListenerInfo, Listeners};
/// The session harness drives its clients' requests as the connection does.
#[cfg(test)]
pub(crate) use verdicts::Held;

/// A configured listener, as connection handling names it; the one definition of a listener's
/// settings is [`vmq_config::ListenerConfig`].
pub use vmq_config::ListenerConfig as ListenerSpec;

/// What every connection task shares.
#[derive(Debug)]
pub struct ConnectionContext {
    /// The broker.
    pub broker: Arc<Broker>,
    /// The `mqtt` settings, for CONNECT handling and every session.
    pub mqtt: SessionConfig,
    /// Decides what clients may publish and subscribe to; `None` (no plugin) allows all,
    /// and the sessions never ask.
    pub authorizer: Option<Arc<dyn Authorizer>>,
}

/// A listener's bound socket.
#[derive(Debug)]
pub(crate) enum Socket {
    /// An IP address and port.
    Tcp(TcpListener),
    /// A Unix domain socket.
    Unix(UnixListener),
}

/// An accepted connection's stream.
enum Accepted {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Socket {
    async fn accept(&self, spec: &ListenerSpec) -> std::io::Result<(Accepted, Peer)> {
        match self {
            Socket::Tcp(socket) => socket.accept().await.map(|(s, peer)| (Accepted::Tcp(s), Peer::Inet(peer))),
            // Clients of a Unix socket have no address of their own (a PROXY header gives
            // the one behind a local balancer); they are logged under the socket's.
            Socket::Unix(socket) => {
                let (s, _) = socket.accept().await?;
                Ok((Accepted::Unix(s), Peer::Local(Arc::from(spec.addr.to_string()))))
            }
        }
    }
}

/// Where a connection comes from, as its log events say.
#[derive(Debug, Clone)]
pub(crate) enum Peer {
    /// The client's (or, behind a PROXY header, the balancer's client's) address.
    Inet(std::net::SocketAddr),
    /// A client of a Unix domain socket listener: the socket's `local:<path>`.
    Local(Arc<str>),
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Inet(addr) => addr.fmt(f),
            Peer::Local(path) => f.write_str(path),
        }
    }
}

/// A listener's accept task: accepts connections on `socket` until `stop` turns true (or its
/// sender is dropped) or the node leaves the cluster; each connection runs in its own task
/// until it ends or `kill` turns true. Beyond `max_connections`, new connections are closed at
/// once (and logged); beyond `max_connection_rate`, accepting waits (clients wait in the
/// kernel's backlog).
struct Accept {
    socket: Socket,
    /// For a TLS listener: its certificates; every connection's handshake runs in its own
    /// task, so a slow one holds up nobody's accept.
    tls: Option<Arc<tls::TlsListener>>,
    /// For a WebSocket listener: its settings; the upgrade runs in the connection's task too.
    websocket: Option<Arc<websocket::WsSettings>>,
    spec: Arc<ListenerSpec>,
    ctx: Arc<ConnectionContext>,
    stop: watch::Receiver<bool>,
    /// Handed to every connection; pulled by the registry to close them.
    kill: Arc<KillSwitch>,
    /// Open connections of the listener.
    connections: Arc<AtomicUsize>,
    /// Connections the listener has served since it was first started (`all_conns`).
    accepted: Arc<AtomicU64>,
    /// Held by this task and every connection for the node's shutdown to wait on.
    tasks: mpsc::Sender<()>,
}

impl Accept {
    async fn run(mut self) {
        let spec = self.spec.clone();
        let ctx = self.ctx.clone();
        let limit = spec.max_connections.map(|n| Arc::new(Semaphore::new(n)));
        let mut pace = spec.max_connection_rate.map(Pace::new);
        let mut backoff = Duration::from_millis(5);
        let over = spec.transport.description();
        info!(listener = %spec.key(), addr = %spec.addr, "listening for MQTT over {over}");
        loop {
            if let Some(pace) = &mut pace {
                tokio::select! {
                    _ = pace.wait() => {}
                    _ = self.stop.wait_for(|s| *s) => break,
                    _ = ctx.broker.listeners_stopped() => break,
                }
            }
            let accepted = tokio::select! {
                r = self.socket.accept(&spec) => r,
                _ = self.stop.wait_for(|s| *s) => break,
                _ = ctx.broker.listeners_stopped() => {
                    info!(listener = %spec.key(), addr = %spec.addr, "MQTT listener stopped (cluster leave)");
                    break;
                }
            };
            let (stream, peer) = match accepted {
                Ok(a) => {
                    backoff = Duration::from_millis(5);
                    a
                }
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    warn!(listener = %spec.key(), error = %e, "accept failed; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            if let Some(pace) = &mut pace {
                pace.accepted();
            }
            let permit = match &limit {
                Some(sem) => match sem.clone().try_acquire_owned() {
                    Ok(p) => Some(p),
                    Err(_) => {
                        warn!(listener = %spec.key(), %peer, "connection refused: max_connections reached");
                        continue;
                    }
                },
                None => None,
            };
            self.accepted.fetch_add(1, Ordering::Relaxed);
            let tenancy = Tenancy {
                _permit: permit,
                _open: Some(OpenConnection::new(&self.connections)),
                _tasks: Some(self.tasks.clone()),
                broker: ctx.broker.clone(),
            };
            ctx.broker.counters.socket_open.fetch_add(1, Ordering::Relaxed);
            match stream {
                Accepted::Tcp(stream) => {
                    let _ = stream.set_nodelay(true);
                    self.serve(stream, peer, tenancy);
                }
                Accepted::Unix(stream) => self.serve(stream, peer, tenancy),
            }
        }
        info!(listener = %spec.key(), "listener stopped accepting");
    }

    /// Runs one accepted connection in its own task.
    fn serve<S: Stream + 'static>(&self, stream: S, peer: Peer, tenancy: Tenancy) {
        let (spec, ctx, kill) = (self.spec.clone(), self.ctx.clone(), self.kill.clone());
        if !spec.proxy_protocol && self.tls.is_none() && self.websocket.is_none() {
            tokio::spawn(connection::run(stream, peer, None, spec, ctx, kill, tenancy));
            return;
        }
        let acceptor = self.tls.as_ref().map(|tls| Handshake {
            acceptor: tokio_rustls::TlsAcceptor::from(tls.config()),
            identity_from_certificate: tls.use_identity_as_username,
        });
        let websocket = self.websocket.clone();
        // The PROXY header, the TLS handshake and the WebSocket upgrade run in the
        // connection's own task, so a slow client holds up nobody's accept; they count
        // against `mqtt.connect.timeout`, as the CONNECT after them.
        tokio::spawn(async move {
            let within = ctx.mqtt.mqtt_connect_timeout;
            let opening = open(stream, peer.clone(), &spec, acceptor, websocket.as_deref());
            let Ok(opened) = tokio::time::timeout(within, opening).await else {
                return info!(%peer, listener = %spec.key(), "no PROXY header, TLS handshake or WebSocket upgrade within mqtt.connect.timeout");
            };
            let (stream, peer, identity) = match opened {
                Ok(opened) => opened,
                Err(why) => return info!(%peer, listener = %spec.key(), "connection closed: {why}"),
            };
            // Boxed: a TLS stream's buffers would otherwise live in the connection's
            // future, and the connection runs boxed so this task keeps only a pointer.
            Box::pin(connection::run(stream, peer, identity, spec, ctx, kill, tenancy)).await;
        });
    }
}

/// `max_connection_rate`: paces accepting to a rate, allowing a burst of one second's worth
/// after a quiet spell.
struct Pace {
    /// Time per connection.
    interval: Duration,
    /// When the next connection may be accepted.
    next: tokio::time::Instant,
    /// How far `next` may lag behind now: the burst.
    burst: Duration,
}

impl Pace {
    fn new(per_second: u32) -> Pace {
        let interval = Duration::from_secs(1) / per_second.max(1);
        let burst = Duration::from_secs(1);
        let now = tokio::time::Instant::now();
        Pace { interval, next: now.checked_sub(burst).unwrap_or(now), burst }
    }

    async fn wait(&self) {
        tokio::time::sleep_until(self.next).await;
    }

    fn accepted(&mut self) {
        let now = tokio::time::Instant::now();
        // Unused capacity of a quiet spell counts up to one second's worth.
        let floor = now.checked_sub(self.burst).unwrap_or(now);
        self.next = self.next.max(floor) + self.interval;
    }
}

/// What a connection runs over once its PROXY header (if the listener expects one), its TLS
/// handshake (on a TLS listener) and its WebSocket upgrade (on a WebSocket listener) are done.
type Opened = (Box<dyn Stream>, Peer, Option<String>);

/// A connection's byte stream: TCP, TLS over it, WebSocket over either.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for S {}

/// A TLS listener's handshake for one connection.
struct Handshake {
    acceptor: tokio_rustls::TlsAcceptor,
    /// `use_identity_as_username`.
    identity_from_certificate: bool,
}

/// Reads the PROXY header (`proxy_protocol = on`: its source becomes the peer, and with
/// `proxy_protocol_use_cn_as_username` its TLS common name the user name), then runs the TLS
/// handshake on a TLS listener (with `use_identity_as_username`, the client certificate's
/// common name is the user name), then the WebSocket upgrade on a WebSocket listener.
async fn open<S: Stream + 'static>(
    mut stream: S,
    peer: Peer,
    spec: &ListenerSpec,
    tls: Option<Handshake>,
    websocket: Option<&websocket::WsSettings>,
) -> Result<Opened, String> {
    let (mut peer, mut identity) = (peer, None);
    if spec.proxy_protocol {
        let header = proxy::read_header(&mut stream).await.map_err(|e| e.to_string())?;
        if let Some(source) = header.source {
            tracing::debug!(balancer = %peer, client = %source, "PROXY header");
            peer = Peer::Inet(source);
        }
        if spec.proxy_protocol_use_cn_as_username {
            identity = header.tls_common_name;
        }
    }
    let stream: Box<dyn Stream> = match tls {
        None => Box::new(stream),
        Some(handshake) => {
            let tls = handshake.acceptor.accept(stream).await.map_err(|e| format!("TLS handshake failed: {e}"))?;
            if handshake.identity_from_certificate {
                let certificate = tls.get_ref().1.peer_certificates().and_then(|chain| chain.first());
                if let Some(name) = certificate.and_then(|c| tls::common_name(c)) {
                    identity = Some(name);
                }
            }
            Box::new(tls)
        }
    };
    let stream: Box<dyn Stream> = match websocket {
        None => stream,
        Some(settings) => Box::new(websocket::accept(stream, settings).await?),
    };
    Ok((stream, peer, identity))
}

/// Closes the connections of one listener run when pulled.
///
/// Every connection waits on it for its whole life, idle ones included: waiting on a
/// `Notify` takes less room in a connection's future than waiting on a watch channel.
#[derive(Debug, Default)]
pub(crate) struct KillSwitch {
    pulled: AtomicBool,
    notify: Notify,
}

impl KillSwitch {
    /// Closes every connection waiting on it, and any that looks later.
    pub(crate) fn pull(&self) {
        self.pulled.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Resolves once the switch is pulled.
    pub(crate) async fn pulled(&self) {
        loop {
            // Registered before the check: a pull between the two still wakes it.
            let notified = self.notify.notified();
            if self.pulled.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }
}

/// What a connection holds until it ends, released then: its place under `max_connections`,
/// its count among the listener's open connections, and the node's shutdown waits for it.
/// Its release counts the socket closed.
pub(crate) struct Tenancy {
    _permit: Option<OwnedSemaphorePermit>,
    _open: Option<OpenConnection>,
    _tasks: Option<mpsc::Sender<()>>,
    broker: Arc<Broker>,
}

impl Tenancy {
    /// A connection of no listener (tests that run one over an in-memory stream).
    #[cfg(test)]
    pub(crate) fn detached(broker: Arc<Broker>) -> Tenancy {
        Tenancy { _permit: None, _open: None, _tasks: None, broker }
    }
}

impl Drop for Tenancy {
    fn drop(&mut self) {
        self.broker.counters.socket_close.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counts one open connection of a listener while it lives.
struct OpenConnection(Arc<AtomicUsize>);

impl OpenConnection {
    fn new(count: &Arc<AtomicUsize>) -> OpenConnection {
        count.fetch_add(1, Ordering::Relaxed);
        OpenConnection(count.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
