//! Framing and the wire primitives shared by the v4 and v5 codecs: the fixed header (MQTT 5.0
//! section 2.1, 3.1.1 section 2.2), variable byte integers, UTF-8 strings and binary data
//! (MQTT 5.0 section 1.5), and the parts of CONNECT and PUBLISH that every level shares.
//!
//! Reads take a `&mut Bytes` holding exactly one frame and check the bounds of every field
//! before touching it, so a lying length prefix is a [`DecodeError::MalformedPacket`], never a
//! panic. Writes trust lengths validated by the matching `*_len` function, which is why
//! encoding computes the length first (validating every field) and only then writes, straight
//! into the caller's buffer after a single `reserve`.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{DecodeError, EncodeError, Packet, PacketId, ProtocolVersion, QoS, v4, v5};

/// The largest remaining length a variable byte integer of four bytes can hold (MQTT 5.0
/// section 1.5.5, 3.1.1 section 2.2.3).
pub const MAX_REMAINING_LEN: usize = 268_435_455;

/// Control packet types: the high nibble of the first fixed-header byte (MQTT 5.0 table 2-1).
pub(crate) mod packet_type {
    pub(crate) const CONNECT: u8 = 1;
    pub(crate) const CONNACK: u8 = 2;
    pub(crate) const PUBLISH: u8 = 3;
    pub(crate) const PUBACK: u8 = 4;
    pub(crate) const PUBREC: u8 = 5;
    pub(crate) const PUBREL: u8 = 6;
    pub(crate) const PUBCOMP: u8 = 7;
    pub(crate) const SUBSCRIBE: u8 = 8;
    pub(crate) const SUBACK: u8 = 9;
    pub(crate) const UNSUBSCRIBE: u8 = 10;
    pub(crate) const UNSUBACK: u8 = 11;
    pub(crate) const PINGREQ: u8 = 12;
    pub(crate) const PINGRESP: u8 = 13;
    pub(crate) const DISCONNECT: u8 = 14;
    pub(crate) const AUTH: u8 = 15;
}

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

impl FixedHeader {
    /// Parses the fixed header at the front of `buf` without consuming anything.
    ///
    /// Returns `Ok(None)` while the header is incomplete. A remaining length whose variable
    /// byte integer runs past four bytes is malformed (MQTT 5.0 section 1.5.5).
    pub fn parse(buf: &[u8]) -> Result<Option<FixedHeader>, DecodeError> {
        let Some(&byte1) = buf.first() else {
            return Ok(None);
        };
        let mut remaining_len = 0usize;
        for i in 0..4 {
            let Some(&b) = buf.get(1 + i) else {
                return Ok(None);
            };
            remaining_len |= usize::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(Some(FixedHeader { byte1, remaining_len, header_len: 2 + i }));
            }
        }
        Err(DecodeError::MalformedPacket("remaining length longer than 4 bytes"))
    }

    /// The control packet type (high nibble of the first byte).
    pub fn packet_type(&self) -> u8 {
        self.byte1 >> 4
    }

    /// The flags (low nibble of the first byte).
    pub fn flags(&self) -> u8 {
        self.byte1 & 0x0F
    }

    /// Size of the whole packet: fixed header plus remaining length.
    pub fn total_len(&self) -> usize {
        self.header_len + self.remaining_len
    }
}

/// Decodes one whole packet from the front of `buf`, consuming it.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole packet (nothing consumed). A packet
/// whose total size exceeds `max_packet_size` is rejected from its fixed header alone, before
/// any of its body is buffered. A CONNECT is decoded by its own protocol name and level,
/// whatever `version` says; every other packet by `version`. After an error the buffer state is
/// unspecified: the connection is to be closed.
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_packet_size: usize,
) -> Result<Option<Packet>, DecodeError> {
    let Some(header) = FixedHeader::parse(buf)? else {
        return Ok(None);
    };
    // Garbage is refused at its first byte, without waiting for a body it announces.
    check_first_byte(header.byte1, version)?;
    let total = header.total_len();
    if total > max_packet_size {
        return Err(DecodeError::PacketTooLarge { size: total, max: max_packet_size });
    }
    if buf.len() < total {
        return Ok(None);
    }
    let mut frame = buf.split_to(total).freeze();
    frame.advance(header.header_len);
    // Tail calls returning this function's own type: no copy of the packet on the way out.
    if header.packet_type() == packet_type::CONNECT {
        decode_connect(frame).map(Some)
    } else if version.is_v5() {
        v5::decode(header.byte1, frame)
    } else {
        v4::decode(header.byte1, frame, version)
    }
}

