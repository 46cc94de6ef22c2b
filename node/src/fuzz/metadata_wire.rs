//! The metadata wire formats: the replica messages of both backends, the keys and values the
//! cluster stores in them, its `Metadata` and `Rpc` frames, and the stored deliveries the
//! message store (and queue migration) reads back.

use std::fmt::Debug;

use serde::Serialize;
use serde::de::DeserializeOwned;
use vmq_plumtree::Message as PlumtreeMessage;
use vmq_swc::SwcMessage;

use crate::broker::message::{Delivery, Msg};
use crate::broker::persist::{decode_delivery, encode_delivery};
use crate::cluster::wire::{
    self, MetadataFrame, Request, Response, RetainValue, RpcFrame, SubscriberValue, decode_key, encode_key,
};

/// The first byte picks the format of the rest (`% 8`): 0 an SWC replica message, 1 a
/// plumtree message, 2 a metadata key, 3 a `subscriber` value, 4 a `retain` value, 5 a
/// `Metadata` frame, 6 an `Rpc` frame, 7 a stored delivery. Whatever decodes must encode and
/// decode back to the same value.
pub fn metadata(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 8 {
        0 => swc(rest),
        1 => plumtree(rest),
        2 => key(rest),
        3 => value::<SubscriberValue>(rest),
        4 => value::<RetainValue>(rest),
        5 => metadata_frame(rest),
        6 => rpc_frame(rest),
        _ => delivery(rest),
    }
}

fn swc(data: &[u8]) {
    let Ok(message) = SwcMessage::from_bytes(data) else {
        return;
    };
    let bytes = match message.to_bytes() {
        Ok(bytes) => bytes,
        Err(e) => panic!("a decoded SWC message does not encode: {e}: {message:?}"),
    };
    assert_eq!(SwcMessage::from_bytes(&bytes).ok(), Some(message), "an SWC message changed on re-encoding");
}

fn plumtree(data: &[u8]) {
    let Ok(message) = PlumtreeMessage::decode(data) else {
        return;
    };
    assert_eq!(PlumtreeMessage::decode(&message.encode()).ok(), Some(message), "a plumtree message changed");
}

fn key(data: &[u8]) {
    let Some((a, b)) = decode_key(data) else {
        return;
    };
    assert_eq!(decode_key(&encode_key(&a, &b)), Some((a, b)), "a metadata key changed on re-encoding");
}

fn value<T: Serialize + DeserializeOwned + PartialEq + Debug>(data: &[u8]) {
    let Some(value) = wire::decode::<T>(data) else {
        return;
    };
    assert_eq!(wire::decode::<T>(&wire::encode(&value)), Some(value), "a stored value changed on re-encoding");
}

/// A replica message inside a `Metadata` frame is also decoded, by both backends, as the
/// metadata driver hands it to the configured one.
fn metadata_frame(data: &[u8]) {
    let Some(frame) = wire::decode::<MetadataFrame>(data) else {
        return;
    };
    let again = wire::decode::<MetadataFrame>(&wire::encode(&frame));
    match (&frame, &again) {
        (MetadataFrame::Replica(a), Some(MetadataFrame::Replica(b))) => {
            assert_eq!(a, b, "a replica message changed on re-encoding");
            swc(a);
            plumtree(a);
        }
        (MetadataFrame::Membership(a), Some(MetadataFrame::Membership(b))) => {
            assert_eq!(a, b, "a membership state changed on re-encoding")
        }
        _ => panic!("a metadata frame changed on re-encoding: {frame:?} became {again:?}"),
    }
}

/// RPC frames have no equality of their own; re-encoding must give the same bytes once they
/// are in their encoded form. The deliveries they carry are decoded as the receiving side does.
fn rpc_frame(data: &[u8]) {
    let Some(frame) = wire::decode::<RpcFrame>(data) else {
        return;
    };
    let bytes = wire::encode(&frame);
    let Some(again) = wire::decode::<RpcFrame>(&bytes) else {
        panic!("an RPC frame does not decode once encoded again: {frame:?}");
    };
    assert_eq!(wire::encode(&again), bytes, "an RPC frame changed on re-encoding: {frame:?}");
    for delivery_bytes in deliveries(&frame) {
        delivery(delivery_bytes);
    }
}

/// The stored deliveries an RPC frame carries: drained queues and handed-over inflight
/// messages.
fn deliveries(frame: &RpcFrame) -> Vec<&[u8]> {
    match frame {
        RpcFrame::Request { body: Request::Drain { messages, .. }, .. } => messages.iter().map(Vec::as_slice).collect(),
        RpcFrame::Response {
            body: Response::Granted { session: Some(handover), .. } | Response::TakenOver { session: Some(handover) },
            ..
        } => handover.inflight.iter().map(|i| i.delivery.as_slice()).collect(),
        _ => Vec::new(),
    }
}

/// The expiry is stored as wall-clock time and read back as an instant: compared apart, to
/// within the time between the two readings.
fn delivery(data: &[u8]) {
    let Some(first) = decode_delivery(data) else {
        return;
    };
    let Some(again) = decode_delivery(&encode_delivery(&first)) else {
        panic!("a decoded delivery does not decode once encoded again: {first:?}");
    };
    assert_eq!(without_expiry(&again), without_expiry(&first), "a delivery changed on re-encoding");
    match (first.msg.expires_at, again.msg.expires_at) {
        (None, None) => {}
        (Some(a), Some(b)) => {
            assert!(a.max(b) - a.min(b) < std::time::Duration::from_secs(1), "the expiry moved: {a:?} {b:?}")
        }
        (a, b) => panic!("re-encoding changed whether the delivery expires: {a:?} {b:?}"),
    }
}

fn without_expiry(d: &Delivery) -> Delivery {
    Delivery { msg: std::sync::Arc::new(Msg { expires_at: None, ..(*d.msg).clone() }), ..d.clone() }
}
