//! What the session cannot decide alone and asks its driver to find out: a [`Request`] with a
//! [`Token`], answered later with a [`Verdict`] through [`Session::handle_verdict`].
//!
//! The session places each request at a byte offset of its output ([`Transmit::requests`]):
//! the bytes before it may go out at once, those after it only once the verdict was handled,
//! so acknowledgements leave in the order of the packets they answer [MQTT-4.6.0-2, -3]
//! (raft's `Ready`: what may be sent now is kept apart from what must wait). The session keeps
//! what it will do with the answer; the driver only sees what it has to find out.
//!
//! Two kinds of request exist: a durable write (an acknowledgement that promises the message
//! is on disk or taken by another node), and an authorization (may this client publish this,
//! subscribe to that; see [`crate::authorize`]). While an authorization is pending the session
//! handles none of the client's later packets: they stay unread, and the connection stops
//! reading ([`Session::input_paused`]) until the verdict came and [`Session::resume`] handled
//! them. Durable writes do not stop it: the client's window of publishes stays in flight.
//! A session without an authorizer never asks for one, so its hot path never waits on one.
//! Webhooks and the registration leader are further kinds of [`Request`] to come.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::BytesMut;
use tracing::{debug, warn};

use super::{Close, End, Session, Transmit};
use crate::authorize::{Authorization, PublishIntent, Subject, SubjectRef, SubscribeIntent};
use crate::broker::queue::{Durable, NotDurable};
use vmq_mqtt::{Packet, PacketId, PubResp, Publish, QoS, ReasonCode, Subscribe};

/// Requests an idle session keeps room for; a burst beyond it gives its room back.
const IDLE_AWAITING_CAPACITY: usize = 16;

/// Names a request, so that its verdict finds what the session does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token(u64);

/// What the driver has to find out.
#[derive(Debug)]
pub enum Request {
    /// Whether a publish was taken where its acknowledgement promises: every ticket settles
    /// (the message store wrote it, the other nodes accepted it) or one fails.
    Durable(Vec<Durable>),
    /// Whether `who` may publish (VerneMQ's `auth_on_publish`).
    AuthorizePublish {
        /// The client.
        who: Subject,
        /// What it publishes.
        publish: PublishIntent,
    },
    /// Whether `who` may subscribe to each filter (VerneMQ's `auth_on_subscribe`).
    AuthorizeSubscribe {
        /// The client.
        who: Subject,
        /// The filters of one SUBSCRIBE, in order.
        filters: Vec<SubscribeIntent>,
    },
}

/// A request the driver must answer with [`Session::handle_verdict`].
#[derive(Debug)]
#[must_use]
pub struct PendingRequest {
    /// Pass it back with the verdict.
    pub token: Token,
    /// What to find out.
    pub request: Request,
}

/// The answer to a [`Request`].
#[derive(Debug)]
pub enum Verdict {
    /// To [`Request::Durable`]: `Ok` once every ticket settled, else the first failure.
    Durable(Result<(), NotDurable>),
    /// To [`Request::AuthorizePublish`].
    Publish(Authorization),
    /// To [`Request::AuthorizeSubscribe`]: one per filter, in order; a filter without one is
    /// refused.
    Subscribe(Vec<Authorization>),
}

/// What the session does once a verdict arrives.
#[derive(Debug)]
pub(super) enum Continuation {
    /// Acknowledge the publish `packet_id` of `qos` with `code`, or refuse it.
    Acknowledge { packet_id: PacketId, qos: QoS, code: ReasonCode },
    /// Route the publish, or refuse it. Boxed, as the next one: every request waiting for
    /// its verdict is as large as the largest continuation.
    Publish(Box<Authorizing<Publish>>),
    /// Subscribe to the filters allowed and answer with the SUBACK.
    Subscribe(Box<Authorizing<Subscribe>>),
}