/// Appends the encoding of `packet` for `version` to `out`.
///
/// A CONNECT is encoded for its own `protocol` when set, else for `version`. Properties a
/// packet type does not allow, and fields the version lacks, are left out. On error nothing is
/// written.
pub fn encode(packet: &Packet, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
    let version = packet_version(packet, version);
    let body = body_len(packet, version)?;
    if body > MAX_REMAINING_LEN {
        return Err(EncodeError::TooLarge(body));
    }
    out.reserve(1 + varint_len(body) + body);
    out.put_u8(first_byte(packet));
    write_varint(out, body);
    let start = out.len();
    if version.is_v5() {
        v5::write_body(packet, out);
    } else {
        v4::write_body(packet, version, out);
    }
    debug_assert_eq!(out.len() - start, body, "body length disagrees with its encoding");
    Ok(())
}

/// The number of bytes `encode` would write for `packet` (to honour a client's Maximum Packet
/// Size before sending). `usize::MAX` when `encode` would fail, so that such a packet never
/// passes a size check.
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> usize {
    match body_len(packet, packet_version(packet, version)) {
        Ok(body) if body <= MAX_REMAINING_LEN => 1 + varint_len(body) + body,
        _ => usize::MAX,
    }
}

fn packet_version(packet: &Packet, version: ProtocolVersion) -> ProtocolVersion {
    match packet {
        Packet::Connect(c) => c.protocol.unwrap_or(version),
        _ => version,
    }
}

fn body_len(packet: &Packet, version: ProtocolVersion) -> Result<usize, EncodeError> {
    if version.is_v5() { v5::body_len(packet) } else { v4::body_len(packet, version) }
}

/// Checks the packet type and the reserved flag bits of the first byte (MQTT 5.0 table 2-2).
fn check_first_byte(byte1: u8, version: ProtocolVersion) -> Result<(), DecodeError> {
    use packet_type::*;
    let flags = byte1 & 0x0F;
    match byte1 >> 4 {
        // Flags carry DUP, QoS and RETAIN; checked by `publish_flags`.
        PUBLISH => Ok(()),
        // [MQTT-3.6.1-1], [MQTT-3.8.1-1], [MQTT-3.10.1-1]: these three must be 0b0010. MQTT 3.1
        // gave them QoS 1 and let a retry set DUP, so level 3 also accepts 0b1010.
        PUBREL | SUBSCRIBE | UNSUBSCRIBE => {
            if flags == 0b0010 || (version == ProtocolVersion::V3 && flags == 0b1010) {
                Ok(())
            } else {
                Err(DecodeError::MalformedPacket("reserved fixed header flags must be 0b0010"))
            }
        }
        AUTH if !version.is_v5() => Err(DecodeError::MalformedPacket("AUTH before MQTT 5.0")),
        CONNECT | CONNACK | PUBACK | PUBREC | PUBCOMP | SUBACK | UNSUBACK | PINGREQ | PINGRESP | DISCONNECT | AUTH => {
            if flags == 0 {
                Ok(())
            } else {
                // MQTT 5.0 section 2.1.3: reserved flags must be as listed, else malformed.
                Err(DecodeError::MalformedPacket("reserved fixed header flags must be 0"))
            }
        }
        _ => Err(DecodeError::MalformedPacket("reserved packet type 0")),
    }
}

