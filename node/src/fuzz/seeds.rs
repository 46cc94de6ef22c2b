//! The seed corpora in `node/fuzz/corpus/<target>/`: real packets, headers, frames and
//! messages, written with the project's own encoders (so they follow the formats as they are
//! now), plus a few near misses (truncated, one field off). The test
//! `the_committed_corpora_hold_every_seed_as_encoded_today` in `node/tests/fuzz.rs` checks that
//! the committed files are these seeds, and writes them with `VMQ_FUZZ_WRITE_SEEDS=1`; they are
//! what fuzzers start from.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use vmq_mqtt::{
    Auth, Connect, Disconnect, Packet, PacketId, Properties, ProtocolVersion, PubResp, Publish, QoS, ReasonCode,
    Subscribe, SubscribeFilter, SubscriptionOptions, Unsubscribe, Will, encode,
};
use vmq_storage::metadata::{MetaKey, MetaValue, NodeId};

use super::proxy_header::{LOCAL, PROXY, V2_SIGNATURE, ssl_tlv, tlv, v2_header};
use super::{mqtt_codec, websocket_frames};
use crate::broker::message::{Delivery, ForwardedProperties, Msg};
use crate::broker::persist::encode_delivery;
use crate::cluster::membership::Membership;
use crate::cluster::transport::frame::{StreamKind, frame_prefix};
use crate::cluster::transport::hello::{EXPORTED_LEN, Hello, MAGIC, Role};
use crate::cluster::transport::reliable::ControlFrame;
use crate::cluster::wire::{
    self, ForwardedPublish, HandOver, LeaveProgress, MetadataFrame, NodeSubscriptions, PublishFrame, Request, Response,
    RetainValue, RpcFrame, SubscriberValue, WireInflight, WireProperties, WireSubscription, encode_key, publish,
};

/// One corpus file: its name and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// The file name, saying what the input is.
    pub name: String,
    /// The input, selector byte included where the target has one.
    pub input: Vec<u8>,
}

fn seed(name: impl Into<String>, input: Vec<u8>) -> Seed {
    Seed { name: name.into(), input }
}

/// The seeds of the target named `name`; `None` for a target without any here.
pub fn for_target(name: &str) -> Option<Vec<Seed>> {
    match name {
        "mqtt" => Some(mqtt()),
        "proxy" => Some(proxy()),
        "cluster_frames" => Some(cluster_frames()),
        "metadata" => Some(metadata()),
        "websocket" => Some(websocket()),
        _ => None,
    }
}

fn mqtt() -> Vec<Seed> {
    let mut seeds = Vec::new();
    for (selector, version, prefix) in
        [(0u8, ProtocolVersion::V3, "v3"), (1, ProtocolVersion::V4, "v4"), (2, ProtocolVersion::V5, "v5")]
    {
        debug_assert_eq!(mqtt_codec::version(selector), version);
        let v5 = version.is_v5();
        let mut packets = vec![
            ("connect", vec![connect(version, false)]),
            ("connect-will-auth", vec![connect(version, true)]),
            ("publish-qos0", vec![publish(QoS::AtMostOnce, None, v5)]),
            ("publish-qos2-retain", vec![publish(QoS::ExactlyOnce, Some(7), v5)]),
            ("subscribe", vec![subscribe(v5)]),
            (
                "session",
                vec![
                    connect(version, false),
                    subscribe(v5),
                    publish(QoS::AtLeastOnce, Some(1), v5),
                    Packet::PubAck(PubResp { packet_id: PacketId(1), ..PubResp::default() }),
                    Packet::Unsubscribe(Unsubscribe {
                        packet_id: PacketId(3),
                        filters: vec!["a/#".into()],
                        properties: Properties::default(),
                    }),
                    Packet::PingReq,
                    Packet::Disconnect(Disconnect {
                        code: ReasonCode(if v5 { 0x04 } else { 0 }),
                        ..Default::default()
                    }),
                ],
            ),
        ];
        if v5 {
            let auth = Properties {
                authentication_method: Some("SCRAM-SHA-1".into()),
                authentication_data: Some(Bytes::from_static(b"client-first")),
                ..Properties::default()
            };
            packets.push(("auth", vec![Packet::Auth(Auth { code: ReasonCode(0x18), properties: auth })]));
        }
        for (name, packets) in packets {
            let Some(bytes) = mqtt_bytes(selector, version, &packets) else { continue };
            // A near miss: the same bytes one short, which the decoder must wait on.
            if name == "publish-qos2-retain" {
                seeds.push(seed(format!("{prefix}-{name}-truncated"), bytes[..bytes.len() - 1].to_vec()));
            }
            seeds.push(seed(format!("{prefix}-{name}"), bytes));
        }
    }
    seeds
}

