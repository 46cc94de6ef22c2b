//! Scripted packet exchanges between clients and sessions, in virtual time (see
//! [`super::harness`]).

use std::time::Duration;

use bytes::Bytes;
use vmq_mqtt::Publish;

use super::harness::*;
use super::*;
use vmq_storage::QueueKey;

const V4: ProtocolVersion = ProtocolVersion::V4;
const V5: ProtocolVersion = ProtocolVersion::V5;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The packets' kinds and ids, for assertion messages.
fn publishes(packets: &[Packet]) -> Vec<&Publish> {
    packets.iter().filter_map(|p| if let Packet::Publish(p) = p { Some(p) } else { None }).collect()
}

fn v5_persistent(client_id: &str, expiry: u32) -> Connect {
    let mut c = connect_packet(V5, client_id, false);
    c.properties.session_expiry_interval = Some(expiry);
    c
}

/// A connected subscriber to `filter`, its CONNACK and SUBACK read.
async fn subscriber(h: &Harness, c: Connect, filter: &str, qos: QoS) -> Client {
    let mut sub = h.connect(c).await;
    assert!(matches!(sub.recv()[..], [Packet::ConnAck(_)]));
    sub.send(subscribe(1, filter, qos));
    h.drive(&mut [&mut sub]).await;
    let granted = sub.recv();
    assert!(matches!(&granted[..], [Packet::SubAck(a)] if a.codes == [ReasonCode(qos as u8)]), "{granted:?}");
    sub
}

async fn publisher(h: &Harness, c: Connect) -> Client {
    let mut client = h.connect(c).await;
    assert!(matches!(client.recv()[..], [Packet::ConnAck(_)]));
    client
}

#[tokio::test]
async fn qos1_publish_is_acknowledged_delivered_and_released_by_the_subscribers_puback() {
    let h = Harness::new();
    let mut sub = subscriber(&h, connect_packet(V5, "sub", true), "t/#", QoS::AtLeastOnce).await;
    let mut publ = publisher(&h, connect_packet(V5, "pub", true)).await;
    publ.send(publish("t/a", QoS::AtLeastOnce, Some(7), b"m"));
    h.drive(&mut [&mut publ, &mut sub]).await;
    assert!(matches!(&publ.recv()[..], [Packet::PubAck(r)] if r.packet_id.0 == 7 && r.code == ReasonCode::SUCCESS));
    let got = sub.recv();
    let [Packet::Publish(p)] = &got[..] else { panic!("{got:?}") };
    assert_eq!((p.qos, &*p.topic, &p.payload[..]), (QoS::AtLeastOnce, "t/a", &b"m"[..]));
    let id = p.packet_id.expect("QoS 1 has a packet id").0;
    assert_eq!(sub.session().inflight.outgoing.len(), 1);
    sub.send(Packet::PubAck(resp(id)));
    h.drive(&mut [&mut sub]).await;
    assert!(sub.session().inflight.outgoing.is_empty());
}

#[tokio::test]
async fn qos2_flows_in_both_directions_deliver_exactly_once_mqtt_4_3_3() {
    let h = Harness::new();
    let mut sub = subscriber(&h, connect_packet(V5, "sub", true), "t", QoS::ExactlyOnce).await;
    let mut publ = publisher(&h, connect_packet(V5, "pub", true)).await;

    // Publisher to server: PUBLISH, PUBREC; a resend before PUBREL is not routed again.
    publ.send(publish("t", QoS::ExactlyOnce, Some(3), b"once"));
    h.drive(&mut [&mut publ, &mut sub]).await;
    assert!(matches!(&publ.recv()[..], [Packet::PubRec(r)] if r.packet_id.0 == 3));
    let Packet::Publish(mut again) = publish("t", QoS::ExactlyOnce, Some(3), b"once") else { unreachable!() };
    again.dup = true;
    publ.send(Packet::Publish(again));
    h.drive(&mut [&mut publ, &mut sub]).await;
    assert!(matches!(&publ.recv()[..], [Packet::PubRec(r)] if r.packet_id.0 == 3));
    publ.send(Packet::PubRel(resp(3)));
    h.drive(&mut [&mut publ]).await;
    assert!(matches!(&publ.recv()[..], [Packet::PubComp(r)] if r.packet_id.0 == 3 && r.code == ReasonCode::SUCCESS));

    // Server to subscriber: one PUBLISH, then PUBREC, PUBREL, PUBCOMP.
    let got = sub.recv();
    let deliveries = publishes(&got);
    assert_eq!(deliveries.len(), 1, "delivered once: {got:?}");
    let id = deliveries[0].packet_id.expect("QoS 2 has a packet id").0;
    sub.send(Packet::PubRec(resp(id)));
    h.drive(&mut [&mut sub]).await;
    assert!(matches!(&sub.recv()[..], [Packet::PubRel(r)] if r.packet_id.0 == id));
    assert_eq!(sub.session().inflight.outgoing[&id].state, OutState::AwaitPubComp);
    sub.send(Packet::PubComp(resp(id)));
    h.drive(&mut [&mut sub]).await;
    assert!(sub.session().inflight.outgoing.is_empty());
}

