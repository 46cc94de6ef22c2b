//! SUBACK for MQTT 3.1 and 3.1.1 (3.1.1 section 3.9): one return code per filter, the granted
//! QoS or 0x80 for a failure.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{read_packet_id, read_u8};
use crate::{DecodeError, EncodeError, ReasonCode, SubAck};

pub(super) fn read(mut buf: Bytes) -> Result<SubAck, DecodeError> {
    let packet_id = read_packet_id(&mut buf)?;
    let mut codes = Vec::with_capacity(buf.len());
    while !buf.is_empty() {
        codes.push(match read_u8(&mut buf)? {
            c @ (0 | 1 | 2 | 0x80) => ReasonCode(c),
            // [MQTT-3.9.3-2]: other return codes are reserved.
            _ => return Err(DecodeError::MalformedPacket("reserved SUBACK return code")),
        });
    }
    if codes.is_empty() {
        return Err(DecodeError::ProtocolError("SUBACK without return codes"));
    }
    Ok(SubAck { packet_id, codes, properties: Default::default() })
}

pub(super) fn len(s: &SubAck) -> Result<usize, EncodeError> {
    if s.codes.is_empty() {
        return Err(EncodeError::Invalid("SUBACK without return codes"));
    }
    if s.codes.iter().any(|c| !c.is_error() && c.0 > 2) {
        return Err(EncodeError::Invalid("SUBACK code is neither a QoS nor a failure"));
    }
    Ok(2 + s.codes.len())
}

pub(super) fn write(s: &SubAck, out: &mut BytesMut) {
    out.put_u16(s.packet_id.0);
    for code in &s.codes {
        // Every MQTT 5.0 failure (0x80 and above) is 0x80, "Failure", in 3.1.1.
        out.put_u8(if code.is_error() { 0x80 } else { code.0 });
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use crate::{Packet, PacketId, ProtocolVersion, ReasonCode, SubAck, decode, encode};

    #[test]
    fn suback_granted_and_failed() {
        let bytes: &[u8] = &[
            0x90, 0x05, // SUBACK, remaining length 5
            0x00, 0x07, // packet id 7
            0x00, 0x02, 0x80, // QoS 0, QoS 2, failure
        ];
        let packet = Packet::SubAck(SubAck {
            packet_id: PacketId(7),
            codes: vec![ReasonCode::GRANTED_QOS_0, ReasonCode::GRANTED_QOS_2, ReasonCode(0x80)],
            properties: Default::default(),
        });
        let mut out = BytesMut::new();
        encode(&packet, ProtocolVersion::V4, &mut out).unwrap();
        assert_eq!(&out[..], bytes);
        assert_eq!(decode(&mut out, ProtocolVersion::V4, 100), Ok(Some(packet)));
    }

    #[test]
    fn suback_maps_every_v5_failure_to_0x80() {
        let packet = Packet::SubAck(SubAck {
            packet_id: PacketId(1),
            codes: vec![ReasonCode::NOT_AUTHORIZED, ReasonCode::TOPIC_FILTER_INVALID],
            properties: Default::default(),
        });
        let mut out = BytesMut::new();
        encode(&packet, ProtocolVersion::V4, &mut out).unwrap();
        assert_eq!(&out[..], &[0x90, 0x04, 0x00, 0x01, 0x80, 0x80]);
    }

    #[test]
    fn suback_reserved_return_code_is_malformed() {
        // [MQTT-3.9.3-2]
        let mut buf = BytesMut::from(&[0x90, 0x03, 0x00, 0x01, 0x03][..]);
        assert!(decode(&mut buf, ProtocolVersion::V4, 100).is_err());
    }
}
