//! The scenarios and properties every metadata backend must pass, on [`Sim`].
//!
//! A backend's tests instantiate them all with
//! [`metadata_backend_suite!`](crate::metadata_backend_suite), given a [`Profile`]: its
//! configurations and the bounds it promises. Failing proptest cases are kept in
//! `proptest-regressions/<backend>-<property>.txt` at the workspace root.

use std::collections::BTreeSet;

use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, TestCaseError};

use super::{History, NetConfig, Sim, SimBackend};
use crate::metadata::{MetaKey, PREFIX_RETAIN, PREFIX_SUBSCRIBER, lww};

/// A backend's configurations and promises, for the suite.
#[derive(Debug, Clone)]
pub struct Profile<C> {
    /// Names the regression files: `swc`, `plumtree`.
    pub name: &'static str,
    /// Periodic anti-entropy on a short timer and tombstones collected soon: for histories
    /// on a lossy network, where only the timers repair what was lost.
    pub periodic: C,
    /// No periodic repair at all: what converges after a heal converges through the heal.
    pub heal_only: C,
    /// `heal_only` plus what the backend needs to spread writes made after a heal on trees
    /// or state that the split reshaped (plumtree's lazy tick); for the bounded-agreement
    /// property.
    pub after_heal: C,
    /// Virtual ms within which `periodic` replicas converge and collect once all is healed.
    pub settle_ms: u64,
    /// Virtual ms within which `after_heal` replicas agree once the last detector learned
    /// of the last heal.
    pub agree_after_heal_ms: u64,
    /// Anti-entropy exchanges per ordered pair of nodes that catching up after a heal takes
    /// at most.
    pub exchanges_per_pair: u64,
}

/// The proptest configuration of property `test`: `cases` cases (`SIM_PROPTEST_CASES`
/// overrides it for a deep run), failures kept per backend and property.
pub fn proptest_config<C>(profile: &Profile<C>, test: &str, cases: u32) -> ProptestConfig {
    let path: &'static str = Box::leak(format!("../proptest-regressions/{}-{test}.txt", profile.name).into_boxed_str());
    let cases = std::env::var("SIM_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(path))),
        ..ProptestConfig::default()
    }
}

fn key(k: u8) -> MetaKey {
    MetaKey::new("p", vec![k])
}

fn data<B: SimBackend>(sim: &Sim<B>, i: usize, k: &MetaKey) -> Vec<Vec<u8>> {
    sim.read(i, k).into_iter().map(|v| v.data).collect()
}

fn assert_everywhere<B: SimBackend>(sim: &Sim<B>, nodes: &[usize], k: &MetaKey, want: &[&[u8]]) {
    let want: Vec<Vec<u8>> = want.iter().map(|w| w.to_vec()).collect();
    for &i in nodes {
        assert_eq!(data(sim, i, k), want, "node {i}, key {k:?}");
    }
}

const MINUTE: u64 = 60_000;

// ----- scenarios ------------------------------------------------------------------------

/// A write, an overwrite and a delete each reach every node (`metadata_SUITE` and
/// `vmq_swc_store_SUITE:read_write_delete_test`).
pub fn read_write_delete<B: SimBackend>(p: &Profile<B::Config>) {
    let mut sim = Sim::<B>::new(4, p.periodic.clone(), 1);
    let all = [0, 1, 2, 3];
    let k = key(1);
    sim.put(0, &k, b"bar");
    assert!(sim.run_until_converged(MINUTE));
    assert_everywhere(&sim, &all, &k, &[b"bar"]);
    sim.put(1, &k, b"baz");
    assert!(sim.run_until_converged(MINUTE));
    assert_everywhere(&sim, &all, &k, &[b"baz"]);
    sim.delete(2, &k);
    assert!(sim.run_until_converged(MINUTE));
    assert_everywhere(&sim, &all, &k, &[]);
}

