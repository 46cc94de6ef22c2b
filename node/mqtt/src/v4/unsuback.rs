//! UNSUBACK for MQTT 3.1 and 3.1.1 (3.1.1 section 3.11): the packet identifier alone, no
//! payload; the MQTT 5.0 reason codes of [`UnsubAck`] are not sent.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{expect_end, read_packet_id};
use crate::{DecodeError, UnsubAck};

/// Packet identifier only.
pub(super) const LEN: usize = 2;

pub(super) fn read(mut buf: Bytes) -> Result<UnsubAck, DecodeError> {
    let packet_id = read_packet_id(&mut buf)?;
    expect_end(&buf)?;
    Ok(UnsubAck { packet_id, ..Default::default() })
}

pub(super) fn write(u: &UnsubAck, out: &mut BytesMut) {
    out.put_u16(u.packet_id.0);
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use crate::{Packet, PacketId, ProtocolVersion, ReasonCode, UnsubAck, decode, encode};

    #[test]
    fn unsuback_has_no_payload() {
        let packet = Packet::UnsubAck(UnsubAck {
            packet_id: PacketId(9),
            codes: vec![ReasonCode::SUCCESS],
            properties: Default::default(),
        });
        let mut out = BytesMut::new();
        encode(&packet, ProtocolVersion::V4, &mut out).unwrap();
        assert_eq!(
            &out[..],
            &[
                0xB0, 0x02, // UNSUBACK, remaining length 2
                0x00, 0x09, // packet id 9
            ]
        );
        let expected = Packet::UnsubAck(UnsubAck { packet_id: PacketId(9), ..Default::default() });
        assert_eq!(decode(&mut out, ProtocolVersion::V4, 100), Ok(Some(expected)));
    }
}
