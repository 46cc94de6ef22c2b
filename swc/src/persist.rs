//! On-disk layout in the `Metadata` column and recovery.
//!
//! Every key starts with the tag byte `S` (so the node can keep other records in the same
//! column), then a kind byte:
//!
//! | key | value |
//! |---|---|
//! | `S I` | [`StoredIdentity`]: node name, incarnation, number of groups |
//! | `S C <group u16 BE>` | [`StoredClock`]: node clock and retired replicas |
//! | `S W <group u16 BE>` | [`crate::watermark::Watermark`] |
//! | `S O <group u16 BE> <postcard MetaKey>` | [`StoredObject`]: the stripped object |
//!
//! Values are postcard; the record enums are versioned. The dot-key map is not stored: it is
//! rebuilt from the objects at load (every dot it holds is in some object, tombstones included).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vmq_storage::metadata::{MetaKey, NodeId};
use vmq_storage::{Column, Store, StoreError};

use crate::clock::{NodeClock, VersionVector};
use crate::dcc::Dcc;
use crate::watermark::Watermark;

/// Tag byte of every SWC key in the `Metadata` column.
pub const TAG: u8 = b'S';
const KIND_IDENTITY: u8 = b'I';
const KIND_CLOCK: u8 = b'C';
const KIND_WATERMARK: u8 = b'W';
const KIND_OBJECT: u8 = b'O';
const PAGE: usize = 1024;

/// The replica identity record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredIdentity {
    /// Format version 1.
    V1 {
        /// Node name the incarnation belongs to.
        node: NodeId,
        /// Current incarnation.
        incarnation: u32,
        /// `swc_groups` when the data was written.
        groups: u16,
    },
}

/// The node-clock record of one group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredClock {
    /// Format version 1.
    V1 {
        /// The node clock.
        clock: NodeClock,
        /// Retired replicas and the counter up to which their dots were all seen.
        retired: VersionVector,
    },
}

/// An object record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredObject {
    /// Format version 1: the object stripped of the node-clock base at the time of writing.
    V1(Dcc),
}

pub(crate) fn identity_key() -> Vec<u8> {
    vec![TAG, KIND_IDENTITY]
}

fn group_key(kind: u8, group: u16) -> Vec<u8> {
    let mut k = vec![TAG, kind];
    k.extend_from_slice(&group.to_be_bytes());
    k
}

pub(crate) fn clock_key(group: u16) -> Vec<u8> {
    group_key(KIND_CLOCK, group)
}

pub(crate) fn watermark_key(group: u16) -> Vec<u8> {
    group_key(KIND_WATERMARK, group)
}

pub(crate) fn object_key(group: u16, key: &MetaKey) -> Vec<u8> {
    let mut k = group_key(KIND_OBJECT, group);
    // postcard length-prefixes both fields, so the encoding is injective.
    k.extend(postcard::to_allocvec(key).unwrap_or_default());
    k
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising our own in-memory types into a Vec cannot fail (no I/O, no unsupported types).
    postcard::to_allocvec(value).unwrap_or_default()
}

fn corrupt(reason: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt { column: Column::Metadata.name(), reason: reason.to_string() }
}

fn decode<'a, T: Deserialize<'a>>(what: &str, bytes: &'a [u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| corrupt(format!("swc {what}: {e}")))
}

/// One group's state as found in the store.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RecoveredGroup {
    pub clock: NodeClock,
    pub retired: VersionVector,
    pub watermark: Watermark,
    pub objects: BTreeMap<MetaKey, Dcc>,
}

/// Replica state read back from a [`Store`], handed to [`crate::Replica::new`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recovered {
    pub(crate) identity: Option<(NodeId, u32, u16)>,
    pub(crate) groups: BTreeMap<u16, RecoveredGroup>,
}

