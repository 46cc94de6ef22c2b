//! What the cluster layer puts on the transport's streams and into the replicated values:
//! versioned enums encoded with postcard (docs/architecture.md "Between nodes"), except on the
//! hot path.
//!
//! - `Metadata` stream: [`MetadataFrame`] (replica messages of the configured backend, and
//!   membership gossip);
//! - `Rpc` stream: [`RpcFrame`] (join requests);
//! - `Publish` stream: forwarded publishes, in order per publisher, in the compact layout of
//!   [`publish`] (format 2); format 0, postcard's [`PublishFrame::V1`], is still read.
//!
//! Replicated values: [`SubscriberValue`] under `subscriber` (key `(mountpoint, client_id)`)
//! and [`RetainValue`] under `retain` (key `(mountpoint, topic)`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use vmq_storage::metadata::NodeId;

pub(crate) mod publish;

use super::membership::MembershipState;
use crate::broker::SubscriptionRecord;
use crate::broker::message::{ForwardedProperties, Msg, instant_at_unix_ms, instant_in_ms, unix_ms_of};
use vmq_mqtt::{QoS, SubscriptionOptions};

/// A frame on the `Metadata` stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum MetadataFrame {
    /// A replica message, encoded by the backend's own wire format.
    Replica(Vec<u8>),
    /// The sender's membership state (gossip).
    Membership(MembershipState),
}

/// A frame on the `Rpc` stream.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum RpcFrame {
    /// `node`, reachable at `addr`, asks to be added to the receiver's cluster.
    JoinRequest {
        /// The joining node.
        node: NodeId,
        /// Its `listener.vmq.clustering` address as peers should dial it.
        addr: SocketAddr,
    },
    /// A request that expects one [`RpcFrame::Response`] with the same id.
    Request { id: u64, body: Request },
    /// The answer to the request `id` of the receiver.
    Response { id: u64, body: Response },
}

/// Mountpoint and client id on the wire.
pub(crate) type WireKey = (String, String);

/// What one node asks of another (docs/architecture.md "Registration", "Queue migration").
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Request {
    /// To the client id's registration leader: the sender registers the client.
    Register { key: WireKey, clean_start: bool, known_epoch: u64 },
    /// From the leader to a node holding the client's session: disconnect it, and hand the
    /// session over to `to` unless the new connection starts clean.
    TakeOver { key: WireKey, epoch: u64, to: NodeId, clean_start: bool },
    /// One step of a queue migration: stored deliveries (oldest first) for the client's
    /// session on the receiver, registered with `epoch`.
    Drain { key: WireKey, epoch: u64, messages: Vec<Vec<u8>> },
    /// The drain into the session of `key` is complete (what it held back may go out).
    DrainDone { key: WireKey },
    /// To a node that leaves the cluster: stop its MQTT listeners; with `kill_sessions`,
    /// disconnect its clients, move its remaining queues after `timeout_ms` and leave.
    Leave { kill_sessions: bool, timeout_ms: u64 },
    /// To a leaving node: how far it is.
    LeaveStatus,
    /// From a leaving node: take over this offline persistent session, registered with `epoch`;
    /// its messages follow in [`Request::Drain`] steps.
    Adopt { key: WireKey, epoch: u64, subscriptions: Vec<WireSubscription> },
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Response {
    /// The registration may go ahead with `epoch`; `session` is what the previous node handed
    /// over (a persistent session resumed elsewhere).
    Granted { epoch: u64, session: Option<HandOver> },
    /// The request cannot be served; why.
    Refused { reason: String },
    /// The session was disconnected; what it handed over, if it continues on the new node.
    TakenOver { session: Option<HandOver> },
    /// The drain step is stored by the session it was meant for (or the session has ended).
    Stored,
    /// The session moved on to `node`: drain there instead.
    Moved { node: NodeId },
    /// Done; what to tell the operator.
    Text { text: String },
    /// Where a cluster leave stands.
    Progress { progress: LeaveProgress },
}

/// Where the leave of a node stands (`vmq-admin cluster leave` prints it every `-i` seconds).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LeaveProgress {
    /// What the node is doing now.
    pub phase: String,
    /// Offline queues still here when the timeout came, and how many of them moved so far.
    pub queues_total: u64,
    pub queues_moved: u64,
    /// Messages in those queues, and how many moved so far.
    pub messages_total: u64,
    pub messages_moved: u64,
    /// The node has left the cluster (it stops now).
    pub done: bool,
}

/// A persistent session handed from one node to another: its subscriptions now, its queued
/// messages by [`Request::Drain`] steps after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HandOver {
    /// The node the session leaves.
    pub from: NodeId,
    pub subscriptions: Vec<WireSubscription>,
    /// Messages queued there when it was handed over (for progress and logs).
    pub queued: u64,
    /// Outgoing QoS 1/2 messages in flight to the last connection, with their packet ids and
    /// states: the new node sends them again as the old one would have (DUP, same packet id),
    /// so that the client's own de-duplication keeps QoS 2 exactly once.
    pub inflight: Vec<WireInflight>,
    /// Incoming QoS 2 packet ids whose PUBREL has not arrived yet.
    pub incoming_qos2: Vec<u16>,
}

