use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::{BatchOp, Column, Durability, KeyValue, Store, StoreError, WriteBatch};

/// The in-memory [`Store`]: the reference implementation of the contract and the test double.
/// It forgets everything when dropped.
#[derive(Debug, Default)]
pub struct MemStore {
    // A std mutex: every section is a short map operation that never awaits.
    columns: Mutex<Columns>,
}

type Columns = BTreeMap<Column, BTreeMap<Vec<u8>, Vec<u8>>>;

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Columns> {
        // A poisoned lock only means another thread panicked mid-operation; each operation
        // leaves the maps consistent, so the data is still usable.
        self.columns.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store for MemStore {
    fn write(&self, batch: WriteBatch, _durability: Durability) -> Result<(), StoreError> {
        let mut columns = self.lock();
        for op in batch.into_ops() {
            match op {
                BatchOp::Put { column, key, value } => {
                    columns.entry(column).or_default().insert(key, value);
                }
                BatchOp::Delete { column, key } => {
                    if let Some(map) = columns.get_mut(&column) {
                        map.remove(&key);
                    }
                }
            }
        }
        Ok(())
    }

    fn get(&self, column: Column, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().get(&column).and_then(|m| m.get(key).cloned()))
    }

    fn scan_prefix(
        &self,
        column: Column,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        let columns = self.lock();
        let Some(map) = columns.get(&column) else { return Ok(Vec::new()) };
        let start = match after {
            Some(a) if a >= prefix => std::ops::Bound::Excluded(a.to_vec()),
            _ => std::ops::Bound::Included(prefix.to_vec()),
        };
        Ok(map
            .range((start, std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_store_meets_the_store_contract() {
        crate::contract::run_all(MemStore::new);
    }
}
