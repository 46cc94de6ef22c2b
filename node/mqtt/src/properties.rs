use bytes::{BufMut, Bytes, BytesMut};

use super::codec::{
    MAX_REMAINING_LEN, field_len, has_wildcard, read_binary, read_string, read_u8, read_u16, read_u32, read_varint,
    varint_len, write_field, write_varint,
};
use super::{DecodeError, EncodeError};

/// MQTT 5.0 properties (section 2.2.2.2). One struct serves every packet; the codec only
/// accepts, and only writes, the properties a packet type allows, and rejects a duplicate of a
/// property that may appear once [MQTT-2.2.2-2] as a Protocol Error.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Properties {
    /// 0x01 Payload Format Indicator.
    pub payload_format_indicator: Option<u8>,
    /// 0x02 Message Expiry Interval (seconds).
    pub message_expiry_interval: Option<u32>,
    /// 0x03 Content Type.
    pub content_type: Option<String>,
    /// 0x08 Response Topic.
    pub response_topic: Option<String>,
    /// 0x09 Correlation Data.
    pub correlation_data: Option<Bytes>,
    /// 0x0B Subscription Identifier (several in PUBLISH, at most one in SUBSCRIBE).
    pub subscription_identifiers: Vec<u32>,
    /// 0x11 Session Expiry Interval (seconds).
    pub session_expiry_interval: Option<u32>,
    /// 0x12 Assigned Client Identifier.
    pub assigned_client_identifier: Option<String>,
    /// 0x13 Server Keep Alive (seconds).
    pub server_keep_alive: Option<u16>,
    /// 0x15 Authentication Method.
    pub authentication_method: Option<String>,
    /// 0x16 Authentication Data.
    pub authentication_data: Option<Bytes>,
    /// 0x17 Request Problem Information.
    pub request_problem_information: Option<u8>,
    /// 0x18 Will Delay Interval (seconds).
    pub will_delay_interval: Option<u32>,
    /// 0x19 Request Response Information.
    pub request_response_information: Option<u8>,
    /// 0x1A Response Information.
    pub response_information: Option<String>,
    /// 0x1C Server Reference.
    pub server_reference: Option<String>,
    /// 0x1F Reason String.
    pub reason_string: Option<String>,
    /// 0x21 Receive Maximum.
    pub receive_maximum: Option<u16>,
    /// 0x22 Topic Alias Maximum.
    pub topic_alias_maximum: Option<u16>,
    /// 0x23 Topic Alias.
    pub topic_alias: Option<u16>,
    /// 0x24 Maximum QoS.
    pub maximum_qos: Option<u8>,
    /// 0x25 Retain Available.
    pub retain_available: Option<u8>,
    /// 0x26 User Property (ordered, may repeat).
    pub user_properties: Vec<(String, String)>,
    /// 0x27 Maximum Packet Size.
    pub maximum_packet_size: Option<u32>,
    /// 0x28 Wildcard Subscription Available.
    pub wildcard_subscription_available: Option<u8>,
    /// 0x29 Subscription Identifier Available.
    pub subscription_identifier_available: Option<u8>,
    /// 0x2A Shared Subscription Available.
    pub shared_subscription_available: Option<u8>,
}

/// Where a property list appears; decides which properties it may hold (MQTT 5.0 section
/// 2.2.2.2, table 2-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PropertyContext {
    Connect,
    Will,
    ConnAck,
    Publish,
    /// PUBACK, PUBREC, PUBREL and PUBCOMP.
    PubResp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth,
}

