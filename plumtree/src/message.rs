//! The wire format between plumtree replicas: a versioned enum, serialised with postcard.
//!
//! Variant 0 of [`Message`] is the [`Hello`] handshake and never changes shape, so that a peer
//! of any version (or running the other backend, `vmq_swc`) can be identified from its first
//! frame and refused with a clear message. Protocol messages live in [`MessageV1`]; a change of
//! their shape adds a `V2` variant next to it.

use serde::{Deserialize, Serialize};
use vmq_storage::metadata::{MetaKey, MetaValue, NodeId};

use crate::dvv::{DvvSet, VersionVector};

/// The backend name carried in [`Hello`]; it is also the `metadata_plugin` value selecting it.
pub const BACKEND_NAME: &str = "vmq_plumtree";
/// The protocol version carried in [`Hello`].
pub const PROTOCOL_VERSION: u32 = 1;

/// A replicated object: the DVV set of one key. `None` values are delete tombstones.
pub type Object = DvvSet<Option<MetaValue>>;

/// A message between two replicas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// Handshake, sent to every peer when it becomes a member.
    Hello(Hello),
    /// Protocol version 1.
    V1(MessageV1),
}

/// The handshake: which backend and protocol version the sender runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// `vmq_plumtree` or `vmq_swc`.
    pub backend: String,
    /// Protocol version of that backend.
    pub protocol_version: u32,
}

impl Hello {
    /// This node's hello.
    pub fn ours() -> Self {
        Self { backend: BACKEND_NAME.to_owned(), protocol_version: PROTOCOL_VERSION }
    }
}

/// Identifies one version of one key broadcast from `root` (riak_core's message id
/// `{PKey, Context}` plus the root of the tree it travels on).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IHave {
    /// The node whose write started the broadcast: the tree it travels on.
    pub root: NodeId,
    /// The key.
    pub key: MetaKey,
    /// The causal context of the version.
    pub context: VersionVector,
}

/// The prefix level of an exchange: this side's hash per non-empty prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefixBuckets {
    /// The prefix.
    pub prefix: String,
    /// Non-zero bucket hashes (empty when the sender has nothing under the prefix).
    pub buckets: Vec<(u16, u64)>,
}

/// The segments of one bucket that differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketSegments {
    /// The prefix.
    pub prefix: String,
    /// The bucket.
    pub bucket: u16,
    /// Non-zero segment hashes of the bucket on the sender.
    pub segments: Vec<(u32, u64)>,
}

/// The keys of one segment that differs, with their hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentKeys {
    /// The prefix.
    pub prefix: String,
    /// The segment.
    pub segment: u32,
    /// Every key of the segment on the sender with the hash of its object.
    pub keys: Vec<(Vec<u8>, u64)>,
}

