//! Named scenarios over the simulated network: VerneMQ's plumtree suites
//! (`cluster_membership_SUITE`, `metadata_SUITE` of `vernemq/plumtree`) and the protocol's
//! repair paths.

use vmq_plumtree::sim::{NetConfig, Sim};
use vmq_plumtree::{Hello, Message, PlumtreeConfig};
use vmq_storage::metadata::{MetaKey, MetadataBackend, Millis};

const MINUTE: u64 = 60_000;

fn init_tracing() {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("warn").try_init();
}

fn key(k: &str) -> MetaKey {
    MetaKey::new("subscriber", k.as_bytes().to_vec())
}

fn data(sim: &Sim, i: usize, k: &str) -> Vec<Vec<u8>> {
    sim.read(i, &key(k)).into_iter().map(|v| v.data).collect()
}

fn assert_everywhere(sim: &Sim, nodes: &[usize], k: &str, want: &[&[u8]]) {
    for &i in nodes {
        let want: Vec<Vec<u8>> = want.iter().map(|w| w.to_vec()).collect();
        assert_eq!(data(sim, i, k), want, "node {i} key {k}");
    }
}

// ----- metadata_SUITE ---------------------------------------------------------------------

/// `metadata_SUITE:read_write_delete_test`: a write, an overwrite and a delete each reach
/// every node.
#[test]
fn metadata_suite_read_write_delete() {
    init_tracing();
    let mut sim = Sim::new(4, PlumtreeConfig::default(), 1);
    let all = [0, 1, 2, 3];
    assert_everywhere(&sim, &all, "foo", &[]);
    sim.put(0, &key("foo"), b"bar");
    assert!(sim.run_until_quiet(MINUTE));
    assert_everywhere(&sim, &all, "foo", &[b"bar"]);
    sim.put(1, &key("foo"), b"baz");
    assert!(sim.run_until_quiet(MINUTE));
    assert_everywhere(&sim, &all, "foo", &[b"baz"]);
    sim.delete(2, &key("foo"));
    assert!(sim.run_until_quiet(MINUTE));
    assert_everywhere(&sim, &all, "foo", &[]);
    assert!(sim.converged());
}

/// `metadata_SUITE:partitioned_cluster_test`: writes on one side of a partition reach the
/// other side after the heal.
#[test]
fn metadata_suite_partitioned_cluster() {
    init_tracing();
    let mut sim = Sim::new(4, PlumtreeConfig::default(), 2);
    sim.put(0, &key("foo"), b"bar");
    assert!(sim.run_until_quiet(MINUTE));
    sim.partition(&[0, 1]);
    sim.put(0, &key("foo"), b"baz");
    sim.run_for(MINUTE);
    assert_everywhere(&sim, &[0, 1], "foo", &[b"baz"]);
    assert_everywhere(&sim, &[2, 3], "foo", &[b"bar"]);
    sim.heal();
    assert!(sim.run_until_converged(5 * MINUTE));
    assert_everywhere(&sim, &[0, 1, 2, 3], "foo", &[b"baz"]);
}

/// `metadata_SUITE:siblings_test`: concurrent writes on both sides of a partition become
/// siblings everywhere; a last-writer-wins read with write-back collapses them everywhere.
#[test]
fn metadata_suite_siblings() {
    init_tracing();
    let mut sim = Sim::new(4, PlumtreeConfig::default(), 3);
    sim.put(0, &key("foo"), b"bar");
    assert!(sim.run_until_quiet(MINUTE));
    sim.partition(&[0, 1]);
    sim.put(0, &key("foo"), b"baz");
    sim.run_for(1_000);
    sim.put(2, &key("foo"), b"spork");
    sim.run_for(MINUTE);
    sim.heal();
    assert!(sim.run_until_converged(5 * MINUTE));
    for i in 0..4 {
        let mut d = data(&sim, i, "foo");
        d.sort();
        assert_eq!(d, vec![b"baz".to_vec(), b"spork".to_vec()], "node {i}");
    }
    let winner = sim.read_resolved(1, &key("foo")).expect("a value");
    assert_eq!(winner.data, b"spork");
    assert!(sim.run_until_converged(5 * MINUTE));
    assert_everywhere(&sim, &[0, 1, 2, 3], "foo", &[b"spork"]);
}

