//! The node's MQTT listeners by transport and name: started from the configuration when the
//! node starts, started and stopped while it runs (VerneMQ's `vmq-admin listener`), and all
//! stopped at shutdown.
//!
//! A stopped listener stays in the registry, so that it can be listed, started again and
//! have the connections it accepted closed later: stopping only stops accepting, as in
//! VerneMQ, unless `kill_sessions` asks to close those connections too. Deleting removes a
//! stopped listener.
//!
//! `vmq-admin` names a listener by its address and port; [`Listeners::at`] finds it, and
//! [`Listeners::start_named_by_address`] names the listeners it starts after their address.
//! The node's HTTP listeners are served elsewhere and only listed here
//! ([`Listeners::list_http`]), so that `vmq-admin listener show` prints them too.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::info;
use vmq_config::{ListenAddr, ListenerConfig, Transport};

use super::tls::{TlsListener, TlsSetupError};
use super::websocket::WsSettings;
use super::{Accept, ConnectionContext, KillSwitch, Socket};

/// Why a listener could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// A setting of the listener is unusable.
    #[error("{0}")]
    Setting(String),
    /// The address could not be bound.
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        /// `listener.<transport>.<name>`.
        key: String,
        /// The address.
        addr: ListenAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A listener of that transport and name is accepting already.
    #[error("{key} is running already")]
    Running {
        /// `listener.<transport>.<name>`.
        key: String,
    },
    /// No listener of that transport and name was ever started.
    #[error("there is no listener {key}")]
    Unknown {
        /// `listener.<transport>.<name>`.
        key: String,
    },
    /// No MQTT listener is bound to that address.
    #[error("there is no MQTT listener on {addr}")]
    NoneAt {
        /// The address asked for.
        addr: ListenAddr,
    },
    /// A listener is at the address a new one was asked for.
    #[error("{addr} is taken by {key}, {}", occupied(.running))]
    Occupied {
        /// `listener.<transport>.<name>` of the listener there.
        key: String,
        /// The address.
        addr: ListenAddr,
        /// Whether it accepts connections.
        running: bool,
    },
    /// A running listener cannot be deleted.
    #[error("{key} is running: stop it first")]
    NotStopped {
        /// `listener.<transport>.<name>`.
        key: String,
    },
    /// The node is shutting down.
    #[error("{key} not started: the node is shutting down")]
    ShuttingDown {
        /// `listener.<transport>.<name>`.
        key: String,
    },
    /// A TLS listener's settings or files are unusable.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
}

/// A listener's socket, bound but not accepting yet ([`Listeners::bind`]).
#[derive(Debug)]
pub struct Bound {
    socket: Socket,
    /// Its configuration, with the address actually bound (port 0 resolved).
    spec: ListenerConfig,
    /// A TLS listener's certificates and settings.
    tls: Option<Arc<TlsListener>>,
    /// A WebSocket listener's settings.
    websocket: Option<Arc<WsSettings>>,
}

impl Bound {
    /// The bound address.
    pub fn local_addr(&self) -> &ListenAddr {
        &self.spec.addr
    }

    /// Its configuration, with the bound address.
    pub fn spec(&self) -> &ListenerConfig {
        &self.spec
    }
}

/// A listener as [`Listeners::list`] reports it.
#[derive(Debug, Clone)]
pub struct ListenerInfo {
    /// Its configuration, with the address it was bound to.
    pub spec: Arc<ListenerConfig>,
    /// True while it accepts connections.
    pub running: bool,
    /// Its connections that are open now, from this and earlier runs.
    pub connections: usize,
    /// The connections it has served since it was first started (VerneMQ's `all_conns`).
    pub accepted: u64,
}

/// The listeners of a node.
#[derive(Debug)]
pub struct Listeners {
    ctx: Arc<ConnectionContext>,
    /// A std mutex: every section is short and never awaits.
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    entries: Vec<Entry>,
    /// The node's HTTP listeners, for listing: address and whether it is served.
    http: Vec<(SocketAddr, Arc<AtomicBool>)>,
    /// The node's task tracker: every accept task and every connection holds a clone, and the
    /// node's shutdown waits for all of them to be dropped. `None` once shutting down.
    tasks: Option<mpsc::Sender<()>>,
}