/// Protocol version 1: Plumtree (Leitão, Pereira, Rodrigues, "Epidemic Broadcast Trees",
/// SRDS 2007, §3) plus the hash-tree exchange of `plumtree_metadata_exchange_fsm`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum MessageV1 {
    /// Eager push (paper: GOSSIP): a new version of `key`, travelling on `root`'s tree.
    Broadcast {
        /// Tree root.
        root: NodeId,
        /// The key.
        key: MetaKey,
        /// The object after the write.
        object: Object,
    },
    /// Lazy push (paper: IHAVE): versions the sender has; reply `Graft` or `IgnoredIHave`.
    IHave(Vec<IHave>),
    /// The receiver already had these versions: stop announcing them (riak_core's
    /// `ignored_i_have`).
    IgnoredIHave(Vec<IHave>),
    /// The sender missed this version: send it and make the link eager (paper: GRAFT).
    Graft(IHave),
    /// The sender got a duplicate on `root`'s tree: make the link lazy (paper: PRUNE).
    Prune {
        /// Tree root.
        root: NodeId,
    },
    /// Exchange step 1 (initiator): hash of every non-empty prefix.
    ExchangeRoot {
        /// Exchange id chosen by the initiator.
        exchange: u64,
        /// `(prefix, hash)`.
        prefixes: Vec<(String, u64)>,
    },
    /// Exchange step 2 (responder): bucket hashes of the prefixes that differ.
    ExchangeBuckets {
        /// Exchange id.
        exchange: u64,
        /// Differing prefixes.
        prefixes: Vec<PrefixBuckets>,
    },
    /// Exchange step 3 (initiator): segment hashes of the buckets that differ.
    ExchangeSegments {
        /// Exchange id.
        exchange: u64,
        /// Differing buckets.
        buckets: Vec<BucketSegments>,
    },
    /// Exchange step 4 (responder): key hashes of the segments that differ.
    ExchangeKeys {
        /// Exchange id.
        exchange: u64,
        /// Differing segments.
        segments: Vec<SegmentKeys>,
    },
    /// Exchange step 5 (initiator): objects the responder lacks or has differently, and the
    /// keys it wants back.
    ExchangeRepair {
        /// Exchange id.
        exchange: u64,
        /// Objects for the responder to merge.
        objects: Vec<(MetaKey, Object)>,
        /// Keys whose objects the initiator wants.
        want: Vec<MetaKey>,
    },
    /// Exchange step 6 (responder): the wanted objects. Ends the exchange.
    ExchangeObjects {
        /// Exchange id.
        exchange: u64,
        /// Objects for the initiator to merge.
        objects: Vec<(MetaKey, Object)>,
    },
    /// The sender got a new version on `root`'s tree first over a link it had pruned: make the
    /// link eager on this side too. Without it, a prune crossing a push leaves the link lazy
    /// here and eager there, and the sender can drop off the tree, hearing of new versions
    /// only at the next lazy tick.
    Eager {
        /// Tree root.
        root: NodeId,
    },
}

impl Message {
    /// A short name of the message kind, for counters and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello(_) => "hello",
            Message::V1(m) => match m {
                MessageV1::Broadcast { .. } => "broadcast",
                MessageV1::IHave(_) => "i_have",
                MessageV1::IgnoredIHave(_) => "ignored_i_have",
                MessageV1::Graft(_) => "graft",
                MessageV1::Prune { .. } => "prune",
                MessageV1::ExchangeRoot { .. } => "exchange_root",
                MessageV1::ExchangeBuckets { .. } => "exchange_buckets",
                MessageV1::ExchangeSegments { .. } => "exchange_segments",
                MessageV1::ExchangeKeys { .. } => "exchange_keys",
                MessageV1::ExchangeRepair { .. } => "exchange_repair",
                MessageV1::ExchangeObjects { .. } => "exchange_objects",
                MessageV1::Eager { .. } => "eager",
            },
        }
    }

    /// Serialises with postcard.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising plain data into a Vec cannot fail: postcard only errors on unsupported
        // serde features (none are used here) or on a full fixed-size buffer.
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Parses a frame received from a peer.
    pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
        postcard::from_bytes(bytes).map_err(|e| WireError::Decode(e.to_string()))
    }
}

/// Why a frame or a handshake was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The bytes are not a plumtree message of a known version.
    #[error("undecodable plumtree frame: {0}")]
    Decode(String),
    /// The peer runs the other metadata backend.
    #[error(
        "peer {peer} runs metadata_plugin = {backend} but this node runs metadata_plugin = \
         vmq_plumtree; the two backends are not wire-compatible, so a cluster must run one of \
         them on every node: refusing to cluster with {peer}"
    )]
    ForeignBackend {
        /// The peer.
        peer: NodeId,
        /// Its backend.
        backend: String,
    },
    /// The peer runs plumtree with a protocol version this build does not speak.
    #[error("peer {peer} speaks plumtree protocol version {theirs}, this node speaks {ours}")]
    Version {
        /// The peer.
        peer: NodeId,
        /// Its version.
        theirs: u32,
        /// Ours.
        ours: u32,
    },
}