#[tokio::test]
async fn mqtt_3_deliveries_are_resent_with_dup_after_retry_interval_and_mqtt_5_ones_are_not() {
    let mut h = Harness::new();
    h.cfg.retry_interval = secs(20);
    let mut old = subscriber(&h, connect_packet(V4, "v4", true), "t", QoS::AtLeastOnce).await;
    let mut new = subscriber(&h, connect_packet(V5, "v5", true), "t", QoS::AtLeastOnce).await;
    let mut publ = publisher(&h, connect_packet(V4, "pub", true)).await;
    publ.send(publish("t", QoS::AtLeastOnce, Some(1), b"m"));
    h.drive(&mut [&mut publ, &mut old, &mut new]).await;
    let first = old.recv();
    let [Packet::Publish(sent)] = &first[..] else { panic!("{first:?}") };
    assert!(!sent.dup);
    assert_eq!(publishes(&new.recv()).len(), 1);

    h.advance(secs(19), &mut [&mut old, &mut new]).await;
    assert!(old.recv().is_empty(), "not before retry_interval");
    h.advance(secs(1), &mut [&mut old, &mut new]).await;
    let retried = old.recv();
    assert!(
        matches!(&retried[..], [Packet::Publish(p)] if p.dup && p.packet_id == sent.packet_id && p.payload == sent.payload),
        "{retried:?}"
    );
    // MQTT 5 resends only on reconnect [MQTT-4.4.0-1].
    assert!(new.recv().is_empty());
    assert_eq!(new.session().poll_timeout(h.now), None);
}

#[tokio::test]
async fn topic_aliases_are_resolved_from_the_client_and_used_towards_it_mqtt_3_3_2_12() {
    let mut h = Harness::new();
    h.cfg.topic_alias_max_broker = 5;
    h.cfg.topic_alias_max_client = 5;
    let mut c = connect_packet(V5, "sub", true);
    c.properties.topic_alias_maximum = Some(5);
    let mut sub = subscriber(&h, c, "a/#", QoS::AtMostOnce).await;
    let mut publ = h.connect(connect_packet(V5, "pub", true)).await;
    let connack = publ.recv();
    assert!(matches!(&connack[..], [Packet::ConnAck(a)] if a.properties.topic_alias_maximum == Some(5)), "{connack:?}");

    // Client to server: the first PUBLISH sets alias 1, the second uses it with an empty topic.
    let Packet::Publish(mut first) = publish("a/b", QoS::AtMostOnce, None, b"1") else { unreachable!() };
    first.properties.topic_alias = Some(1);
    let mut second = first.clone();
    second.topic = "".into();
    second.payload = Bytes::from_static(b"2");
    publ.send(Packet::Publish(first));
    publ.send(Packet::Publish(second));
    h.drive(&mut [&mut publ, &mut sub]).await;

    // Server to client: the first delivery sets alias 1, the second carries only the alias.
    let got = sub.recv();
    let delivered: Vec<(&str, Option<u16>, &[u8])> =
        publishes(&got).iter().map(|p| (&*p.topic, p.properties.topic_alias, &p.payload[..])).collect();
    assert_eq!(delivered, vec![("a/b", Some(1), &b"1"[..]), ("", Some(1), &b"2"[..])]);

    // An alias above the announced maximum ends the connection [MQTT-3.3.2-9].
    let Packet::Publish(mut bad) = publish("a/c", QoS::AtMostOnce, None, b"3") else { unreachable!() };
    bad.properties.topic_alias = Some(6);
    publ.send(Packet::Publish(bad));
    h.drive(&mut [&mut publ, &mut sub]).await;
    assert!(matches!(&publ.recv()[..], [Packet::Disconnect(d)] if d.code == ReasonCode::TOPIC_ALIAS_INVALID));
    assert!(!publ.is_connected());
}

#[tokio::test]
async fn a_client_silent_for_one_and_a_half_keep_alives_is_disconnected_mqtt_3_1_2_24() {
    let mut h = Harness::new();
    let mut c = connect_packet(V5, "c", true);
    c.keep_alive = 10;
    let mut client = publisher(&h, c).await;
    h.advance(secs(14), &mut [&mut client]).await;
    client.send(Packet::PingReq);
    h.drive(&mut [&mut client]).await;
    assert!(matches!(client.recv()[..], [Packet::PingResp]));
    // Counted from the last packet received, not from CONNECT.
    h.advance(secs(14), &mut [&mut client]).await;
    assert!(client.is_connected());
    h.advance(secs(1), &mut [&mut client]).await;
    let got = client.recv();
    assert!(matches!(&got[..], [Packet::Disconnect(d)] if d.code == ReasonCode::KEEP_ALIVE_TIMEOUT), "{got:?}");
    assert!(!client.is_connected());
}

