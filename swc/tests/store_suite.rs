//! The scenarios of VerneMQ's `apps/vmq_swc/test/vmq_swc_store_SUITE.erl`, on the simulated
//! network. The init-sync cases have no counterpart: `vmq_swc.init_sync_procedure` is not
//! supported (a new node catches up through ordinary anti-entropy, see `cluster_join_test`).

use vmq_storage::metadata::{MetaKey, MetaValue, MetadataBackend};
use vmq_swc::sim::{NetConfig, n, sim, sync_with};
use vmq_swc::{Recovered, Replica, SwcConfig};

fn init_tracing() {
    let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter("warn").try_init();
}

fn key(prefix: &str, k: impl AsRef<[u8]>) -> MetaKey {
    MetaKey::new(prefix, k.as_ref().to_vec())
}

fn fast_config() -> SwcConfig {
    SwcConfig {
        swc_groups: 3,
        sync_interval: 500,
        sync_interval_leeway: 250,
        gc_interval: 1000,
        // The simulated network loses messages that a live QUIC link would retransmit; an
        // exchange that lost one holds its group until this timeout.
        sync_timeout: 2000,
        ..SwcConfig::default()
    }
}

fn data(values: &[MetaValue]) -> Vec<Vec<u8>> {
    let mut d: Vec<Vec<u8>> = values.iter().map(|v| v.data.clone()).collect();
    d.sort();
    d
}

#[test]
fn basic_store_test() {
    init_tracing();
    let mut sim = sim(1, 1, fast_config(), NetConfig::default());
    let prefixes = ["a", "b", "c", "d"];
    for p in prefixes {
        for i in 0..100u32 {
            sim.put(n(1), &key(p, i.to_be_bytes()), format!("{p}{i}").as_bytes());
        }
    }
    let r = sim.replica(n(1));
    for p in prefixes {
        for i in 0..100u32 {
            let v = r.read(&key(p, i.to_be_bytes())).values;
            assert_eq!(data(&v), vec![format!("{p}{i}").into_bytes()]);
        }
        let mut count = 0;
        r.fold(p, &mut |k, vs| {
            assert_eq!(k.prefix, p);
            assert_eq!(vs.len(), 1);
            count += 1;
        });
        assert_eq!(count, 100);
    }
    r.check_invariants().expect("invariants");
}

#[test]
fn read_write_delete_test() {
    init_tracing();
    let mut sim = sim(2, 1, fast_config(), NetConfig::default());
    // History is empty before the join (VerneMQ checks `history == {1, 0, true}`).
    assert!(sim.replica(n(1)).is_empty_history());
    for i in 2..=4 {
        assert!(sim.replica(n(1)).is_empty_history());
        sim.join(n(i));
    }
    let k = key("p", "foo");
    sim.put(n(1), &k, b"bar");
    assert!(sim.run_until_converged(20_000));
    for i in 1..=4 {
        assert_eq!(data(&sim.read(n(i), &k)), vec![b"bar".to_vec()], "node {i}");
        assert!(!sim.replica(n(i)).is_empty_history());
    }
    sim.put(n(2), &k, b"baz");
    assert!(sim.run_until_converged(20_000));
    for i in 1..=4 {
        assert_eq!(data(&sim.read(n(i), &k)), vec![b"baz".to_vec()], "node {i}");
    }
    sim.delete(n(3), &k);
    assert!(sim.run_until_collected(60_000));
    for i in 1..=4 {
        assert!(sim.read(n(i), &k).is_empty(), "node {i}");
    }
}

#[test]
fn partitioned_cluster_test() {
    init_tracing();
    let mut sim = sim(3, 4, fast_config(), NetConfig::default());
    let k = key("p", "somekey");
    sim.put(n(1), &k, b"old");
    assert!(sim.run_until_converged(20_000));
    sim.partition(&[n(1), n(2)]);
    sim.put(n(1), &k, b"new");
    sim.run_for(10_000);
    assert_eq!(data(&sim.read(n(2), &k)), vec![b"new".to_vec()]);
    for i in [3, 4] {
        assert_eq!(data(&sim.read(n(i), &k)), vec![b"old".to_vec()], "node {i} behind the cut");
    }
    sim.heal();
    assert!(sim.run_until_converged(30_000));
    for i in 1..=4 {
        assert_eq!(data(&sim.read(n(i), &k)), vec![b"new".to_vec()], "node {i}");
    }
}