// ----- cluster_membership_SUITE ------------------------------------------------------------

/// `singleton_test`: a node alone is its only member, has no history until written, and
/// works without sending anything.
#[test]
fn membership_suite_singleton() {
    init_tracing();
    let mut sim = Sim::new(1, PlumtreeConfig::default(), 4);
    assert!(sim.replica(0).is_empty_history());
    sim.put(0, &key("foo"), b"bar");
    sim.run_for(MINUTE);
    assert_eq!(data(&sim, 0, "foo"), vec![b"bar".to_vec()]);
    assert!(!sim.replica(0).is_empty_history());
    assert_eq!(sim.stats.messages(), 0, "{:?}", sim.stats);
}

/// `join_test`: an empty node joining a cluster with data receives all of it (anti-entropy)
/// and every later write (broadcast).
#[test]
fn membership_suite_join() {
    init_tracing();
    let mut sim = Sim::new(3, PlumtreeConfig::default(), 5);
    for k in 0..50 {
        sim.put(k % 3, &key(&format!("k{k}")), b"v");
    }
    assert!(sim.run_until_quiet(MINUTE));
    let new = sim.add_node();
    assert!(sim.replica(new).is_empty_history());
    sim.set_members(&[0, 1, 2, new]);
    assert!(sim.run_until_converged(10 * MINUTE));
    for k in 0..50 {
        assert_eq!(data(&sim, new, &format!("k{k}")), vec![b"v".to_vec()]);
    }
    sim.put(1, &key("late"), b"w");
    assert!(sim.run_until_quiet(MINUTE));
    assert_eq!(data(&sim, new, "late"), vec![b"w".to_vec()]);
}

/// `join_nonexistant_node_test`: a member that never answers does not stop dissemination
/// among the others (and, **beyond**, keeps tombstones from being reclaimed).
#[test]
fn membership_suite_join_nonexistent_node() {
    init_tracing();
    let config = PlumtreeConfig { tombstone_grace_period: 1_000, ..PlumtreeConfig::default() };
    let mut sim = Sim::new(4, config, 6);
    sim.crash(3);
    sim.put(0, &key("foo"), b"bar");
    sim.run_for(2 * MINUTE);
    assert_everywhere(&sim, &[0, 1, 2], "foo", &[b"bar"]);
    sim.delete(1, &key("foo"));
    sim.run_for(5 * MINUTE);
    assert_everywhere(&sim, &[0, 1, 2], "foo", &[]);
    for i in 0..3 {
        assert_eq!(sim.replica(i).tombstone_count(), 1, "node {i} reclaimed with a member down");
    }
}

/// `join_self_test`: listing a node twice (or only itself) is a singleton, not an error.
#[test]
fn membership_suite_join_self() {
    init_tracing();
    let mut sim = Sim::new(1, PlumtreeConfig::default(), 7);
    sim.set_members(&[0, 0]);
    sim.put(0, &key("foo"), b"bar");
    sim.run_for(MINUTE);
    assert_eq!(sim.stats.messages(), 0);
    assert_eq!(data(&sim, 0, "foo"), vec![b"bar".to_vec()]);
}

/// `leave_test`: after a node leaves, the others keep replicating and send it nothing.
#[test]
fn membership_suite_leave() {
    init_tracing();
    let mut sim = Sim::new(4, PlumtreeConfig::default(), 8);
    sim.put(0, &key("before"), b"v");
    assert!(sim.run_until_quiet(MINUTE));
    sim.set_members(&[0, 1, 2]);
    sim.run_for(MINUTE);
    sim.put(0, &key("after"), b"w");
    sim.run_for(3 * MINUTE);
    assert_everywhere(&sim, &[0, 1, 2], "after", &[b"w"]);
    assert_everywhere(&sim, &[3], "after", &[]);
    assert_everywhere(&sim, &[3], "before", &[b"v"]);
}