/// Property identifiers (MQTT 5.0 table 2-4).
pub(crate) mod id {
    pub(crate) const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
    pub(crate) const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
    pub(crate) const CONTENT_TYPE: u8 = 0x03;
    pub(crate) const RESPONSE_TOPIC: u8 = 0x08;
    pub(crate) const CORRELATION_DATA: u8 = 0x09;
    pub(crate) const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
    pub(crate) const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
    pub(crate) const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
    pub(crate) const SERVER_KEEP_ALIVE: u8 = 0x13;
    pub(crate) const AUTHENTICATION_METHOD: u8 = 0x15;
    pub(crate) const AUTHENTICATION_DATA: u8 = 0x16;
    pub(crate) const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
    pub(crate) const WILL_DELAY_INTERVAL: u8 = 0x18;
    pub(crate) const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
    pub(crate) const RESPONSE_INFORMATION: u8 = 0x1A;
    pub(crate) const SERVER_REFERENCE: u8 = 0x1C;
    pub(crate) const REASON_STRING: u8 = 0x1F;
    pub(crate) const RECEIVE_MAXIMUM: u8 = 0x21;
    pub(crate) const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
    pub(crate) const TOPIC_ALIAS: u8 = 0x23;
    pub(crate) const MAXIMUM_QOS: u8 = 0x24;
    pub(crate) const RETAIN_AVAILABLE: u8 = 0x25;
    pub(crate) const USER_PROPERTY: u8 = 0x26;
    pub(crate) const MAXIMUM_PACKET_SIZE: u8 = 0x27;
    pub(crate) const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
    pub(crate) const SUBSCRIPTION_IDENTIFIER_AVAILABLE: u8 = 0x29;
    pub(crate) const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;
}

/// The bit of property `id` in a set of allowed properties (every id is below 64).
const fn bit(id: u8) -> u64 {
    1 << id
}

const fn bits(ids: &[u8]) -> u64 {
    let mut set = 0;
    let mut i = 0;
    while i < ids.len() {
        set |= bit(ids[i]);
        i += 1;
    }
    set
}

impl PropertyContext {
    /// The properties this packet may carry (MQTT 5.0 table 2-4).
    pub(crate) const fn allowed(self) -> u64 {
        use id::*;
        match self {
            PropertyContext::Connect => bits(&[
                SESSION_EXPIRY_INTERVAL,
                AUTHENTICATION_METHOD,
                AUTHENTICATION_DATA,
                REQUEST_PROBLEM_INFORMATION,
                REQUEST_RESPONSE_INFORMATION,
                RECEIVE_MAXIMUM,
                TOPIC_ALIAS_MAXIMUM,
                USER_PROPERTY,
                MAXIMUM_PACKET_SIZE,
            ]),
            PropertyContext::Will => bits(&[
                PAYLOAD_FORMAT_INDICATOR,
                MESSAGE_EXPIRY_INTERVAL,
                CONTENT_TYPE,
                RESPONSE_TOPIC,
                CORRELATION_DATA,
                WILL_DELAY_INTERVAL,
                USER_PROPERTY,
            ]),
            PropertyContext::ConnAck => bits(&[
                SESSION_EXPIRY_INTERVAL,
                ASSIGNED_CLIENT_IDENTIFIER,
                SERVER_KEEP_ALIVE,
                AUTHENTICATION_METHOD,
                AUTHENTICATION_DATA,
                RESPONSE_INFORMATION,
                SERVER_REFERENCE,
                REASON_STRING,
                RECEIVE_MAXIMUM,
                TOPIC_ALIAS_MAXIMUM,
                MAXIMUM_QOS,
                RETAIN_AVAILABLE,
                USER_PROPERTY,
                MAXIMUM_PACKET_SIZE,
                WILDCARD_SUBSCRIPTION_AVAILABLE,
                SUBSCRIPTION_IDENTIFIER_AVAILABLE,
                SHARED_SUBSCRIPTION_AVAILABLE,
            ]),
            PropertyContext::Publish => bits(&[
                PAYLOAD_FORMAT_INDICATOR,
                MESSAGE_EXPIRY_INTERVAL,
                CONTENT_TYPE,
                RESPONSE_TOPIC,
                CORRELATION_DATA,
                SUBSCRIPTION_IDENTIFIER,
                TOPIC_ALIAS,
                USER_PROPERTY,
            ]),
            PropertyContext::PubResp | PropertyContext::SubAck | PropertyContext::UnsubAck => {
                bits(&[REASON_STRING, USER_PROPERTY])
            }
            PropertyContext::Subscribe => bits(&[SUBSCRIPTION_IDENTIFIER, USER_PROPERTY]),
            PropertyContext::Unsubscribe => bits(&[USER_PROPERTY]),
            PropertyContext::Disconnect => {
                bits(&[SESSION_EXPIRY_INTERVAL, SERVER_REFERENCE, REASON_STRING, USER_PROPERTY])
            }
            PropertyContext::Auth => bits(&[AUTHENTICATION_METHOD, AUTHENTICATION_DATA, REASON_STRING, USER_PROPERTY]),
        }
    }
}