/// Writes on one side of a partition reach the other side after the heal, which the
/// detectors learn of late (`partitioned_cluster_test`).
pub fn partitioned_cluster<B: SimBackend>(p: &Profile<B::Config>) {
    let mut sim = Sim::<B>::new(4, p.periodic.clone(), 2);
    sim.set_detection_delay_all(300);
    let k = key(1);
    sim.put(0, &k, b"bar");
    assert!(sim.run_until_converged(MINUTE));
    sim.partition(&[0, 1]);
    sim.put(0, &k, b"baz");
    sim.run_for(MINUTE);
    assert_everywhere(&sim, &[0, 1], &k, &[b"baz"]);
    assert_everywhere(&sim, &[2, 3], &k, &[b"bar"]);
    sim.heal();
    assert!(sim.run_until_converged(p.settle_ms));
    assert_everywhere(&sim, &[0, 1, 2, 3], &k, &[b"baz"]);
}

/// Concurrent writes on both sides of a partition are all visible as siblings after the
/// heal; every replica would pick the same winner, and resolving on any replica collapses
/// them everywhere (`siblings_test`).
pub fn siblings_until_resolved<B: SimBackend>(
    p: &Profile<B::Config>,
    seed: u64,
    left: usize,
    right: usize,
    resolver: usize,
) {
    let mut sim = Sim::<B>::new(4, p.periodic.clone(), seed);
    let k = key(1);
    sim.put(0, &k, b"base");
    assert!(sim.run_until_converged(MINUTE));
    sim.partition(&[0, 1]);
    // Long enough for each write to reach the other node of its side, even through a lazy
    // link, so that each side's last write supersedes the side's earlier ones.
    for i in 0..left {
        sim.put(i % 2, &k, format!("left{i}").as_bytes());
        sim.run_for(2_000);
    }
    for i in 0..right {
        sim.put(2 + i % 2, &k, format!("right{i}").as_bytes());
        sim.run_for(2_000);
    }
    sim.run_for(2_000);
    sim.heal();
    assert!(sim.run_until_converged(p.settle_ms), "seed {seed}: converges");
    let expected = vec![format!("left{}", left - 1).into_bytes(), format!("right{}", right - 1).into_bytes()];
    let mut winners = BTreeSet::new();
    for i in 0..4 {
        assert_eq!(data(&sim, i, &k), expected, "seed {seed}: siblings on node {i}");
        winners.insert(lww(&sim.read(i, &k)).cloned());
    }
    assert_eq!(winners.len(), 1, "seed {seed}: every replica picks the same winner");
    let winner = sim.read_resolved(resolver % 4, &k).expect("a value");
    assert!(sim.run_until_converged(p.settle_ms));
    assert_everywhere(&sim, &[0, 1, 2, 3], &k, &[&winner.data]);
}

/// An empty node joining a cluster with data receives all of it and every later write
/// (`join_test`, `cluster_join_test`).
pub fn join<B: SimBackend>(p: &Profile<B::Config>) {
    let mut sim = Sim::<B>::new(3, p.periodic.clone(), 5);
    for k in 0..30u8 {
        sim.put(usize::from(k) % 3, &key(k), b"v");
    }
    assert!(sim.run_until_converged(MINUTE));
    let new = sim.add_node();
    assert!(sim.replica(new).is_empty_history());
    sim.join(new);
    assert!(sim.run_until_converged(p.settle_ms));
    for k in 0..30u8 {
        assert_eq!(data(&sim, new, &key(k)), vec![b"v".to_vec()], "key {k}");
    }
    sim.put(1, &key(99), b"late");
    assert!(sim.run_until_converged(MINUTE));
    assert_eq!(data(&sim, new, &key(99)), vec![b"late".to_vec()]);
}