/// The first fixed-header byte of `packet`: type and flags.
fn first_byte(packet: &Packet) -> u8 {
    use packet_type::*;
    let (kind, flags) = match packet {
        Packet::Connect(_) => (CONNECT, 0),
        Packet::ConnAck(_) => (CONNACK, 0),
        Packet::Publish(p) => (PUBLISH, (u8::from(p.dup) << 3) | ((p.qos as u8) << 1) | u8::from(p.retain)),
        Packet::PubAck(_) => (PUBACK, 0),
        Packet::PubRec(_) => (PUBREC, 0),
        Packet::PubRel(_) => (PUBREL, 0b0010),
        Packet::PubComp(_) => (PUBCOMP, 0),
        Packet::Subscribe(_) => (SUBSCRIBE, 0b0010),
        Packet::SubAck(_) => (SUBACK, 0),
        Packet::Unsubscribe(_) => (UNSUBSCRIBE, 0b0010),
        Packet::UnsubAck(_) => (UNSUBACK, 0),
        Packet::PingReq => (PINGREQ, 0),
        Packet::PingResp => (PINGRESP, 0),
        Packet::Disconnect(_) => (DISCONNECT, 0),
        Packet::Auth(_) => (AUTH, 0),
    };
    (kind << 4) | flags
}

/// Decodes a CONNECT body by its own protocol name and level (MQTT 5.0 section 3.1.2.1-2,
/// 3.1.1 section 3.1.2.1-2; MQTT 3.1 uses `MQIsdp` level 3).
fn decode_connect(mut body: Bytes) -> Result<Packet, DecodeError> {
    let name = read_binary(&mut body)?;
    let level = read_u8(&mut body)?;
    let protocol = match (&name[..], level) {
        (b"MQIsdp", 3) => ProtocolVersion::V3,
        (b"MQTT", 4) => ProtocolVersion::V4,
        (b"MQTT", 5) => ProtocolVersion::V5,
        (b"MQIsdp" | b"MQTT", _) => return Err(DecodeError::UnsupportedProtocolVersion(level)),
        // [MQTT-3.1.2-1]: any other name is not MQTT; the server may close without CONNACK.
        _ => return Err(DecodeError::InvalidProtocolName),
    };
    let connect = match protocol {
        ProtocolVersion::V5 => v5::read_connect(body)?,
        _ => v4::read_connect(protocol, body)?,
    };
    Ok(Packet::Connect(Box::new(connect)))
}

/// The protocol name and level that open a CONNECT body for `protocol`.
pub(crate) fn protocol_header(protocol: ProtocolVersion) -> (&'static str, u8) {
    match protocol {
        ProtocolVersion::V3 => ("MQIsdp", 3),
        ProtocolVersion::V4 => ("MQTT", 4),
        ProtocolVersion::V5 => ("MQTT", 5),
    }
}

/// CONNECT flags (MQTT 5.0 section 3.1.2.3, 3.1.1 section 3.1.2.3), common to every level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnectFlags {
    pub(crate) clean_start: bool,
    /// Will QoS and retain, when the will flag is set.
    pub(crate) will: Option<(QoS, bool)>,
    pub(crate) username: bool,
    pub(crate) password: bool,
}

impl ConnectFlags {
    pub(crate) fn parse(byte: u8) -> Result<ConnectFlags, DecodeError> {
        if byte & 0x01 != 0 {
            // [MQTT-3.1.2-3]: the reserved flag must be 0, else malformed.
            return Err(DecodeError::MalformedPacket("CONNECT reserved flag set"));
        }
        let will_flag = byte & 0x04 != 0;
        let will_qos = (byte >> 3) & 0x03;
        let will_retain = byte & 0x20 != 0;
        let will = if will_flag {
            // [MQTT-3.1.2-12], [MQTT-3.1.2-14]: will QoS 0, 1 or 2; 3 is malformed.
            let qos = QoS::from_u8(will_qos).ok_or(DecodeError::MalformedPacket("will QoS 3"))?;
            Some((qos, will_retain))
        } else if will_qos != 0 || will_retain {
            // [MQTT-3.1.2-11], [MQTT-3.1.2-13], [MQTT-3.1.2-15]: without a will, will QoS and
            // will retain must be 0.
            return Err(DecodeError::MalformedPacket("will QoS or retain without will flag"));
        } else {
            None
        };
        Ok(ConnectFlags { clean_start: byte & 0x02 != 0, will, username: byte & 0x80 != 0, password: byte & 0x40 != 0 })
    }