/// A packet that waits for its authorization.
#[derive(Debug)]
pub(super) struct Authorizing<P> {
    pub(super) packet: P,
    /// For a publish, its topic (an alias resolved).
    pub(super) topic: std::sync::Arc<str>,
    /// When it was read.
    pub(super) at: Instant,
}

impl Continuation {
    fn is_authorization(&self) -> bool {
        matches!(self, Continuation::Publish(_) | Continuation::Subscribe(_))
    }
}

impl Session {
    /// Asks the driver for `request`; `then` runs with the verdict. Whatever the session
    /// writes from now on waits behind it.
    pub(super) fn request(&mut self, request: Request, then: Continuation) {
        let token = Token(self.next_token);
        self.next_token += 1;
        if let Continuation::Acknowledge { qos: QoS::AtLeastOnce, .. } = then {
            self.deferred_qos1 += 1;
        }
        // The client's later packets wait for this verdict.
        self.paused |= then.is_authorization();
        self.awaiting.push_back((token, then));
        push_request(&mut self.tx, PendingRequest { token, request });
    }

    /// Resumes what waited for `token`: the packet to write where the request stood, if any.
    /// `Err` when the connection must close instead. What else the verdict makes the session
    /// do (route an allowed publish, ask for its durable write) comes out of
    /// [`Session::take_transmit`] like any other output; it answers no packet read after the
    /// request, since none was handled meanwhile.
    pub fn handle_verdict(&mut self, token: Token, verdict: Verdict) -> Result<Option<Packet>, Close> {
        // Verdicts mostly come in request order: the one looked for is at the front.
        let Some(at) = self.awaiting.iter().position(|(t, _)| *t == token) else {
            warn!(client_id = %self.slot.key.client_id, ?token, "verdict for an unknown request ignored");
            return Ok(None);
        };
        let Some((_, then)) = self.awaiting.remove(at) else { return Ok(None) };
        if self.awaiting.is_empty() && self.awaiting.capacity() > IDLE_AWAITING_CAPACITY {
            // A burst of requests is over: an idle connection does not keep its room.
            self.awaiting = VecDeque::new();
        }
        match (then, verdict) {
            (Continuation::Acknowledge { packet_id, qos, code }, Verdict::Durable(result)) => {
                self.acknowledge(packet_id, qos, code, result.err()).map(Some)
            }
            (Continuation::Publish(p), Verdict::Publish(authorization)) => {
                self.publish_authorized(p.packet, p.topic, authorization, p.at)
            }
            (Continuation::Subscribe(s), Verdict::Subscribe(authorizations)) => {
                self.subscribe(s.packet, Some(&authorizations), s.at).map(Some)
            }
            (then, verdict) => Err(Close::error(
                ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR,
                format!("verdict {verdict:?} does not answer {then:?}"),
            )),
        }
    }

    /// Whether the connection must read nothing more: an authorization is pending, or was
    /// answered and the packets read after it wait for [`Session::resume`]. Never true in a
    /// session without an authorizer.
    pub fn input_paused(&self) -> bool {
        self.paused
    }

    /// True when the authorization that paused the input was answered: call
    /// [`Session::resume`].
    pub fn resume_pending(&self) -> bool {
        self.paused && !self.authorizing()
    }

    /// Handles the packets read after an authorization, now that its verdict was handled;
    /// stops again at the next one. As [`Session::handle_bytes`], without counting as
    /// activity for the keep-alive (nothing new was read).
    pub fn resume(&mut self, rbuf: &mut BytesMut, now: Instant) -> Result<(), End> {
        if self.authorizing() {
            return Ok(());
        }
        self.paused = false;
        self.handle_packets(rbuf, now)
    }

    fn authorizing(&self) -> bool {
        self.awaiting.iter().any(|(_, then)| then.is_authorization())
    }

