//! MQTT 3.1 / 3.1.1 wire format, one file per packet (as VerneMQ's `vmq_parser` and rumqttd's
//! `protocol/v4`). Level 3 (3.1) and level 4 (3.1.1) differ only in the CONNECT protocol name,
//! the CONNACK session-present flag and the PUBREL/SUBSCRIBE/UNSUBSCRIBE DUP bit; both are
//! served here. Properties and reason codes of [`Packet`](super::Packet) are ignored when
//! encoding and left at their defaults when decoding.

mod connack;
mod connect;
mod publish;
mod pubresp;
mod suback;
mod subscribe;
mod unsuback;
mod unsubscribe;

use bytes::{Bytes, BytesMut};

use super::codec::{expect_end, packet_type};
use super::{Connect, DecodeError, Disconnect, EncodeError, Packet, ProtocolVersion};

/// Decodes the body of a packet other than CONNECT whose first byte is `byte1` (already
/// checked for type and reserved flags). Always `Some` on success: returning [`decode`]'s own
/// type lets it hand the ~400-byte packet through without a copy.
///
/// [`decode`]: crate::decode
#[inline]
pub(crate) fn decode(byte1: u8, body: Bytes, version: ProtocolVersion) -> Result<Option<Packet>, DecodeError> {
    use packet_type::*;
    Ok(Some(match byte1 >> 4 {
        CONNACK => Packet::ConnAck(connack::read(body, version)?),
        PUBLISH => Packet::Publish(publish::read(byte1 & 0x0F, body)?),
        PUBACK => Packet::PubAck(pubresp::read(body)?),
        PUBREC => Packet::PubRec(pubresp::read(body)?),
        PUBREL => Packet::PubRel(pubresp::read(body)?),
        PUBCOMP => Packet::PubComp(pubresp::read(body)?),
        SUBSCRIBE => Packet::Subscribe(subscribe::read(body)?),
        SUBACK => Packet::SubAck(suback::read(body)?),
        UNSUBSCRIBE => Packet::Unsubscribe(unsubscribe::read(body)?),
        UNSUBACK => Packet::UnsubAck(unsuback::read(body)?),
        // 3.1.1 sections 3.12-3.14: PINGREQ, PINGRESP and DISCONNECT have no body.
        PINGREQ => {
            expect_end(&body)?;
            Packet::PingReq
        }
        PINGRESP => {
            expect_end(&body)?;
            Packet::PingResp
        }
        DISCONNECT => {
            expect_end(&body)?;
            Packet::Disconnect(Disconnect::default())
        }
        _ => {
            return Err(DecodeError::MalformedPacket("packet type not in MQTT 3.1.1"));
        }
    }))
}

/// Decodes a CONNECT body after its protocol name and level.
pub(crate) fn read_connect(protocol: ProtocolVersion, body: Bytes) -> Result<Connect, DecodeError> {
    connect::read(protocol, body)
}

/// The remaining length of `packet` for `version`, validating every field.
pub(crate) fn body_len(packet: &Packet, version: ProtocolVersion) -> Result<usize, EncodeError> {
    match packet {
        Packet::Connect(c) => connect::len(c, version),
        Packet::ConnAck(_) => Ok(connack::LEN),
        Packet::Publish(p) => publish::len(p),
        Packet::PubAck(_) | Packet::PubRec(_) | Packet::PubRel(_) | Packet::PubComp(_) => Ok(pubresp::LEN),
        Packet::Subscribe(s) => subscribe::len(s),
        Packet::SubAck(s) => suback::len(s),
        Packet::Unsubscribe(u) => unsubscribe::len(u),
        Packet::UnsubAck(_) => Ok(unsuback::LEN),
        Packet::PingReq | Packet::PingResp | Packet::Disconnect(_) => Ok(0),
        Packet::Auth(_) => Err(EncodeError::NotInVersion),
    }
}

/// Writes the body of `packet`, whose length `body_len` accepted.
pub(crate) fn write_body(packet: &Packet, version: ProtocolVersion, out: &mut BytesMut) {
    match packet {
        Packet::Connect(c) => connect::write(c, version, out),
        Packet::ConnAck(c) => connack::write(c, version, out),
        Packet::Publish(p) => publish::write(p, out),
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => pubresp::write(r, out),
        Packet::Subscribe(s) => subscribe::write(s, out),
        Packet::SubAck(s) => suback::write(s, out),
        Packet::Unsubscribe(u) => unsubscribe::write(u, out),
        Packet::UnsubAck(u) => unsuback::write(u, out),
        Packet::PingReq | Packet::PingResp | Packet::Disconnect(_) | Packet::Auth(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use crate::{Disconnect, Packet, ProtocolVersion, decode, encode};

    #[test]
    fn pingreq_pingresp_disconnect_are_two_bytes() {
        for (packet, bytes) in [
            (Packet::PingReq, [0xC0, 0x00]),
            (Packet::PingResp, [0xD0, 0x00]),
            (Packet::Disconnect(Disconnect::default()), [0xE0, 0x00]),
        ] {
            let mut out = BytesMut::new();
            encode(&packet, ProtocolVersion::V4, &mut out).unwrap();
            assert_eq!(&out[..], &bytes);
            assert_eq!(decode(&mut out, ProtocolVersion::V4, 100), Ok(Some(packet)));
        }
    }

    #[test]
    fn disconnect_with_a_body_is_malformed_in_3_1_1() {
        let mut buf = BytesMut::from(&[0xE0, 0x01, 0x00][..]);
        assert!(decode(&mut buf, ProtocolVersion::V4, 100).is_err());
    }

    #[test]
    fn v5_disconnect_fields_are_dropped_for_3_1_1() {
        let packet =
            Packet::Disconnect(Disconnect { code: crate::ReasonCode::SERVER_SHUTTING_DOWN, ..Default::default() });
        let mut out = BytesMut::new();
        encode(&packet, ProtocolVersion::V4, &mut out).unwrap();
        assert_eq!(&out[..], &[0xE0, 0x00]);
    }
}
