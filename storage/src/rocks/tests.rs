//! Tests of the RocksDB store: the shared contracts, reopening, and the bad days (newer
//! format, locked, corrupt, full disk).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, mpsc};

use super::*;
use crate::{GroupCommitConfig, GroupCommitMessageStore, MessageSeq, MessageStore, QueueKey, StoreMessageStore};

/// A store in its own temporary directory, removed after the store is closed (fields drop in
/// order).
struct TempRocks {
    store: RocksStore,
    _dir: tempfile::TempDir,
}

impl TempRocks {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksStore::open(dir.path().join("db"), &RocksConfig::default()).unwrap();
        Self { store, _dir: dir }
    }
}

impl Store for TempRocks {
    fn write(&self, batch: WriteBatch, durability: Durability) -> Result<(), StoreError> {
        self.store.write(batch, durability)
    }
    fn get(&self, column: Column, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.store.get(column, key)
    }
    fn scan_prefix(
        &self,
        column: Column,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        self.store.scan_prefix(column, prefix, after, limit)
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.store.flush()
    }
}

fn open(path: &Path) -> Result<RocksStore, StoreError> {
    RocksStore::open(path, &RocksConfig::default())
}

fn open_reason(result: Result<RocksStore, StoreError>, path: &Path) -> String {
    match result {
        Err(StoreError::Open { path: p, reason }) => {
            assert_eq!(p, path, "the error names the database path");
            reason
        }
        other => panic!("expected StoreError::Open, got {other:?}"),
    }
}

fn q(c: &str) -> QueueKey {
    QueueKey::new("", c)
}

#[test]
fn rocks_store_meets_the_store_contract() {
    crate::contract::run_all(TempRocks::new);
}

#[test]
fn message_stores_on_rocks_meet_the_message_store_contract() {
    crate::contract::run_message_store_all(|| {
        StoreMessageStore::open(Arc::new(TempRocks::new()), Durability::Sync).unwrap()
    });
    crate::contract::run_message_store_all(|| {
        GroupCommitMessageStore::open(Arc::new(TempRocks::new()), GroupCommitConfig::default()).unwrap()
    });
}

#[test]
fn non_default_settings_open_and_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = RocksConfig::default();
    for (k, v) in [
        ("rocksdb.compression", "none"),
        ("rocksdb.bottommost_compression", "lz4"),
        ("rocksdb.block_cache_size", "1MB"),
        ("rocksdb.write_buffer_size", "64KB"),
        ("rocksdb.bloom_filter_bits_per_key", "0"),
        ("rocksdb.max_open_files", "-1"),
        ("rocksdb.total_write_buffer_size", "0"),
    ] {
        config.set(k, v).unwrap();
    }
    let store = RocksStore::open(dir.path(), &config).unwrap();
    let mut b = WriteBatch::new();
    for i in 0..2000u32 {
        b.put(Column::Messages, i.to_be_bytes().to_vec(), vec![7; 100]);
    }
    store.write(b, Durability::Sync).unwrap();
    store.flush_memtables().unwrap();
    assert_eq!(store.scan_prefix(Column::Messages, &[], None, 5000).unwrap().len(), 2000);
}