/// A restarted node recovers what it persisted, and it (and a joining node) catches up at
/// once, without any timer, through the exchanges its start and the others' detectors begin.
pub fn a_recovered_node_catches_up_without_a_timer<B: SimBackend>(p: &Profile<B::Config>) {
    let mut sim = Sim::<B>::new(3, p.heal_only.clone(), 3);
    sim.put(0, &key(1), b"v1");
    assert!(sim.run_until_converged(1_000));
    sim.crash(2);
    // Written once the others know node 2 is down (a write sent into the window before
    // detection is the bounded-agreement property's concern).
    sim.run_for(10);
    sim.put(0, &key(2), b"while-2-was-down");
    sim.delete(1, &key(1));
    sim.run_for(100);
    sim.recover(2);
    let took = sim.time_to_converge(2_000).expect("converges");
    assert!(took <= 50, "took {took} ms");
    assert_eq!(data(&sim, 2, &key(1)), Vec::<Vec<u8>>::new());
    assert_eq!(data(&sim, 2, &key(2)), vec![b"while-2-was-down".to_vec()]);

    let joiner = sim.add_node();
    sim.join(joiner);
    let took = sim.time_to_converge(2_000).expect("converges");
    assert!(took <= 50, "join took {took} ms");
    assert_eq!(data(&sim, joiner, &key(2)), vec![b"while-2-was-down".to_vec()]);
}

/// A write whose batch was not yet durable when its node crashed is gone with the process:
/// nothing it produced left the node, so no replica ever holds it, and the restarted node
/// still holds what was durable.
pub fn a_write_lost_in_a_crash_was_never_revealed<B: SimBackend>(p: &Profile<B::Config>) {
    for seed in 0..10 {
        let mut sim = Sim::<B>::new(3, p.periodic.clone(), seed);
        sim.put(0, &key(1), b"durable");
        assert!(sim.run_until_converged(MINUTE));
        sim.set_persist_delay(50);
        sim.put(0, &key(1), b"lost");
        sim.put(0, &key(2), b"lost too");
        assert!(sim.unpersisted(0) > 0, "seed {seed}: the batch waits for the disk");
        sim.crash(0);
        sim.set_persist_delay(0);
        sim.run_for(1_000);
        sim.recover(0);
        assert!(sim.run_until_converged(p.settle_ms), "seed {seed}");
        for i in 0..3 {
            assert_eq!(data(&sim, i, &key(1)), vec![b"durable".to_vec()], "seed {seed}: node {i}");
            assert!(data(&sim, i, &key(2)).is_empty(), "seed {seed}: node {i}");
        }
        // The restarted node writes on from where its durable state was.
        sim.put(0, &key(1), b"after");
        assert!(sim.run_until_converged(p.settle_ms));
        assert_everywhere(&sim, &[0, 1, 2], &key(1), &[b"after"]);
    }
}

/// Issue 18: node 2 is cut off, first one way (its messages no longer reach the others,
/// theirs still reach it), then both ways. On both sides clients subscribe and unsubscribe
/// and retained messages are set and cleared, including deletes of keys every node knew.
/// The failure detectors learn of the cut and of the heal late, each after its own delay.
/// Once the last one has learned of the heal, every replica agrees within round trips,
/// without any timer, and nothing deleted comes back.
pub fn a_node_cut_off_one_way_then_both_ways_agrees_after_a_late_detected_heal<B: SimBackend>(p: &Profile<B::Config>) {
    let sub = |k: u8| MetaKey::new(PREFIX_SUBSCRIBER, vec![k]);
    let retain = |k: u8| MetaKey::new(PREFIX_RETAIN, vec![k]);
    for seed in 0..20u64 {
        let mut sim = Sim::<B>::new(3, p.heal_only.clone(), seed);
        sim.put(2, &sub(1), b"old-sub-on-2");
        sim.put(0, &sub(2), b"sub-on-0");
        sim.put(0, &retain(1), b"retained-to-clear");
        let took = sim.time_to_converge(1_000);
        assert!(took.is_some_and(|t| t <= 100), "seed {seed}: broadcasts spread ({took:?} ms)");
        let delays = [200 + seed * 37 % 600, seed * 91 % 800, 100 + seed * 53 % 700];
        for (i, d) in delays.iter().enumerate() {
            sim.set_detection_delay(i, *d);
        }

        let max_delay = *delays.iter().max().unwrap_or(&0);
        sim.cut_one_way(2, 0);
        sim.cut_one_way(2, 1);
        // Writes sent into the window before the detectors notice need a backend's periodic
        // repair (plumtree's lazy tick): the bounded-agreement property covers them.
        sim.run_for(max_delay + 1);
        sim.put(2, &sub(3), b"new-sub-on-2");
        sim.delete(0, &retain(1));
        sim.run_for(50);
        sim.isolate(2);
        sim.delete(2, &sub(1));
        sim.delete(1, &sub(2));
        sim.put(0, &retain(2), b"retained-during-cut");
        sim.run_for(3_000);
        assert!(!sim.converged(), "seed {seed}: the cut holds");

        sim.heal();
        let last_learns = sim.now().plus(max_delay);
        assert!(sim.run_until_converged(10_000), "seed {seed}: no convergence");
        let after = sim.now().0.saturating_sub(last_learns.0);
        assert!(after <= 50, "seed {seed}: agreed {after} ms after the last detector learned of the heal");
        for i in 0..3 {
            for (k, want) in [
                (sub(1), None),
                (sub(2), None),
                (sub(3), Some(&b"new-sub-on-2"[..])),
                (retain(1), None),
                (retain(2), Some(&b"retained-during-cut"[..])),
            ] {
                let want: Vec<Vec<u8>> = want.into_iter().map(<[u8]>::to_vec).collect();
                assert_eq!(data(&sim, i, &k), want, "seed {seed}: node {i} key {k:?}");
            }
        }
    }
}