#[test]
fn partitioned_delete_test() {
    init_tracing();
    let config = SwcConfig { sync_interval: 0, enable_broadcast: false, ..fast_config() };
    let mut sim = sim(4, 2, config, NetConfig::default());
    let k = key("p", "foo");
    sim.put(n(1), &k, b"quux");
    sync_with(&mut sim, n(2), n(1));
    assert!(sim.run_until_quiet(60_000));
    assert_eq!(data(&sim.read(n(2), &k)), vec![b"quux".to_vec()]);
    sim.delete(n(1), &k);
    assert!(sim.run_until_quiet(60_000));
    assert!(sim.read(n(1), &k).is_empty());
    assert_eq!(data(&sim.read(n(2), &k)), vec![b"quux".to_vec()], "no broadcast, no sync yet");
    sync_with(&mut sim, n(2), n(1));
    assert!(sim.run_until_quiet(60_000));
    sync_with(&mut sim, n(1), n(2));
    assert!(sim.run_until_quiet(60_000));
    // A second round lets each side learn, through the other's watermark, that both have the
    // tombstone; then it is collected and no context is left.
    sync_with(&mut sim, n(2), n(1));
    assert!(sim.run_until_quiet(60_000));
    sync_with(&mut sim, n(1), n(2));
    assert!(sim.run_until_quiet(60_000));
    for i in 1..=2 {
        let r = sim.replica(n(i));
        let read = r.read(&k);
        assert!(read.values.is_empty(), "node {i}");
        assert!(read.context.is_empty(), "node {i} still holds a tombstone");
        assert_eq!(r.stats().tombstones, 0);
        r.check_invariants().expect("invariants");
    }
}

#[test]
fn siblings_test() {
    init_tracing();
    let mut sim = sim(5, 4, fast_config(), NetConfig::default());
    let k = key("p", "foo");
    sim.put(n(1), &k, b"bar");
    assert!(sim.run_until_converged(20_000));
    sim.partition(&[n(1), n(2)]);
    sim.put(n(1), &k, b"baz");
    sim.put(n(3), &k, b"bam");
    sim.run_for(5_000);
    sim.heal();
    assert!(sim.run_until_converged(30_000));
    for i in 1..=4 {
        assert_eq!(data(&sim.read(n(i), &k)), vec![b"bam".to_vec(), b"baz".to_vec()]);
    }
    // Reading without write-back keeps the siblings.
    let read = sim.replica(n(1)).read(&k);
    assert_eq!(read.values.len(), 2);
    sim.run_for(3_000);
    assert_eq!(sim.read(n(4), &k).len(), 2);
    // Resolving writes the winner back with the merged context: siblings collapse everywhere.
    let winner = sim.read_resolved(n(4), &k).expect("a winner");
    assert_eq!(winner.data, b"bam".to_vec(), "written last");
    assert!(sim.run_until_converged(30_000));
    for i in 1..=4 {
        assert_eq!(data(&sim.read(n(i), &k)), vec![b"bam".to_vec()]);
    }
}

#[test]
fn cluster_join_test() {
    init_tracing();
    let mut sim = sim(6, 3, fast_config(), NetConfig::default());
    for i in 0..200u32 {
        sim.put(n(1 + (i as usize % 3)), &key("p", i.to_be_bytes()), &i.to_be_bytes());
    }
    // Deletes made before the writes of other nodes arrive would not supersede them (they
    // are concurrent, and a delete only removes what it saw), so let the writes spread first.
    assert!(sim.run_until_converged(20_000));
    for i in 0..50u32 {
        sim.delete(n(1), &key("p", i.to_be_bytes()));
    }
    // The history is collected before the new node arrives.
    assert!(sim.run_until_collected(60_000));
    let fresh = n(4);
    sim.join(fresh);
    assert!(sim.replica(fresh).is_empty_history());
    assert!(sim.run_until_collected(60_000));
    let snap = sim.replica(fresh).snapshot();
    assert_eq!(snap.len(), 150);
    assert_eq!(snap, sim.replica(n(1)).snapshot());
}