#[tokio::test]
async fn max_connection_lifetime_ends_the_connection_with_0xa0() {
    let mut h = Harness::new();
    h.max_connection_lifetime = Some(secs(60));
    let mut client = publisher(&h, connect_packet(V5, "c", true)).await;
    h.advance(secs(59), &mut [&mut client]).await;
    assert!(client.is_connected());
    h.advance(secs(1), &mut [&mut client]).await;
    assert!(matches!(&client.recv()[..], [Packet::Disconnect(d)] if d.code == ReasonCode::MAXIMUM_CONNECT_TIME));
}

fn with_will(mut c: Connect, topic: &str, delay: u32) -> Connect {
    let properties = Properties { will_delay_interval: Some(delay), ..Properties::default() };
    c.will = Some(Will {
        topic: topic.into(),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties,
    });
    c
}

#[tokio::test]
async fn a_delayed_will_is_published_once_the_will_delay_passed_mqtt_3_1_3_9() {
    let mut h = Harness::new();
    let mut watcher = subscriber(&h, connect_packet(V5, "watcher", true), "wills/#", QoS::AtMostOnce).await;
    let mut client = publisher(&h, with_will(v5_persistent("c", 100), "wills/c", 10)).await;
    h.drop_connection(&mut client).await;
    h.drive(&mut [&mut watcher]).await;
    assert!(watcher.recv().is_empty(), "not at once");
    h.advance(secs(9), &mut [&mut watcher]).await;
    assert!(watcher.recv().is_empty(), "not before the delay");
    h.advance(secs(1), &mut [&mut watcher]).await;
    let got = watcher.recv();
    assert!(matches!(&publishes(&got)[..], [p] if &*p.topic == "wills/c" && &p.payload[..] == b"gone"), "{got:?}");
}

#[tokio::test]
async fn a_delayed_will_is_dropped_when_the_client_resumes_its_session_in_time_mqtt_3_1_3_9() {
    let mut h = Harness::new();
    let mut watcher = subscriber(&h, connect_packet(V5, "watcher", true), "wills/#", QoS::AtMostOnce).await;
    let mut client = publisher(&h, with_will(v5_persistent("c", 100), "wills/c", 10)).await;
    h.drop_connection(&mut client).await;
    h.advance(secs(5), &mut [&mut watcher]).await;
    let mut back = h.connect(v5_persistent("c", 100)).await;
    assert!(matches!(&back.recv()[..], [Packet::ConnAck(a)] if a.session_present));
    h.advance(secs(10), &mut [&mut watcher, &mut back]).await;
    assert!(watcher.recv().is_empty());
}

#[tokio::test]
async fn the_will_delay_is_cut_short_by_the_session_expiry() {
    let mut h = Harness::new();
    let mut watcher = subscriber(&h, connect_packet(V5, "watcher", true), "wills/#", QoS::AtMostOnce).await;
    let mut client = publisher(&h, with_will(v5_persistent("c", 3), "wills/c", 60)).await;
    h.drop_connection(&mut client).await;
    h.advance(secs(3), &mut [&mut watcher]).await;
    assert_eq!(publishes(&watcher.recv()).len(), 1);
}

#[tokio::test]
async fn an_offline_session_and_its_queue_end_when_the_session_expiry_passed() {
    let mut h = Harness::new();
    let mut sub = subscriber(&h, v5_persistent("sub", 10), "t", QoS::AtLeastOnce).await;
    sub.send(disconnect(Properties::default()));
    h.drive(&mut [&mut sub]).await;
    assert!(!sub.is_connected());
    let mut publ = publisher(&h, connect_packet(V5, "pub", true)).await;
    publ.send(publish("t", QoS::AtLeastOnce, Some(1), b"while away"));
    h.drive(&mut [&mut publ]).await;
    h.advance(secs(9), &mut [&mut publ]).await;
    assert!(h.broker.session(&QueueKey::new("", "sub")).is_some(), "not before the expiry");
    h.advance(secs(1), &mut [&mut publ]).await;
    assert!(h.broker.session(&QueueKey::new("", "sub")).is_none());
    let mut back = h.connect(v5_persistent("sub", 10)).await;
    h.drive(&mut [&mut back]).await;
    let got = back.recv();
    assert!(matches!(&got[..], [Packet::ConnAck(a)] if !a.session_present), "a new session, nothing queued: {got:?}");
}

