//! Repair after a heal: a peer that becomes reachable again is offered the writes it missed
//! and exchanged with at once, so replicas agree within round trips of the heal, not at the
//! next `sync_interval` tick. The periodic exchange is switched off here (`sync_interval = 0`):
//! whatever converges, converges through the heal alone.
//! The scenario, the catch-up of a restarted node and the bounded-agreement property
//! (with the case it found) are in the suite every backend runs (`tests/suite.rs`,
//! `vmq_storage::sim::suite`).

use vmq_storage::metadata::MetaKey;
use vmq_swc::SwcConfig;
use vmq_swc::sim::{NetConfig, n, sim};

fn key(prefix: &str, k: u8) -> MetaKey {
    MetaKey::new(prefix, vec![k])
}

const GROUPS: u16 = 3;

/// No periodic exchange; broadcasts on, as the node runs.
fn heal_only() -> SwcConfig {
    SwcConfig {
        swc_groups: GROUPS,
        sync_interval: 0,
        gc_interval: 1000,
        sync_timeout: 2000,
        exchange_batch_size: 4,
        ..SwcConfig::default()
    }
}

/// The links of the real cluster: in order and lossless while connected (QUIC), a few ms.
fn link() -> NetConfig {
    NetConfig { drop: 0.0, duplicate: 0.0, min_delay: 1, max_delay: 5 }
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
}

/// The offer covers exactly the cut-off node's own writes during the split, so the peers have
/// them after one delivery, before any exchange has a reply.
#[test]
fn writes_made_during_a_split_are_offered_first_and_cost_what_was_missed() {
    init_tracing();
    let mut sim = sim(7, 2, heal_only(), link());
    for k in 0..200u8 {
        sim.put(n(1), &key("retain", k), b"before");
    }
    assert!(sim.run_until_converged(1000));
    sim.cut(n(1), n(2));
    for k in 0..5u8 {
        sim.put(n(1), &key("subscriber", k), b"during");
    }
    sim.heal();
    let offered = sim.replica(n(1)).stats().objects_offered;
    assert_eq!(offered, 5, "only what was written during the split is offered");
    // The offers arrive after one link delay, before the exchanges' second round trip.
    sim.run_for(5);
    for k in 0..5u8 {
        assert_eq!(sim.read(n(2), &key("subscriber", k)).len(), 1, "key {k} arrived with the offer");
    }
    assert!(sim.run_until_converged(1000));
}
