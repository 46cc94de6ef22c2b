//! Repair after a heal: a peer that becomes reachable again is sent `i_have`s for the writes
//! it missed and exchanged with at once, so replicas agree within round trips of the heal, not
//! at the next `broadcast_exchange_timer` tick. The periodic exchange is switched off and the
//! lazy tick pushed out of reach here: whatever converges, converges through the heal alone.
//! The scenario, the catch-up of a restarted node and the bounded-agreement property
//! are in the suite every backend runs (`tests/suite.rs`, `vmq_storage::sim::suite`).

use vmq_plumtree::PlumtreeConfig;
use vmq_plumtree::sim::Sim;
use vmq_storage::metadata::MetaKey;

fn key(prefix: &str, k: u8) -> MetaKey {
    MetaKey::new(prefix, vec![k])
}

/// No periodic exchange, no lazy tick within a test; broadcasts as the node runs them.
fn heal_only() -> PlumtreeConfig {
    PlumtreeConfig { broadcast_exchange_timer: 0, min_lazy_tick_interval: 3_600_000, ..PlumtreeConfig::default() }
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("warn").try_init();
}

/// Runs until every member agrees and nothing is in flight; returns the virtual time it took.
fn time_to_converge(sim: &mut Sim, max_ms: u64) -> Option<u64> {
    let start = sim.now();
    (sim.run_until_converged(max_ms) && sim.run_until_quiet(max_ms)).then(|| sim.now().0 - start.0)
}

/// The cut-off node's own writes are announced to each peer on the heal: the peers graft
/// them after one round trip, before the exchange's walk down the hash tree ends.
#[test]
fn writes_made_during_a_split_are_offered_first() {
    init_tracing();
    let mut sim = Sim::new(2, heal_only(), 7);
    for k in 0..200u8 {
        sim.put(0, &key("retain", k), b"before");
    }
    assert!(sim.run_until_quiet(1000));
    sim.cut(0, 1);
    for k in 0..5u8 {
        sim.put(0, &key("subscriber", k), b"during");
    }
    sim.heal();
    assert_eq!(sim.replica(0).stats().writes_offered, 5, "only what was written during the split");
    // i_have, graft, broadcast: two round trips at 1 ms.
    sim.run_for(3);
    for k in 0..5u8 {
        assert_eq!(sim.read(1, &key("subscriber", k)).len(), 1, "key {k} arrived by the offer");
    }
    assert!(time_to_converge(&mut sim, 1000).is_some());
}
