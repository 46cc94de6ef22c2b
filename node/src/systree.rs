//! The `$SYS` tree (`systree_*`): every `systree_interval`, this node's node-wide figures (the
//! series `/metrics` exports with no label but `node`) are published to
//! `$SYS/<nodename>/<metric name, '/' for '_'>`, the value as text. VerneMQ does the same, so
//! `mqtt_publish_received` is `$SYS/<nodename>/mqtt/publish/received`.
//!
//! The messages are routed like any publish, to subscribers on every node; nothing waits for
//! their delivery.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::watch;
use tracing::info;
use vmq_config::SysTreeConfig;
use vmq_mqtt::QoS;

use crate::broker::message::Msg;
use crate::http::{HttpState, node_figures};

/// The topics of one node's figures, built once: `$SYS/<nodename>/<metric path>` per figure,
/// in the order of [`node_figures`].
fn topics(nodename: &str, state: &HttpState) -> Vec<Arc<str>> {
    node_figures(state)
        .iter()
        .map(|(def, _)| Arc::from(format!("$SYS/{nodename}/{}", def.name.replace('_', "/"))))
        .collect()
}

/// Publishes the tree every `cfg.interval` until `shutdown` turns true; returns at once when
/// the tree is switched off (`systree_enabled = off` or `systree_interval = 0`).
pub async fn run(state: Arc<HttpState>, cfg: SysTreeConfig, mut shutdown: watch::Receiver<bool>) {
    if !cfg.enabled || cfg.interval.is_zero() {
        info!("$SYS tree off");
        return;
    }
    let topics = topics(&state.nodename, &state);
    let mountpoint: Arc<str> = Arc::from(cfg.mountpoint.as_str());
    let qos = match cfg.qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    };
    info!(interval = ?cfg.interval, topics = %format!("$SYS/{}/#", state.nodename), "publishing the $SYS tree");
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + cfg.interval, cfg.interval);
    // A node paused for a while publishes once, not once per missed interval.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        for (topic, (_, value)) in topics.iter().zip(node_figures(&state)) {
            let msg = Msg {
                mountpoint: mountpoint.clone(),
                topic: topic.clone(),
                payload: Bytes::from(value.to_string()),
                qos,
                retain: cfg.retain,
                properties: None,
                expires_at: None,
                publisher: None,
            };
            state.broker.publish(Arc::new(msg));
        }
    }
}