/// Every property identifier MQTT 5.0 defines; any other is malformed.
const KNOWN: u64 = PropertyContext::Connect.allowed()
    | PropertyContext::Will.allowed()
    | PropertyContext::ConnAck.allowed()
    | PropertyContext::Publish.allowed();

/// Stores a property that may appear once; a second one is a Protocol Error (MQTT 5.0 section
/// 2.2.2.2 and the per-property rules of sections 3.1.2.11, 3.2.2.3, 3.3.2.3, ...).
fn set_once<T>(slot: &mut Option<T>, value: T) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(DecodeError::ProtocolError("property appears more than once"));
    }
    *slot = Some(value);
    Ok(())
}

/// A Byte property whose only values are 0 and 1 (Request Problem Information, MQTT 5.0
/// section 3.1.2.11.7; Retain Available, 3.2.2.3.5; Maximum QoS, 3.2.2.3.4; ...); any other
/// value is a Protocol Error.
fn read_flag(buf: &mut Bytes) -> Result<u8, DecodeError> {
    match read_u8(buf)? {
        b @ (0 | 1) => Ok(b),
        _ => Err(DecodeError::ProtocolError("property value must be 0 or 1")),
    }
}

fn read_nonzero_u16(buf: &mut Bytes) -> Result<u16, DecodeError> {
    match read_u16(buf)? {
        0 => Err(DecodeError::ProtocolError("property value must not be 0")),
        v => Ok(v),
    }
}

impl Properties {
    /// Reads a property length and the properties after it, allowing only those of `ctx`.
    #[inline]
    pub(crate) fn read(buf: &mut Bytes, ctx: PropertyContext) -> Result<Properties, DecodeError> {
        let len = read_varint(buf)? as usize;
        if len > buf.len() {
            return Err(DecodeError::MalformedPacket("property length exceeds the packet"));
        }
        // Most packets carry none; this path is small enough to inline into the packet readers.
        if len == 0 {
            return Ok(Properties::default());
        }
        Properties::read_list(buf.split_to(len), ctx)
    }

    fn read_list(mut buf: Bytes, ctx: PropertyContext) -> Result<Properties, DecodeError> {
        let mut props = Properties::default();
        let allowed = ctx.allowed();
        while !buf.is_empty() {
            // The identifier is a variable byte integer, although every defined one fits in a
            // single byte (MQTT 5.0 section 2.2.2.2).
            let id = read_varint(&mut buf)?;
            let Some(id) = u8::try_from(id).ok().filter(|&i| i < 64 && KNOWN & bit(i) != 0) else {
                return Err(DecodeError::MalformedPacket("unknown property identifier"));
            };
            if allowed & bit(id) == 0 {
                return Err(DecodeError::ProtocolError("property not allowed in this packet"));
            }
            props.read_one(id, &mut buf, ctx)?;
        }
        if ctx == PropertyContext::Connect
            && props.authentication_data.is_some()
            && props.authentication_method.is_none()
        {
            // MQTT 5.0 section 3.1.2.11.10: data without a method is a Protocol Error.
            return Err(DecodeError::ProtocolError("authentication data without method"));
        }
        Ok(props)
    }

