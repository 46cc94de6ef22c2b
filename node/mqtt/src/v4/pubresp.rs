//! PUBACK, PUBREC, PUBREL and PUBCOMP for MQTT 3.1 and 3.1.1 (3.1.1 sections 3.4-3.7): four
//! packets with one layout, the packet identifier alone, so they share this file as they share
//! VerneMQ's `vmq_parser` clauses.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{expect_end, read_packet_id};
use crate::{DecodeError, PubResp};

/// Packet identifier only.
pub(super) const LEN: usize = 2;

pub(super) fn read(mut buf: Bytes) -> Result<PubResp, DecodeError> {
    let packet_id = read_packet_id(&mut buf)?;
    expect_end(&buf)?;
    Ok(PubResp { packet_id, ..Default::default() })
}

pub(super) fn write(r: &PubResp, out: &mut BytesMut) {
    out.put_u16(r.packet_id.0);
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use crate::{Packet, PacketId, ProtocolVersion, PubResp, ReasonCode, decode, encode};

    #[test]
    fn acks_carry_only_the_packet_id() {
        let r = PubResp { packet_id: PacketId(0x1234), ..Default::default() };
        for (packet, byte1) in [
            (Packet::PubAck(r.clone()), 0x40),
            (Packet::PubRec(r.clone()), 0x50),
            (Packet::PubRel(r.clone()), 0x62), // [MQTT-3.6.1-1] flags 0b0010
            (Packet::PubComp(r.clone()), 0x70),
        ] {
            let bytes = [
                byte1, 0x02, // type and flags, remaining length 2
                0x12, 0x34, // packet id
            ];
            let mut out = BytesMut::new();
            encode(&packet, ProtocolVersion::V4, &mut out).unwrap();
            assert_eq!(&out[..], &bytes);
            assert_eq!(decode(&mut out, ProtocolVersion::V4, 100), Ok(Some(packet)));
        }
    }

    #[test]
    fn v5_reason_code_is_not_written_for_3_1_1() {
        let packet = Packet::PubAck(PubResp {
            packet_id: PacketId(1),
            code: ReasonCode::NO_MATCHING_SUBSCRIBERS,
            ..Default::default()
        });
        let mut out = BytesMut::new();
        encode(&packet, ProtocolVersion::V4, &mut out).unwrap();
        assert_eq!(&out[..], &[0x40, 0x02, 0x00, 0x01]);
    }

    #[test]
    fn ack_with_extra_bytes_is_malformed() {
        let mut buf = BytesMut::from(&[0x40, 0x03, 0x00, 0x01, 0x00][..]);
        assert!(decode(&mut buf, ProtocolVersion::V4, 100).is_err());
        let mut buf = BytesMut::from(&[0x40, 0x01, 0x00][..]);
        assert!(decode(&mut buf, ProtocolVersion::V4, 100).is_err());
    }
}