/// Writes made on the connected side while a cut is still undetected: what was pushed over
/// the dead link is lost with it, and the other connected nodes must still hear of it within
/// round trips of the writer's detector noticing the cut, not at the next periodic repair.
/// After the heal every replica agrees within round trips again, without any timer.
pub fn writes_made_before_a_cut_is_detected_reach_the_connected_side_when_it_is<B: SimBackend>(p: &Profile<B::Config>) {
    let retain = |k: u8| MetaKey::new(PREFIX_RETAIN, vec![k]);
    for seed in 0..20u64 {
        let mut sim = Sim::<B>::new(3, p.heal_only.clone(), seed);
        sim.put(0, &retain(1), b"known-everywhere");
        sim.put(1, &retain(2), b"known-everywhere-too");
        let took = sim.time_to_converge(1_000);
        assert!(took.is_some_and(|t| t <= 100), "seed {seed}: broadcasts spread ({took:?} ms)");
        let delays = [100 + seed * 37 % 600, 100 + seed * 91 % 800, 100 + seed * 53 % 700];
        for (i, d) in delays.iter().enumerate() {
            sim.set_detection_delay(i, *d);
        }

        sim.isolate(2);
        // Before any detector has noticed: each connected node deletes what the other wrote
        // and writes something new.
        sim.delete(1, &retain(1));
        sim.delete(0, &retain(2));
        sim.put(1, &retain(3), b"written-on-1");
        sim.put(0, &retain(4), b"written-on-0");
        let connected_learn = sim.now().plus(delays[0].max(delays[1]));
        sim.run_for(delays[0].max(delays[1]) + 50);
        assert!(sim.now().0 >= connected_learn.0);
        for i in 0..2 {
            assert_eq!(
                data(&sim, i, &retain(1)),
                Vec::<Vec<u8>>::new(),
                "seed {seed}: node {i} still has the deleted key 1"
            );
            assert_eq!(
                data(&sim, i, &retain(2)),
                Vec::<Vec<u8>>::new(),
                "seed {seed}: node {i} still has the deleted key 2"
            );
            assert_eq!(data(&sim, i, &retain(3)), vec![b"written-on-1".to_vec()], "seed {seed}: node {i}");
            assert_eq!(data(&sim, i, &retain(4)), vec![b"written-on-0".to_vec()], "seed {seed}: node {i}");
        }

        sim.run_for(3_000);
        sim.heal();
        let last_learns = sim.now().plus(*delays.iter().max().unwrap_or(&0));
        assert!(sim.run_until_converged(10_000), "seed {seed}: no convergence");
        let after = sim.now().0.saturating_sub(last_learns.0);
        assert!(after <= 50, "seed {seed}: agreed {after} ms after the last detector learned of the heal");
        for i in 0..3 {
            assert!(
                data(&sim, i, &retain(1)).is_empty() && data(&sim, i, &retain(2)).is_empty(),
                "seed {seed}: node {i}"
            );
            assert_eq!(data(&sim, i, &retain(4)), vec![b"written-on-0".to_vec()], "seed {seed}: node {i}");
        }
    }
}

