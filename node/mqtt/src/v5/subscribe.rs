//! SUBSCRIBE for MQTT 5.0 (section 3.8). Topic filter syntax is checked by the broker per
//! filter (a bad filter gets reason code 0x8F in the SUBACK).

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{field_len, read_nonzero_packet_id, read_string, read_u8, write_field};
use crate::properties::{PropertyContext, with_prefix};
use crate::{DecodeError, EncodeError, Properties, QoS, Subscribe, SubscribeFilter, SubscriptionOptions};

/// Shared subscriptions start with this (section 4.8.2).
const SHARE_PREFIX: &str = "$share/";

pub(super) fn read(mut buf: Bytes) -> Result<Subscribe, DecodeError> {
    let packet_id = read_nonzero_packet_id(&mut buf)?;
    let properties = Properties::read(&mut buf, PropertyContext::Subscribe)?;
    let mut filters = Vec::new();
    while !buf.is_empty() {
        let filter = read_string(&mut buf)?;
        let options = parse_options(read_u8(&mut buf)?)?;
        if options.no_local && filter.starts_with(SHARE_PREFIX) {
            // [MQTT-3.8.3-4]: No Local on a shared subscription is a Protocol Error.
            return Err(DecodeError::ProtocolError("No Local on a shared subscription"));
        }
        filters.push(SubscribeFilter { filter, options });
    }
    if filters.is_empty() {
        // [MQTT-3.8.3-3]: a SUBSCRIBE without a topic filter is a Protocol Error.
        return Err(DecodeError::ProtocolError("SUBSCRIBE without topic filters"));
    }
    Ok(Subscribe { packet_id, filters, properties })
}

/// Subscription options byte (section 3.8.3.1).
fn parse_options(byte: u8) -> Result<SubscriptionOptions, DecodeError> {
    if byte & 0xC0 != 0 {
        // [MQTT-3.8.3-5]: bits 6 and 7 are reserved and must be 0, else malformed.
        return Err(DecodeError::MalformedPacket("subscription options reserved bits set"));
    }
    let qos = QoS::from_u8(byte & 0x03).ok_or(DecodeError::MalformedPacket("subscription with QoS 3"))?;
    let retain_handling = (byte >> 4) & 0x03;
    if retain_handling == 3 {
        // Section 3.8.3.1: Retain Handling 3 is a Protocol Error.
        return Err(DecodeError::ProtocolError("retain handling 3"));
    }
    Ok(SubscriptionOptions { qos, no_local: byte & 0x04 != 0, retain_as_published: byte & 0x08 != 0, retain_handling })
}

fn options_byte(o: &SubscriptionOptions) -> u8 {
    (o.qos as u8) | (u8::from(o.no_local) << 2) | (u8::from(o.retain_as_published) << 3) | (o.retain_handling << 4)
}

pub(super) fn len(s: &Subscribe) -> Result<usize, EncodeError> {
    if s.packet_id.0 == 0 || s.filters.is_empty() {
        return Err(EncodeError::Invalid("SUBSCRIBE needs a packet id and a topic filter"));
    }
    let mut n = 2 + with_prefix(s.properties.encoded_len(PropertyContext::Subscribe)?);
    for f in &s.filters {
        if f.options.retain_handling > 2 {
            return Err(EncodeError::Invalid("retain handling above 2"));
        }
        if f.options.no_local && f.filter.starts_with(SHARE_PREFIX) {
            return Err(EncodeError::Invalid("No Local on a shared subscription"));
        }
        n += field_len(f.filter.as_bytes())? + 1;
    }
    Ok(n)
}

pub(super) fn write(s: &Subscribe, out: &mut BytesMut) {
    out.put_u16(s.packet_id.0);
    s.properties.write_validated(PropertyContext::Subscribe, out);
    for f in &s.filters {
        write_field(out, f.filter.as_bytes());
        out.put_u8(options_byte(&f.options));
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use crate::{
        DecodeError, Packet, PacketId, Properties, ProtocolVersion, QoS, Subscribe, SubscribeFilter,
        SubscriptionOptions, decode, encode,
    };

    fn decode_v5(bytes: &[u8]) -> Result<Option<Packet>, DecodeError> {
        decode(&mut BytesMut::from(bytes), ProtocolVersion::V5, usize::MAX)
    }

    #[test]
    fn subscribe_v5_with_options_and_subscription_identifier() {
        let bytes: &[u8] = &[
            0x82,
            0x0B, // SUBSCRIBE (flags 0b0010), remaining length 11
            0x00,
            0x01, // packet id 1
            0x02,
            0x0B,
            0x2A, // property length 2: subscription identifier 42
            0x00,
            0x03,
            b'a',
            b'/',
            b'#',        // "a/#"
            0b0010_1101, // retain handling 2, retain as published, no local, QoS 1
        ];
        let packet = Packet::Subscribe(Subscribe {
            packet_id: PacketId(1),
            filters: vec![SubscribeFilter {
                filter: "a/#".into(),
                options: SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: 2,
                },
            }],
            properties: Properties { subscription_identifiers: vec![42], ..Default::default() },
        });
        assert_eq!(decode_v5(bytes), Ok(Some(packet.clone())));
        let mut out = BytesMut::new();
        encode(&packet, ProtocolVersion::V5, &mut out).unwrap();
        assert_eq!(&out[..], bytes);
    }

    #[test]
    fn subscribe_v5_reserved_option_bits_are_malformed() {
        // [MQTT-3.8.3-5]
        assert!(matches!(
            decode_v5(&[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x40]),
            Err(DecodeError::MalformedPacket(_))
        ));
    }

    #[test]
    fn subscribe_v5_retain_handling_3_is_protocol_error() {
        assert!(matches!(
            decode_v5(&[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x30]),
            Err(DecodeError::ProtocolError(_))
        ));
    }

    #[test]
    fn subscribe_v5_no_local_on_shared_subscription_is_protocol_error() {
        // [MQTT-3.8.3-4]
        let mut bytes = vec![0x82, 0x0F, 0x00, 0x01, 0x00, 0x00, 0x09];
        bytes.extend_from_slice(b"$share/g/");
        bytes.push(0x04);
        assert!(matches!(decode_v5(&bytes), Err(DecodeError::ProtocolError(_))));
    }

    #[test]
    fn subscribe_v5_without_filters_is_protocol_error() {
        // [MQTT-3.8.3-3]
        assert!(matches!(decode_v5(&[0x82, 0x03, 0x00, 0x01, 0x00]), Err(DecodeError::ProtocolError(_))));
    }

    #[test]
    fn subscribe_v5_subscription_identifier_0_is_protocol_error() {
        assert!(matches!(
            decode_v5(&[0x82, 0x09, 0x00, 0x01, 0x02, 0x0B, 0x00, 0x00, 0x01, b'a', 0x00]),
            Err(DecodeError::ProtocolError(_))
        ));
    }
}
