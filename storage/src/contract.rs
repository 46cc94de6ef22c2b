//! One test suite for the [`Store`] contract, run against every implementation, and one for
//! the [`MessageStore`] contract, run against every message store on every store.

use std::collections::BTreeMap;
use std::sync::{Arc, mpsc};

use crate::{Column, Durability, MessageSeq, MessageStore, QueueKey, Store, WriteBatch};

/// Runs every contract check, each on a fresh store from `make`.
pub fn run_all<S: Store>(make: impl Fn() -> S) {
    batch_is_applied_in_order(&make());
    delete_of_absent_key_is_not_an_error(&make());
    columns_are_separate(&make());
    scan_is_ordered_prefixed_paged(&make());
    scan_edges(&make());
    empty_batch_is_fine(&make());
    values_of_any_size_round_trip(&make());
    concurrent_writers_are_serialised(Arc::new(make()));
    agrees_with_a_model_under_random_ops(&make(), 0x5eed_0001);
    agrees_with_a_model_under_random_ops(&make(), 0x5eed_0002);
}

fn batch_is_applied_in_order<S: Store>(s: &S) {
    let mut b = WriteBatch::new();
    b.put(Column::Node, b"k".to_vec(), b"1".to_vec());
    b.put(Column::Node, b"k".to_vec(), b"2".to_vec());
    b.put(Column::Node, b"gone".to_vec(), b"x".to_vec());
    b.delete(Column::Node, b"gone".to_vec());
    s.write(b, Durability::Sync).expect("write");
    assert_eq!(s.get(Column::Node, b"k").expect("get"), Some(b"2".to_vec()));
    assert_eq!(s.get(Column::Node, b"gone").expect("get"), None);
}

fn delete_of_absent_key_is_not_an_error<S: Store>(s: &S) {
    let mut b = WriteBatch::new();
    b.delete(Column::Messages, b"never".to_vec());
    s.write(b, Durability::Buffered).expect("delete absent");
}

fn columns_are_separate<S: Store>(s: &S) {
    let mut b = WriteBatch::new();
    for c in Column::ALL {
        b.put(c, b"same".to_vec(), c.name().as_bytes().to_vec());
    }
    s.write(b, Durability::Buffered).expect("write");
    for c in Column::ALL {
        assert_eq!(s.get(c, b"same").expect("get"), Some(c.name().as_bytes().to_vec()));
    }
}

fn scan_is_ordered_prefixed_paged<S: Store>(s: &S) {
    let mut b = WriteBatch::new();
    for k in [&b"a\x02"[..], b"a\x01", b"a\xff", b"b\x00", b"a", b"\x00"] {
        b.put(Column::Metadata, k.to_vec(), k.to_vec());
    }
    s.write(b, Durability::Buffered).expect("write");
    let keys = |v: Vec<(Vec<u8>, Vec<u8>)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    let all = keys(s.scan_prefix(Column::Metadata, b"a", None, 100).expect("scan"));
    assert_eq!(all, vec![b"a".to_vec(), b"a\x01".to_vec(), b"a\x02".to_vec(), b"a\xff".to_vec()]);
    let page = keys(s.scan_prefix(Column::Metadata, b"a", Some(b"a\x01"), 2).expect("scan"));
    assert_eq!(page, vec![b"a\x02".to_vec(), b"a\xff".to_vec()]);
    let whole = keys(s.scan_prefix(Column::Metadata, b"", None, 100).expect("scan"));
    assert_eq!(whole.len(), 6);
    assert_eq!(whole.first(), Some(&b"\x00".to_vec()));
    assert!(s.scan_prefix(Column::Messages, b"a", None, 100).expect("scan").is_empty());
}

