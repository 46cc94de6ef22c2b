//! CONNACK for MQTT 3.1 and 3.1.1 (3.1.1 section 3.2). The return code is carried as the
//! MQTT 5.0 reason code and mapped both ways.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{expect_end, read_u8};
use crate::{ConnAck, DecodeError, ProtocolVersion, ReasonCode};

/// Acknowledge flags and return code.
pub(super) const LEN: usize = 2;

pub(super) fn read(mut buf: Bytes, version: ProtocolVersion) -> Result<ConnAck, DecodeError> {
    let flags = read_u8(&mut buf)?;
    let code = return_code_to_reason(read_u8(&mut buf)?)?;
    expect_end(&buf)?;
    let session_present = match version {
        // MQTT 3.1 has no Session Present flag: the first byte is reserved and unused.
        ProtocolVersion::V3 => false,
        _ if flags & 0xFE != 0 => {
            // 3.1.1 section 3.2.2.1: bits 7-1 are reserved and must be 0.
            return Err(DecodeError::MalformedPacket("CONNACK reserved flags set"));
        }
        _ => flags & 0x01 != 0,
    };
    Ok(ConnAck { session_present, code, properties: Default::default() })
}

pub(super) fn write(c: &ConnAck, version: ProtocolVersion, out: &mut BytesMut) {
    let session_present = version != ProtocolVersion::V3 && c.session_present;
    out.put_u8(u8::from(session_present));
    out.put_u8(reason_to_return_code(c.code));
}

/// 3.1.1 CONNACK return code (table 3.1) to the MQTT 5.0 reason code.
fn return_code_to_reason(rc: u8) -> Result<ReasonCode, DecodeError> {
    Ok(match rc {
        0 => ReasonCode::SUCCESS,
        1 => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
        2 => ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
        3 => ReasonCode::SERVER_UNAVAILABLE,
        4 => ReasonCode::BAD_USER_NAME_OR_PASSWORD,
        5 => ReasonCode::NOT_AUTHORIZED,
        // 3.1.1 table 3.1: 6-255 are reserved.
        _ => return Err(DecodeError::MalformedPacket("reserved CONNACK return code")),
    })
}

/// MQTT 5.0 reason code to the nearest 3.1.1 return code. Failures without a 3.1.1
/// counterpart become 3 (server unavailable) unless they are about credentials (4) or
/// permission (5).
pub(crate) fn reason_to_return_code(code: ReasonCode) -> u8 {
    match code {
        c if !c.is_error() => 0,
        ReasonCode::UNSUPPORTED_PROTOCOL_VERSION => 1,
        ReasonCode::CLIENT_IDENTIFIER_NOT_VALID => 2,
        ReasonCode::BAD_USER_NAME_OR_PASSWORD | ReasonCode::BAD_AUTHENTICATION_METHOD => 4,
        ReasonCode::NOT_AUTHORIZED | ReasonCode::BANNED => 5,
        _ => 3,
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::reason_to_return_code;
    use crate::{ConnAck, Packet, ProtocolVersion, ReasonCode, decode, encode};

    #[test]
    fn connack_session_present_accepted() {
        let bytes: &[u8] = &[
            0x20, 0x02, // CONNACK, remaining length 2
            0x01, // session present
            0x00, // accepted
        ];
        let packet = Packet::ConnAck(ConnAck { session_present: true, ..Default::default() });
        let mut out = BytesMut::new();
        encode(&packet, ProtocolVersion::V4, &mut out).unwrap();
        assert_eq!(&out[..], bytes);
        assert_eq!(decode(&mut out, ProtocolVersion::V4, 100), Ok(Some(packet)));
    }

    #[test]
    fn connack_maps_reason_codes_to_3_1_1_return_codes() {
        for (code, rc) in [
            (ReasonCode::SUCCESS, 0),
            (ReasonCode::UNSUPPORTED_PROTOCOL_VERSION, 1),
            (ReasonCode::CLIENT_IDENTIFIER_NOT_VALID, 2),
            (ReasonCode::SERVER_UNAVAILABLE, 3),
            (ReasonCode::BAD_USER_NAME_OR_PASSWORD, 4),
            (ReasonCode::NOT_AUTHORIZED, 5),
            (ReasonCode::SERVER_BUSY, 3),
            (ReasonCode::BANNED, 5),
            (ReasonCode::BAD_AUTHENTICATION_METHOD, 4),
            (ReasonCode::UNSPECIFIED_ERROR, 3),
        ] {
            assert_eq!(reason_to_return_code(code), rc, "{code:?}");
        }
    }

    #[test]
    fn connack_failure_round_trips_through_the_return_code() {
        let packet = Packet::ConnAck(ConnAck { code: ReasonCode::NOT_AUTHORIZED, ..Default::default() });
        let mut out = BytesMut::new();
        encode(&packet, ProtocolVersion::V4, &mut out).unwrap();
        assert_eq!(&out[..], &[0x20, 0x02, 0x00, 0x05]);
        assert_eq!(decode(&mut out, ProtocolVersion::V4, 100), Ok(Some(packet)));
    }

    #[test]
    fn connack_reserved_return_code_or_flags_are_malformed() {
        let mut buf = BytesMut::from(&[0x20, 0x02, 0x00, 0x06][..]);
        assert!(decode(&mut buf, ProtocolVersion::V4, 100).is_err());
        let mut buf = BytesMut::from(&[0x20, 0x02, 0x02, 0x00][..]);
        assert!(decode(&mut buf, ProtocolVersion::V4, 100).is_err());
    }

    #[test]
    fn connack_3_1_has_no_session_present() {
        let packet = Packet::ConnAck(ConnAck { session_present: true, ..Default::default() });
        let mut out = BytesMut::new();
        encode(&packet, ProtocolVersion::V3, &mut out).unwrap();
        assert_eq!(&out[..], &[0x20, 0x02, 0x00, 0x00]);
    }
}
