//! The client side of MQTT 3.1.1 and 5.0 framing, written for load generation.
//!
//! Encoders append straight into a caller-owned [`BytesMut`] so that many frames go out in one
//! `write`; the decoder borrows topic and payload from the read buffer, so a received PUBLISH
//! costs no allocation. Only the packets a client sends or receives are covered; the broker's
//! full codec lives in `node/mqtt/` (`vmq-mqtt`), which this crate deliberately does not link.

use bytes::{BufMut, BytesMut};
use thiserror::Error;

/// Protocol level sent in CONNECT: 4 is MQTT 3.1.1, 5 is MQTT 5.0 ([MQTT-3.1.2-1]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ProtocolVersion {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5.0 (protocol level 5).
    V5,
}

impl ProtocolVersion {
    /// Parses the number users type on the command line (`3`, `4`, `311` or `5`).
    pub fn from_level(level: u8) -> Option<Self> {
        match level {
            3 | 4 => Some(Self::V311),
            5 => Some(Self::V5),
            _ => None,
        }
    }

    fn level(self) -> u8 {
        match self {
            Self::V311 => 4,
            Self::V5 => 5,
        }
    }
}

/// Quality of service of a PUBLISH or subscription ([MQTT-3.3.1-4]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum QoS {
    /// QoS 0.
    AtMostOnce,
    /// QoS 1.
    AtLeastOnce,
    /// QoS 2.
    ExactlyOnce,
}

impl QoS {
    /// The QoS with the given number, if it is 0, 1 or 2.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::AtMostOnce),
            1 => Some(Self::AtLeastOnce),
            2 => Some(Self::ExactlyOnce),
            _ => None,
        }
    }

    /// The number on the wire.
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

/// MQTT packet identifier ([MQTT-2.3.1-1]); never zero on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PacketId(pub u16);

/// The fields of a CONNECT this client sends.
#[derive(Debug, Clone)]
pub struct Connect<'a> {
    /// Client identifier.
    pub client_id: &'a str,
    /// Clean session (3.1.1) / clean start (5.0).
    pub clean_start: bool,
    /// Keep alive in seconds; 0 disables it ([MQTT-3.1.2-22]).
    pub keep_alive: u16,
    /// MQTT 5 Session Expiry Interval in seconds; ignored for 3.1.1, where `clean_start = false`
    /// already means a persistent session.
    pub session_expiry: u32,
}

/// A decoded packet that borrows from the read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// CONNACK: session present flag and return/reason code.
    ConnAck {
        /// Session present ([MQTT-3.2.2-2]).
        session_present: bool,
        /// 0 is success in both versions.
        code: u8,
        /// MQTT 5 Receive Maximum property (0x21), if the broker sent one.
        receive_maximum: Option<u16>,
    },
    /// PUBLISH from the broker.
    Publish {
        /// DUP flag: a redelivery.
        dup: bool,
        /// RETAIN flag: on a delivery, the message came from the retained store ([MQTT-3.3.1-8]).
        retain: bool,
        /// Delivery QoS.
        qos: QoS,
        /// Topic name bytes.
        topic: &'a [u8],
        /// Present for QoS 1 and 2.
        packet_id: Option<PacketId>,
        /// Application payload.
        payload: &'a [u8],
    },
    /// PUBACK (QoS 1 done).
    PubAck(PacketId),
    /// PUBREC (QoS 2 step 1).
    PubRec(PacketId),
    /// PUBREL (QoS 2 step 2).
    PubRel(PacketId),
    /// PUBCOMP (QoS 2 done).
    PubComp(PacketId),
    /// SUBACK with one return code per filter.
    SubAck {
        /// The SUBSCRIBE's packet id.
        packet_id: PacketId,
        /// Granted QoS, or >= 0x80 for failure.
        codes: &'a [u8],
    },
    /// UNSUBACK.
    UnsubAck(PacketId),
    /// PINGRESP.
    PingResp,
    /// DISCONNECT sent by an MQTT 5 broker, with its reason code.
    Disconnect(u8),
}

/// Why a frame from the broker could not be decoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The remaining length varint has more than four bytes ([MQTT-1.5.5]).
    #[error("malformed remaining length")]
    BadRemainingLength,
    /// A frame is larger than the limit the caller accepts.
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// A field runs past the end of its frame.
    #[error("truncated {0} packet")]
    Truncated(&'static str),
    /// A packet type a broker never sends to a client.
    #[error("unexpected packet type {0:#x}")]
    UnexpectedType(u8),
    /// A QoS value of 3 ([MQTT-3.3.1-4]).
    #[error("invalid QoS 3 in PUBLISH")]
    BadQoS,
}

