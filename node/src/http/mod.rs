//! The HTTP listeners (`listener.http.<name>`, axum): health checks, Prometheus metrics and the
//! management API that `vmq-admin` uses, with VerneMQ's paths and response shapes.
//!
//! - `GET /health`: 200 `{"status":"OK"}` when the node accepts connections and is ready (every
//!   cluster member reachable), else 503 with the reason.
//! - `GET /health/ping`: 200 while the HTTP server runs.
//! - `GET /health/listeners`: 200 when every MQTT listener of [`Listeners`] accepts
//!   connections; one stopped (at runtime, or by a cluster leave) makes it 503.
//! - `GET /health/listeners_full_cluster`: listeners up and every member reachable.
//! - `GET /metrics`: Prometheus text format.
//! - `GET /api/v1/<command path>`: `vmq-admin` commands, answered as VerneMQ's HTTP API does
//!   (`{"type":"table","table":[...]}` or `{"type":"text","text":...}`). The commands and their
//!   arguments are those of the table in `vmq-admin-commands`, which `vmq-admin` parses with;
//!   an unknown one is refused with its error (404 for a command, 400 for an argument).
//!   Requests from loopback addresses are served; others need an API key (HTTP basic auth
//!   user name). The `listener` commands are in [`listeners`].

mod listeners;
mod metrics;

pub(crate) use metrics::node_figures;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::info;
use vmq_admin_commands::{Command, CommandError, CommandId};

use crate::broker::Broker;
use crate::cluster::view::{ClusterView, LeaveStatus};
use crate::listener::Listeners;

/// Shared state of the HTTP handlers.
pub struct HttpState {
    /// The broker.
    pub broker: Arc<Broker>,
    /// This node's name.
    pub nodename: String,
    /// The cluster as this node sees it.
    pub cluster: Arc<dyn ClusterView>,
    /// The MQTT listeners.
    pub listeners: Arc<Listeners>,
    /// API keys accepted from non-loopback clients.
    pub api_keys: Vec<String>,
    /// When the `$SYS` tree is published: `systree_enabled` and `systree_interval`, which
    /// `vmq-admin set` changes at runtime.
    pub systree: watch::Sender<crate::systree::Schedule>,
}

impl std::fmt::Debug for HttpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpState").field("nodename", &self.nodename).finish_non_exhaustive()
    }
}

/// The routes.
pub fn router(state: Arc<HttpState>) -> Router {
    let metrics = Arc::new(metrics::Metrics::new(state.clone()));
    Router::new()
        .route("/health", get(health))
        .route("/health/ping", get(|| async { "pong" }))
        .route("/health/listeners", get(health_listeners))
        .route("/health/listeners_full_cluster", get(health_full_cluster))
        .route("/metrics", get(metrics::prometheus).with_state(metrics))
        .route("/api/v1/{*command}", get(api))
        .with_state(state)
}

/// Serves `router` on `listener` until `shutdown` turns true.
pub async fn serve(listener: TcpListener, name: String, state: Arc<HttpState>, mut shutdown: watch::Receiver<bool>) {
    // Listed by `vmq-admin listener show` while it is served.
    let _listed = match listener.local_addr() {
        Ok(addr) => {
            info!(listener = %name, %addr, "HTTP listener ready");
            Some(state.listeners.list_http(addr))
        }
        Err(e) => {
            info!(listener = %name, error = %e, "HTTP listener ready, its address unknown");
            None
        }
    };
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let stop = async move {
        let _ = shutdown.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
        tracing::warn!(listener = %name, error = %e, "HTTP listener failed");
    }
}

fn status(ok: bool, reason: &str) -> Response {
    if ok {
        (StatusCode::OK, axum::Json(json!({"status": "OK"}))).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(json!({"status": "DOWN", "reason": reason}))).into_response()
    }
}

async fn health(State(s): State<Arc<HttpState>>) -> Response {
    if !s.listeners.all_running() {
        return status(false, "MQTT listeners are not accepting connections");
    }
    status(s.cluster.is_ready(), "cluster is not ready: a member is unreachable")
}

