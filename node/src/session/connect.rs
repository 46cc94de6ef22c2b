//! CONNECT: validation (protocol version, client identifier, authentication, will,
//! keep-alive), the netsplit rule for registrations, and the CONNACK that refuses a client.
//! The CONNACK that accepts one is built by [`super::Session::accept`].
//!
//! MQTT 5 Request Response Information is never answered with Response Information: the
//! server MAY omit it [MQTT-3.2.2.3.15], and VerneMQ 2.1 documents no setting for the string
//! it would carry, so there is nothing the broker could promise a client to build on.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::authorize::Authorization;
use crate::broker::{Broker, NetsplitAction};
use vmq_config::MqttConfig;
use vmq_mqtt::{ConnAck, Connect, DecodeError, Packet, ProtocolVersion, ReasonCode, topic};

/// Largest packet MQTT allows: 268,435,455 bytes of body plus a 5-byte fixed header.
const MQTT_MAX_PACKET: usize = 268_435_460;

/// Largest packet the server reads from a client (announced as Maximum Packet Size when
/// `max_message_size` is set).
pub fn max_packet_size(cfg: &MqttConfig) -> usize {
    if cfg.max_message_size == 0 {
        MQTT_MAX_PACKET
    } else {
        // Room for the topic and properties around a maximal payload.
        cfg.max_message_size.saturating_add(2 * 65_536).min(MQTT_MAX_PACKET)
    }
}

/// The largest CONNECT read before the client is authenticated: every field at its longest
/// (client id, will topic, will payload, user name and password are each at most 65,535
/// bytes with a 2-byte length) and 64 KiB of MQTT 5 properties. A client that claims more is
/// closed after the fixed header, so nobody unauthenticated makes the broker buffer more.
pub const MAX_CONNECT_SIZE: usize = 5 * (2 + 65_535) + 64 * 1024 + 64;

/// Largest CONNECT read from a client: [`MAX_CONNECT_SIZE`], or less when
/// `max_message_size` makes every packet smaller.
pub fn max_connect_size(cfg: &MqttConfig) -> usize {
    max_packet_size(cfg).min(MAX_CONNECT_SIZE)
}

/// What the listener a client connected through decides about it.
#[derive(Debug, Clone, Copy)]
pub struct ListenerRules<'a> {
    /// The listener's name, for the log.
    pub name: &'a str,
    /// Protocol versions accepted.
    pub allowed_protocol_versions: &'a [ProtocolVersion],
    /// Accept anonymous clients here even when `allow_anonymous` is off.
    pub allow_anonymous_override: bool,
}

/// A CONNECT that passed validation, with what the server decided.
#[derive(Debug)]
pub struct Accepted {
    /// Protocol version of the connection.
    pub version: ProtocolVersion,
    /// Client id, possibly assigned by the server.
    pub client_id: String,
    /// True when the server assigned the client id (5.0 Assigned Client Identifier).
    pub assigned: bool,
    /// Keep-alive the server enforces (after `max_keepalive`); zero = none.
    pub keep_alive: u16,
    /// True when it differs from the client's (5.0 Server Keep Alive).
    pub keep_alive_changed: bool,
    /// Session expiry after disconnect; `None` = never.
    pub session_expiry: Option<Duration>,
    /// Anonymous access is off here (`allow_anonymous`, the listener's
    /// `allow_anonymous_override`): the client is let in only if an authentication plugin
    /// accepts it. With anonymous access on, no plugin is asked, as in VerneMQ.
    pub authenticate: bool,
}

/// A refused CONNECT: the reason code for CONNACK and a log line.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    /// CONNACK reason code (mapped to a 3.1.1 return code by the encoder).
    pub code: ReasonCode,
    /// Why, for the log.
    pub cause: String,
}

impl Refused {
    /// The CONNACK that tells the client; the connection closes after it.
    pub fn connack(&self) -> Packet {
        Packet::ConnAck(ConnAck { code: self.code, ..ConnAck::default() })
    }
}

/// The refusal for a CONNECT whose registration the authorizer did not allow (`None`: no
/// answer within `mqtt.connect.timeout`). A denial always reads as one: a code that is not an
/// error becomes "not authorized" (MQTT 3.1.1 return code 5); a missing answer is "server
/// unavailable" (3), as the client may try again.
pub fn register_refusal(verdict: Option<Authorization>) -> Option<Refused> {
    match verdict {
        Some(a) => a.refusal_code().map(|code| {
            let cause = if code == ReasonCode::BAD_USER_NAME_OR_PASSWORD {
                "bad user name or password"
            } else {
                "not authorized"
            };
            refuse(code, cause)
        }),
        None => Some(refuse(ReasonCode::SERVER_UNAVAILABLE, "no authorization within mqtt.connect.timeout")),
    }
}

