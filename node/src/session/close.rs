//! How a connection ends: DISCONNECT from the client (and the session expiry it may change),
//! the server's DISCONNECT, and whether and when the will is published.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Close, Session};
use crate::broker::Kick;
use crate::broker::message::{ForwardedProperties, Msg};
use vmq_mqtt::{Disconnect, Packet, Properties, ReasonCode, Will};

/// Why a connection ended.
#[derive(Debug)]
pub enum End {
    /// The client sent DISCONNECT.
    ClientDisconnect {
        /// Reason code 0x04: publish the will anyway.
        with_will: bool,
    },
    /// The session or the connection closed it.
    Close(Close),
    /// The peer went away (EOF or I/O error).
    Gone(String),
    /// The registry or the broker asked it to leave.
    Kicked(Kick),
}

/// What the connection does once the session ended, in this order: write what the session
/// still had to send, then `disconnect`; hand `will` to the broker; release the session
/// with `session_expiry`.
#[derive(Debug)]
#[must_use]
pub struct Farewell {
    /// The server's DISCONNECT (MQTT 5 only).
    pub disconnect: Option<Packet>,
    /// The will and how long to wait before publishing it.
    pub will: Option<(Arc<Msg>, Duration)>,
    /// Session expiry from now on (a client's DISCONNECT may have changed it).
    pub session_expiry: Option<Duration>,
    /// The registration generation of this connection: a delayed will is dropped once a
    /// later connection resumed the session [MQTT-3.1.3-9].
    pub generation: u64,
    /// Why, for the log.
    pub cause: String,
}

impl Session {
    /// Handles the client's DISCONNECT: the connection ends; the session expiry may change.
    pub(super) fn handle_disconnect(&mut self, d: &Disconnect) -> End {
        match disconnect_expiry(d, self.connected.connect_expiry_set, self.connected.session_expiry) {
            Ok(expiry) => {
                self.connected.session_expiry = expiry;
                End::ClientDisconnect { with_will: d.code == ReasonCode::DISCONNECT_WITH_WILL }
            }
            Err(close) => End::Close(close),
        }
    }

    /// Ends the session for `end` at `now`: what to tell the client and what becomes of the
    /// will. Call once; [`Session::take_transmit`] still holds what was produced before.
    pub fn finish(&mut self, end: &End, now: Instant) -> Farewell {
        let (reason, publish_will, cause) = match end {
            End::ClientDisconnect { with_will } => (None, *with_will, "client disconnected".to_string()),
            End::Close(c) => (c.send_disconnect.then_some(c.reason), c.publish_will, c.cause.clone()),
            End::Gone(cause) => (None, true, cause.clone()),
            End::Kicked(Kick::TakenOver) => (
                Some(ReasonCode::SESSION_TAKEN_OVER),
                !self.connected.suppress_lwt_on_takeover,
                "session taken over".into(),
            ),
            End::Kicked(Kick::Administrative) => {
                (Some(ReasonCode::ADMINISTRATIVE_ACTION), true, "disconnected by an operator".into())
            }
            End::Kicked(Kick::Shutdown) => {
                (Some(ReasonCode::SERVER_SHUTTING_DOWN), true, "server shutting down".into())
            }
        };
        let disconnect = reason.filter(|_| self.version.is_v5()).map(|code| {
            let mut properties = Properties::default();
            // Reason String only when the client did not opt out [MQTT-3.1.2-29].
            if self.connected.problem_information {
                properties.reason_string = Some(cause.clone());
            }
            Packet::Disconnect(Disconnect { code, properties })
        });
        let shutting_down = matches!(end, End::Kicked(Kick::Shutdown));
        let will = self.connected.will.take().filter(|_| publish_will).map(|will| {
            let delay = self.will_delay(&will, shutting_down);
            (self.will_message(&will, delay, now), delay)
        });
        Farewell {
            disconnect,
            will,
            session_expiry: self.connected.session_expiry,
            generation: self.connected.generation,
            cause,
        }
    }

    /// The will is published after the Will Delay Interval or when the session ends,
    /// whichever comes first [MQTT-3.1.3-9]; `max_last_will_delay` caps it; at shutdown it is
    /// published at once.
    fn will_delay(&self, will: &Will, shutting_down: bool) -> Duration {
        if shutting_down {
            return Duration::ZERO;
        }
        let mut delay = Duration::from_secs(u64::from(will.properties.will_delay_interval.unwrap_or(0)));
        if let Some(max) = self.connected.max_last_will_delay {
            delay = delay.min(max);
        }
        if let Some(expiry) = self.connected.session_expiry {
            delay = delay.min(expiry);
        }
        delay
    }

    fn will_message(&self, will: &Will, delay: Duration, now: Instant) -> Arc<Msg> {
        Arc::new(Msg {
            mountpoint: self.slot.key.mountpoint.clone(),
            topic: will.topic.as_str().into(),
            payload: will.payload.clone(),
            qos: will.qos,
            retain: will.retain,
            properties: ForwardedProperties::from_properties(&will.properties),
            // The Message Expiry Interval counts from the publication, after the delay.
            expires_at: will
                .properties
                .message_expiry_interval
                .map(|s| now + delay + Duration::from_secs(u64::from(s))),
            publisher: Some(self.slot.key.client_id.clone()),
        })
    }
}

/// Session expiry after a DISCONNECT that may change it. Setting a non-zero interval when
/// CONNECT had zero is a protocol error [MQTT-3.14.2-2].
fn disconnect_expiry(
    d: &Disconnect,
    connect_expiry_set: bool,
    current: Option<Duration>,
) -> Result<Option<Duration>, Close> {
    let Some(secs) = d.properties.session_expiry_interval else { return Ok(current) };
    if !connect_expiry_set && secs != 0 {
        return Err(Close {
            reason: ReasonCode::PROTOCOL_ERROR,
            cause: "DISCONNECT sets a session expiry after CONNECT had none [MQTT-3.14.2-2]".into(),
            send_disconnect: true,
            publish_will: false,
        });
    }
    Ok(if secs == u32::MAX { None } else { Some(Duration::from_secs(u64::from(secs))) })
}
