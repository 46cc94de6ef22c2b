//! What a node keeps on disk: one RocksDB under `platform_data_dir` holding the metadata replica
//! state, the node's identity and membership (through [`Store`]) and the offline queues of
//! persistent sessions (through a group-committing [`MessageStore`]).

use std::path::PathBuf;
use std::sync::Arc;

use tracing::{info, warn};
use vmq_storage::{
    Durability, DurabilityPolicy, GroupCommitConfig, GroupCommitMessageStore, MemStore, MessageStore, RocksConfig,
    RocksStore, Store, StoreError, StoreMessageStore,
};

use vmq_config::{Config, ConfigError};

/// Where a node keeps what must survive a restart.
#[derive(Clone)]
pub struct NodeStorage {
    /// The key-value store (metadata replica state, node identity, membership).
    pub store: Arc<dyn Store>,
    /// Offline queues of persistent sessions.
    pub messages: Arc<dyn MessageStore>,
}

impl std::fmt::Debug for NodeStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeStorage").finish_non_exhaustive()
    }
}

/// Why storage could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A storage key in the configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database could not be opened or read (the error names the path).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The settings of the node's database and message store, from `rocksdb.*`, VerneMQ's
/// `leveldb.*` (mapped, with a warning) and `message_store.*`.
pub fn storage_settings(cfg: &Config) -> Result<(RocksConfig, GroupCommitConfig), ConfigError> {
    let mut rocks = RocksConfig::default();
    for prefix in ["rocksdb.", "leveldb."] {
        for e in cfg.delegated_entries(prefix) {
            match rocks.apply(&e.key, &e.value) {
                Ok(Some(note)) => warn!("{}:{}: {}", cfg.file_label(), e.line, note),
                Ok(None) => {}
                Err(msg) => return Err(cfg.invalid_entry(e, msg, "see the storage settings in the README")),
            }
        }
    }
    let mut group = GroupCommitConfig::default();
    for e in cfg.delegated_entries("message_store.") {
        let key = &e.key["message_store.".len()..];
        let bad =
            |accepted: &str| cfg.invalid_entry(e, format!("'{}' is not valid here", e.value), accepted.to_string());
        match key {
            "durability" => {
                group.policy = e.value.parse::<DurabilityPolicy>().map_err(|_| bad("sync, buffered or always"))?
            }
            "max_group_messages" => {
                group.max_group_messages = e.value.parse().map_err(|_| bad("a positive integer"))?
            }
            "max_group_bytes" => {
                group.max_group_bytes =
                    vmq_storage::parse_size(&e.value).map(|b| b as usize).map_err(|_| bad("a size such as 4MB"))?
            }
            _ => {
                return Err(cfg.invalid_entry(
                    e,
                    format!("unknown message store setting '{key}'"),
                    "message_store.durability, message_store.max_group_messages, message_store.max_group_bytes",
                ));
            }
        }
    }
    Ok((rocks, group))
}

impl NodeStorage {
    /// Storage that forgets everything when the process ends (tests, embedded use).
    pub fn in_memory() -> Result<NodeStorage, StoreError> {
        let store = Arc::new(MemStore::new());
        let messages = StoreMessageStore::open(store.clone(), Durability::Buffered)?;
        Ok(NodeStorage { store, messages: Arc::new(messages) })
    }

    /// The node's RocksDB under `platform_data_dir`. Refuses to start on a database it cannot
    /// read (newer format, corrupt, locked by another process), naming the path.
    pub fn open(cfg: &Config) -> Result<NodeStorage, StorageError> {
        let (rocks, group) = storage_settings(cfg)?;
        let path: PathBuf = cfg.platform_data_dir.join("rocksdb");
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::Open {
                path: parent.to_path_buf(),
                reason: format!("cannot create the data directory: {e}"),
            })?;
        }
        let store = Arc::new(RocksStore::open(&path, &rocks)?);
        let messages = GroupCommitMessageStore::open(store.clone(), group)?;
        let queued: u64 = messages.queues().iter().map(|(_, n)| n).sum();
        info!(path = %path.display(), durability = %group.policy, offline_messages = queued, "storage opened");
        Ok(NodeStorage { store, messages: Arc::new(messages) })
    }
}