/// `leave_rejoin_test`: a node that left and rejoins catches up on what it missed.
#[test]
fn membership_suite_leave_rejoin() {
    init_tracing();
    let mut sim = Sim::new(4, PlumtreeConfig::default(), 9);
    sim.set_members(&[0, 1, 2]);
    for k in 0..20 {
        sim.put(k % 3, &key(&format!("k{k}")), b"v");
    }
    sim.run_for(MINUTE);
    sim.set_members(&[0, 1, 2, 3]);
    assert!(sim.run_until_converged(10 * MINUTE));
    assert_everywhere(&sim, &[3], "k7", &[b"v"]);
}

/// `sticky_membership_test` (and the crash-and-recover fault): a restarted node recovers its
/// data from its store and catches up on writes made while it was down.
#[test]
fn membership_suite_sticky_membership_across_restart() {
    init_tracing();
    let mut sim = Sim::new(3, PlumtreeConfig::default(), 10);
    sim.put(0, &key("foo"), b"bar");
    assert!(sim.run_until_quiet(MINUTE));
    sim.crash(2);
    sim.put(1, &key("missed"), b"m");
    sim.run_for(MINUTE);
    sim.recover(2);
    assert_eq!(data(&sim, 2, "foo"), vec![b"bar".to_vec()], "recovered from the store");
    assert!(sim.run_until_converged(10 * MINUTE));
    assert_eq!(data(&sim, 2, "missed"), vec![b"m".to_vec()]);
}

// ----- protocol repair paths ---------------------------------------------------------------

/// Plumtree §3.4: a node that misses an eager push learns of the message from a lazy peer's
/// `i_have` and grafts it; anti-entropy is off, so only the graft can repair.
#[test]
fn lost_eager_push_is_repaired_by_graft() {
    init_tracing();
    let config = PlumtreeConfig { broadcast_exchange_timer: 0, ..PlumtreeConfig::default() };
    let n = 8;
    let mut sim = Sim::new(n, config, 11);
    for round in 0..10 {
        sim.put(0, &key("warm"), format!("{round}").as_bytes());
        sim.run_for(30_000);
    }
    let root = sim.id(0).clone();
    // A victim that some node announces to lazily on node 0's tree, and its eager parents.
    let victim = (1..n)
        .find(|v| {
            let id = sim.id(*v).clone();
            (0..n).any(|i| i != *v && sim.replica(i).lazy_peers(&root).contains(&id))
        })
        .expect("a node with a lazy in-link");
    let victim_id = sim.id(victim).clone();
    let parents: Vec<usize> =
        (0..n).filter(|i| *i != victim && sim.replica(*i).eager_peers(&root).contains(&victim_id)).collect();
    for p in &parents {
        sim.drop_next(*p, victim, "broadcast");
    }
    let grafts_before = sim.replica(victim).stats().grafts_sent;
    sim.put(0, &key("fresh"), b"x");
    sim.run_for(1_000);
    assert!(data(&sim, victim, "fresh").is_empty(), "the eager push was not lost");
    sim.run_for(30_000);
    assert_eq!(data(&sim, victim, "fresh"), vec![b"x".to_vec()]);
    assert!(sim.replica(victim).stats().grafts_sent > grafts_before);
}

/// Tombstones (**beyond** VerneMQ) are reclaimed everywhere once exchanges confirmed them on
/// every member and the grace period passed, and the key stays deleted.
#[test]
fn tombstones_are_reclaimed_once_confirmed_everywhere() {
    init_tracing();
    let config = PlumtreeConfig { tombstone_grace_period: 30_000, ..PlumtreeConfig::default() };
    let mut sim = Sim::new(3, config, 12);
    sim.put(0, &key("foo"), b"bar");
    sim.put(1, &key("keep"), b"k");
    assert!(sim.run_until_quiet(MINUTE));
    sim.delete(2, &key("foo"));
    sim.run_for(5_000);
    assert!((0..3).all(|i| sim.replica(i).tombstone_count() == 1));
    sim.run_for(10 * MINUTE);
    for i in 0..3 {
        assert_eq!(sim.replica(i).tombstone_count(), 0, "node {i}");
        assert_eq!(sim.replica(i).object_count(), 1, "node {i}");
        assert!(sim.replica(i).stats().tombstones_reclaimed >= 1);
    }
    assert_everywhere(&sim, &[0, 1, 2], "foo", &[]);
    assert_everywhere(&sim, &[0, 1, 2], "keep", &[b"k"]);
    assert!(sim.converged());
}