fn mqtt_bytes(selector: u8, version: ProtocolVersion, packets: &[Packet]) -> Option<Vec<u8>> {
    let mut out = BytesMut::new();
    for packet in packets {
        encode(packet, version, &mut out).ok()?;
    }
    Some([&[selector][..], &out].concat())
}

fn connect(version: ProtocolVersion, full: bool) -> Packet {
    let v5 = version.is_v5();
    let properties = if v5 {
        Properties {
            session_expiry_interval: Some(3600),
            receive_maximum: Some(20),
            topic_alias_maximum: Some(10),
            user_properties: vec![("region".into(), "eu".into())],
            ..Properties::default()
        }
    } else {
        Properties::default()
    };
    let will = full.then(|| Will {
        topic: "status/c1".into(),
        payload: Bytes::from_static(b"offline"),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: if v5 {
            Properties { will_delay_interval: Some(5), content_type: Some("text/plain".into()), ..Default::default() }
        } else {
            Properties::default()
        },
    });
    Packet::Connect(Box::new(Connect {
        protocol: Some(version),
        clean_start: !full,
        keep_alive: 60,
        client_id: "c1".into(),
        will,
        username: full.then(|| "user".into()),
        password: full.then(|| Bytes::from_static(b"secret")),
        properties,
    }))
}

fn publish(qos: QoS, packet_id: Option<u16>, v5: bool) -> Packet {
    let properties = if v5 {
        Properties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(60),
            topic_alias: Some(1),
            content_type: Some("application/json".into()),
            response_topic: Some("re/ply".into()),
            correlation_data: Some(Bytes::from_static(b"id-1")),
            user_properties: vec![("k".into(), "v".into())],
            ..Properties::default()
        }
    } else {
        Properties::default()
    };
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: qos == QoS::ExactlyOnce,
        topic: "a/b".into(),
        packet_id: packet_id.map(PacketId),
        payload: Bytes::from_static(b"{\"t\":21.5}"),
        properties,
    })
}

fn subscribe(v5: bool) -> Packet {
    let options = |qos, no_local| SubscriptionOptions {
        qos,
        no_local: v5 && no_local,
        retain_as_published: v5,
        retain_handling: if v5 { 1 } else { 0 },
    };
    Packet::Subscribe(Subscribe {
        packet_id: PacketId(2),
        filters: vec![
            SubscribeFilter { filter: "a/#".into(), options: options(QoS::AtLeastOnce, true) },
            SubscribeFilter { filter: "$share/g/sensors/+/t".into(), options: options(QoS::ExactlyOnce, false) },
        ],
        properties: if v5 {
            Properties { subscription_identifiers: vec![7], ..Default::default() }
        } else {
            Default::default()
        },
    })
}

