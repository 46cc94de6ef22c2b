//! PUBACK, PUBREC, PUBREL and PUBCOMP for MQTT 5.0 (sections 3.4-3.7): four packets with one
//! layout, packet identifier, reason code and properties, so they share this file.
//!
//! The reason code and property length may be omitted: a remaining length of 2 means Success
//! and no properties, of 3 means no properties ([MQTT-3.4.2-1] and sections 3.4.2.1, 3.5.2.1,
//! 3.6.2.1, 3.7.2.1). Both forms decode; encoding uses the shortest.

use bytes::{BufMut, Bytes, BytesMut};

use super::{optional_code_len, read_optional_code, write_optional_code};
use crate::codec::read_packet_id;
use crate::properties::PropertyContext;
use crate::{DecodeError, EncodeError, PubResp};

pub(super) fn read(mut buf: Bytes) -> Result<PubResp, DecodeError> {
    let packet_id = read_packet_id(&mut buf)?;
    let (code, properties) = read_optional_code(&mut buf, PropertyContext::PubResp)?;
    Ok(PubResp { packet_id, code, properties })
}

pub(super) fn len(r: &PubResp) -> Result<usize, EncodeError> {
    Ok(2 + optional_code_len(r.code, &r.properties, PropertyContext::PubResp)?)
}

pub(super) fn write(r: &PubResp, out: &mut BytesMut) {
    out.put_u16(r.packet_id.0);
    write_optional_code(r.code, &r.properties, PropertyContext::PubResp, out);
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use crate::{DecodeError, Packet, PacketId, Properties, ProtocolVersion, PubResp, ReasonCode, decode, encode};

    fn decode_v5(bytes: &[u8]) -> Result<Option<Packet>, DecodeError> {
        decode(&mut BytesMut::from(bytes), ProtocolVersion::V5, usize::MAX)
    }

    fn encode_v5(packet: &Packet) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode(packet, ProtocolVersion::V5, &mut out).unwrap();
        out.to_vec()
    }

    #[test]
    fn puback_success_without_properties_uses_the_short_form() {
        // [MQTT-3.4.2-1]: reason code and property length omitted.
        let packet = Packet::PubAck(PubResp { packet_id: PacketId(5), ..Default::default() });
        let bytes = [
            0x40, 0x02, // PUBACK, remaining length 2
            0x00, 0x05, // packet id 5
        ];
        assert_eq!(encode_v5(&packet), bytes);
        assert_eq!(decode_v5(&bytes), Ok(Some(packet)));
    }

    #[test]
    fn pubrec_with_reason_code_omits_the_property_length() {
        let packet = Packet::PubRec(PubResp {
            packet_id: PacketId(5),
            code: ReasonCode::NO_MATCHING_SUBSCRIBERS,
            ..Default::default()
        });
        let bytes = [
            0x50, 0x03, // PUBREC, remaining length 3
            0x00, 0x05, // packet id 5
            0x10, // no matching subscribers
        ];
        assert_eq!(encode_v5(&packet), bytes);
        assert_eq!(decode_v5(&bytes), Ok(Some(packet)));
    }

    #[test]
    fn pubrel_long_form_with_zero_properties_decodes() {
        let bytes = [
            0x62, 0x04, // PUBREL (flags 0b0010), remaining length 4
            0x00, 0x05, // packet id 5
            0x00, // success
            0x00, // property length 0
        ];
        let packet = Packet::PubRel(PubResp { packet_id: PacketId(5), ..Default::default() });
        assert_eq!(decode_v5(&bytes), Ok(Some(packet.clone())));
        // Re-encoded in the short form.
        assert_eq!(encode_v5(&packet), [0x62, 0x02, 0x00, 0x05]);
    }

    #[test]
    fn pubcomp_with_reason_string() {
        let packet = Packet::PubComp(PubResp {
            packet_id: PacketId(1),
            code: ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
            properties: Properties { reason_string: Some("gone".into()), ..Default::default() },
        });
        let bytes = [
            0x70, 0x0B, // PUBCOMP, remaining length 11
            0x00, 0x01, // packet id 1
            0x92, // packet identifier not found
            0x07, // property length 7
            0x1F, 0x00, 0x04, b'g', b'o', b'n', b'e', // reason string "gone"
        ];
        assert_eq!(encode_v5(&packet), bytes);
        assert_eq!(decode_v5(&bytes), Ok(Some(packet)));
    }

    #[test]
    fn puback_with_disallowed_property_is_protocol_error() {
        // Topic alias in a PUBACK.
        let bytes = [0x40, 0x07, 0x00, 0x01, 0x00, 0x03, 0x23, 0x00, 0x01];
        assert!(matches!(decode_v5(&bytes), Err(DecodeError::ProtocolError(_))));
    }
}