/// Frames larger than this are rejected at the header, before any buffering.
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

fn put_varint(buf: &mut BytesMut, mut v: usize) {
    loop {
        let mut byte = (v % 128) as u8;
        v /= 128;
        if v > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if v == 0 {
            break;
        }
    }
}

fn varint_len(v: usize) -> usize {
    match v {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Reads a variable byte integer; `Ok(None)` when more bytes are needed.
fn read_varint(buf: &[u8]) -> Result<Option<(usize, usize)>, DecodeError> {
    let mut value = 0usize;
    for i in 0..4 {
        let Some(&b) = buf.get(i) else {
            return Ok(None);
        };
        value += usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    Err(DecodeError::BadRemainingLength)
}

fn put_str(buf: &mut BytesMut, s: &[u8]) {
    // Callers pass topics and client ids they built themselves, all far below 64 KiB.
    buf.put_u16(s.len() as u16);
    buf.put_slice(s);
}

/// Appends a CONNECT ([MQTT-3.1]).
pub fn encode_connect(buf: &mut BytesMut, version: ProtocolVersion, c: &Connect<'_>) {
    let props: &[u8] = &[];
    let mut expiry = [0u8; 5];
    let props = if version == ProtocolVersion::V5 && c.session_expiry > 0 {
        expiry[0] = 0x11;
        expiry[1..].copy_from_slice(&c.session_expiry.to_be_bytes());
        &expiry[..]
    } else {
        props
    };
    let mut len = 2 + 4 + 1 + 1 + 2 + 2 + c.client_id.len();
    if version == ProtocolVersion::V5 {
        len += 1 + props.len();
    }
    buf.put_u8(0x10);
    put_varint(buf, len);
    put_str(buf, b"MQTT");
    buf.put_u8(version.level());
    buf.put_u8(if c.clean_start { 0x02 } else { 0x00 });
    buf.put_u16(c.keep_alive);
    if version == ProtocolVersion::V5 {
        buf.put_u8(props.len() as u8);
        buf.put_slice(props);
    }
    put_str(buf, c.client_id.as_bytes());
}

/// Appends a SUBSCRIBE for one filter ([MQTT-3.8]).
pub fn encode_subscribe(buf: &mut BytesMut, version: ProtocolVersion, id: PacketId, filter: &str, qos: QoS) {
    let v5 = usize::from(version == ProtocolVersion::V5);
    buf.put_u8(0x82);
    put_varint(buf, 2 + v5 + 2 + filter.len() + 1);
    buf.put_u16(id.0);
    if v5 == 1 {
        buf.put_u8(0);
    }
    put_str(buf, filter.as_bytes());
    buf.put_u8(qos.as_u8());
}

/// Appends a PUBLISH whose payload is `header` followed by zero bytes up to `payload_len`
/// ([MQTT-3.3]). Writing the padding in place avoids building the payload anywhere else.
pub fn encode_publish(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    qos: QoS,
    id: Option<PacketId>,
    topic: &[u8],
    header: &[u8],
    payload_len: usize,
) {
    let payload_len = payload_len.max(header.len());
    let id_len = if qos == QoS::AtMostOnce { 0 } else { 2 };
    let props = usize::from(version == ProtocolVersion::V5);
    let len = 2 + topic.len() + id_len + props + payload_len;
    buf.reserve(1 + varint_len(len) + len);
    buf.put_u8(0x30 | (qos.as_u8() << 1));
    put_varint(buf, len);
    put_str(buf, topic);
    if let Some(id) = id.filter(|_| qos != QoS::AtMostOnce) {
        buf.put_u16(id.0);
    }
    if props == 1 {
        buf.put_u8(0);
    }
    buf.put_slice(header);
    buf.put_bytes(0, payload_len - header.len());
}

/// Appends a PUBLISH with the given payload and RETAIN flag ([MQTT-3.3.1-5]); an empty
/// retained payload clears the topic's retained message ([MQTT-3.3.1-10]).
pub fn encode_publish_retain(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    qos: QoS,
    id: Option<PacketId>,
    topic: &[u8],
    payload: &[u8],
    retain: bool,
) {
    let at = buf.len();
    encode_publish(buf, version, qos, id, topic, payload, payload.len());
    if retain {
        buf[at] |= 0x01;
    }
}

/// Appends an UNSUBSCRIBE for one filter ([MQTT-3.10]).
pub fn encode_unsubscribe(buf: &mut BytesMut, version: ProtocolVersion, id: PacketId, filter: &str) {
    let v5 = usize::from(version == ProtocolVersion::V5);
    buf.put_u8(0xa2);
    put_varint(buf, 2 + v5 + 2 + filter.len());
    buf.put_u16(id.0);
    if v5 == 1 {
        buf.put_u8(0);
    }
    put_str(buf, filter.as_bytes());
}

/// The four two-byte acknowledgements of the QoS flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// PUBACK.
    PubAck,
    /// PUBREC.
    PubRec,
    /// PUBREL (fixed header flags 0b0010, [MQTT-3.6.1-1]).
    PubRel,
    /// PUBCOMP.
    PubComp,
}

/// Appends an acknowledgement. The MQTT 5 short form (no reason code, meaning success) is
/// allowed by [MQTT-3.4.2.1], so both versions encode the same four bytes.
pub fn encode_ack(buf: &mut BytesMut, ack: Ack, id: PacketId) {
    let first = match ack {
        Ack::PubAck => 0x40,
        Ack::PubRec => 0x50,
        Ack::PubRel => 0x62,
        Ack::PubComp => 0x70,
    };
    buf.put_u8(first);
    buf.put_u8(2);
    buf.put_u16(id.0);
}

/// Appends a PINGREQ.
pub fn encode_pingreq(buf: &mut BytesMut) {
    buf.put_slice(&[0xc0, 0x00]);
}

/// Appends a DISCONNECT (normal disconnection in both versions).
pub fn encode_disconnect(buf: &mut BytesMut) {
    buf.put_slice(&[0xe0, 0x00]);
}

fn u16_at(b: &[u8], at: usize, what: &'static str) -> Result<u16, DecodeError> {
    match b.get(at..at + 2) {
        Some(s) => Ok(u16::from_be_bytes([s[0], s[1]])),
        None => Err(DecodeError::Truncated(what)),
    }
}

/// Skips an MQTT 5 property block at `at`, returning the offset after it.
fn skip_props(b: &[u8], at: usize, what: &'static str) -> Result<usize, DecodeError> {
    let rest = b.get(at..).ok_or(DecodeError::Truncated(what))?;
    let (len, n) = read_varint(rest)?.ok_or(DecodeError::Truncated(what))?;
    let end = at + n + len;
    if end > b.len() {
        return Err(DecodeError::Truncated(what));
    }
    Ok(end)
}

/// Finds Receive Maximum (0x21) among a v5 CONNACK's properties, skipping the others by their
/// types' lengths ([MQTT-2.2.2]).
fn connack_receive_maximum(body: &[u8]) -> Result<Option<u16>, DecodeError> {
    const T: &str = "CONNACK";
    if body.len() == 2 {
        return Ok(None);
    }
    let (len, n) = read_varint(&body[2..])?.ok_or(DecodeError::Truncated(T))?;
    let props = body.get(2 + n..2 + n + len).ok_or(DecodeError::Truncated(T))?;
    let mut at = 0;
    while at < props.len() {
        let id = props[at];
        at += 1;
        let skip = match id {
            0x21 => return Ok(Some(u16_at(props, at, T)?)),
            // byte properties
            0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2a => 1,
            // two-byte integers
            0x13 | 0x22 | 0x23 => 2,
            // four-byte integers
            0x02 | 0x11 | 0x18 | 0x27 => 4,
            // variable byte integer
            0x0b => read_varint(&props[at..])?.ok_or(DecodeError::Truncated(T))?.1,
            // UTF-8 strings and binary data
            0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x16 | 0x1a | 0x1c | 0x1f => 2 + usize::from(u16_at(props, at, T)?),
            // user property: a string pair
            0x26 => {
                let k = 2 + usize::from(u16_at(props, at, T)?);
                k + 2 + usize::from(u16_at(props, at + k, T)?)
            }
            _ => return Err(DecodeError::Truncated(T)),
        };
        at += skip;
    }
    Ok(None)
}

/// Decodes one whole frame from the front of `buf`.
///
/// Returns `Ok(None)` when `buf` holds only part of a frame, else the packet and the number of
/// bytes it used; the caller advances its buffer by that much once done with the borrow.
pub fn decode(buf: &[u8], version: ProtocolVersion) -> Result<Option<(Packet<'_>, usize)>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let Some((len, n)) = read_varint(&buf[1..])? else {
        return Ok(None);
    };
    if len > MAX_FRAME {
        return Err(DecodeError::TooLarge(len));
    }
    let total = 1 + n + len;
    let Some(body) = buf.get(1 + n..total) else {
        return Ok(None);
    };
    let v5 = version == ProtocolVersion::V5;
    let packet = match first >> 4 {
        2 => {
            if body.len() < 2 {
                return Err(DecodeError::Truncated("CONNACK"));
            }
            let receive_maximum = if v5 { connack_receive_maximum(body)? } else { None };
            Packet::ConnAck { session_present: body[0] & 1 == 1, code: body[1], receive_maximum }
        }
        3 => {
            let qos = QoS::from_u8((first >> 1) & 3).ok_or(DecodeError::BadQoS)?;
            let tlen = usize::from(u16_at(body, 0, "PUBLISH")?);
            let topic = body.get(2..2 + tlen).ok_or(DecodeError::Truncated("PUBLISH"))?;
            let mut at = 2 + tlen;
            let packet_id = if qos == QoS::AtMostOnce {
                None
            } else {
                at += 2;
                Some(PacketId(u16_at(body, at - 2, "PUBLISH")?))
            };
            if v5 {
                at = skip_props(body, at, "PUBLISH")?;
            }
            let payload = body.get(at..).ok_or(DecodeError::Truncated("PUBLISH"))?;
            Packet::Publish { dup: first & 0x08 != 0, retain: first & 0x01 != 0, qos, topic, packet_id, payload }
        }
        4 => Packet::PubAck(PacketId(u16_at(body, 0, "PUBACK")?)),
        5 => Packet::PubRec(PacketId(u16_at(body, 0, "PUBREC")?)),
        6 => Packet::PubRel(PacketId(u16_at(body, 0, "PUBREL")?)),
        7 => Packet::PubComp(PacketId(u16_at(body, 0, "PUBCOMP")?)),
        9 => {
            let packet_id = PacketId(u16_at(body, 0, "SUBACK")?);
            let at = if v5 { skip_props(body, 2, "SUBACK")? } else { 2 };
            Packet::SubAck { packet_id, codes: &body[at..] }
        }
        11 => Packet::UnsubAck(PacketId(u16_at(body, 0, "UNSUBACK")?)),
        13 => Packet::PingResp,
        14 => Packet::Disconnect(body.first().copied().unwrap_or(0)),
        other => return Err(DecodeError::UnexpectedType(other)),
    };
    Ok(Some((packet, total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_v311_matches_spec_example() {
        let mut b = BytesMut::new();
        let c = Connect { client_id: "ab", clean_start: true, keep_alive: 60, session_expiry: 0 };
        encode_connect(&mut b, ProtocolVersion::V311, &c);
        assert_eq!(
            &b[..],
            &[
                0x10, 14, // CONNECT, remaining length
                0, 4, b'M', b'Q', b'T', b'T', // protocol name
                4,    // level
                0x02, // clean session
                0, 60, // keep alive
                0, 2, b'a', b'b', // client id
            ]
        );
    }

    #[test]
    fn connect_v5_carries_session_expiry_property() {
        let mut b = BytesMut::new();
        let c = Connect { client_id: "a", clean_start: false, keep_alive: 0, session_expiry: 7 };
        encode_connect(&mut b, ProtocolVersion::V5, &c);
        assert_eq!(&b[8..11], &[5, 0x00, 0]); // level, flags, keep alive high byte
        assert_eq!(&b[12..18], &[5, 0x11, 0, 0, 0, 7]); // properties: session expiry 7
        assert_eq!(usize::from(b[1]), b.len() - 2);
    }

    #[test]
    fn retained_publish_carries_the_retain_flag_and_exact_payload() {
        let mut b = BytesMut::new();
        encode_publish_retain(&mut b, ProtocolVersion::V5, QoS::AtLeastOnce, Some(PacketId(3)), b"r/k", b"v1", true);
        let (p, used) = decode(&b, ProtocolVersion::V5).unwrap().unwrap();
        assert_eq!(used, b.len());
        assert!(matches!(p, Packet::Publish { retain: true, payload: b"v1", .. }), "{p:?}");
    }

    #[test]
    fn unsubscribe_encodes_packet_id_and_filter() {
        let mut b = BytesMut::new();
        encode_unsubscribe(&mut b, ProtocolVersion::V311, PacketId(7), "a/b");
        // type 0xa2, remaining length 7, packet id 7, filter length 3, "a/b"
        assert_eq!(&b[..], &[0xa2, 7, 0, 7, 0, 3, b'a', b'/', b'b']);
    }

    #[test]
    fn publish_roundtrips_in_both_versions() {
        for v in [ProtocolVersion::V311, ProtocolVersion::V5] {
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
                let mut b = BytesMut::new();
                encode_publish(&mut b, v, qos, Some(PacketId(9)), b"a/b", b"hdr", 200);
                let (p, used) = decode(&b, v).unwrap().unwrap();
                assert_eq!(used, b.len());
                let Packet::Publish { qos: q, topic, packet_id, payload, dup, .. } = p else {
                    panic!("not a publish: {p:?}");
                };
                assert_eq!((q, topic, dup), (qos, &b"a/b"[..], false));
                assert_eq!(packet_id, (qos != QoS::AtMostOnce).then_some(PacketId(9)));
                assert_eq!(payload.len(), 200);
                assert_eq!(&payload[..3], b"hdr");
            }
        }
    }

    #[test]
    fn partial_frames_need_more_bytes() {
        let mut b = BytesMut::new();
        encode_publish(&mut b, ProtocolVersion::V311, QoS::AtLeastOnce, Some(PacketId(1)), b"t", b"x", 300);
        for cut in 0..b.len() {
            assert_eq!(decode(&b[..cut], ProtocolVersion::V311), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn several_frames_in_one_buffer_decode_in_order() {
        let mut b = BytesMut::new();
        encode_ack(&mut b, Ack::PubAck, PacketId(1));
        encode_ack(&mut b, Ack::PubRec, PacketId(2));
        b.put_slice(&[0xd0, 0]);
        let mut at = 0;
        let mut got = vec![];
        while let Some((p, n)) = decode(&b[at..], ProtocolVersion::V5).unwrap() {
            got.push(p);
            at += n;
        }
        assert_eq!(got, vec![Packet::PubAck(PacketId(1)), Packet::PubRec(PacketId(2)), Packet::PingResp]);
    }

    #[test]
    fn v5_ack_with_reason_and_suback_with_properties_decode() {
        // PUBACK id 3, reason 0x10 (no matching subscribers), empty properties.
        let (p, _) = decode(&[0x40, 4, 0, 3, 0x10, 0], ProtocolVersion::V5).unwrap().unwrap();
        assert_eq!(p, Packet::PubAck(PacketId(3)));
        // SUBACK id 1, properties length 0, granted QoS 1.
        let (p, _) = decode(&[0x90, 4, 0, 1, 0, 1], ProtocolVersion::V5).unwrap().unwrap();
        assert_eq!(p, Packet::SubAck { packet_id: PacketId(1), codes: &[1] });
        let (p, _) = decode(&[0x90, 3, 0, 1, 0x80], ProtocolVersion::V311).unwrap().unwrap();
        assert_eq!(p, Packet::SubAck { packet_id: PacketId(1), codes: &[0x80] });
    }

    #[test]
    fn v5_connack_receive_maximum_is_found_among_other_properties() {
        let body = [
            0x30, 13, // CONNACK, remaining length
            1, 0,  // session present, success
            10, // properties length
            0x1f, 0, 1, b'x', // reason string "x"
            0x24, 1, // maximum QoS 1
            0x21, 0, 20, // receive maximum 20
        ];
        let mut b = body.to_vec();
        b[0] = 0x20;
        b[1] = (b.len() - 2) as u8;
        b[4] = (b.len() - 5) as u8;
        let (p, _) = decode(&b, ProtocolVersion::V5).unwrap().unwrap();
        assert_eq!(p, Packet::ConnAck { session_present: true, code: 0, receive_maximum: Some(20) });
        let (p, _) = decode(&[0x20, 2, 0, 0], ProtocolVersion::V311).unwrap().unwrap();
        assert_eq!(p, Packet::ConnAck { session_present: false, code: 0, receive_maximum: None });
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        assert_eq!(
            decode(&[0x30, 0xff, 0xff, 0xff, 0xff], ProtocolVersion::V311),
            Err(DecodeError::BadRemainingLength)
        );
        assert_eq!(decode(&[0x36, 2, 0, 0], ProtocolVersion::V311), Err(DecodeError::BadQoS));
        assert_eq!(decode(&[0x30, 2, 0, 5], ProtocolVersion::V311), Err(DecodeError::Truncated("PUBLISH")));
        assert_eq!(decode(&[0x40, 1, 0], ProtocolVersion::V311), Err(DecodeError::Truncated("PUBACK")));
        assert_eq!(decode(&[0x10, 0], ProtocolVersion::V311), Err(DecodeError::UnexpectedType(1)));
        assert_eq!(
            decode(&[0x30, 0xff, 0xff, 0xff, 0x7f], ProtocolVersion::V311),
            Err(DecodeError::TooLarge(268_435_455))
        );
    }

    #[test]
    fn varint_boundaries_roundtrip() {
        for v in [0usize, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, 268_435_455] {
            let mut b = BytesMut::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v));
            assert_eq!(read_varint(&b).unwrap(), Some((v, b.len())));
        }
    }
}
