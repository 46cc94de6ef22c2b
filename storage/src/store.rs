use crate::StoreError;

/// A concern with its own key space (a RocksDB column family; a separate map in memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Column {
    /// Metadata replica state (swc or plumtree): objects, clocks, watermark, dot-key map.
    Metadata,
    /// Offline message queues, keyed by client and sequence number.
    Messages,
    /// Node identity, format version and cluster membership.
    Node,
}

impl Column {
    /// Every column, in a fixed order.
    pub const ALL: [Column; 3] = [Column::Metadata, Column::Messages, Column::Node];

    /// The column-family name on disk.
    pub fn name(self) -> &'static str {
        match self {
            Column::Metadata => "metadata",
            Column::Messages => "messages",
            Column::Node => "node",
        }
    }
}

/// How durable a write must be when [`Store::write`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// In the engine's write-ahead log and fsynced: survives power loss.
    Sync,
    /// In the write-ahead log but not fsynced: survives a process crash, not power loss.
    #[default]
    Buffered,
}

/// One change inside a [`WriteBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    /// Set `key` to `value` in `column`.
    Put {
        /// Target column.
        column: Column,
        /// Key bytes.
        key: Vec<u8>,
        /// Value bytes.
        value: Vec<u8>,
    },
    /// Remove `key` from `column` (no error if absent).
    Delete {
        /// Target column.
        column: Column,
        /// Key bytes.
        key: Vec<u8>,
    },
}

/// A set of changes applied atomically: after a crash either all of them are visible or none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct WriteBatch {
    ops: Vec<BatchOp>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put.
    pub fn put(&mut self, column: Column, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::Put { column, key: key.into(), value: value.into() });
    }

    /// Adds a delete.
    pub fn delete(&mut self, column: Column, key: impl Into<Vec<u8>>) {
        self.ops.push(BatchOp::Delete { column, key: key.into() });
    }

    /// Appends every op of `other`, keeping order (later ops win on the same key).
    pub fn extend(&mut self, other: WriteBatch) {
        self.ops.extend(other.ops);
    }

    /// The ops in application order.
    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }

    /// Consumes the batch into its ops.
    pub fn into_ops(self) -> Vec<BatchOp> {
        self.ops
    }

    /// Number of ops.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when the batch holds no op.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// One stored entry as a scan returns it: `(key, value)`.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// An ordered key-value store, split into [`Column`]s.
///
/// Contract (checked by `contract::run_all` against every implementation):
/// - [`Store::write`] applies a batch atomically, ops in order (later ops on the same key win),
///   and is durable as `durability` says when it returns `Ok`. On `Err`, nothing was applied.
/// - Reads see every write that returned `Ok` before them.
/// - [`Store::scan_prefix`] returns keys in ascending byte order, starting strictly after
///   `after` when given, at most `limit` entries.
///
/// Implementations are shared between threads; writes from several threads are serialised by
/// the implementation.
pub trait Store: Send + Sync + 'static {
    /// Applies `batch` atomically.
    fn write(&self, batch: WriteBatch, durability: Durability) -> Result<(), StoreError>;

    /// Reads one key.
    fn get(&self, column: Column, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Reads up to `limit` entries whose key starts with `prefix`, in key order, strictly after
    /// `after` when it is given.
    fn scan_prefix(
        &self,
        column: Column,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError>;

    /// Makes every earlier buffered write durable (fsync of the write-ahead log).
    fn flush(&self) -> Result<(), StoreError>;
}

impl<S: Store + ?Sized> Store for std::sync::Arc<S> {
    fn write(&self, batch: WriteBatch, durability: Durability) -> Result<(), StoreError> {
        (**self).write(batch, durability)
    }
    fn get(&self, column: Column, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).get(column, key)
    }
    fn scan_prefix(
        &self,
        column: Column,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        (**self).scan_prefix(column, prefix, after, limit)
    }
    fn flush(&self) -> Result<(), StoreError> {
        (**self).flush()
    }
}
