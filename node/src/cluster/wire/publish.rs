//! The frame of one forwarded publish on the `Publish` stream, in a hand-written compact
//! layout: encoding reads the message in place (no owned copies of its topic, ids or
//! properties), decoding keeps the payload as a slice of the bytes read from the peer (no
//! copy) and shares the strings that consecutive frames repeat.
//!
//! Layout (`varint` is unsigned LEB128, `str` a varint length then UTF-8 bytes):
//!
//! ```text
//! u8      format: 2 (0 is postcard's `PublishFrame::V1`, still read: durable outboxes
//!         written by older nodes replay it)
//! u8      flags: bits 0-1 QoS, 2 retain, 3 plain, 4 expiry, 5 publisher, 6 properties
//! str     mountpoint
//! str     topic
//! varint  remaining message expiry in ms (relative: node clocks may differ)   [flag 4]
//! str     publisher client id                                                  [flag 5]
//! varint  length, then the postcard `WireProperties` (MQTT 5 only)             [flag 6]
//! varint  shared-subscription members, then each: str client id, str `$share/..` filter
//! ...     the payload: the rest of the frame
//! ```

use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};

use super::{PublishFrame, WireProperties};
use crate::broker::message::{Msg, instant_in_ms};
use vmq_mqtt::QoS;

/// The format byte of this layout.
pub(crate) const FORMAT: u8 = 2;
/// The format byte of postcard's `PublishFrame::V1` (its variant index).
const FORMAT_V1: u8 = 0;

const QOS_MASK: u8 = 0b11;
const RETAIN: u8 = 1 << 2;
const PLAIN: u8 = 1 << 3;
const EXPIRY: u8 = 1 << 4;
const PUBLISHER: u8 = 1 << 5;
const PROPERTIES: u8 = 1 << 6;

/// Longest varint: ten 7-bit groups hold a u64.
const VARINT_MAX: usize = 10;

/// The frame forwarding `msg` to a node that delivers it to its matching plain subscriptions
/// (`plain`) and to the shared-subscription members `shared` (client id, full filter).
pub(crate) fn encode(msg: &Msg, plain: bool, shared: &[(Arc<str>, String)], now: Instant) -> Bytes {
    let properties = WireProperties::from_msg(&msg.properties).map(|p| super::encode(&p));
    let publisher = msg.publisher.as_deref();
    let strings = msg.mountpoint.len()
        + msg.topic.len()
        + publisher.map_or(0, str::len)
        + properties.as_ref().map_or(0, Vec::len)
        + shared.iter().map(|(c, f)| c.len() + f.len() + 2 * VARINT_MAX).sum::<usize>();
    let mut b = BytesMut::with_capacity(2 + 6 * VARINT_MAX + strings + msg.payload.len());
    let mut flags = msg.qos as u8 & QOS_MASK;
    let expiry = msg.expires_at.map(|at| at.saturating_duration_since(now).as_millis() as u64);
    for (set, flag) in [
        (msg.retain, RETAIN),
        (plain, PLAIN),
        (expiry.is_some(), EXPIRY),
        (publisher.is_some(), PUBLISHER),
        (properties.is_some(), PROPERTIES),
    ] {
        if set {
            flags |= flag;
        }
    }
    b.put_u8(FORMAT);
    b.put_u8(flags);
    put_bytes(&mut b, msg.mountpoint.as_bytes());
    put_bytes(&mut b, msg.topic.as_bytes());
    if let Some(ms) = expiry {
        put_varint(&mut b, ms);
    }
    if let Some(p) = publisher {
        put_bytes(&mut b, p.as_bytes());
    }
    if let Some(p) = &properties {
        put_bytes(&mut b, p);
    }
    put_varint(&mut b, shared.len() as u64);
    for (client, filter) in shared {
        put_bytes(&mut b, client.as_bytes());
        put_bytes(&mut b, filter.as_bytes());
    }
    b.put_slice(&msg.payload);
    b.freeze()
}

