//! The scenarios and properties every metadata backend passes (`vmq_storage::sim::suite`),
//! run against the plumtree replica.

use vmq_plumtree::{PlumtreeConfig, Replica};
use vmq_storage::sim::suite::Profile;

/// The lazy tick after a heal, VerneMQ's `min_lazy_tick_interval` lowered to riak_core's
/// `lazy_tick_period`.
const LAZY_TICK: u64 = 1000;

fn profile() -> Profile<PlumtreeConfig> {
    let periodic = PlumtreeConfig {
        min_lazy_tick_interval: 1_000,
        broadcast_exchange_timer: 1_000,
        metadata_hashtree_timer: 1_000,
        tombstone_grace_period: 5_000,
        ..PlumtreeConfig::default()
    };
    // No periodic exchange and no lazy tick within a test.
    let heal_only =
        PlumtreeConfig { broadcast_exchange_timer: 0, min_lazy_tick_interval: 3_600_000, ..PlumtreeConfig::default() };
    // Writes after a heal travel on trees the split reshaped, where a link may be lazy on
    // both sides until the lazy tick (plumtree's own repair, not anti-entropy) announces them.
    let after_heal = PlumtreeConfig { min_lazy_tick_interval: LAZY_TICK, ..heal_only.clone() };
    Profile {
        name: "plumtree",
        periodic,
        heal_only,
        after_heal,
        settle_ms: 30 * 60_000,
        agree_after_heal_ms: 2 * LAZY_TICK,
        exchanges_per_pair: 1,
    }
}

vmq_storage::metadata_backend_suite!(Replica, profile());
