//! The `$SYS` tree (`systree_*`): every `systree_interval`, this node's node-wide figures (the
//! series `/metrics` exports with no label but `node`) are published to
//! `$SYS/<nodename>/<metric name, '/' for '_'>`, the value as text. VerneMQ does the same, so
//! `mqtt_publish_received` is `$SYS/<nodename>/mqtt/publish/received`.
//!
//! `vmq-admin set systree_enabled=.. systree_interval=..` changes the schedule at runtime, as
//! in VerneMQ. The messages are routed like any publish, to subscribers on every node; nothing waits for
//! their delivery.

use std::sync::Arc;
use std::time::Duration;

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

/// When the tree is published; `vmq-admin set` changes it at runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// `systree_enabled`.
    pub enabled: bool,
    /// `systree_interval`; zero switches publishing off.
    pub interval: Duration,
}

impl Schedule {
    fn on(&self) -> bool {
        self.enabled && !self.interval.is_zero()
    }
}

impl From<&SysTreeConfig> for Schedule {
    fn from(cfg: &SysTreeConfig) -> Schedule {
        Schedule { enabled: cfg.enabled, interval: cfg.interval }
    }
}

/// Publishes the tree on the schedule in `state.systree` until `shutdown` turns true. A new
/// schedule takes effect at once: the next publication is one new interval away.
pub async fn run(state: Arc<HttpState>, cfg: SysTreeConfig, mut shutdown: watch::Receiver<bool>) {
    let topics = topics(&state.nodename, &state);
    let mountpoint: Arc<str> = Arc::from(cfg.mountpoint.as_str());
    let qos = match cfg.qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    };
    let mut schedules = state.systree.subscribe();
    loop {
        let schedule = schedules.borrow_and_update().clone();
        if schedule.on() {
            info!(interval = ?schedule.interval, topics = %format!("$SYS/{}/#", state.nodename), "publishing the $SYS tree");
        } else {
            info!("$SYS tree off");
        }
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + schedule.interval,
            schedule.interval.max(Duration::from_millis(1)),
        );
        // A node paused for a while publishes once, not once per missed interval.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick(), if schedule.on() => {}
                changed = schedules.changed() => match changed {
                    Ok(()) => break,
                    Err(_) => return,
                },
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
}
