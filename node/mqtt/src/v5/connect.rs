//! CONNECT for MQTT 5.0 (section 3.1), VerneMQ `vmq_parser_mqtt5:parse_connect`. The protocol
//! name and level were read by the caller.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{
    ConnectFlags, expect_end, field_len, protocol_header, read_binary, read_string, read_topic_name, read_u8, read_u16,
    write_field,
};
use crate::properties::{PropertyContext, with_prefix};
use crate::{Connect, DecodeError, EncodeError, Properties, ProtocolVersion, Will};

pub(super) fn read(mut buf: Bytes) -> Result<Connect, DecodeError> {
    // Unlike 3.1.1, a password without a user name is allowed (section 3.1.2.9).
    let flags = ConnectFlags::parse(read_u8(&mut buf)?)?;
    let keep_alive = read_u16(&mut buf)?;
    let properties = Properties::read(&mut buf, PropertyContext::Connect)?;
    let client_id = read_string(&mut buf)?;
    let will = match flags.will {
        Some((qos, retain)) => {
            let properties = Properties::read(&mut buf, PropertyContext::Will)?;
            Some(Will {
                topic: read_topic_name(&mut buf, false)?.to_string(),
                payload: read_binary(&mut buf)?,
                qos,
                retain,
                properties,
            })
        }
        None => None,
    };
    let username = if flags.username { Some(read_string(&mut buf)?) } else { None };
    let password = if flags.password { Some(read_binary(&mut buf)?) } else { None };
    expect_end(&buf)?;
    Ok(Connect {
        protocol: Some(ProtocolVersion::V5),
        clean_start: flags.clean_start,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties,
    })
}

pub(super) fn len(c: &Connect) -> Result<usize, EncodeError> {
    let (name, _) = protocol_header(ProtocolVersion::V5);
    // Protocol name, level, flags, keep alive.
    let mut n = 2 + name.len() + 1 + 1 + 2;
    n += with_prefix(c.properties.encoded_len(PropertyContext::Connect)?);
    n += field_len(c.client_id.as_bytes())?;
    if let Some(will) = &c.will {
        n += with_prefix(will.properties.encoded_len(PropertyContext::Will)?);
        n += field_len(will.topic.as_bytes())? + field_len(&will.payload)?;
    }
    if let Some(username) = &c.username {
        n += field_len(username.as_bytes())?;
    }
    if let Some(password) = &c.password {
        n += field_len(password)?;
    }
    Ok(n)
}

pub(super) fn write(c: &Connect, out: &mut BytesMut) {
    let (name, level) = protocol_header(ProtocolVersion::V5);
    write_field(out, name.as_bytes());
    out.put_u8(level);
    out.put_u8(ConnectFlags::of(c).byte());
    out.put_u16(c.keep_alive);
    c.properties.write_validated(PropertyContext::Connect, out);
    write_field(out, c.client_id.as_bytes());
    if let Some(will) = &c.will {
        will.properties.write_validated(PropertyContext::Will, out);
        write_field(out, will.topic.as_bytes());
        write_field(out, &will.payload);
    }
    if let Some(username) = &c.username {
        write_field(out, username.as_bytes());
    }
    if let Some(password) = &c.password {
        write_field(out, password);
    }
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};

    use crate::{Connect, DecodeError, Packet, Properties, ProtocolVersion, QoS, Will, decode, encode};

    const FULL: &[u8] = &[
        0x10,
        0x2B, // CONNECT, remaining length 43
        0x00,
        0x04,
        b'M',
        b'Q',
        b'T',
        b'T',        // protocol name
        0x05,        // level 5
        0b0100_1100, // password, will QoS 1, will, no clean start
        0x00,
        0x1E, // keep alive 30
        0x08, // property length 8
        0x11,
        0x00,
        0x00,
        0x0E,
        0x10, // session expiry interval 3600
        0x21,
        0x00,
        0x0A, // receive maximum 10
        0x00,
        0x01,
        b'c', // client id "c"
        0x05, // will property length 5
        0x18,
        0x00,
        0x00,
        0x00,
        0x05, // will delay interval 5
        0x00,
        0x01,
        b'w', // will topic "w"
        0x00,
        0x02,
        b'b',
        b'y', // will payload "by"
        0x00,
        0x06,
        b's',
        b'e',
        b'c',
        b'r',
        b'e',
        b't', // password (no user name)
    ];

    fn full() -> Connect {
        Connect {
            protocol: Some(ProtocolVersion::V5),
            clean_start: false,
            keep_alive: 30,
            client_id: "c".into(),
            will: Some(Will {
                topic: "w".into(),
                payload: Bytes::from_static(b"by"),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: Properties { will_delay_interval: Some(5), ..Default::default() },
            }),
            username: None,
            password: Some(Bytes::from_static(b"secret")),
            properties: Properties {
                session_expiry_interval: Some(3600),
                receive_maximum: Some(10),
                ..Default::default()
            },
        }
    }

    fn decode_any(bytes: &[u8]) -> Result<Option<Packet>, DecodeError> {
        // Before CONNECT the broker decodes as 3.1.1; the level byte decides.
        decode(&mut BytesMut::from(bytes), ProtocolVersion::V4, usize::MAX)
    }

    #[test]
    fn connect_v5_with_properties_and_will_properties() {
        let packet = Packet::Connect(Box::new(full()));
        assert_eq!(decode_any(FULL), Ok(Some(packet.clone())));
        let mut out = BytesMut::new();
        encode(&packet, ProtocolVersion::V4, &mut out).unwrap();
        assert_eq!(&out[..], FULL);
    }

    #[test]
    fn connect_v5_property_not_allowed_is_protocol_error() {
        // Replace receive maximum (0x21) with topic alias (0x23), a PUBLISH-only property.
        let mut bytes = FULL.to_vec();
        bytes[18] = 0x23;
        assert!(matches!(decode_any(&bytes), Err(DecodeError::ProtocolError(_))));
    }

    #[test]
    fn connect_v5_will_property_in_connect_properties_is_protocol_error() {
        // Will Delay Interval belongs to the will properties, not the CONNECT properties.
        let mut bytes = FULL.to_vec();
        bytes[13] = 0x18;
        assert!(matches!(decode_any(&bytes), Err(DecodeError::ProtocolError(_))));
    }

    #[test]
    fn connect_v5_reserved_flag_is_malformed() {
        // [MQTT-3.1.2-3]
        let mut bytes = FULL.to_vec();
        bytes[9] |= 0x01;
        assert!(matches!(decode_any(&bytes), Err(DecodeError::MalformedPacket(_))));
    }

    #[test]
    fn connect_v5_property_length_past_the_packet_is_malformed() {
        let mut bytes = FULL.to_vec();
        bytes[12] = 0x7F;
        assert!(matches!(decode_any(&bytes), Err(DecodeError::MalformedPacket(_))));
    }
}
