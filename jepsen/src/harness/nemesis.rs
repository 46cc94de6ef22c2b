//! The nemesis: a seeded schedule of network and process faults, every event logged.
//!
//! Each step picks one fault among the enabled kinds, holds it for a few seconds, undoes it
//! (heal, restart, SIGCONT) and waits a little before the next. [`Nemesis::final_heal`] undoes
//! everything at the end of the schedule. Partitions are packet loss in the nodes' nftables
//! chains (see [`super::net`]), so the nodes see silence, never a closed socket.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::bail;

use super::cluster::Cluster;
use super::net::{Faults, Network};
use super::rng::Rng;
use crate::history::{Event, HistoryWriter};

/// A kind of fault that `--nemesis` enables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// Network partitions: random halves, isolate one node, bridge, one-way.
    Partition,
    /// `kill -9` a node, restart it on the same data directory.
    Kill,
    /// SIGSTOP a node, SIGCONT it later.
    Pause,
    /// A slow, lossy link (netem, or random loss where netem is missing).
    Slow,
}

impl FaultKind {
    /// Parses `partition,kill,pause,slow` (or `none`).
    pub fn parse_list(s: &str) -> anyhow::Result<Vec<FaultKind>> {
        let mut out = BTreeSet::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            out.insert(match part {
                "partition" => FaultKind::Partition,
                "kill" => FaultKind::Kill,
                "pause" => FaultKind::Pause,
                "slow" => FaultKind::Slow,
                "none" => continue,
                other => bail!("unknown nemesis '{other}' (accepted: partition, kill, pause, slow, none)"),
            });
        }
        Ok(out.into_iter().collect())
    }
}

/// Drives the faults of one run.
#[derive(Debug)]
pub struct Nemesis {
    kinds: Vec<FaultKind>,
    rng: Rng,
    nodes: usize,
}

/// What is currently broken, to be undone.
#[derive(Debug, Default)]
struct Active {
    fault: String,
    nodes: Vec<usize>,
    killed: Option<usize>,
    paused: Option<usize>,
    network: bool,
}

impl Nemesis {
    /// A nemesis over `nodes` nodes with `kinds` enabled.
    pub fn new(kinds: Vec<FaultKind>, seed: u64, nodes: usize) -> Self {
        Self { kinds, rng: Rng::new(seed, 0x6e65_6d65), nodes }
    }

    /// Runs the schedule for `duration`: fault, hold 3-6 s, undo, rest 2-4 s, repeat.
    pub async fn run(
        &mut self,
        duration: Duration,
        net: &Network,
        cluster: &mut Cluster,
        history: &HistoryWriter,
    ) -> anyhow::Result<()> {
        let end = tokio::time::Instant::now() + duration;
        // Let the workload settle before the first fault.
        tokio::time::sleep(Duration::from_secs(2).min(duration)).await;
        while tokio::time::Instant::now() + Duration::from_secs(3) < end {
            record_exits(cluster, history);
            if self.kinds.is_empty() {
                tokio::time::sleep_until(end).await;
                break;
            }
            let active = self.start_fault(net, cluster, history)?;
            let hold = Duration::from_millis(self.rng.range(3_000, 6_000));
            tokio::time::sleep_until((tokio::time::Instant::now() + hold).min(end)).await;
            self.undo(active, net, cluster, history)?;
            let rest = Duration::from_millis(self.rng.range(2_000, 4_000));
            tokio::time::sleep_until((tokio::time::Instant::now() + rest).min(end)).await;
        }
        Ok(())
    }