#[test]
fn reopen_keeps_every_column_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    {
        let store = open(dir.path()).unwrap();
        for round in 0..20u32 {
            let mut b = WriteBatch::new();
            for c in Column::ALL {
                let key = [b"k".as_slice(), &round.to_be_bytes()].concat();
                b.put(c, key.clone(), format!("{}-{round}", c.name()).into_bytes());
                if c == Column::Metadata {
                    expected.push(key);
                }
            }
            // Half synced, half buffered: a clean close keeps both.
            let durability = if round % 2 == 0 { Durability::Sync } else { Durability::Buffered };
            store.write(b, durability).unwrap();
        }
        let mut b = WriteBatch::new();
        b.delete(Column::Metadata, expected.remove(3));
        store.write(b, Durability::Buffered).unwrap();
        // Some data in table files, the rest only in the log.
        store.flush_memtables().unwrap();
        let mut b = WriteBatch::new();
        b.put(Column::Metadata, b"z-after-flush".to_vec(), b"v".to_vec());
        expected.push(b"z-after-flush".to_vec());
        store.write(b, Durability::Buffered).unwrap();
    }
    let store = open(dir.path()).unwrap();
    let keys: Vec<_> =
        store.scan_prefix(Column::Metadata, b"", None, 100).unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, expected);
    assert_eq!(
        store.get(Column::Messages, &[b"k".as_slice(), &7u32.to_be_bytes()].concat()).unwrap(),
        Some(b"messages-7".to_vec())
    );
    assert_eq!(store.scan_prefix(Column::Node, b"k", None, 100).unwrap().len(), 20);
}

#[test]
fn reopen_keeps_offline_messages_in_order_for_both_message_stores() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Arc::new(open(dir.path()).unwrap());
        let ms = GroupCommitMessageStore::open(store.clone(), GroupCommitConfig::default()).unwrap();
        let (tx, rx) = mpsc::channel();
        for i in 0..1000u32 {
            let tx = tx.clone();
            ms.append_deferred(
                &q(&format!("c{}", i % 4)),
                &[&i.to_be_bytes()[..]],
                Box::new(move |r| {
                    tx.send(r).unwrap();
                }),
            );
        }
        drop(tx);
        assert_eq!(rx.iter().filter(Result::is_ok).count(), 1000);
        ms.delete(&q("c0"), &[MessageSeq(0), MessageSeq(1)]).unwrap();
    }
    {
        let store = Arc::new(open(dir.path()).unwrap());
        let ms = StoreMessageStore::open(store, Durability::Sync).unwrap();
        assert_eq!(ms.queues(), vec![(q("c0"), 248), (q("c1"), 250), (q("c2"), 250), (q("c3"), 250)]);
        let c1: Vec<u32> = ms
            .read(&q("c1"), None, 1000)
            .unwrap()
            .iter()
            .map(|m| u32::from_be_bytes(m.data.as_slice().try_into().unwrap()))
            .collect();
        assert_eq!(c1, (1..1000).step_by(4).collect::<Vec<u32>>());
        assert_eq!(ms.append(&q("c1"), &[b"next"]).unwrap(), vec![MessageSeq(250)]);
    }
    let store = Arc::new(open(dir.path()).unwrap());
    let ms = GroupCommitMessageStore::open(store, GroupCommitConfig::default()).unwrap();
    assert_eq!(ms.count(&q("c1")), 251);
    assert_eq!(ms.read(&q("c0"), None, 1).unwrap()[0].seq, MessageSeq(2));
    assert_eq!(ms.append(&q("c1"), &[b"after"]).unwrap(), vec![MessageSeq(251)]);
}

#[test]
fn new_database_carries_the_format_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    assert_eq!(
        store.get(Column::Node, RocksStore::FORMAT_VERSION_KEY).unwrap(),
        Some(RocksStore::FORMAT_VERSION.to_be_bytes().to_vec())
    );
    drop(store);
    open(dir.path()).unwrap();
}

#[test]
fn newer_format_version_is_refused_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()).unwrap());
    {
        // A newer build: a column family this build does not know, and version 2.
        let mut opts = rocksdb::Options::default();
        opts.create_missing_column_families(true);
        let mut names = vec!["default", "future"];
        names.extend(Column::ALL.iter().map(|c| c.name()));
        let db = rocksdb::DB::open_cf(&opts, dir.path(), names).unwrap();
        let node = db.cf_handle(Column::Node.name()).unwrap();
        db.put_cf(node, RocksStore::FORMAT_VERSION_KEY, 2u32.to_be_bytes()).unwrap();
    }
    let err = open(dir.path()).unwrap_err();
    assert_eq!(err, StoreError::FormatVersion { path: dir.path().to_path_buf(), found: 2, supported: 1 });
    assert!(err.to_string().contains(&dir.path().display().to_string()));
}

