use std::path::PathBuf;

/// Why a [`crate::Store`] operation failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum StoreError {
    /// The database at `path` could not be opened (locked by another process, corrupt,
    /// unreadable).
    #[error("cannot open database at {path}: {reason}")]
    Open {
        /// Where the database lives.
        path: PathBuf,
        /// What the engine said.
        reason: String,
    },
    /// The data directory was written by a newer, incompatible format version.
    #[error("database at {path} has format version {found}, this build reads up to {supported}")]
    FormatVersion {
        /// Where the database lives.
        path: PathBuf,
        /// The version found on disk.
        found: u32,
        /// The highest version this build understands.
        supported: u32,
    },
    /// The disk is full (or over quota): the write was not applied.
    #[error("no space left for the write: {0}")]
    NoSpace(String),
    /// Any other I/O or engine error; the write was not applied.
    #[error("storage engine error: {0}")]
    Engine(String),
    /// A stored value could not be decoded.
    #[error("corrupt record in column {column}: {reason}")]
    Corrupt {
        /// The column family the record was read from.
        column: &'static str,
        /// What was wrong with it.
        reason: String,
    },
}
