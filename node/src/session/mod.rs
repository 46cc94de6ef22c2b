//! One connected client's MQTT session: CONNACK, QoS 0/1/2 flows in both directions, packet
//! ids, the inflight window, retries, topic aliases, subscriptions, keep-alive and connection
//! lifetime, DISCONNECT and the will. Sans-IO: the connection task feeds bytes and time in and
//! writes what [`Session::take_transmit`] hands it; it decides nothing about the protocol.
//!
//! Call order for the connection task: [`Session::accept`] (CONNACK is the first thing to
//! send); after every input ([`Session::handle_bytes`], [`Session::handle_timeout`], a queue
//! notification) call [`Session::pump`] to move queued messages into the inflight window,
//! then [`Session::take_transmit`], then [`Session::poll_timeout`] for the next deadline.
//! The requests in a [`Transmit`] are answered with [`Session::handle_verdict`], and the bytes
//! behind each wait for the packet its verdict produces (see [`verdict`]). While
//! [`Session::input_paused`] the connection reads nothing; once [`Session::resume_pending`],
//! it calls [`Session::resume`] with what it had read. When an input
//! returns an [`End`], call [`Session::finish`] and act on its [`Farewell`].
//! Packets are encoded as they are produced, so a delivery goes from the queue into the bytes
//! to write without an intermediate packet list.

mod close;
pub mod connect;
mod publish;
mod timer;
mod verdict;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tracing::debug;
use vmq_config::MqttConfig;

use self::timer::{Timer, TimerTable};
use crate::authorize::{Authorization, Authorizer, SubscribeIntent};
use crate::broker::queue::{Queued, Wakes};
use crate::broker::{Broker, Registration, SessionSlot, SubscriptionRecord};
use vmq_mqtt::{
    ConnAck, Connect, Packet, Properties, ProtocolVersion, PubResp, QoS, ReasonCode, SubAck, Subscribe, UnsubAck,
    Unsubscribe, Will, topic,
};

pub use crate::broker::inflight::{OutFlight, OutState, SavedInflight};
pub use close::{End, Farewell};
pub use connect::{Accepted, ListenerRules, Refused};
pub use verdict::{PendingRequest, Request, Token, Verdict};

/// The session's settings: the `mqtt` section of `vernemq.conf` (one definition of each
/// setting, in `vmq-config`), shared by every connection of the node. `receive_max_broker`
/// bounds the unacknowledged QoS 1/2 publishes an MQTT 5 client may have (it is announced as
/// Receive Maximum); `max_inflight_messages` does for MQTT 3.x, as VerneMQ does.
pub type SessionConfig = Arc<MqttConfig>;

/// Most messages [`Session::pump`] takes from the queue per call. While publishers outpace a
/// subscriber its queue never runs empty; without a limit the subscriber would keep taking
/// and never write.
pub const PUMP_BATCH: usize = 256;

/// The topic aliases of an MQTT 5 connection.
#[derive(Debug)]
struct TopicAliases {
    /// Client to server.
    incoming: HashMap<u16, Arc<str>>,
    /// Server to client.
    outgoing: HashMap<Arc<str>, u16>,
    /// The empty topic name sent with an established alias, allocated once.
    empty_topic: Arc<str>,
}

impl Default for TopicAliases {
    fn default() -> Self {
        TopicAliases { incoming: HashMap::new(), outgoing: HashMap::new(), empty_topic: Arc::from("") }
    }
}

/// What a session has to send: its packets, encoded, in order, and the requests among them
/// whose verdicts the packets after them wait for (see [`verdict`]).
#[derive(Debug, Default)]
pub struct Transmit {
    /// Encoded packets.
    pub wire: BytesMut,
    /// Requests to answer with [`Session::handle_verdict`], each with its byte offset in
    /// `wire`: the bytes before it go out first, those after it wait until the packet the
    /// verdict produces was written.
    pub requests: Vec<(usize, PendingRequest)>,
}

impl Transmit {
    /// True when there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.wire.is_empty() && self.requests.is_empty()
    }
}

/// Why the session wants its connection closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// Reason code for the server's DISCONNECT (MQTT 5) and the log.
    pub reason: ReasonCode,
    /// Human-readable cause for the log line.
    pub cause: String,
    /// Send a DISCONNECT before closing (MQTT 5 only; false when the client disconnected).
    pub send_disconnect: bool,
    /// Publish the will message.
    pub publish_will: bool,
}

