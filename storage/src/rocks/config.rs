//! Settings of the node's RocksDB database, their config keys and the mapping of VerneMQ's
//! `leveldb.*` keys (VerneMQ 2.1 docs, "LevelDB" and the `vernemq.conf` template; the other
//! `leveldb.*` names come from the `eleveldb` schema VerneMQ ships).

use std::fmt;
use std::str::FromStr;

use crate::group_commit::{DurabilityPolicy, GroupCommitConfig};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// Block compression of the on-disk tables. Only the codecs compiled into this build are
/// offered (the workspace enables RocksDB's `lz4` and `zstd` features).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// No compression.
    None,
    /// LZ4: cheap on CPU, the default for the upper levels (VerneMQ's default algorithm too).
    #[default]
    Lz4,
    /// Zstandard: smaller files for more CPU, the default for the bottommost level.
    Zstd,
}

impl FromStr for Compression {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" | "off" => Ok(Compression::None),
            "lz4" => Ok(Compression::Lz4),
            "zstd" => Ok(Compression::Zstd),
            other => Err(format!("unknown compression {other:?}: expected none, lz4 or zstd")),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compression::None => "none",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        })
    }
}

/// Settings of the node's RocksDB database (one per node, one column family per
/// [`crate::Column`]), with defaults for a small server: the block cache and the memtables
/// together stay around 130 MiB at most.
///
/// Every field has a config key `rocksdb.<field name>` (see [`RocksConfig::apply`]); the
/// message-store commit settings are `message_store.durability`,
/// `message_store.max_group_messages` and `message_store.max_group_bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RocksConfig {
    /// Size of the LRU cache of uncompressed blocks, shared by every column family; index and
    /// filter blocks live in it too, so it bounds read-side memory. Default 64 MiB.
    pub block_cache_size: u64,
    /// Size of one memtable per column family before it is flushed to disk. Default 16 MiB.
    pub write_buffer_size: u64,
    /// Memtables per column family (one active, the others being flushed). Default 2.
    pub max_write_buffer_number: u32,
    /// Cap on all memtables together (RocksDB's `db_write_buffer_size`); reaching it flushes
    /// the largest. 0 means no cap. Default 64 MiB.
    pub total_write_buffer_size: u64,
    /// Compression of every level but the last. Default lz4.
    pub compression: Compression,
    /// Compression of the bottommost level, where most of the data ends up. Default zstd.
    pub bottommost_compression: Compression,
    /// Uncompressed size of a data block. Default 4 KiB.
    pub block_size: u64,
    /// Bloom filter bits per key (0 disables the filters). Default 10 (about 1% false
    /// positives).
    pub bloom_filter_bits_per_key: u32,
    /// Table files kept open (-1: no limit). Default 512, well under a default `ulimit -n` of
    /// 1024 that listeners share.
    pub max_open_files: i32,
    /// Background flush and compaction threads. Default 2.
    pub max_background_jobs: u32,
    /// Write-ahead log size that forces the oldest memtables to be flushed. Default 128 MiB.
    pub max_total_wal_size: u64,
    /// RocksDB's own info logs (`LOG`, `LOG.old.*`) kept in the database directory. Default 4.
    pub keep_log_file_num: u32,
    /// Size at which an info log is rolled. Default 8 MiB.
    pub max_log_file_size: u64,
    /// How the offline message store commits appends (see [`DurabilityPolicy`]).
    pub group_commit: GroupCommitConfig,
}

impl Default for RocksConfig {
    fn default() -> Self {
        Self {
            block_cache_size: 64 * MIB,
            write_buffer_size: 16 * MIB,
            max_write_buffer_number: 2,
            total_write_buffer_size: 64 * MIB,
            compression: Compression::Lz4,
            bottommost_compression: Compression::Zstd,
            block_size: 4 * KIB,
            bloom_filter_bits_per_key: 10,
            max_open_files: 512,
            max_background_jobs: 2,
            max_total_wal_size: 128 * MIB,
            keep_log_file_num: 4,
            max_log_file_size: 8 * MIB,
            group_commit: GroupCommitConfig::default(),
        }
    }
}

