//! UNSUBACK for MQTT 5.0 (section 3.11): one reason code per filter.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{read_packet_id, read_u8};
use crate::properties::{PropertyContext, with_prefix};
use crate::{DecodeError, EncodeError, Properties, ReasonCode, UnsubAck};

pub(super) fn read(mut buf: Bytes) -> Result<UnsubAck, DecodeError> {
    let packet_id = read_packet_id(&mut buf)?;
    let properties = Properties::read(&mut buf, PropertyContext::UnsubAck)?;
    let mut codes = Vec::with_capacity(buf.len());
    while !buf.is_empty() {
        codes.push(ReasonCode(read_u8(&mut buf)?));
    }
    if codes.is_empty() {
        return Err(DecodeError::ProtocolError("UNSUBACK without reason codes"));
    }
    Ok(UnsubAck { packet_id, codes, properties })
}

pub(super) fn len(u: &UnsubAck) -> Result<usize, EncodeError> {
    if u.codes.is_empty() {
        return Err(EncodeError::Invalid("UNSUBACK without reason codes"));
    }
    Ok(2 + with_prefix(u.properties.encoded_len(PropertyContext::UnsubAck)?) + u.codes.len())
}

pub(super) fn write(u: &UnsubAck, out: &mut BytesMut) {
    out.put_u16(u.packet_id.0);
    u.properties.write_validated(PropertyContext::UnsubAck, out);
    for code in &u.codes {
        out.put_u8(code.0);
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use crate::{Packet, PacketId, ProtocolVersion, ReasonCode, UnsubAck, decode, encode};

    #[test]
    fn unsuback_v5_with_reason_codes() {
        let bytes: &[u8] = &[
            0xB0, 0x05, // UNSUBACK, remaining length 5
            0x00, 0x09, // packet id 9
            0x00, // property length 0
            0x00, 0x11, // success, no subscription existed
        ];
        let packet = Packet::UnsubAck(UnsubAck {
            packet_id: PacketId(9),
            codes: vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED],
            properties: Default::default(),
        });
        let mut out = BytesMut::new();
        encode(&packet, ProtocolVersion::V5, &mut out).unwrap();
        assert_eq!(&out[..], bytes);
        assert_eq!(decode(&mut out, ProtocolVersion::V5, 100), Ok(Some(packet)));
    }

    #[test]
    fn unsuback_v5_without_reason_codes_is_refused() {
        let mut buf = BytesMut::from(&[0xB0, 0x03, 0x00, 0x09, 0x00][..]);
        assert!(decode(&mut buf, ProtocolVersion::V5, 100).is_err());
    }
}