// ----- properties -----------------------------------------------------------------------

/// One step of a random history. Nodes are indexes; the last node starts outside the
/// cluster in [`converge_after_any_history`].
#[derive(Debug, Clone)]
#[allow(missing_docs)] // fields: `node` an index, `key` a key's number
pub enum Op {
    /// A put of a fresh value.
    Put { node: usize, key: u8 },
    /// A delete of what the node sees.
    Delete { node: usize, key: u8 },
    /// A last-writer-wins read with write-back.
    Resolve { node: usize, key: u8 },
    /// `side` is cut off from the rest, both ways.
    Partition { side: Vec<usize> },
    /// Messages from `from` to `to` are lost.
    CutOneWay { from: usize, to: usize },
    /// Every link is restored (detectors learn of it late).
    Heal,
    /// The node's process dies with its writes not yet durable.
    Crash { node: usize },
    /// The node restarts from its store.
    Recover { node: usize },
    /// The node leaves the cluster.
    Leave { node: usize },
    /// The node joins the cluster.
    Join { node: usize },
    /// Virtual time passes.
    Run { ms: u16 },
}

/// A random history over `nodes` nodes (with resolutions and membership changes when
/// `membership`).
pub fn op(nodes: usize, membership: bool) -> BoxedStrategy<Op> {
    let node = 0..nodes;
    let k = 0u8..6;
    let all: Vec<usize> = (0..nodes).collect();
    let faults = prop_oneof![
        6 => (node.clone(), k.clone()).prop_map(|(node, key)| Op::Put { node, key }),
        3 => (node.clone(), k.clone()).prop_map(|(node, key)| Op::Delete { node, key }),
        1 => proptest::sample::subsequence(all, 1..nodes).prop_map(|side| Op::Partition { side }),
        1 => (node.clone(), node.clone()).prop_map(|(from, to)| Op::CutOneWay { from, to }),
        1 => Just(Op::Heal),
        1 => node.clone().prop_map(|node| Op::Crash { node }),
        1 => node.clone().prop_map(|node| Op::Recover { node }),
        3 => (1u16..2000).prop_map(|ms| Op::Run { ms }),
    ];
    if !membership {
        return faults.boxed();
    }
    prop_oneof![
        17 => faults,
        1 => (node.clone(), k).prop_map(|(node, key)| Op::Resolve { node, key }),
        1 => node.clone().prop_map(|node| Op::Leave { node }),
        1 => node.prop_map(|node| Op::Join { node }),
    ]
    .boxed()
}

/// The environment of a history: network faults, disk and detector delays.
#[derive(Debug, Clone)]
pub struct Env {
    /// The network while the history runs.
    pub net: NetConfig,
    /// Largest delay before a batch is durable.
    pub persist_delay: u64,
    /// Each node's detection delay.
    pub detection: Vec<u64>,
    /// Random extra detection delay.
    pub jitter: u64,
}

/// Environments for histories on `nodes` nodes; `lossy` adds random message loss.
pub fn env(nodes: usize, lossy: bool) -> impl Strategy<Value = Env> {
    let drop = if lossy { 0.0..0.3 } else { 0.0..f64::MIN_POSITIVE };
    (drop, 0.0..0.2f64, 1u64..50, 0u64..200, prop::collection::vec(0u64..1000, nodes), 0u64..100).prop_map(
        |(drop, duplicate, max_delay, persist_delay, detection, jitter)| Env {
            net: NetConfig { drop: if drop < 1e-9 { 0.0 } else { drop }, duplicate, min_delay: 1, max_delay },
            persist_delay,
            detection,
            jitter,
        },
    )
}

