//! AUTH for MQTT 5.0 (section 3.15), which earlier versions do not have. Reason code and
//! properties may be omitted: a remaining length of 0 means Success (section 3.15.2.1).

use bytes::{Bytes, BytesMut};

use super::{optional_code_len, read_optional_code, write_optional_code};
use crate::properties::PropertyContext;
use crate::{Auth, DecodeError, EncodeError};

pub(super) fn read(mut buf: Bytes) -> Result<Auth, DecodeError> {
    let (code, properties) = read_optional_code(&mut buf, PropertyContext::Auth)?;
    Ok(Auth { code, properties })
}

pub(super) fn len(a: &Auth) -> Result<usize, EncodeError> {
    optional_code_len(a.code, &a.properties, PropertyContext::Auth)
}

pub(super) fn write(a: &Auth, out: &mut BytesMut) {
    write_optional_code(a.code, &a.properties, PropertyContext::Auth, out);
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};

    use crate::{Auth, Packet, Properties, ProtocolVersion, ReasonCode, decode, encode};

    #[test]
    fn auth_continue_with_method_and_data() {
        let bytes: &[u8] = &[
            0xF0, 0x0E, // AUTH, remaining length 14
            0x18, // continue authentication
            0x0C, // property length 12
            0x15, 0x00, 0x05, b'S', b'C', b'R', b'A', b'M', // authentication method
            0x16, 0x00, 0x01, 0x2A, // authentication data
        ];
        let packet = Packet::Auth(Auth {
            code: ReasonCode::CONTINUE_AUTHENTICATION,
            properties: Properties {
                authentication_method: Some("SCRAM".into()),
                authentication_data: Some(Bytes::from_static(&[0x2A])),
                ..Default::default()
            },
        });
        let mut out = BytesMut::new();
        encode(&packet, ProtocolVersion::V5, &mut out).unwrap();
        assert_eq!(&out[..], bytes);
        assert_eq!(decode(&mut out, ProtocolVersion::V5, 100), Ok(Some(packet)));
    }

    #[test]
    fn auth_success_without_properties_is_empty() {
        let packet = Packet::Auth(Auth::default());
        let mut out = BytesMut::new();
        encode(&packet, ProtocolVersion::V5, &mut out).unwrap();
        assert_eq!(&out[..], &[0xF0, 0x00]);
        assert_eq!(decode(&mut out, ProtocolVersion::V5, 100), Ok(Some(packet)));
    }
}
