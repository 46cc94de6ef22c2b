//! The RocksDB [`Store`]: one database per node, one column family per [`Column`].
//!
//! Bad days are refused with an error naming the database path, never papered over:
//! - a database written by a newer format version: [`StoreError::FormatVersion`];
//! - a database another process holds open: [`StoreError::Open`] saying it is locked;
//! - a corrupt database (damaged `CURRENT`, manifest or table files, or a non-empty directory
//!   without a database in it): [`StoreError::Open`] saying it is corrupt; it is never
//!   opened as a new, empty database;
//! - a full disk on write: [`StoreError::NoSpace`], and the batch is not applied.

mod config;
mod errors;

use std::path::{Path, PathBuf};

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType, DBRecoveryMode, Options,
    ReadOptions, WriteOptions,
};

pub use config::{Compression, RocksConfig, format_size, parse_size};
use errors::{open_error, read_error, write_error};

use crate::{BatchOp, Column, Durability, KeyValue, Store, StoreError, WriteBatch};

/// The [`Store`] on RocksDB.
///
/// Layout: one column family per [`Column`] (named by [`Column::name`]: `metadata`,
/// `messages`, `node`) plus RocksDB's unused `default`. [`Column::Node`] holds the format
/// version under [`RocksStore::FORMAT_VERSION_KEY`]; other users of that column keep out of
/// the `vmq-storage/` key prefix.
///
/// Writes go to the write-ahead log first; [`Durability::Sync`] fsyncs it before returning.
/// Reads verify block checksums.
pub struct RocksStore {
    db: DB,
    path: PathBuf,
}

impl std::fmt::Debug for RocksStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStore").field("path", &self.path).finish_non_exhaustive()
    }
}

impl RocksStore {
    /// The on-disk format this build writes and the newest it reads. Raise it when a change
    /// to keys or values would be misread by an older build, so that build refuses the
    /// database instead of misreading it.
    pub const FORMAT_VERSION: u32 = 1;

    /// Key of the format-version record in [`Column::Node`] (value: big-endian `u32`).
    pub const FORMAT_VERSION_KEY: &'static [u8] = b"vmq-storage/format-version";

