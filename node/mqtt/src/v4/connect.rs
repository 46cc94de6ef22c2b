//! CONNECT for MQTT 3.1 (`MQIsdp`, level 3) and 3.1.1 (`MQTT`, level 4): 3.1.1 section 3.1,
//! VerneMQ `vmq_parser:parse_connect`. The protocol name and level were read by the caller.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{
    ConnectFlags, expect_end, field_len, protocol_header, read_binary, read_string, read_topic_name, read_u8, read_u16,
    write_field,
};
use crate::{Connect, DecodeError, EncodeError, ProtocolVersion, Will};

pub(super) fn read(protocol: ProtocolVersion, mut buf: Bytes) -> Result<Connect, DecodeError> {
    let flags = ConnectFlags::parse(read_u8(&mut buf)?)?;
    if flags.password && !flags.username {
        // [MQTT-3.1.2-22]: a password without a user name is malformed before 5.0.
        return Err(DecodeError::MalformedPacket("password without user name"));
    }
    let keep_alive = read_u16(&mut buf)?;
    let client_id = read_string(&mut buf)?;
    let will = match flags.will {
        Some((qos, retain)) => Some(Will {
            topic: read_topic_name(&mut buf, false)?.to_string(),
            payload: read_binary(&mut buf)?,
            qos,
            retain,
            properties: Default::default(),
        }),
        None => None,
    };
    let username = if flags.username { Some(read_string(&mut buf)?) } else { None };
    let password = if flags.password { Some(read_binary(&mut buf)?) } else { None };
    expect_end(&buf)?;
    Ok(Connect {
        protocol: Some(protocol),
        clean_start: flags.clean_start,
        keep_alive,
        client_id,
        will,
        username,
        password,
        properties: Default::default(),
    })
}