fn apply_env<B: SimBackend>(sim: &mut Sim<B>, env: &Env) {
    sim.set_net(env.net);
    sim.set_persist_delay(env.persist_delay);
    for (i, d) in env.detection.iter().enumerate() {
        sim.set_detection_delay(i, *d);
    }
    sim.set_detection_jitter(env.jitter);
}

/// Applies `op` where it makes sense (writes on live members, at least two members left).
fn apply<B: SimBackend>(sim: &mut Sim<B>, h: &mut History, op: &Op) {
    let usable = |sim: &Sim<B>, n: usize| sim.is_up(n) && sim.members().contains(&n);
    match *op {
        Op::Put { node, key: k } if usable(sim, node) => {
            h.put(sim, node, &key(k));
        }
        Op::Delete { node, key: k } if usable(sim, node) => h.delete(sim, node, &key(k)),
        Op::Resolve { node, key: k } if usable(sim, node) => h.resolve(sim, node, &key(k)),
        Op::Partition { ref side } => sim.partition(side),
        Op::CutOneWay { from, to } => sim.cut_one_way(from, to),
        Op::Heal => sim.heal(),
        Op::Crash { node } => h.crash(sim, node),
        Op::Recover { node } => sim.recover(node),
        Op::Leave { node } if sim.members().len() > 2 && sim.members().contains(&node) => {
            sim.recover(node);
            h.leave(sim, node);
        }
        Op::Join { node } if !sim.members().contains(&node) => {
            sim.recover(node);
            // As the node's `cluster join` does: only a node without history may join (one
            // that left and crashed before its leave was on disk comes back with old data).
            if sim.replica(node).is_empty_history() {
                sim.join(node);
            }
        }
        Op::Run { ms } => sim.run_for(u64::from(ms)),
        _ => {}
    }
}

/// Heals everything, restarts crashed members, makes the network reliable and waits for
/// agreement; then checks invariants and that every acknowledged write survived.
fn settle_and_check<B: SimBackend>(
    p: &Profile<B::Config>,
    sim: &mut Sim<B>,
    h: &mut History,
) -> Result<(), TestCaseError> {
    // Batches keep becoming durable late, but the disk stops lagging behind the timers: a
    // backend that writes on every tick would otherwise never let the simulation go idle.
    sim.set_persist_delay(0);
    sim.set_net(NetConfig::RELIABLE);
    sim.heal();
    for m in sim.members() {
        sim.recover(m);
    }
    prop_assert!(sim.run_until_converged(p.settle_ms), "no convergence");
    for m in sim.live_members() {
        prop_assert_eq!(sim.replica(m).check_invariants(), Ok(()), "node {}", m);
    }
    if let Err(e) = h.check(sim) {
        return Err(TestCaseError::fail(e));
    }
    Ok(())
}

/// Replicas converge after any interleaving of puts, deletes, resolutions, partitions
/// (one-way ones too), heals learned late, crashes that lose what was not durable, and
/// membership changes, on a lossy, duplicating, reordering network; every acknowledged write
/// survives unless superseded, nothing superseded or lost comes back; then every tombstone
/// is collected.
pub fn converge_after_any_history<B: SimBackend>(
    p: &Profile<B::Config>,
    seed: u64,
    env: &Env,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let mut sim = Sim::<B>::new(4, p.periodic.clone(), seed);
    sim.leave(3);
    apply_env(&mut sim, env);
    let mut h = History::new();
    for op in ops {
        apply(&mut sim, &mut h, op);
    }
    settle_and_check(p, &mut sim, &mut h)?;
    prop_assert!(sim.run_until_collected(p.settle_ms), "tombstones not collected: {}", sim.tombstones());
    if let Err(e) = h.check(&sim) {
        return Err(TestCaseError::fail(e));
    }
    Ok(())
}

