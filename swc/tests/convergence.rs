//! The bound on anti-entropy answers. The convergence properties (convergence, deletes that
//! stay deleted, siblings) and the cases they found are in the suite every backend runs
//! (`tests/suite.rs`, `vmq_storage::sim::suite`).

use vmq_storage::metadata::MetaKey;
use vmq_swc::SwcConfig;
use vmq_swc::sim::{NetConfig, n, sim};

fn key(k: u8) -> MetaKey {
    MetaKey::new("p", vec![k])
}

fn config() -> SwcConfig {
    SwcConfig {
        swc_groups: 2,
        sync_interval: 300,
        sync_interval_leeway: 200,
        gc_interval: 1000,
        sync_timeout: 2000,
        exchange_batch_size: 4,
        ..SwcConfig::default()
    }
}

#[test]
fn large_values_are_repaired_in_answers_of_bounded_size() {
    // No broadcast: the values reach the other node only through anti-entropy, whose answers
    // may carry 1 KiB of values while every value is 600 bytes.
    // One group, and one request asks for every dot: only the byte bound can split the answer.
    let config = SwcConfig {
        enable_broadcast: false,
        exchange_reply_bytes: 1024,
        exchange_batch_size: 100,
        swc_groups: 1,
        ..config()
    };
    let mut sim = sim(7, 2, config, NetConfig::default());
    let (a, b) = (n(1), n(2));
    let value = vec![9u8; 600];
    for k in 0..6 {
        sim.put(a, &key(k), &value);
    }
    assert!(sim.run_until_converged(60_000), "exchanges finish");
    for k in 0..6 {
        assert_eq!(sim.read(b, &key(k)).len(), 1, "key {k} repaired on the other node");
    }
    assert!(sim.converged());
    // Six 600-byte values in one answer would be 3,600 bytes; bounded answers carry two.
    assert!(sim.stats.largest < 2_500, "largest message {} bytes", sim.stats.largest);
}

/// Found by the shared suite once batches became durable late: every exchange and every
/// collection tick wrote the clock and watermark records even when nothing had changed, so an
/// idle cluster wrote a batch per node several times a second (per `sync_interval` and group)
/// and the simulation never found the disk idle.
#[test]
fn an_idle_cluster_writes_nothing() {
    let mut sim = sim(1, 3, config(), NetConfig::default());
    sim.put(n(1), &key(1), b"x");
    assert!(sim.run_until_converged(10_000));
    // The first rounds after the write still raise the watermarks.
    sim.run_for(10_000);
    let before: Vec<u64> = (0..3).map(|i| sim.write_marks(i).1).collect();
    sim.run_for(30_000);
    let after: Vec<u64> = (0..3).map(|i| sim.write_marks(i).1).collect();
    assert_eq!(after, before, "batches written while nothing changed");
    assert!(sim.replica(n(2)).stats().exchanges_completed > 50, "the exchanges went on");
}