pub(super) fn len(c: &Connect, protocol: ProtocolVersion) -> Result<usize, EncodeError> {
    if c.password.is_some() && c.username.is_none() {
        return Err(EncodeError::Invalid("password without user name before MQTT 5.0"));
    }
    let (name, _) = protocol_header(protocol);
    // Protocol name, level, flags, keep alive.
    let mut n = 2 + name.len() + 1 + 1 + 2 + field_len(c.client_id.as_bytes())?;
    if let Some(will) = &c.will {
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

pub(super) fn write(c: &Connect, protocol: ProtocolVersion, out: &mut BytesMut) {
    let (name, level) = protocol_header(protocol);
    write_field(out, name.as_bytes());
    out.put_u8(level);
    out.put_u8(ConnectFlags::of(c).byte());
    out.put_u16(c.keep_alive);
    write_field(out, c.client_id.as_bytes());
    if let Some(will) = &c.will {
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
    use bytes::BytesMut;

    use crate::{Connect, DecodeError, Packet, ProtocolVersion, QoS, Will, decode, encode};

    const FULL_3_1_1: &[u8] = &[
        0x10,
        0x23, // CONNECT, remaining length 35
        0x00,
        0x04,
        b'M',
        b'Q',
        b'T',
        b'T',        // protocol name
        0x04,        // level 4
        0b1111_0110, // user name, password, will retain, will QoS 2, will, clean session
        0x00,
        0x3C, // keep alive 60
        0x00,
        0x02,
        b'c',
        b'1', // client id "c1"
        0x00,
        0x03,
        b'w',
        b'/',
        b't', // will topic "w/t"
        0x00,
        0x02,
        0xDE,
        0xAD, // will payload
        0x00,
        0x04,
        b'u',
        b's',
        b'e',
        b'r', // user name
        0x00,
        0x04,
        b'p',
        b'a',
        b's',
        b's', // password
    ];

    fn full_3_1_1() -> Connect {
        Connect {
            protocol: Some(ProtocolVersion::V4),
            clean_start: true,
            keep_alive: 60,
            client_id: "c1".into(),
            will: Some(Will {
                topic: "w/t".into(),
                payload: bytes::Bytes::from_static(&[0xDE, 0xAD]),
                qos: QoS::ExactlyOnce,
                retain: true,
                properties: Default::default(),
            }),
            username: Some("user".into()),
            password: Some(bytes::Bytes::from_static(b"pass")),
            properties: Default::default(),
        }
    }

    fn decode_v4(bytes: &[u8]) -> Result<Option<Packet>, DecodeError> {
        decode(&mut BytesMut::from(bytes), ProtocolVersion::V4, usize::MAX)
    }

    #[test]
    fn connect_3_1_1_with_every_field_decodes_and_encodes() {
        let packet = Packet::Connect(Box::new(full_3_1_1()));
        assert_eq!(decode_v4(FULL_3_1_1), Ok(Some(packet.clone())));
        let mut out = BytesMut::new();
        encode(&packet, ProtocolVersion::V4, &mut out).unwrap();
        assert_eq!(&out[..], FULL_3_1_1);
    }

    #[test]
    fn connect_3_1_is_mqisdp_level_3() {
        let bytes: &[u8] = &[
            0x10, 0x10, // CONNECT, remaining length 16
            0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', // protocol name
            0x03, // level 3
            0x02, // clean session
            0x00, 0x0A, // keep alive 10
            0x00, 0x02, b'i', b'd', // client id
        ];
        let expected = Connect {
            protocol: Some(ProtocolVersion::V3),
            clean_start: true,
            keep_alive: 10,
            client_id: "id".into(),
            ..Default::default()
        };
        // Decoded by its own name and level although the caller still assumes 3.1.1.
        assert_eq!(decode_v4(bytes), Ok(Some(Packet::Connect(Box::new(expected.clone())))));
        let mut out = BytesMut::new();
        encode(&Packet::Connect(Box::new(expected)), ProtocolVersion::V4, &mut out).unwrap();
        assert_eq!(&out[..], bytes);
    }

    #[test]
    fn unknown_level_is_unsupported_protocol_version() {
        let mut bytes = FULL_3_1_1.to_vec();
        bytes[8] = 6;
        assert_eq!(decode_v4(&bytes), Err(DecodeError::UnsupportedProtocolVersion(6)));
    }

    #[test]
    fn bad_protocol_name_is_invalid_protocol_name() {
        let mut bytes = FULL_3_1_1.to_vec();
        bytes[4] = b'X';
        assert_eq!(decode_v4(&bytes), Err(DecodeError::InvalidProtocolName));
    }

    #[test]
    fn reserved_connect_flag_is_malformed() {
        // [MQTT-3.1.2-3]
        let mut bytes = FULL_3_1_1.to_vec();
        bytes[9] |= 0x01;
        assert!(matches!(decode_v4(&bytes), Err(DecodeError::MalformedPacket(_))));
    }

    #[test]
    fn will_qos_or_retain_without_will_flag_is_malformed() {
        // [MQTT-3.1.2-11], [MQTT-3.1.2-13], [MQTT-3.1.2-15]: no will, QoS 1.
        let bytes: &[u8] = &[
            0x10,
            0x0C,
            0x00,
            0x04,
            b'M',
            b'Q',
            b'T',
            b'T',
            0x04,        //
            0b0000_1010, // will QoS 1 without the will flag
            0x00,
            0x00,
            0x00,
            0x00,
        ];
        assert!(matches!(decode_v4(bytes), Err(DecodeError::MalformedPacket(_))));
        let mut bytes = bytes.to_vec();
        bytes[9] = 0b0010_0010; // will retain without the will flag
        assert!(matches!(decode_v4(&bytes), Err(DecodeError::MalformedPacket(_))));
    }

    #[test]
    fn will_qos_3_is_malformed() {
        // [MQTT-3.1.2-14]
        let mut bytes = FULL_3_1_1.to_vec();
        bytes[9] |= 0b0001_1000;
        assert!(matches!(decode_v4(&bytes), Err(DecodeError::MalformedPacket(_))));
    }

    #[test]
    fn password_without_user_name_is_malformed_in_3_1_1() {
        // [MQTT-3.1.2-22]
        let bytes: &[u8] = &[
            0x10,
            0x10,
            0x00,
            0x04,
            b'M',
            b'Q',
            b'T',
            b'T',
            0x04,        //
            0b0100_0000, // password only
            0x00,
            0x00,
            0x00,
            0x00, // keep alive, empty client id
            0x00,
            0x02,
            b'p',
            b'w',
        ];
        assert!(matches!(decode_v4(bytes), Err(DecodeError::MalformedPacket(_))));
        let connect = Connect { password: Some("pw".into()), ..Default::default() };
        let mut out = BytesMut::new();
        assert!(encode(&Packet::Connect(Box::new(connect)), ProtocolVersion::V4, &mut out).is_err());
    }

    #[test]
    fn will_topic_with_wildcard_is_invalid() {
        // [MQTT-3.3.2-2] applies to the will topic, which becomes a PUBLISH topic.
        let mut bytes = FULL_3_1_1.to_vec();
        bytes[19] = b'#';
        assert_eq!(decode_v4(&bytes), Err(DecodeError::TopicNameInvalid));
    }

    #[test]
    fn trailing_bytes_after_the_payload_are_malformed() {
        let mut bytes = FULL_3_1_1.to_vec();
        bytes[1] += 1;
        bytes.push(0);
        assert!(matches!(decode_v4(&bytes), Err(DecodeError::MalformedPacket(_))));
    }

    #[test]
    fn missing_user_name_is_malformed() {
        // Flags announce a user name and password but the payload stops after the will.
        let mut bytes = FULL_3_1_1[..26].to_vec();
        bytes[1] = 24;
        assert!(matches!(decode_v4(&bytes), Err(DecodeError::MalformedPacket(_))));
    }
}