    /// Who asks, for an authorization.
    /// Who asks, borrowed, for a verdict given at once.
    pub(super) fn subject_ref(&self) -> SubjectRef<'_> {
        SubjectRef {
            mountpoint: &self.slot.key.mountpoint,
            client_id: &self.slot.key.client_id,
            username: self.username.as_deref(),
        }
    }

    /// Who asks, for an authorization.
    pub(super) fn subject(&self) -> Subject {
        Subject {
            mountpoint: self.slot.key.mountpoint.clone(),
            client_id: self.slot.key.client_id.clone(),
            username: self.username.clone(),
        }
    }

    /// Routes a publish that was allowed; answers one that was refused. MQTT 5 tells a
    /// QoS 1/2 publisher with the refusal's code; MQTT 3 cannot refuse a publish, so it is
    /// dropped and acknowledged (the client would resend it forever otherwise). A refused
    /// QoS 0 publish is dropped.
    pub(super) fn publish_authorized(
        &mut self,
        publish: Publish,
        topic: std::sync::Arc<str>,
        authorization: Authorization,
        at: Instant,
    ) -> Result<Option<Packet>, Close> {
        let Some(code) = authorization.refusal_code() else {
            return self.route_publish(publish, topic, at).map(|()| None);
        };
        debug!(client_id = %self.slot.key.client_id, %topic, code = code.0, "PUBLISH not authorized");
        let Some(packet_id) = publish.packet_id.filter(|_| publish.qos != QoS::AtMostOnce) else { return Ok(None) };
        let code = if self.version.is_v5() { code } else { ReasonCode::SUCCESS };
        let ack = PubResp { packet_id, code, ..PubResp::default() };
        Ok(Some(match publish.qos {
            QoS::ExactlyOnce => Packet::PubRec(ack),
            _ => Packet::PubAck(ack),
        }))
    }

    /// The acknowledgement of a publish whose durable write settled. A publish not taken is
    /// refused with Quota Exceeded (MQTT 5); MQTT 3 has no way to refuse it, so the
    /// connection closes without the acknowledgement and the client resends.
    fn acknowledge(
        &mut self,
        packet_id: PacketId,
        qos: QoS,
        code: ReasonCode,
        failure: Option<NotDurable>,
    ) -> Result<Packet, Close> {
        if qos == QoS::AtLeastOnce {
            self.deferred_qos1 = self.deferred_qos1.saturating_sub(1);
        }
        let mut ack = PubResp { packet_id, code, ..PubResp::default() };
        if let Some(e) = failure {
            warn!(client_id = %self.slot.key.client_id, error = %e, "publish not acknowledged: not every receiver took it");
            // Forget the QoS 2 packet id so a resend of the publish is routed again rather
            // than acknowledged as a duplicate.
            if qos == QoS::ExactlyOnce {
                self.inflight.incoming_qos2.remove(&packet_id.0);
            }
            if !self.version.is_v5() {
                return Err(Close {
                    reason: ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR,
                    cause: format!("publish refused, message not taken: {e}"),
                    send_disconnect: false,
                    publish_will: true,
                });
            }
            ack.code = ReasonCode::QUOTA_EXCEEDED;
            ack.properties.reason_string = Some(format!("message not taken: {e}"));
        }
        Ok(match qos {
            QoS::ExactlyOnce => Packet::PubRec(ack),
            _ => Packet::PubAck(ack),
        })
    }
}

fn push_request(tx: &mut Transmit, pending: PendingRequest) {
    tx.requests.push((tx.wire.len(), pending));
}

#[cfg(test)]
impl Session {
    /// Writes `before` as it is, then asks for `tickets` with the QoS 1 acknowledgement of
    /// `packet_id` behind them (for the driver's tests).
    pub(crate) fn request_durable_ack(&mut self, before: &[u8], packet_id: u16, tickets: Vec<Durable>) {
        self.tx.wire.extend_from_slice(before);
        let then = Continuation::Acknowledge {
            packet_id: PacketId(packet_id),
            qos: QoS::AtLeastOnce,
            code: ReasonCode::SUCCESS,
        };
        self.request(Request::Durable(tickets), then);
    }
}