    fn start_fault(&mut self, net: &Network, cluster: &mut Cluster, history: &HistoryWriter) -> anyhow::Result<Active> {
        let kind = self.kinds[self.rng.below(self.kinds.len() as u64) as usize];
        let n = self.nodes;
        let mut active = Active::default();
        let detail;
        match kind {
            FaultKind::Partition if n >= 2 => {
                let mut faults = Faults::default();
                let choice = self.rng.below(if n >= 3 { 4 } else { 3 });
                let mut order: Vec<usize> = (1..=n).collect();
                self.rng.shuffle(&mut order);
                let (name, blocked) = match choice {
                    0 => {
                        let (a, b) = order.split_at(n / 2);
                        detail = format!("{a:?} | {b:?}");
                        ("partition-halves", cut(a, b, true))
                    }
                    1 => {
                        let (a, b) = order.split_at(1);
                        detail = format!("{a:?} isolated from {b:?}");
                        ("partition-isolate", cut(a, b, true))
                    }
                    2 => {
                        let (a, b) = order.split_at(1);
                        detail = format!("{a:?} cannot send to {b:?} (one-way)");
                        ("partition-oneway", cut(a, b, false))
                    }
                    _ => {
                        // Bridge: two halves that cannot see each other, and one node that
                        // sees both (each side's majority goes through it).
                        let bridge = order[0];
                        let rest = &order[1..];
                        let (a, b) = rest.split_at(rest.len() / 2);
                        detail = format!("{a:?} | {b:?}, bridged by [{bridge}]");
                        ("partition-bridge", cut(a, b, true))
                    }
                };
                faults.blocked = blocked;
                net.apply(&faults)?;
                active.fault = name.into();
                active.nodes = order;
                active.network = true;
            }
            FaultKind::Slow | FaultKind::Partition => {
                let node = self.rng.node(n);
                let (delay, loss, reorder) = (self.rng.range(50, 300) as u32, self.rng.range(5, 30) as u32, 25);
                net.apply(&Faults { blocked: BTreeSet::new(), slow: vec![(node, delay, loss, reorder)] })?;
                detail = if net.has_netem() {
                    format!("netem on node {node}: delay {delay}ms, loss {loss}%, reorder {reorder}%")
                } else {
                    format!("random loss {loss}% on node {node}'s links (no netem in this kernel)")
                };
                active.fault = "slow".into();
                active.nodes = vec![node];
                active.network = true;
            }
            FaultKind::Kill => {
                let node = self.rng.node(n);
                cluster.kill(node);
                detail = format!("kill -9 node {node}");
                active.fault = "kill".into();
                active.nodes = vec![node];
                active.killed = Some(node);
            }
            FaultKind::Pause => {
                let node = self.rng.node(n);
                cluster.pause(node, true)?;
                detail = format!("SIGSTOP node {node}");
                active.fault = "pause".into();
                active.nodes = vec![node];
                active.paused = Some(node);
            }
        }
        history.record(Event::Nemesis {
            fault: active.fault.clone(),
            nodes: active.nodes.clone(),
            detail,
            active: true,
        });
        Ok(active)
    }

    fn undo(
        &mut self,
        active: Active,
        net: &Network,
        cluster: &mut Cluster,
        history: &HistoryWriter,
    ) -> anyhow::Result<()> {
        let detail = if active.network {
            net.apply(&Faults::default())?;
            "links restored".to_owned()
        } else if let Some(node) = active.killed {
            cluster.restart(node)?;
            format!("node {node} restarted on its data directory")
        } else if let Some(node) = active.paused {
            cluster.pause(node, false)?;
            format!("SIGCONT node {node}")
        } else {
            String::new()
        };
        history.record(Event::Nemesis { fault: active.fault, nodes: active.nodes, detail, active: false });
        Ok(())
    }

    /// Heals every link, resumes and restarts every node, and logs it.
    pub fn final_heal(&mut self, net: &Network, cluster: &mut Cluster, history: &HistoryWriter) -> anyhow::Result<()> {
        record_exits(cluster, history);
        net.apply(&Faults::default())?;
        let revived = cluster.revive_all()?;
        history.record(Event::Nemesis {
            fault: "heal".into(),
            nodes: revived.clone(),
            detail: format!("final heal: all links restored, nodes revived: {revived:?}"),
            active: false,
        });
        Ok(())
    }
}

/// Records nodes that exited on their own (a crash is a finding, not a fault we made).
pub fn record_exits(cluster: &mut Cluster, history: &HistoryWriter) {
    for (node, status) in cluster.crashed() {
        history.record(Event::NodeExit { node, status });
    }
}

/// Directed links from `a` to `b` (and back when `both`).
fn cut(a: &[usize], b: &[usize], both: bool) -> BTreeSet<(usize, usize)> {
    let mut out = BTreeSet::new();
    for &x in a {
        for &y in b {
            out.insert((x, y));
            if both {
                out.insert((y, x));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nemesis_list_parses_and_rejects_unknown_faults() {
        assert_eq!(FaultKind::parse_list("partition,kill").unwrap(), vec![FaultKind::Partition, FaultKind::Kill]);
        assert!(FaultKind::parse_list("none").unwrap().is_empty());
        assert!(FaultKind::parse_list("flood").is_err());
    }

    #[test]
    fn one_way_cut_blocks_only_one_direction() {
        let links = cut(&[1], &[2, 3], false);
        assert_eq!(links, BTreeSet::from([(1, 2), (1, 3)]));
        assert_eq!(cut(&[1], &[2], true), BTreeSet::from([(1, 2), (2, 1)]));
    }
}
