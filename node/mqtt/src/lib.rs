//! MQTT 3.1 (level 3), 3.1.1 (level 4) and 5.0 (level 5) packets and their codec.
//!
//! One version-neutral [`Packet`] type serves every protocol level; fields a level lacks
//! (properties, reason codes) are left at their defaults when decoding it and ignored when
//! encoding for it. The wire formats live in [`v4`] (levels 3 and 4, as VerneMQ's `vmq_parser`)
//! and [`v5`] (as `vmq_parser_mqtt5`), one file per packet. Nothing here does I/O.
//!
//! Decoding is two-step: the fixed header and remaining length are checked first, so an
//! oversize packet is rejected before its body is buffered; then the whole frame is split off
//! the buffer and parsed (payloads are zero-copy slices of it).

mod codec;
mod error;
mod properties;
mod reason;
pub mod topic;
pub mod v4;
pub mod v5;

use std::sync::Arc;

use bytes::Bytes;

pub use codec::{FixedHeader, decode, encode, encoded_len};
pub use error::{DecodeError, EncodeError};
pub use properties::Properties;
pub use reason::ReasonCode;

/// The protocol level of a connection, from its CONNECT packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProtocolVersion {
    /// MQTT 3.1 (protocol name `MQIsdp`, level 3).
    V3,
    /// MQTT 3.1.1 (protocol name `MQTT`, level 4).
    V4,
    /// MQTT 5.0 (protocol name `MQTT`, level 5).
    V5,
}

impl ProtocolVersion {
    /// The protocol level byte.
    pub fn level(self) -> u8 {
        match self {
            ProtocolVersion::V3 => 3,
            ProtocolVersion::V4 => 4,
            ProtocolVersion::V5 => 5,
        }
    }

    /// The version with protocol level `level`, if supported.
    pub fn from_level(level: u8) -> Option<Self> {
        match level {
            3 => Some(ProtocolVersion::V3),
            4 => Some(ProtocolVersion::V4),
            5 => Some(ProtocolVersion::V5),
            _ => None,
        }
    }

    /// True for MQTT 5.0.
    pub fn is_v5(self) -> bool {
        self == ProtocolVersion::V5
    }
}

/// Quality of service of a publish or subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum QoS {
    /// At most once.
    #[default]
    AtMostOnce = 0,
    /// At least once.
    AtLeastOnce = 1,
    /// Exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS for its wire value, if valid.
    pub fn from_u8(v: u8) -> Option<QoS> {
        match v {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// A packet identifier (non-zero on the wire for QoS > 0 packets [MQTT-2.2.1-3]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PacketId(pub u16);

/// Any MQTT control packet.
#[derive(Debug, Clone, PartialEq)]
pub enum Packet {
    /// CONNECT.
    Connect(Box<Connect>),
    /// CONNACK.
    ConnAck(ConnAck),
    /// PUBLISH.
    Publish(Publish),
    /// PUBACK (QoS 1 acknowledgement).
    PubAck(PubResp),
    /// PUBREC (QoS 2, part 1).
    PubRec(PubResp),
    /// PUBREL (QoS 2, part 2).
    PubRel(PubResp),
    /// PUBCOMP (QoS 2, part 3).
    PubComp(PubResp),
    /// SUBSCRIBE.
    Subscribe(Subscribe),
    /// SUBACK.
    SubAck(SubAck),
    /// UNSUBSCRIBE.
    Unsubscribe(Unsubscribe),
    /// UNSUBACK.
    UnsubAck(UnsubAck),
    /// PINGREQ.
    PingReq,
    /// PINGRESP.
    PingResp,
    /// DISCONNECT.
    Disconnect(Disconnect),
    /// AUTH (MQTT 5 only).
    Auth(Auth),
}

/// CONNECT.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Connect {
    /// Protocol level requested by the client.
    pub protocol: Option<ProtocolVersion>,
    /// Clean Session (3.1.1) / Clean Start (5.0).
    pub clean_start: bool,
    /// Keep alive in seconds (0 = disabled).
    pub keep_alive: u16,
    /// Client identifier; may be empty.
    pub client_id: String,
    /// Will message, if any.
    pub will: Option<Will>,
    /// User name, if present.
    pub username: Option<String>,
    /// Password, if present.
    pub password: Option<Bytes>,
    /// CONNECT properties (5.0).
    pub properties: Properties,
}

/// The will message carried by CONNECT.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Will {
    /// Will topic.
    pub topic: String,
    /// Will payload.
    pub payload: Bytes,
    /// Will QoS.
    pub qos: QoS,
    /// Will retain flag.
    pub retain: bool,
    /// Will properties (5.0): will delay, expiry, content type, response topic, ...
    pub properties: Properties,
}