async fn health_listeners(State(s): State<Arc<HttpState>>) -> Response {
    status(s.listeners.all_running(), "MQTT listeners are not accepting connections")
}

async fn health_full_cluster(State(s): State<Arc<HttpState>>) -> Response {
    let ok = s.listeners.all_running() && s.cluster.members().iter().all(|m| m.running);
    status(ok, "a listener is down or a cluster member is offline")
}

fn authorised(s: &HttpState, peer: SocketAddr, headers: &HeaderMap) -> bool {
    if peer.ip().is_loopback() {
        return true;
    }
    let Some(auth) = headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some(encoded) = auth.strip_prefix("Basic ") else { return false };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else { return false };
    let user = String::from_utf8_lossy(&decoded);
    let key = user.split(':').next().unwrap_or_default();
    s.api_keys.iter().any(|k| k == key)
}

fn text_error(code: StatusCode, text: &str) -> Response {
    (code, axum::Json(json!({"type": "text", "text": text}))).into_response()
}

fn text_result(result: Result<String, String>) -> Response {
    match result {
        Ok(text) => axum::Json(json!({"type": "text", "text": text})).into_response(),
        Err(text) => text_error(StatusCode::CONFLICT, &text),
    }
}

/// `vmq-admin set KEY=VALUE ...` / `/api/v1/set?KEY=VALUE`: runtime settings, taking effect at
/// once (not written back to `vernemq.conf`). Every pair is checked before any is applied.
fn set_runtime(s: &HttpState, args: &[(String, String)]) -> Response {
    use crate::broker::NetsplitAction;
    if args.is_empty() {
        return text_error(StatusCode::BAD_REQUEST, "nothing to set: give KEY=VALUE pairs");
    }
    if args.iter().any(|(k, _)| k.starts_with("systree_")) {
        return set_systree(s, args);
    }
    let mut changes = Vec::with_capacity(args.len());
    for (key, value) in args {
        let action = match key.as_str() {
            "allow_register_during_netsplit" => NetsplitAction::Register,
            "allow_publish_during_netsplit" => NetsplitAction::Publish,
            "allow_subscribe_during_netsplit" => NetsplitAction::Subscribe,
            "allow_unsubscribe_during_netsplit" => NetsplitAction::Unsubscribe,
            other => return text_error(StatusCode::BAD_REQUEST, &format!("'{other}' cannot be set at runtime")),
        };
        let on = match value.as_str() {
            "on" | "true" => true,
            "off" | "false" => false,
            other => return text_error(StatusCode::BAD_REQUEST, &format!("{key}: '{other}' is not on or off")),
        };
        changes.push((key, action, on));
    }
    for (key, action, on) in changes {
        s.broker.netsplit.set(action, on);
        info!(setting = %key, value = if on { "on" } else { "off" }, "runtime setting changed");
    }
    text_result(Ok("Done".into()))
}

/// `vmq-admin set systree_enabled=on|off systree_interval=<ms>`: the `$SYS` tree's schedule,
/// taking effect at once. Every pair is checked before any is applied.
fn set_systree(s: &HttpState, args: &[(String, String)]) -> Response {
    let mut schedule = s.systree.borrow().clone();
    for (key, value) in args {
        match key.as_str() {
            "systree_enabled" => match value.as_str() {
                "on" | "true" => schedule.enabled = true,
                "off" | "false" => schedule.enabled = false,
                other => return text_error(StatusCode::BAD_REQUEST, &format!("{key}: '{other}' is not on or off")),
            },
            "systree_interval" => match value.parse::<u64>() {
                Ok(ms) => schedule.interval = std::time::Duration::from_millis(ms),
                Err(_) => {
                    return text_error(StatusCode::BAD_REQUEST, &format!("{key}: '{value}' is not milliseconds"));
                }
            },
            other => {
                return text_error(
                    StatusCode::BAD_REQUEST,
                    &format!("'{other}' cannot be set together with systree_enabled or systree_interval"),
                );
            }
        }
    }
    info!(enabled = schedule.enabled, interval = ?schedule.interval, "runtime setting changed: $SYS tree");
    s.systree.send_replace(schedule);
    text_result(Ok("Done".into()))
}

