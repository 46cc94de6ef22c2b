//! The scenarios and properties every metadata backend passes (`vmq_storage::sim::suite`),
//! run against the SWC replica.

use vmq_storage::sim::NetConfig;
use vmq_storage::sim::suite::{self, Env, Op, Profile};
use vmq_swc::{Replica, SwcConfig};

/// Anti-entropy groups when the periodic exchange is off: a heal exchanges once per group.
const HEAL_GROUPS: u16 = 3;

fn profile() -> Profile<SwcConfig> {
    let periodic = SwcConfig {
        swc_groups: 2,
        sync_interval: 300,
        sync_interval_leeway: 200,
        gc_interval: 1000,
        sync_timeout: 2000,
        exchange_batch_size: 4,
        ..SwcConfig::default()
    };
    // No periodic exchange; broadcasts on, as the node runs.
    let heal_only = SwcConfig {
        swc_groups: HEAL_GROUPS,
        sync_interval: 0,
        gc_interval: 1000,
        sync_timeout: 2000,
        exchange_batch_size: 4,
        ..SwcConfig::default()
    };
    Profile {
        name: "swc",
        periodic,
        after_heal: heal_only.clone(),
        heal_only,
        settle_ms: 300_000,
        agree_after_heal_ms: 10_000,
        exchanges_per_pair: u64::from(HEAL_GROUPS),
    }
}

vmq_storage::metadata_backend_suite!(Replica, profile());

/// The lossy network of the former `converge_after_any_history`, nothing else delayed.
fn lossy() -> Env {
    Env {
        net: NetConfig { drop: 0.1, duplicate: 0.1, min_delay: 1, max_delay: 50 },
        persist_delay: 0,
        detection: vec![0; 4],
        jitter: 0,
    }
}

/// Found by `converge_after_any_history`: a delete concurrent with a put leaves a delete marker
/// beside a live sibling. Collection only looked at keys made of markers alone (as
/// `vmq_swc_dkm` does), so that marker stayed in the dot-key map forever.
#[test]
fn delete_marker_beside_a_live_sibling_is_collected() {
    let ops = [
        Op::Run { ms: 160 },
        Op::Put { node: 0, key: 2 },
        Op::Join { node: 0 },
        Op::Delete { node: 0, key: 5 },
        Op::Join { node: 3 },
        Op::Put { node: 1, key: 5 },
    ];
    suite::converge_after_any_history::<Replica>(&profile(), 3133349580906477504, &lossy(), &ops)
        .expect("converges and collects");
}

/// Found by `converge_after_any_history`: a node deletes a key twice and leaves before its
/// first delete reached anyone. The others' entries for its retired id keep a gap at counter 1
/// that nobody can fill, so a base-only watermark never proved the second tombstone seen.
#[test]
fn tombstone_of_a_departed_replica_above_a_gap_is_collected() {
    let ops = [
        Op::Run { ms: 974 },
        Op::Put { node: 0, key: 0 },
        Op::Run { ms: 1999 },
        Op::Put { node: 0, key: 0 },
        Op::Delete { node: 1, key: 2 },
        Op::Put { node: 0, key: 0 },
        Op::Delete { node: 1, key: 2 },
        Op::Crash { node: 2 },
        Op::Run { ms: 20 },
        Op::Leave { node: 1 },
    ];
    suite::converge_after_any_history::<Replica>(&profile(), 9945901696907720289, &lossy(), &ops)
        .expect("converges and collects");
}

/// Found by `agree_within_bounded_exchanges_after_the_last_heal`: a node restarted while
/// another was down took it for reachable, so neither side's exchange started when that one
/// came back, and a write made before its crash never reached the restarted node. (A
/// restarted process now learns from its failure detector which peers are down, as the
/// node's driver does.)
#[test]
fn a_node_restarted_while_a_peer_was_down_exchanges_with_it_when_it_returns() {
    let ops = [
        Op::Crash { node: 1 },
        Op::Put { node: 0, key: 0 },
        Op::Put { node: 2, key: 5 },
        Op::Crash { node: 2 },
        Op::Recover { node: 1 },
        Op::Recover { node: 0 },
        Op::Run { ms: 30 },
    ];
    let env = Env {
        net: NetConfig { drop: 0.0, duplicate: 0.1, min_delay: 1, max_delay: 50 },
        persist_delay: 0,
        detection: vec![0; 3],
        jitter: 0,
    };
    suite::agree_within_bounded_exchanges_after_the_last_heal::<Replica>(&profile(), 0, &env, &ops)
        .expect("agrees after the heal");
}

