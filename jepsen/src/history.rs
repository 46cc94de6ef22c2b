//! The recorded history of a `vmq-jepsen test` run: one JSON object per line.
//!
//! Every line is a [`Record`]: the milliseconds since the run started (`t`) and one [`Event`],
//! tagged by `type`. The workloads write what they invoked and what came back; the nemesis writes
//! every fault with its time; the checkers in [`crate::check`] read nothing else, so a saved
//! history can be checked again (`vmq-jepsen check FILE`) without a cluster.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Milliseconds since the run started.
    pub t: u64,
    /// What happened.
    #[serde(flatten)]
    pub event: Event,
}

/// The run's parameters, the first line of every history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// `queue`, `register`, `subscriptions` or `retain`.
    pub workload: String,
    /// The nemesis faults, comma-separated as given (`partition,kill`), or `none`.
    pub nemesis: String,
    /// `vmq_swc` or `vmq_plumtree`.
    pub backend: String,
    /// Number of nodes.
    pub nodes: usize,
    /// Seed of the nemesis schedule and the workload's random choices.
    pub seed: u64,
    /// Seconds of faults.
    pub time_s: u64,
    /// The `allow_*_during_netsplit` settings the nodes ran with (`on`/`off`).
    pub netsplit_settings: BTreeMap<String, String>,
    /// Seconds a client id may hold two live sessions after the final heal (register).
    pub register_bound_s: u64,
}

/// What happened; the variant name is the `type` field of the JSON line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The run's parameters.
    Run(RunInfo),
    /// A phase of the run begins: `workload`, `final_heal`, `quiet`, `drain`, `probe`, `end`.
    Phase {
        /// The phase.
        name: String,
    },
    /// The nemesis started (`active`) or ended a fault.
    Nemesis {
        /// `partition-halves`, `partition-isolate`, `partition-bridge`, `partition-oneway`,
        /// `slow`, `kill`, `pause`, `heal`, ...
        fault: String,
        /// Nodes involved (1-based).
        nodes: Vec<usize>,
        /// Human-readable description (the blocked links, the netem settings, ...).
        detail: String,
        /// True when the fault begins, false when it ends.
        active: bool,
    },
    /// A node process exited without the nemesis killing it.
    NodeExit {
        /// The node (1-based).
        node: usize,
        /// Its exit status.
        status: String,
    },
    /// A client connection attempt and its outcome.
    Connect {
        /// Client id.
        client: String,
        /// Unique id of this connection (client id and a counter).
        conn: String,
        /// Node connected to (1-based).
        node: usize,
        /// CONNACK 0 received.
        ok: bool,
        /// CONNACK's session-present flag.
        session_present: bool,
        /// Why it failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A connection ended (closed by the broker, timed out, or by us).
    Closed {
        /// Client id.
        client: String,
        /// Connection id.
        conn: String,
        /// Why.
        reason: String,
    },
    /// SUBACK for a subscription (a success code).
    Subscribed {
        /// Client id.
        client: String,
        /// Node it was made on.
        node: usize,
        /// Topic filter.
        topic: String,
        /// Granted QoS.
        qos: u8,
    },
    /// A publish was written to the broker (queue workload).
    Publish {
        /// Publisher name (also its client id).
        publisher: String,
        /// Increases every time the publisher reconnects; order is checked per epoch.
        epoch: u32,
        /// Unique per publisher across the run.
        seq: u64,
        /// Node it was published on.
        node: usize,
        /// Publish QoS.
        qos: u8,
    },
    /// The broker acknowledged a publish (PUBACK, or PUBCOMP for QoS 2).
    PublishOk {
        /// Publisher name.
        publisher: String,
        /// Sequence number.
        seq: u64,
    },
    /// A subscriber received a message (queue workload).
    Deliver {
        /// Subscriber client id.
        subscriber: String,
        /// Publisher named in the payload.
        publisher: String,
        /// Sequence number in the payload.
        seq: u64,
        /// Delivery QoS.
        qos: u8,
        /// DUP flag.
        dup: bool,
    },
    /// A liveness probe of one connection at the end of the register workload.
    Live {
        /// Client id.
        client: String,
        /// Connection id.
        conn: String,
        /// Node the connection is on.
        node: usize,
        /// Answered a PINGREQ within the probe's timeout.
        alive: bool,
    },
    /// A replicated-state operation (subscriptions / retain workloads) was sent.
    Op {
        /// Unique id of the operation.
        id: u64,
        /// The key: `client topic` for subscriptions, the topic for retain.
        key: String,
        /// The value it sets: `subscribed`, the retained payload; `None` for unsubscribe / clear.
        value: Option<String>,
        /// Node it was sent to.
        node: usize,
    },
    /// The operation was acknowledged (SUBACK, UNSUBACK, PUBACK).
    OpOk {
        /// The operation's id.
        id: u64,
    },
    /// What one node showed for every key in one probe round.
    Probe {
        /// Probe round, from 0.
        round: u32,
        /// Node probed.
        node: usize,
        /// Key to observed value; a key absent from the map was observed absent.
        state: BTreeMap<String, String>,
    },
}

