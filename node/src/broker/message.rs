//! The version-neutral message that travels from a publisher to queues.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use vmq_mqtt::{Properties, QoS};

/// A published application message, shared (`Arc`) by every queue it is delivered to so that
/// fan-out never copies the payload.
#[derive(Debug, Clone, PartialEq)]
pub struct Msg {
    /// Mountpoint of the listener it was published on.
    pub mountpoint: Arc<str>,
    /// Topic name (aliases already resolved).
    pub topic: Arc<str>,
    /// Payload.
    pub payload: Bytes,
    /// QoS it was published with.
    pub qos: QoS,
    /// RETAIN flag as published.
    pub retain: bool,
    /// The properties a server forwards unchanged [MQTT-3.3.2-17..20]: payload format, content
    /// type, response topic, correlation data, user properties. `None` when all are absent, so
    /// v3/v4 traffic carries no extra allocation.
    pub properties: Option<Arc<ForwardedProperties>>,
    /// When the message expires (from Message Expiry Interval), if it does.
    pub expires_at: Option<Instant>,
    /// Client id of the publisher, for No Local [MQTT-3.8.3-3]; `None` for wills from the
    /// broker itself or retained messages.
    pub publisher: Option<Arc<str>>,
}

/// PUBLISH properties forwarded unchanged to subscribers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ForwardedProperties {
    /// Payload Format Indicator.
    pub payload_format_indicator: Option<u8>,
    /// Content Type.
    pub content_type: Option<String>,
    /// Response Topic.
    pub response_topic: Option<String>,
    /// Correlation Data.
    pub correlation_data: Option<Bytes>,
    /// User Properties, in order [MQTT-3.3.2-18].
    pub user_properties: Vec<(String, String)>,
}

impl ForwardedProperties {
    /// Extracts the forwarded subset of `p`; `None` when empty.
    pub fn from_properties(p: &Properties) -> Option<Arc<Self>> {
        let f = ForwardedProperties {
            payload_format_indicator: p.payload_format_indicator,
            content_type: p.content_type.clone(),
            response_topic: p.response_topic.clone(),
            correlation_data: p.correlation_data.clone(),
            user_properties: p.user_properties.clone(),
        };
        if f == ForwardedProperties::default() { None } else { Some(Arc::new(f)) }
    }

    /// Writes the forwarded subset into `p`.
    pub fn apply_to(&self, p: &mut Properties) {
        p.payload_format_indicator = self.payload_format_indicator;
        p.content_type.clone_from(&self.content_type);
        p.response_topic.clone_from(&self.response_topic);
        p.correlation_data.clone_from(&self.correlation_data);
        p.user_properties.clone_from(&self.user_properties);
    }
}

/// `ms` milliseconds from now, or `None` when that is beyond what an `Instant` can hold: the
/// milliseconds come from another node or the disk, and `Instant + Duration` panics on
/// overflow. A message expiring that far out effectively never expires.
pub fn instant_in_ms(ms: u64) -> Option<Instant> {
    Instant::now().checked_add(std::time::Duration::from_millis(ms))
}

/// `at` as milliseconds since the Unix epoch, given that it is `now_ms` on that clock now:
/// how expiry times go to the disk and to other nodes. A time already past stays past (by as
/// much) rather than becoming "now", for the reason given at [`instant_at_unix_ms`].
pub fn unix_ms_of(at: Instant, now_ms: u64) -> u64 {
    let now = Instant::now();
    match at.checked_duration_since(now) {
        Some(ahead) => now_ms.saturating_add(ahead.as_millis() as u64),
        None => now_ms.saturating_sub(now.duration_since(at).as_millis() as u64),
    }
}

/// The instant of `at_ms` (milliseconds since the Unix epoch, as the disk and other nodes
/// carry expiry times), given that it is `now_ms` on that clock now; `None` as for
/// [`instant_in_ms`]. A time already past maps to an instant as far in the past: mapping it to
/// "now" would make a message that expired while its session was offline look alive to
/// every `now` taken before it was read back, and it would be delivered [MQTT-3.3.2-5].
pub fn instant_at_unix_ms(at_ms: u64, now_ms: u64) -> Option<Instant> {
    if at_ms >= now_ms {
        return instant_in_ms(at_ms - now_ms);
    }
    let now = Instant::now();
    // An instant before the monotonic clock's origin cannot be formed on every platform;
    // the start of the clock is then the earliest that can be said.
    Some(now.checked_sub(std::time::Duration::from_millis(now_ms - at_ms)).unwrap_or(now))
}

impl Msg {
    /// True when the message expired at `now`.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// Remaining Message Expiry Interval in whole seconds at `now` (rounded up so that a
    /// message is never announced as expired while it still lives) [MQTT-3.3.2-6].
    pub fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        self.expires_at.map(|at| {
            let left = at.saturating_duration_since(now);
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            u32::try_from(secs).unwrap_or(u32::MAX)
        })
    }
}

/// A message on its way to one subscriber: the shared message plus what the matching
/// subscription(s) decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The message.
    pub msg: Arc<Msg>,
    /// QoS to deliver with: min(published, granted), or granted with `upgrade_outgoing_qos`.
    pub qos: QoS,
    /// RETAIN flag to send (Retain As Published, or set for retained messages sent on
    /// subscribe) [MQTT-3.3.1-12], [MQTT-3.3.1-13].
    pub retain: bool,
    /// Subscription identifiers of every matching subscription [MQTT-3.3.4-3].
    pub subscription_ids: Vec<u32>,
}