    fn read_one(&mut self, pid: u8, buf: &mut Bytes, ctx: PropertyContext) -> Result<(), DecodeError> {
        use id::*;
        match pid {
            PAYLOAD_FORMAT_INDICATOR => set_once(&mut self.payload_format_indicator, read_flag(buf)?),
            MESSAGE_EXPIRY_INTERVAL => set_once(&mut self.message_expiry_interval, read_u32(buf)?),
            CONTENT_TYPE => set_once(&mut self.content_type, read_string(buf)?),
            RESPONSE_TOPIC => {
                let topic = read_string(buf)?;
                if topic.is_empty() || has_wildcard(&topic) {
                    // [MQTT-3.3.2-14]: the Response Topic is a topic name, without wildcards.
                    return Err(DecodeError::ProtocolError("invalid response topic"));
                }
                set_once(&mut self.response_topic, topic)
            }
            CORRELATION_DATA => set_once(&mut self.correlation_data, read_binary(buf)?),
            SUBSCRIPTION_IDENTIFIER => {
                let sid = read_varint(buf)?;
                if sid == 0 {
                    // MQTT 5.0 section 3.3.2.3.8: a value of 0 is a Protocol Error.
                    return Err(DecodeError::ProtocolError("subscription identifier 0"));
                }
                if ctx != PropertyContext::Publish && !self.subscription_identifiers.is_empty() {
                    // Several in a PUBLISH (one per matching subscription), one in SUBSCRIBE
                    // (MQTT 5.0 section 3.8.2.1.2).
                    return Err(DecodeError::ProtocolError("subscription identifier repeated"));
                }
                self.subscription_identifiers.push(sid);
                Ok(())
            }
            SESSION_EXPIRY_INTERVAL => set_once(&mut self.session_expiry_interval, read_u32(buf)?),
            ASSIGNED_CLIENT_IDENTIFIER => set_once(&mut self.assigned_client_identifier, read_string(buf)?),
            SERVER_KEEP_ALIVE => set_once(&mut self.server_keep_alive, read_u16(buf)?),
            AUTHENTICATION_METHOD => set_once(&mut self.authentication_method, read_string(buf)?),
            AUTHENTICATION_DATA => set_once(&mut self.authentication_data, read_binary(buf)?),
            REQUEST_PROBLEM_INFORMATION => set_once(&mut self.request_problem_information, read_flag(buf)?),
            WILL_DELAY_INTERVAL => set_once(&mut self.will_delay_interval, read_u32(buf)?),
            REQUEST_RESPONSE_INFORMATION => set_once(&mut self.request_response_information, read_flag(buf)?),
            RESPONSE_INFORMATION => set_once(&mut self.response_information, read_string(buf)?),
            SERVER_REFERENCE => set_once(&mut self.server_reference, read_string(buf)?),
            REASON_STRING => set_once(&mut self.reason_string, read_string(buf)?),
            // MQTT 5.0 sections 3.1.2.11.3 / 3.2.2.3.3: Receive Maximum 0 is a Protocol Error.
            RECEIVE_MAXIMUM => set_once(&mut self.receive_maximum, read_nonzero_u16(buf)?),
            TOPIC_ALIAS_MAXIMUM => set_once(&mut self.topic_alias_maximum, read_u16(buf)?),
            // MQTT 5.0 section 3.3.2.3.4: Topic Alias 0 is a Protocol Error; the session checks
            // the upper bound against its Topic Alias Maximum.
            TOPIC_ALIAS => set_once(&mut self.topic_alias, read_nonzero_u16(buf)?),
            // MQTT 5.0 section 3.2.2.3.4: Maximum QoS is 0 or 1 (absent means 2).
            MAXIMUM_QOS => set_once(&mut self.maximum_qos, read_flag(buf)?),
            RETAIN_AVAILABLE => set_once(&mut self.retain_available, read_flag(buf)?),
            USER_PROPERTY => {
                let key = read_string(buf)?;
                let value = read_string(buf)?;
                self.user_properties.push((key, value));
                Ok(())
            }
            MAXIMUM_PACKET_SIZE => {
                // MQTT 5.0 section 3.1.2.11.4: a Maximum Packet Size of 0 is a Protocol Error.
                match read_u32(buf)? {
                    0 => Err(DecodeError::ProtocolError("maximum packet size 0")),
                    v => set_once(&mut self.maximum_packet_size, v),
                }
            }
            WILDCARD_SUBSCRIPTION_AVAILABLE => set_once(&mut self.wildcard_subscription_available, read_flag(buf)?),
            SUBSCRIPTION_IDENTIFIER_AVAILABLE => set_once(&mut self.subscription_identifier_available, read_flag(buf)?),
            SHARED_SUBSCRIPTION_AVAILABLE => set_once(&mut self.shared_subscription_available, read_flag(buf)?),
            _ => Err(DecodeError::MalformedPacket("unknown property identifier")),
        }
    }