#[tokio::test]
async fn disconnect_may_not_set_a_session_expiry_when_connect_had_none_mqtt_3_14_2_2() {
    let h = Harness::new();
    let mut client = publisher(&h, connect_packet(V5, "c", true)).await;
    let properties = Properties { session_expiry_interval: Some(60), ..Properties::default() };
    client.send(disconnect(properties));
    h.drive(&mut [&mut client]).await;
    assert!(matches!(&client.recv()[..], [Packet::Disconnect(d)] if d.code == ReasonCode::PROTOCOL_ERROR));
    let farewell = client.farewell.as_ref().expect("ended");
    assert_eq!(farewell.session_expiry, Some(Duration::ZERO), "the session still ends with the connection");
}

#[tokio::test]
async fn disconnect_may_lower_a_session_expiry_to_zero() {
    let h = Harness::new();
    let mut client = publisher(&h, v5_persistent("c", 60)).await;
    let properties = Properties { session_expiry_interval: Some(0), ..Properties::default() };
    client.send(disconnect(properties));
    h.drive(&mut [&mut client]).await;
    assert!(client.recv().is_empty(), "no DISCONNECT back to a client that disconnected");
    assert_eq!(client.farewell.as_ref().expect("ended").session_expiry, Some(Duration::ZERO));
    assert!(h.broker.session(&QueueKey::new("", "c")).is_none());
}

#[tokio::test]
async fn connack_assigns_a_client_id_and_announces_the_broker_limits() {
    let mut h = Harness::new();
    h.cfg.receive_max_broker = 10;
    h.cfg.max_keepalive = Some(30);
    let mut c = connect_packet(V5, "", true);
    c.keep_alive = 60;
    let mut client = h.connect(c).await;
    let got = client.recv();
    let [Packet::ConnAck(a)] = &got[..] else { panic!("{got:?}") };
    assert_eq!(a.code, ReasonCode::SUCCESS);
    assert_eq!(a.properties.assigned_client_identifier.as_deref(), Some("assigned-id"));
    assert_eq!(a.properties.receive_maximum, Some(10));
    assert_eq!(a.properties.server_keep_alive, Some(30));
}

#[tokio::test]
async fn an_offline_message_whose_expiry_passed_is_not_delivered_on_resume_mqtt_3_3_2_5() {
    let mut h = Harness::new();
    let mut sub = subscriber(&h, v5_persistent("sub", 1000), "t", QoS::AtLeastOnce).await;
    h.drop_connection(&mut sub).await;
    let mut publ = publisher(&h, connect_packet(V5, "pub", true)).await;
    for (id, expiry, payload) in [(1, 5, &b"short"[..]), (2, 100, &b"long"[..])] {
        let Packet::Publish(mut p) = publish("t", QoS::AtLeastOnce, Some(id), b"") else { unreachable!() };
        p.properties.message_expiry_interval = Some(expiry);
        p.payload = Bytes::from_static(payload);
        publ.send(Packet::Publish(p));
    }
    h.drive(&mut [&mut publ]).await;
    h.advance(secs(10), &mut [&mut publ]).await;
    let mut back = h.connect(v5_persistent("sub", 1000)).await;
    h.drive(&mut [&mut back]).await;
    let got = back.recv();
    let delivered = publishes(&got);
    assert!(matches!(&delivered[..], [p] if &p.payload[..] == b"long"), "{got:?}");
    // It carries what is left of its interval [MQTT-3.3.2-6]: 90 s, give or take the second
    // that rounding up adds. The stored copy keeps its expiry on the wall clock, which does
    // not follow the virtual one; that a time already past stays past there is checked by
    // `broker::queue`'s `a_stored_message_whose_expiry_passed_while_offline_is_not_delivered`.
    let left = delivered[0].properties.message_expiry_interval;
    assert!(matches!(left, Some(89..=91)), "{left:?}");
}

#[tokio::test]
async fn more_unacknowledged_qos1_publishes_than_receive_maximum_disconnect_with_0x93_mqtt_3_3_4_9() {
    let mut h = Harness::new();
    h.cfg.receive_max_broker = 2;
    // An offline persistent subscriber: each publish is acknowledged only once on disk.
    let mut sub = subscriber(&h, v5_persistent("sub", 1000), "t", QoS::AtLeastOnce).await;
    h.drop_connection(&mut sub).await;
    let mut publ = publisher(&h, connect_packet(V5, "pub", true)).await;
    publ.hold_requests = true;
    for id in 1..=2 {
        publ.send(publish("t", QoS::AtLeastOnce, Some(id), b"m"));
    }
    h.drive(&mut [&mut publ]).await;
    assert!(publ.is_connected(), "two unacknowledged publishes are within Receive Maximum 2");
    assert_eq!(publ.held_requests(), 2);
    publ.send(publish("t", QoS::AtLeastOnce, Some(3), b"m"));
    h.drive(&mut [&mut publ]).await;
    let got = publ.recv();
    assert!(matches!(&got[..], [Packet::Disconnect(d)] if d.code == ReasonCode::RECEIVE_MAXIMUM_EXCEEDED), "{got:?}");
}

