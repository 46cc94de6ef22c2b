//! The scenarios and properties every metadata backend passes (`vmq_storage::sim::suite`),
//! run against the SWC replica.

use vmq_storage::sim::suite::Profile;
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