impl Close {
    /// A protocol violation or a limit: DISCONNECT with `reason` (MQTT 5), will published.
    pub fn error(reason: ReasonCode, cause: impl Into<String>) -> Self {
        Close { reason, cause: cause.into(), send_disconnect: true, publish_will: true }
    }
}

/// What the client negotiated in CONNECT that the session needs.
#[derive(Debug, Clone, Default)]
pub struct ClientLimits {
    /// Client's Receive Maximum (5.0; 65,535 when absent).
    pub receive_maximum: u16,
    /// Client's Maximum Packet Size (5.0).
    pub maximum_packet_size: Option<u32>,
    /// Client's Topic Alias Maximum (5.0).
    pub topic_alias_maximum: u16,
}

/// What the session keeps of CONNECT and of the listener, for keep-alive, DISCONNECT and the
/// will.
#[derive(Debug, Default)]
struct Connected {
    /// 1.5 times the keep-alive [MQTT-3.1.2-24]; `None` when the client has none.
    keep_alive: Option<Duration>,
    session_expiry: Option<Duration>,
    /// CONNECT carried a non-zero Session Expiry Interval.
    connect_expiry_set: bool,
    /// The client accepts Reason Strings [MQTT-3.1.2-29].
    problem_information: bool,
    will: Option<Box<Will>>,
    /// The registration generation (for delayed wills).
    generation: u64,
    max_last_will_delay: Option<Duration>,
    suppress_lwt_on_takeover: bool,
}

/// A connected session.
pub struct Session {
    broker: Arc<Broker>,
    slot: Arc<SessionSlot>,
    cfg: SessionConfig,
    version: ProtocolVersion,
    limits: ClientLimits,
    inflight: SavedInflight,
    /// MQTT 5 topic aliases, once the first one is used: most sessions never use one.
    aliases: Option<Box<TopicAliases>>,
    rate_window: (Instant, u32),
    /// Subscribers that received this client's publishes and are still to be woken.
    wakes: Wakes,
    tx: Transmit,
    scratch: Vec<Queued>,
    timers: TimerTable,
    connected: Connected,
    /// Largest packet read from the client.
    max_packet: usize,
    /// QoS 1 acknowledgements waiting for a verdict: with the unreleased QoS 2 ids, what
    /// counts against the Receive Maximum [MQTT-3.3.4-9].
    deferred_qos1: usize,
    /// What to do with each verdict still to come, in request order.
    awaiting: std::collections::VecDeque<(Token, verdict::Continuation)>,
    next_token: u64,
    /// The node's authorizer: publishes and subscriptions are asked for (answered at once
    /// when it can, through the driver otherwise).
    authorizer: Option<Arc<dyn Authorizer>>,
    /// The user name of the client's CONNECT, for authorizations.
    username: Option<Arc<str>>,
    /// The client's packets are left unread until an authorization is answered.
    paused: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("client_id", &self.slot.key.client_id).finish_non_exhaustive()
    }
}

impl Session {
    /// A session on `slot` for a connection speaking `version`. `resumed` is the inflight
    /// state of the previous connection; its messages are resent first [MQTT-4.4.0-1].
    pub fn new(
        broker: Arc<Broker>,
        slot: Arc<SessionSlot>,
        cfg: SessionConfig,
        version: ProtocolVersion,
        limits: ClientLimits,
        resumed: SavedInflight,
        now: Instant,
    ) -> Self {
        let mut s = Self::unstarted(broker, slot, cfg, version, limits, resumed, now);
        s.resend_all(now);
        s
    }

