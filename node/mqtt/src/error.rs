use super::ReasonCode;

/// Why bytes from a client could not be decoded into a packet. Each cause maps to the reason
/// code the server closes the connection with ([`DecodeError::reason_code`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes violate the packet format (bad lengths, bad UTF-8, reserved bits, ...).
    #[error("malformed packet: {0}")]
    MalformedPacket(&'static str),
    /// Well-formed bytes that the protocol forbids (duplicate property, bad QoS, ...).
    #[error("protocol error: {0}")]
    ProtocolError(&'static str),
    /// The remaining length announces more than the allowed maximum.
    #[error("packet of {size} bytes exceeds the maximum of {max}")]
    PacketTooLarge {
        /// Announced packet size.
        size: usize,
        /// Allowed maximum.
        max: usize,
    },
    /// CONNECT with a protocol level this server does not speak.
    #[error("unsupported protocol level {0}")]
    UnsupportedProtocolVersion(u8),
    /// CONNECT with a protocol name other than `MQTT` / `MQIsdp`.
    #[error("invalid protocol name")]
    InvalidProtocolName,
    /// PUBLISH topic name containing wildcards or otherwise invalid [MQTT-3.3.2-2].
    #[error("invalid topic name")]
    TopicNameInvalid,
}

impl DecodeError {
    /// The MQTT 5 reason code to send in CONNACK or DISCONNECT for this error.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            DecodeError::MalformedPacket(_) => ReasonCode::MALFORMED_PACKET,
            DecodeError::ProtocolError(_) => ReasonCode::PROTOCOL_ERROR,
            DecodeError::PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            DecodeError::UnsupportedProtocolVersion(_) | DecodeError::InvalidProtocolName => {
                ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
            }
            DecodeError::TopicNameInvalid => ReasonCode::TOPIC_NAME_INVALID,
        }
    }
}

/// Why a packet could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The packet would exceed the maximum remaining length (268,435,455 bytes).
    #[error("packet too large to encode ({0} bytes)")]
    TooLarge(usize),
    /// A string or binary field is longer than 65,535 bytes.
    #[error("field too long ({0} bytes)")]
    FieldTooLong(usize),
    /// The packet does not exist in this protocol version (AUTH before 5.0).
    #[error("packet not available in this protocol version")]
    NotInVersion,
    /// A field is out of range for its packet (e.g. QoS > 0 publish without packet id).
    #[error("invalid packet: {0}")]
    Invalid(&'static str),
}