/// `-t <seconds>` / `--timeout=<seconds>` of `cluster leave` (VerneMQ's default 60).
fn leave_timeout(args: &[(String, String)]) -> Result<std::time::Duration, String> {
    match args.iter().rev().find(|(k, _)| k == "timeout") {
        None => Ok(std::time::Duration::from_secs(60)),
        Some((_, v)) => v
            .parse::<u64>()
            .map(std::time::Duration::from_secs)
            .map_err(|_| format!("-t expects a number of seconds, not '{v}'")),
    }
}

/// One progress line of a leave, as the CLI prints it.
fn leave_status_text(node: &str, s: &LeaveStatus) -> String {
    if s.queues_total == 0 {
        return format!("{node}: {}", s.phase);
    }
    format!(
        "{node}: {}: {}/{} queues, {}/{} messages moved",
        s.phase, s.queues_moved, s.queues_total, s.messages_moved, s.messages_total
    )
}

fn table(rows: Vec<Value>) -> Response {
    axum::Json(json!({"type": "table", "table": rows})).into_response()
}

async fn api(
    State(s): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(command): Path<String>,
    Query(args): Query<Vec<(String, String)>>,
) -> Response {
    if !authorised(&s, peer, &headers) {
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({"type": "text", "text": "API key required"})))
            .into_response();
    }
    let command = match vmq_admin_commands::by_path(&command) {
        Ok(command) => command,
        Err(e) => return text_error(StatusCode::NOT_FOUND, &e.to_string()),
    };
    if let Err(e) = command.check(&args) {
        return bad_request(&e);
    }
    match command.id {
        CommandId::ClusterShow => {
            table(s.cluster.members().into_iter().map(|m| json!({"Node": m.node, "Running": m.running})).collect())
        }
        CommandId::ClusterJoin => match required(command, &args, "discovery-node") {
            Ok(node) => text_result(s.cluster.join(node).await),
            Err(missing) => bad_request(&missing),
        },
        CommandId::ClusterLeave => match (required(command, &args, "node"), leave_timeout(&args)) {
            (Ok(node), Ok(timeout)) => {
                let kill = command.flag(&args, "kill_sessions");
                text_result(s.cluster.leave(node, kill, timeout).await)
            }
            (Err(missing), _) => bad_request(&missing),
            (_, Err(e)) => text_error(StatusCode::BAD_REQUEST, &e),
        },
        CommandId::ClusterLeaveStatus => match required(command, &args, "node") {
            Ok(node) => match s.cluster.leave_status(node).await {
                Ok(status) => {
                    let text = leave_status_text(node, &status);
                    axum::Json(json!({"type": "text", "text": text, "status": status})).into_response()
                }
                Err(e) => text_error(StatusCode::CONFLICT, &e),
            },
            Err(missing) => bad_request(&missing),
        },
        CommandId::Set => set_runtime(&s, &args),
        CommandId::ListenerShow => listeners::show(&s, command, &args),
        CommandId::MetricsShow => {
            let labels: Vec<(&str, &str)> = args
                .iter()
                .filter(|(k, _)| k == "request" || k == "peer")
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            text_result(Ok(metrics::show(s.clone(), command.flag(&args, "describe"), &labels)))
        }
        CommandId::ListenerStart => listeners::start(&s, command, &args).await,
        CommandId::ListenerStop => listeners::stop(&s, command, &args).await,
        CommandId::ListenerRestart => listeners::restart(&s, command, &args).await,
        CommandId::ListenerDelete => listeners::delete(&s, command, &args).await,
    }
}

/// The value of a required argument; `Command::check` has made sure it is there.
fn required<'a>(command: &Command, args: &'a [(String, String)], name: &str) -> Result<&'a str, CommandError> {
    command.value(args, name).ok_or_else(|| CommandError::MissingArgument(name.to_string()))
}

fn bad_request(e: &CommandError) -> Response {
    text_error(StatusCode::BAD_REQUEST, &e.to_string())
}
