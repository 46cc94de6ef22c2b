//! What the session cannot decide alone and asks its driver to find out: a [`Request`] with a
//! [`Token`], answered later with a [`Verdict`] through [`Session::handle_verdict`].
//!
//! The session places each request at a byte offset of its output ([`Transmit::requests`]):
//! the bytes before it may go out at once, those after it only once the verdict was handled,
//! so acknowledgements leave in the order of the packets they answer [MQTT-4.6.0-2, -3]
//! (raft's `Ready`: what may be sent now is kept apart from what must wait). The session keeps
//! what it will do with the answer; the driver only sees what it has to find out.
//!
//! Today the only request is a durable write (an acknowledgement that promises the message is
//! on disk or taken by another node). Authentication and ACL verdicts, webhooks and the
//! registration leader are further kinds of [`Request`] with their own [`Verdict`]; a
//! connection with no plugin never produces them, so its hot path never waits on one.

use std::collections::VecDeque;

use tracing::warn;

use super::{Close, Session, Transmit};
use crate::broker::queue::{Durable, NotDurable};
use vmq_mqtt::{Packet, PacketId, PubResp, QoS, ReasonCode};

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
}

/// What the session does once a verdict arrives.
#[derive(Debug, Clone, Copy)]
pub(super) enum Continuation {
    /// Acknowledge the publish `packet_id` of `qos` with `code`, or refuse it.
    Acknowledge { packet_id: PacketId, qos: QoS, code: ReasonCode },
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
        self.awaiting.push_back((token, then));
        push_request(&mut self.tx, PendingRequest { token, request });
    }

    /// Resumes what waited for `token`: the packet to write where the request stood, if any.
    /// `Err` when the connection must close instead.
    pub fn handle_verdict(&mut self, token: Token, verdict: Verdict) -> Result<Option<Packet>, Close> {
        // Verdicts mostly come in request order: the one looked for is at the front.
        let Some(at) = self.awaiting.iter().position(|(t, _)| *t == token) else {
            warn!(client_id = %self.client_id, ?token, "verdict for an unknown request ignored");
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
        }
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
            warn!(client_id = %self.client_id, error = %e, "publish not acknowledged: not every receiver took it");
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
