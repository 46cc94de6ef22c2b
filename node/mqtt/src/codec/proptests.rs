//! Property tests of the codec: `decode(encode(p)) == p` for every packet valid in a version,
//! every strict prefix of an encoding is "need more bytes", an oversize packet is refused from
//! its header, and no input (random or a mutated valid encoding) makes `decode` panic.

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::option::of;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::FileFailurePersistence;

use super::{FixedHeader, decode, encode, encoded_len};
use crate::properties::{PropertyContext, id};
use crate::{
    Auth, ConnAck, Connect, DecodeError, Disconnect, Packet, PacketId, Properties, ProtocolVersion, PubResp, Publish,
    QoS, ReasonCode, SubAck, Subscribe, SubscribeFilter, SubscriptionOptions, UnsubAck, Unsubscribe, Will,
};

/// 128 cases by default; `PROPTEST_CASES` raises it for a longer hunt.
fn config(file: &'static str) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(128);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(file))),
        ..ProptestConfig::default()
    }
}

/// Strings without U+0000 and without wildcards, with multi-byte characters.
fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 _/é€😀-]{0,12}"
}

fn topic_name() -> impl Strategy<Value = String> {
    "[a-z0-9/é😀]{1,12}"
}

fn topic_filter() -> impl Strategy<Value = String> {
    "[a-z0-9/+#é]{1,12}"
}

fn binary() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..16).prop_map(Bytes::from)
}

fn flag() -> impl Strategy<Value = u8> {
    0..=1u8
}

fn qos() -> impl Strategy<Value = QoS> {
    select(vec![QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce])
}

fn nonzero_id() -> impl Strategy<Value = PacketId> {
    (1..=u16::MAX).prop_map(PacketId)
}

fn reason() -> impl Strategy<Value = ReasonCode> {
    any::<u8>().prop_map(ReasonCode)
}

/// Properties with values valid on the wire, restricted to those `ctx` allows.
fn properties(ctx: PropertyContext) -> impl Strategy<Value = Properties> {
    let a = (
        of(flag()),
        of(any::<u32>()),
        of(text()),
        of(topic_name()),
        of(binary()),
        vec(1..=268_435_455u32, 0..3),
        of(any::<u32>()),
        of(text()),
        of(any::<u16>()),
    );
    let b = (
        of(text()),
        of(binary()),
        of(flag()),
        of(any::<u32>()),
        of(flag()),
        of(text()),
        of(text()),
        of(text()),
        of(1..=u16::MAX),
    );
    let c = (
        of(any::<u16>()),
        of(1..=u16::MAX),
        of(flag()),
        of(flag()),
        vec((text(), text()), 0..3),
        of(1..=u32::MAX),
        of(flag()),
        of(flag()),
        of(flag()),
    );
    (a, b, c).prop_map(move |(a, b, c)| {
        let mut p = Properties {
            payload_format_indicator: a.0,
            message_expiry_interval: a.1,
            content_type: a.2,
            response_topic: a.3,
            correlation_data: a.4,
            subscription_identifiers: a.5,
            session_expiry_interval: a.6,
            assigned_client_identifier: a.7,
            server_keep_alive: a.8,
            authentication_method: b.0,
            authentication_data: b.1,
            request_problem_information: b.2,
            will_delay_interval: b.3,
            request_response_information: b.4,
            response_information: b.5,
            server_reference: b.6,
            reason_string: b.7,
            receive_maximum: b.8,
            topic_alias_maximum: c.0,
            topic_alias: c.1,
            maximum_qos: c.2,
            retain_available: c.3,
            user_properties: c.4,
            maximum_packet_size: c.5,
            wildcard_subscription_available: c.6,
            subscription_identifier_available: c.7,
            shared_subscription_available: c.8,
        };
        keep_allowed(&mut p, ctx);
        p
    })
}