#[test]
fn cluster_leave_test() {
    init_tracing();
    let mut sim = sim(7, 4, fast_config(), NetConfig::default());
    sim.put(n(1), &key("p", "before"), b"1");
    assert!(sim.run_until_converged(20_000));
    let old_id = sim.replica(n(1)).replica_id().clone();
    sim.leave(n(1));
    // The leaving node retired its id and holds nothing: it may join again.
    let left = sim.replica(n(1));
    assert_ne!(left.replica_id(), &old_id);
    assert!(left.is_empty_history());
    for i in 0..20u32 {
        sim.put(n(2 + (i as usize % 3)), &key("p", i.to_be_bytes()), b"x");
    }
    sim.delete(n(2), &key("p", "before"));
    assert!(sim.run_until_collected(60_000));
    for i in 2..=4 {
        let r = sim.replica(n(i));
        assert_eq!(r.snapshot().len(), 20);
        r.check_invariants().expect("invariants");
    }
    // The departed node's clock entries are retired once nothing depends on them.
    sim.run_for(10_000);
    for i in 2..=4 {
        let known = sim.replica(n(i)).known_replicas();
        assert!(!known.contains(&old_id), "node {i} still tracks the departed id");
        assert!(known.iter().all(|id| id.node != *sim.id(n(1))));
    }
    // A rejoin under the new id is served like any fresh node.
    sim.join(n(1));
    assert!(sim.run_until_collected(60_000));
    assert_eq!(sim.replica(n(1)).snapshot().len(), 20);
}

#[test]
fn events_test() {
    init_tracing();
    let mut sim = sim(8, 3, fast_config(), NetConfig { drop: 0.05, ..NetConfig::default() });
    for i in 1..=3 {
        sim.subscribe(n(i), "p", false);
    }
    let mut seed = 8u64;
    for _ in 0..1000 {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let node = n(1 + (seed >> 33) as usize % 3);
        let k = key("p", [((seed >> 40) % 50) as u8]);
        if (seed >> 20).is_multiple_of(4) {
            sim.delete(node, &k);
        } else {
            sim.put(node, &k, &seed.to_be_bytes());
        }
    }
    assert!(sim.run_until_converged(60_000));
    for i in 1..=3 {
        // Replaying the events gives exactly the replica's final contents.
        let mut view = std::collections::BTreeMap::new();
        for e in sim.events(n(i)) {
            let current = view.get(&e.key).cloned().unwrap_or_default();
            assert_eq!(current, e.old, "event old values match what the subscriber saw");
            if e.new.is_empty() {
                view.remove(&e.key);
            } else {
                view.insert(e.key.clone(), e.new.clone());
            }
        }
        assert_eq!(view, sim.replica(n(i)).snapshot(), "node {i}");
    }
}

#[test]
fn events_skip_local_feedback() {
    init_tracing();
    let mut sim = sim(9, 2, fast_config(), NetConfig::default());
    sim.subscribe(n(1), "p", true);
    sim.subscribe(n(2), "p", true);
    sim.put(n(1), &key("p", "k"), b"v");
    sim.put(n(1), &key("other", "k"), b"v");
    assert!(sim.run_until_converged(10_000));
    assert!(sim.events(n(1)).is_empty(), "local write is not fed back");
    let remote = sim.events(n(2));
    assert_eq!(remote.len(), 1, "only the subscribed prefix");
    assert!(!remote[0].local && remote[0].old.is_empty());
}