#[test]
fn database_with_data_but_no_version_record_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path()).unwrap();
        let mut b = WriteBatch::new();
        b.delete(Column::Node, RocksStore::FORMAT_VERSION_KEY);
        b.put(Column::Messages, b"m".to_vec(), b"x".to_vec());
        store.write(b, Durability::Sync).unwrap();
    }
    let reason = open_reason(open(dir.path()), dir.path());
    assert!(reason.contains("no format-version record"), "{reason}");
}

#[test]
fn second_open_in_this_process_is_refused_as_locked() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(dir.path()).unwrap();
    let reason = open_reason(open(dir.path()), dir.path());
    assert!(reason.contains("locked by another process"), "{reason}");
}

const HOLD_ENV: &str = "VMQ_STORAGE_TEST_HOLD_DB";

/// Runs itself a second time as a child process (the same test, with the database path in the
/// environment) which opens the database and keeps it until its stdin closes; meanwhile this
/// process must be refused with "locked by another process".
#[test]
fn open_held_by_another_process_is_refused_as_locked() {
    if let Some(path) = std::env::var_os(HOLD_ENV) {
        // The child: hold the database open.
        let _store = open(Path::new(&path)).unwrap();
        println!("HOLDING");
        std::io::stdout().flush().unwrap();
        let mut sink = Vec::new();
        std::io::stdin().read_to_end(&mut sink).unwrap();
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "rocks::tests::open_held_by_another_process_is_refused_as_locked"])
        .args(["--nocapture", "--test-threads=1"])
        .env(HOLD_ENV, dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok);
    let holding = lines.by_ref().any(|l| l.contains("HOLDING"));
    assert!(holding, "the child process did not open the database");
    let reason = open_reason(open(dir.path()), dir.path());
    assert!(reason.contains("locked by another process"), "{reason}");
    drop(child.stdin.take());
    // Keep reading, so the child can print its result and exit.
    lines.for_each(drop);
    assert!(child.wait().unwrap().success());
    open(dir.path()).unwrap();
}

fn store_with_table_files(dir: &Path) {
    let store = open(dir).unwrap();
    let mut b = WriteBatch::new();
    for i in 0..500u32 {
        // Incompressible values, so the table file has many data blocks.
        let v: Vec<u8> = (0..200u32).map(|j| (i.wrapping_mul(2654435761).wrapping_add(j * 40503) >> 7) as u8).collect();
        b.put(Column::Messages, i.to_be_bytes().to_vec(), v);
    }
    store.write(b, Durability::Sync).unwrap();
    store.flush_memtables().unwrap();
}

/// The largest table file: the one holding the messages.
fn largest_table_file(dir: &Path) -> std::path::PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sst"))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap()
}

#[test]
fn damaged_current_file_is_refused_not_opened_empty() {
    let dir = tempfile::tempdir().unwrap();
    store_with_table_files(dir.path());
    std::fs::write(dir.path().join("CURRENT"), b"garbage").unwrap();
    let reason = open_reason(open(dir.path()), dir.path());
    assert!(reason.contains("corrupt"), "{reason}");
}

#[test]
fn missing_current_file_is_refused_not_opened_empty() {
    let dir = tempfile::tempdir().unwrap();
    store_with_table_files(dir.path());
    std::fs::remove_file(dir.path().join("CURRENT")).unwrap();
    let reason = open_reason(open(dir.path()), dir.path());
    assert!(reason.contains("no RocksDB CURRENT file"), "{reason}");
    assert!(!dir.path().join("CURRENT").exists(), "nothing was created");
}