fn websocket() -> Vec<Seed> {
    // Client frames are masked; this mask is the one the seeds use.
    let frame = |opcode: u8, payload: &[u8]| {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut out = vec![0x80 | opcode];
        match payload.len() {
            n @ 0..=125 => out.push(0x80 | n as u8),
            n => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    };
    let connect = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00";
    let (head, tail) = connect.split_at(5);
    // Selector 1: the upgrade request is prepended; 0: the input carries its own.
    let upgraded = |frames: &[Vec<u8>]| [&[1u8][..], &frames.concat()].concat();
    // A binary message in two frames: the first without FIN, the second a continuation.
    let mut first_fragment = frame(0x2, head);
    first_fragment[0] = 0x02;
    let wrong_path = String::from_utf8_lossy(websocket_frames::UPGRADE).replacen("/mqtt", "/", 1);
    vec![
        seed("connect-in-one-frame", upgraded(&[frame(0x2, connect)])),
        seed("connect-split-across-frames", upgraded(&[frame(0x2, head), frame(0x2, tail)])),
        seed("connect-fragmented-message", upgraded(&[first_fragment, frame(0x0, tail)])),
        seed("ping-then-connect", upgraded(&[frame(0x9, b"ping"), frame(0x2, connect)])),
        seed("text-frame", upgraded(&[frame(0x1, b"not mqtt")])),
        seed("close-frame", upgraded(&[frame(0x8, &[0x03, 0xe8])])),
        seed("frame-over-64-bytes", [&[3u8][..], &frame(0x2, &[0u8; 200])].concat()),
        seed("own-upgrade-request", [&[0u8][..], websocket_frames::UPGRADE, &frame(0x2, connect)].concat()),
        seed("wrong-path", [&[0u8][..], wrong_path.as_bytes()].concat()),
    ]
}

fn proxy() -> Vec<Seed> {
    // What follows a header is the connection's own: an MQTT CONNECT here.
    let connect = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00";
    let ipv4 = [[203, 0, 113, 7], [10, 0, 0, 1]].concat();
    let ports = [0x12, 0x67, 0x07, 0x5b];
    let ipv4_block = [&ipv4[..], &ports].concat();
    let ipv6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let ipv6_block = [&ipv6[..], &ipv6, &ports].concat();
    let alpn = tlv(0x01, b"mqtt");
    // An SSL TLV with a version sub-TLV before the common name.
    let ssl_with_version = {
        let mut value = vec![0x01, 0, 0, 0, 0];
        value.extend_from_slice(&tlv(0x21, b"TLSv1.3"));
        value.extend_from_slice(&tlv(0x22, b"device-42"));
        tlv(0x20, &value)
    };
    vec![
        seed("v1-tcp4", [&b"PROXY TCP4 203.0.113.7 10.0.0.1 4711 1883\r\n"[..], connect].concat()),
        seed("v1-tcp6", b"PROXY TCP6 2001:db8::1 2001:db8::2 5000 1883\r\n".to_vec()),
        seed("v1-unknown", b"PROXY UNKNOWN\r\n".to_vec()),
        seed(
            "v1-longest",
            b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"
                .to_vec(),
        ),
        seed("v1-no-crlf", b"PROXY TCP4 203.0.113.7 10.0.0.1 4711 1883\n".to_vec()),
        seed("v2-tcp4", [&v2_header(PROXY, 0x11, &ipv4_block)[..], connect].concat()),
        seed("v2-tcp4-tls-cn", v2_header(PROXY, 0x11, &[&ipv4_block[..], &ssl_tlv(b"device-42")].concat())),
        seed("v2-tcp6-alpn-tls", v2_header(PROXY, 0x21, &[&ipv6_block[..], &alpn, &ssl_with_version].concat())),
        seed("v2-local", v2_header(LOCAL, 0x00, &[])),
        seed("v2-local-tcp4", v2_header(LOCAL, 0x11, &ipv4_block)),
        seed("v2-truncated-tlv", v2_header(PROXY, 0x11, &[&ipv4_block[..], &[0x20, 0, 9, 1]].concat())),
        seed("v2-signature-only", V2_SIGNATURE.to_vec()),
        seed("not-proxy", connect.to_vec()),
    ]
}

fn cluster_frames() -> Vec<Seed> {
    const HELLO: u8 = 0;
    const STREAM: u8 = 1;
    const CONTROL: u8 = 2;
    const PUBLISH: u8 = 3;
    let with = |selector: u8, bytes: &[u8]| [&[selector][..], bytes].concat();
    let mut seeds = Vec::new();
    let exported = [7u8; EXPORTED_LEN];
    for (name, node, backend) in [("hello-swc", "a@h", "vmq_swc"), ("hello-plumtree", "vmq1@10.0.0.1", "vmq_plumtree")]
    {
        if let Some(wire) = Hello::new(NodeId::new(node), backend).encode(b"cookie", Role::Acceptor, &exported) {
            seeds.push(seed(name, with(HELLO, &wire)));
        }
    }
    let future = [&MAGIC[..], &9u16.to_be_bytes(), b"a format from the future"].concat();
    seeds
        .push(seed("hello-future-version", with(HELLO, &[&(future.len() as u16).to_be_bytes()[..], &future].concat())));

    let now = Instant::now();
    let full = publish::encode(&full_msg(now), true, &[("c2".into(), "$share/g/a/+".into())], now);
    let minimal = publish::encode(&minimal_msg(), false, &[], now);
    let v1 = wire::encode(&PublishFrame::V1(ForwardedPublish {
        mountpoint: String::new(),
        topic: "a/b".into(),
        payload: b"hello".to_vec(),
        qos: 1,
        retain: false,
        properties: Some(WireProperties::default()),
        expiry_ms: Some(60_000),
        publisher: Some("c1".into()),
        plain: true,
        shared: vec![("c2".into(), "$share/g/a/+".into())],
    }));
    let numbered = |seq: u64, payload: &[u8]| framed(&[&seq.to_be_bytes()[..], payload].concat());
    let incarnation = 0x0123_4567_89ab_cdefu64.to_be_bytes();
    let publish_stream = [
        &StreamKind::Publish.header()[..],
        &incarnation,
        &numbered(1, &full),
        &numbered(2, &minimal),
        &numbered(3, &v1),
    ]
    .concat();
    seeds.push(seed("stream-publish", with(STREAM, &publish_stream)));
    let heartbeat = ControlFrame::Heartbeat.encode();
    let ack = ControlFrame::Ack { incarnation: 1, upto: 42, refused: vec![40] }.encode();
    let control_stream = [&StreamKind::Control.header()[..], &framed(&heartbeat), &framed(&ack)].concat();
    seeds.push(seed("stream-control", with(STREAM, &control_stream)));
    let metadata_stream = [&StreamKind::Metadata.header()[..], &framed(b"\x00\x01\x02")].concat();
    seeds.push(seed("stream-metadata", with(STREAM, &metadata_stream)));
    // A frame announcing one byte more than the 16 MiB maximum.
    let too_long = [&StreamKind::Rpc.header()[..], &[0x01, 0x00, 0x00, 0x01]].concat();
    seeds.push(seed("stream-rpc-frame-too-long", with(STREAM, &too_long)));

    seeds.push(seed("control-heartbeat", with(CONTROL, &heartbeat)));
    seeds.push(seed("control-ack", with(CONTROL, &ack)));
    let empty_ack = ControlFrame::Ack { incarnation: u64::MAX, upto: 0, refused: vec![] }.encode();
    seeds.push(seed("control-ack-empty", with(CONTROL, &empty_ack)));
    seeds.push(seed("publish-compact-full", with(PUBLISH, &full)));
    seeds.push(seed("publish-compact-minimal", with(PUBLISH, &minimal)));
    seeds.push(seed("publish-postcard-v1", with(PUBLISH, &v1)));
    seeds
}

/// A frame on a data stream: length prefix and payload.
fn framed(payload: &[u8]) -> Vec<u8> {
    let prefix = frame_prefix(payload.len()).unwrap_or_default();
    [&prefix[..], payload].concat()
}

fn full_msg(now: Instant) -> Msg {
    Msg {
        mountpoint: "mp".into(),
        topic: "a/b".into(),
        payload: Bytes::from_static(b"hello"),
        qos: QoS::ExactlyOnce,
        retain: true,
        properties: Some(Arc::new(ForwardedProperties {
            payload_format_indicator: Some(1),
            content_type: Some("text/plain".into()),
            response_topic: Some("re/ply".into()),
            correlation_data: Some(Bytes::from_static(b"id")),
            user_properties: vec![("k".into(), "v".into())],
        })),
        expires_at: Some(now + Duration::from_secs(60)),
        publisher: Some("c1".into()),
    }
}

fn minimal_msg() -> Msg {
    Msg {
        mountpoint: "".into(),
        topic: "t".into(),
        payload: Bytes::new(),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: None,
        expires_at: None,
        publisher: None,
    }
}

fn metadata() -> Vec<Seed> {
    const SWC: u8 = 0;
    const PLUMTREE: u8 = 1;
    const KEY: u8 = 2;
    const SUBSCRIBER: u8 = 3;
    const RETAIN: u8 = 4;
    const METADATA_FRAME: u8 = 5;
    const RPC_FRAME: u8 = 6;
    const DELIVERY: u8 = 7;
    let with = |selector: u8, bytes: &[u8]| [&[selector][..], bytes].concat();
    let mut seeds = Vec::new();
    let swc = swc_messages();
    let plumtree = plumtree_messages();
    for (name, bytes) in &swc {
        seeds.push(seed(format!("swc-{name}"), with(SWC, bytes)));
    }
    for (name, bytes) in &plumtree {
        seeds.push(seed(format!("plumtree-{name}"), with(PLUMTREE, bytes)));
    }
    seeds.push(seed("key-client", with(KEY, &encode_key("", "client-1"))));
    seeds.push(seed("key-topic", with(KEY, &encode_key("mp", "a/+/b"))));

    let subscription = |filter: &str, qos| WireSubscription {
        filter: filter.into(),
        qos,
        no_local: qos == 2,
        retain_as_published: false,
        retain_handling: 0,
        id: (qos == 1).then_some(7),
    };
    let entries = vec![NodeSubscriptions {
        node: NodeId::new("vmq1@10.0.0.1"),
        clean_session: false,
        subscriptions: vec![subscription("a/#", 1), subscription("$share/g/b/+", 2)],
    }];
    let subscriber_v2 = wire::encode(&SubscriberValue::V2 { epoch: 3, entries: entries.clone() });
    seeds.push(seed("subscriber-v1", with(SUBSCRIBER, &wire::encode(&SubscriberValue::V1(entries.clone())))));
    seeds.push(seed("subscriber-v2", with(SUBSCRIBER, &subscriber_v2)));
    let retain = RetainValue::V1 {
        payload: b"21.5".to_vec(),
        qos: 1,
        properties: Some(WireProperties::default()),
        expires_unix_ms: Some(1_700_000_000_000),
    };
    seeds.push(seed("retain", with(RETAIN, &wire::encode(&retain))));

    if let Some((_, bytes)) = swc.first() {
        seeds.push(seed(
            "frame-replica-swc",
            with(METADATA_FRAME, &wire::encode(&MetadataFrame::Replica(bytes.clone()))),
        ));
    }
    if let Some((_, bytes)) = plumtree.last() {
        let frame = MetadataFrame::Replica(bytes.clone());
        seeds.push(seed("frame-replica-plumtree", with(METADATA_FRAME, &wire::encode(&frame))));
    }
    let mut membership = Membership::alone(&NodeId::new("vmq1@10.0.0.1"), addr(1));
    membership.add(&NodeId::new("vmq2@10.0.0.2"), addr(2));
    let gossip = MetadataFrame::Membership(membership.state().clone());
    seeds.push(seed("frame-membership", with(METADATA_FRAME, &wire::encode(&gossip))));

    let delivery_full = encode_delivery(&delivery(full_msg(Instant::now())));
    let delivery_minimal = encode_delivery(&delivery(minimal_msg()));
    let key = || (String::new(), "client-1".to_string());
    let rpc = [
        ("join", RpcFrame::JoinRequest { node: NodeId::new("vmq2@10.0.0.2"), addr: addr(2) }),
        (
            "register",
            RpcFrame::Request { id: 1, body: Request::Register { key: key(), clean_start: false, known_epoch: 2 } },
        ),
        (
            "drain",
            RpcFrame::Request {
                id: 2,
                body: Request::Drain {
                    key: key(),
                    epoch: 3,
                    messages: vec![delivery_full.clone(), delivery_minimal.clone()],
                },
            },
        ),
        (
            "granted-handover",
            RpcFrame::Response {
                id: 1,
                body: Response::Granted {
                    epoch: 3,
                    session: Some(HandOver {
                        from: NodeId::new("vmq1@10.0.0.1"),
                        subscriptions: vec![subscription("a/#", 1)],
                        queued: 2,
                        inflight: vec![WireInflight { packet_id: 9, state: 1, delivery: delivery_minimal.clone() }],
                        incoming_qos2: vec![4],
                    }),
                },
            },
        ),
        (
            "leave-progress",
            RpcFrame::Response {
                id: 5,
                body: Response::Progress {
                    progress: LeaveProgress { phase: "draining".into(), queues_total: 3, ..LeaveProgress::default() },
                },
            },
        ),
    ];
    for (name, frame) in rpc {
        seeds.push(seed(format!("rpc-{name}"), with(RPC_FRAME, &wire::encode(&frame))));
    }
    seeds.push(seed("delivery-full", with(DELIVERY, &delivery_full)));
    seeds.push(seed("delivery-minimal", with(DELIVERY, &delivery_minimal)));
    seeds
}

fn addr(host: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, host], 44053))
}