/// Found by `converge_after_any_history` with late failure detection: node 0, cut off alone,
/// and node 1 both delete a key node 1 wrote; node 1 leaves (retiring its replica id) and
/// rejoins under a new one while node 2 is cut off in turn. Node 0 retires the old id at
/// counter 1, before it learns of node 1's delete at counter 2, which then arrives. The others
/// retire the id at 2 and report it so one exchange at a time: node 0 must keep the id's
/// watermark row between collections to see the delete seen by every member, collect it and
/// retire the id again.
#[test]
fn delete_markers_after_a_leave_and_rejoin_during_a_split_are_collected() {
    let ops = [
        Op::Put { node: 1, key: 2 },
        Op::Run { ms: 4 },
        Op::Partition { side: vec![0] },
        Op::Delete { node: 0, key: 2 },
        Op::Put { node: 0, key: 0 },
        Op::Delete { node: 1, key: 2 },
        Op::Run { ms: 1 },
        Op::Leave { node: 1 },
        Op::Run { ms: 995 },
        Op::Partition { side: vec![2] },
        Op::Join { node: 1 },
        Op::Run { ms: 1 },
    ];
    let env = Env { net: NetConfig::RELIABLE, persist_delay: 0, detection: vec![0, 323, 1109, 0], jitter: 0 };
    suite::converge_after_any_history::<Replica>(&profile(), 12998653538043292314, &env, &ops)
        .expect("converges and collects");
}

/// Found by `converge_after_any_history`: node 0 puts key 3 (its counter 1) and deletes key 1
/// (counter 2), then leaves and rejoins under a new id. Node 2 has the delete but not yet the
/// put, which is still on its way, when node 0's new replica exchanges with it; the old id's
/// entry there has a gap at counter 1. Retiring the id over that gap would hide the put from
/// node 0 once it reaches node 2: the replicas would never agree on key 3.
#[test]
fn a_departed_replica_is_not_retired_over_a_write_still_in_flight() {
    let ops = [
        Op::Crash { node: 1 },
        Op::Delete { node: 2, key: 0 },
        Op::Put { node: 0, key: 0 },
        Op::Put { node: 2, key: 0 },
        Op::Put { node: 0, key: 3 },
        Op::Put { node: 2, key: 0 },
        Op::Delete { node: 0, key: 1 },
        Op::Leave { node: 0 },
        Op::Partition { side: vec![0] },
        Op::Join { node: 0 },
        Op::Leave { node: 1 },
        Op::Heal,
        Op::Run { ms: 13 },
    ];
    let env = Env {
        net: NetConfig { drop: 0.0, duplicate: 0.11028399948714417, min_delay: 1, max_delay: 3 },
        persist_delay: 16,
        detection: vec![46, 0, 27, 0],
        jitter: 1,
    };
    suite::converge_after_any_history::<Replica>(&profile(), 5044776252173777056, &env, &ops)
        .expect("converges and collects");
}

/// Node 2 leaves and crashes before its leave is on disk, so it restarts with its old replica
/// id and data, after the others collected a tombstone it never saw. It must not join again
/// with that data (the node's `cluster join` refuses a node with history), and the others
/// must still agree.
#[test]
fn a_node_that_restarts_with_old_data_after_leaving_does_not_rejoin_with_it() {
    let env = Env { net: NetConfig::RELIABLE, persist_delay: 1, detection: vec![0, 0, 0, 0], jitter: 0 };
    for (seed, key, wait) in [(9914280460384073263u64, 1u8, 1067u16), (2381281607362662764, 5, 541)] {
        let ops = [
            Op::Put { node: 0, key },
            Op::Run { ms: 2 },
            Op::Delete { node: 0, key },
            Op::Leave { node: 2 },
            Op::Crash { node: 2 },
            Op::Run { ms: wait },
            Op::Join { node: 2 },
        ];
        suite::converge_after_any_history::<Replica>(&profile(), seed, &env, &ops).expect("converges");
    }
}