    pub(crate) fn of(connect: &super::Connect) -> ConnectFlags {
        ConnectFlags {
            clean_start: connect.clean_start,
            will: connect.will.as_ref().map(|w| (w.qos, w.retain)),
            username: connect.username.is_some(),
            password: connect.password.is_some(),
        }
    }

    pub(crate) fn byte(self) -> u8 {
        let mut b = u8::from(self.clean_start) << 1;
        if let Some((qos, retain)) = self.will {
            b |= 0x04 | ((qos as u8) << 3) | (u8::from(retain) << 5);
        }
        b | (u8::from(self.password) << 6) | (u8::from(self.username) << 7)
    }
}

/// DUP, QoS and RETAIN from the PUBLISH fixed-header flags.
pub(crate) fn publish_flags(flags: u8) -> Result<(bool, QoS, bool), DecodeError> {
    // [MQTT-3.3.1-4]: QoS 3 is malformed.
    let qos = QoS::from_u8((flags >> 1) & 0x03).ok_or(DecodeError::MalformedPacket("PUBLISH with QoS 3"))?;
    let dup = flags & 0x08 != 0;
    if dup && qos == QoS::AtMostOnce {
        // [MQTT-3.3.1-2]: DUP must be 0 for QoS 0.
        return Err(DecodeError::MalformedPacket("PUBLISH with DUP and QoS 0"));
    }
    Ok((dup, qos, flags & 0x01 != 0))
}

/// Checks the packet-level invariants of a PUBLISH before encoding it, so that the encoding
/// decodes back: packet id present and non-zero iff QoS > 0, no DUP at QoS 0.
pub(crate) fn check_publish(p: &super::Publish) -> Result<(), EncodeError> {
    match (p.qos, p.packet_id) {
        (QoS::AtMostOnce, Some(_)) => Err(EncodeError::Invalid("packet id on a QoS 0 publish")),
        (QoS::AtMostOnce, None) if p.dup => Err(EncodeError::Invalid("DUP on a QoS 0 publish")),
        (QoS::AtMostOnce, None) => Ok(()),
        (_, Some(PacketId(0)) | None) => Err(EncodeError::Invalid("QoS > 0 publish needs a non-zero packet id")),
        (_, Some(_)) => Ok(()),
    }
}

const TRUNCATED: DecodeError = DecodeError::MalformedPacket("field runs past the end of the packet");

pub(crate) fn read_u8(buf: &mut Bytes) -> Result<u8, DecodeError> {
    if buf.is_empty() {
        return Err(TRUNCATED);
    }
    Ok(buf.get_u8())
}

pub(crate) fn read_u16(buf: &mut Bytes) -> Result<u16, DecodeError> {
    if buf.len() < 2 {
        return Err(TRUNCATED);
    }
    Ok(buf.get_u16())
}

pub(crate) fn read_u32(buf: &mut Bytes) -> Result<u32, DecodeError> {
    if buf.len() < 4 {
        return Err(TRUNCATED);
    }
    Ok(buf.get_u32())
}

/// A variable byte integer of at most four bytes (MQTT 5.0 section 1.5.5).
pub(crate) fn read_varint(buf: &mut Bytes) -> Result<u32, DecodeError> {
    let mut value = 0u32;
    for i in 0..4 {
        let b = read_u8(buf)?;
        value |= u32::from(b & 0x7F) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DecodeError::MalformedPacket("variable byte integer longer than 4 bytes"))
}

