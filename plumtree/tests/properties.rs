//! Property tests over the simulated network: convergence, no resurrection of deletes, the
//! eager-message bound of a settled tree, and anti-entropy repair after a partition.

use std::collections::BTreeSet;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use vmq_plumtree::PlumtreeConfig;
use vmq_plumtree::sim::{Faults, Sim};
use vmq_storage::metadata::MetaKey;

const MINUTE: u64 = 60_000;

fn config(name: &'static str, cases: u32) -> ProptestConfig {
    let path: &'static str =
        Box::leak(format!("../proptest-regressions/plumtree-{name}.txt").into_boxed_str());
    // PLUMTREE_PROPTEST_CASES raises the case count for a deep run without editing the code.
    let cases = std::env::var("PLUMTREE_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(path))),
        ..ProptestConfig::default()
    }
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("warn")
        .try_init();
}

fn key(k: u8) -> MetaKey {
    MetaKey::new(
        if k.is_multiple_of(2) {
            "subscriber"
        } else {
            "retain"
        },
        vec![k],
    )
}

/// One step of a random schedule.
#[derive(Debug, Clone)]
enum Op {
    Put {
        node: usize,
        key: u8,
        data: u8,
    },
    Delete {
        node: usize,
        key: u8,
    },
    Resolve {
        node: usize,
        key: u8,
    },
    Cut {
        a: usize,
        b: usize,
    },
    Heal,
    Crash {
        node: usize,
    },
    Recover {
        node: usize,
    },
    Run {
        ms: u64,
    },
    /// The node leaves the cluster (it keeps its data, as a stopped node would).
    Leave {
        node: usize,
    },
    /// The node (re)joins the cluster.
    Join {
        node: usize,
    },
}

fn op(n: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..n, 0u8..6, any::<u8>()).prop_map(|(node, key, data)| Op::Put { node, key, data }),
        2 => (0..n, 0u8..6).prop_map(|(node, key)| Op::Delete { node, key }),
        1 => (0..n, 0u8..6).prop_map(|(node, key)| Op::Resolve { node, key }),
        1 => (0..n, 0..n).prop_map(|(a, b)| Op::Cut { a, b }),
        1 => Just(Op::Heal),
        1 => (0..n).prop_map(|node| Op::Crash { node }),
        1 => (0..n).prop_map(|node| Op::Recover { node }),
        3 => (1u64..20_000).prop_map(|ms| Op::Run { ms }),
        1 => (0..n).prop_map(|node| Op::Leave { node }),
        1 => (0..n).prop_map(|node| Op::Join { node }),
    ]
}

fn faults() -> impl Strategy<Value = Faults> {
    (0.0..0.3f64, 0.0..0.2f64, 0.0..0.5f64).prop_map(|(drop, duplicate, reorder)| Faults {
        drop,
        duplicate,
        reorder,
    })
}

fn schedule() -> impl Strategy<Value = (usize, u64, Faults, Vec<Op>)> {
    (2usize..5).prop_flat_map(|n| {
        (
            Just(n),
            any::<u64>(),
            faults(),
            prop::collection::vec(op(n), 1..40),
        )
    })
}

/// Applies `ops`; crashed nodes skip local operations.
fn apply(sim: &mut Sim, ops: &[Op], crashed: &mut BTreeSet<usize>) {
    for op in ops {
        match *op {
            Op::Put { node, key: k, data } if !crashed.contains(&node) => {
                sim.put(node, &key(k), &[data]);
            }
            Op::Delete { node, key: k } if !crashed.contains(&node) => sim.delete(node, &key(k)),
            Op::Resolve { node, key: k } if !crashed.contains(&node) => {
                sim.read_resolved(node, &key(k));
            }
            Op::Cut { a, b } => sim.cut(a, b),
            Op::Heal => sim.heal(),
            Op::Crash { node } if crashed.insert(node) => sim.crash(node),
            Op::Recover { node } if crashed.remove(&node) => sim.recover(node),
            Op::Run { ms } => sim.run_for(ms),
            Op::Leave { node } => {
                let members: Vec<usize> =
                    sim.members().into_iter().filter(|m| *m != node).collect();
                sim.set_members(&members);
            }
            Op::Join { node } => {
                let mut members = sim.members();
                members.push(node);
                sim.set_members(&members);
            }
            _ => {}
        }
    }
}

/// Heals everything and brings every node back into the cluster.
fn repair(sim: &mut Sim, crashed: &mut BTreeSet<usize>) {
    sim.set_faults(Faults::default());
    sim.heal();
    let all: Vec<usize> = (0..sim.len()).collect();
    sim.set_members(&all);
    for node in std::mem::take(crashed) {
        sim.recover(node);
    }
}

fn reads_agree(sim: &Sim, n: usize) -> Result<(), TestCaseError> {
    for k in 0..6 {
        let first = sim.read(0, &key(k));
        for i in 1..n {
            prop_assert_eq!(&sim.read(i, &key(k)), &first, "key {} node {}", k, i);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config("convergence", 48))]

    /// Any interleaving of writes, deletes, resolutions, partitions, crashes and lossy
    /// delivery converges once the network is healed.
    #[test]
    fn replicas_converge_after_any_interleaving((n, seed, faults, ops) in schedule()) {
        init_tracing();
        let mut sim = Sim::new(n, PlumtreeConfig::default(), seed);
        sim.set_faults(faults);
        let mut crashed = BTreeSet::new();
        apply(&mut sim, &ops, &mut crashed);
        repair(&mut sim, &mut crashed);
        prop_assert!(sim.run_until_converged(30 * MINUTE), "no convergence");
        reads_agree(&sim, n)?;
    }
}