/// Clears the properties `ctx` does not allow, as the decoder would never produce them.
fn keep_allowed(p: &mut Properties, ctx: PropertyContext) {
    let allowed = ctx.allowed();
    let on = |pid: u8| allowed & (1u64 << pid) != 0;
    macro_rules! clear {
        ($($pid:ident => $field:ident),* $(,)?) => {
            $(if !on(id::$pid) { p.$field = Default::default(); })*
        };
    }
    clear!(
        PAYLOAD_FORMAT_INDICATOR => payload_format_indicator,
        MESSAGE_EXPIRY_INTERVAL => message_expiry_interval,
        CONTENT_TYPE => content_type,
        RESPONSE_TOPIC => response_topic,
        CORRELATION_DATA => correlation_data,
        SUBSCRIPTION_IDENTIFIER => subscription_identifiers,
        SESSION_EXPIRY_INTERVAL => session_expiry_interval,
        ASSIGNED_CLIENT_IDENTIFIER => assigned_client_identifier,
        SERVER_KEEP_ALIVE => server_keep_alive,
        AUTHENTICATION_METHOD => authentication_method,
        AUTHENTICATION_DATA => authentication_data,
        REQUEST_PROBLEM_INFORMATION => request_problem_information,
        WILL_DELAY_INTERVAL => will_delay_interval,
        REQUEST_RESPONSE_INFORMATION => request_response_information,
        RESPONSE_INFORMATION => response_information,
        SERVER_REFERENCE => server_reference,
        REASON_STRING => reason_string,
        RECEIVE_MAXIMUM => receive_maximum,
        TOPIC_ALIAS_MAXIMUM => topic_alias_maximum,
        TOPIC_ALIAS => topic_alias,
        MAXIMUM_QOS => maximum_qos,
        RETAIN_AVAILABLE => retain_available,
        USER_PROPERTY => user_properties,
        MAXIMUM_PACKET_SIZE => maximum_packet_size,
        WILDCARD_SUBSCRIPTION_AVAILABLE => wildcard_subscription_available,
        SUBSCRIPTION_IDENTIFIER_AVAILABLE => subscription_identifier_available,
        SHARED_SUBSCRIPTION_AVAILABLE => shared_subscription_available,
    );
    if ctx != PropertyContext::Publish {
        p.subscription_identifiers.truncate(1);
    }
    if p.authentication_method.is_none() {
        p.authentication_data = None;
    }
}

/// Properties for `ctx` in 5.0, none before.
fn props(v: ProtocolVersion, ctx: PropertyContext) -> BoxedStrategy<Properties> {
    if v.is_v5() { properties(ctx).boxed() } else { Just(Properties::default()).boxed() }
}

fn connect(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let will = (topic_name(), binary(), qos(), any::<bool>(), props(v, PropertyContext::Will))
        .prop_map(|(topic, payload, qos, retain, properties)| Will { topic, payload, qos, retain, properties });
    (any::<bool>(), any::<u16>(), text(), of(will), of(text()), of(binary()), props(v, PropertyContext::Connect))
        .prop_map(move |(clean_start, keep_alive, client_id, will, username, password, properties)| {
            // [MQTT-3.1.2-22]: before 5.0 a password needs a user name.
            let password = if v.is_v5() || username.is_some() { password } else { None };
            Packet::Connect(Box::new(Connect {
                protocol: Some(v),
                clean_start,
                keep_alive,
                client_id,
                will,
                username,
                password,
                properties,
            }))
        })
}

fn connack(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    // The six codes with a 3.1.1 counterpart survive a 3.1.1 round trip.
    let code = if v.is_v5() {
        reason().boxed()
    } else {
        select(vec![0x00, 0x84, 0x85, 0x88, 0x86, 0x87]).prop_map(ReasonCode).boxed()
    };
    (any::<bool>(), code, props(v, PropertyContext::ConnAck)).prop_map(move |(session_present, code, properties)| {
        Packet::ConnAck(ConnAck { session_present: session_present && v != ProtocolVersion::V3, code, properties })
    })
}

fn publish(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let topic = if v.is_v5() { prop_oneof![Just(String::new()), topic_name()].boxed() } else { topic_name().boxed() };
    (any::<bool>(), qos(), any::<bool>(), topic, nonzero_id(), binary(), props(v, PropertyContext::Publish)).prop_map(
        |(dup, qos, retain, topic, id, payload, mut properties)| {
            let at_most_once = qos == QoS::AtMostOnce;
            if topic.is_empty() && properties.topic_alias.is_none() {
                properties.topic_alias = Some(1);
            }
            Packet::Publish(Publish {
                dup: dup && !at_most_once,
                qos,
                retain,
                topic: topic.into(),
                packet_id: (!at_most_once).then_some(id),
                payload,
                properties,
            })
        },
    )
}

fn pubresp(v: ProtocolVersion) -> impl Strategy<Value = PubResp> {
    let code = if v.is_v5() { reason().boxed() } else { Just(ReasonCode::SUCCESS).boxed() };
    (any::<u16>(), code, props(v, PropertyContext::PubResp)).prop_map(|(id, code, properties)| PubResp {
        packet_id: PacketId(id),
        code,
        properties,
    })
}

