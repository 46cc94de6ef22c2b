//! The MQTT codec (`vmq_mqtt`), as a connection task drives it.

use bytes::BytesMut;
use vmq_mqtt::{ProtocolVersion, decode, encode};

/// The largest packet the target decodes: larger than any input, so that the size check is
/// reached only through a length field that lies.
const MAX_PACKET: usize = 1 << 20;

/// The protocol version selected by an input's first byte.
pub(super) fn version(selector: u8) -> ProtocolVersion {
    match selector % 3 {
        0 => ProtocolVersion::V3,
        1 => ProtocolVersion::V4,
        _ => ProtocolVersion::V5,
    }
}

/// The first byte picks the protocol version (`% 3`: 3.1, 3.1.1, 5.0); the rest is a read
/// buffer, decoded packet by packet. Every packet the decoder accepts must encode again and
/// decode back to itself: the decoder never produces a packet the encoder refuses or changes.
pub fn mqtt(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let version = version(selector);
    let mut buf = BytesMut::from(rest);
    while let Ok(Some(packet)) = decode(&mut buf, version, MAX_PACKET) {
        let mut out = BytesMut::new();
        if let Err(e) = encode(&packet, version, &mut out) {
            panic!("decoded packet does not encode: {e}: {packet:?}");
        }
        match decode(&mut out, version, usize::MAX) {
            Ok(Some(again)) => assert_eq!(again, packet, "re-encoding changed the packet"),
            other => panic!("re-encoded packet does not decode: {other:?}: {packet:?}"),
        }
        assert!(out.is_empty(), "re-encoding left trailing bytes");
    }
}
