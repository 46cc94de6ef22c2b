//! The connection's side of the session's pending requests ([`crate::session::Request`]):
//! it finds out each verdict and hands it back, and holds the session's output behind the
//! requests still open. Durable writes are acknowledgements that wait until their publish was
//! taken (on disk for offline subscribers, accepted by every other node it was forwarded to),
//! sent in order without holding up the connection: while they wait the connection keeps
//! reading, so a publisher's whole window of QoS 1/2 messages is in flight at once rather than
//! one read's worth per round trip. Authorizations are asked of the node's
//! [`Authorizer`] as soon as they are taken over; the session reads nothing more until the
//! answer came (see [`Session::input_paused`]).
//!
//! PUBACKs and PUBRECs go out in the order of their PUBLISHes [MQTT-4.6.0-2, -3]: whatever the
//! session produced after a request that waits is held behind it, and written once the
//! packet its verdict produced was.

use std::collections::VecDeque;
use std::fmt;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tracing::warn;

use crate::authorize::{Answer, Authorization, Authorizer};
use crate::broker::queue::{Durable, NotDurable};
use crate::session::{Close, Request, Session, Token, Transmit, Verdict};
use vmq_mqtt::{self as mqtt, ProtocolVersion};

/// Packets held behind requests that wait for their verdict.
#[derive(Debug, Default)]
pub(crate) struct Held {
    /// Encoded packets not written yet; `wire[0]` is byte `base` of everything ever held.
    wire: BytesMut,
    base: usize,
    /// The requests that wait, oldest first.
    waiting: VecDeque<Waiting>,
    /// Asked for authorizations; `None` when the node has none (its sessions never ask).
    authorizer: Option<Arc<dyn Authorizer>>,
    /// How long an authorization may take; past it the request is refused. A session waits
    /// for its answer with its input paused and its keep-alive held, so without a bound an
    /// authorizer that never answers would hold the connection for good.
    answer_within: Duration,
}

#[derive(Debug)]
struct Waiting {
    /// Its position among everything ever held: the bytes before it go out first.
    at: usize,
    token: Token,
    state: State,
}

/// Where finding out a verdict stands.
enum State {
    Durable {
        /// The tickets not settled yet.
        tickets: Vec<Durable>,
        /// The first ticket that failed; the others are still waited for.
        failure: Option<NotDurable>,
    },
    /// A question put to someone else (the authorizer), and its answer once it came.
    Asked { answer: Answer<Verdict>, verdict: Option<Verdict> },
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Durable { tickets, failure } => {
                f.debug_struct("Durable").field("tickets", &tickets.len()).field("failure", failure).finish()
            }
            State::Asked { verdict, .. } => f.debug_struct("Asked").field("verdict", verdict).finish_non_exhaustive(),
        }
    }
}

impl Held {
    /// Holds packets for a connection whose authorizations `authorizer` answers, each within
    /// `answer_within`.
    pub(crate) fn new(authorizer: Option<Arc<dyn Authorizer>>, answer_within: Duration) -> Self {
        Held { authorizer, answer_within, ..Held::default() }
    }

