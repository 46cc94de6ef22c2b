//! UNSUBSCRIBE for MQTT 3.1 and 3.1.1 (3.1.1 section 3.10).

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{field_len, read_nonzero_packet_id, read_string, write_field};
use crate::{DecodeError, EncodeError, Unsubscribe};

pub(super) fn read(mut buf: Bytes) -> Result<Unsubscribe, DecodeError> {
    let packet_id = read_nonzero_packet_id(&mut buf)?;
    let mut filters = Vec::new();
    while !buf.is_empty() {
        filters.push(read_string(&mut buf)?);
    }
    if filters.is_empty() {
        // [MQTT-3.10.3-2]: at least one topic filter.
        return Err(DecodeError::ProtocolError("UNSUBSCRIBE without topic filters"));
    }
    Ok(Unsubscribe { packet_id, filters, properties: Default::default() })
}

pub(super) fn len(u: &Unsubscribe) -> Result<usize, EncodeError> {
    if u.packet_id.0 == 0 || u.filters.is_empty() {
        return Err(EncodeError::Invalid("UNSUBSCRIBE needs a packet id and a topic filter"));
    }
    let mut n = 2;
    for f in &u.filters {
        n += field_len(f.as_bytes())?;
    }
    Ok(n)
}

pub(super) fn write(u: &Unsubscribe, out: &mut BytesMut) {
    out.put_u16(u.packet_id.0);
    for f in &u.filters {
        write_field(out, f.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use crate::{DecodeError, Packet, PacketId, ProtocolVersion, Unsubscribe, decode, encode};

    #[test]
    fn unsubscribe_two_filters() {
        let bytes: &[u8] = &[
            0xA2, 0x0A, // UNSUBSCRIBE (flags 0b0010), remaining length 10
            0x00, 0x03, // packet id 3
            0x00, 0x03, b'a', b'/', b'b', // "a/b"
            0x00, 0x01, b'#', // "#"
        ];
        let packet = Packet::Unsubscribe(Unsubscribe {
            packet_id: PacketId(3),
            filters: vec!["a/b".into(), "#".into()],
            properties: Default::default(),
        });
        let mut out = BytesMut::new();
        encode(&packet, ProtocolVersion::V4, &mut out).unwrap();
        assert_eq!(&out[..], bytes);
        assert_eq!(decode(&mut out, ProtocolVersion::V4, 100), Ok(Some(packet)));
    }

    #[test]
    fn unsubscribe_without_filters_is_protocol_error() {
        // [MQTT-3.10.3-2]
        let mut buf = BytesMut::from(&[0xA2, 0x02, 0x00, 0x01][..]);
        assert!(matches!(decode(&mut buf, ProtocolVersion::V4, 100), Err(DecodeError::ProtocolError(_))));
    }
}
