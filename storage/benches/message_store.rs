//! Offline message store appends per second on RocksDB, by durability policy and number of
//! concurrent appenders.
//!
//! Each iteration appends 256 messages of 256 bytes. The appenders are threads that each wait
//! for their own append before the next, as publishers wait for their PUBACK; `pipelined`
//! issues all 256 with `append_deferred` from one thread and waits for every callback, as the
//! async node does. The database lives in `$VMQ_BENCH_DIR` (default: the system temp dir), so
//! point it at the disk you care about.
//!
//! ```text
//! cargo bench -p vmq-storage --features rocksdb --bench message_store
//! ```

use std::sync::{Arc, mpsc};

use divan::Bencher;
use divan::counter::ItemsCount;
use vmq_storage::{
    DurabilityPolicy, GroupCommitConfig, GroupCommitMessageStore, MessageStore, QueueKey, RocksConfig, RocksStore,
};

const PER_ITERATION: usize = 256;
const MESSAGE: [u8; 256] = [0x42; 256];

fn main() {
    divan::main();
}

struct Fixture {
    ms: GroupCommitMessageStore<RocksStore>,
    // Removed after the store is closed: fields drop in order.
    _dir: tempfile::TempDir,
}

fn fixture(policy: DurabilityPolicy) -> Fixture {
    let dir = match std::env::var_os("VMQ_BENCH_DIR") {
        Some(base) => tempfile::tempdir_in(base),
        None => tempfile::tempdir(),
    }
    .expect("bench directory");
    let store = RocksStore::open(dir.path(), &RocksConfig::default()).expect("open RocksDB");
    let config = GroupCommitConfig { policy, ..GroupCommitConfig::default() };
    let ms = GroupCommitMessageStore::open(Arc::new(store), config).expect("open message store");
    Fixture { ms, _dir: dir }
}

/// `appenders` threads, each appending its share of [`PER_ITERATION`] messages one at a time
/// to its own queue and waiting for each.
fn concurrent_appends(bencher: Bencher, policy: DurabilityPolicy, appenders: usize) {
    let f = fixture(policy);
    let queues: Vec<QueueKey> = (0..appenders).map(|i| QueueKey::new("", format!("client-{i}"))).collect();
    bencher.counter(ItemsCount::new(PER_ITERATION)).bench_local(|| {
        std::thread::scope(|s| {
            for queue in &queues {
                let ms = &f.ms;
                s.spawn(move || {
                    for _ in 0..PER_ITERATION / appenders {
                        ms.append(queue, &[&MESSAGE]).expect("append");
                    }
                });
            }
        });
    });
}

/// Default policy (`sync`: fsync per group).
#[divan::bench(args = [1, 8, 64], sample_count = 10, sample_size = 1)]
fn sync_group_commit(bencher: Bencher, appenders: usize) {
    concurrent_appends(bencher, DurabilityPolicy::Sync, appenders);
}

/// `always`: one fsync per append, never grouped.
#[divan::bench(args = [1, 8, 64], sample_count = 10, sample_size = 1)]
fn always_fsync_per_append(bencher: Bencher, appenders: usize) {
    concurrent_appends(bencher, DurabilityPolicy::Always, appenders);
}

/// `buffered`: grouped, no fsync.
#[divan::bench(args = [1, 8, 64], sample_count = 10, sample_size = 1)]
fn buffered_group_commit(bencher: Bencher, appenders: usize) {
    concurrent_appends(bencher, DurabilityPolicy::Buffered, appenders);
}

/// One thread, 256 appends in flight through `append_deferred` (the async node's pattern),
/// under the default `sync` policy and under `always`.
#[divan::bench(args = [DurabilityPolicy::Sync, DurabilityPolicy::Always], sample_count = 10, sample_size = 1)]
fn pipelined_deferred(bencher: Bencher, policy: DurabilityPolicy) {
    let f = fixture(policy);
    let queues: Vec<QueueKey> = (0..64).map(|i| QueueKey::new("", format!("client-{i}"))).collect();
    bencher.counter(ItemsCount::new(PER_ITERATION)).bench_local(|| {
        let (tx, rx) = mpsc::channel();
        for i in 0..PER_ITERATION {
            let tx = tx.clone();
            f.ms.append_deferred(
                &queues[i % queues.len()],
                &[&MESSAGE],
                Box::new(move |r| {
                    let _ = tx.send(r);
                }),
            );
        }
        drop(tx);
        assert_eq!(rx.iter().filter(Result::is_ok).count(), PER_ITERATION);
    });
}