#[tokio::test]
async fn settled_acknowledgements_make_room_in_the_receive_maximum_again() {
    let mut h = Harness::new();
    h.cfg.receive_max_broker = 2;
    let mut sub = subscriber(&h, v5_persistent("sub", 1000), "t", QoS::AtLeastOnce).await;
    h.drop_connection(&mut sub).await;
    let mut publ = publisher(&h, connect_packet(V5, "pub", true)).await;
    for id in 1..=5 {
        publ.send(publish("t", QoS::AtLeastOnce, Some(id), b"m"));
        h.drive(&mut [&mut publ]).await;
    }
    let acked: Vec<u16> =
        publ.recv().iter().filter_map(|p| if let Packet::PubAck(r) = p { Some(r.packet_id.0) } else { None }).collect();
    assert_eq!(acked, vec![1, 2, 3, 4, 5]);
    assert!(publ.is_connected());
}

#[tokio::test]
async fn request_response_information_is_accepted_and_answered_without_response_information() {
    // The server MAY omit Response Information [MQTT-3.2.2.3.15]; VerneMQ 2.1 documents no
    // setting for it, so none is sent (see `session::connect`).
    let h = Harness::new();
    let mut c = connect_packet(V5, "c", true);
    c.properties.request_response_information = Some(1);
    let mut client = h.connect(c).await;
    let got = client.recv();
    assert!(
        matches!(&got[..], [Packet::ConnAck(a)] if a.code == ReasonCode::SUCCESS && a.properties.response_information.is_none()),
        "{got:?}"
    );
}

fn utf8_flagged(qos: QoS, id: Option<u16>, payload: &'static [u8]) -> Packet {
    let Packet::Publish(mut p) = publish("t", qos, id, payload) else { unreachable!() };
    p.properties.payload_format_indicator = Some(1);
    Packet::Publish(p)
}

#[tokio::test]
async fn a_payload_flagged_utf8_that_is_not_is_refused_with_0x99() {
    // The server may check the payload format and refuse it (MQTT 5 3.3.2.3.2).
    let h = Harness::new();
    let mut sub = subscriber(&h, connect_packet(V5, "sub", true), "t", QoS::ExactlyOnce).await;
    let mut publ = publisher(&h, connect_packet(V5, "pub", true)).await;
    publ.send(utf8_flagged(QoS::AtLeastOnce, Some(1), b"\xff\xfe"));
    publ.send(utf8_flagged(QoS::ExactlyOnce, Some(2), b"\xc3\x28"));
    publ.send(utf8_flagged(QoS::AtLeastOnce, Some(3), "grüße".as_bytes()));
    h.drive(&mut [&mut publ, &mut sub]).await;
    let got = publ.recv();
    let codes: Vec<(u16, ReasonCode)> = got
        .iter()
        .filter_map(|p| match p {
            Packet::PubAck(r) | Packet::PubRec(r) => Some((r.packet_id.0, r.code)),
            _ => None,
        })
        .collect();
    assert_eq!(
        codes,
        vec![
            (1, ReasonCode::PAYLOAD_FORMAT_INVALID),
            (2, ReasonCode::PAYLOAD_FORMAT_INVALID),
            (3, ReasonCode::SUCCESS)
        ],
        "{got:?}"
    );
    let delivered = sub.recv();
    assert!(
        matches!(&publishes(&delivered)[..], [p] if p.payload == "grüße".as_bytes()),
        "only the valid one is routed: {delivered:?}"
    );
    // A refused QoS 2 publish leaves no packet id waiting for PUBREL.
    assert!(publ.session().inflight.incoming_qos2.is_empty());

    // QoS 0 has no acknowledgement to refuse it with: the connection ends.
    publ.send(utf8_flagged(QoS::AtMostOnce, None, b"\xff"));
    h.drive(&mut [&mut publ, &mut sub]).await;
    let got = publ.recv();
    assert!(matches!(&got[..], [Packet::Disconnect(d)] if d.code == ReasonCode::PAYLOAD_FORMAT_INVALID), "{got:?}");
    assert!(sub.recv().is_empty());
}

