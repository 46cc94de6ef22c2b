//! Checkers: read a recorded history and say exactly what was violated.
//!
//! [`check`] dispatches on the run's workload. A [`Finding`] is either a violation (a promise
//! the cluster broke) or an anomaly VerneMQ's documentation allows under the run's settings
//! (QoS 0 loss; a publish that missed a subscription made on a remote node in the window of
//! uncertainty; QoS 1 duplicates); the two are reported apart and only violations fail a run.

pub mod known;
pub mod kv;
pub mod queue;
pub mod register;
pub mod report;
pub mod svg;

use anyhow::{Context, bail};
use serde::Serialize;

use crate::history::{Event, Record, RunInfo};

/// Examples kept per finding.
const EXAMPLES: usize = 5;
/// Times kept per finding for the timeline (a bound on memory, far above any real run's count).
const TIMES: usize = 1_000_000;

/// One kind of anomaly found in a history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable identifier (`lost-acked`, `qos2-duplicate`, `two-live-sessions`, ...).
    pub kind: String,
    /// How many instances.
    pub count: u64,
    /// What it means, in one line.
    pub meaning: String,
    /// A few instances, spelled out.
    pub examples: Vec<String>,
    /// When instances happened (ms), for the timeline; not in `report.json`.
    #[serde(skip)]
    pub times: Vec<u64>,
}

impl Finding {
    fn new(kind: &str, meaning: &str) -> Self {
        Self { kind: kind.to_owned(), count: 0, meaning: meaning.to_owned(), examples: Vec::new(), times: Vec::new() }
    }

    fn add(&mut self, t: u64, example: impl FnOnce() -> String) {
        self.count += 1;
        if self.examples.len() < EXAMPLES {
            self.examples.push(example());
        }
        if self.times.len() < TIMES {
            self.times.push(t);
        }
    }
}

/// The verdict on one history.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The run's parameters.
    pub info: RunInfo,
    /// Counters worth printing (`acknowledged publishes`, `convergence time`, ...).
    pub stats: Vec<(String, String)>,
    /// Broken promises; any of these makes the run red.
    pub violations: Vec<Finding>,
    /// Anomalies the documentation allows under the run's settings.
    pub allowed: Vec<Finding>,
    /// Milliseconds from start to end of the history.
    pub duration_ms: u64,
}

impl Report {
    /// True when no violation was found.
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    fn push(&mut self, f: Finding, allowed: bool) {
        if f.count > 0 {
            if allowed {
                self.allowed.push(f);
            } else {
                self.violations.push(f);
            }
        }
    }
}

/// Checks a history with the checker of its workload.
pub fn check(records: &[Record]) -> anyhow::Result<Report> {
    let info = records
        .iter()
        .find_map(|r| match &r.event {
            Event::Run(info) => Some(info.clone()),
            _ => None,
        })
        .context("the history has no `run` record")?;
    let mut report = Report {
        info: info.clone(),
        stats: Vec::new(),
        violations: Vec::new(),
        allowed: Vec::new(),
        duration_ms: records.iter().map(|r| r.t).max().unwrap_or(0),
    };
    match info.workload.as_str() {
        "queue" => queue::check(records, &mut report),
        "register" => register::check(records, &mut report),
        "subscriptions" | "retain" => kv::check(records, &mut report),
        other => bail!("unknown workload '{other}' in the history"),
    }
    let mut exits = Finding::new("node-crashed", "a node process exited that the nemesis did not kill");
    for r in records {
        if let Event::NodeExit { node, status } = &r.event {
            exits.add(r.t, || format!("node {node} exited ({status}) at t={} ms; see its console.log", r.t));
        }
    }
    report.push(exits, false);
    Ok(report)
}

/// Time of the final heal (the last `heal` nemesis event), if any.
pub fn final_heal(records: &[Record]) -> Option<u64> {
    records.iter().rev().find_map(|r| match &r.event {
        Event::Nemesis { fault, .. } if fault == "heal" => Some(r.t),
        _ => None,
    })
}

/// Intervals `[start, end]` (ms) during which a nemesis fault was active, with its name.
pub fn fault_windows(records: &[Record]) -> Vec<(u64, u64, String)> {
    let end = records.iter().map(|r| r.t).max().unwrap_or(0);
    let mut open: Option<(u64, String)> = None;
    let mut out = Vec::new();
    for r in records {
        if let Event::Nemesis { fault, active, .. } = &r.event {
            if *active {
                if let Some((s, f)) = open.take() {
                    out.push((s, r.t, f));
                }
                open = Some((r.t, fault.clone()));
            } else if let Some((s, f)) = open.take() {
                out.push((s, r.t, f));
            }
        }
    }
    if let Some((s, f)) = open {
        out.push((s, end, f));
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A `run` record for synthetic histories.
    pub fn run(workload: &str, publish_during_netsplit: &str) -> Record {
        Record {
            t: 0,
            event: Event::Run(RunInfo {
                workload: workload.into(),
                nemesis: "partition".into(),
                backend: "vmq_swc".into(),
                nodes: 3,
                seed: 1,
                time_s: 10,
                netsplit_settings: BTreeMap::from([(
                    "allow_publish_during_netsplit".to_owned(),
                    publish_during_netsplit.to_owned(),
                )]),
                register_bound_s: 10,
            }),
        }
    }

    /// A record at `t`.
    pub fn at(t: u64, event: Event) -> Record {
        Record { t, event }
    }

    #[test]
    fn a_history_without_run_record_is_an_error() {
        assert!(check(&[]).is_err());
    }

    #[test]
    fn a_node_that_exits_on_its_own_is_a_violation() {
        let h = [
            run("register", "off"),
            at(5, Event::NodeExit { node: 2, status: "signal: 6 (SIGABRT)".into() }),
            at(9, Event::Live { client: "r0".into(), conn: "a".into(), node: 1, alive: true }),
        ];
        let r = check(&h).unwrap();
        assert_eq!(r.violations.len(), 1);
        assert_eq!(r.violations[0].kind, "node-crashed");
    }

    #[test]
    fn fault_windows_pair_start_and_end() {
        let nem =
            |t, active| at(t, Event::Nemesis { fault: "kill".into(), nodes: vec![1], detail: String::new(), active });
        let w = fault_windows(&[nem(10, true), nem(20, false), nem(30, true)]);
        assert_eq!(w, vec![(10, 20, "kill".into()), (30, 30, "kill".into())]);
    }
}