/// `after` before the prefix, after the prefix range, between keys and absent; `limit` 0;
/// prefixes of `0xff` bytes, which have no successor key.
fn scan_edges<S: Store>(s: &S) {
    let mut b = WriteBatch::new();
    for k in [&b"\xff"[..], b"\xff\xff", b"\xff\xff\x00", b"m1", b"m3", b"n"] {
        b.put(Column::Node, k.to_vec(), b"v".to_vec());
    }
    s.write(b, Durability::Buffered).expect("write");
    let keys = |v: Vec<(Vec<u8>, Vec<u8>)>| v.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    let scan = |p: &[u8], a: Option<&[u8]>, l| keys(s.scan_prefix(Column::Node, p, a, l).expect("scan"));
    assert_eq!(scan(b"m", Some(b"a"), 10), vec![b"m1".to_vec(), b"m3".to_vec()], "after < prefix");
    assert_eq!(scan(b"m", Some(b"m2"), 10), vec![b"m3".to_vec()], "after between keys");
    assert!(scan(b"m", Some(b"m3"), 10).is_empty(), "after the last key");
    assert!(scan(b"m", Some(b"z"), 10).is_empty(), "after beyond the prefix");
    assert!(scan(b"m", None, 0).is_empty(), "limit 0");
    assert_eq!(scan(b"\xff\xff", None, 10), vec![b"\xff\xff".to_vec(), b"\xff\xff\x00".to_vec()]);
    assert_eq!(scan(b"\xff", Some(b"\xff"), 10).len(), 2);
    assert!(scan(b"q", None, 10).is_empty());
}

fn empty_batch_is_fine<S: Store>(s: &S) {
    s.write(WriteBatch::new(), Durability::Sync).expect("empty batch");
    s.flush().expect("flush");
}

fn values_of_any_size_round_trip<S: Store>(s: &S) {
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let mut b = WriteBatch::new();
    b.put(Column::Messages, b"empty".to_vec(), Vec::new());
    b.put(Column::Messages, b"big".to_vec(), big.clone());
    b.put(Column::Messages, Vec::new(), b"empty key".to_vec());
    s.write(b, Durability::Sync).expect("write");
    assert_eq!(s.get(Column::Messages, b"empty").expect("get"), Some(Vec::new()));
    assert_eq!(s.get(Column::Messages, b"big").expect("get"), Some(big));
    assert_eq!(s.get(Column::Messages, b"").expect("get"), Some(b"empty key".to_vec()));
}

/// Batches from several threads never interleave: each batch writes one value under every
/// key, so any key read back must agree with every other key.
fn concurrent_writers_are_serialised<S: Store>(s: Arc<S>) {
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                for round in 0..25u8 {
                    let mut b = WriteBatch::new();
                    for k in 0..8u8 {
                        b.put(Column::Metadata, vec![b'c', k], vec![t, round]);
                    }
                    s.write(b, Durability::Buffered).expect("write");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer thread");
    }
    let values: Vec<_> =
        s.scan_prefix(Column::Metadata, b"c", None, 100).expect("scan").into_iter().map(|(_, v)| v).collect();
    assert_eq!(values.len(), 8);
    assert!(values.iter().all(|v| v == &values[0]), "a batch was torn: {values:?}");
    assert_eq!(values[0][1], 24, "the last batch of some thread wins");
}

/// xorshift64*: a dependency-free generator, so the suite can be exported to other crates.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Short keys over a tiny alphabet, so that puts, deletes and scans collide often.
    fn key(&mut self) -> Vec<u8> {
        let len = self.below(4) as usize;
        (0..len).map(|_| [0u8, 1, b'a', 0xff][self.below(4) as usize]).collect()
    }
}

