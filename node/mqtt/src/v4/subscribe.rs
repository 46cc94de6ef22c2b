//! SUBSCRIBE for MQTT 3.1 and 3.1.1 (3.1.1 section 3.8). Topic filter syntax is checked by the
//! broker per filter (a bad filter gets a 0x80 return code, not a closed connection).

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{field_len, read_nonzero_packet_id, read_string, read_u8, write_field};
use crate::{DecodeError, EncodeError, QoS, Subscribe, SubscribeFilter, SubscriptionOptions};

pub(super) fn read(mut buf: Bytes) -> Result<Subscribe, DecodeError> {
    let packet_id = read_nonzero_packet_id(&mut buf)?;
    let mut filters = Vec::new();
    while !buf.is_empty() {
        let filter = read_string(&mut buf)?;
        let options = read_u8(&mut buf)?;
        // [MQTT-3.8.3-4] (3.1.1): the upper six bits are reserved, and QoS 3 is malformed.
        if options & 0xFC != 0 {
            return Err(DecodeError::MalformedPacket("SUBSCRIBE reserved option bits set"));
        }
        let qos = QoS::from_u8(options).ok_or(DecodeError::MalformedPacket("SUBSCRIBE with QoS 3"))?;
        filters.push(SubscribeFilter { filter, options: SubscriptionOptions { qos, ..Default::default() } });
    }
    if filters.is_empty() {
        // [MQTT-3.8.3-3]: at least one topic filter.
        return Err(DecodeError::ProtocolError("SUBSCRIBE without topic filters"));
    }
    Ok(Subscribe { packet_id, filters, properties: Default::default() })
}

pub(super) fn len(s: &Subscribe) -> Result<usize, EncodeError> {
    if s.packet_id.0 == 0 || s.filters.is_empty() {
        return Err(EncodeError::Invalid("SUBSCRIBE needs a packet id and a topic filter"));
    }
    let mut n = 2;
    for f in &s.filters {
        n += field_len(f.filter.as_bytes())? + 1;
    }
    Ok(n)
}

pub(super) fn write(s: &Subscribe, out: &mut BytesMut) {
    out.put_u16(s.packet_id.0);
    for f in &s.filters {
        write_field(out, f.filter.as_bytes());
        out.put_u8(f.options.qos as u8);
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use crate::{
        DecodeError, Packet, PacketId, ProtocolVersion, QoS, Subscribe, SubscribeFilter, SubscriptionOptions, decode,
        encode,
    };

    fn decode_v4(bytes: &[u8]) -> Result<Option<Packet>, DecodeError> {
        decode(&mut BytesMut::from(bytes), ProtocolVersion::V4, usize::MAX)
    }

    #[test]
    fn subscribe_two_filters() {
        let bytes: &[u8] = &[
            0x82, 0x0C, // SUBSCRIBE (flags 0b0010), remaining length 12
            0x00, 0x07, // packet id 7
            0x00, 0x03, b'a', b'/', b'+', 0x01, // "a/+" QoS 1
            0x00, 0x01, b'#', 0x02, // "#" QoS 2
        ];
        let filter = |f: &str, qos| SubscribeFilter {
            filter: f.into(),
            options: SubscriptionOptions { qos, ..Default::default() },
        };
        let packet = Packet::Subscribe(Subscribe {
            packet_id: PacketId(7),
            filters: vec![filter("a/+", QoS::AtLeastOnce), filter("#", QoS::ExactlyOnce)],
            properties: Default::default(),
        });
        assert_eq!(decode_v4(bytes), Ok(Some(packet.clone())));
        let mut out = BytesMut::new();
        encode(&packet, ProtocolVersion::V4, &mut out).unwrap();
        assert_eq!(&out[..], bytes);
    }

    #[test]
    fn subscribe_without_filters_is_protocol_error() {
        // [MQTT-3.8.3-3]
        assert!(matches!(decode_v4(&[0x82, 0x02, 0x00, 0x01]), Err(DecodeError::ProtocolError(_))));
    }

    #[test]
    fn subscribe_reserved_option_bits_are_malformed() {
        // [MQTT-3.8.3-4] (3.1.1): v5 options such as No Local are reserved bits here.
        assert!(matches!(
            decode_v4(&[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x04]),
            Err(DecodeError::MalformedPacket(_))
        ));
        assert!(matches!(
            decode_v4(&[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x03]),
            Err(DecodeError::MalformedPacket(_))
        ));
    }

    #[test]
    fn subscribe_packet_id_0_is_protocol_error() {
        // [MQTT-2.3.1-1]
        assert!(matches!(
            decode_v4(&[0x82, 0x06, 0x00, 0x00, 0x00, 0x01, b'a', 0x00]),
            Err(DecodeError::ProtocolError(_))
        ));
    }

    #[test]
    fn subscribe_filter_without_options_byte_is_malformed() {
        assert!(matches!(decode_v4(&[0x82, 0x05, 0x00, 0x01, 0x00, 0x01, b'a']), Err(DecodeError::MalformedPacket(_))));
    }
}
