//! Plumtree's own properties over its simulated network: the eager-message bound of a settled
//! tree, and anti-entropy repair after a partition. Convergence and deletes that stay deleted
//! are in the suite every backend runs (`tests/suite.rs`, `vmq_storage::sim::suite`).

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use vmq_plumtree::PlumtreeConfig;
use vmq_plumtree::sim::Sim;
use vmq_storage::metadata::MetaKey;

const MINUTE: u64 = 60_000;

fn config(name: &'static str, cases: u32) -> ProptestConfig {
    let path: &'static str = Box::leak(format!("../proptest-regressions/plumtree-{name}.txt").into_boxed_str());
    // PLUMTREE_PROPTEST_CASES raises the case count for a deep run without editing the code.
    let cases = std::env::var("PLUMTREE_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(path))),
        ..ProptestConfig::default()
    }
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("warn").try_init();
}

fn key(k: u8) -> MetaKey {
    MetaKey::new(if k.is_multiple_of(2) { "subscriber" } else { "retain" }, vec![k])
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
        prop_assert!(eager <= (n as u64) - 1 + EAGER_SLACK, "{} eager pushes for {} nodes: {:?}", eager, n, sim.stats.sent);
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
