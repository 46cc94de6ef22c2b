//! On-disk layout of the replica in [`Column::Metadata`], and recovery at start.
//!
//! Every key starts with the tag `pt/` so that plumtree's rows never collide with anything
//! else the node keeps in the column (swc uses its own tag):
//!
//! | key | value |
//! |---|---|
//! | `pt/v` | format version, `u32` little endian |
//! | `pt/h` | history marker: this replica has held data (for `is_empty_history`) |
//! | `pt/c` | highest dot counter this node issued, `u64` little endian |
//! | `pt/o/` + postcard(`MetaKey`) | postcard(`Object`): the DVV set of the key |
//!
//! Broadcast trees, outstanding `i_have`s and tombstone confirmations are not persisted: they
//! are rebuilt by the protocol after a restart (as `plumtree_broadcast` does).

use std::collections::BTreeMap;

use vmq_storage::metadata::MetaKey;
use vmq_storage::{Column, Store, StoreError, WriteBatch};

use crate::message::Object;

/// Key of the format version row.
pub const VERSION_KEY: &[u8] = b"pt/v";
/// Key of the row holding the highest dot counter this node ever issued.
pub const COUNTER_KEY: &[u8] = b"pt/c";
/// Key of the history marker row.
pub const HISTORY_KEY: &[u8] = b"pt/h";
/// Prefix of object rows.
pub const OBJECT_PREFIX: &[u8] = b"pt/o/";
/// The format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

const SCAN_BATCH: usize = 1024;

/// The row key of an object.
pub fn object_key(key: &MetaKey) -> Vec<u8> {
    let mut out = OBJECT_PREFIX.to_vec();
    // Serialising a key of strings and bytes into a Vec cannot fail.
    out.extend(postcard::to_stdvec(key).unwrap_or_default());
    out
}

/// Adds the put of `object` under `key` to `batch`.
pub fn put_object(batch: &mut WriteBatch, key: &MetaKey, object: &Object) {
    batch.put(Column::Metadata, object_key(key), postcard::to_stdvec(object).unwrap_or_default());
}

/// Adds the removal of `key` (a reclaimed tombstone) to `batch`.
pub fn delete_object(batch: &mut WriteBatch, key: &MetaKey) {
    batch.delete(Column::Metadata, object_key(key));
}

/// Adds the highest issued dot counter to `batch`.
pub fn put_counter(batch: &mut WriteBatch, counter: u64) {
    batch.put(Column::Metadata, COUNTER_KEY, counter.to_le_bytes().to_vec());
}

/// Adds the format version and history marker to `batch`.
pub fn put_history(batch: &mut WriteBatch) {
    batch.put(Column::Metadata, VERSION_KEY, FORMAT_VERSION.to_le_bytes().to_vec());
    batch.put(Column::Metadata, HISTORY_KEY, vec![1]);
}

/// The state of a replica as found in a [`Store`] at start.
#[derive(Debug, Clone, Default)]
pub struct Recovered {
    pub(crate) objects: BTreeMap<MetaKey, Object>,
    pub(crate) history: bool,
    pub(crate) counter: u64,
}

impl Recovered {
    /// A replica that never ran.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Reads the replica's rows from `store`.
    pub fn load(store: &dyn Store) -> Result<Recovered, StoreError> {
        load(store)
    }

    /// Number of objects (live keys and tombstones) recovered.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// True when nothing was recovered.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty() && !self.history
    }
}

fn corrupt(reason: String) -> StoreError {
    StoreError::Corrupt { column: Column::Metadata.name(), reason }
}

/// Reads the replica's rows from `store`.
pub fn load(store: &dyn Store) -> Result<Recovered, StoreError> {
    if let Some(v) = store.get(Column::Metadata, VERSION_KEY)? {
        let bytes: [u8; 4] = v
            .as_slice()
            .try_into()
            .map_err(|_| corrupt(format!("plumtree format version row has {} bytes", v.len())))?;
        let found = u32::from_le_bytes(bytes);
        if found > FORMAT_VERSION {
            return Err(corrupt(format!("plumtree format version {found}, this build reads up to {FORMAT_VERSION}")));
        }
    }
    let history = store.get(Column::Metadata, HISTORY_KEY)?.is_some();
    let counter = match store.get(Column::Metadata, COUNTER_KEY)? {
        None => 0,
        Some(v) => {
            let bytes: [u8; 8] =
                v.as_slice().try_into().map_err(|_| corrupt(format!("plumtree counter row has {} bytes", v.len())))?;
            u64::from_le_bytes(bytes)
        }
    };
    let mut objects = BTreeMap::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let rows = store.scan_prefix(Column::Metadata, OBJECT_PREFIX, after.as_deref(), SCAN_BATCH)?;
        let Some((last, _)) = rows.last() else { break };
        after = Some(last.clone());
        for (k, v) in &rows {
            let key: MetaKey = postcard::from_bytes(&k[OBJECT_PREFIX.len()..])
                .map_err(|e| corrupt(format!("plumtree object key: {e}")))?;
            let object: Object =
                postcard::from_bytes(v).map_err(|e| corrupt(format!("plumtree object {key:?}: {e}")))?;
            objects.insert(key, object);
        }
        if rows.len() < SCAN_BATCH {
            break;
        }
    }
    Ok(Recovered { history: history || !objects.is_empty(), objects, counter })
}

#[cfg(test)]
mod tests {
    use vmq_storage::metadata::{MetaValue, NodeId};
    use vmq_storage::{Durability, MemStore};

    use super::*;
    use crate::dvv::VersionVector;

    #[test]
    fn objects_round_trip_through_a_store_with_a_tagged_layout() {
        let store = MemStore::new();
        let mut batch = WriteBatch::new();
        put_history(&mut batch);
        put_counter(&mut batch, 77);
        let mut want = BTreeMap::new();
        for i in 0..2500u32 {
            let key = MetaKey::new(if i % 2 == 0 { "subscriber" } else { "retain" }, i.to_be_bytes().to_vec());
            let obj = Object::new().update(
                &VersionVector::new(),
                &NodeId::new("a"),
                Some(MetaValue { timestamp: u64::from(i), data: vec![1; 3] }),
            );
            put_object(&mut batch, &key, &obj);
            want.insert(key, obj);
        }
        // Another component's row in the same column is not read as plumtree's.
        batch.put(Column::Metadata, b"swc/obj".to_vec(), b"x".to_vec());
        store.write(batch, Durability::Sync).unwrap();
        let rec = load(&store).unwrap();
        assert!(rec.history);
        assert_eq!(rec.counter, 77);
        assert_eq!(rec.objects, want);
        assert!(object_key(&MetaKey::new("p", b"k".to_vec())).starts_with(b"pt/o/"));
    }

    #[test]
    fn empty_store_recovers_empty_and_corrupt_rows_are_errors() {
        let store = MemStore::new();
        assert!(load(&store).unwrap().is_empty());
        let mut batch = WriteBatch::new();
        batch.put(Column::Metadata, b"pt/o/\xff".to_vec(), b"junk".to_vec());
        store.write(batch, Durability::Sync).unwrap();
        assert!(matches!(load(&store), Err(StoreError::Corrupt { .. })));
        let store = MemStore::new();
        let mut batch = WriteBatch::new();
        batch.put(Column::Metadata, VERSION_KEY.to_vec(), 9u32.to_le_bytes().to_vec());
        store.write(batch, Durability::Sync).unwrap();
        assert!(matches!(load(&store), Err(StoreError::Corrupt { .. })));
    }
}