fn put_varint(b: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        b.put_u8(v as u8 | 0x80);
        v >>= 7;
    }
    b.put_u8(v as u8);
}

fn put_bytes(b: &mut BytesMut, s: &[u8]) {
    put_varint(b, s.len() as u64);
    b.put_slice(s);
}

/// A forwarded publish as the receiving node routes it.
#[derive(Debug)]
pub(crate) struct Forwarded {
    pub msg: Msg,
    /// Deliver to the receiver's matching plain subscriptions.
    pub plain: bool,
    /// Deliver to these shared-subscription members: client id, full `$share/..` filter.
    pub shared: Vec<(Arc<str>, String)>,
}

/// Decodes the frames of one peer. Consecutive frames mostly repeat the mountpoint, the topic
/// and the publisher (a publisher's messages arrive together): those are shared with the
/// previous frame's instead of allocated again.
#[derive(Debug, Default)]
pub(crate) struct Decoder {
    mountpoint: Option<Arc<str>>,
    topic: Option<Arc<str>>,
    publisher: Option<Arc<str>>,
}

impl Decoder {
    /// The publish in `frame`; `None` when malformed.
    pub fn decode(&mut self, frame: Bytes) -> Option<Forwarded> {
        match *frame.first()? {
            FORMAT => self.decode_compact(frame),
            FORMAT_V1 => {
                let PublishFrame::V1(mut p) = super::decode::<PublishFrame>(&frame)?;
                let shared = std::mem::take(&mut p.shared).into_iter().map(|(c, f)| (Arc::from(c), f)).collect();
                let plain = p.plain;
                Some(Forwarded { msg: p.into_msg(), plain, shared })
            }
            _ => None,
        }
    }

    fn decode_compact(&mut self, frame: Bytes) -> Option<Forwarded> {
        let mut r = Reader(frame.get(1..)?);
        let flags = r.u8()?;
        let qos = QoS::from_u8(flags & QOS_MASK)?;
        let mountpoint = share(&mut self.mountpoint, r.str()?);
        let topic = share(&mut self.topic, r.str()?);
        let expiry_ms = if flags & EXPIRY != 0 { Some(r.varint()?) } else { None };
        let publisher = if flags & PUBLISHER != 0 { Some(share(&mut self.publisher, r.str()?)) } else { None };
        let properties =
            if flags & PROPERTIES != 0 { Some(super::decode::<WireProperties>(r.bytes()?)?.into_msg()) } else { None };
        let members = usize::try_from(r.varint()?).ok()?;
        // Each member takes at least two bytes: a count beyond that is a lie, not an allocation.
        let mut shared = Vec::with_capacity(members.min(r.0.len() / 2));
        for _ in 0..members {
            shared.push((Arc::from(r.str()?), r.str()?.to_string()));
        }
        let payload = frame.slice(frame.len() - r.0.len()..);
        let msg = Msg {
            mountpoint,
            topic,
            payload,
            qos,
            retain: flags & RETAIN != 0,
            properties,
            expires_at: expiry_ms.and_then(instant_in_ms),
            publisher,
        };
        Some(Forwarded { msg, plain: flags & PLAIN != 0, shared })
    }
}

/// `s` as the string in `slot` when equal, else as a new one kept in `slot`.
fn share(slot: &mut Option<Arc<str>>, s: &str) -> Arc<str> {
    match slot {
        Some(previous) if **previous == *s => previous.clone(),
        _ => slot.insert(Arc::from(s)).clone(),
    }
}