#[test]
fn full_sync_test() {
    init_tracing();
    let config = SwcConfig { exchange_batch_size: 1, ..fast_config() };
    let mut sim = sim(10, 3, config, NetConfig::default());
    for i in 0..300u32 {
        sim.put(n(1 + (i as usize % 3)), &key("p", (i * 7919).to_be_bytes()), &i.to_be_bytes());
    }
    sim.join(n(4));
    for i in 300..400u32 {
        sim.put(n(1 + (i as usize % 4)), &key("p", (i * 7919).to_be_bytes()), &i.to_be_bytes());
        sim.run_for(20);
    }
    assert!(sim.run_until_converged(120_000));
    assert_eq!(sim.replica(n(4)).snapshot().len(), 400);
}

#[test]
fn store_restart_test() {
    init_tracing();
    let mut sim = sim(11, 3, fast_config(), NetConfig::default());
    for i in 0..30u32 {
        sim.put(n(1), &key("p", i.to_be_bytes()), b"v");
    }
    assert!(sim.run_until_converged(20_000));
    let id = sim.replica(n(2)).replica_id().clone();
    let before = sim.replica(n(2)).snapshot();
    sim.crash(n(2));
    for i in 30..40u32 {
        sim.put(n(1), &key("p", i.to_be_bytes()), b"v");
    }
    sim.recover(n(2));
    let r = sim.replica(n(2));
    assert_eq!(r.replica_id(), &id, "replica id is stable across restarts");
    assert_eq!(r.snapshot(), before);
    r.check_invariants().expect("invariants after recovery");
    sim.put(n(2), &key("p", "after"), b"w");
    assert!(sim.run_until_converged(30_000));
    assert_eq!(sim.replica(n(3)).snapshot().len(), 41);
}

#[test]
fn replica_rebuilt_from_its_store_continues_where_it_was() {
    init_tracing();
    let mut sim = sim(12, 2, fast_config(), NetConfig::default());
    for i in 0..20u32 {
        sim.put(n(1), &key("p", i.to_be_bytes()), b"v");
    }
    sim.delete(n(1), &key("p", 3u32.to_be_bytes()));
    assert!(sim.run_until_converged(20_000));
    let recovered = Recovered::load(sim.store(n(1))).expect("load");
    let live = sim.replica(n(1));
    let copy = Replica::new(fast_config(), sim.id(n(1)).clone(), 99, recovered);
    assert_eq!(copy.replica_id(), live.replica_id());
    assert_eq!(copy.snapshot(), live.snapshot());
    assert_eq!(copy.stats().tombstones, live.stats().tombstones);
    assert_eq!(copy.stats().dkm_entries, live.stats().dkm_entries);
    copy.check_invariants().expect("invariants");
    let k = key("p", 5u32.to_be_bytes());
    assert_eq!(copy.read(&k), live.read(&k));
}

#[test]
fn a_write_lost_in_a_crash_before_persisting_was_never_revealed() {
    init_tracing();
    let mut sim = sim(13, 3, fast_config(), NetConfig::default());
    let k = key("p", "k");
    sim.put(n(1), &k, b"durable");
    assert!(sim.run_until_converged(20_000));
    // The write's batch waits for the disk when the process dies.
    sim.set_persist_delay(10);
    sim.put(n(1), &k, b"lost");
    assert_eq!(sim.unpersisted(n(1)), 1);
    sim.crash(n(1));
    sim.set_persist_delay(0);
    sim.run_for(3_000);
    for i in 2..=3 {
        assert_eq!(data(&sim.read(n(i), &k)), vec![b"durable".to_vec()], "node {i}");
    }
    sim.recover(n(1));
    assert_eq!(data(&sim.read(n(1), &k)), vec![b"durable".to_vec()]);
    // The recovered node mints the lost write's dot again for a different value; since that
    // dot never left, nobody confuses the two.
    sim.put(n(1), &k, b"again");
    assert!(sim.run_until_converged(30_000));
    for i in 1..=3 {
        assert_eq!(data(&sim.read(n(i), &k)), vec![b"again".to_vec()], "node {i}");
    }
}