impl Recovered {
    /// Nothing stored: a node starting for the first time.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Reads every SWC record from `store`.
    pub fn load(store: &dyn Store) -> Result<Self, StoreError> {
        let mut out = Recovered::empty();
        if let Some(bytes) = store.get(Column::Metadata, &identity_key())? {
            let StoredIdentity::V1 { node, incarnation, groups } = decode("identity", &bytes)?;
            out.identity = Some((node, incarnation, groups));
        }
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = store.scan_prefix(Column::Metadata, &[TAG], after.as_deref(), PAGE)?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            for (key, value) in &page {
                out.apply(key, value)?;
            }
            if page.len() < PAGE {
                break;
            }
        }
        Ok(out)
    }

    fn apply(&mut self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let (kind, rest) = match key {
            [TAG, kind, rest @ ..] => (*kind, rest),
            _ => return Ok(()),
        };
        if kind == KIND_IDENTITY {
            return Ok(());
        }
        let (group, rest) = match rest {
            [hi, lo, rest @ ..] => (u16::from_be_bytes([*hi, *lo]), rest),
            _ => return Err(corrupt(format!("swc key too short: {key:?}"))),
        };
        let g = self.groups.entry(group).or_default();
        match kind {
            KIND_CLOCK => {
                let StoredClock::V1 { clock, retired } = decode("clock", value)?;
                g.clock = clock;
                g.retired = retired;
            }
            KIND_WATERMARK => g.watermark = decode("watermark", value)?,
            KIND_OBJECT => {
                let k: MetaKey = decode("object key", rest)?;
                let StoredObject::V1(obj) = decode("object", value)?;
                g.objects.insert(k, obj);
            }
            other => return Err(corrupt(format!("unknown swc record kind {other}"))),
        }
        Ok(())
    }

    /// Number of objects (live keys and tombstones) recovered.
    pub fn object_count(&self) -> usize {
        self.groups.values().map(|g| g.objects.len()).sum()
    }
}

/// Reads the replica state from `store` (same as [`Recovered::load`]).
pub fn load(store: &dyn Store) -> Result<Recovered, StoreError> {
    Recovered::load(store)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Dot, ReplicaId};
    use vmq_storage::metadata::MetaValue;
    use vmq_storage::{MemStore, WriteBatch};

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn golden_key_layout() {
        assert_eq!(hex(&identity_key()), "5349");
        assert_eq!(hex(&clock_key(3)), "53430003");
        assert_eq!(hex(&watermark_key(3)), "53570003");
        assert_eq!(hex(&object_key(1, &MetaKey::new("p", b"k".to_vec()))), "534f00010170016b");
    }

    #[test]
    fn golden_object_record() {
        let id = ReplicaId::new(NodeId::new("n1"), 7);
        let mut o = Dcc::default();
        o.add(Dot::new(id, 3), None);
        // V1, 1 version: dot (n1#7, 3) => None (a delete marker), context {n1#7: 3}.
        assert_eq!(hex(&encode(&StoredObject::V1(o))), "0001026e3107030001026e310703");
    }

    #[test]
    fn load_reads_back_what_was_written_and_reports_corruption() {
        let store = MemStore::new();
        let key = MetaKey::new("p", b"k".to_vec());
        let id = ReplicaId::new(NodeId::new("n1"), 7);
        let mut o = Dcc::default();
        o.add(Dot::new(id, 1), Some(MetaValue { timestamp: 1, data: vec![1] }));
        let mut b = WriteBatch::new();
        b.put(Column::Metadata, object_key(2, &key), encode(&StoredObject::V1(o.clone())));
        b.put(
            Column::Metadata,
            identity_key(),
            encode(&StoredIdentity::V1 { node: NodeId::new("n1"), incarnation: 7, groups: 4 }),
        );
        b.put(Column::Metadata, b"other-owner".to_vec(), b"ignored".to_vec());
        store.write(b, vmq_storage::Durability::Sync).expect("write");
        let r = Recovered::load(&store).expect("load");
        assert_eq!(r.identity, Some((NodeId::new("n1"), 7, 4)));
        assert_eq!(r.groups[&2].objects[&key], o);
        let mut b = WriteBatch::new();
        b.put(Column::Metadata, clock_key(0), vec![0xff, 0xff]);
        store.write(b, vmq_storage::Durability::Sync).expect("write");
        assert!(matches!(Recovered::load(&store), Err(StoreError::Corrupt { .. })));
    }
}