/// Reads the fields of a frame from a peer; every read checks the length first.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Option<u8> {
        let (&first, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(first)
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..VARINT_MAX {
            let byte = self.u8()?;
            let bits = u64::from(byte & 0x7f);
            // The tenth group holds the top bit of a u64 only.
            if i == VARINT_MAX - 1 && bits > 1 {
                return None;
            }
            v |= bits << (7 * i);
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.varint()?).ok()?;
        if len > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(head)
    }

    fn str(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{ForwardedPublish, encode as postcard_encode};
    use super::*;
    use crate::broker::message::ForwardedProperties;

    fn msg() -> Msg {
        Msg {
            mountpoint: "mp".into(),
            topic: "a/b".into(),
            payload: Bytes::from_static(b"hello"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: None,
            expires_at: None,
            publisher: Some("pub".into()),
        }
    }

    #[test]
    fn a_publish_round_trips_with_its_delivery_instructions() {
        let now = Instant::now();
        let frame = encode(&msg(), true, &[("c".into(), "$share/g/a/+".into())], now);
        assert_eq!(frame[0], FORMAT);
        let f = Decoder::default().decode(frame).unwrap();
        assert_eq!(f.msg, msg());
        assert!(f.plain);
        assert_eq!(f.shared, vec![(Arc::from("c"), "$share/g/a/+".to_string())]);
    }

    #[test]
    fn every_optional_field_round_trips() {
        let now = Instant::now();
        let mut m = msg();
        m.qos = QoS::ExactlyOnce;
        m.retain = true;
        m.publisher = None;
        m.mountpoint = "".into();
        m.payload = Bytes::from(vec![0xab; 300]);
        m.expires_at = Some(now + Duration::from_secs(60));
        m.properties = Some(Arc::new(ForwardedProperties {
            payload_format_indicator: Some(1),
            content_type: Some("text/plain".into()),
            response_topic: Some("re/ply".into()),
            correlation_data: Some(Bytes::from_static(b"id")),
            user_properties: vec![("k".into(), "v".into())],
        }));
        let f = Decoder::default().decode(encode(&m, false, &[], now)).unwrap();
        assert!(!f.plain && f.shared.is_empty());
        // The expiry is carried in milliseconds relative to the sender's clock.
        let at = f.msg.expires_at.unwrap();
        assert!(at > now + Duration::from_secs(59) && at <= Instant::now() + Duration::from_secs(60));
        m.expires_at = f.msg.expires_at;
        assert_eq!(f.msg, m);
    }

    #[test]
    fn the_payload_is_a_slice_of_the_frame_and_repeated_strings_are_shared() {
        let now = Instant::now();
        let mut decoder = Decoder::default();
        let frame = encode(&msg(), true, &[], now);
        let first = decoder.decode(frame.clone()).unwrap();
        let second = decoder.decode(encode(&msg(), true, &[], now)).unwrap();
        assert_eq!(first.msg.payload.as_ptr(), frame[frame.len() - 5..].as_ptr());
        assert!(Arc::ptr_eq(&first.msg.topic, &second.msg.topic));
        assert!(Arc::ptr_eq(first.msg.publisher.as_ref().unwrap(), second.msg.publisher.as_ref().unwrap()));
    }

    #[test]
    fn postcard_v1_frames_from_older_outboxes_are_still_read() {
        let frame = postcard_encode(&PublishFrame::V1(ForwardedPublish::new(&msg(), true, &[])));
        let f = Decoder::default().decode(Bytes::from(frame)).unwrap();
        assert_eq!(f.msg, msg());
        assert!(f.plain);
    }

    #[test]
    fn malformed_frames_are_refused_without_panicking() {
        let good = encode(&msg(), true, &[("c".into(), "f".into())], Instant::now());
        let mut decoder = Decoder::default();
        // Every truncation that cuts into the header is refused (a cut payload is just shorter).
        let header = good.len() - 5;
        for cut in 0..header {
            assert!(decoder.decode(good.slice(..cut)).is_none(), "cut at {cut}");
        }
        let mut bad_qos = good.to_vec();
        bad_qos[1] |= QOS_MASK;
        let mut bad_utf8 = good.to_vec();
        bad_utf8[3] = 0xff; // first byte of the mountpoint
        let huge_count = [FORMAT, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f];
        let overlong_varint = [FORMAT, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
        for bad in [&bad_qos[..], &bad_utf8, &huge_count, &overlong_varint, &[9, 0], &[]] {
            assert!(decoder.decode(Bytes::copy_from_slice(bad)).is_none(), "{bad:?}");
        }
    }
}