    /// Length of the properties of `ctx` in `self`, without the property-length prefix.
    ///
    /// Properties `ctx` does not allow are not counted (and not written). Fails on a field
    /// longer than 65,535 bytes, a subscription identifier outside 1..=268,435,455, or more
    /// than one subscription identifier outside PUBLISH.
    // Inlined where `ctx` is a constant, so the checks of properties the packet cannot carry
    // fold away (about half the cost of encoding a PUBLISH without properties).
    #[inline(always)]
    pub(crate) fn encoded_len(&self, ctx: PropertyContext) -> Result<usize, EncodeError> {
        use id::*;
        let allowed = ctx.allowed();
        let on = |pid: u8| allowed & bit(pid) != 0;
        // Each fixed-size property is its one-byte identifier plus its value.
        let fixed = |pid: u8, present: bool, size: usize| if on(pid) && present { 1 + size } else { 0 };
        let field = |pid: u8, v: Option<&[u8]>| match v {
            Some(v) if on(pid) => field_len(v).map(|n| 1 + n),
            _ => Ok(0),
        };
        let mut n = fixed(PAYLOAD_FORMAT_INDICATOR, self.payload_format_indicator.is_some(), 1)
            + fixed(MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval.is_some(), 4)
            + field(CONTENT_TYPE, self.content_type.as_deref().map(str::as_bytes))?
            + field(RESPONSE_TOPIC, self.response_topic.as_deref().map(str::as_bytes))?
            + field(CORRELATION_DATA, self.correlation_data.as_deref())?
            + fixed(SESSION_EXPIRY_INTERVAL, self.session_expiry_interval.is_some(), 4)
            + field(ASSIGNED_CLIENT_IDENTIFIER, self.assigned_client_identifier.as_deref().map(str::as_bytes))?
            + fixed(SERVER_KEEP_ALIVE, self.server_keep_alive.is_some(), 2)
            + field(AUTHENTICATION_METHOD, self.authentication_method.as_deref().map(str::as_bytes))?
            + field(AUTHENTICATION_DATA, self.authentication_data.as_deref())?
            + fixed(REQUEST_PROBLEM_INFORMATION, self.request_problem_information.is_some(), 1)
            + fixed(WILL_DELAY_INTERVAL, self.will_delay_interval.is_some(), 4)
            + fixed(REQUEST_RESPONSE_INFORMATION, self.request_response_information.is_some(), 1)
            + field(RESPONSE_INFORMATION, self.response_information.as_deref().map(str::as_bytes))?
            + field(SERVER_REFERENCE, self.server_reference.as_deref().map(str::as_bytes))?
            + field(REASON_STRING, self.reason_string.as_deref().map(str::as_bytes))?
            + fixed(RECEIVE_MAXIMUM, self.receive_maximum.is_some(), 2)
            + fixed(TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum.is_some(), 2)
            + fixed(TOPIC_ALIAS, self.topic_alias.is_some(), 2)
            + fixed(MAXIMUM_QOS, self.maximum_qos.is_some(), 1)
            + fixed(RETAIN_AVAILABLE, self.retain_available.is_some(), 1)
            + fixed(MAXIMUM_PACKET_SIZE, self.maximum_packet_size.is_some(), 4)
            + fixed(WILDCARD_SUBSCRIPTION_AVAILABLE, self.wildcard_subscription_available.is_some(), 1)
            + fixed(SUBSCRIPTION_IDENTIFIER_AVAILABLE, self.subscription_identifier_available.is_some(), 1)
            + fixed(SHARED_SUBSCRIPTION_AVAILABLE, self.shared_subscription_available.is_some(), 1);
        if on(SUBSCRIPTION_IDENTIFIER) && !self.subscription_identifiers.is_empty() {
            if ctx != PropertyContext::Publish && self.subscription_identifiers.len() > 1 {
                return Err(EncodeError::Invalid("more than one subscription identifier"));
            }
            for &sid in &self.subscription_identifiers {
                if sid == 0 || sid as usize > MAX_REMAINING_LEN {
                    return Err(EncodeError::Invalid("subscription identifier out of range"));
                }
                n += 1 + varint_len(sid as usize);
            }
        }
        if on(USER_PROPERTY) {
            for (key, value) in &self.user_properties {
                n += 1 + field_len(key.as_bytes())? + field_len(value.as_bytes())?;
            }
        }
        Ok(n)
    }

