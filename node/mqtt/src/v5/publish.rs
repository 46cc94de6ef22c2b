//! PUBLISH for MQTT 5.0 (section 3.3). The payload is a zero-copy slice of the frame.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{check_publish, field_len, publish_flags, read_nonzero_packet_id, read_topic_name, write_field};
use crate::properties::{PropertyContext, with_prefix};
use crate::{DecodeError, EncodeError, Properties, Publish, QoS};

#[inline]
pub(super) fn read(flags: u8, mut buf: Bytes) -> Result<Publish, DecodeError> {
    let (dup, qos, retain) = publish_flags(flags)?;
    // [MQTT-3.3.2-2]: no wildcards. Empty is allowed here and checked against the topic alias
    // below.
    let topic = read_topic_name(&mut buf, true)?;
    let packet_id = match qos {
        QoS::AtMostOnce => None,
        _ => Some(read_nonzero_packet_id(&mut buf)?),
    };
    let properties = Properties::read(&mut buf, PropertyContext::Publish)?;
    if topic.is_empty() && properties.topic_alias.is_none() {
        // Section 3.3.2.3.4: a zero-length topic name without a topic alias is a Protocol Error.
        return Err(DecodeError::ProtocolError("empty topic name without topic alias"));
    }
    Ok(Publish { dup, qos, retain, topic, packet_id, payload: buf, properties })
}

pub(super) fn len(p: &Publish) -> Result<usize, EncodeError> {
    check_publish(p)?;
    if p.topic.is_empty() && p.properties.topic_alias.is_none() {
        return Err(EncodeError::Invalid("empty topic name without topic alias"));
    }
    let id = if p.packet_id.is_some() { 2 } else { 0 };
    let props = with_prefix(p.properties.encoded_len(PropertyContext::Publish)?);
    Ok(field_len(p.topic.as_bytes())? + id + props + p.payload.len())
}

pub(super) fn write(p: &Publish, out: &mut BytesMut) {
    write_field(out, p.topic.as_bytes());
    if let Some(id) = p.packet_id {
        out.put_u16(id.0);
    }
    p.properties.write_validated(PropertyContext::Publish, out);
    out.put_slice(&p.payload);
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};

    use crate::{DecodeError, Packet, PacketId, Properties, ProtocolVersion, Publish, QoS, decode, encode};

    fn decode_v5(bytes: &[u8]) -> Result<Option<Packet>, DecodeError> {
        decode(&mut BytesMut::from(bytes), ProtocolVersion::V5, usize::MAX)
    }

    #[test]
    fn publish_v5_qos2_with_properties() {
        let bytes: &[u8] = &[
            0x34, // PUBLISH, QoS 2
            0x12, // remaining length 18
            0x00, 0x03, b'a', b'/', b'b', // topic "a/b"
            0x00, 0x02, // packet id 2
            0x08, // property length 8
            0x02, 0x00, 0x00, 0x00, 0x3C, // message expiry interval 60
            0x0B, 0x81, 0x01, // subscription identifier 129
            b'h', b'i', // payload
        ];
        let packet = Packet::Publish(Publish {
            qos: QoS::ExactlyOnce,
            topic: "a/b".into(),
            packet_id: Some(PacketId(2)),
            payload: Bytes::from_static(b"hi"),
            properties: Properties {
                message_expiry_interval: Some(60),
                subscription_identifiers: vec![129],
                ..Default::default()
            },
            ..Default::default()
        });
        assert_eq!(decode_v5(bytes), Ok(Some(packet.clone())));
        let mut out = BytesMut::new();
        encode(&packet, ProtocolVersion::V5, &mut out).unwrap();
        assert_eq!(&out[..], bytes);
    }

    #[test]
    fn publish_v5_empty_topic_with_topic_alias() {
        let bytes: &[u8] = &[
            0x30, 0x06, // PUBLISH QoS 0, remaining length 6
            0x00, 0x00, // empty topic
            0x03, 0x23, 0x00, 0x07, // property length 3: topic alias 7
        ];
        let packet = Packet::Publish(Publish {
            properties: Properties { topic_alias: Some(7), ..Default::default() },
            ..Default::default()
        });
        assert_eq!(decode_v5(bytes), Ok(Some(packet.clone())));
        let mut out = BytesMut::new();
        encode(&packet, ProtocolVersion::V5, &mut out).unwrap();
        assert_eq!(&out[..], bytes);
    }

    #[test]
    fn publish_v5_empty_topic_without_alias_is_protocol_error() {
        assert!(matches!(decode_v5(&[0x30, 0x03, 0x00, 0x00, 0x00]), Err(DecodeError::ProtocolError(_))));
    }

    #[test]
    fn publish_v5_topic_alias_0_is_protocol_error() {
        assert!(matches!(
            decode_v5(&[0x30, 0x07, 0x00, 0x01, b't', 0x03, 0x23, 0x00, 0x00]),
            Err(DecodeError::ProtocolError(_))
        ));
    }

    #[test]
    fn publish_v5_wildcard_topic_is_topic_name_invalid() {
        // [MQTT-3.3.2-2]
        assert_eq!(decode_v5(&[0x30, 0x04, 0x00, 0x01, b'+', 0x00]), Err(DecodeError::TopicNameInvalid));
    }

    #[test]
    fn publish_v5_without_property_length_is_malformed() {
        assert!(matches!(decode_v5(&[0x30, 0x03, 0x00, 0x01, b't']), Err(DecodeError::MalformedPacket(_))));
    }

    #[test]
    fn publish_v5_leaves_out_properties_publish_does_not_allow() {
        let packet = Packet::Publish(Publish {
            topic: "t".into(),
            properties: Properties { reason_string: Some("no".into()), ..Default::default() },
            ..Default::default()
        });
        let mut out = BytesMut::new();
        encode(&packet, ProtocolVersion::V5, &mut out).unwrap();
        assert_eq!(&out[..], &[0x30, 0x04, 0x00, 0x01, b't', 0x00]);
    }
}