/// The refusal for a CONNECT that could not be decoded, when the protocol has one: an
/// unknown protocol name or level is answered with "unacceptable protocol version" before
/// closing [MQTT-3.1.2-2]; anything else just closes.
pub fn refusal_for(e: &DecodeError) -> Option<Refused> {
    match e {
        DecodeError::UnsupportedProtocolVersion(_) | DecodeError::InvalidProtocolName => {
            Some(refuse(ReasonCode::UNSUPPORTED_PROTOCOL_VERSION, e.to_string()))
        }
        _ => None,
    }
}

fn refuse(code: ReasonCode, cause: impl Into<String>) -> Refused {
    Refused { code, cause: cause.into() }
}

/// Session expiry of a CONNECT: MQTT 3.x clean session ends at disconnect, a persistent one
/// never expires (unless `persistent_client_expiration`); MQTT 5 uses Session Expiry Interval,
/// where 0xFFFFFFFF means never [MQTT-3.1.2-23].
pub fn session_expiry(c: &Connect, version: ProtocolVersion) -> Option<Duration> {
    if version.is_v5() {
        match c.properties.session_expiry_interval.unwrap_or(0) {
            u32::MAX => None,
            s => Some(Duration::from_secs(u64::from(s))),
        }
    } else if c.clean_start {
        Some(Duration::ZERO)
    } else {
        None
    }
}

/// Validates a CONNECT for `listener`, then asks the broker whether registrations are allowed
/// now. `new_client_id` makes an id for 5.0 clients that sent none.
pub fn admit(
    c: &Connect,
    listener: ListenerRules<'_>,
    settings: &MqttConfig,
    broker: &Broker,
    new_client_id: impl FnOnce() -> String,
) -> Result<Accepted, Refused> {
    let accepted = validate(c, listener, settings, new_client_id)?;
    if !broker.netsplit_allows(NetsplitAction::Register) {
        // `allow_register_during_netsplit = off` while a cluster member is unreachable:
        // CONNACK 3 (server unavailable), 0x88 in MQTT 5.
        broker.counters.netsplit_refused[0].fetch_add(1, Ordering::Relaxed);
        return Err(refuse(ReasonCode::SERVER_UNAVAILABLE, "cluster not ready (netsplit)"));
    }
    Ok(accepted)
}

/// Validates a CONNECT for `listener`. `new_client_id` makes an id for 5.0 clients that sent
/// none.
pub fn validate(
    c: &Connect,
    listener: ListenerRules<'_>,
    settings: &MqttConfig,
    new_client_id: impl FnOnce() -> String,
) -> Result<Accepted, Refused> {
    let Some(version) = c.protocol else {
        return Err(refuse(ReasonCode::UNSUPPORTED_PROTOCOL_VERSION, "CONNECT without protocol level"));
    };
    if !listener.allowed_protocol_versions.contains(&version) {
        return Err(refuse(
            ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
            format!("protocol level {} not allowed on listener {}", version.level(), listener.name),
        ));
    }
    let mut client_id = c.client_id.clone();
    let mut assigned = false;
    if client_id.is_empty() {
        match version {
            // MQTT 3.1 requires 1 to 23 characters.
            ProtocolVersion::V3 => {
                return Err(refuse(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID, "empty client id (MQTT 3.1)"));
            }
            // [MQTT-3.1.3-7], [MQTT-3.1.3-8]: an empty id needs Clean Session 1.
            ProtocolVersion::V4 if !c.clean_start => {
                return Err(refuse(
                    ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
                    "empty client id with clean session 0 [MQTT-3.1.3-8]",
                ));
            }
            // [MQTT-3.1.3-6]: the server assigns an id (returned to 5.0 clients).
            _ => {
                client_id = new_client_id();
                assigned = true;
            }
        }
    }
    if !assigned && client_id.len() > settings.max_client_id_size {
        return Err(refuse(
            ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
            format!(
                "client id of {} bytes exceeds max_client_id_size {}",
                client_id.len(),
                settings.max_client_id_size
            ),
        ));
    }
    if let Some(will) = &c.will {
        if let Err(e) = topic::validate_topic_name(&will.topic, settings.topic_max_depth) {
            return Err(refuse(ReasonCode::TOPIC_NAME_INVALID, format!("will topic rejected: {e}")));
        }
        if settings.max_message_size > 0 && will.payload.len() > settings.max_message_size {
            return Err(refuse(ReasonCode::PACKET_TOO_LARGE, "will payload exceeds max_message_size"));
        }
    }
    let mut keep_alive = c.keep_alive;
    if let Some(max) = settings.max_keepalive
        && (keep_alive == 0 || keep_alive > max)
    {
        keep_alive = max;
    }
    Ok(Accepted {
        version,
        client_id,
        assigned,
        keep_alive,
        keep_alive_changed: keep_alive != c.keep_alive,
        session_expiry: session_expiry(c, version),
        authenticate: !settings.allow_anonymous && !listener.allow_anonymous_override,
    })
}