impl RocksConfig {
    /// True for keys this type understands: `rocksdb.*`, `message_store.*` and VerneMQ's
    /// `leveldb.*`.
    pub fn is_storage_key(key: &str) -> bool {
        ["rocksdb.", "message_store.", "leveldb."].iter().any(|p| key.starts_with(p))
    }

    /// Applies one `key = value` setting like [`RocksConfig::apply`] and logs the warning, if
    /// any, at `warn` level.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        if let Some(warning) = self.apply(key, value)? {
            tracing::warn!("{warning}");
        }
        Ok(())
    }

    /// Applies one `key = value` setting.
    ///
    /// - `rocksdb.*` keys set the field of the same name, `message_store.*` keys the
    ///   [`GroupCommitConfig`]; sizes take `B`, `KB`, `MB`, `GB` (binary multiples, as in
    ///   `vernemq.conf`) or `KiB`, `MiB`, `GiB`. Returns `Ok(None)`.
    /// - VerneMQ's `leveldb.*` keys are accepted and mapped onto the RocksDB settings where one
    ///   corresponds; the returned `Ok(Some(warning))` says what the key now sets, or that it
    ///   is ignored.
    ///
    /// An unknown `rocksdb.*` or `message_store.*` key, or a value that does not parse, is an
    /// `Err` naming the key.
    pub fn apply(&mut self, key: &str, value: &str) -> Result<Option<String>, String> {
        self.apply_with_ram(key, value, total_ram())
    }

    /// [`RocksConfig::apply`] with the machine's memory given, so that
    /// `leveldb.maximum_memory.percent` can be tested.
    pub(crate) fn apply_with_ram(
        &mut self,
        key: &str,
        value: &str,
        ram: Option<u64>,
    ) -> Result<Option<String>, String> {
        let value = value.trim();
        let err = |e: String| format!("{key} = {value}: {e}");
        if let Some(name) = key.strip_prefix("rocksdb.") {
            self.apply_own(name, value).map_err(err)?;
            return Ok(None);
        }
        if let Some(name) = key.strip_prefix("message_store.") {
            self.apply_message_store(name, value).map_err(err)?;
            return Ok(None);
        }
        if let Some(name) = key.strip_prefix("leveldb.") {
            return self.apply_leveldb(name, value, ram).map(Some).map_err(err);
        }
        Err(format!("{key}: not a storage setting (expected rocksdb.*, message_store.* or leveldb.*)"))
    }

    fn apply_own(&mut self, name: &str, value: &str) -> Result<(), String> {
        match name {
            "block_cache_size" => self.block_cache_size = parse_size(value)?,
            "write_buffer_size" => self.write_buffer_size = parse_nonzero_size(value)?,
            "max_write_buffer_number" => self.max_write_buffer_number = parse_range(value, 1, 64)?,
            "total_write_buffer_size" => self.total_write_buffer_size = parse_size(value)?,
            "compression" => self.compression = value.parse()?,
            "bottommost_compression" => self.bottommost_compression = value.parse()?,
            "block_size" => self.block_size = parse_nonzero_size(value)?,
            "bloom_filter_bits_per_key" => {
                self.bloom_filter_bits_per_key = parse_range(value, 0, 64)?;
            }
            "max_open_files" => {
                let n: i32 = value.parse().map_err(|_| "expected an integer".to_string())?;
                if n < -1 || (0..16).contains(&n) {
                    return Err("expected -1 (no limit) or at least 16".into());
                }
                self.max_open_files = n;
            }
            "max_background_jobs" => self.max_background_jobs = parse_range(value, 1, 64)?,
            "max_total_wal_size" => self.max_total_wal_size = parse_size(value)?,
            "keep_log_file_num" => self.keep_log_file_num = parse_range(value, 1, 1000)?,
            "max_log_file_size" => self.max_log_file_size = parse_size(value)?,
            other => return Err(format!("unknown setting rocksdb.{other}")),
        }
        Ok(())
    }

    fn apply_message_store(&mut self, name: &str, value: &str) -> Result<(), String> {
        match name {
            "durability" => self.group_commit.policy = value.parse()?,
            "max_group_messages" => {
                self.group_commit.max_group_messages = parse_range(value, 1, 1 << 20)? as usize;
            }
            "max_group_bytes" => {
                self.group_commit.max_group_bytes =
                    usize::try_from(parse_nonzero_size(value)?).map_err(|e| e.to_string())?;
            }
            other => return Err(format!("unknown setting message_store.{other}")),
        }
        Ok(())
    }

    /// VerneMQ's `leveldb.*` keys. The eleveldb options that only tune LevelDB internals have
    /// no RocksDB counterpart and are accepted with an "ignored" warning, so that an existing
    /// `vernemq.conf` still starts the node.
    fn apply_leveldb(&mut self, name: &str, value: &str, ram: Option<u64>) -> Result<String, String> {
        let key = format!("leveldb.{name}");
        let w = match name {
            "maximum_memory.percent" => {
                let pct: u64 = parse_range(value, 1, 100)?.into();
                let Some(ram) = ram else {
                    return Ok(format!(
                        "{key} is ignored: the machine's memory is unknown; set \
                         rocksdb.block_cache_size and rocksdb.total_write_buffer_size instead"
                    ));
                };
                let budget = ram / 100 * pct;
                format!(
                    "{key} = {pct} ({} of {} RAM) maps to {}",
                    format_size(budget),
                    format_size(ram),
                    self.apply_memory_budget(budget)
                )
            }
            "maximum_memory" => {
                let budget = parse_nonzero_size(value)?;
                format!("{key} = {value} maps to {}", self.apply_memory_budget(budget))
            }
            "write_buffer_size_max" => {
                self.write_buffer_size = parse_nonzero_size(value)?;
                format!("{key} = {value} maps to rocksdb.write_buffer_size = {value}")
            }
            "write_buffer_size_min" => {
                parse_nonzero_size(value)?;
                format!(
                    "{key} is ignored: RocksDB uses one memtable size, set by \
                     leveldb.write_buffer_size_max or rocksdb.write_buffer_size (now {})",
                    format_size(self.write_buffer_size)
                )
            }
            "compression" => match parse_on_off(value)? {
                false => {
                    self.compression = Compression::None;
                    self.bottommost_compression = Compression::None;
                    format!(
                        "{key} = off maps to rocksdb.compression = none and \
                         rocksdb.bottommost_compression = none"
                    )
                }
                true => {
                    if self.compression == Compression::None {
                        self.compression = Compression::Lz4;
                    }
                    if self.bottommost_compression == Compression::None {
                        self.bottommost_compression = Compression::Zstd;
                    }
                    format!(
                        "{key} = on maps to rocksdb.compression = {} and \
                         rocksdb.bottommost_compression = {}",
                        self.compression, self.bottommost_compression
                    )
                }
            },
            "compression.algorithm" => match value.to_ascii_lowercase().as_str() {
                "lz4" => {
                    self.compression = Compression::Lz4;
                    format!("{key} = lz4 maps to rocksdb.compression = lz4")
                }
                "snappy" => {
                    self.compression = Compression::Lz4;
                    format!(
                        "{key} = snappy maps to rocksdb.compression = lz4: this build has no \
                         snappy codec, and lz4 compresses about as well, faster"
                    )
                }
                other => return Err(format!("unknown algorithm {other:?}: expected lz4 or snappy")),
            },
            "block.size" | "block_size" => {
                self.block_size = parse_nonzero_size(value)?;
                format!("{key} = {value} maps to rocksdb.block_size = {value}")
            }
            "bloomfilter" => {
                self.bloom_filter_bits_per_key = if parse_on_off(value)? { 10 } else { 0 };
                format!(
                    "{key} = {value} maps to rocksdb.bloom_filter_bits_per_key = {}",
                    self.bloom_filter_bits_per_key
                )
            }
            "sync_on_write" => match parse_on_off(value)? {
                true => {
                    self.group_commit.policy = DurabilityPolicy::Always;
                    format!("{key} = on maps to message_store.durability = always (one fsync per append)")
                }
                false => format!(
                    "{key} = off is ignored: message_store.durability stays {} (see the storage README)",
                    self.group_commit.policy
                ),
            },
            "data_root" => format!("{key} is ignored: the database lives in the node's platform_data_dir"),
            "verify_checksums" => {
                format!("{key} is ignored: RocksDB always verifies block checksums on reads")
            }
            "threads" => format!(
                "{key} is ignored: background work is sized by rocksdb.max_background_jobs \
                 (now {})",
                self.max_background_jobs
            ),
            _ => format!("{key} is ignored: it tunes LevelDB internals with no RocksDB counterpart"),
        };
        Ok(w)
    }

    /// Splits a total memory budget as LevelDB's `maximum_memory` did for its caches and write
    /// buffers: three quarters block cache, one quarter memtables. Returns what was set.
    fn apply_memory_budget(&mut self, budget: u64) -> String {
        self.block_cache_size = budget / 4 * 3;
        self.total_write_buffer_size = budget / 4;
        format!(
            "rocksdb.block_cache_size = {} and rocksdb.total_write_buffer_size = {}",
            format_size(self.block_cache_size),
            format_size(self.total_write_buffer_size)
        )
    }
}