/// Every key deleted by a node that saw all its values stays deleted, whatever stale
/// messages, partitions and crashes follow, also once the tombstones are collected.
pub fn deleted_keys_stay_deleted<B: SimBackend>(
    p: &Profile<B::Config>,
    seed: u64,
    env: &Env,
    writers: &[(usize, u8)],
    deleter: usize,
    faults: &[Op],
) -> Result<(), TestCaseError> {
    let mut sim = Sim::<B>::new(3, p.periodic.clone(), seed);
    apply_env(&mut sim, env);
    let mut h = History::new();
    for (node, k) in writers {
        h.put(&mut sim, node % 3, &key(*k));
    }
    let keys: BTreeSet<u8> = writers.iter().map(|(_, k)| *k).collect();
    sim.set_net(NetConfig::RELIABLE);
    prop_assert!(sim.run_until_converged(p.settle_ms));
    sim.set_net(env.net);
    for (n, k) in keys.iter().enumerate() {
        // The chosen deleter may have crashed in an earlier fault; it restarts to delete.
        let d = deleter % 3;
        sim.recover(d);
        h.delete(&mut sim, d, &key(*k));
        // Acknowledged: a delete lost in a crash before it was durable was never made.
        sim.run_until_persisted(d);
        // No new writes, and no leave: a node that leaves before its deletes spread takes
        // them along (covered by `converge_after_any_history`).
        if let Some(f) = faults.get(n)
            && !matches!(f, Op::Put { .. } | Op::Resolve { .. } | Op::Leave { .. } | Op::Join { .. })
        {
            apply(&mut sim, &mut h, f);
        }
    }
    settle_and_check(p, &mut sim, &mut h)?;
    prop_assert!(sim.run_until_collected(p.settle_ms), "tombstones not collected: {}", sim.tombstones());
    for i in 0..3 {
        for k in &keys {
            prop_assert!(sim.read(i, &key(*k)).is_empty(), "key {} came back on node {}", k, i);
        }
    }
    Ok(())
}

/// Issue 18: after any history of writes, deletes, partitions (one-way ones too), heals and
/// crashes on a duplicating, reordering network whose detectors learn of changes late, once
/// the last detector has learned of the last heal the replicas agree without the periodic
/// exchange, within the backend's bound, through at most its number of exchanges per ordered
/// pair of nodes; and every acknowledged write survives unless superseded.
pub fn agree_within_bounded_exchanges_after_the_last_heal<B: SimBackend>(
    p: &Profile<B::Config>,
    seed: u64,
    env: &Env,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let mut sim = Sim::<B>::new(3, p.after_heal.clone(), seed);
    // Messages are lost only to cuts and crashes, as on QUIC links, which retransmit until
    // the failure detector declares the peer down.
    let env = Env { net: NetConfig { drop: 0.0, ..env.net }, ..env.clone() };
    apply_env(&mut sim, &env);
    let mut h = History::new();
    for op in ops {
        apply(&mut sim, &mut h, op);
    }
    // Crashed members restart first and their detectors learn what is cut (a restart pulls
    // from every member, which the bound below does not count); then the last heal.
    for m in sim.members() {
        sim.recover(m);
    }
    let settled = sim.run_until(60_000, |_| true);
    prop_assert!(settled, "detectors settle");
    // Messages of the past still in flight keep their fate.
    sim.set_net(NetConfig { drop: 0.0, duplicate: 0.05, min_delay: 1, max_delay: 5 });
    sim.set_persist_delay(0);
    sim.heal();
    let last_learns = sim.now().plus(env.detection.iter().max().copied().unwrap_or(0) + env.jitter);
    let before = sim.exchanges_completed();
    prop_assert!(
        sim.run_until_converged(last_learns.0 - sim.now().0 + p.agree_after_heal_ms),
        "no agreement without timers"
    );
    let exchanges = sim.exchanges_completed() - before;
    let bound = 3 * 2 * p.exchanges_per_pair;
    prop_assert!(exchanges <= bound, "{} exchanges after the last heal, bound {}", exchanges, bound);
    for m in sim.live_members() {
        prop_assert_eq!(sim.replica(m).check_invariants(), Ok(()), "node {}", m);
    }
    if let Err(e) = h.check(&sim) {
        return Err(TestCaseError::fail(e));
    }
    Ok(())
}