/// Checks a peer's hello: `Ok` when it runs a compatible plumtree.
pub fn check_hello(peer: &NodeId, hello: &Hello) -> Result<(), WireError> {
    if hello.backend != BACKEND_NAME {
        return Err(WireError::ForeignBackend { peer: peer.clone(), backend: hello.backend.clone() });
    }
    if hello.protocol_version != PROTOCOL_VERSION {
        return Err(WireError::Version { peer: peer.clone(), theirs: hello.protocol_version, ours: PROTOCOL_VERSION });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> MetaKey {
        MetaKey::new("subscriber", b"k".to_vec())
    }

    fn object() -> Object {
        DvvSet::new().update(
            &VersionVector::new(),
            &NodeId::new("a"),
            Some(MetaValue { timestamp: 7, data: b"v".to_vec() }),
        )
    }

    /// Golden vectors: a change here breaks mixed-version clusters and must come with a new
    /// `MessageV*` variant instead.
    #[test]
    fn wire_format_is_pinned() {
        let cases: Vec<(Message, &[u8])> = vec![
            (
                Message::Hello(Hello::ours()),
                // variant 0, "vmq_plumtree" (len 12), version 1
                b"\x00\x0cvmq_plumtree\x01",
            ),
            (
                Message::V1(MessageV1::Broadcast { root: NodeId::new("a"), key: key(), object: object() }),
                // V1, Broadcast, root "a", key ("subscriber", [b'k']), 1 entry: "a" -> counter 1,
                // 1 value: Some(timestamp 7, data "v")
                b"\x01\x00\x01a\x0asubscriber\x01k\x01\x01a\x01\x01\x01\x07\x01v",
            ),
            (
                Message::V1(MessageV1::Graft(IHave {
                    root: NodeId::new("a"),
                    key: key(),
                    context: object().context(),
                })),
                b"\x01\x03\x01a\x0asubscriber\x01k\x01\x01a\x01",
            ),
            (Message::V1(MessageV1::Prune { root: NodeId::new("b") }), b"\x01\x04\x01b"),
            (Message::V1(MessageV1::Eager { root: NodeId::new("b") }), b"\x01\x0b\x01b"),
            (
                Message::V1(MessageV1::IHave(vec![IHave {
                    root: NodeId::new("a"),
                    key: key(),
                    context: object().context(),
                }])),
                b"\x01\x01\x01\x01a\x0asubscriber\x01k\x01\x01a\x01",
            ),
            (
                Message::V1(MessageV1::IgnoredIHave(vec![IHave {
                    root: NodeId::new("a"),
                    key: key(),
                    context: object().context(),
                }])),
                b"\x01\x02\x01\x01a\x0asubscriber\x01k\x01\x01a\x01",
            ),
            (
                Message::V1(MessageV1::ExchangeObjects { exchange: 5, objects: vec![(key(), object())] }),
                // V1, ExchangeObjects, exchange 5, 1 object: key, then the DVV set
                b"\x01\x0a\x05\x01\x0asubscriber\x01k\x01\x01a\x01\x01\x01\x07\x01v",
            ),
            (
                Message::V1(MessageV1::ExchangeRoot { exchange: 5, prefixes: vec![("retain".into(), 1)] }),
                b"\x01\x05\x05\x01\x06retain\x01",
            ),
        ];
        for (msg, bytes) in cases {
            assert_eq!(msg.encode(), bytes, "{msg:?}");
            assert_eq!(Message::decode(bytes).unwrap(), msg);
        }
    }

    #[test]
    fn a_swc_hello_is_refused_with_a_clear_message() {
        // A vmq_swc peer's hello, same layout: variant 0 then the backend name.
        let frame = b"\x00\x07vmq_swc\x01";
        let Message::Hello(hello) = Message::decode(frame).unwrap() else { panic!("not a hello") };
        let err = check_hello(&NodeId::new("vmq2@host"), &hello).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("vmq2@host") && text.contains("vmq_swc"), "{text}");
        assert!(text.contains("not wire-compatible"), "{text}");
        assert!(check_hello(&NodeId::new("x"), &Hello::ours()).is_ok());
    }

    #[test]
    fn garbage_does_not_decode() {
        assert!(Message::decode(&[0x09, 0xff]).is_err());
        assert!(Message::decode(&[]).is_err());
    }
}