#[tokio::test]
async fn verdicts_resume_their_own_publish_whatever_order_they_come_in() {
    use crate::broker::queue::NotDurable;

    let h = Harness::new();
    let mut sub = subscriber(&h, v5_persistent("sub", 1000), "t", QoS::AtLeastOnce).await;
    h.drop_connection(&mut sub).await;
    let mut publ = publisher(&h, connect_packet(V5, "pub", true)).await;
    publ.hold_requests = true;
    publ.send(publish("t", QoS::AtLeastOnce, Some(1), b"a"));
    publ.send(publish("t", QoS::AtLeastOnce, Some(2), b"b"));
    publ.send(publish("t", QoS::ExactlyOnce, Some(3), b"c"));
    h.drive(&mut [&mut publ]).await;
    assert!(publ.recv().is_empty(), "nothing is acknowledged before its verdict");
    let [first, second, third] = <[PendingRequest; 3]>::try_from(publ.take_held_requests()).expect("three requests");
    let failed = || Verdict::Durable(Err(NotDurable::Failed("disk full".into())));
    let session = publ.session_mut();

    let ack = session.handle_verdict(second.token, failed()).expect("MQTT 5 refuses, it does not close");
    assert!(
        matches!(&ack, Some(Packet::PubAck(r)) if r.packet_id.0 == 2 && r.code == ReasonCode::QUOTA_EXCEEDED),
        "{ack:?}"
    );
    let ack = session.handle_verdict(first.token, Verdict::Durable(Ok(()))).expect("sendable");
    assert!(matches!(&ack, Some(Packet::PubAck(r)) if r.packet_id.0 == 1 && r.code == ReasonCode::SUCCESS), "{ack:?}");
    assert!(session.inflight.incoming_qos2.contains(&3));
    let ack = session.handle_verdict(third.token, failed()).expect("sendable");
    assert!(
        matches!(&ack, Some(Packet::PubRec(r)) if r.packet_id.0 == 3 && r.code == ReasonCode::QUOTA_EXCEEDED),
        "{ack:?}"
    );
    assert!(!session.inflight.incoming_qos2.contains(&3), "a resend of the refused QoS 2 publish is routed again");
    assert!(matches!(session.handle_verdict(first.token, Verdict::Durable(Ok(()))), Ok(None)), "answered once");
}

#[tokio::test]
async fn an_mqtt_3_publish_that_was_not_taken_closes_the_connection_unacknowledged() {
    use crate::broker::queue::NotDurable;

    let h = Harness::new();
    let mut sub = subscriber(&h, connect_packet(V4, "sub", false), "t", QoS::AtLeastOnce).await;
    h.drop_connection(&mut sub).await;
    let mut publ = publisher(&h, connect_packet(V4, "pub", true)).await;
    publ.hold_requests = true;
    publ.send(publish("t", QoS::AtLeastOnce, Some(1), b"a"));
    h.drive(&mut [&mut publ]).await;
    let [request] = <[PendingRequest; 1]>::try_from(publ.take_held_requests()).expect("one request");
    let verdict = Verdict::Durable(Err(NotDurable::Failed("disk full".into())));
    let close = publ.session_mut().handle_verdict(request.token, verdict).expect_err("MQTT 3 cannot refuse a publish");
    assert!(!close.send_disconnect && close.publish_will);
}

// Authorization: the session asks, the driver (the connection's own `Held`) answers when the
// scripted authorizer is told to, and the client's later packets wait for the verdict.

fn acks(packets: &[Packet]) -> Vec<(&'static str, u16, ReasonCode)> {
    packets
        .iter()
        .map(|p| match p {
            Packet::PubAck(r) => ("PUBACK", r.packet_id.0, r.code),
            Packet::PubRec(r) => ("PUBREC", r.packet_id.0, r.code),
            Packet::SubAck(a) => ("SUBACK", a.packet_id.0, a.codes.first().copied().unwrap_or_default()),
            Packet::PingResp => ("PINGRESP", 0, ReasonCode::SUCCESS),
            other => panic!("not an acknowledgement: {other:?}"),
        })
        .collect()
}

async fn authorized(h: &Harness, c: Connect, auth: &Arc<ScriptedAuthorizer>) -> Client {
    let mut client = h.connect_authorized(c, auth.clone()).await;
    assert!(matches!(client.recv()[..], [Packet::ConnAck(_)]));
    client
}