/// Random batches, reads and paged scans, checked against a `BTreeMap` per column.
fn agrees_with_a_model_under_random_ops<S: Store>(s: &S, seed: u64) {
    let mut rng = Rng(seed);
    // A fresh store may hold records of its own (RocksStore's format version): start from them.
    let mut model: BTreeMap<(Column, Vec<u8>), Vec<u8>> = BTreeMap::new();
    for c in Column::ALL {
        for (k, v) in s.scan_prefix(c, &[], None, usize::MAX).expect("scan") {
            model.insert((c, k), v);
        }
    }
    for step in 0..300 {
        let column = Column::ALL[rng.below(3) as usize];
        match rng.below(3) {
            0 => {
                let mut b = WriteBatch::new();
                for _ in 0..=rng.below(4) {
                    let (c, k) = (Column::ALL[rng.below(3) as usize], rng.key());
                    if rng.below(3) == 0 {
                        model.remove(&(c, k.clone()));
                        b.delete(c, k);
                    } else {
                        let v = rng.next().to_be_bytes().to_vec();
                        model.insert((c, k.clone()), v.clone());
                        b.put(c, k, v);
                    }
                }
                s.write(b, Durability::Buffered).expect("write");
            }
            1 => {
                let k = rng.key();
                let want = model.get(&(column, k.clone())).cloned();
                assert_eq!(s.get(column, &k).expect("get"), want, "seed {seed} step {step}");
            }
            _ => {
                let (prefix, limit) = (rng.key(), 1 + rng.below(3) as usize);
                let want: Vec<_> = model
                    .iter()
                    .filter(|((c, k), _)| *c == column && k.starts_with(&prefix))
                    .map(|((_, k), v)| (k.clone(), v.clone()))
                    .collect();
                let mut got = Vec::new();
                loop {
                    let after = got.last().map(|(k, _): &(Vec<u8>, Vec<u8>)| k.clone());
                    let page = s.scan_prefix(column, &prefix, after.as_deref(), limit).expect("scan");
                    assert!(page.len() <= limit);
                    let done = page.len() < limit;
                    got.extend(page);
                    if done {
                        break;
                    }
                }
                assert_eq!(got, want, "seed {seed} step {step} prefix {prefix:?}");
            }
        }
    }
}

/// Runs every message-store contract check, each on a fresh, empty message store from `make`.
pub fn run_message_store_all<M: MessageStore>(make: impl Fn() -> M) {
    append_read_delete_keeps_order_and_count(&make());
    queues_are_prefix_free_and_listed(&make());
    delete_queue_removes_everything_and_numbering_goes_on(&make());
    deferred_calls_complete_in_order(&make());
    empty_append_is_a_no_op(&make());
    concurrent_appenders_keep_their_order(Arc::new(make()));
}

fn q(c: &str) -> QueueKey {
    QueueKey::new("", c)
}

fn datas(ms: &[crate::StoredMessage]) -> Vec<&[u8]> {
    ms.iter().map(|m| m.data.as_slice()).collect()
}

fn append_read_delete_keeps_order_and_count<M: MessageStore>(ms: &M) {
    let seqs = ms.append(&q("a"), &[b"1", b"2", b"3"]).expect("append");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let more = ms.append(&q("a"), &[b"4"]).expect("append");
    assert!(more[0] > seqs[2]);
    assert_eq!(ms.count(&q("a")), 4);
    let all = ms.read(&q("a"), None, 10).expect("read");
    assert_eq!(datas(&all), [b"1", b"2", b"3", b"4"]);
    assert_eq!(all.iter().map(|m| m.seq).collect::<Vec<_>>()[..3], seqs[..]);
    let page = ms.read(&q("a"), Some(seqs[0]), 2).expect("read");
    assert_eq!(datas(&page), [b"2", b"3"]);
    ms.delete(&q("a"), &seqs[..2]).expect("delete");
    ms.delete(&q("a"), &seqs[..2]).expect("delete twice");
    ms.delete(&q("a"), &[MessageSeq(999)]).expect("delete absent");
    ms.delete(&q("nobody"), &[MessageSeq(0)]).expect("delete on an unknown queue");
    assert_eq!(ms.count(&q("a")), 2);
    assert_eq!(datas(&ms.read(&q("a"), None, 10).expect("read")), [b"3", b"4"]);
}

fn queues_are_prefix_free_and_listed<M: MessageStore>(ms: &M) {
    ms.append(&q("a"), &[b"1"]).expect("append");
    ms.append(&q("ab"), &[b"x", b"y"]).expect("append");
    ms.append(&QueueKey::new("a", ""), &[b"m"]).expect("append");
    ms.append(&QueueKey::new("mp", "a"), &[b"m"]).expect("append");
    assert_eq!(datas(&ms.read(&q("a"), None, 10).expect("read")), [b"1"]);
    assert_eq!(ms.count(&q("ab")), 2);
    assert_eq!(ms.count(&QueueKey::new("mp", "a")), 1);
    let seqs = ms.read(&q("ab"), None, 10).expect("read").iter().map(|m| m.seq).collect::<Vec<_>>();
    ms.delete(&q("ab"), &seqs).expect("delete");
    assert_eq!(
        ms.queues(),
        vec![(QueueKey::new("", "a"), 1), (QueueKey::new("a", ""), 1), (QueueKey::new("mp", "a"), 1)],
        "emptied queues are not listed"
    );
}