    /// True when nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Requests waiting.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.wire.len()
    }

    /// Takes over what `tx` holds, behind what is held already.
    pub(crate) fn push(&mut self, tx: &mut Transmit) {
        let start = self.base + self.wire.len();
        for (offset, pending) in tx.requests.drain(..) {
            let state = self.start(pending.request);
            self.waiting.push_back(Waiting { at: start + offset, token: pending.token, state });
        }
        if self.wire.is_empty() {
            // Nothing held: take the buffer rather than copy it.
            std::mem::swap(&mut self.wire, &mut tx.wire);
        } else {
            self.wire.extend_from_slice(&tx.wire);
            tx.wire.clear();
        }
    }

    /// Starts finding out what `request` asks.
    fn start(&self, request: Request) -> State {
        let answer: Answer<Verdict> = match (request, &self.authorizer) {
            (Request::Durable(tickets), _) => return State::Durable { tickets, failure: None },
            (Request::AuthorizePublish { who, publish }, Some(authorizer)) => {
                let answer = tokio::time::timeout(self.answer_within, authorizer.authorize_publish(&who, &publish));
                Box::pin(async move { Verdict::Publish(answer.await.unwrap_or_else(|_| unanswered())) })
            }
            (Request::AuthorizeSubscribe { who, filters }, Some(authorizer)) => {
                let count = filters.len();
                let answer = tokio::time::timeout(self.answer_within, authorizer.authorize_subscribe(&who, &filters));
                Box::pin(async move { Verdict::Subscribe(answer.await.unwrap_or_else(|_| vec![unanswered(); count])) })
            }
            // A session asks only when told there is an authorizer; with none to ask, what it
            // asked about is refused rather than let through.
            (Request::AuthorizePublish { .. }, None) => {
                warn!("authorization asked for with no authorizer; refused");
                Box::pin(std::future::ready(Verdict::Publish(Authorization::NOT_AUTHORIZED)))
            }
            (Request::AuthorizeSubscribe { filters, .. }, None) => {
                warn!("authorization asked for with no authorizer; refused");
                let refused = vec![Authorization::NOT_AUTHORIZED; filters.len()];
                Box::pin(std::future::ready(Verdict::Subscribe(refused)))
            }
        };
        State::Asked { answer, verdict: None }
    }

    /// Moves into `out` what may be written now: the bytes up to the first request that
    /// still waits, with what [`Session::handle_verdict`] made of every request before it
    /// (`Err` when the connection must close).
    pub(crate) fn take_ready(
        &mut self,
        out: &mut BytesMut,
        session: &mut Session,
        version: ProtocolVersion,
    ) -> Result<(), Close> {
        while let Some(front) = self.waiting.front_mut() {
            if !settle_now(front) {
                break;
            }
            let Some(Waiting { at, token, state }) = self.waiting.pop_front() else { break };
            self.move_out(at, out);
            let verdict = match state {
                State::Durable { failure, .. } => Verdict::Durable(failure.map_or(Ok(()), Err)),
                State::Asked { verdict: Some(verdict), .. } => verdict,
                // `settle_now` said it was answered.
                State::Asked { verdict: None, .. } => continue,
            };
            if let Some(packet) = session.handle_verdict(token, verdict)?
                && let Err(e) = mqtt::encode(&packet, version, out)
            {
                warn!(error = %e, "packet not encodable; dropped");
            }
        }
        match self.waiting.front() {
            Some(front) => self.move_out(front.at, out),
            None => {
                out.extend_from_slice(&self.wire);
                self.wire.clear();
                self.base = 0;
            }
        }
        Ok(())
    }

    fn move_out(&mut self, upto: usize, out: &mut BytesMut) {
        let n = upto.saturating_sub(self.base).min(self.wire.len());
        out.extend_from_slice(&self.wire[..n]);
        self.wire.advance(n);
        self.base += n;
    }

    /// Resolves once the oldest request settled (at once when none waits); cancel-safe.
    pub(crate) async fn front_settled(&mut self) {
        if let Some(front) = self.waiting.front_mut() {
            settle(front).await;
        }
    }
}

/// What an authorization that did not come in time amounts to: a refusal, as for CONNECT.
fn unanswered() -> Authorization {
    warn!("no authorization came in time; refused");
    Authorization::NOT_AUTHORIZED
}

/// Waits for every ticket of `w`, dropping each as it settles so that a later call (after
/// this future was cancelled) never waits for it again.
async fn settle(w: &mut Waiting) {
    match &mut w.state {
        State::Durable { tickets, failure } => {
            while let Some(ticket) = tickets.last_mut() {
                let result = ticket.settled().await;
                tickets.pop();
                if let Err(e) = result {
                    failure.get_or_insert(e);
                }
            }
        }
        State::Asked { answer, verdict } => {
            if verdict.is_none() {
                *verdict = Some(answer.as_mut().await);
            }
        }
    }
}