/// Binary data: a two-byte length and that many bytes, as a zero-copy slice of the frame.
pub(crate) fn read_binary(buf: &mut Bytes) -> Result<Bytes, DecodeError> {
    let len = usize::from(read_u16(buf)?);
    if buf.len() < len {
        return Err(TRUNCATED);
    }
    Ok(buf.split_to(len))
}

/// A UTF-8 encoded string (MQTT 5.0 section 1.5.4): well formed, no surrogates
/// [MQTT-1.5.4-1] (Rust's validator rejects them), and no U+0000 [MQTT-1.5.4-2]. Validated
/// once, copied once into the returned `String`.
pub(crate) fn read_string(buf: &mut Bytes) -> Result<String, DecodeError> {
    read_checked_string(buf).map(|(s, _)| s)
}

/// A topic name: a string without wildcards [MQTT-3.3.2-2]; empty only where a topic alias
/// stands in for it (MQTT 5.0 section 3.3.2.1), otherwise at least one character
/// [MQTT-4.7.3-1].
pub(crate) fn read_topic_name(buf: &mut Bytes, allow_empty: bool) -> Result<Arc<str>, DecodeError> {
    let (topic, found) = read_checked(buf, |s| Arc::<str>::from(s))?;
    if (topic.is_empty() && !allow_empty) || found & HAS_WILDCARD != 0 {
        return Err(DecodeError::TopicNameInvalid);
    }
    Ok(topic)
}

/// Reads a string, refuses bad UTF-8 and U+0000, and reports whether it holds wildcards.
fn read_checked_string(buf: &mut Bytes) -> Result<(String, u8), DecodeError> {
    read_checked(buf, str::to_owned)
}

/// [`read_checked_string`] into any owned form, so that a topic goes straight into its shared
/// `Arc<str>` with one allocation.
fn read_checked<T>(buf: &mut Bytes, own: impl FnOnce(&str) -> T) -> Result<(T, u8), DecodeError> {
    let len = usize::from(read_u16(buf)?);
    let Some(raw) = buf.get(..len) else {
        return Err(TRUNCATED);
    };
    let s = std::str::from_utf8(raw).map_err(|_| DecodeError::MalformedPacket("string is not well-formed UTF-8"))?;
    let found = scan(raw);
    if found & HAS_NUL != 0 {
        return Err(DecodeError::MalformedPacket("string contains U+0000"));
    }
    let owned = own(s);
    buf.advance(len);
    Ok((owned, found))
}

/// [`scan`] found U+0000.
const HAS_NUL: u8 = 1;
/// [`scan`] found `+` or `#`.
const HAS_WILDCARD: u8 = 2;

/// Which of U+0000 and the wildcards `+`, `#` occur in `raw`, eight bytes at a time: a byte
/// search per character cost more than the UTF-8 validation on typical topics.
fn scan(raw: &[u8]) -> u8 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // Non-zero iff some byte of `v` is zero (exact as a yes/no answer; Hacker's Delight 6-1).
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let (words, tail) = raw.as_chunks::<8>();
    let (mut nul, mut wild) = (0u64, 0u64);
    for word in words {
        let w = u64::from_le_bytes(*word);
        nul |= zero_byte(w);
        wild |= zero_byte(w ^ (ONES * u64::from(b'+'))) | zero_byte(w ^ (ONES * u64::from(b'#')));
    }
    let mut found = u8::from(nul != 0) | (u8::from(wild != 0) << 1);
    for &b in tail {
        found |= u8::from(b == 0) | (u8::from(b == b'+' || b == b'#') << 1);
    }
    found
}

/// True if `topic` contains `+` or `#`, which topic names must not [MQTT-3.3.2-2].
pub(crate) fn has_wildcard(topic: &str) -> bool {
    scan(topic.as_bytes()) & HAS_WILDCARD != 0
}

pub(crate) fn read_packet_id(buf: &mut Bytes) -> Result<PacketId, DecodeError> {
    read_u16(buf).map(PacketId)
}

