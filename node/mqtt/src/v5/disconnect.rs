//! DISCONNECT for MQTT 5.0 (section 3.14). Reason code and properties may be omitted: a
//! remaining length of 0 means Normal disconnection (section 3.14.2.1).

use bytes::{Bytes, BytesMut};

use super::{optional_code_len, read_optional_code, write_optional_code};
use crate::properties::PropertyContext;
use crate::{DecodeError, Disconnect, EncodeError};

pub(super) fn read(mut buf: Bytes) -> Result<Disconnect, DecodeError> {
    let (code, properties) = read_optional_code(&mut buf, PropertyContext::Disconnect)?;
    Ok(Disconnect { code, properties })
}

pub(super) fn len(d: &Disconnect) -> Result<usize, EncodeError> {
    optional_code_len(d.code, &d.properties, PropertyContext::Disconnect)
}

pub(super) fn write(d: &Disconnect, out: &mut BytesMut) {
    write_optional_code(d.code, &d.properties, PropertyContext::Disconnect, out);
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use crate::{DecodeError, Disconnect, Packet, Properties, ProtocolVersion, ReasonCode, decode, encode};

    fn round_trip(packet: &Packet, bytes: &[u8]) {
        let mut out = BytesMut::new();
        encode(packet, ProtocolVersion::V5, &mut out).unwrap();
        assert_eq!(&out[..], bytes);
        assert_eq!(decode(&mut out, ProtocolVersion::V5, 100).as_ref(), Ok(&Some(packet.clone())));
    }

    #[test]
    fn disconnect_normal_is_two_bytes() {
        round_trip(&Packet::Disconnect(Disconnect::default()), &[0xE0, 0x00]);
    }

    #[test]
    fn disconnect_with_reason_code_only() {
        round_trip(
            &Packet::Disconnect(Disconnect { code: ReasonCode::DISCONNECT_WITH_WILL, ..Default::default() }),
            &[
                0xE0, 0x01, // DISCONNECT, remaining length 1
                0x04, // disconnect with will message
            ],
        );
    }

    #[test]
    fn disconnect_with_session_expiry() {
        round_trip(
            &Packet::Disconnect(Disconnect {
                code: ReasonCode::NORMAL_DISCONNECTION,
                properties: Properties { session_expiry_interval: Some(0), ..Default::default() },
            }),
            &[
                0xE0, 0x07, // DISCONNECT, remaining length 7
                0x00, // normal disconnection
                0x05, // property length 5
                0x11, 0x00, 0x00, 0x00, 0x00, // session expiry interval 0
            ],
        );
    }

    #[test]
    fn disconnect_long_form_without_properties_decodes() {
        let mut buf = BytesMut::from(&[0xE0, 0x02, 0x8E, 0x00][..]);
        assert_eq!(
            decode(&mut buf, ProtocolVersion::V5, 100),
            Ok(Some(Packet::Disconnect(Disconnect { code: ReasonCode::SESSION_TAKEN_OVER, ..Default::default() })))
        );
    }

    #[test]
    fn disconnect_with_trailing_bytes_is_malformed() {
        // Property length 0 followed by a stray byte.
        let mut buf = BytesMut::from(&[0xE0, 0x03, 0x00, 0x00, 0x00][..]);
        assert!(matches!(decode(&mut buf, ProtocolVersion::V5, 100), Err(DecodeError::MalformedPacket(_))));
    }
}