fn subscribe(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let options = if v.is_v5() {
        (qos(), any::<bool>(), any::<bool>(), 0..=2u8)
            .prop_map(|(qos, no_local, retain_as_published, retain_handling)| SubscriptionOptions {
                qos,
                no_local,
                retain_as_published,
                retain_handling,
            })
            .boxed()
    } else {
        qos().prop_map(|qos| SubscriptionOptions { qos, ..Default::default() }).boxed()
    };
    let filter = (topic_filter(), options).prop_map(|(filter, options)| SubscribeFilter { filter, options });
    (nonzero_id(), vec(filter, 1..4), props(v, PropertyContext::Subscribe))
        .prop_map(|(packet_id, filters, properties)| Packet::Subscribe(Subscribe { packet_id, filters, properties }))
}

fn suback(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let code = if v.is_v5() { reason().boxed() } else { select(vec![0, 1, 2, 0x80]).prop_map(ReasonCode).boxed() };
    (any::<u16>(), vec(code, 1..4), props(v, PropertyContext::SubAck))
        .prop_map(|(id, codes, properties)| Packet::SubAck(SubAck { packet_id: PacketId(id), codes, properties }))
}

fn unsubscribe(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (nonzero_id(), vec(topic_filter(), 1..4), props(v, PropertyContext::Unsubscribe)).prop_map(
        |(packet_id, filters, properties)| Packet::Unsubscribe(Unsubscribe { packet_id, filters, properties }),
    )
}

fn unsuback(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let codes = if v.is_v5() { vec(reason(), 1..4).boxed() } else { Just(Vec::new()).boxed() };
    (any::<u16>(), codes, props(v, PropertyContext::UnsubAck))
        .prop_map(|(id, codes, properties)| Packet::UnsubAck(UnsubAck { packet_id: PacketId(id), codes, properties }))
}

fn disconnect(v: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let code = if v.is_v5() { reason().boxed() } else { Just(ReasonCode::SUCCESS).boxed() };
    (code, props(v, PropertyContext::Disconnect))
        .prop_map(|(code, properties)| Packet::Disconnect(Disconnect { code, properties }))
}

fn auth() -> impl Strategy<Value = Packet> {
    (reason(), properties(PropertyContext::Auth)).prop_map(|(code, properties)| Packet::Auth(Auth { code, properties }))
}

/// Any packet valid in version `v`, with every field the version carries.
fn packet(v: ProtocolVersion) -> BoxedStrategy<Packet> {
    let common = prop_oneof![
        connect(v),
        connack(v),
        publish(v),
        pubresp(v).prop_map(Packet::PubAck),
        pubresp(v).prop_map(Packet::PubRec),
        pubresp(v).prop_map(Packet::PubRel),
        pubresp(v).prop_map(Packet::PubComp),
        subscribe(v),
        suback(v),
        unsubscribe(v),
        unsuback(v),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        disconnect(v),
    ];
    if v.is_v5() { prop_oneof![13 => common, 1 => auth()].boxed() } else { common.boxed() }
}

fn version() -> impl Strategy<Value = ProtocolVersion> {
    select(vec![ProtocolVersion::V3, ProtocolVersion::V4, ProtocolVersion::V5])
}

fn versioned_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
    version().prop_flat_map(|v| (Just(v), packet(v)))
}

fn encode_ok(p: &Packet, v: ProtocolVersion) -> BytesMut {
    let mut out = BytesMut::new();
    encode(p, v, &mut out).expect("generated packets are valid for their version");
    out
}

/// Decodes packets until the input is used up or refused; must never panic.
fn decode_all(bytes: &[u8], v: ProtocolVersion) -> Vec<Result<Packet, DecodeError>> {
    let mut buf = BytesMut::from(bytes);
    let mut results = Vec::new();
    loop {
        match decode(&mut buf, v, 1 << 16) {
            Ok(Some(p)) => results.push(Ok(p)),
            Ok(None) => return results,
            Err(e) => {
                results.push(Err(e));
                return results;
            }
        }
    }
}

/// Whatever the decoder accepts, the encoder must write back to the same packet.
fn assert_decoded_packets_re_encode(results: &[Result<Packet, DecodeError>], v: ProtocolVersion) {
    for p in results.iter().flatten() {
        let bytes = encode_ok(p, v);
        assert_eq!(decode_all(&bytes, v), vec![Ok(p.clone())]);
    }
}

