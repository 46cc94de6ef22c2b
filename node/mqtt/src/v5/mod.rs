//! MQTT 5.0 wire format, one file per packet (as VerneMQ's `vmq_parser_mqtt5` and rumqttd's
//! `protocol/v5`). Properties are read and written by [`Properties`](super::Properties) for the
//! property context of each packet.

mod auth;
mod connack;
mod connect;
mod disconnect;
mod publish;
mod pubresp;
mod suback;
mod subscribe;
mod unsuback;
mod unsubscribe;

use bytes::{BufMut, Bytes, BytesMut};

use super::codec::{expect_end, packet_type, read_u8};
use super::properties::{PropertyContext, with_prefix};
use super::{Connect, DecodeError, EncodeError, Packet, Properties, ReasonCode};

/// Decodes the body of a packet other than CONNECT whose first byte is `byte1` (already
/// checked for type and reserved flags). Always `Some` on success: returning [`decode`]'s own
/// type lets it hand the ~400-byte packet through without a copy.
///
/// [`decode`]: crate::decode
#[inline]
pub(crate) fn decode(byte1: u8, body: Bytes) -> Result<Option<Packet>, DecodeError> {
    use packet_type::*;
    Ok(Some(match byte1 >> 4 {
        CONNACK => Packet::ConnAck(connack::read(body)?),
        PUBLISH => Packet::Publish(publish::read(byte1 & 0x0F, body)?),
        PUBACK => Packet::PubAck(pubresp::read(body)?),
        PUBREC => Packet::PubRec(pubresp::read(body)?),
        PUBREL => Packet::PubRel(pubresp::read(body)?),
        PUBCOMP => Packet::PubComp(pubresp::read(body)?),
        SUBSCRIBE => Packet::Subscribe(subscribe::read(body)?),
        SUBACK => Packet::SubAck(suback::read(body)?),
        UNSUBSCRIBE => Packet::Unsubscribe(unsubscribe::read(body)?),
        UNSUBACK => Packet::UnsubAck(unsuback::read(body)?),
        // MQTT 5.0 sections 3.12.2, 3.13.2: no variable header, no payload.
        PINGREQ => {
            expect_end(&body)?;
            Packet::PingReq
        }
        PINGRESP => {
            expect_end(&body)?;
            Packet::PingResp
        }
        DISCONNECT => Packet::Disconnect(disconnect::read(body)?),
        AUTH => Packet::Auth(auth::read(body)?),
        _ => return Err(DecodeError::MalformedPacket("reserved packet type")),
    }))
}

/// Decodes a CONNECT body after its protocol name and level.
pub(crate) fn read_connect(body: Bytes) -> Result<Connect, DecodeError> {
    connect::read(body)
}

/// The remaining length of `packet`, validating every field.
pub(crate) fn body_len(packet: &Packet) -> Result<usize, EncodeError> {
    match packet {
        Packet::Connect(c) => connect::len(c),
        Packet::ConnAck(c) => connack::len(c),
        Packet::Publish(p) => publish::len(p),
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => pubresp::len(r),
        Packet::Subscribe(s) => subscribe::len(s),
        Packet::SubAck(s) => suback::len(s),
        Packet::Unsubscribe(u) => unsubscribe::len(u),
        Packet::UnsubAck(u) => unsuback::len(u),
        Packet::PingReq | Packet::PingResp => Ok(0),
        Packet::Disconnect(d) => disconnect::len(d),
        Packet::Auth(a) => auth::len(a),
    }
}

/// Writes the body of `packet`, whose length `body_len` accepted.
pub(crate) fn write_body(packet: &Packet, out: &mut BytesMut) {
    match packet {
        Packet::Connect(c) => connect::write(c, out),
        Packet::ConnAck(c) => connack::write(c, out),
        Packet::Publish(p) => publish::write(p, out),
        Packet::PubAck(r) | Packet::PubRec(r) | Packet::PubRel(r) | Packet::PubComp(r) => pubresp::write(r, out),
        Packet::Subscribe(s) => subscribe::write(s, out),
        Packet::SubAck(s) => suback::write(s, out),
        Packet::Unsubscribe(u) => unsubscribe::write(u, out),
        Packet::UnsubAck(u) => unsuback::write(u, out),
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(d) => disconnect::write(d, out),
        Packet::Auth(a) => auth::write(a, out),
    }
}

/// Reads the trailing reason code and properties of PUBACK, PUBREC, PUBREL, PUBCOMP,
/// DISCONNECT and AUTH, either of which may be omitted: nothing left means Success without
/// properties, a single byte means that code without properties ([MQTT-3.4.2-1], sections
/// 3.14.2.1, 3.15.2.1).
fn read_optional_code(buf: &mut Bytes, ctx: PropertyContext) -> Result<(ReasonCode, Properties), DecodeError> {
    if buf.is_empty() {
        return Ok((ReasonCode::SUCCESS, Properties::default()));
    }
    let code = ReasonCode(read_u8(buf)?);
    let properties = if buf.is_empty() { Properties::default() } else { Properties::read(buf, ctx)? };
    expect_end(buf)?;
    Ok((code, properties))
}

/// Length of the trailing reason code and properties in their shortest form.
fn optional_code_len(code: ReasonCode, props: &Properties, ctx: PropertyContext) -> Result<usize, EncodeError> {
    Ok(match (props.encoded_len(ctx)?, code) {
        (0, ReasonCode::SUCCESS) => 0,
        (0, _) => 1,
        (len, _) => 1 + with_prefix(len),
    })
}

/// Writes the trailing reason code and properties in their shortest form.
fn write_optional_code(code: ReasonCode, props: &Properties, ctx: PropertyContext, out: &mut BytesMut) {
    // `body_len` validated these properties before anything was written.
    let len = props.encoded_len(ctx).unwrap_or(0);
    if len == 0 && code == ReasonCode::SUCCESS {
        return;
    }
    out.put_u8(code.0);
    if len > 0 {
        props.write(ctx, len, out);
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use crate::{Packet, ProtocolVersion, decode, encode};

    #[test]
    fn pingreq_and_pingresp_are_two_bytes() {
        for (packet, bytes) in [(Packet::PingReq, [0xC0, 0x00]), (Packet::PingResp, [0xD0, 0x00])] {
            let mut out = BytesMut::new();
            encode(&packet, ProtocolVersion::V5, &mut out).unwrap();
            assert_eq!(&out[..], &bytes);
            assert_eq!(decode(&mut out, ProtocolVersion::V5, 100), Ok(Some(packet)));
        }
    }

    #[test]
    fn pingreq_with_a_body_is_malformed() {
        let mut buf = BytesMut::from(&[0xC0, 0x01, 0x00][..]);
        assert!(decode(&mut buf, ProtocolVersion::V5, 100).is_err());
    }
}