/// One listener, running or stopped.
#[derive(Debug)]
struct Entry {
    spec: Arc<ListenerConfig>,
    /// Turns true to make the accept task stop; `None` once stopped.
    stop: Option<watch::Sender<bool>>,
    /// The accept task; `None` once stopped.
    accept: Option<JoinHandle<()>>,
    /// One per run whose connections are still open; pulling one closes that run's
    /// connections.
    kill: Vec<Arc<KillSwitch>>,
    /// Open connections, across runs.
    connections: Arc<AtomicUsize>,
    /// Connections served, across runs.
    accepted: Arc<AtomicU64>,
}

impl Entry {
    fn running(&self) -> bool {
        self.accept.as_ref().is_some_and(|a| !a.is_finished())
    }

    fn kill_connections(&mut self) {
        for kill in &self.kill {
            kill.pull();
        }
    }

    fn info(&self) -> ListenerInfo {
        ListenerInfo {
            spec: self.spec.clone(),
            running: self.running(),
            connections: self.connections.load(Ordering::Relaxed),
            accepted: self.accepted.load(Ordering::Relaxed),
        }
    }
}

/// Keeps an HTTP listener listed as running ([`Listeners::list_http`]).
#[derive(Debug)]
pub struct HttpListed(Arc<AtomicBool>);

impl Drop for HttpListed {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

impl Drop for Entry {
    /// A listener nobody can stop any more closes its connections.
    fn drop(&mut self) {
        self.kill_connections();
    }
}

impl Listeners {
    /// An empty registry whose connections share `ctx`; `tasks` is the node's task tracker.
    pub fn new(ctx: Arc<ConnectionContext>, tasks: mpsc::Sender<()>) -> Listeners {
        Listeners { ctx, state: Mutex::new(State { entries: Vec::new(), http: Vec::new(), tasks: Some(tasks) }) }
    }

    /// Binds `spec`'s address without accepting yet, so that a node can bind all its
    /// listeners before it starts any. The TLS and WebSocket settings are checked first, so
    /// that unusable ones bind nothing.
    pub async fn bind(spec: ListenerConfig) -> Result<Bound, ListenerError> {
        let (tls, websocket) = transport_settings(&spec)?;
        let (socket, bound) = bind_socket(&spec).await?;
        let mut spec = spec;
        spec.addr = bound;
        Ok(Bound { socket, spec, tls, websocket })
    }

    /// Binds and starts `spec`; returns the bound address. A stopped listener of the same
    /// transport and name is replaced (its open connections stay).
    pub async fn start(&self, spec: ListenerConfig) -> Result<ListenAddr, ListenerError> {
        if let Some(e) = self.lock().entries.iter().find(|e| same(&e.spec, spec.transport, &spec.name))
            && e.running()
        {
            return Err(ListenerError::Running { key: spec.key() });
        }
        let bound = Listeners::bind(spec).await?;
        self.start_bound(bound)
    }

    /// Binds and starts `spec` named after the address it is bound to (`127.0.0.1:1884`,
    /// `[::1]:1884`, `local:/run/mqtt.sock`), as `vmq-admin listener start` names the listeners
    /// it starts; `spec.name` is replaced. Port 0 binds a free port. An address another
    /// listener of the registry has, running or stopped, is refused.
    pub async fn start_named_by_address(&self, mut spec: ListenerConfig) -> Result<ListenAddr, ListenerError> {
        spec.name = spec.addr.to_string();
        let picks_port = spec.addr.inet().is_some_and(|a| a.port() == 0);
        if !picks_port {
            if let Some(e) = self.lock().entries.iter().find(|e| e.spec.addr == spec.addr) {
                return Err(ListenerError::Occupied { key: e.spec.key(), addr: spec.addr, running: e.running() });
            }
            return self.start(spec).await;
        }
        // The name holds the port, which only binding tells: the socket is bound before the
        // settings are read under the final name (and closed again if they are unusable).
        let (socket, bound) = bind_socket(&spec).await?;
        spec.addr = bound;
        spec.name = spec.addr.to_string();
        let (tls, websocket) = transport_settings(&spec)?;
        self.start_bound(Bound { socket, spec, tls, websocket })
    }

