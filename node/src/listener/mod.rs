//! MQTT listeners: the registry of running listeners ([`Listeners`]), the accept loop with its
//! connection limit, and one task per connection (framing, keep-alive, timers) around a
//! sans-IO [`crate::session::Session`].

mod connection;
mod proxy;
mod registry;
mod tls;
mod verdicts;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tracing::{info, warn};

use crate::authorize::Authorizer;
use crate::broker::Broker;
use crate::session::SessionConfig;

pub use registry::{Bound, ListenerError, ListenerInfo, Listeners};
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

/// A listener's accept task: accepts connections on `socket` until `stop` turns true (or its
/// sender is dropped) or the node leaves the cluster; each connection runs in its own task
/// until it ends or `kill` turns true. Beyond `max_connections`, new connections are closed at
/// once (and logged).
struct Accept {
    socket: TcpListener,
    /// For a TLS listener: its certificates; every connection's handshake runs in its own
    /// task, so a slow one holds up nobody's accept.
    tls: Option<Arc<tls::TlsListener>>,
    spec: Arc<ListenerSpec>,
    ctx: Arc<ConnectionContext>,
    stop: watch::Receiver<bool>,
    /// Handed to every connection; pulled by the registry to close them.
    kill: Arc<KillSwitch>,
    /// Open connections of the listener.
    connections: Arc<AtomicUsize>,
    /// Held by this task and every connection for the node's shutdown to wait on.
    tasks: mpsc::Sender<()>,
}

impl Accept {
    async fn run(mut self) {
        let spec = self.spec.clone();
        let ctx = self.ctx.clone();
        let limit = spec.max_connections.map(|n| Arc::new(Semaphore::new(n)));
        let mut backoff = Duration::from_millis(5);
        let over = if self.tls.is_some() { "TLS" } else { "TCP" };
        info!(listener = %spec.key(), addr = %spec.addr, "listening for MQTT over {over}");
        loop {
            let accepted = tokio::select! {
                r = self.socket.accept() => r,
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
            let permit = match &limit {
                Some(sem) => match sem.clone().try_acquire_owned() {
                    Ok(p) => Some(p),
                    Err(_) => {
                        warn!(listener = %spec.key(), %peer, "connection refused: max_connections reached");
                        drop(stream);
                        continue;
                    }
                },
                None => None,
            };
            let _ = stream.set_nodelay(true);
            let tenancy = Tenancy {
                _permit: permit,
                _open: Some(OpenConnection::new(&self.connections)),
                _tasks: Some(self.tasks.clone()),
                broker: ctx.broker.clone(),
            };
            ctx.broker.counters.socket_open.fetch_add(1, Ordering::Relaxed);
            if !spec.proxy_protocol && self.tls.is_none() {
                let identity = None;
                let run =
                    connection::run(stream, peer, identity, spec.clone(), ctx.clone(), self.kill.clone(), tenancy);
                tokio::spawn(run);
                continue;
            }
            let acceptor = self.tls.as_ref().map(|tls| Handshake {
                acceptor: tokio_rustls::TlsAcceptor::from(tls.config()),
                identity_from_certificate: tls.use_identity_as_username,
            });
            let (spec, ctx, kill) = (spec.clone(), ctx.clone(), self.kill.clone());
            // The PROXY header and the TLS handshake run in the connection's own task, so a
            // slow client holds up nobody's accept; both count against `mqtt.connect.timeout`,
            // as the CONNECT after them.
            tokio::spawn(async move {
                let within = ctx.mqtt.mqtt_connect_timeout;
                let Ok(opened) = tokio::time::timeout(within, open(stream, peer, &spec, acceptor)).await else {
                    return info!(%peer, listener = %spec.key(), "no PROXY header or TLS handshake within mqtt.connect.timeout");
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
        info!(listener = %spec.key(), "listener stopped accepting");
    }
}

/// What a connection runs over once its PROXY header (if the listener expects one) and its
/// TLS handshake (on a TLS listener) are done.
type Opened = (Box<dyn Stream>, std::net::SocketAddr, Option<String>);

/// A connection's byte stream: TCP, or TLS over it.
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
/// common name is the user name).
async fn open(
    mut stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    spec: &ListenerSpec,
    tls: Option<Handshake>,
) -> Result<Opened, String> {
    let (mut peer, mut identity) = (peer, None);
    if spec.proxy_protocol {
        let header = proxy::read_header(&mut stream).await.map_err(|e| e.to_string())?;
        if let Some(source) = header.source {
            tracing::debug!(balancer = %peer, client = %source, "PROXY header");
            peer = source;
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