#[tokio::test]
async fn a_publish_waiting_for_authorization_holds_back_the_clients_later_packets() {
    let h = Harness::new();
    let auth = Arc::new(ScriptedAuthorizer::default());
    let mut sub = subscriber(&h, connect_packet(V5, "sub", true), "t/#", QoS::AtLeastOnce).await;
    let mut publ = authorized(&h, connect_packet(V5, "pub", true), &auth).await;
    publ.send(publish("t/secret", QoS::AtLeastOnce, Some(1), b"s"));
    publ.send(publish("t/open", QoS::AtLeastOnce, Some(2), b"o"));
    publ.send(Packet::PingReq);
    h.drive(&mut [&mut publ, &mut sub]).await;
    assert_eq!(auth.questions(), [Question::Publish("t/secret".into())], "the second publish is not looked at yet");
    assert!(publ.session().input_paused());
    assert!(publ.recv().is_empty() && sub.recv().is_empty());

    auth.answer_publish(0, Authorization::NOT_AUTHORIZED);
    h.drive(&mut [&mut publ, &mut sub]).await;
    assert_eq!(auth.questions(), [Question::Publish("t/secret".into()), Question::Publish("t/open".into())]);
    assert_eq!(acks(&publ.recv()), [("PUBACK", 1, ReasonCode::NOT_AUTHORIZED)], "PINGREQ waits behind t/open");
    assert!(sub.recv().is_empty(), "a refused publish is not routed");

    auth.answer_publish(1, Authorization::Allow);
    h.drive(&mut [&mut publ, &mut sub]).await;
    assert_eq!(acks(&publ.recv()), [("PUBACK", 2, ReasonCode::SUCCESS), ("PINGRESP", 0, ReasonCode::SUCCESS)]);
    let got = sub.recv();
    assert!(matches!(&publishes(&got)[..], [p] if &*p.topic == "t/open"), "{got:?}");
    assert!(!publ.session().input_paused());
}

#[tokio::test]
async fn refused_publishes_are_answered_with_0x87_over_mqtt_5_and_dropped_but_acknowledged_over_mqtt_3() {
    for (version, code) in [(V5, ReasonCode::NOT_AUTHORIZED), (V4, ReasonCode::SUCCESS)] {
        let h = Harness::new();
        let auth = Arc::new(ScriptedAuthorizer::default());
        let mut sub = subscriber(&h, connect_packet(V5, "sub", true), "t", QoS::ExactlyOnce).await;
        let mut publ = authorized(&h, connect_packet(version, "pub", true), &auth).await;
        publ.send(publish("t", QoS::AtMostOnce, None, b"0"));
        publ.send(publish("t", QoS::AtLeastOnce, Some(1), b"1"));
        publ.send(publish("t", QoS::ExactlyOnce, Some(2), b"2"));
        for n in 0..3 {
            h.drive(&mut [&mut publ, &mut sub]).await;
            auth.answer_publish(n, Authorization::NOT_AUTHORIZED);
        }
        h.drive(&mut [&mut publ, &mut sub]).await;
        assert_eq!(auth.questions().len(), 3);
        let got = publ.recv();
        assert_eq!(acks(&got), [("PUBACK", 1, code), ("PUBREC", 2, code)], "{version:?}: {got:?}");
        assert!(sub.recv().is_empty(), "{version:?}: nothing is routed");
        assert!(publ.session().inflight.incoming_qos2.is_empty(), "no QoS 2 exchange was started");
        assert!(publ.is_connected());
    }
}

#[tokio::test]
async fn an_authorization_answered_before_an_earlier_durable_write_settles_waits_behind_it() {
    use crate::ack::{Progress, Ticket};
    use crate::broker::queue::Durable;
    use tokio::sync::watch;

    let h = Harness::new();
    let auth = Arc::new(ScriptedAuthorizer::default());
    let mut publ = authorized(&h, connect_packet(V5, "pub", true), &auth).await;
    // The PUBACK of an earlier publish waits for another node to accept it.
    let (progress, _) = watch::channel(Progress::default());
    let ticket = Durable::Remote(Ticket::new(progress.subscribe(), 1));
    publ.session_mut().request_durable_ack(b"", 1, vec![ticket]);
    publ.send(publish("t", QoS::AtLeastOnce, Some(2), b"m"));
    publ.send(Packet::PingReq);
    h.drive(&mut [&mut publ]).await;
    auth.answer_publish(0, Authorization::NOT_AUTHORIZED);
    h.drive(&mut [&mut publ]).await;
    assert!(publ.recv().is_empty(), "the refusal of 2 does not overtake the acknowledgement of 1");
    assert!(publ.session().input_paused(), "nor is PINGREQ handled before it");

    progress.send_modify(|p| p.accepted = 1);
    h.drive(&mut [&mut publ]).await;
    assert_eq!(
        acks(&publ.recv()),
        [
            ("PUBACK", 1, ReasonCode::SUCCESS),
            ("PUBACK", 2, ReasonCode::NOT_AUTHORIZED),
            ("PINGRESP", 0, ReasonCode::SUCCESS)
        ]
    );
}

