use bytes::BytesMut;

use super::{DecodeError, EncodeError, Packet, ProtocolVersion};

/// The fixed header of a packet: type and flags byte, and remaining length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedHeader {
    /// First byte: packet type (high nibble) and flags (low nibble).
    pub byte1: u8,
    /// Length of the variable header and payload.
    pub remaining_len: usize,
    /// Length of the fixed header itself (2 to 5 bytes).
    pub header_len: usize,
}

/// Decodes one whole packet from the front of `buf`, consuming it.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole packet (nothing consumed). A packet
/// whose total size exceeds `max_packet_size` is rejected from its fixed header alone.
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: usize,
) -> Result<Option<Packet>, DecodeError> {
    let _ = (buf, version, max_packet_size);
    Err(DecodeError::MalformedPacket("codec not built"))
}

/// Appends the encoding of `packet` for `version` to `out`.
pub fn encode(packet: &Packet, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
    let _ = (packet, version, out);
    Err(EncodeError::NotInVersion)
}

/// The number of bytes `encode` would write for `packet` (to honour a client's Maximum Packet
/// Size before sending).
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> usize {
    let _ = (packet, version);
    0
}