    /// Writes the property length `len` (from [`Properties::encoded_len`] for the same `ctx`)
    /// and then the properties of `ctx`, in identifier order.
    // Inlined where `ctx` is a constant, so the checks of properties the packet cannot carry
    // fold away (about half the cost of encoding a PUBLISH without properties).
    #[inline(always)]
    pub(crate) fn write(&self, ctx: PropertyContext, len: usize, out: &mut BytesMut) {
        use id::*;
        write_varint(out, len);
        if len == 0 {
            return;
        }
        let start = out.len();
        let allowed = ctx.allowed();
        let on = |pid: u8| allowed & bit(pid) != 0;
        let byte = |out: &mut BytesMut, pid: u8, v: Option<u8>| {
            if let (true, Some(v)) = (on(pid), v) {
                out.put_u8(pid);
                out.put_u8(v);
            }
        };
        let two = |out: &mut BytesMut, pid: u8, v: Option<u16>| {
            if let (true, Some(v)) = (on(pid), v) {
                out.put_u8(pid);
                out.put_u16(v);
            }
        };
        let four = |out: &mut BytesMut, pid: u8, v: Option<u32>| {
            if let (true, Some(v)) = (on(pid), v) {
                out.put_u8(pid);
                out.put_u32(v);
            }
        };
        let field = |out: &mut BytesMut, pid: u8, v: Option<&[u8]>| {
            if let (true, Some(v)) = (on(pid), v) {
                out.put_u8(pid);
                write_field(out, v);
            }
        };
        byte(out, PAYLOAD_FORMAT_INDICATOR, self.payload_format_indicator);
        four(out, MESSAGE_EXPIRY_INTERVAL, self.message_expiry_interval);
        field(out, CONTENT_TYPE, self.content_type.as_deref().map(str::as_bytes));
        field(out, RESPONSE_TOPIC, self.response_topic.as_deref().map(str::as_bytes));
        field(out, CORRELATION_DATA, self.correlation_data.as_deref());
        if on(SUBSCRIPTION_IDENTIFIER) {
            for &sid in &self.subscription_identifiers {
                out.put_u8(SUBSCRIPTION_IDENTIFIER);
                write_varint(out, sid as usize);
            }
        }
        four(out, SESSION_EXPIRY_INTERVAL, self.session_expiry_interval);
        field(out, ASSIGNED_CLIENT_IDENTIFIER, self.assigned_client_identifier.as_deref().map(str::as_bytes));
        two(out, SERVER_KEEP_ALIVE, self.server_keep_alive);
        field(out, AUTHENTICATION_METHOD, self.authentication_method.as_deref().map(str::as_bytes));
        field(out, AUTHENTICATION_DATA, self.authentication_data.as_deref());
        byte(out, REQUEST_PROBLEM_INFORMATION, self.request_problem_information);
        four(out, WILL_DELAY_INTERVAL, self.will_delay_interval);
        byte(out, REQUEST_RESPONSE_INFORMATION, self.request_response_information);
        field(out, RESPONSE_INFORMATION, self.response_information.as_deref().map(str::as_bytes));
        field(out, SERVER_REFERENCE, self.server_reference.as_deref().map(str::as_bytes));
        field(out, REASON_STRING, self.reason_string.as_deref().map(str::as_bytes));
        two(out, RECEIVE_MAXIMUM, self.receive_maximum);
        two(out, TOPIC_ALIAS_MAXIMUM, self.topic_alias_maximum);
        two(out, TOPIC_ALIAS, self.topic_alias);
        byte(out, MAXIMUM_QOS, self.maximum_qos);
        byte(out, RETAIN_AVAILABLE, self.retain_available);
        if on(USER_PROPERTY) {
            for (key, value) in &self.user_properties {
                out.put_u8(USER_PROPERTY);
                write_field(out, key.as_bytes());
                write_field(out, value.as_bytes());
            }
        }
        four(out, MAXIMUM_PACKET_SIZE, self.maximum_packet_size);
        byte(out, WILDCARD_SUBSCRIPTION_AVAILABLE, self.wildcard_subscription_available);
        byte(out, SUBSCRIPTION_IDENTIFIER_AVAILABLE, self.subscription_identifier_available);
        byte(out, SHARED_SUBSCRIPTION_AVAILABLE, self.shared_subscription_available);
        debug_assert_eq!(out.len() - start, len, "property length disagrees with its encoding");
    }