proptest! {
    #![proptest_config(config("../../proptest-regressions/mqtt-codec-round-trip.txt"))]
    #[test]
    fn round_trip((v, p) in versioned_packet()) {
        let mut buf = encode_ok(&p, v);
        prop_assert_eq!(encoded_len(&p, v), buf.len());
        prop_assert_eq!(decode(&mut buf, v, usize::MAX), Ok(Some(p)));
        prop_assert!(buf.is_empty());
    }
}

proptest! {
    #![proptest_config(config("../../proptest-regressions/mqtt-codec-round-trip-back-to-back.txt"))]
    #[test]
    fn round_trip_back_to_back(
        (v, packets) in version().prop_flat_map(|v| (Just(v), vec(packet(v), 1..6))),
    ) {
        // Several packets in one buffer come out one by one, in order.
        let mut buf = BytesMut::new();
        for p in &packets {
            encode(p, v, &mut buf).expect("valid packet");
        }
        prop_assert_eq!(decode_all(&buf, v), packets.into_iter().map(Ok).collect::<Vec<_>>());
    }
}

proptest! {
    #![proptest_config(config("../../proptest-regressions/mqtt-codec-truncation.txt"))]
    #[test]
    fn every_prefix_of_a_valid_encoding_needs_more_bytes((v, p) in versioned_packet()) {
        let bytes = encode_ok(&p, v);
        for end in 0..bytes.len() {
            let mut prefix = BytesMut::from(&bytes[..end]);
            prop_assert_eq!(decode(&mut prefix, v, usize::MAX), Ok(None), "prefix of {} bytes", end);
            prop_assert_eq!(prefix.len(), end, "a prefix must not be consumed");
        }
    }
}

proptest! {
    #![proptest_config(config("../../proptest-regressions/mqtt-codec-oversize.txt"))]
    #[test]
    fn oversize_is_rejected_from_the_fixed_header_alone((v, p) in versioned_packet()) {
        let bytes = encode_ok(&p, v);
        let header = FixedHeader::parse(&bytes).expect("valid header").expect("whole header");
        let header_len = header.header_len;
        let mut header = BytesMut::from(&bytes[..header_len]);
        prop_assert_eq!(
            decode(&mut header, v, bytes.len() - 1),
            Err(DecodeError::PacketTooLarge { size: bytes.len(), max: bytes.len() - 1 })
        );
    }
}

proptest! {
    #![proptest_config(config("../../proptest-regressions/mqtt-codec-arbitrary-bytes.txt"))]
    #[test]
    fn decode_never_panics_on_arbitrary_bytes(
        v in version(),
        byte1 in prop_oneof![any::<u8>(), select(vec![0x10u8, 0x20, 0x30, 0x32, 0x34, 0x3B, 0x40, 0x50, 0x62, 0x70, 0x82, 0x90, 0xA2, 0xB0, 0xE0, 0xF0])],
        body in vec(any::<u8>(), 0..96),
        raw in any::<bool>(),
    ) {
        // Half the inputs get a consistent fixed header so that the body parsers are reached.
        let mut bytes = Vec::with_capacity(body.len() + 2);
        if !raw {
            bytes.push(byte1);
            bytes.push(body.len() as u8);
        }
        bytes.extend_from_slice(&body);
        let results = decode_all(&bytes, v);
        assert_decoded_packets_re_encode(&results, v);
    }
}

proptest! {
    #![proptest_config(config("../../proptest-regressions/mqtt-codec-mutation.txt"))]
    #[test]
    fn decode_never_panics_on_mutated_encodings(
        (v, p) in versioned_packet(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = encode_ok(&p, v).to_vec();
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        let results = decode_all(&bytes, v);
        assert_decoded_packets_re_encode(&results, v);
    }
}

proptest! {
    #![proptest_config(config("../../proptest-regressions/mqtt-codec-scan.txt"))]
    #[test]
    fn scan_agrees_with_a_byte_by_byte_search(
        raw in vec(prop_oneof![any::<u8>(), select(vec![0u8, b'+', b'#', b'/'])], 0..40),
    ) {
        let nul = raw.contains(&0);
        let wildcard = raw.iter().any(|&b| b == b'+' || b == b'#');
        let found = super::scan(&raw);
        prop_assert_eq!(found & super::HAS_NUL != 0, nul);
        prop_assert_eq!(found & super::HAS_WILDCARD != 0, wildcard);
    }
}