fn delete_queue_removes_everything_and_numbering_goes_on<M: MessageStore>(ms: &M) {
    let msgs: Vec<Vec<u8>> = (0..5000u32).map(|i| i.to_be_bytes().to_vec()).collect();
    let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
    ms.append(&q("big"), &refs).expect("append");
    ms.append(&q("other"), &[b"keep"]).expect("append");
    assert_eq!(ms.delete_queue(&q("big")).expect("delete_queue"), 5000);
    assert_eq!(ms.count(&q("big")), 0);
    assert!(ms.read(&q("big"), None, 10).expect("read").is_empty());
    assert_eq!(ms.delete_queue(&q("big")).expect("again"), 0);
    ms.append(&q("big"), &[b"new"]).expect("append after delete");
    assert_eq!(datas(&ms.read(&q("big"), None, 10).expect("read")), [b"new"]);
    assert_eq!(ms.count(&q("other")), 1);
}

fn deferred_calls_complete_in_order<M: MessageStore>(ms: &M) {
    let (tx, rx) = mpsc::channel();
    for i in 0..20u8 {
        let tx = tx.clone();
        ms.append_deferred(
            &q("d"),
            &[&[i][..], &[i, i][..]],
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
    }
    drop(tx);
    let results: Vec<Vec<MessageSeq>> = rx.iter().map(|r| r.expect("deferred append")).collect();
    assert_eq!(results.len(), 20);
    let mut all: Vec<MessageSeq> = results.into_iter().flatten().collect();
    let issued = all.clone();
    all.sort();
    assert_eq!(issued.len(), 40);
    let read = ms.read(&q("d"), None, 100).expect("read");
    assert_eq!(read.iter().map(|m| m.seq).collect::<Vec<_>>(), all);
    assert_eq!(read[0].data, [0]);
    assert_eq!(read[39].data, [19, 19], "call order is queue order");
    let (tx, rx) = mpsc::channel();
    let tx2 = tx.clone();
    ms.delete_deferred(
        &q("d"),
        &all[..10],
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    ms.delete_queue_deferred(
        &q("d"),
        Box::new(move |r| {
            let _ = tx2.send(r);
        }),
    );
    assert_eq!(rx.recv().expect("delete done"), Ok(10));
    assert_eq!(rx.recv().expect("delete_queue done"), Ok(30));
    assert_eq!(ms.count(&q("d")), 0);
}

fn empty_append_is_a_no_op<M: MessageStore>(ms: &M) {
    assert_eq!(ms.append(&q("e"), &[]).expect("append nothing"), Vec::new());
    assert_eq!(ms.count(&q("e")), 0);
    assert!(ms.queues().is_empty());
}

/// Per queue, sequence order is call order for every appender, and every message is stored
/// exactly once.
fn concurrent_appenders_keep_their_order<M: MessageStore>(ms: Arc<M>) {
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let ms = ms.clone();
            std::thread::spawn(move || {
                for i in 0..50u8 {
                    let queue = if i % 2 == 0 { q("shared") } else { q(&format!("own{t}")) };
                    ms.append(&queue, &[&[t, i][..]]).expect("append");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("appender thread");
    }
    let shared = ms.read(&q("shared"), None, 1000).expect("read");
    assert_eq!(shared.len(), 100);
    assert_eq!(ms.count(&q("shared")), 100);
    for t in 0..4u8 {
        let mine: Vec<u8> = shared.iter().filter(|m| m.data[0] == t).map(|m| m.data[1]).collect();
        assert_eq!(mine, (0..50).step_by(2).collect::<Vec<u8>>(), "appender {t} reordered");
        assert_eq!(ms.count(&q(&format!("own{t}"))), 25);
    }
}