/// A packet id that must be non-zero: PUBLISH at QoS > 0, SUBSCRIBE, UNSUBSCRIBE
/// ([MQTT-2.2.1-3] in 5.0, [MQTT-2.3.1-1] in 3.1.1).
pub(crate) fn read_nonzero_packet_id(buf: &mut Bytes) -> Result<PacketId, DecodeError> {
    match read_u16(buf)? {
        0 => Err(DecodeError::ProtocolError("packet identifier 0")),
        id => Ok(PacketId(id)),
    }
}

/// Fails if a frame has bytes left after its last field.
pub(crate) fn expect_end(buf: &Bytes) -> Result<(), DecodeError> {
    if buf.is_empty() { Ok(()) } else { Err(DecodeError::MalformedPacket("trailing bytes after the last field")) }
}

/// Encoded size of a variable byte integer.
pub(crate) fn varint_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes a variable byte integer; `value` must be at most [`MAX_REMAINING_LEN`].
pub(crate) fn write_varint(out: &mut BytesMut, mut value: usize) {
    debug_assert!(value <= MAX_REMAINING_LEN);
    loop {
        let mut b = (value & 0x7F) as u8;
        value >>= 7;
        if value > 0 {
            b |= 0x80;
        }
        out.put_u8(b);
        if value == 0 {
            return;
        }
    }
}

/// Encoded size of a string or binary field, or `FieldTooLong` past 65,535 bytes.
pub(crate) fn field_len(bytes: &[u8]) -> Result<usize, EncodeError> {
    if bytes.len() > usize::from(u16::MAX) {
        return Err(EncodeError::FieldTooLong(bytes.len()));
    }
    Ok(2 + bytes.len())
}