fn delivery(msg: Msg) -> Delivery {
    Delivery { msg: Arc::new(msg), qos: QoS::AtLeastOnce, retain: false, subscription_ids: vec![7] }
}

fn swc_messages() -> Vec<(&'static str, Vec<u8>)> {
    use vmq_swc::dcc::Dcc;
    use vmq_swc::watermark::Watermark;
    use vmq_swc::wire::{Body, Envelope, WireObject};
    use vmq_swc::{Dot, NodeClock, ReplicaId, SwcMessage, VersionVector};

    let me = ReplicaId::new(NodeId::new("vmq1@10.0.0.1"), 7);
    let peer = ReplicaId::new(NodeId::new("vmq2@10.0.0.2"), 1);
    let mut object = Dcc::default();
    object.add(Dot::new(me.clone(), 3), Some(MetaValue { timestamp: 5 << 16, data: b"value".to_vec() }));
    object.add(Dot::new(peer.clone(), 2), None);
    let objects = vec![WireObject { key: MetaKey::new("subscriber", encode_key("", "client-1")), object }];
    let mut base = VersionVector::new();
    base.raise(&me, 2);
    let mut clock = NodeClock::new();
    for _ in 0..3 {
        clock.event(&me);
    }
    clock.add(&Dot::new(peer.clone(), 5));
    let mut watermark = Watermark::new();
    watermark.update_peer(&peer, &clock);
    let bodies = [
        ("broadcast", Body::Broadcast { base: base.clone(), objects: objects.clone() }),
        ("clock-request", Body::ClockRequest { exchange: 9 }),
        ("clock-reply", Body::ClockReply { exchange: 9, clock, watermark, retired: base.clone() }),
        ("missing-request", Body::MissingRequest { exchange: 9, batch: 1, dots: vec![(me.clone(), vec![4, 5])] }),
        (
            "missing-reply-part",
            Body::MissingReplyPart { exchange: 9, batch: 1, base, objects, unserved: vec![(peer, vec![6])] },
        ),
    ];
    bodies
        .into_iter()
        .filter_map(|(name, body)| {
            let message = SwcMessage::V1(Envelope { from: me.clone(), group: 1, body });
            message.to_bytes().ok().map(|bytes| (name, bytes))
        })
        .collect()
}

