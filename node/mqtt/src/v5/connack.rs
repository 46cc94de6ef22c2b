//! CONNACK for MQTT 5.0 (section 3.2).

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{expect_end, read_u8};
use crate::properties::{PropertyContext, with_prefix};
use crate::{ConnAck, DecodeError, EncodeError, Properties, ReasonCode};

pub(super) fn read(mut buf: Bytes) -> Result<ConnAck, DecodeError> {
    let flags = read_u8(&mut buf)?;
    if flags & 0xFE != 0 {
        // Section 3.2.2.1: bits 7-1 of the acknowledge flags are reserved, 0.
        return Err(DecodeError::MalformedPacket("CONNACK reserved flags set"));
    }
    let code = ReasonCode(read_u8(&mut buf)?);
    let properties = Properties::read(&mut buf, PropertyContext::ConnAck)?;
    expect_end(&buf)?;
    Ok(ConnAck { session_present: flags & 0x01 != 0, code, properties })
}

pub(super) fn len(c: &ConnAck) -> Result<usize, EncodeError> {
    Ok(2 + with_prefix(c.properties.encoded_len(PropertyContext::ConnAck)?))
}

pub(super) fn write(c: &ConnAck, out: &mut BytesMut) {
    out.put_u8(u8::from(c.session_present));
    out.put_u8(c.code.0);
    c.properties.write_validated(PropertyContext::ConnAck, out);
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use crate::{ConnAck, Packet, Properties, ProtocolVersion, ReasonCode, decode, encode};

    #[test]
    fn connack_v5_with_properties() {
        let bytes: &[u8] = &[
            0x20, 0x0C, // CONNACK, remaining length 12
            0x01, // session present
            0x00, // success
            0x09, // property length 9
            0x12, 0x00, 0x02, b'i', b'd', // assigned client identifier "id"
            0x24, 0x01, // maximum QoS 1
            0x25, 0x00, // retain not available
        ];
        let packet = Packet::ConnAck(ConnAck {
            session_present: true,
            code: ReasonCode::SUCCESS,
            properties: Properties {
                assigned_client_identifier: Some("id".into()),
                maximum_qos: Some(1),
                retain_available: Some(0),
                ..Default::default()
            },
        });
        let mut out = BytesMut::new();
        encode(&packet, ProtocolVersion::V5, &mut out).unwrap();
        assert_eq!(&out[..], bytes);
        assert_eq!(decode(&mut out, ProtocolVersion::V5, 100), Ok(Some(packet)));
    }

    #[test]
    fn connack_v5_keeps_the_reason_code() {
        let packet = Packet::ConnAck(ConnAck { code: ReasonCode::BANNED, ..Default::default() });
        let mut out = BytesMut::new();
        encode(&packet, ProtocolVersion::V5, &mut out).unwrap();
        assert_eq!(&out[..], &[0x20, 0x03, 0x00, 0x8A, 0x00]);
    }

    #[test]
    fn connack_v5_maximum_qos_2_is_protocol_error() {
        // Section 3.2.2.3.4: Maximum QoS is 0 or 1.
        let mut buf = BytesMut::from(&[0x20, 0x05, 0x00, 0x00, 0x02, 0x24, 0x02][..]);
        assert!(matches!(decode(&mut buf, ProtocolVersion::V5, 100), Err(crate::DecodeError::ProtocolError(_))));
    }
}
