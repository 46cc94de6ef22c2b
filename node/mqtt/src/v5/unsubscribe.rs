//! UNSUBSCRIBE for MQTT 5.0 (section 3.10).

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{field_len, read_nonzero_packet_id, read_string, write_field};
use crate::properties::{PropertyContext, with_prefix};
use crate::{DecodeError, EncodeError, Properties, Unsubscribe};

pub(super) fn read(mut buf: Bytes) -> Result<Unsubscribe, DecodeError> {
    let packet_id = read_nonzero_packet_id(&mut buf)?;
    let properties = Properties::read(&mut buf, PropertyContext::Unsubscribe)?;
    let mut filters = Vec::new();
    while !buf.is_empty() {
        filters.push(read_string(&mut buf)?);
    }
    if filters.is_empty() {
        // [MQTT-3.10.3-2]: at least one topic filter.
        return Err(DecodeError::ProtocolError("UNSUBSCRIBE without topic filters"));
    }
    Ok(Unsubscribe { packet_id, filters, properties })
}

pub(super) fn len(u: &Unsubscribe) -> Result<usize, EncodeError> {
    if u.packet_id.0 == 0 || u.filters.is_empty() {
        return Err(EncodeError::Invalid("UNSUBSCRIBE needs a packet id and a topic filter"));
    }
    let mut n = 2 + with_prefix(u.properties.encoded_len(PropertyContext::Unsubscribe)?);
    for f in &u.filters {
        n += field_len(f.as_bytes())?;
    }
    Ok(n)
}

pub(super) fn write(u: &Unsubscribe, out: &mut BytesMut) {
    out.put_u16(u.packet_id.0);
    u.properties.write_validated(PropertyContext::Unsubscribe, out);
    for f in &u.filters {
        write_field(out, f.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use crate::{DecodeError, Packet, PacketId, Properties, ProtocolVersion, Unsubscribe, decode, encode};

    #[test]
    fn unsubscribe_v5_with_user_property() {
        let bytes: &[u8] = &[
            0xA2, 0x0D, // UNSUBSCRIBE (flags 0b0010), remaining length 13
            0x00, 0x04, // packet id 4
            0x07, 0x26, 0x00, 0x01, b'k', 0x00, 0x01, b'v', // user property ("k", "v")
            0x00, 0x01, b'x', // "x"
        ];
        let packet = Packet::Unsubscribe(Unsubscribe {
            packet_id: PacketId(4),
            filters: vec!["x".into()],
            properties: Properties { user_properties: vec![("k".into(), "v".into())], ..Default::default() },
        });
        let mut out = BytesMut::new();
        encode(&packet, ProtocolVersion::V5, &mut out).unwrap();
        assert_eq!(&out[..], bytes);
        assert_eq!(decode(&mut out, ProtocolVersion::V5, 100), Ok(Some(packet)));
    }

    #[test]
    fn unsubscribe_v5_without_filters_is_protocol_error() {
        // [MQTT-3.10.3-2]
        let mut buf = BytesMut::from(&[0xA2, 0x03, 0x00, 0x01, 0x00][..]);
        assert!(matches!(decode(&mut buf, ProtocolVersion::V5, 100), Err(DecodeError::ProtocolError(_))));
    }
}