    /// The session of a client whose CONNECT was accepted and registered: queues the CONNACK,
    /// then the resends of what the previous connection left in flight [MQTT-4.4.0-1].
    pub fn accept(
        broker: Arc<Broker>,
        reg: Registration,
        mut connect: Box<Connect>,
        accepted: Accepted,
        cfg: SessionConfig,
        max_connection_lifetime: Option<Duration>,
        now: Instant,
    ) -> Self {
        let version = accepted.version;
        let limits = ClientLimits {
            receive_maximum: connect.properties.receive_maximum.unwrap_or(u16::MAX),
            maximum_packet_size: connect.properties.maximum_packet_size,
            topic_alias_maximum: connect.properties.topic_alias_maximum.unwrap_or(0),
        };
        let mut s = Self::unstarted(broker, reg.slot, cfg, version, limits, reg.inflight, now);
        s.username = connect.username.as_deref().map(Arc::from);
        s.max_packet = connect::max_packet_size(&s.cfg);
        s.connected = Connected {
            keep_alive: (accepted.keep_alive > 0).then(|| Duration::from_millis(u64::from(accepted.keep_alive) * 1500)),
            session_expiry: accepted.session_expiry,
            connect_expiry_set: connect.properties.session_expiry_interval.unwrap_or(0) != 0,
            problem_information: connect.properties.request_problem_information != Some(0),
            // Only these parts of CONNECT matter from here on; the rest is freed now.
            will: connect.will.take().map(Box::new),
            generation: reg.generation,
            max_last_will_delay: s.cfg.max_last_will_delay,
            suppress_lwt_on_takeover: s.cfg.suppress_lwt_on_session_takeover,
        };
        if let Some(ka) = s.connected.keep_alive {
            s.timers.set(Timer::KeepAlive, now + ka);
        }
        if let Some(lifetime) = max_connection_lifetime {
            s.timers.set(Timer::Lifetime, now + lifetime);
        }
        // A clean start never resumes [MQTT-3.1.2-2]; the registry discarded any old session.
        let session_present = reg.session_present && !connect.clean_start;
        let mut ack = ConnAck { session_present, code: ReasonCode::SUCCESS, properties: Properties::default() };
        if version.is_v5() {
            let p = &mut ack.properties;
            if accepted.assigned {
                p.assigned_client_identifier = Some(accepted.client_id.clone());
            }
            if accepted.keep_alive_changed {
                p.server_keep_alive = Some(accepted.keep_alive);
            }
            p.receive_maximum = Some(s.cfg.receive_max_broker.max(1));
            if s.cfg.topic_alias_max_broker > 0 {
                p.topic_alias_maximum = Some(s.cfg.topic_alias_max_broker);
            }
            if s.cfg.max_message_size > 0 {
                p.maximum_packet_size = u32::try_from(s.max_packet).ok();
            }
        }
        s.emit(Packet::ConnAck(ack));
        s.resend_all(now);
        s
    }

    fn unstarted(
        broker: Arc<Broker>,
        slot: Arc<SessionSlot>,
        cfg: SessionConfig,
        version: ProtocolVersion,
        limits: ClientLimits,
        resumed: SavedInflight,
        now: Instant,
    ) -> Self {
        Self {
            broker,
            cfg,
            version,
            limits,
            inflight: resumed,
            aliases: None,
            rate_window: (now, 0),
            wakes: Wakes::default(),
            tx: Transmit::default(),
            scratch: Vec::new(),
            timers: TimerTable::default(),
            connected: Connected::default(),
            max_packet: connect::max_packet_size(&MqttConfig::default()),
            deferred_qos1: 0,
            awaiting: std::collections::VecDeque::new(),
            next_token: 0,
            authorizer: None,
            username: None,
            paused: false,
            slot,
        }
    }

    /// The node has an authorizer: from now on every publish and subscription needs its
    /// verdict; one it cannot give at once is waited for (see [`verdict`]).
    pub fn require_authorization(&mut self, authorizer: Arc<dyn Authorizer>) {
        self.authorizer = Some(authorizer);
    }

    /// The protocol version the client speaks.
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// The session slot.
    pub fn slot(&self) -> &Arc<SessionSlot> {
        &self.slot
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.slot.key.client_id
    }

    /// Wakes the subscribers that received this client's publishes since the last call. The
    /// connection calls it once per batch of packets read.
    pub fn wake_subscribers(&mut self) {
        self.wakes.wake_all();
    }

    /// Hands what to send to the caller by swapping it with `into`, which must be empty: the
    /// two buffers alternate, so neither is reallocated per round.
    pub fn take_transmit(&mut self, into: &mut Transmit) {
        debug_assert!(into.is_empty());
        std::mem::swap(&mut self.tx, into);
    }

    fn emit(&mut self, packet: Packet) {
        if let Err(e) = vmq_mqtt::encode(&packet, self.version, &mut self.tx.wire) {
            tracing::warn!(client_id = %self.slot.key.client_id, error = %e, "packet not encodable; dropped");
        }
    }