    /// Writes the property length and the properties of `ctx`, for a packet whose
    /// `body_len` already validated them.
    // Inlined where `ctx` is a constant, so the checks of properties the packet cannot carry
    // fold away (about half the cost of encoding a PUBLISH without properties).
    #[inline(always)]
    pub(crate) fn write_validated(&self, ctx: PropertyContext, out: &mut BytesMut) {
        // `body_len` ran `encoded_len` on these very properties before anything was written, so
        // this cannot fail; were it to, an empty list is written and the length check in
        // `encode` flags the mismatch in debug builds.
        let len = self.encoded_len(ctx).unwrap_or(0);
        self.write(ctx, len, out);
    }
}

/// Size of a property list with its length prefix, from its content length.
pub(crate) fn with_prefix(len: usize) -> usize {
    varint_len(len) + len
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &'static [u8], ctx: PropertyContext) -> Result<Properties, DecodeError> {
        Properties::read(&mut Bytes::from_static(bytes), ctx)
    }

    #[test]
    fn publish_properties_decode_field_by_field() {
        let bytes: &[u8] = &[
            0x10, // property length 16
            0x01, 0x01, // payload format indicator: UTF-8
            0x23, 0x00, 0x05, // topic alias 5
            0x0B, 0x01, // subscription identifier 1
            0x0B, 0x80, 0x01, // subscription identifier 128
            0x26, 0x00, 0x01, b'k', 0x00, 0x00, // user property ("k", "")
        ];
        let mut b = Bytes::from_static(bytes);
        let props = Properties::read(&mut b, PropertyContext::Publish).unwrap();
        assert_eq!(props.payload_format_indicator, Some(1));
        assert_eq!(props.topic_alias, Some(5));
        assert_eq!(props.subscription_identifiers, vec![1, 128]);
        assert_eq!(props.user_properties, vec![("k".to_owned(), String::new())]);
        assert!(b.is_empty());
    }

    #[test]
    fn property_not_allowed_in_packet_is_protocol_error() {
        // Topic Alias in CONNECT.
        assert!(matches!(
            read(&[0x03, 0x23, 0x00, 0x01], PropertyContext::Connect),
            Err(DecodeError::ProtocolError(_))
        ));
        // Reason String in UNSUBSCRIBE.
        assert!(matches!(
            read(&[0x04, 0x1F, 0x00, 0x01, b'x'], PropertyContext::Unsubscribe),
            Err(DecodeError::ProtocolError(_))
        ));
    }

    #[test]
    fn unknown_property_identifier_is_malformed() {
        assert!(matches!(read(&[0x02, 0x04, 0x00], PropertyContext::Publish), Err(DecodeError::MalformedPacket(_))));
        assert!(matches!(
            read(&[0x03, 0x80, 0x01, 0x00], PropertyContext::Publish),
            Err(DecodeError::MalformedPacket(_))
        ));
    }

    #[test]
    fn duplicate_single_property_is_protocol_error() {
        // Two Message Expiry Intervals [MQTT-2.2.2-2 / section 3.3.2.3.3].
        assert!(matches!(
            read(&[0x0A, 0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 2], PropertyContext::Publish),
            Err(DecodeError::ProtocolError(_))
        ));
        // Two Subscription Identifiers in SUBSCRIBE (section 3.8.2.1.2).
        assert!(matches!(
            read(&[0x04, 0x0B, 0x01, 0x0B, 0x02], PropertyContext::Subscribe),
            Err(DecodeError::ProtocolError(_))
        ));
    }

    #[test]
    fn repeatable_properties_keep_their_order() {
        let props =
            read(&[0x0C, 0x26, 0, 1, b'b', 0, 0, 0x26, 0, 1, b'a', 0, 0], PropertyContext::Unsubscribe).unwrap();
        assert_eq!(props.user_properties, vec![("b".to_owned(), String::new()), ("a".to_owned(), String::new())]);
    }

    #[test]
    fn zero_values_that_the_spec_forbids_are_protocol_errors() {
        // Subscription identifier 0 (section 3.3.2.3.8).
        assert!(matches!(read(&[0x02, 0x0B, 0x00], PropertyContext::Publish), Err(DecodeError::ProtocolError(_))));
        // Topic alias 0 (section 3.3.2.3.4).
        assert!(matches!(
            read(&[0x03, 0x23, 0x00, 0x00], PropertyContext::Publish),
            Err(DecodeError::ProtocolError(_))
        ));
        // Receive maximum 0 (section 3.1.2.11.3).
        assert!(matches!(
            read(&[0x03, 0x21, 0x00, 0x00], PropertyContext::Connect),
            Err(DecodeError::ProtocolError(_))
        ));
        // Maximum packet size 0 (section 3.1.2.11.4).
        assert!(matches!(
            read(&[0x05, 0x27, 0, 0, 0, 0], PropertyContext::Connect),
            Err(DecodeError::ProtocolError(_))
        ));
        // Request problem information 2 (section 3.1.2.11.7).
        assert!(matches!(read(&[0x02, 0x17, 0x02], PropertyContext::Connect), Err(DecodeError::ProtocolError(_))));
    }

    #[test]
    fn response_topic_with_wildcard_is_protocol_error() {
        // [MQTT-3.3.2-14]
        assert!(matches!(
            read(&[0x05, 0x08, 0x00, 0x02, b'a', b'#'], PropertyContext::Publish),
            Err(DecodeError::ProtocolError(_))
        ));
    }

    #[test]
    fn authentication_data_without_method_is_protocol_error() {
        assert!(matches!(
            read(&[0x04, 0x16, 0x00, 0x01, 0xAA], PropertyContext::Connect),
            Err(DecodeError::ProtocolError(_))
        ));
    }

    #[test]
    fn property_length_past_the_packet_is_malformed() {
        assert!(matches!(read(&[0x05, 0x01, 0x01], PropertyContext::Publish), Err(DecodeError::MalformedPacket(_))));
        // A string value running past the property length (but not the packet).
        assert!(matches!(
            read(&[0x03, 0x03, 0x00, 0x05, b'a', b'b', b'c', b'd', b'e'], PropertyContext::Publish),
            Err(DecodeError::MalformedPacket(_))
        ));
    }

    #[test]
    fn encoding_leaves_out_properties_the_packet_does_not_allow() {
        let props = Properties { topic_alias: Some(3), reason_string: Some("r".into()), ..Default::default() };
        let len = props.encoded_len(PropertyContext::PubResp).unwrap();
        assert_eq!(len, 4); // 0x1F, 0x00 0x01, 'r'
        let mut out = BytesMut::new();
        props.write(PropertyContext::PubResp, len, &mut out);
        assert_eq!(&out[..], &[0x04, 0x1F, 0x00, 0x01, b'r']);
    }

    #[test]
    fn encoding_refuses_two_subscription_identifiers_in_subscribe() {
        let props = Properties { subscription_identifiers: vec![1, 2], ..Default::default() };
        assert!(props.encoded_len(PropertyContext::Subscribe).is_err());
        assert_eq!(props.encoded_len(PropertyContext::Publish), Ok(4));
    }
}
