//! The cluster transport's framing: the hello, the stream header and frame lengths, the
//! `Control` stream's frames and the forwarded publishes of the `Publish` stream.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::broker::message::Msg;
use crate::cluster::transport::frame::{DEFAULT_MAX_FRAME_SIZE, StreamKind, frame_prefix, parse_frame_len};
use crate::cluster::transport::hello::{self, EXPORTED_LEN, Role};
use crate::cluster::transport::reliable::{ControlFrame, INCARNATION_LEN, split_seq};
use crate::cluster::wire::publish::{self, Decoder};

/// The first byte picks what the rest is (`% 4`):
/// 0. a hello as the handshake reads it (length prefix, body);
/// 1. a whole data stream as a connection reads it (header, the `Publish` stream's
///    incarnation, length-prefixed frames), its frames decoded as their stream's kind;
/// 2. one `Control` frame;
/// 3. one forwarded publish frame.
pub fn cluster_frames(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 4 {
        0 => hello(rest),
        1 => stream(rest),
        2 => control(rest),
        _ => forwarded_publish(&mut Decoder::default(), Bytes::copy_from_slice(rest)),
    }
}

/// A decoded hello is exactly its signed bytes and its MAC, its version is the one read
/// first, and the hello encodes again to the same signed bytes, with a MAC that verifies.
fn hello(data: &[u8]) {
    const COOKIE: &[u8] = b"fuzz";
    const EXPORTED: [u8; EXPORTED_LEN] = [7; EXPORTED_LEN];
    let Some((prefix, body)) = data.split_first_chunk::<2>() else {
        return;
    };
    let Ok(len) = hello::decode_len(*prefix) else {
        return;
    };
    let Some(body) = body.get(..len) else {
        return;
    };
    let version = hello::decode_version(body);
    let Ok(received) = hello::decode(body) else {
        return;
    };
    assert_eq!(version, Ok(received.hello.version), "the version read first differs");
    assert_eq!([&received.signed[..], &received.mac].concat(), body, "signed bytes and MAC are not the body");
    let Some(wire) = received.hello.encode(COOKIE, Role::Dialer, &EXPORTED) else {
        panic!("a decoded hello does not encode: {:?}", received.hello);
    };
    let again = match wire.get(2..).map(hello::decode) {
        Some(Ok(again)) => again,
        other => panic!("an encoded hello does not decode: {other:?}"),
    };
    assert_eq!(again.hello, received.hello, "re-encoding changed the hello");
    assert_eq!(again.signed, received.signed, "re-encoding changed the signed bytes");
    assert!(again.verify(COOKIE, Role::Dialer, &EXPORTED), "the MAC of a re-encoded hello does not verify");
}

/// A stream header that parses is the header of its kind; a frame length that parses is
/// within the maximum and is written back as the same prefix.
fn stream(data: &[u8]) {
    let Some((header, mut rest)) = data.split_first_chunk() else {
        return;
    };
    let Ok(kind) = StreamKind::parse_header(*header) else {
        return;
    };
    assert_eq!(kind.header(), *header, "a parsed stream header is not its kind's");
    if kind == StreamKind::Publish {
        let Some((_incarnation, frames)) = rest.split_first_chunk::<INCARNATION_LEN>() else {
            return;
        };
        rest = frames;
    }
    // One decoder per read, as the router keeps one per batch of frames.
    let mut decoder = Decoder::default();
    while let Some((prefix, tail)) = rest.split_first_chunk() {
        let Ok(len) = parse_frame_len(*prefix, DEFAULT_MAX_FRAME_SIZE) else {
            return;
        };
        assert!(len <= DEFAULT_MAX_FRAME_SIZE, "a frame length above the maximum passed");
        assert_eq!(frame_prefix(len), Some(*prefix), "a frame length does not write back the same");
        let Some(payload) = tail.get(..len) else {
            return;
        };
        rest = &tail[len..];
        match kind {
            StreamKind::Control => control(payload),
            StreamKind::Publish => match split_seq(Bytes::copy_from_slice(payload)) {
                Some((_seq, frame)) => forwarded_publish(&mut decoder, frame),
                None => return,
            },
            // Opaque to the transport; the `metadata` target decodes these payloads.
            StreamKind::Metadata | StreamKind::Rpc => {}
        }
    }
}

/// A control frame that decodes is exactly the encoding of what it decoded to.
fn control(data: &[u8]) {
    if let Some(frame) = ControlFrame::decode(data) {
        assert_eq!(frame.encode(), data, "a control frame does not encode back to its bytes: {frame:?}");
    }
}

/// A forwarded publish that decodes encodes again (in the compact format, whichever format it
/// came in) and decodes to the same message and delivery instructions. The expiry travels as
/// milliseconds from now, so it comes back as the same instant to within the time between
/// the two decodings.
fn forwarded_publish(decoder: &mut Decoder, frame: Bytes) {
    let Some(first) = decoder.decode(frame) else {
        return;
    };
    let wire = publish::encode(&first.msg, first.plain, &first.shared, Instant::now());
    let Some(again) = Decoder::default().decode(wire.clone()) else {
        panic!("a decoded forwarded publish does not decode once encoded again: {first:?} as {wire:02x?}");
    };
    assert_eq!(again.plain, first.plain, "re-encoding changed `plain`");
    assert_eq!(again.shared, first.shared, "re-encoding changed the shared-subscription members");
    assert_eq!(without_expiry(&again.msg), without_expiry(&first.msg), "re-encoding changed the message");
    match (first.msg.expires_at, again.msg.expires_at) {
        (None, None) => {}
        (Some(a), Some(b)) => assert!(a.max(b) - a.min(b) < Duration::from_secs(1), "the expiry moved: {a:?} {b:?}"),
        (a, b) => panic!("re-encoding changed whether the message expires: {a:?} {b:?}"),
    }
}

fn without_expiry(msg: &Msg) -> Msg {
    Msg { expires_at: None, ..msg.clone() }
}