    /// The packets produced so far, decoded (for tests).
    #[cfg(test)]
    pub(crate) fn take_packets(&mut self) -> Vec<Packet> {
        let mut out = Vec::new();
        while let Ok(Some(p)) = vmq_mqtt::decode(&mut self.tx.wire, self.version, usize::MAX) {
            out.push(p);
        }
        out
    }

    /// The in-flight state to keep in the session when the connection closes.
    pub fn into_inflight(self) -> SavedInflight {
        self.inflight
    }

    /// QoS 1/2 publishes of the client that may wait for their acknowledgement at once:
    /// Receive Maximum for MQTT 5, `max_inflight_messages` for MQTT 3.x (where only QoS 2
    /// ones are counted); `usize::MAX` when unlimited.
    pub fn incoming_window(&self) -> usize {
        let limit = if self.version.is_v5() { self.cfg.receive_max_broker } else { self.cfg.max_inflight_messages };
        if limit == 0 { usize::MAX } else { usize::from(limit) }
    }

    fn window(&self) -> usize {
        let broker =
            if self.cfg.max_inflight_messages == 0 { usize::MAX } else { self.cfg.max_inflight_messages as usize };
        let client = self.limits.receive_maximum.min(self.cfg.receive_max_client).max(1);
        broker.min(client as usize)
    }

    /// Decodes and handles every complete packet in `rbuf` (bytes read from the client at
    /// `now`); `Err` when the connection ends. Stops after a packet that waits for an
    /// authorization, leaving the rest in `rbuf` for [`Session::resume`].
    pub fn handle_bytes(&mut self, rbuf: &mut BytesMut, now: Instant) -> Result<(), End> {
        if let Some(ka) = self.connected.keep_alive {
            self.timers.set(Timer::KeepAlive, now + ka);
        }
        self.handle_packets(rbuf, now)
    }

    fn handle_packets(&mut self, rbuf: &mut BytesMut, now: Instant) -> Result<(), End> {
        while !self.paused {
            let packet = match vmq_mqtt::decode(rbuf, self.version, self.max_packet) {
                Ok(Some(p)) => p,
                Ok(None) => return Ok(()),
                Err(e) => return Err(End::Close(Close::error(e.reason_code(), format!("bad packet: {e}")))),
            };
            if let Packet::Disconnect(d) = &packet {
                return Err(self.handle_disconnect(d));
            }
            self.handle_packet(packet, now).map_err(End::Close)?;
        }
        Ok(())
    }