#[tokio::test]
async fn a_subscribe_is_granted_only_the_filters_allowed_0x87_over_mqtt_5_and_0x80_over_mqtt_3() {
    for (version, refused) in [(V5, ReasonCode::NOT_AUTHORIZED), (V4, ReasonCode::UNSPECIFIED_ERROR)] {
        let h = Harness::new();
        let auth = Arc::new(ScriptedAuthorizer::default());
        let mut client = authorized(&h, connect_packet(version, "sub", true), &auth).await;
        let options = vmq_mqtt::SubscriptionOptions { qos: QoS::AtLeastOnce, ..Default::default() };
        let filters =
            ["open/#", "secret/#", "bad/#/x"].map(|f| vmq_mqtt::SubscribeFilter { filter: f.into(), options }).to_vec();
        client.send(Packet::Subscribe(Subscribe {
            packet_id: vmq_mqtt::PacketId(4),
            filters,
            properties: Properties::default(),
        }));
        client.send(subscribe(5, "later", QoS::AtMostOnce));
        h.drive(&mut [&mut client]).await;
        let asked = ["open/#", "secret/#", "bad/#/x"].map(String::from).to_vec();
        assert_eq!(auth.questions(), [Question::Subscribe(asked.clone())], "{version:?}");
        assert!(client.recv().is_empty());
        // A deny without an error code still reads as a refusal.
        let verdicts = vec![Authorization::Allow, Authorization::Deny(ReasonCode::SUCCESS), Authorization::Allow];
        auth.answer_subscribe(0, verdicts);
        h.drive(&mut [&mut client]).await;
        assert_eq!(auth.questions(), [Question::Subscribe(asked), Question::Subscribe(vec!["later".into()])]);
        let got = client.recv();
        assert!(
            matches!(&got[..], [Packet::SubAck(a)] if a.packet_id.0 == 4
                && a.codes == [ReasonCode(1), refused, if version.is_v5() { ReasonCode::TOPIC_FILTER_INVALID } else { ReasonCode::UNSPECIFIED_ERROR }]),
            "{version:?}: {got:?}"
        );
        auth.answer_subscribe(1, vec![]);
        h.drive(&mut [&mut client]).await;
        let got = client.recv();
        assert!(matches!(&got[..], [Packet::SubAck(a)] if a.codes == [refused]), "a filter with no verdict is refused");

        let mut publ = publisher(&h, connect_packet(V5, "pub", true)).await;
        publ.send(publish("secret/x", QoS::AtMostOnce, None, b"s"));
        publ.send(publish("open/x", QoS::AtMostOnce, None, b"o"));
        h.drive(&mut [&mut publ, &mut client]).await;
        let got = client.recv();
        assert!(matches!(&publishes(&got)[..], [p] if &*p.topic == "open/x"), "{version:?}: {got:?}");
    }
}

#[tokio::test]
async fn keep_alive_does_not_expire_while_the_client_is_not_read_for_an_authorization() {
    let mut h = Harness::new();
    let auth = Arc::new(ScriptedAuthorizer::default());
    let mut c = connect_packet(V5, "pub", true);
    c.keep_alive = 10;
    let mut publ = authorized(&h, c, &auth).await;
    publ.send(publish("t", QoS::AtLeastOnce, Some(1), b"m"));
    h.drive(&mut [&mut publ]).await;
    h.advance(secs(60), &mut [&mut publ]).await;
    assert!(publ.is_connected(), "the client may well have sent PINGREQs that are not read yet");
    auth.answer_publish(0, Authorization::Allow);
    h.drive(&mut [&mut publ]).await;
    assert_eq!(acks(&publ.recv()), [("PUBACK", 1, ReasonCode::NO_MATCHING_SUBSCRIBERS)]);
    h.advance(secs(16), &mut [&mut publ]).await;
    assert!(!publ.is_connected(), "once reading again, silence is a keep-alive timeout");
}

#[tokio::test]
async fn without_an_authorizer_the_session_asks_only_for_durable_writes() {
    let h = Harness::new();
    let mut sub = subscriber(&h, v5_persistent("offline", 1000), "t/#", QoS::AtLeastOnce).await;
    h.drop_connection(&mut sub).await;
    for version in [V4, V5] {
        let mut client = publisher(&h, connect_packet(version, "c", true)).await;
        client.hold_requests = true;
        client.send(subscribe(1, "t/#", QoS::ExactlyOnce));
        client.send(publish("t/a", QoS::AtMostOnce, None, b"0"));
        client.send(publish("t/a", QoS::AtLeastOnce, Some(2), b"1"));
        client.send(publish("t/a", QoS::ExactlyOnce, Some(3), b"2"));
        h.drive(&mut [&mut client]).await;
        assert!(!client.session().input_paused());
        let requests = client.take_held_requests();
        assert_eq!(requests.len(), 2, "{version:?}: the QoS 1 and 2 publishes to the offline subscriber");
        assert!(requests.iter().all(|r| matches!(r.request, Request::Durable(_))), "{version:?}: {requests:?}");
        h.drop_connection(&mut client).await;
    }
}
