//! `proxy_protocol = on` on a real `vernemq` process: a load balancer's PROXY header (v1 or v2)
//! names the client, whose address then appears in the log; with
//! `proxy_protocol_use_cn_as_username` the TLS common name the header carries is the user name
//! the ACL sees. A connection without the header is closed.

mod common;

use common::RawClient;
use common::process::Broker;
use vmq_mqtt::{Packet, ProtocolVersion, QoS, ReasonCode, SubAck, Subscribe, SubscribeFilter, SubscriptionOptions};

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// A PROXY v2 header for TCP over IPv4 from `src:sport`, with the TLS common name `cn` if given.
fn v2_header(src: [u8; 4], sport: u16, cn: Option<&str>) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&src);
    body.extend_from_slice(&[10, 0, 0, 1]);
    body.extend_from_slice(&sport.to_be_bytes());
    body.extend_from_slice(&1883u16.to_be_bytes());
    if let Some(cn) = cn {
        // PP2_TYPE_SSL: client flags, verify result, then the PP2_SUBTYPE_SSL_CN sub-TLV.
        let mut value = vec![0x01, 0, 0, 0, 0, 0x22];
        value.extend_from_slice(&(cn.len() as u16).to_be_bytes());
        value.extend_from_slice(cn.as_bytes());
        body.push(0x20);
        body.extend_from_slice(&(value.len() as u16).to_be_bytes());
        body.extend_from_slice(&value);
    }
    let mut out = V2_SIGNATURE.to_vec();
    out.extend_from_slice(&[0x21, 0x11]);
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Connects through `header` as client `id`; returns the client and its CONNACK.
async fn connect_behind(b: &Broker, header: &[u8], id: &str) -> (RawClient, Packet) {
    let mut c = RawClient::open(b.addr, ProtocolVersion::V4).await;
    c.send_bytes(header).await;
    let mut connect = RawClient::connect_packet(id, true);
    connect.protocol = Some(ProtocolVersion::V4);
    c.send(&Packet::Connect(Box::new(connect))).await;
    let ack = c.recv().await.expect("CONNACK");
    (c, ack)
}

fn accepted(ack: &Packet) -> bool {
    matches!(ack, Packet::ConnAck(a) if a.code == ReasonCode::SUCCESS)
}

#[tokio::test]
async fn the_client_address_from_a_proxy_header_is_the_one_logged() {
    let b = Broker::start("listener.tcp.proxy_protocol = on\n");
    let (_v2, ack) = connect_behind(&b, &v2_header([203, 0, 113, 7], 4711, None), "behind-v2").await;
    assert!(accepted(&ack), "{ack:?}");
    let line = b.wait_for_line("behind-v2");
    assert!(line.contains("peer=203.0.113.7:4711"), "{line}");

    let v1 = b"PROXY TCP4 198.51.100.9 10.0.0.1 5555 1883\r\n";
    let (_v1, ack) = connect_behind(&b, v1, "behind-v1").await;
    assert!(accepted(&ack), "{ack:?}");
    let line = b.wait_for_line("behind-v1");
    assert!(line.contains("peer=198.51.100.9:5555"), "{line}");

    // A client that talks MQTT straight to a listener that expects a balancer in front.
    let mut direct = RawClient::open(b.addr, ProtocolVersion::V4).await;
    direct.send(&Packet::Connect(Box::new(RawClient::connect_packet("direct", true)))).await;
    assert!(direct.until_closed().await.is_empty(), "a connection without a PROXY header was served");
    b.wait_for_line("no PROXY protocol header");
}

#[tokio::test]
async fn the_tls_common_name_in_a_proxy_v2_header_is_the_user_name_the_acl_sees() {
    let dir = tempfile::tempdir().expect("temp dir");
    let acl = dir.path().join("vmq.acl");
    std::fs::write(&acl, "user device-42\ntopic read devices/42/#\n").expect("write");
    let b = Broker::start(&format!(
        "listener.tcp.proxy_protocol = on\nlistener.tcp.proxy_protocol_use_cn_as_username = on\nvmq_acl.acl_file = {}\n",
        acl.display()
    ));
    for (cn, granted) in [(Some("device-42"), true), (Some("device-7"), false), (None, false)] {
        let (mut c, ack) = connect_behind(&b, &v2_header([203, 0, 113, 8], 4000, cn), "device").await;
        assert!(accepted(&ack), "{ack:?}");
        let options = SubscriptionOptions { qos: QoS::AtLeastOnce, ..SubscriptionOptions::default() };
        let filter = SubscribeFilter { filter: "devices/42/#".into(), options };
        c.send(&Packet::Subscribe(Subscribe {
            packet_id: vmq_mqtt::PacketId(1),
            filters: vec![filter],
            ..Subscribe::default()
        }))
        .await;
        let Some(Packet::SubAck(SubAck { codes, .. })) = c.recv().await else { panic!("no SUBACK") };
        let expected = if granted { ReasonCode(1) } else { ReasonCode(0x80) };
        assert_eq!(codes, vec![expected], "common name {cn:?}");
    }
}
