//! On-disk encoding of queued messages (the values of the message store).
//!
//! Versioned so that a later format can still read what an earlier one wrote. Expiry is kept
//! as wall-clock time because a monotonic `Instant` means nothing after a restart.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::message::{Delivery, ForwardedProperties, Msg};
use vmq_mqtt::QoS;

#[derive(Serialize, Deserialize)]
enum StoredDelivery {
    V1(StoredV1),
}

#[derive(Serialize, Deserialize)]
struct StoredV1 {
    mountpoint: String,
    topic: String,
    payload: Vec<u8>,
    qos: u8,
    msg_qos: u8,
    retain: bool,
    msg_retain: bool,
    expiry_unix_ms: Option<u64>,
    publisher: Option<String>,
    subscription_ids: Vec<u32>,
    payload_format_indicator: Option<u8>,
    content_type: Option<String>,
    response_topic: Option<String>,
    correlation_data: Option<Vec<u8>>,
    user_properties: Vec<(String, String)>,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Encodes a delivery for the message store.
pub fn encode_delivery(d: &Delivery) -> Vec<u8> {
    let m = &d.msg;
    let now_ms = unix_ms(SystemTime::now());
    let expiry_unix_ms = m.expires_at.map(|at| super::message::unix_ms_of(at, now_ms));
    let p = m.properties.as_deref().cloned().unwrap_or_default();
    let stored = StoredDelivery::V1(StoredV1 {
        mountpoint: m.mountpoint.to_string(),
        topic: m.topic.to_string(),
        payload: m.payload.to_vec(),
        qos: d.qos as u8,
        msg_qos: m.qos as u8,
        retain: d.retain,
        msg_retain: m.retain,
        expiry_unix_ms,
        publisher: m.publisher.as_deref().map(str::to_string),
        subscription_ids: d.subscription_ids.clone(),
        payload_format_indicator: p.payload_format_indicator,
        content_type: p.content_type,
        response_topic: p.response_topic,
        correlation_data: p.correlation_data.map(|b| b.to_vec()),
        user_properties: p.user_properties,
    });
    // Encoding into a Vec cannot fail for these plain types.
    postcard::to_allocvec(&stored).unwrap_or_default()
}

/// Decodes what [`encode_delivery`] wrote; `None` for bytes it did not write.
pub fn decode_delivery(bytes: &[u8]) -> Option<Delivery> {
    let StoredDelivery::V1(s) = postcard::from_bytes(bytes).ok()?;
    let now_ms = unix_ms(SystemTime::now());
    let expires_at = s.expiry_unix_ms.and_then(|ms| super::message::instant_at_unix_ms(ms, now_ms));
    let props = ForwardedProperties {
        payload_format_indicator: s.payload_format_indicator,
        content_type: s.content_type,
        response_topic: s.response_topic,
        correlation_data: s.correlation_data.map(Bytes::from),
        user_properties: s.user_properties,
    };
    let properties = (props != ForwardedProperties::default()).then(|| Arc::new(props));
    let msg = Msg {
        mountpoint: s.mountpoint.into(),
        topic: s.topic.into(),
        payload: Bytes::from(s.payload),
        qos: QoS::from_u8(s.msg_qos)?,
        retain: s.msg_retain,
        properties,
        expires_at,
        publisher: s.publisher.map(Into::into),
    };
    Some(Delivery {
        msg: Arc::new(msg),
        qos: QoS::from_u8(s.qos)?,
        retain: s.retain,
        subscription_ids: s.subscription_ids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_delivery_round_trips() {
        let msg = Msg {
            mountpoint: "mp".into(),
            topic: "a/b".into(),
            payload: Bytes::from_static(b"hello"),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: Some(Arc::new(ForwardedProperties {
                content_type: Some("text/plain".into()),
                user_properties: vec![("k".into(), "v".into())],
                ..Default::default()
            })),
            expires_at: None,
            publisher: Some("pub".into()),
        };
        let d = Delivery { msg: Arc::new(msg), qos: QoS::AtLeastOnce, retain: false, subscription_ids: vec![7] };
        assert_eq!(decode_delivery(&encode_delivery(&d)), Some(d));
        assert_eq!(decode_delivery(b"\xff\xff"), None);
    }
}
