//! Messages between SWC replicas. Serialised with postcard; the outer enum is versioned so a
//! later format can be added next to `V1` during a rolling upgrade. Golden vectors in the tests
//! pin the bytes.

use serde::{Deserialize, Serialize};
use vmq_storage::metadata::MetaKey;

use crate::clock::{NodeClock, ReplicaId, VersionVector};
use crate::dcc::Dcc;
use crate::watermark::Watermark;

/// A message between two replicas of the same group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SwcMessage {
    /// Format version 1.
    V1(Envelope),
}

/// Who sent a message and for which group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The sender's replica id (lets peers notice a new incarnation).
    pub from: ReplicaId,
    /// The group (`meta1..metaN` in VerneMQ; 0-based here).
    pub group: u16,
    /// The content.
    pub body: Body,
}

/// One object on the wire: its key and its stripped container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireObject {
    /// The key.
    pub key: MetaKey,
    /// Versions and context, stripped of the `base` sent alongside.
    pub object: Dcc,
}

impl WireObject {
    /// Roughly the bytes it takes on the wire: its key and its values.
    pub fn approximate_size(&self) -> usize {
        let values: usize = self.object.versions.values().flatten().map(|v| v.data.len() + 16).sum();
        self.key.key.len() + self.key.prefix.len() + values
    }
}

/// The message content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// Eager push of freshly written objects (`vmq_swc_store:rpc_broadcast`).
    Broadcast {
        /// The sender's node-clock base; receivers fill the objects with it.
        base: VersionVector,
        /// The written objects.
        objects: Vec<WireObject>,
    },
    /// Anti-entropy step 1: asks for the peer's node clock and watermark
    /// (`vmq_swc_exchange_fsm` `prepare`).
    ClockRequest {
        /// Exchange id chosen by the requester.
        exchange: u64,
    },
    /// Answer to [`Body::ClockRequest`].
    ClockReply {
        /// Echoed exchange id.
        exchange: u64,
        /// The responder's node clock.
        clock: NodeClock,
        /// The responder's watermark matrix.
        watermark: Watermark,
        /// Replicas the responder retired, with the counter up to which it saw them; they
        /// count as seen for the watermark but no longer travel in the clock.
        retired: VersionVector,
    },
    /// Anti-entropy step 2: asks for the objects holding these dots (`rpc_sync_missing`).
    MissingRequest {
        /// Echoed exchange id.
        exchange: u64,
        /// Batch number within the exchange.
        batch: u32,
        /// Missing counters by replica.
        dots: Vec<(ReplicaId, Vec<u64>)>,
    },
    /// Answer to [`Body::MissingRequest`]; dots no longer held (superseded or collected) are
    /// simply absent.
    MissingReply {
        /// Echoed exchange id.
        exchange: u64,
        /// Echoed batch number.
        batch: u32,
        /// The responder's node-clock base; the requester fills the objects with it.
        base: VersionVector,
        /// The objects.
        objects: Vec<WireObject>,
    },
    /// Like [`Body::MissingReply`] for the part of the requested dots that fit one answer
    /// (`exchange_reply_bytes`); the requester asks for `unserved` again. A later variant, so
    /// the encoding of the others is unchanged.
    MissingReplyPart {
        /// Echoed exchange id.
        exchange: u64,
        /// Echoed batch number.
        batch: u32,
        /// The responder's node-clock base.
        base: VersionVector,
        /// The objects of the dots served.
        objects: Vec<WireObject>,
        /// Requested dots not served in this answer, in request order.
        unserved: Vec<(ReplicaId, Vec<u64>)>,
    },
}

impl SwcMessage {
    /// Serialises with postcard.
    pub fn to_bytes(&self) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_allocvec(self)
    }

    /// Parses bytes from a peer.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Dot;
    use vmq_storage::metadata::{MetaValue, NodeId};

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn id() -> ReplicaId {
        ReplicaId::new(NodeId::new("n1"), 7)
    }

    #[test]
    fn golden_broadcast() {
        let mut object = Dcc::default();
        object.add(Dot::new(id(), 3), Some(MetaValue { timestamp: 5, data: b"v".to_vec() }));
        let mut base = VersionVector::new();
        base.raise(&id(), 2);
        let msg = SwcMessage::V1(Envelope {
            from: id(),
            group: 1,
            body: Body::Broadcast { base, objects: vec![WireObject { key: MetaKey::new("p", b"k".to_vec()), object }] },
        });
        let bytes = msg.to_bytes().expect("encode");
        // V1, from {"n1", 7}, group 1, Broadcast, base {n1#7: 2}, 1 object: key ("p", "k"),
        // versions {n1#7:3 => Some(ts 5, "v")}, context {n1#7: 3}.
        assert_eq!(
            hex(&bytes),
            "00026e3107010001026e310702010170016b01026e31070301050176\
             01026e310703"
        );
        assert_eq!(SwcMessage::from_bytes(&bytes).expect("decode"), msg);
    }

    #[test]
    fn golden_missing_request() {
        let msg = SwcMessage::V1(Envelope {
            from: id(),
            group: 0,
            body: Body::MissingRequest { exchange: 9, batch: 1, dots: vec![(id(), vec![4, 5])] },
        });
        let bytes = msg.to_bytes().expect("encode");
        assert_eq!(hex(&bytes), "00026e31070003090101026e3107020405");
        assert_eq!(SwcMessage::from_bytes(&bytes).expect("decode"), msg);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(SwcMessage::from_bytes(&[0, 0xff, 0xff, 0xff]).is_err());
        assert!(SwcMessage::from_bytes(&[]).is_err());
        assert!(SwcMessage::from_bytes(&[9]).is_err());
    }
}
