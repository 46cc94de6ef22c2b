//! SUBACK for MQTT 5.0 (section 3.9): one reason code per filter.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{read_packet_id, read_u8};
use crate::properties::{PropertyContext, with_prefix};
use crate::{DecodeError, EncodeError, Properties, ReasonCode, SubAck};

pub(super) fn read(mut buf: Bytes) -> Result<SubAck, DecodeError> {
    let packet_id = read_packet_id(&mut buf)?;
    let properties = Properties::read(&mut buf, PropertyContext::SubAck)?;
    let mut codes = Vec::with_capacity(buf.len());
    while !buf.is_empty() {
        codes.push(ReasonCode(read_u8(&mut buf)?));
    }
    if codes.is_empty() {
        return Err(DecodeError::ProtocolError("SUBACK without reason codes"));
    }
    Ok(SubAck { packet_id, codes, properties })
}

pub(super) fn len(s: &SubAck) -> Result<usize, EncodeError> {
    if s.codes.is_empty() {
        return Err(EncodeError::Invalid("SUBACK without reason codes"));
    }
    Ok(2 + with_prefix(s.properties.encoded_len(PropertyContext::SubAck)?) + s.codes.len())
}

pub(super) fn write(s: &SubAck, out: &mut BytesMut) {
    out.put_u16(s.packet_id.0);
    s.properties.write_validated(PropertyContext::SubAck, out);
    for code in &s.codes {
        out.put_u8(code.0);
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use crate::{Packet, PacketId, ProtocolVersion, ReasonCode, SubAck, decode, encode};

    #[test]
    fn suback_v5_keeps_every_reason_code() {
        let bytes: &[u8] = &[
            0x90, 0x06, // SUBACK, remaining length 6
            0x00, 0x02, // packet id 2
            0x00, // property length 0
            0x01, 0x8F, 0xA2, // QoS 1, topic filter invalid, wildcards not supported
        ];
        let packet = Packet::SubAck(SubAck {
            packet_id: PacketId(2),
            codes: vec![
                ReasonCode::GRANTED_QOS_1,
                ReasonCode::TOPIC_FILTER_INVALID,
                ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED,
            ],
            properties: Default::default(),
        });
        let mut out = BytesMut::new();
        encode(&packet, ProtocolVersion::V5, &mut out).unwrap();
        assert_eq!(&out[..], bytes);
        assert_eq!(decode(&mut out, ProtocolVersion::V5, 100), Ok(Some(packet)));
    }
}