/// Writes a string or binary field whose length `field_len` accepted.
pub(crate) fn write_field(out: &mut BytesMut, bytes: &[u8]) {
    debug_assert!(bytes.len() <= usize::from(u16::MAX));
    out.put_u16(bytes.len() as u16);
    out.put_slice(bytes);
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PubResp, Publish};

    #[test]
    fn fixed_header_needs_every_length_byte() {
        assert_eq!(FixedHeader::parse(&[]), Ok(None));
        assert_eq!(FixedHeader::parse(&[0x30]), Ok(None));
        assert_eq!(FixedHeader::parse(&[0x30, 0x80, 0x80]), Ok(None));
        assert_eq!(
            FixedHeader::parse(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F]),
            Ok(Some(FixedHeader { byte1: 0x30, remaining_len: MAX_REMAINING_LEN, header_len: 5 }))
        );
    }

    #[test]
    fn remaining_length_of_five_bytes_is_malformed() {
        let mut buf = BytesMut::from(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01][..]);
        assert!(matches!(decode(&mut buf, ProtocolVersion::V4, usize::MAX), Err(DecodeError::MalformedPacket(_))));
    }

    #[test]
    fn oversize_packet_is_rejected_from_its_header_alone() {
        // PUBLISH announcing 268,435,455 bytes; only the 5 header bytes have arrived.
        let mut buf = BytesMut::from(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F][..]);
        assert_eq!(
            decode(&mut buf, ProtocolVersion::V5, 1024),
            Err(DecodeError::PacketTooLarge { size: MAX_REMAINING_LEN + 5, max: 1024 })
        );
        // Two header bytes, 127 + 2 = 129 > 128.
        let mut buf = BytesMut::from(&[0x30, 0x7F][..]);
        assert_eq!(
            decode(&mut buf, ProtocolVersion::V4, 128),
            Err(DecodeError::PacketTooLarge { size: 129, max: 128 })
        );
    }

    #[test]
    fn packet_of_exactly_the_maximum_size_is_accepted() {
        let mut buf = BytesMut::from(&[0xC0, 0x00][..]);
        assert_eq!(decode(&mut buf, ProtocolVersion::V4, 2), Ok(Some(Packet::PingReq)));
    }

    #[test]
    fn incomplete_packet_consumes_nothing() {
        let mut buf = BytesMut::from(&[0x40, 0x02, 0x00][..]);
        assert_eq!(decode(&mut buf, ProtocolVersion::V4, usize::MAX), Ok(None));
        assert_eq!(buf.len(), 3);
        buf.put_u8(0x07);
        assert_eq!(
            decode(&mut buf, ProtocolVersion::V4, usize::MAX),
            Ok(Some(Packet::PubAck(PubResp { packet_id: PacketId(7), ..Default::default() })))
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn back_to_back_packets_decode_one_at_a_time() {
        let mut buf = BytesMut::from(&[0xC0, 0x00, 0xD0, 0x00, 0xC0][..]);
        let v = ProtocolVersion::V4;
        assert_eq!(decode(&mut buf, v, 100), Ok(Some(Packet::PingReq)));
        assert_eq!(decode(&mut buf, v, 100), Ok(Some(Packet::PingResp)));
        assert_eq!(decode(&mut buf, v, 100), Ok(None));
        assert_eq!(&buf[..], &[0xC0]);
    }

    #[test]
    fn reserved_packet_type_0_is_malformed() {
        let mut buf = BytesMut::from(&[0x00, 0x00][..]);
        assert!(matches!(decode(&mut buf, ProtocolVersion::V5, 100), Err(DecodeError::MalformedPacket(_))));
    }

    #[test]
    fn reserved_flags_are_checked_before_the_body_arrives() {
        // [MQTT-3.6.1-1] PUBREL with flags 0, body not yet received.
        let mut buf = BytesMut::from(&[0x60, 0x02][..]);
        assert!(matches!(decode(&mut buf, ProtocolVersion::V4, 100), Err(DecodeError::MalformedPacket(_))));
        // [MQTT-3.8.1-1] SUBSCRIBE with flags 0.
        let mut buf = BytesMut::from(&[0x80, 0x05][..]);
        assert!(decode(&mut buf, ProtocolVersion::V5, 100).is_err());
        // [MQTT-3.10.1-1] UNSUBSCRIBE with flags 0b0011.
        let mut buf = BytesMut::from(&[0xA3, 0x05][..]);
        assert!(decode(&mut buf, ProtocolVersion::V4, 100).is_err());
        // PINGREQ with a flag set.
        let mut buf = BytesMut::from(&[0xC1, 0x00][..]);
        assert!(decode(&mut buf, ProtocolVersion::V4, 100).is_err());
    }

    #[test]
    fn mqtt31_accepts_dup_on_pubrel() {
        // MQTT 3.1 section 3.6: PUBREL has QoS 1 and a retry may set DUP.
        let bytes = [0x6A, 0x02, 0x00, 0x01];
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(
            decode(&mut buf, ProtocolVersion::V3, 100),
            Ok(Some(Packet::PubRel(PubResp { packet_id: PacketId(1), ..Default::default() })))
        );
        let mut buf = BytesMut::from(&bytes[..]);
        assert!(decode(&mut buf, ProtocolVersion::V4, 100).is_err());
    }

    #[test]
    fn auth_does_not_exist_before_mqtt5() {
        let mut buf = BytesMut::from(&[0xF0, 0x00][..]);
        assert!(matches!(decode(&mut buf, ProtocolVersion::V4, 100), Err(DecodeError::MalformedPacket(_))));
        let mut out = BytesMut::new();
        let auth = Packet::Auth(Default::default());
        assert_eq!(encode(&auth, ProtocolVersion::V4, &mut out), Err(EncodeError::NotInVersion));
        assert_eq!(encode(&auth, ProtocolVersion::V3, &mut out), Err(EncodeError::NotInVersion));
        assert!(out.is_empty());
        assert_eq!(encoded_len(&auth, ProtocolVersion::V4), usize::MAX);
    }

    #[test]
    fn varint_round_trips_at_every_length_boundary() {
        for v in [0, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, MAX_REMAINING_LEN] {
            let mut out = BytesMut::new();
            write_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v));
            let mut b = out.freeze();
            assert_eq!(read_varint(&mut b).map(|x| x as usize), Ok(v));
            assert!(b.is_empty());
        }
    }

    #[test]
    fn nul_and_wildcards_are_found_in_every_position() {
        // Covers both the eight-byte words and the tail of `scan`.
        for len in 1..=24 {
            for at in 0..len {
                for (byte, bit) in [(0, HAS_NUL), (b'+', HAS_WILDCARD), (b'#', HAS_WILDCARD)] {
                    let mut raw = vec![b'a'; len];
                    raw[at] = byte;
                    assert_eq!(scan(&raw), bit, "{byte:#x} at {at} of {len}");
                }
            }
            assert_eq!(scan(&vec![0x80; len]), 0, "high bytes are not NUL");
        }
    }

    #[test]
    fn string_with_nul_is_malformed() {
        // [MQTT-1.5.4-2]: U+0000 is not allowed in a UTF-8 encoded string.
        let mut b = Bytes::from_static(&[0x00, 0x03, b'a', 0x00, b'b']);
        assert!(matches!(read_string(&mut b), Err(DecodeError::MalformedPacket(_))));
    }

    #[test]
    fn string_with_invalid_utf8_is_malformed() {
        // [MQTT-1.5.4-1]: an encoded surrogate (U+D800) and a lone continuation byte.
        let mut b = Bytes::from_static(&[0x00, 0x03, 0xED, 0xA0, 0x80]);
        assert!(matches!(read_string(&mut b), Err(DecodeError::MalformedPacket(_))));
        let mut b = Bytes::from_static(&[0x00, 0x01, 0x80]);
        assert!(matches!(read_string(&mut b), Err(DecodeError::MalformedPacket(_))));
    }

    #[test]
    fn length_prefix_past_the_frame_is_malformed() {
        let mut b = Bytes::from_static(&[0x00, 0x05, b'a']);
        assert!(matches!(read_string(&mut b), Err(DecodeError::MalformedPacket(_))));
        let mut b = Bytes::from_static(&[0xFF, 0xFF]);
        assert!(matches!(read_binary(&mut b), Err(DecodeError::MalformedPacket(_))));
        let mut b = Bytes::from_static(&[0x00]);
        assert!(matches!(read_u16(&mut b), Err(DecodeError::MalformedPacket(_))));
    }

    #[test]
    fn encode_refuses_oversize_fields_and_writes_nothing() {
        let p = Packet::Publish(Publish { topic: "a".repeat(70_000).into(), ..Default::default() });
        let mut out = BytesMut::new();
        assert_eq!(encode(&p, ProtocolVersion::V4, &mut out), Err(EncodeError::FieldTooLong(70_000)));
        assert!(out.is_empty());
    }

    #[test]
    fn encode_refuses_a_packet_past_the_maximum_remaining_length() {
        let p = Packet::Publish(Publish {
            topic: "t".into(),
            payload: Bytes::from(vec![0u8; MAX_REMAINING_LEN]),
            ..Default::default()
        });
        let mut out = BytesMut::new();
        assert!(matches!(encode(&p, ProtocolVersion::V4, &mut out), Err(EncodeError::TooLarge(_))));
        assert_eq!(encoded_len(&p, ProtocolVersion::V4), usize::MAX);
    }

    #[test]
    fn encode_refuses_publish_with_inconsistent_packet_id() {
        let mut out = BytesMut::new();
        for p in [
            Publish { qos: QoS::AtLeastOnce, topic: "t".into(), ..Default::default() },
            Publish { qos: QoS::ExactlyOnce, packet_id: Some(PacketId(0)), topic: "t".into(), ..Default::default() },
            Publish { packet_id: Some(PacketId(1)), topic: "t".into(), ..Default::default() },
            Publish { dup: true, topic: "t".into(), ..Default::default() },
        ] {
            assert!(matches!(encode(&Packet::Publish(p), ProtocolVersion::V5, &mut out), Err(EncodeError::Invalid(_))));
        }
        assert!(out.is_empty());
    }
}