    /// Opens the database at `path`, creating the directory and an empty database (with the
    /// format-version record) when there is none.
    ///
    /// Errors name `path`: [`StoreError::FormatVersion`] for a newer format,
    /// [`StoreError::Open`] for a locked, corrupt or unreadable database.
    pub fn open(path: impl AsRef<Path>, config: &RocksConfig) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        std::fs::create_dir_all(&path).map_err(|e| StoreError::Open {
            path: path.clone(),
            reason: format!("cannot create the database directory: {e}"),
        })?;
        // RocksDB treats a directory without `CURRENT` as a new database when asked to create
        // one. A directory with other files but no `CURRENT` is a damaged database (or not a
        // database): creating a fresh one there would start the node silently empty.
        let existing = path.join("CURRENT").exists();
        if !existing {
            check_no_leftovers(&path)?;
        }
        let cache = Cache::new_lru_cache(usize_of(config.block_cache_size));
        let db_opts = db_options(config, &cache, existing);
        let mut names: Vec<String> = Column::ALL.iter().map(|c| c.name().to_string()).collect();
        if existing {
            // A newer build may have added column families; RocksDB refuses to open without
            // them, and we want to reach the format-version check to say why.
            for name in DB::list_cf(&db_opts, &path).map_err(|e| open_error(&path, &e))? {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        let cfs = names.iter().map(|n| ColumnFamilyDescriptor::new(n, cf_options(config, &cache)));
        let db = DB::open_cf_descriptors(&db_opts, &path, cfs).map_err(|e| open_error(&path, &e))?;
        let store = Self { db, path };
        store.check_format_version(existing)?;
        Ok(store)
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes every memtable to table files. Not needed for durability (the write-ahead log
    /// has everything); it shortens the log replay of the next open.
    pub fn flush_memtables(&self) -> Result<(), StoreError> {
        for column in Column::ALL {
            self.db.flush_cf(self.cf(column)?).map_err(|e| write_error(&self.path, &e))?;
        }
        Ok(())
    }

    fn check_format_version(&self, existing: bool) -> Result<(), StoreError> {
        let open_err = |reason: String| StoreError::Open { path: self.path.clone(), reason };
        match self.get(Column::Node, Self::FORMAT_VERSION_KEY)? {
            Some(bytes) => {
                let found = <[u8; 4]>::try_from(bytes.as_slice())
                    .map(u32::from_be_bytes)
                    .map_err(|_| open_err(format!("unreadable format-version record {bytes:?}")))?;
                if found > Self::FORMAT_VERSION {
                    return Err(StoreError::FormatVersion {
                        path: self.path.clone(),
                        found,
                        supported: Self::FORMAT_VERSION,
                    });
                }
                if found == 0 {
                    return Err(open_err("format-version record says 0, which no build writes".into()));
                }
                Ok(())
            }
            // An existing database without the record is only fine if it is empty: the
            // record is the first write after creation, so a crash right after creating the
            // files leaves exactly that.
            None if existing && !self.is_empty()? => Err(open_err(
                "the database holds data but no format-version record: not a vmq-rs database, \
                 or a damaged one"
                    .into(),
            )),
            None => {
                let mut batch = WriteBatch::new();
                batch.put(Column::Node, Self::FORMAT_VERSION_KEY, Self::FORMAT_VERSION.to_be_bytes().to_vec());
                self.write(batch, Durability::Sync)
            }
        }
    }

    fn is_empty(&self) -> Result<bool, StoreError> {
        for column in Column::ALL {
            if !self.scan_prefix(column, &[], None, 1)?.is_empty() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn cf(&self, column: Column) -> Result<&ColumnFamily, StoreError> {
        // Every column family is created on open, so this only fails if RocksDB lost one.
        self.db.cf_handle(column.name()).ok_or_else(|| {
            StoreError::Engine(format!("{}: column family {} is missing", self.path.display(), column.name()))
        })
    }
}

impl Store for RocksStore {
    fn write(&self, batch: WriteBatch, durability: Durability) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut wb = rocksdb::WriteBatch::default();
        for op in batch.into_ops() {
            match op {
                BatchOp::Put { column, key, value } => wb.put_cf(self.cf(column)?, key, value),
                BatchOp::Delete { column, key } => wb.delete_cf(self.cf(column)?, key),
            }
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(durability == Durability::Sync);
        // One RocksDB write batch is atomic in the log and the memtables: if the log append
        // fails (ENOSPC), nothing of it is applied.
        self.db.write_opt(wb, &opts).map_err(|e| write_error(&self.path, &e))
    }

    fn get(&self, column: Column, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db
            .get_pinned_cf(self.cf(column)?, key)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| read_error(&self.path, column, &e))
    }

    fn scan_prefix(
        &self,
        column: Column,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let mut opts = ReadOptions::default();
        if let Some(end) = prefix_end(prefix) {
            // Stops the iterator at the prefix's end instead of reading on into the next
            // key range (and its tombstones).
            opts.set_iterate_upper_bound(end);
        }
        let mut it = self.db.raw_iterator_cf_opt(self.cf(column)?, opts);
        let start = match after {
            Some(a) if a >= prefix => a,
            _ => prefix,
        };
        it.seek(start);
        if after.is_some_and(|a| a >= prefix) && it.key() == Some(start) {
            it.next();
        }
        while let Some((k, v)) = it.item() {
            if !k.starts_with(prefix) {
                break;
            }
            out.push((k.to_vec(), v.to_vec()));
            if out.len() == limit {
                break;
            }
            it.next();
        }
        it.status().map_err(|e| read_error(&self.path, column, &e))?;
        Ok(out)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_wal(true).map_err(|e| write_error(&self.path, &e))
    }
}

/// The smallest key greater than every key starting with `prefix` (`None` when there is none:
/// an empty prefix or all `0xff`).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Files RocksDB may leave before `CURRENT` exists (the lock and its info logs) are fine;
/// anything else means the directory holds something we must not overwrite.
fn check_no_leftovers(path: &Path) -> Result<(), StoreError> {
    let open_err = |reason: String| StoreError::Open { path: path.to_path_buf(), reason };
    let entries = std::fs::read_dir(path).map_err(|e| open_err(format!("cannot list the directory: {e}")))?;
    for entry in entries {
        let entry = entry.map_err(|e| open_err(format!("cannot list the directory: {e}")))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == "LOCK" || name.starts_with("LOG") {
            continue;
        }
        return Err(open_err(format!(
            "the directory holds {name:?} but no RocksDB CURRENT file: the database is \
             corrupt, or this is not a database directory. It was not opened, so nothing was \
             lost; restore it from a backup, or move it aside to start with an empty database"
        )));
    }
    Ok(())
}

fn usize_of(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn compression(c: Compression) -> DBCompressionType {
    match c {
        Compression::None => DBCompressionType::None,
        Compression::Lz4 => DBCompressionType::Lz4,
        Compression::Zstd => DBCompressionType::Zstd,
    }
}

fn table_options(config: &RocksConfig, cache: &Cache) -> BlockBasedOptions {
    let mut t = BlockBasedOptions::default();
    t.set_block_cache(cache);
    t.set_block_size(usize_of(config.block_size));
    if config.bloom_filter_bits_per_key > 0 {
        t.set_bloom_filter(f64::from(config.bloom_filter_bits_per_key), false);
    }
    // Index and filter blocks count against the block cache, so its size bounds read memory
    // (otherwise they grow with the data, outside any limit).
    t.set_cache_index_and_filter_blocks(true);
    t.set_pin_l0_filter_and_index_blocks_in_cache(true);
    t
}

fn apply_cf_options(o: &mut Options, config: &RocksConfig, cache: &Cache) {
    o.set_block_based_table_factory(&table_options(config, cache));
    o.set_write_buffer_size(usize_of(config.write_buffer_size));
    o.set_max_write_buffer_number(i32::try_from(config.max_write_buffer_number).unwrap_or(i32::MAX));
    o.set_compression_type(compression(config.compression));
    o.set_bottommost_compression_type(compression(config.bottommost_compression));
    o.set_level_compaction_dynamic_level_bytes(true);
}

fn cf_options(config: &RocksConfig, cache: &Cache) -> Options {
    let mut o = Options::default();
    apply_cf_options(&mut o, config, cache);
    o
}

fn db_options(config: &RocksConfig, cache: &Cache, existing: bool) -> Options {
    let mut o = Options::default();
    apply_cf_options(&mut o, config, cache);
    o.create_if_missing(!existing);
    o.create_missing_column_families(true);
    o.set_paranoid_checks(true);
    o.set_max_open_files(config.max_open_files);
    o.set_max_background_jobs(i32::try_from(config.max_background_jobs).unwrap_or(i32::MAX));
    o.set_db_write_buffer_size(usize_of(config.total_write_buffer_size));
    o.set_max_total_wal_size(config.max_total_wal_size);
    o.set_keep_log_file_num(usize_of(config.keep_log_file_num.into()));
    o.set_max_log_file_size(usize_of(config.max_log_file_size));
    // Replays the log up to the first damaged record: a record torn by a crash mid-write was
    // never acknowledged; everything before it was.
    o.set_wal_recovery_mode(DBRecoveryMode::PointInTime);
    o
}

#[cfg(test)]
mod tests;
