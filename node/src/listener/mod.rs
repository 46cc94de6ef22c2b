//! TCP listeners: the accept loop with its connection limit, and one task per connection
//! (framing, keep-alive, timers) around a sans-IO [`crate::session::Session`].

mod acks;
mod connect;
mod connection;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tracing::{info, warn};

use crate::broker::Broker;
use crate::session::SessionConfig;

pub use connection::ConnectSettings;

/// A configured listener, as connection handling names it; the one definition of a listener's
/// settings is [`vmq_config::ListenerConfig`].
pub use vmq_config::ListenerConfig as ListenerSpec;

/// What every connection task shares.
#[derive(Debug)]
pub struct ConnectionContext {
    /// The broker.
    pub broker: Arc<Broker>,
    /// Session settings.
    pub session: SessionConfig,
    /// CONNECT handling settings.
    pub connect: ConnectSettings,
}

/// Accepts connections on `listener` until `shutdown` turns true; each connection runs in its
/// own task. Beyond `max_connections`, new connections are closed at once (and logged).
pub async fn serve(
    listener: TcpListener,
    spec: Arc<ListenerSpec>,
    ctx: Arc<ConnectionContext>,
    mut shutdown: watch::Receiver<bool>,
    tasks: tokio::sync::mpsc::Sender<()>,
) {
    let limit = spec.max_connections.map(|n| Arc::new(Semaphore::new(n)));
    let mut backoff = Duration::from_millis(5);
    info!(listener = %spec.name, addr = %spec.addr, "listening for MQTT over TCP");
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.wait_for(|s| *s) => break,
            _ = ctx.broker.listeners_stopped() => {
                info!(listener = %spec.name, addr = %spec.addr, "MQTT listener stopped (cluster leave)");
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
                warn!(listener = %spec.name, error = %e, "accept failed; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let permit = match &limit {
            Some(sem) => match sem.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    warn!(listener = %spec.name, %peer, "connection refused: max_connections reached");
                    drop(stream);
                    continue;
                }
            },
            None => None,
        };
        let _ = stream.set_nodelay(true);
        let spec = spec.clone();
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        let tasks = tasks.clone();
        ctx.broker.counters.socket_open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::spawn(async move {
            connection::run(stream, peer, spec, ctx.clone(), shutdown).await;
            ctx.broker.counters.socket_close.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            drop(permit);
            drop(tasks);
        });
    }
    info!(listener = %spec.name, "listener stopped");
}