/// Whether `w` settled, without waiting: most acknowledgements after the first one that
/// waited were accepted with it (the receiving node acknowledges cumulatively).
fn settle_now(w: &mut Waiting) -> bool {
    match &w.state {
        State::Durable { tickets, .. } if tickets.is_empty() => return true,
        State::Asked { verdict: Some(_), .. } => return true,
        State::Durable { .. } | State::Asked { .. } => {}
    }
    let mut cx = Context::from_waker(Waker::noop());
    matches!(pin!(settle(w)).poll(&mut cx), Poll::Ready(()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use tokio::sync::watch;
    use vmq_storage::{Durability, MemStore, MessageStore, QueueKey, StoreMessageStore};

    use super::*;
    use crate::ack::{Progress, Ticket};
    use crate::broker::queue::Durable;
    use crate::broker::{Broker, BrokerSettings, ConnectionHandle};
    use crate::session::{ClientLimits, SessionConfig};
    use vmq_mqtt::{Packet, PacketId, PubResp};

    async fn session() -> Session {
        let store = StoreMessageStore::open(Arc::new(MemStore::new()), Durability::Buffered).unwrap();
        let broker = Broker::new(BrokerSettings::default(), Arc::new(store) as Arc<dyn MessageStore>);
        let reg = broker
            .register(QueueKey::new("", "c"), true, ConnectionHandle::new(broker.next_connection_id()))
            .await
            .expect("a single node always registers");
        let limits = ClientLimits { receive_maximum: u16::MAX, ..ClientLimits::default() };
        Session::new(
            broker,
            reg.slot,
            SessionConfig::default(),
            ProtocolVersion::V4,
            limits,
            reg.inflight,
            Instant::now(),
        )
    }

    fn puback(id: u16) -> Packet {
        Packet::PubAck(PubResp { packet_id: PacketId(id), ..PubResp::default() })
    }

    /// A transmit of `before`, then an acknowledgement of `id` waiting for `seq` of `progress`.
    fn waiting(
        session: &mut Session,
        before: &[u8],
        id: u16,
        progress: &watch::Sender<Progress>,
        seq: u64,
    ) -> Transmit {
        let durable = vec![Durable::Remote(Ticket::new(progress.subscribe(), seq))];
        session.request_durable_ack(before, id, durable);
        let mut tx = Transmit::default();
        session.take_transmit(&mut tx);
        tx
    }

    fn encoded(p: &Packet) -> Vec<u8> {
        let mut b = BytesMut::new();
        mqtt::encode(p, ProtocolVersion::V4, &mut b).unwrap();
        b.to_vec()
    }

    #[tokio::test]
    async fn acknowledgements_go_out_in_order_with_what_follows_them() {
        let mut session = session().await;
        let (progress, _) = watch::channel(Progress::default());
        let mut held = Held::default();
        let mut out = BytesMut::new();
        held.push(&mut waiting(&mut session, b"a", 1, &progress, 1));
        held.push(&mut waiting(&mut session, b"b", 2, &progress, 2));
        let mut tail = Transmit::default();
        tail.wire.extend_from_slice(b"c");
        held.push(&mut tail);
        held.take_ready(&mut out, &mut session, ProtocolVersion::V4).unwrap();
        // Only what precedes the first waiting acknowledgement.
        assert_eq!(&out[..], b"a");
        assert_eq!((held.waiting(), held.bytes()), (2, 2));
        // The second one settling first releases nothing.
        progress.send_modify(|p| p.secured = 2);
        progress.send_modify(|p| p.accepted = 1);
        held.front_settled().await;
        out.clear();
        held.take_ready(&mut out, &mut session, ProtocolVersion::V4).unwrap();
        let mut expected = encoded(&puback(1));
        expected.push(b'b');
        expected.extend(encoded(&puback(2)));
        expected.push(b'c');
        assert_eq!(&out[..], &expected[..]);
        assert!(held.is_empty() && held.bytes() == 0);
    }

    #[tokio::test]
    async fn a_refused_publish_is_not_acknowledged_over_mqtt_3() {
        let mut session = session().await;
        let (progress, _) = watch::channel(Progress::default());
        let mut held = Held::default();
        held.push(&mut waiting(&mut session, b"", 1, &progress, 1));
        progress.send_modify(|p| p.abandoned = 1);
        let mut out = BytesMut::new();
        assert!(held.take_ready(&mut out, &mut session, ProtocolVersion::V4).is_err());
        assert!(out.is_empty());
    }
}
