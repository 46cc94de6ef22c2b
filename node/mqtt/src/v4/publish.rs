//! PUBLISH for MQTT 3.1 and 3.1.1 (3.1.1 section 3.3). The payload is a zero-copy slice of the
//! frame; the topic is the only allocation.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{check_publish, field_len, publish_flags, read_nonzero_packet_id, read_topic_name, write_field};
use crate::{DecodeError, EncodeError, Publish, QoS};

#[inline]
pub(super) fn read(flags: u8, mut buf: Bytes) -> Result<Publish, DecodeError> {
    let (dup, qos, retain) = publish_flags(flags)?;
    // [MQTT-3.3.2-2], [MQTT-4.7.3-1]: a non-empty topic name without wildcards.
    let topic = read_topic_name(&mut buf, false)?;
    let packet_id = match qos {
        QoS::AtMostOnce => None,
        _ => Some(read_nonzero_packet_id(&mut buf)?),
    };
    Ok(Publish { dup, qos, retain, topic, packet_id, payload: buf, properties: Default::default() })
}

pub(super) fn len(p: &Publish) -> Result<usize, EncodeError> {
    check_publish(p)?;
    if p.topic.is_empty() {
        return Err(EncodeError::Invalid("empty topic name before MQTT 5.0"));
    }
    let id = if p.packet_id.is_some() { 2 } else { 0 };
    Ok(field_len(p.topic.as_bytes())? + id + p.payload.len())
}

pub(super) fn write(p: &Publish, out: &mut BytesMut) {
    write_field(out, p.topic.as_bytes());
    if let Some(id) = p.packet_id {
        out.put_u16(id.0);
    }
    out.put_slice(&p.payload);
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};

    use crate::{DecodeError, Packet, PacketId, ProtocolVersion, Publish, QoS, decode, encode};

    fn decode_v4(bytes: &[u8]) -> Result<Option<Packet>, DecodeError> {
        decode(&mut BytesMut::from(bytes), ProtocolVersion::V4, usize::MAX)
    }

    #[test]
    fn publish_qos1_retain_dup() {
        let bytes: &[u8] = &[
            0x3B, // PUBLISH, DUP, QoS 1, RETAIN
            0x09, // remaining length 9
            0x00, 0x03, b'a', b'/', b'b', // topic "a/b"
            0x00, 0x0A, // packet id 10
            0x01, 0x02, // payload
        ];
        let packet = Packet::Publish(Publish {
            dup: true,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: "a/b".into(),
            packet_id: Some(PacketId(10)),
            payload: Bytes::from_static(&[1, 2]),
            properties: Default::default(),
        });
        assert_eq!(decode_v4(bytes), Ok(Some(packet.clone())));
        let mut out = BytesMut::new();
        encode(&packet, ProtocolVersion::V4, &mut out).unwrap();
        assert_eq!(&out[..], bytes);
    }

    #[test]
    fn publish_qos0_has_no_packet_id_and_may_have_empty_payload() {
        let bytes: &[u8] = &[
            0x30, // PUBLISH, QoS 0
            0x03, // remaining length 3
            0x00, 0x01, b't', // topic "t"
        ];
        let packet = Packet::Publish(Publish { topic: "t".into(), ..Default::default() });
        assert_eq!(decode_v4(bytes), Ok(Some(packet)));
    }

    #[test]
    fn publish_payload_is_a_slice_of_the_read_buffer() {
        let mut buf = BytesMut::from(&[0x30, 0x05, 0x00, 0x01, b't', 0xAA, 0xBB][..]);
        let base = buf.as_ptr() as usize;
        let Ok(Some(Packet::Publish(p))) = decode(&mut buf, ProtocolVersion::V4, 100) else {
            panic!("not a publish");
        };
        assert_eq!(p.payload.as_ptr() as usize, base + 5);
    }

    #[test]
    fn publish_qos3_is_malformed() {
        // [MQTT-3.3.1-4]
        assert!(matches!(decode_v4(&[0x36, 0x05, 0x00, 0x01, b't', 0x00, 0x01]), Err(DecodeError::MalformedPacket(_))));
    }

    #[test]
    fn publish_dup_with_qos0_is_malformed() {
        // [MQTT-3.3.1-2]
        assert!(matches!(decode_v4(&[0x38, 0x03, 0x00, 0x01, b't']), Err(DecodeError::MalformedPacket(_))));
    }

    #[test]
    fn publish_topic_with_wildcard_is_topic_name_invalid() {
        // [MQTT-3.3.2-2]
        assert_eq!(decode_v4(&[0x30, 0x04, 0x00, 0x02, b'a', b'+']), Err(DecodeError::TopicNameInvalid));
        assert_eq!(decode_v4(&[0x30, 0x03, 0x00, 0x01, b'#']), Err(DecodeError::TopicNameInvalid));
    }

    #[test]
    fn publish_empty_topic_is_invalid_before_mqtt5() {
        // [MQTT-4.7.3-1]
        assert_eq!(decode_v4(&[0x30, 0x02, 0x00, 0x00]), Err(DecodeError::TopicNameInvalid));
    }

    #[test]
    fn publish_qos1_with_packet_id_0_is_protocol_error() {
        // [MQTT-2.3.1-1] (3.1.1), [MQTT-2.2.1-3] (5.0)
        assert!(matches!(decode_v4(&[0x32, 0x05, 0x00, 0x01, b't', 0x00, 0x00]), Err(DecodeError::ProtocolError(_))));
    }

    #[test]
    fn publish_qos1_without_room_for_packet_id_is_malformed() {
        assert!(matches!(decode_v4(&[0x32, 0x04, 0x00, 0x01, b't', 0x00]), Err(DecodeError::MalformedPacket(_))));
    }
}