/// Parses `64MB`, `64 MiB`, `512KB`, `1GB`, `4096` (bytes). `KB`/`MB`/`GB` are binary multiples,
/// as in cuttlefish's `bytesize` type that `vernemq.conf` uses.
pub fn parse_size(value: &str) -> Result<u64, String> {
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("expected a size like 64MB, got {value:?}"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => KIB,
        "m" | "mb" | "mib" => MIB,
        "g" | "gb" | "gib" => GIB,
        _ => return Err(format!("unknown size unit in {value:?}: expected B, KB, MB or GB")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("size {value:?} is too large"))
}

fn parse_nonzero_size(value: &str) -> Result<u64, String> {
    match parse_size(value)? {
        0 => Err("must not be 0".into()),
        n => Ok(n),
    }
}

fn parse_range(value: &str, min: u32, max: u32) -> Result<u32, String> {
    match value.parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("expected an integer from {min} to {max}")),
    }
}

fn parse_on_off(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err("expected on or off".into()),
    }
}

/// `64MiB`, `1536KiB`, `123B`: the largest binary unit that divides the size.
pub fn format_size(bytes: u64) -> String {
    for (unit, name) in [(GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")] {
        if bytes >= unit && bytes.is_multiple_of(unit) {
            return format!("{}{name}", bytes / unit);
        }
    }
    format!("{bytes}B")
}

/// Total memory from `/proc/meminfo` (Linux); `None` elsewhere or when unreadable.
fn total_ram() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(KIB)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_keys_set_their_field_with_size_units() {
        let mut c = RocksConfig::default();
        assert_eq!(c.apply("rocksdb.block_cache_size", "32MB"), Ok(None));
        assert_eq!(c.block_cache_size, 32 * MIB);
        c.set("rocksdb.write_buffer_size", " 8 MiB ").unwrap();
        assert_eq!(c.write_buffer_size, 8 * MIB);
        c.set("rocksdb.compression", "zstd").unwrap();
        assert_eq!(c.compression, Compression::Zstd);
        c.set("rocksdb.max_open_files", "-1").unwrap();
        assert_eq!(c.max_open_files, -1);
        c.set("message_store.durability", "buffered").unwrap();
        assert_eq!(c.group_commit.policy, DurabilityPolicy::Buffered);
        c.set("message_store.max_group_bytes", "1MB").unwrap();
        assert_eq!(c.group_commit.max_group_bytes, MIB as usize);
        c.set("message_store.max_group_messages", "64").unwrap();
        assert_eq!(c.group_commit.max_group_messages, 64);
        c.set("rocksdb.total_write_buffer_size", "0").unwrap();
        assert_eq!(c.total_write_buffer_size, 0);
    }

    #[test]
    fn bad_keys_and_values_are_errors_naming_the_key() {
        let mut c = RocksConfig::default();
        let e = c.set("rocksdb.block_cache", "1MB").unwrap_err();
        assert!(e.contains("rocksdb.block_cache"), "{e}");
        let e = c.set("rocksdb.block_cache_size", "lots").unwrap_err();
        assert!(e.contains("rocksdb.block_cache_size"), "{e}");
        assert!(c.set("rocksdb.write_buffer_size", "0").is_err());
        assert!(c.set("rocksdb.max_open_files", "3").is_err());
        assert!(c.set("rocksdb.compression", "snappy").is_err());
        assert!(c.set("message_store.durability", "sometimes").is_err());
        assert!(c.set("message_store.max_group_messages", "0").is_err());
        assert!(c.set("message_store.durable", "sync").is_err());
        assert!(c.set("listener.tcp.default", "127.0.0.1:1883").is_err());
        assert!(c.set("rocksdb.block_cache_size", "99999999999GB").is_err());
        assert_eq!(c, RocksConfig::default(), "failed settings change nothing");
    }

    #[test]
    fn leveldb_memory_percent_splits_the_share_of_ram() {
        let mut c = RocksConfig::default();
        let w = c.apply_with_ram("leveldb.maximum_memory.percent", "20", Some(8 * GIB)).unwrap();
        let budget = 8 * GIB / 100 * 20;
        assert_eq!(c.block_cache_size, budget / 4 * 3);
        assert_eq!(c.total_write_buffer_size, budget / 4);
        let w = w.unwrap();
        assert!(w.contains("rocksdb.block_cache_size") && w.contains("8GiB"), "{w}");
        let mut c = RocksConfig::default();
        let w = c.apply_with_ram("leveldb.maximum_memory.percent", "70", None).unwrap().unwrap();
        assert!(w.contains("ignored"), "{w}");
        assert_eq!(c, RocksConfig::default());
        assert!(c.apply_with_ram("leveldb.maximum_memory.percent", "0", Some(GIB)).is_err());
    }

    #[test]
    fn leveldb_keys_map_with_a_warning_saying_to_what() {
        let mut c = RocksConfig::default();
        let w = c.apply("leveldb.maximum_memory", "400MB").unwrap().unwrap();
        assert_eq!(c.block_cache_size, 300 * MIB);
        assert_eq!(c.total_write_buffer_size, 100 * MIB);
        assert!(w.contains("300MiB") && w.contains("100MiB"), "{w}");
        let w = c.apply("leveldb.write_buffer_size_max", "60MB").unwrap().unwrap();
        assert_eq!(c.write_buffer_size, 60 * MIB);
        assert!(w.contains("rocksdb.write_buffer_size"), "{w}");
        let w = c.apply("leveldb.write_buffer_size_min", "30MB").unwrap().unwrap();
        assert!(w.contains("ignored"), "{w}");
        assert_eq!(c.write_buffer_size, 60 * MIB);
        c.apply("leveldb.compression", "off").unwrap();
        assert_eq!((c.compression, c.bottommost_compression), (Compression::None, Compression::None));
        c.apply("leveldb.compression", "on").unwrap();
        assert_eq!((c.compression, c.bottommost_compression), (Compression::Lz4, Compression::Zstd));
        let w = c.apply("leveldb.compression.algorithm", "snappy").unwrap().unwrap();
        assert_eq!(c.compression, Compression::Lz4);
        assert!(w.contains("snappy") && w.contains("lz4"), "{w}");
        c.apply("leveldb.sync_on_write", "on").unwrap();
        assert_eq!(c.group_commit.policy, DurabilityPolicy::Always);
        c.apply("leveldb.bloomfilter", "off").unwrap();
        assert_eq!(c.bloom_filter_bits_per_key, 0);
        let w = c.apply("leveldb.tiered", "3").unwrap().unwrap();
        assert!(w.contains("leveldb.tiered is ignored"), "{w}");
        assert!(c.apply("leveldb.compression", "maybe").is_err());
        assert!(c.apply("leveldb.compression.algorithm", "brotli").is_err());
    }

    #[test]
    fn sizes_parse_and_format_in_binary_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64MB"), Ok(64 * MIB));
        assert_eq!(parse_size("64mib"), Ok(64 * MIB));
        assert_eq!(parse_size("2 GB"), Ok(2 * GIB));
        assert_eq!(parse_size("1kb"), Ok(KIB));
        assert!(parse_size("MB").is_err());
        assert!(parse_size("1.5GB").is_err());
        assert!(parse_size("-1").is_err());
        assert_eq!(format_size(64 * MIB), "64MiB");
        assert_eq!(format_size(1536 * KIB), "1536KiB");
        assert_eq!(format_size(123), "123B");
    }

    #[test]
    fn is_storage_key_routes_only_our_prefixes() {
        assert!(RocksConfig::is_storage_key("rocksdb.block_cache_size"));
        assert!(RocksConfig::is_storage_key("leveldb.maximum_memory.percent"));
        assert!(RocksConfig::is_storage_key("message_store.durability"));
        assert!(!RocksConfig::is_storage_key("listener.tcp.default"));
    }
}
