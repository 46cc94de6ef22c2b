//! The client workloads of `vmq-jepsen test`. Each records what it invoked and what came back
//! into the history; none of them judges anything (that is [`crate::check`]'s job).

pub mod kv;
pub mod queue;
pub mod register;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::time::Duration;

use tokio::sync::watch;

use crate::history::{Event, HistoryWriter};

/// Where the run is; workloads watch it to know when to stop publishing, settle and probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Faults are being injected.
    Faults,
    /// After the final heal: clients keep working, nothing breaks.
    Quiet,
    /// Publishing has stopped; subscribers drain, registers and replicas are probed.
    Settle,
    /// Everything stops.
    End,
}

/// What every workload task gets.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The shared history.
    pub history: Arc<HistoryWriter>,
    /// Number of nodes.
    pub nodes: usize,
    /// Seed for the workload's random choices.
    pub seed: u64,
    /// The run's phase.
    pub phase: watch::Receiver<Phase>,
    /// Publishes per second per publisher (queue) or operations per second per client.
    pub rate: u32,
    /// Set by a workload when its final reading is complete (the kv probes).
    pub done: Arc<AtomicBool>,
    /// Subscribers that have their first SUBACK (queue): publishers wait for all of them.
    pub subscribed: Arc<AtomicUsize>,
}

impl Ctx {
    /// The current phase.
    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Waits until the phase is at least `p`.
    pub async fn until(&mut self, p: Phase) {
        let _ = self.phase.wait_for(|now| *now >= p).await;
    }

    /// Records that connection `conn` of `client` ended (`reason`), then pauses before the
    /// client's next connect while the run is still before `reconnect_until`.
    pub async fn closed(&self, client: &str, conn: String, reason: String, reconnect_until: Phase) {
        self.history.record(Event::Closed { client: client.to_owned(), conn, reason });
        if self.phase() < reconnect_until {
            tokio::time::sleep(RECONNECT_PAUSE).await;
        }
    }
}

/// How long a client waits for CONNACK, SUBACK and the like.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection that answers nothing for this long is given up.
pub const SILENCE_TIMEOUT: Duration = Duration::from_secs(8);
/// Pause before reconnecting after a failure.
pub const RECONNECT_PAUSE: Duration = Duration::from_millis(500);