    /// Starts accepting on a listener bound by [`Listeners::bind`]; returns its address.
    pub fn start_bound(&self, bound: Bound) -> Result<ListenAddr, ListenerError> {
        let Bound { socket, spec, tls, websocket } = bound;
        let addr = spec.addr.clone();
        let spec = Arc::new(spec);
        let mut state = self.lock();
        // Under the lock, so that a listener started during shutdown is not missed by it.
        let Some(tasks) = state.tasks.clone() else {
            return Err(ListenerError::ShuttingDown { key: spec.key() });
        };
        let entries = &mut state.entries;
        let index = match entries.iter().position(|e| same(&e.spec, spec.transport, &spec.name)) {
            Some(i) if entries[i].running() => return Err(ListenerError::Running { key: spec.key() }),
            Some(i) => i,
            None => {
                entries.push(Entry {
                    spec: spec.clone(),
                    stop: None,
                    accept: None,
                    kill: Vec::new(),
                    connections: Arc::new(AtomicUsize::new(0)),
                    accepted: Arc::new(AtomicU64::new(0)),
                });
                entries.len() - 1
            }
        };
        let entry = &mut entries[index];
        // Earlier runs whose connections have all ended need no kill switch any more.
        // (The accept task and each connection hold one.)
        entry.kill.retain(|k| Arc::strong_count(k) > 1);
        let (stop_tx, stop_rx) = watch::channel(false);
        let kill = Arc::new(KillSwitch::default());
        let accept = Accept {
            socket,
            tls,
            websocket,
            spec: spec.clone(),
            ctx: self.ctx.clone(),
            stop: stop_rx,
            kill: kill.clone(),
            connections: entry.connections.clone(),
            accepted: entry.accepted.clone(),
            tasks,
        };
        entry.spec = spec;
        entry.stop = Some(stop_tx);
        entry.kill.push(kill);
        entry.accept = Some(tokio::spawn(accept.run()));
        Ok(addr)
    }

    /// Stops the listener `name` of `transport` from accepting and returns once its socket is
    /// closed, so that new connections are refused. With `kill_sessions` its open
    /// connections are closed too (as at shutdown: MQTT 5 clients get DISCONNECT 0x8B and
    /// wills are published at once); without, they go on.
    pub async fn stop(&self, transport: Transport, name: &str, kill_sessions: bool) -> Result<(), ListenerError> {
        let accept = {
            let mut state = self.lock();
            let Some(entry) = state.entries.iter_mut().find(|e| same(&e.spec, transport, name)) else {
                return Err(ListenerError::Unknown { key: format!("listener.{}.{name}", transport.key()) });
            };
            if let Some(stop) = entry.stop.take() {
                stop.send_replace(true);
            }
            if kill_sessions {
                entry.kill_connections();
            }
            entry.accept.take()
        };
        if let Some(accept) = accept {
            // A panicked accept task has stopped accepting all the same.
            let _ = accept.await;
        }
        info!(listener = %format!("listener.{}.{name}", transport.key()), kill_sessions, "MQTT listener stopped");
        Ok(())
    }

    /// Starts a stopped listener again with the settings and the address it had; one that
    /// is running is left as it is. Returns its address.
    pub async fn restart(&self, transport: Transport, name: &str) -> Result<ListenAddr, ListenerError> {
        let spec = {
            let state = self.lock();
            let Some(entry) = state.entries.iter().find(|e| same(&e.spec, transport, name)) else {
                return Err(ListenerError::Unknown { key: format!("listener.{}.{name}", transport.key()) });
            };
            if entry.running() {
                return Ok(entry.spec.addr.clone());
            }
            entry.spec.clone()
        };
        self.start(ListenerConfig::clone(&spec)).await
    }

    /// Removes a stopped listener; the connections it still has are closed, as nothing could
    /// close them later. A running listener is refused: it has to be stopped first.
    pub async fn delete(&self, transport: Transport, name: &str) -> Result<(), ListenerError> {
        let entry = {
            let mut state = self.lock();
            let key = || format!("listener.{}.{name}", transport.key());
            let Some(index) = state.entries.iter().position(|e| same(&e.spec, transport, name)) else {
                return Err(ListenerError::Unknown { key: key() });
            };
            if state.entries[index].running() {
                return Err(ListenerError::NotStopped { key: key() });
            }
            state.entries.remove(index)
        };
        if let ListenAddr::Local(path) = &entry.spec.addr {
            remove_stale_socket(path).await;
        }
        info!(listener = %entry.spec.key(), "MQTT listener deleted");
        drop(entry);
        Ok(())
    }

    /// Every listener started since the node started, running or stopped, in start order.
    pub fn list(&self) -> Vec<ListenerInfo> {
        self.lock().entries.iter().map(Entry::info).collect()
    }

    /// The listener bound to `addr`: the running one, else a stopped one.
    pub fn at(&self, addr: &ListenAddr) -> Option<ListenerInfo> {
        let state = self.lock();
        let here = || state.entries.iter().filter(|e| &e.spec.addr == addr);
        here().find(|e| e.running()).or_else(|| here().next()).map(Entry::info)
    }