/// One outgoing message in flight, as handed over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WireInflight {
    pub packet_id: u16,
    /// 0: waiting for PUBACK, 1: PUBREC, 2: PUBCOMP.
    pub state: u8,
    /// The delivery, encoded as the message store keeps it.
    pub delivery: Vec<u8>,
}

/// The first format of a frame on the `Publish` stream, written by older nodes (and kept in
/// their durable outboxes); read, no longer written.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum PublishFrame {
    /// Version 1.
    V1(ForwardedPublish),
}

/// The forwarded subset of PUBLISH properties.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WireProperties {
    payload_format_indicator: Option<u8>,
    content_type: Option<String>,
    response_topic: Option<String>,
    correlation_data: Option<Vec<u8>>,
    user_properties: Vec<(String, String)>,
}

impl WireProperties {
    fn from_msg(p: &Option<Arc<ForwardedProperties>>) -> Option<WireProperties> {
        p.as_ref().map(|p| WireProperties {
            payload_format_indicator: p.payload_format_indicator,
            content_type: p.content_type.clone(),
            response_topic: p.response_topic.clone(),
            correlation_data: p.correlation_data.as_ref().map(|b| b.to_vec()),
            user_properties: p.user_properties.clone(),
        })
    }

    fn into_msg(self) -> Arc<ForwardedProperties> {
        Arc::new(ForwardedProperties {
            payload_format_indicator: self.payload_format_indicator,
            content_type: self.content_type,
            response_topic: self.response_topic,
            correlation_data: self.correlation_data.map(Bytes::from),
            user_properties: self.user_properties,
        })
    }
}

/// A publish forwarded to one node, with what that node must deliver (format 0).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ForwardedPublish {
    pub mountpoint: String,
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
    pub properties: Option<WireProperties>,
    /// Remaining message expiry in milliseconds (relative: node clocks may differ).
    pub expiry_ms: Option<u64>,
    pub publisher: Option<String>,
    /// Deliver to the receiver's matching plain subscriptions.
    pub plain: bool,
    /// Deliver to these shared-subscription members: client id, full `$share/..` filter.
    pub shared: Vec<(String, String)>,
}

impl ForwardedPublish {
    /// The frame for `msg` with its delivery instructions.
    #[cfg(test)]
    pub fn new(msg: &Msg, plain: bool, shared: &[(Arc<str>, String)]) -> ForwardedPublish {
        let now = std::time::Instant::now();
        ForwardedPublish {
            mountpoint: msg.mountpoint.to_string(),
            topic: msg.topic.to_string(),
            payload: msg.payload.to_vec(),
            qos: msg.qos as u8,
            retain: msg.retain,
            properties: WireProperties::from_msg(&msg.properties),
            expiry_ms: msg.expires_at.map(|at| at.saturating_duration_since(now).as_millis() as u64),
            publisher: msg.publisher.as_deref().map(str::to_string),
            plain,
            shared: shared.iter().map(|(c, f)| (c.to_string(), f.clone())).collect(),
        }
    }

    /// The message to route on the receiving node, taking the payload without a copy.
    pub fn into_msg(self) -> Msg {
        Msg {
            mountpoint: self.mountpoint.as_str().into(),
            topic: self.topic.as_str().into(),
            payload: Bytes::from(self.payload),
            qos: QoS::from_u8(self.qos).unwrap_or(QoS::AtMostOnce),
            retain: self.retain,
            properties: self.properties.map(WireProperties::into_msg),
            expires_at: self.expiry_ms.and_then(instant_in_ms),
            publisher: self.publisher.as_deref().map(Into::into),
        }
    }

    /// The message to route on the receiving node.
    #[cfg(test)]
    pub fn to_msg(&self) -> Msg {
        Msg {
            mountpoint: self.mountpoint.as_str().into(),
            topic: self.topic.as_str().into(),
            payload: Bytes::from(self.payload.clone()),
            qos: QoS::from_u8(self.qos).unwrap_or(QoS::AtMostOnce),
            retain: self.retain,
            properties: self.properties.clone().map(WireProperties::into_msg),
            expires_at: self.expiry_ms.and_then(instant_in_ms),
            publisher: self.publisher.as_deref().map(Into::into),
        }
    }
}

/// One subscription in a `subscriber` value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WireSubscription {
    pub filter: String,
    pub qos: u8,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: u8,
    pub id: Option<u32>,
}

impl WireSubscription {
    pub fn new(filter: String, r: &SubscriptionRecord) -> Self {
        WireSubscription {
            filter,
            qos: r.options.qos as u8,
            no_local: r.options.no_local,
            retain_as_published: r.options.retain_as_published,
            retain_handling: r.options.retain_handling,
            id: r.id,
        }
    }

    pub fn record(&self) -> SubscriptionRecord {
        SubscriptionRecord {
            options: SubscriptionOptions {
                qos: QoS::from_u8(self.qos).unwrap_or(QoS::AtMostOnce),
                no_local: self.no_local,
                retain_as_published: self.retain_as_published,
                retain_handling: self.retain_handling,
            },
            id: self.id,
        }
    }
}

