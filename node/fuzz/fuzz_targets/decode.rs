//! Feeds arbitrary bytes to the MQTT decoder. The first input byte picks the protocol version;
//! the rest is a read buffer that is decoded packet by packet, as a connection task does.
//!
//! Beyond "never panics", every packet the decoder accepts must encode again and decode back
//! to itself: the decoder never produces a packet the encoder refuses or changes.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use vmq_mqtt::{ProtocolVersion, decode, encode};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let version = match selector % 3 {
        0 => ProtocolVersion::V3,
        1 => ProtocolVersion::V4,
        _ => ProtocolVersion::V5,
    };
    let mut buf = BytesMut::from(rest);
    while let Ok(Some(packet)) = decode(&mut buf, version, 1 << 20) {
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
});