/// CONNACK.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConnAck {
    /// Session Present flag.
    pub session_present: bool,
    /// Reason code (5.0 values; mapped to 3.1.1 return codes when encoding for level 3/4).
    pub code: ReasonCode,
    /// CONNACK properties (5.0).
    pub properties: Properties,
}

/// PUBLISH.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Publish {
    /// DUP flag.
    pub dup: bool,
    /// QoS.
    pub qos: QoS,
    /// RETAIN flag.
    pub retain: bool,
    /// Topic name (may be empty in 5.0 when a topic alias is used).
    pub topic: Arc<str>,
    /// Packet identifier, present iff QoS > 0.
    pub packet_id: Option<PacketId>,
    /// Application payload.
    pub payload: Bytes,
    /// PUBLISH properties (5.0).
    pub properties: Properties,
}

/// PUBACK, PUBREC, PUBREL and PUBCOMP.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PubResp {
    /// Packet identifier.
    pub packet_id: PacketId,
    /// Reason code (5.0; `Success` otherwise).
    pub code: ReasonCode,
    /// Properties (5.0): reason string, user properties.
    pub properties: Properties,
}

/// Subscription options of one topic filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS.
    pub qos: QoS,
    /// No Local (5.0): do not send the subscriber its own publishes.
    pub no_local: bool,
    /// Retain As Published (5.0).
    pub retain_as_published: bool,
    /// Retain Handling (5.0): 0 send on subscribe, 1 only if new, 2 never.
    pub retain_handling: u8,
}

/// One topic filter of a SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SubscribeFilter {
    /// The topic filter (possibly `$share/group/filter`).
    pub filter: String,
    /// Its options.
    pub options: SubscriptionOptions,
}

/// SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Subscribe {
    /// Packet identifier.
    pub packet_id: PacketId,
    /// The filters, at least one [MQTT-3.8.3-3].
    pub filters: Vec<SubscribeFilter>,
    /// Properties (5.0): subscription identifier, user properties.
    pub properties: Properties,
}

/// SUBACK.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SubAck {
    /// Packet identifier.
    pub packet_id: PacketId,
    /// One code per filter: granted QoS (0, 1, 2) or a failure (>= 0x80).
    pub codes: Vec<ReasonCode>,
    /// Properties (5.0).
    pub properties: Properties,
}

/// UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Unsubscribe {
    /// Packet identifier.
    pub packet_id: PacketId,
    /// Topic filters to remove.
    pub filters: Vec<String>,
    /// Properties (5.0).
    pub properties: Properties,
}

/// UNSUBACK.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UnsubAck {
    /// Packet identifier.
    pub packet_id: PacketId,
    /// One code per filter (5.0 only; empty for 3.1.1).
    pub codes: Vec<ReasonCode>,
    /// Properties (5.0).
    pub properties: Properties,
}

/// DISCONNECT.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Disconnect {
    /// Reason code (5.0).
    pub code: ReasonCode,
    /// Properties (5.0): session expiry, reason string, server reference.
    pub properties: Properties,
}

/// AUTH (5.0).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Auth {
    /// Reason code.
    pub code: ReasonCode,
    /// Properties: authentication method and data.
    pub properties: Properties,
}
