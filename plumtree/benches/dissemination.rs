//! Dissemination and anti-entropy cost over the simulated network.
//!
//! `cargo bench -p vmq-plumtree --bench dissemination` first prints the message counts and the
//! virtual time to full dissemination (1 ms per hop), then divan times the simulation itself.

use vmq_plumtree::PlumtreeConfig;
use vmq_plumtree::sim::Sim;
use vmq_storage::metadata::MetaKey;

const SIZES: [usize; 3] = [3, 10, 50];
const KEYS: u32 = 100_000;
const DIFFERING: u32 = 100;

fn key(i: u32) -> MetaKey {
    MetaKey::new("subscriber", format!("client-{i:08}").into_bytes())
}

/// A cluster of `n` whose tree for root 0 has settled.
fn settled(n: usize) -> Sim {
    let mut sim = Sim::new(n, PlumtreeConfig::default(), 42);
    for round in 0..12u8 {
        sim.put(0, &key(0), &[round]);
        sim.run_for(30_000);
    }
    sim.reset_counters();
    sim
}

/// Puts one value at node 0 and returns the virtual milliseconds until every node has it.
fn broadcast_once(sim: &mut Sim, n: usize, data: &[u8]) -> u64 {
    let start = sim.now().0;
    let value = sim.put(0, &key(0), data);
    let mut done = start;
    while (0..n).any(|i| sim.read(i, &key(0)) != vec![value.clone()]) {
        sim.run_for(1);
        done = sim.now().0;
    }
    done - start
}

/// Two replicas holding the same `KEYS` keys except `DIFFERING`, not yet introduced.
fn diverged() -> Sim {
    let mut sim = Sim::new(2, PlumtreeConfig::default(), 7);
    sim.set_members(&[]);
    for i in 0..KEYS {
        sim.put(0, &key(i), b"subscription");
    }
    sim.crash(1);
    sim.copy_store(0, 1);
    sim.recover(1);
    for i in 0..DIFFERING {
        sim.put(0, &key(i * (KEYS / DIFFERING)), b"changed");
    }
    sim.reset_counters();
    sim
}

fn report() {
    println!("plumtree dissemination (one broadcast from a settled root, 1 ms per hop)");
    println!(
        "{:>5} {:>7} {:>6} {:>7} {:>15} {:>6} {:>10}",
        "nodes", "eager", "prune", "i_have", "ignored_i_have", "graft", "time (ms)"
    );
    for n in SIZES {
        let mut sim = settled(n);
        let ms = broadcast_once(&mut sim, n, b"measured");
        // One lazy tick later every announcement has been sent and acknowledged.
        sim.run_for(20_000);
        println!(
            "{:>5} {:>7} {:>6} {:>7} {:>15} {:>6} {:>10}",
            n,
            sim.sent("broadcast"),
            sim.sent("prune"),
            sim.sent("i_have"),
            sim.sent("ignored_i_have"),
            sim.sent("graft"),
            ms
        );
    }
    let mut sim = diverged();
    sim.set_members(&[0, 1]);
    assert!(sim.run_until_converged(600_000), "anti-entropy did not converge");
    let frames: u64 = sim.stats.sent.iter().filter(|(k, _)| k.starts_with("exchange")).map(|(_, v)| *v).sum();
    let bytes = sim.stats.bytes;
    let repaired: u64 = (0..2).map(|i| sim.replica(i).stats().keys_repaired).sum();
    println!(
        "anti-entropy, {KEYS} keys, {DIFFERING} differing: {frames} exchange frames, {bytes} bytes on the wire in total, {repaired} keys repaired, {:?}",
        sim.stats.sent
    );
}

fn main() {
    report();
    divan::main();
}

/// Wall-clock cost of simulating one broadcast to full dissemination on a settled tree.
#[divan::bench(args = SIZES)]
fn broadcast(bencher: divan::Bencher, n: usize) {
    let mut sim = settled(n);
    let mut round = 0u32;
    bencher.bench_local(|| {
        round += 1;
        broadcast_once(&mut sim, n, &round.to_le_bytes())
    });
}

/// Wall-clock cost of the anti-entropy exchange that repairs 100 differing keys out of 100,000.
#[divan::bench(sample_count = 3, sample_size = 1)]
fn anti_entropy_100k_keys_100_differing(bencher: divan::Bencher) {
    bencher.with_inputs(diverged).bench_local_values(|mut sim| {
        sim.set_members(&[0, 1]);
        assert!(sim.run_until_converged(600_000));
        sim
    });
}