    /// Lists the HTTP listener at `addr` among the node's listeners while the returned guard
    /// lives, as running; as stopped once it is dropped.
    pub fn list_http(&self, addr: SocketAddr) -> HttpListed {
        let serving = Arc::new(AtomicBool::new(true));
        self.lock().http.push((addr, serving.clone()));
        HttpListed(serving)
    }

    /// The HTTP listeners: address and whether it is served, in start order.
    pub fn http(&self) -> Vec<(SocketAddr, bool)> {
        self.lock().http.iter().map(|(addr, serving)| (*addr, serving.load(Ordering::Relaxed))).collect()
    }

    /// True when the node is not shutting down and every listener accepts connections
    /// (`/health/listeners`).
    pub fn all_running(&self) -> bool {
        let state = self.lock();
        state.tasks.is_some() && state.entries.iter().all(Entry::running)
    }

    /// Stops every listener and closes every connection, without waiting: the node's task
    /// tracker tells when all have ended. Nothing can be started afterwards.
    pub fn shutdown(&self) {
        let mut state = self.lock();
        state.tasks = None;
        for entry in state.entries.iter_mut() {
            if let Some(stop) = entry.stop.take() {
                stop.send_replace(true);
            }
            entry.kill_connections();
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The sections under this lock leave the state consistent at every step, so one
        // that panicked left nothing half done.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A TLS listener's certificates and a WebSocket listener's settings.
type TransportSettings = (Option<Arc<TlsListener>>, Option<Arc<WsSettings>>);

/// `spec`'s [`TransportSettings`], read and checked.
fn transport_settings(spec: &ListenerConfig) -> Result<TransportSettings, ListenerError> {
    let tls = match spec.transport {
        Transport::Tcp | Transport::Ws => None,
        Transport::Ssl | Transport::Wss => Some(Arc::new(TlsListener::new(spec)?)),
    };
    let websocket = match spec.transport {
        Transport::Tcp | Transport::Ssl => None,
        Transport::Ws | Transport::Wss => {
            Some(Arc::new(WsSettings::new(spec, spec.max_ws_frame_size).map_err(ListenerError::Setting)?))
        }
    };
    Ok((tls, websocket))
}

/// Binds `spec`'s address; returns the socket and the address bound (port 0 resolved).
async fn bind_socket(spec: &ListenerConfig) -> Result<(Socket, ListenAddr), ListenerError> {
    let failed = |source| ListenerError::Bind { key: spec.key(), addr: spec.addr.clone(), source };
    match &spec.addr {
        ListenAddr::Inet(addr) => {
            let socket = TcpListener::bind(addr).await.map_err(failed)?;
            let bound = socket.local_addr().map_or(spec.addr.clone(), ListenAddr::Inet);
            Ok((Socket::Tcp(socket), bound))
        }
        ListenAddr::Local(path) => {
            remove_stale_socket(path).await;
            Ok((Socket::Unix(UnixListener::bind(path).map_err(failed)?), spec.addr.clone()))
        }
    }
}

/// Removes a socket file nobody listens on any more (a node that was killed leaves its
/// socket behind, and binding over it fails); a live one stays, and binding reports it.
async fn remove_stale_socket(path: &std::path::Path) {
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| {
        use std::os::unix::fs::FileTypeExt;
        m.file_type().is_socket()
    });
    if is_socket && tokio::net::UnixStream::connect(path).await.is_err() {
        let _ = std::fs::remove_file(path);
    }
}

/// What [`ListenerError::Occupied`] says of the listener there.
fn occupied(running: &bool) -> &'static str {
    if *running { "which is running" } else { "which is stopped: restart it, or delete it first" }
}

fn same(spec: &ListenerConfig, transport: Transport, name: &str) -> bool {
    spec.transport == transport && spec.name == name
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The HTTP API (axum) and `tokio::spawn` need `Send` futures: the registry's lock must
    /// never be held across an await.
    #[allow(dead_code)]
    fn start_and_stop_are_send(listeners: &Listeners, spec: ListenerConfig) {
        fn send<T: Send>(_: T) {}
        send(listeners.start(spec.clone()));
        send(listeners.start_named_by_address(spec));
        send(listeners.stop(Transport::Tcp, "default", true));
        send(listeners.restart(Transport::Tcp, "default"));
        send(listeners.delete(Transport::Tcp, "default"));
    }
}