/// The subscriptions one node holds for a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NodeSubscriptions {
    pub node: NodeId,
    pub clean_session: bool,
    pub subscriptions: Vec<WireSubscription>,
}

/// The value under `subscriber` / `(mountpoint, client_id)`: per node, as VerneMQ's
/// `[{Node, CleanSession, Subs}]`. Present while the session exists (with or without
/// subscriptions), so that every node knows where a client id lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum SubscriberValue {
    /// Version 1 (no fencing epoch: reads as epoch 0).
    V1(Vec<NodeSubscriptions>),
    /// Version 2: with the fencing epoch of the registration that wrote it.
    V2 { epoch: u64, entries: Vec<NodeSubscriptions> },
}

impl SubscriberValue {
    /// The registration epoch and the entries.
    pub fn into_parts(self) -> (u64, Vec<NodeSubscriptions>) {
        match self {
            SubscriberValue::V1(entries) => (0, entries),
            SubscriberValue::V2 { epoch, entries } => (epoch, entries),
        }
    }
}

/// The value under `retain` / `(mountpoint, topic)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum RetainValue {
    /// Version 1.
    V1 {
        payload: Vec<u8>,
        qos: u8,
        properties: Option<WireProperties>,
        /// Wall-clock expiry in Unix milliseconds.
        expires_unix_ms: Option<u64>,
    },
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl RetainValue {
    pub fn from_msg(msg: &Msg) -> RetainValue {
        RetainValue::V1 {
            payload: msg.payload.to_vec(),
            qos: msg.qos as u8,
            properties: WireProperties::from_msg(&msg.properties),
            expires_unix_ms: msg.expires_at.map(|at| unix_ms_of(at, unix_ms())),
        }
    }

    pub fn to_msg(&self, mountpoint: &str, topic: &str) -> Msg {
        let RetainValue::V1 { payload, qos, properties, expires_unix_ms } = self;
        Msg {
            mountpoint: mountpoint.into(),
            topic: topic.into(),
            payload: Bytes::from(payload.clone()),
            qos: QoS::from_u8(*qos).unwrap_or(QoS::AtMostOnce),
            retain: true,
            properties: properties.clone().map(WireProperties::into_msg),
            expires_at: expires_unix_ms.and_then(|at| instant_at_unix_ms(at, unix_ms())),
            publisher: None,
        }
    }
}

/// Encodes a two-part key (`(mountpoint, client_id)` or `(mountpoint, topic)`).
pub(crate) fn encode_key(a: &str, b: &str) -> Vec<u8> {
    postcard::to_stdvec(&(a, b)).unwrap_or_default()
}

/// Decodes a key written by [`encode_key`].
pub(crate) fn decode_key(bytes: &[u8]) -> Option<(String, String)> {
    postcard::from_bytes(bytes).ok()
}

/// Encodes a frame or value; postcard cannot fail on these types.
pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).unwrap_or_default()
}

/// Decodes a frame or value from a peer or the store; `None` when malformed.
pub(crate) fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Option<T> {
    postcard::from_bytes(bytes).ok()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn forwarded_publish_round_trips() {
        let msg = Msg {
            mountpoint: "mp".into(),
            topic: "a/b".into(),
            payload: Bytes::from_static(b"hello"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: None,
            expires_at: None,
            publisher: Some("pub".into()),
        };
        let frame = PublishFrame::V1(ForwardedPublish::new(&msg, true, &[("c".into(), "$share/g/a/+".into())]));
        let back: PublishFrame = decode(&encode(&frame)).unwrap();
        let PublishFrame::V1(f) = back;
        assert_eq!(f.to_msg(), msg);
        assert!(f.plain);
        assert_eq!(f.shared, vec![("c".to_string(), "$share/g/a/+".to_string())]);
    }

    #[test]
    fn an_expiry_beyond_what_an_instant_holds_from_a_peer_means_none() {
        let msg = Msg {
            mountpoint: "".into(),
            topic: "t".into(),
            payload: Bytes::new(),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: None,
            expires_at: None,
            publisher: None,
        };
        let mut f = ForwardedPublish::new(&msg, true, &[]);
        f.expiry_ms = Some(u64::MAX);
        // Either beyond what an Instant holds (no expiry) or centuries away: never a panic.
        let far = Instant::now() + Duration::from_secs(100 * 365 * 86_400);
        assert!(f.to_msg().expires_at.is_none_or(|at| at > far));
        let r = RetainValue::V1 { payload: vec![1], qos: 0, properties: None, expires_unix_ms: Some(u64::MAX) };
        assert!(r.to_msg("", "t").expires_at.is_none_or(|at| at > far));
    }

    #[test]
    fn keys_round_trip_and_garbage_is_rejected() {
        assert_eq!(decode_key(&encode_key("", "c1")), Some((String::new(), "c1".into())));
        assert_eq!(decode::<SubscriberValue>(&[0xff, 0xff, 0xff]), None);
    }
}