fn plumtree_messages() -> Vec<(&'static str, Vec<u8>)> {
    use vmq_plumtree::{DvvSet, Hello, IHave, Message, MessageV1, VersionVector};

    let root = NodeId::new("vmq1@10.0.0.1");
    let key = MetaKey::new("retain", encode_key("", "a/b"));
    let object =
        DvvSet::new().update(&VersionVector::new(), &root, Some(MetaValue { timestamp: 1, data: b"v".to_vec() }));
    let ihave = IHave { root: root.clone(), key: key.clone(), context: object.context() };
    [
        ("hello", Message::Hello(Hello::ours())),
        ("i-have", Message::V1(MessageV1::IHave(vec![ihave.clone()]))),
        ("graft", Message::V1(MessageV1::Graft(ihave))),
        ("prune", Message::V1(MessageV1::Prune { root: root.clone() })),
        ("exchange-root", Message::V1(MessageV1::ExchangeRoot { exchange: 4, prefixes: vec![("retain".into(), 77)] })),
        ("broadcast", Message::V1(MessageV1::Broadcast { root, key, object })),
    ]
    .into_iter()
    .map(|(name, message)| (name, message.encode()))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::transport::frame::parse_frame_len;
    use crate::cluster::transport::hello;
    use crate::cluster::transport::reliable::split_seq;
    use crate::cluster::wire::publish::Decoder;

    /// The seeds that are near misses on purpose; every other seed must be accepted by its
    /// decoder, or the targets' round-trip checks would never run on it.
    const NEAR_MISSES: [&str; 12] = [
        "v3-publish-qos2-retain-truncated",
        "v4-publish-qos2-retain-truncated",
        "v5-publish-qos2-retain-truncated",
        "v1-no-crlf",
        "v2-truncated-tlv",
        "v2-signature-only",
        "not-proxy",
        "hello-future-version",
        "stream-rpc-frame-too-long",
        "text-frame",
        "frame-over-64-bytes",
        "wrong-path",
    ];

    fn accepted(target: &str, input: &[u8]) -> bool {
        let Some((&selector, rest)) = input.split_first() else { return false };
        match target {
            "mqtt" => {
                let mut buf = BytesMut::from(rest);
                let version = mqtt_codec::version(selector);
                while let Ok(Some(_)) = vmq_mqtt::decode(&mut buf, version, usize::MAX) {}
                buf.is_empty()
            }
            "proxy" => {
                let mut stream = input;
                let future = std::pin::pin!(crate::listener::proxy::read_header(&mut stream));
                let waker = std::task::Waker::noop();
                matches!(future.poll(&mut std::task::Context::from_waker(waker)), std::task::Poll::Ready(Ok(_)))
            }
            "cluster_frames" => match selector % 4 {
                0 => rest.get(2..).is_some_and(|body| hello::decode(body).is_ok()),
                1 => stream_accepted(rest),
                2 => ControlFrame::decode(rest).is_some(),
                _ => Decoder::default().decode(Bytes::copy_from_slice(rest)).is_some(),
            },
            "metadata" => match selector % 8 {
                0 => vmq_swc::SwcMessage::from_bytes(rest).is_ok(),
                1 => vmq_plumtree::Message::decode(rest).is_ok(),
                2 => wire::decode_key(rest).is_some(),
                3 => wire::decode::<SubscriberValue>(rest).is_some(),
                4 => wire::decode::<RetainValue>(rest).is_some(),
                5 => wire::decode::<MetadataFrame>(rest).is_some(),
                6 => wire::decode::<RpcFrame>(rest).is_some(),
                _ => crate::broker::persist::decode_delivery(rest).is_some(),
            },
            "websocket" => matches!(websocket_frames::session(input), Some((_, Ok(_)))),
            _ => false,
        }
    }

    fn stream_accepted(stream: &[u8]) -> bool {
        let Some((header, mut rest)) = stream.split_first_chunk() else { return false };
        let Ok(kind) = StreamKind::parse_header(*header) else { return false };
        if kind == StreamKind::Publish {
            let Some(frames) = rest.get(8..) else { return false };
            rest = frames;
        }
        while let Some((prefix, tail)) = rest.split_first_chunk() {
            let Ok(len) = parse_frame_len(*prefix, usize::MAX) else { return false };
            let Some(payload) = tail.get(..len) else { return false };
            let frame_ok = match kind {
                StreamKind::Control => ControlFrame::decode(payload).is_some(),
                StreamKind::Publish => split_seq(Bytes::copy_from_slice(payload))
                    .is_some_and(|(_, frame)| Decoder::default().decode(frame).is_some()),
                _ => true,
            };
            if !frame_ok {
                return false;
            }
            rest = &tail[len..];
        }
        rest.is_empty()
    }

    #[test]
    fn every_seed_but_the_near_misses_is_accepted_and_passes_its_target() {
        for target in super::super::TARGETS {
            let seeds = for_target(target.name).expect("every target has seeds");
            assert!((5..=30).contains(&seeds.len()), "{}: {} seeds", target.name, seeds.len());
            for seed in seeds {
                (target.run)(&seed.input);
                let near_miss = NEAR_MISSES.contains(&seed.name.as_str());
                assert_eq!(accepted(target.name, &seed.input), !near_miss, "{}/{}", target.name, seed.name);
            }
        }
    }
}
