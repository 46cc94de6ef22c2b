//! Turns RocksDB's status messages into [`StoreError`]s that say what happened and where.
//!
//! RocksDB reports errors as `Status::ToString()` text, `"<code>: <message>"` (e.g.
//! `"IO error: No space left on device: While appending to file: …/000004.log"`), and the
//! Rust binding passes only that text on. The mapping works on the text so that each case can
//! be tested without producing it.

use std::path::Path;

use crate::{Column, StoreError};

/// RocksDB's lock messages: another process holds the `LOCK` file (`fcntl` fails with
/// EAGAIN/EACCES) or this process already opened the database.
fn is_locked(msg: &str) -> bool {
    msg.contains("While lock file") || msg.contains("lock hold by current process")
}

/// ENOSPC and EDQUOT, as `strerror` spells them inside RocksDB's IO errors.
pub(crate) fn is_no_space(msg: &str) -> bool {
    msg.contains("No space left on device") || msg.contains("Disk quota exceeded")
}

fn is_corruption(msg: &str) -> bool {
    msg.starts_with("Corruption:")
}

/// The error for a failed open, from RocksDB's message.
pub(crate) fn open_error_from(path: &Path, msg: &str) -> StoreError {
    let reason = if is_locked(msg) {
        format!(
            "the database is locked by another process (is another vernemq node running on \
             this data directory?): {msg}"
        )
    } else if is_corruption(msg) {
        format!(
            "the database is corrupt and was not opened, so nothing was lost; restore it from \
             a backup, or move it aside to start with an empty database: {msg}"
        )
    } else if is_no_space(msg) {
        format!("no space left on the device to open the database: {msg}")
    } else {
        msg.to_string()
    };
    StoreError::Open { path: path.to_path_buf(), reason }
}

/// The error for a failed write or flush, from RocksDB's message.
pub(crate) fn write_error_from(path: &Path, msg: &str) -> StoreError {
    if is_no_space(msg) {
        StoreError::NoSpace(format!("{}: {msg}", path.display()))
    } else {
        StoreError::Engine(format!("{}: {msg}", path.display()))
    }
}

/// The error for a failed read of `column`, from RocksDB's message.
pub(crate) fn read_error_from(path: &Path, column: Column, msg: &str) -> StoreError {
    if is_corruption(msg) {
        StoreError::Corrupt { column: column.name(), reason: format!("{}: {msg}", path.display()) }
    } else {
        StoreError::Engine(format!("{}: {msg}", path.display()))
    }
}

pub(crate) fn open_error(path: &Path, e: &rocksdb::Error) -> StoreError {
    open_error_from(path, e.as_ref())
}

pub(crate) fn write_error(path: &Path, e: &rocksdb::Error) -> StoreError {
    write_error_from(path, e.as_ref())
}

pub(crate) fn read_error(path: &Path, column: Column, e: &rocksdb::Error) -> StoreError {
    read_error_from(path, column, e.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/var/lib/vernemq/rocksdb";

    fn reason(e: StoreError) -> String {
        match e {
            StoreError::Open { path, reason } => {
                assert_eq!(path, Path::new(P));
                reason
            }
            other => panic!("expected Open, got {other:?}"),
        }
    }

    #[test]
    fn lock_held_by_another_process_says_locked() {
        let msg = format!("IO error: While lock file: {P}/LOCK: Resource temporarily unavailable");
        let r = reason(open_error_from(Path::new(P), &msg));
        assert!(r.contains("locked by another process"), "{r}");
        let msg = format!(
            "IO error: lock hold by current process, acquire time 1764090000 acquiring thread \
             1234: {P}/LOCK: No locks available"
        );
        assert!(reason(open_error_from(Path::new(P), &msg)).contains("locked by another process"));
    }

    #[test]
    fn corruption_on_open_says_corrupt_and_nothing_lost() {
        let r = reason(open_error_from(Path::new(P), "Corruption: CURRENT file does not end with newline"));
        assert!(r.contains("corrupt") && r.contains("not opened"), "{r}");
    }

    #[test]
    fn enospc_and_quota_on_write_are_no_space_naming_the_path() {
        let e = write_error_from(
            Path::new(P),
            "IO error: No space left on device: While appending to file: /x/000004.log: No space left on device",
        );
        assert!(matches!(&e, StoreError::NoSpace(m) if m.contains(P)), "{e:?}");
        let e = write_error_from(Path::new(P), "IO error: Disk quota exceeded");
        assert!(matches!(e, StoreError::NoSpace(_)));
        let e = write_error_from(Path::new(P), "IO error: Input/output error");
        assert!(matches!(&e, StoreError::Engine(m) if m.contains(P)), "{e:?}");
    }

    #[test]
    fn corruption_on_read_names_column_and_path() {
        let e = read_error_from(Path::new(P), Column::Messages, "Corruption: block checksum mismatch");
        assert!(matches!(&e, StoreError::Corrupt { column: "messages", reason } if reason.contains(P)), "{e:?}");
    }
}
