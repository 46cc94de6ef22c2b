//! The header every benchmark payload starts with: (publisher id, sequence, send timestamp),
//! big-endian, 20 bytes; the rest of the payload is zero padding.

use crate::accounting::PublisherId;

/// Bytes of the header.
pub const HEADER_LEN: usize = 20;

/// The decoded header of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Who sent it.
    pub publisher: PublisherId,
    /// Its position in that publisher's sequence.
    pub seq: u64,
    /// Nanoseconds since the run's start instant, when it was written to the socket.
    pub sent_at_ns: u64,
}

impl Header {
    /// The 20 header bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..4].copy_from_slice(&self.publisher.0.to_be_bytes());
        b[4..12].copy_from_slice(&self.seq.to_be_bytes());
        b[12..].copy_from_slice(&self.sent_at_ns.to_be_bytes());
        b
    }

    /// Reads the header at the front of `payload`, if it is long enough.
    pub fn decode(payload: &[u8]) -> Option<Self> {
        let b: &[u8; HEADER_LEN] = payload.get(..HEADER_LEN)?.try_into().ok()?;
        let (p, rest) = b.split_at(4);
        let (s, t) = rest.split_at(8);
        Some(Self {
            publisher: PublisherId(u32::from_be_bytes(p.try_into().ok()?)),
            seq: u64::from_be_bytes(s.try_into().ok()?),
            sent_at_ns: u64::from_be_bytes(t.try_into().ok()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrips_and_short_payloads_are_rejected() {
        let h = Header { publisher: PublisherId(7), seq: 1 << 40, sent_at_ns: 123_456_789 };
        let mut payload = h.encode().to_vec();
        payload.extend_from_slice(&[0; 44]);
        assert_eq!(Header::decode(&payload), Some(h));
        assert_eq!(Header::decode(&payload[..HEADER_LEN - 1]), None);
    }
}