/// A node that was down during a delete still holds the old value; the tombstone is kept
/// until it is back and confirmed, so the value does not come back.
#[test]
fn a_tombstone_outlives_a_crashed_member_and_deletes_its_stale_value() {
    init_tracing();
    let config = PlumtreeConfig { tombstone_grace_period: 10_000, ..PlumtreeConfig::default() };
    let mut sim = Sim::new(3, config, 13);
    sim.put(0, &key("foo"), b"bar");
    assert!(sim.run_until_quiet(MINUTE));
    sim.crash(2);
    sim.delete(0, &key("foo"));
    sim.run_for(10 * MINUTE);
    assert_eq!(sim.replica(0).tombstone_count(), 1);
    sim.recover(2);
    assert_eq!(data(&sim, 2, "foo"), vec![b"bar".to_vec()]);
    sim.run_for(20 * MINUTE);
    assert_everywhere(&sim, &[0, 1, 2], "foo", &[]);
    assert!((0..3).all(|i| sim.replica(i).tombstone_count() == 0));
}

/// A peer announcing the other backend is refused with a message naming both backends, and
/// this node sends it nothing more.
#[test]
fn a_vmq_swc_peer_is_refused() {
    init_tracing();
    let mut sim = Sim::new(2, PlumtreeConfig::default(), 14);
    assert!(sim.run_until_quiet(MINUTE));
    let swc = Hello { backend: "vmq_swc".into(), protocol_version: 1 };
    let peer = sim.id(1).clone();
    sim.replica_mut(0).handle_message(Millis(1), &peer, Message::Hello(swc));
    let reasons: Vec<String> = sim.replica(0).refused_peers().map(|(_, e)| e.to_string()).collect();
    assert_eq!(reasons.len(), 1);
    assert!(reasons[0].contains("vmq_swc") && reasons[0].contains("vmq_plumtree"), "{}", reasons[0]);
    sim.reset_counters();
    sim.put(0, &key("foo"), b"bar");
    sim.run_for(MINUTE);
    assert!(data(&sim, 1, "foo").is_empty());
}

/// Dissemination survives a lossy, duplicating, reordering network.
#[test]
fn lossy_network_still_converges() {
    init_tracing();
    let mut sim = Sim::new(6, PlumtreeConfig::default(), 15);
    sim.set_net(NetConfig { drop: 0.2, duplicate: 0.1, min_delay: 1, max_delay: 10 });
    for k in 0..40 {
        sim.put(k % 6, &key(&format!("k{}", k % 13)), format!("{k}").as_bytes());
        sim.run_for(500);
    }
    sim.set_net(NetConfig::RELIABLE);
    assert!(sim.run_until_converged(30 * MINUTE));
}

/// Regression (found by `deletes_are_not_resurrected`, seed kept in
/// `proptest-regressions/plumtree-no_resurrection.txt`): a node that reclaimed a tombstone and
/// writes the key again must not reuse a dot of the key's old life, or a peer still holding
/// the tombstone (node 0 restarted, so its confirmations were lost and it kept the tombstone)
/// takes the new write for a stale one and the replicas never converge.
#[test]
fn a_key_written_again_after_its_tombstone_was_reclaimed_converges() {
    init_tracing();
    let config = PlumtreeConfig { tombstone_grace_period: 20_000, ..PlumtreeConfig::default() };
    let mut sim = Sim::new(2, config, 1836556331234117141);
    let k = |i: u8| MetaKey::new(if i.is_multiple_of(2) { "subscriber" } else { "retain" }, vec![i]);
    for i in 0..6 {
        sim.put(usize::from(i) % 2, &k(i), b"v");
    }
    assert!(sim.run_until_converged(10 * MINUTE));
    sim.delete(0, &k(0));
    sim.delete(1, &k(4));
    sim.run_for(22_543);
    sim.crash(0);
    sim.run_for(7_456);
    sim.put(1, &k(4), &[0]);
    sim.recover(0);
    assert!(sim.run_until_converged(30 * MINUTE));
    assert_eq!(sim.read(0, &k(4)), sim.read(1, &k(4)));
    assert_eq!(sim.read(0, &k(4)).len(), 1);
}