/// Appends records to a JSONL file; shared by every task of a run.
#[derive(Debug)]
pub struct HistoryWriter {
    start: Instant,
    out: Mutex<BufWriter<File>>,
    /// Running totals for the progress line.
    pub counts: Counts,
}

/// Running totals of a history, for the progress line.
#[derive(Debug, Default)]
pub struct Counts {
    /// Publishes, operations and successful connects.
    pub invoked: AtomicU64,
    /// Publishes and operations acknowledged.
    pub acked: AtomicU64,
    /// Messages delivered to subscribers.
    pub delivered: AtomicU64,
    /// Connection attempts that failed.
    pub connect_failed: AtomicU64,
    /// Faults started.
    pub faults: AtomicU64,
}

impl HistoryWriter {
    /// Creates (truncates) the history file; `t` counts from now.
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self { start: Instant::now(), out: Mutex::new(BufWriter::new(file)), counts: Counts::default() })
    }

    /// Milliseconds since the run started.
    pub fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Appends one event stamped with the current time.
    pub fn record(&self, event: Event) {
        let c = &self.counts;
        let counter = match &event {
            Event::Publish { .. } | Event::Op { .. } | Event::Connect { ok: true, .. } => Some(&c.invoked),
            Event::PublishOk { .. } | Event::OpOk { .. } => Some(&c.acked),
            Event::Deliver { .. } => Some(&c.delivered),
            Event::Connect { ok: false, .. } => Some(&c.connect_failed),
            Event::Nemesis { active: true, .. } => Some(&c.faults),
            _ => None,
        };
        if let Some(counter) = counter {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let record = Record { t: self.now(), event };
        // A history that cannot be written makes the run meaningless, but the run still has to
        // tear the cluster down, so a write error is reported once at `flush` rather than here.
        if let Ok(line) = serde_json::to_string(&record) {
            // The lock is held only for a buffered write, never across an await.
            let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
            let _ = writeln!(out, "{line}");
        }
    }

    /// Flushes the file.
    pub fn flush(&self) -> anyhow::Result<()> {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        out.flush().context("cannot write the history")
    }
}

/// Reads a history file; a malformed line is an error naming its line number.
pub fn read(path: &Path) -> anyhow::Result<Vec<Record>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let record: Record = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not a history record", path.display(), i + 1))?;
        out.push(record);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_roundtrip_through_a_jsonl_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.jsonl");
        let w = HistoryWriter::create(&path).unwrap();
        w.record(Event::Phase { name: "workload".into() });
        w.record(Event::PublishOk { publisher: "p1".into(), seq: 7 });
        w.flush().unwrap();
        let back = read(&path).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[1].event, Event::PublishOk { publisher: "p1".into(), seq: 7 });
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.lines().nth(1).unwrap().contains(r#""type":"publish_ok""#), "{text}");
    }
}