#[test]
fn damaged_manifest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    store_with_table_files(dir.path());
    let current = std::fs::read_to_string(dir.path().join("CURRENT")).unwrap();
    let manifest = dir.path().join(current.trim());
    let len = std::fs::metadata(&manifest).unwrap().len() as usize;
    std::fs::write(&manifest, vec![0xa5; len]).unwrap();
    let reason = open_reason(open(dir.path()), dir.path());
    assert!(reason.contains("corrupt"), "{reason}");
}

#[test]
fn truncated_table_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    store_with_table_files(dir.path());
    let sst = largest_table_file(dir.path());
    let f = std::fs::OpenOptions::new().write(true).open(&sst).unwrap();
    f.set_len(f.metadata().unwrap().len() / 2).unwrap();
    let reason = open_reason(open(dir.path()), dir.path());
    assert!(reason.contains("corrupt"), "{reason}");
}

#[test]
fn damaged_data_block_is_reported_as_corrupt_on_read() {
    let dir = tempfile::tempdir().unwrap();
    store_with_table_files(dir.path());
    let sst = largest_table_file(dir.path());
    let mut bytes = std::fs::read(&sst).unwrap();
    // Data blocks come first in a table file; flip bytes well inside the first ones.
    for b in &mut bytes[200..260] {
        *b ^= 0xff;
    }
    std::fs::write(&sst, bytes).unwrap();
    let outcome = open(dir.path()).and_then(|s| s.scan_prefix(Column::Messages, &[], None, 1000));
    match outcome {
        Err(StoreError::Corrupt { column: "messages", reason }) => {
            assert!(reason.contains(&dir.path().display().to_string()), "{reason}");
        }
        Err(StoreError::Open { reason, .. }) => assert!(reason.contains("corrupt"), "{reason}"),
        other => panic!("damaged data went unnoticed: {other:?}"),
    }
}

/// A tmpfs mounted for one test, unmounted when dropped. Needs root (CAP_SYS_ADMIN).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Self { dir })
    }

    fn resize(&self, size: &str) {
        let status =
            Command::new("mount").args(["-o", &format!("remount,size={size}")]).arg(self.dir.path()).status().unwrap();
        assert!(status.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

#[test]
fn full_disk_refuses_the_write_and_keeps_everything_acknowledged() {
    let Some(fs) = Tmpfs::mount("3m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root); the mapping is unit-tested");
        return;
    };
    let path = fs.dir.path().join("db");
    let mut config = RocksConfig::default();
    config.set("rocksdb.write_buffer_size", "256KB").unwrap();
    let mut acknowledged = Vec::new();
    let failed_key;
    {
        let store = RocksStore::open(&path, &config).unwrap();
        let mut i = 0u32;
        loop {
            let key = i.to_be_bytes().to_vec();
            let value: Vec<u8> = (0..32 * 1024u32).map(|j| (j.wrapping_mul(2654435761) >> (i % 7 + 9)) as u8).collect();
            let mut b = WriteBatch::new();
            b.put(Column::Messages, key.clone(), value);
            match store.write(b, Durability::Sync) {
                Ok(()) => acknowledged.push(key),
                Err(StoreError::NoSpace(msg)) => {
                    assert!(msg.contains(&path.display().to_string()), "{msg}");
                    failed_key = key;
                    break;
                }
                Err(other) => panic!("expected NoSpace, got {other:?}"),
            }
            i += 1;
            assert!(i < 1000, "a 3 MiB filesystem never filled up");
        }
        assert!(!acknowledged.is_empty());
        assert_eq!(store.get(Column::Messages, &failed_key).unwrap(), None, "the batch was not applied");
    }
    fs.resize("64m");
    let store = RocksStore::open(&path, &config).unwrap();
    let keys: Vec<_> =
        store.scan_prefix(Column::Messages, &[], None, 2000).unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, acknowledged, "every acknowledged write survived, the refused one did not");
}

#[test]
fn prefix_end_is_the_next_key_range() {
    assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
    assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
    assert_eq!(prefix_end(b"\xff\xff"), None);
    assert_eq!(prefix_end(b""), None);
}
