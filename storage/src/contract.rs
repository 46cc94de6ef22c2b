//! One test suite for the [`Store`] contract, run against every implementation.

use crate::{Column, Durability, Store, WriteBatch};

/// Runs every contract check, each on a fresh store from `make`.
pub fn run_all<S: Store>(make: impl Fn() -> S) {
    batch_is_applied_in_order(&make());
    delete_of_absent_key_is_not_an_error(&make());
    columns_are_separate(&make());
    scan_is_ordered_prefixed_paged(&make());
    empty_batch_is_fine(&make());
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

fn empty_batch_is_fine<S: Store>(s: &S) {
    s.write(WriteBatch::new(), Durability::Sync).expect("empty batch");
    s.flush().expect("flush");
}