/// The refusal for a client that must authenticate on a node without an authentication
/// plugin: nobody gets in, as in VerneMQ with no `auth_on_register` hook answering.
pub fn unauthenticated_refusal(c: &Connect) -> Refused {
    let code = if c.username.is_some() { ReasonCode::BAD_USER_NAME_OR_PASSWORD } else { ReasonCode::NOT_AUTHORIZED };
    refuse(code, "allow_anonymous is off and no authentication plugin is enabled")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_VERSIONS: &[ProtocolVersion] = &[ProtocolVersion::V3, ProtocolVersion::V4, ProtocolVersion::V5];

    fn listener() -> ListenerRules<'static> {
        ListenerRules { name: "default", allowed_protocol_versions: ALL_VERSIONS, allow_anonymous_override: false }
    }

    fn connect(version: ProtocolVersion, id: &str, clean: bool) -> Connect {
        Connect {
            protocol: Some(version),
            client_id: id.into(),
            clean_start: clean,
            keep_alive: 60,
            ..Connect::default()
        }
    }

    #[test]
    fn empty_client_id_rules_mqtt_3_1_3_6_to_8() {
        let s = MqttConfig { allow_anonymous: true, ..MqttConfig::default() };
        let l = listener();
        let v4_persistent = validate(&connect(ProtocolVersion::V4, "", false), l, &s, || "x".into());
        assert_eq!(v4_persistent.unwrap_err().code, ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
        let v4_clean = validate(&connect(ProtocolVersion::V4, "", true), l, &s, || "gen".into()).unwrap();
        assert_eq!((v4_clean.client_id.as_str(), v4_clean.assigned), ("gen", true));
        let v5 = validate(&connect(ProtocolVersion::V5, "", false), l, &s, || "gen5".into()).unwrap();
        assert!(v5.assigned);
        assert!(validate(&connect(ProtocolVersion::V3, "", true), l, &s, || "x".into()).is_err());
    }

    #[test]
    fn client_id_length_and_anonymous_and_versions() {
        let mut s = MqttConfig { allow_anonymous: true, max_client_id_size: 4, ..MqttConfig::default() };
        let mut l = listener();
        assert_eq!(
            validate(&connect(ProtocolVersion::V4, "12345", true), l, &s, String::new).unwrap_err().code,
            ReasonCode::CLIENT_IDENTIFIER_NOT_VALID
        );
        assert!(!validate(&connect(ProtocolVersion::V4, "a", true), l, &s, String::new).unwrap().authenticate);
        s.allow_anonymous = false;
        assert!(validate(&connect(ProtocolVersion::V4, "a", true), l, &s, String::new).unwrap().authenticate);
        l.allow_anonymous_override = true;
        assert!(!validate(&connect(ProtocolVersion::V4, "a", true), l, &s, String::new).unwrap().authenticate);
        l.allow_anonymous_override = false;
        s.allow_anonymous = true;
        l.allowed_protocol_versions = &[ProtocolVersion::V4];
        assert_eq!(
            validate(&connect(ProtocolVersion::V5, "a", true), l, &s, String::new).unwrap_err().code,
            ReasonCode::UNSUPPORTED_PROTOCOL_VERSION
        );
    }

    #[test]
    fn max_keepalive_caps_and_replaces_zero() {
        let s = MqttConfig { allow_anonymous: true, max_keepalive: Some(30), ..MqttConfig::default() };
        let a = validate(&connect(ProtocolVersion::V5, "a", true), listener(), &s, String::new).unwrap();
        assert_eq!((a.keep_alive, a.keep_alive_changed), (30, true));
        let mut c = connect(ProtocolVersion::V5, "a", true);
        c.keep_alive = 0;
        assert_eq!(validate(&c, listener(), &s, String::new).unwrap().keep_alive, 30);
        c.keep_alive = 10;
        assert!(!validate(&c, listener(), &s, String::new).unwrap().keep_alive_changed);
    }

    #[test]
    fn session_expiry_per_version_mqtt_3_1_2_23() {
        let mut c = connect(ProtocolVersion::V5, "a", true);
        assert_eq!(session_expiry(&c, ProtocolVersion::V5), Some(Duration::ZERO));
        c.properties.session_expiry_interval = Some(u32::MAX);
        assert_eq!(session_expiry(&c, ProtocolVersion::V5), None);
        c.properties.session_expiry_interval = Some(10);
        assert_eq!(session_expiry(&c, ProtocolVersion::V5), Some(Duration::from_secs(10)));
        assert_eq!(session_expiry(&connect(ProtocolVersion::V4, "a", false), ProtocolVersion::V4), None);
        assert_eq!(session_expiry(&connect(ProtocolVersion::V4, "a", true), ProtocolVersion::V4), Some(Duration::ZERO));
    }

    #[test]
    fn a_refused_registration_always_reads_as_a_refusal() {
        assert!(register_refusal(Some(Authorization::Allow)).is_none());
        let code = |v| register_refusal(v).map(|r| r.code);
        assert_eq!(code(Some(Authorization::Deny(ReasonCode::BANNED))), Some(ReasonCode::BANNED));
        assert_eq!(code(Some(Authorization::Deny(ReasonCode::SUCCESS))), Some(ReasonCode::NOT_AUTHORIZED));
        assert_eq!(code(None), Some(ReasonCode::SERVER_UNAVAILABLE));
    }
}