    /// The next deadline at which [`Session::handle_timeout`] must run.
    ///
    /// Retries and the rate limit are derived from the inflight window and the rate window
    /// here rather than kept in the timer table: keeping them there would mean an update per
    /// message sent or received.
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        [self.timers.next(), self.retry_deadline(), self.throttle(now)].into_iter().flatten().min()
    }

    /// Acts on every deadline that passed at `now`; `Err` when the connection must close.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), Close> {
        if self.timers.is_expired(Timer::KeepAlive, now) {
            if let Some(ka) = self.connected.keep_alive.filter(|_| self.paused) {
                // Nothing is read while an authorization is pending: what the client sent
                // meanwhile is unread, not missing.
                self.timers.set(Timer::KeepAlive, now + ka);
            } else {
                self.timers.stop(Timer::KeepAlive);
                // [MQTT-3.1.2-24]: nothing received within 1.5 times the keep-alive.
                return Err(Close::error(ReasonCode::KEEP_ALIVE_TIMEOUT, "keep-alive timeout"));
            }
        }
        if self.timers.is_expired(Timer::Lifetime, now) {
            self.timers.stop(Timer::Lifetime);
            return Err(Close::error(ReasonCode::MAXIMUM_CONNECT_TIME, "max_connection_lifetime reached"));
        }
        if self.retry_deadline().is_some_and(|at| at <= now) {
            self.handle_retry(now);
        }
        Ok(())
    }

    /// Handles one packet from the client.
    pub fn handle_packet(&mut self, packet: Packet, now: Instant) -> Result<(), Close> {
        match packet {
            Packet::Publish(p) => self.handle_publish(p, now),
            Packet::PubAck(r) => {
                self.handle_puback(r);
                Ok(())
            }
            Packet::PubRec(r) => {
                self.handle_pubrec(r, now);
                Ok(())
            }
            Packet::PubRel(r) => {
                self.handle_pubrel(r);
                Ok(())
            }
            Packet::PubComp(r) => {
                self.handle_pubcomp(r);
                Ok(())
            }
            Packet::Subscribe(s) => self.handle_subscribe(s, now),
            Packet::Unsubscribe(u) => self.handle_unsubscribe(u),
            Packet::PingReq => {
                self.emit(Packet::PingResp);
                Ok(())
            }
            Packet::Connect(_) => Err(Close::error(ReasonCode::PROTOCOL_ERROR, "second CONNECT [MQTT-3.1.0-2]")),
            Packet::Auth(_) => Err(Close::error(
                ReasonCode::PROTOCOL_ERROR,
                "AUTH without an authentication method in CONNECT [MQTT-4.12.0-1]",
            )),
            Packet::Disconnect(_) => {
                // Handled by `handle_bytes`, where the connection ends.
                Ok(())
            }
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                Err(Close::error(ReasonCode::PROTOCOL_ERROR, "server-only packet sent by the client"))
            }
        }
    }

    fn handle_puback(&mut self, r: PubResp) {
        let id = r.packet_id.0;
        match self.inflight.outgoing.get(&id).map(|f| f.state) {
            Some(OutState::AwaitPubAck) => {
                if let Some(f) = self.inflight.outgoing.remove(&id) {
                    self.slot.queue.delivered(f.queued.stored);
                }
            }
            _ => debug!(client_id = %self.slot.key.client_id, packet_id = id, "PUBACK for unknown packet id ignored"),
        }
    }

    fn handle_pubrec(&mut self, r: PubResp, now: Instant) {
        let id = r.packet_id.0;
        match self.inflight.outgoing.get_mut(&id) {
            Some(f) if f.state == OutState::AwaitPubRec => {
                if r.code.is_error() {
                    // The client refused the message: the flow ends here [MQTT-4.3.3-?, 4.13].
                    if let Some(f) = self.inflight.outgoing.remove(&id) {
                        self.slot.queue.delivered(f.queued.stored);
                    }
                    return;
                }
                f.state = OutState::AwaitPubComp;
                f.sent_at = now;
                // The message is now owned by the client [MQTT-4.3.3-4]: it leaves the store.
                let stored = f.queued.stored.take();
                self.slot.queue.delivered(stored);
                self.emit(Packet::PubRel(PubResp { packet_id: r.packet_id, ..PubResp::default() }));
            }
            Some(f) if f.state == OutState::AwaitPubComp => {
                self.emit(Packet::PubRel(PubResp { packet_id: r.packet_id, ..PubResp::default() }));
            }
            _ => self.emit(Packet::PubRel(PubResp {
                packet_id: r.packet_id,
                code: ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
                ..PubResp::default()
            })),
        }
    }

    fn handle_pubrel(&mut self, r: PubResp) {
        let known = self.inflight.incoming_qos2.remove(&r.packet_id.0);
        let code = if known { ReasonCode::SUCCESS } else { ReasonCode::PACKET_IDENTIFIER_NOT_FOUND };
        self.emit(Packet::PubComp(PubResp { packet_id: r.packet_id, code, ..PubResp::default() }));
    }

    fn handle_pubcomp(&mut self, r: PubResp) {
        let id = r.packet_id.0;
        if self.inflight.outgoing.get(&id).is_some_and(|f| f.state == OutState::AwaitPubComp) {
            self.inflight.outgoing.remove(&id);
        }
    }

    fn handle_subscribe(&mut self, s: Subscribe, now: Instant) -> Result<(), Close> {
        if !self.broker.netsplit_allows(crate::broker::NetsplitAction::Subscribe) {
            // `allow_subscribe_during_netsplit = off`: every filter is refused (0x80).
            self.broker.counters.netsplit_refused[2].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            debug!(client_id = %self.slot.key.client_id, "SUBSCRIBE refused: cluster not ready (netsplit)");
            let codes = vec![ReasonCode::UNSPECIFIED_ERROR; s.filters.len()];
            self.emit(Packet::SubAck(SubAck { packet_id: s.packet_id, codes, ..SubAck::default() }));
            return Ok(());
        }
        if let Some(authorizer) = &self.authorizer {
            let filters = s.filters.iter().map(|f| SubscribeIntent { filter: f.filter.clone(), qos: f.options.qos });
            let filters: Vec<SubscribeIntent> = filters.collect();
            if let Some(verdicts) = authorizer.authorize_subscribe_now(&self.subject_ref(), &filters) {
                let ack = self.subscribe(s, Some(&verdicts), now)?;
                self.emit(ack);
                return Ok(());
            }
            let request = Request::AuthorizeSubscribe { who: self.subject(), filters };
            // A subscription has no topic name; the continuation's is left empty.
            let then = verdict::Authorizing { packet: s, topic: Arc::from(""), at: now };
            self.request(request, verdict::Continuation::Subscribe(Box::new(then)));
            return Ok(());
        }
        let ack = self.subscribe(s, None, now)?;
        self.emit(ack);
        Ok(())
    }

    /// Subscribes to the filters of `s` that are valid and, when an authorizer was asked,
    /// allowed by `authorizations` (one per filter); the retained messages of each go to the
    /// queue. Returns the SUBACK.
    fn subscribe(
        &mut self,
        s: Subscribe,
        authorizations: Option<&[Authorization]>,
        now: Instant,
    ) -> Result<Packet, Close> {
        let sub_id = s.properties.subscription_identifiers.first().copied();
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut retained = Vec::new();
        for (i, f) in s.filters.iter().enumerate() {
            let parsed = match topic::parse_filter(&f.filter) {
                Ok(p) => p,
                Err(_) => {
                    codes.push(ReasonCode::TOPIC_FILTER_INVALID);
                    continue;
                }
            };
            if parsed.share.is_some() && f.options.no_local && self.version.is_v5() {
                return Err(Close::error(
                    ReasonCode::PROTOCOL_ERROR,
                    "No Local on a shared subscription [MQTT-3.8.3-4]",
                ));
            }
            if topic::validate_topic_filter(parsed.filter, self.cfg.topic_max_depth).is_err() {
                codes.push(ReasonCode::TOPIC_FILTER_INVALID);
                continue;
            }
            if let Some(authorizations) = authorizations {
                // MQTT 3.1.1 encodes any refusal as 0x80.
                if let Some(code) =
                    authorizations.get(i).copied().unwrap_or(Authorization::NOT_AUTHORIZED).refusal_code()
                {
                    debug!(client_id = %self.slot.key.client_id, filter = %f.filter, code = code.0, "SUBSCRIBE not authorized");
                    codes.push(code);
                    continue;
                }
            }
            let record = SubscriptionRecord { options: f.options, id: sub_id };
            let existed = match self.broker.subscribe(&self.slot, &f.filter, record) {
                Ok(existed) => existed,
                Err(_) => {
                    codes.push(ReasonCode::TOPIC_FILTER_INVALID);
                    continue;
                }
            };
            codes.push(ReasonCode(f.options.qos as u8));
            let send_retained = match f.options.retain_handling {
                0 => true,
                1 => !existed,
                _ => false,
            };
            if send_retained {
                for msg in self.broker.retained_for(&self.slot.key.mountpoint, &f.filter, now) {
                    retained.push(crate::broker::message::Delivery {
                        qos: msg.qos.min(f.options.qos),
                        msg,
                        // Retained messages sent on subscribe carry RETAIN 1 [MQTT-3.3.1-8].
                        retain: true,
                        subscription_ids: sub_id.into_iter().collect(),
                    });
                }
            }
        }
        // Queued now, sent by the next pump: after the SUBACK.
        for d in retained {
            let _ = self.slot.queue.enqueue(d);
        }
        Ok(Packet::SubAck(SubAck { packet_id: s.packet_id, codes, ..SubAck::default() }))
    }

    fn handle_unsubscribe(&mut self, u: Unsubscribe) -> Result<(), Close> {
        if !self.broker.netsplit_allows(crate::broker::NetsplitAction::Unsubscribe) {
            // `allow_unsubscribe_during_netsplit = off`. MQTT 5 answers each filter with 0x80.
            // An MQTT 3 UNSUBACK cannot refuse: it is not sent, and the subscriptions stay (closing
            // the connection instead would end a clean session and drop every subscription the
            // client still believes it has).
            self.broker.counters.netsplit_refused[3].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            debug!(client_id = %self.slot.key.client_id, "UNSUBSCRIBE refused: cluster not ready (netsplit)");
            if !self.version.is_v5() {
                return Ok(());
            }
            let codes = vec![ReasonCode::UNSPECIFIED_ERROR; u.filters.len()];
            self.emit(Packet::UnsubAck(UnsubAck { packet_id: u.packet_id, codes, ..UnsubAck::default() }));
            return Ok(());
        }
        let codes = u
            .filters
            .iter()
            .map(|f| {
                if self.broker.unsubscribe(&self.slot, f) {
                    ReasonCode::SUCCESS
                } else {
                    ReasonCode::NO_SUBSCRIPTION_EXISTED
                }
            })
            .collect();
        self.emit(Packet::UnsubAck(UnsubAck { packet_id: u.packet_id, codes, ..UnsubAck::default() }));
        Ok(())
    }

    /// Moves queued messages into the inflight window and out to the client, at most
    /// [`PUMP_BATCH`] per call so that the connection writes them out before taking more.
    /// True when it stopped at that limit with messages left: call again without waiting for
    /// a queue notification (none comes for messages already waiting).
    pub fn pump(&mut self, now: Instant) -> bool {
        let room = self.window().saturating_sub(self.inflight.outgoing.len());
        let mut batch = std::mem::take(&mut self.scratch);
        self.slot.queue.take(PUMP_BATCH, room, now, &mut batch);
        let full = batch.len() == PUMP_BATCH;
        for q in batch.drain(..) {
            self.send_queued(q, now);
        }
        self.scratch = batch;
        full
    }

    fn send_queued(&mut self, q: Queued, now: Instant) {
        if q.delivery.qos == QoS::AtMostOnce {
            self.send_publish(&q, None, false, now);
            self.slot.queue.delivered(q.stored);
            return;
        }
        let Some(id) = self.inflight.allocate_packet_id() else {
            self.slot.queue.requeue_front(vec![q]);
            return;
        };
        if !self.send_publish(&q, Some(id), false, now) {
            // Too large for the client's Maximum Packet Size: discarded [MQTT-3.1.2-25].
            self.slot.queue.delivered(q.stored);
            return;
        }
        let state = if q.delivery.qos == QoS::AtLeastOnce { OutState::AwaitPubAck } else { OutState::AwaitPubRec };
        let order = self.inflight.next_order;
        self.inflight.next_order += 1;
        self.inflight.outgoing.insert(id, OutFlight { queued: q, state, sent_at: now, order });
    }

    /// Resends every in-flight message after a reconnect, in original order, with DUP set
    /// and full topic names (aliases are per connection) [MQTT-4.4.0-1].
    fn resend_all(&mut self, now: Instant) {
        for id in self.inflight.in_send_order() {
            let Some(f) = self.inflight.outgoing.get(&id).cloned() else { continue };
            match f.state {
                OutState::AwaitPubAck | OutState::AwaitPubRec => {
                    self.send_publish(&f.queued, Some(id), true, now);
                }
                OutState::AwaitPubComp => {
                    self.emit(Packet::PubRel(PubResp { packet_id: vmq_mqtt::PacketId(id), ..PubResp::default() }))
                }
            }
            if let Some(f) = self.inflight.outgoing.get_mut(&id) {
                f.sent_at = now;
            }
        }
    }

    /// When unacknowledged messages are due to be resent (MQTT 3.x only).
    fn retry_deadline(&self) -> Option<Instant> {
        if self.version.is_v5() {
            return None;
        }
        self.inflight.outgoing.values().map(|f| f.sent_at + self.cfg.retry_interval).min()
    }

    /// Resends what was not acknowledged within `retry_interval` (MQTT 3.x).
    fn handle_retry(&mut self, now: Instant) {
        if self.version.is_v5() {
            return;
        }
        for id in self.inflight.in_send_order() {
            let Some(f) = self.inflight.outgoing.get(&id) else { continue };
            if f.sent_at + self.cfg.retry_interval > now {
                continue;
            }
            let f = f.clone();
            match f.state {
                OutState::AwaitPubAck | OutState::AwaitPubRec => {
                    self.send_publish(&f.queued, Some(id), true, now);
                }
                OutState::AwaitPubComp => {
                    self.emit(Packet::PubRel(PubResp { packet_id: vmq_mqtt::PacketId(id), ..PubResp::default() }))
                }
            }
            if let Some(f) = self.inflight.outgoing.get_mut(&id) {
                f.sent_at = now;
            }
        }
    }
}

#[cfg(test)]
mod harness;
#[cfg(test)]
mod scenarios;
#[cfg(test)]
mod tests;