/// Instantiates the suite in a backend's tests: `metadata_backend_suite!(Replica, profile())`
/// where `profile()` returns a [`Profile`] of the backend's configuration. The crate needs
/// `proptest` among its dev-dependencies.
#[macro_export]
macro_rules! metadata_backend_suite {
    ($backend:ty, $profile:expr) => {
        mod metadata_backend_suite {
            #[allow(unused_imports)]
            use super::*;
            use $crate::sim::suite;
            use ::proptest::prelude::*;

            type Backend = $backend;

            fn backend_profile() -> suite::Profile<<Backend as $crate::sim::SimBackend>::Config> {
                $profile
            }

            #[test]
            fn read_write_delete() {
                suite::read_write_delete::<Backend>(&backend_profile());
            }

            #[test]
            fn partitioned_cluster() {
                suite::partitioned_cluster::<Backend>(&backend_profile());
            }

            #[test]
            fn siblings_until_resolved() {
                for seed in 0..4 {
                    suite::siblings_until_resolved::<Backend>(&backend_profile(), seed, 1 + seed as usize % 3, 3 - seed as usize % 3, seed as usize);
                }
            }

            #[test]
            fn join() {
                suite::join::<Backend>(&backend_profile());
            }

            #[test]
            fn a_recovered_node_catches_up_without_a_timer() {
                suite::a_recovered_node_catches_up_without_a_timer::<Backend>(&backend_profile());
            }

            #[test]
            fn a_write_lost_in_a_crash_was_never_revealed() {
                suite::a_write_lost_in_a_crash_was_never_revealed::<Backend>(&backend_profile());
            }

            #[test]
            fn a_node_cut_off_one_way_then_both_ways_agrees_after_a_late_detected_heal() {
                suite::a_node_cut_off_one_way_then_both_ways_agrees_after_a_late_detected_heal::<Backend>(&backend_profile());
            }

            #[test]
            fn writes_made_before_a_cut_is_detected_reach_the_connected_side_when_it_is() {
                suite::writes_made_before_a_cut_is_detected_reach_the_connected_side_when_it_is::<Backend>(&backend_profile());
            }

            proptest! {
                #![proptest_config(suite::proptest_config(&backend_profile(), "converge_after_any_history", 64))]
                #[test]
                fn converge_after_any_history(
                    seed in any::<u64>(),
                    env in suite::env(4, true),
                    ops in prop::collection::vec(suite::op(4, true), 1..40),
                ) {
                    suite::converge_after_any_history::<Backend>(&backend_profile(), seed, &env, &ops)?;
                }
            }

            proptest! {
                #![proptest_config(suite::proptest_config(&backend_profile(), "deleted_keys_stay_deleted", 48))]
                #[test]
                fn deleted_keys_stay_deleted(
                    seed in any::<u64>(),
                    env in suite::env(3, true),
                    writers in prop::collection::vec((0usize..3, 0u8..8), 1..20),
                    deleter in 0usize..3,
                    faults in prop::collection::vec(suite::op(3, false), 0..12),
                ) {
                    suite::deleted_keys_stay_deleted::<Backend>(&backend_profile(), seed, &env, &writers, deleter, &faults)?;
                }
            }

            proptest! {
                #![proptest_config(suite::proptest_config(&backend_profile(), "agree_within_bounded_exchanges_after_the_last_heal", 64))]
                #[test]
                fn agree_within_bounded_exchanges_after_the_last_heal(
                    seed in any::<u64>(),
                    env in suite::env(3, false),
                    ops in prop::collection::vec(suite::op(3, false), 1..40),
                ) {
                    suite::agree_within_bounded_exchanges_after_the_last_heal::<Backend>(&backend_profile(), seed, &env, &ops)?;
                }
            }
        }
    };
}