proptest! {
    #![proptest_config(config("no_resurrection", 32))]

    /// A delete issued after every node saw the key's values is never undone: not by lossy
    /// delivery, partitions, crashes, concurrent writes to other keys, nor by reclaiming the
    /// tombstones afterwards.
    #[test]
    fn deletes_are_not_resurrected(
        (n, seed, faults, ops) in schedule(),
        doomed in prop::collection::btree_set(0u8..6, 1..4),
        deleter in 0usize..4,
    ) {
        init_tracing();
        let config = PlumtreeConfig { tombstone_grace_period: 20_000, ..PlumtreeConfig::default() };
        let mut sim = Sim::new(n, config, seed);
        for k in 0..6 {
            sim.put(usize::from(k) % n, &key(k), b"v");
        }
        prop_assert!(sim.run_until_converged(10 * MINUTE));
        for k in &doomed {
            sim.delete(deleter % n, &key(*k));
        }
        // The rest of the schedule may not touch the doomed keys.
        let ops: Vec<Op> = ops
            .into_iter()
.filter(|op| !matches!(op, Op::Put { key, .. } | Op::Delete { key, .. } | Op::Resolve { key, .. } if doomed.contains(key)))
            // A node that left keeps its stale values; rejoining it is the node's
            // `prevent_nonempty_join` concern, not the replica's.
            .filter(|op| !matches!(op, Op::Leave { .. } | Op::Join { .. }))
            .collect();
        sim.set_faults(faults);
        let mut crashed = BTreeSet::new();
        apply(&mut sim, &ops, &mut crashed);
        repair(&mut sim, &mut crashed);
        prop_assert!(sim.run_until_converged(30 * MINUTE), "no convergence");
        // Long enough for every tombstone to be confirmed and reclaimed.
        sim.run_for(20 * MINUTE);
        prop_assert!(sim.run_until_converged(30 * MINUTE), "no convergence after reclamation");
        for i in 0..n {
            for k in &doomed {
                prop_assert!(sim.read(i, &key(*k)).is_empty(), "key {} came back on node {}", k, i);
            }
            prop_assert_eq!(sim.replica(i).tombstone_count(), 0, "node {} kept tombstones", i);
        }
        reads_agree(&sim, n)?;
    }
}

proptest! {
    #![proptest_config(config("eager_bound", 24))]

    /// Plumtree §3: once the tree of a root has settled on a stable network, a broadcast
    /// reaches every node with N-1 eager pushes plus a bounded number more.
    #[test]
    fn settled_tree_uses_about_n_minus_one_eager_messages(n in 3usize..14, root_pick in any::<usize>(), seed in any::<u64>()) {
        init_tracing();
        let mut sim = Sim::new(n, PlumtreeConfig::default(), seed);
        let root = root_pick % n;
        for round in 0..12u8 {
            sim.put(root, &key(0), &[round]);
            sim.run_for(30_000);
        }
        sim.reset_counters();
        let value = sim.put(root, &key(0), b"final");
        prop_assert!(sim.run_until_quiet(MINUTE));
        for i in 0..n {
            prop_assert_eq!(sim.read(i, &key(0)), vec![value.clone()], "node {}", i);
        }
        let eager = sim.sent("broadcast");
        prop_assert!(eager >= (n as u64) - 1);
        prop_assert!(eager <= (n as u64) - 1 + EAGER_SLACK, "{} eager pushes for {} nodes: {:?}", eager, n, sim.counters());
        prop_assert_eq!(sim.sent("graft"), 0);
    }
}

/// Extra eager pushes allowed on a settled tree.
const EAGER_SLACK: u64 = 2;

proptest! {
    #![proptest_config(config("partition_repair", 32))]

    /// A node cut off while writes happened elsewhere is repaired by anti-entropy alone (lazy
    /// announcements are switched off).
    #[test]
    fn a_partitioned_node_is_repaired_by_anti_entropy(
        n in 2usize..6,
        seed in any::<u64>(),
        writes in prop::collection::vec((any::<usize>(), 0u8..6, any::<u8>()), 1..20),
    ) {
        init_tracing();
        let config = PlumtreeConfig { min_lazy_tick_interval: 0, ..PlumtreeConfig::default() };
        let mut sim = Sim::new(n, config, seed);
        let victim = n - 1;
        sim.isolate(victim);
        for (node, k, data) in &writes {
            sim.put(node % (n - 1), &key(*k), &[*data]);
        }
        sim.run_for(MINUTE);
        sim.heal();
        prop_assert!(sim.run_until_converged(30 * MINUTE), "no convergence");
        reads_agree(&sim, n)?;
        let repaired: u64 = (0..n).map(|i| sim.replica(i).stats().keys_repaired).sum();
        prop_assert!(repaired > 0);
    }
}
