//! A test harness in the spirit of quinn-proto's `Pair`: one real in-memory [`Broker`] and
//! any number of sessions, each behind an in-memory byte pipe, on a virtual clock. Clients
//! are scripts: they encode packets with `vmq_mqtt`, the harness feeds the bytes to the
//! session as a connection would, and the tests decode what comes back. [`Harness::drive`]
//! runs every session until nothing more happens at the current instant;
//! [`Harness::advance`] moves the clock, fires the deadlines that passed (the sessions' and
//! the broker's delayed wills and session expiry) and drives again. Nothing sleeps.
//!
//! A client connected with an authorizer ([`Harness::connect_authorized`]) has its requests
//! driven by the connection's own [`Held`]: the bytes behind a request wait for its verdict,
//! as on a socket. A [`ScriptedAuthorizer`] answers only when the test says, in any order.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::sync::oneshot;
use vmq_storage::{Durability, MemStore, MessageStore, QueueKey, StoreMessageStore};

use super::connect::{self, ListenerRules};
use super::*;
use crate::authorize::{Answer, Authorizer, PublishIntent, Subject};
use crate::broker::{BrokerSettings, ConnectionHandle};
use crate::listener::Held;
use vmq_mqtt::{Disconnect, PacketId, Publish, SubscribeFilter, SubscriptionOptions};

const ALL_VERSIONS: &[ProtocolVersion] = &[ProtocolVersion::V3, ProtocolVersion::V4, ProtocolVersion::V5];

/// The broker, the settings every session gets, and the virtual clock.
pub(crate) struct Harness {
    pub(crate) broker: Arc<Broker>,
    /// The `mqtt` settings (anonymous clients allowed); each connect takes a copy.
    pub(crate) cfg: MqttConfig,
    pub(crate) max_connection_lifetime: Option<Duration>,
    pub(crate) now: Instant,
}

/// One client: its session (until the connection ended) and the two directions of its pipe.
pub(crate) struct Client {
    pub(crate) version: ProtocolVersion,
    session: Option<Session>,
    handle: ConnectionHandle,
    /// Bytes written by the client, not yet read by the session.
    to_server: BytesMut,
    /// Bytes written by the session, not yet read by the client.
    from_server: BytesMut,
    /// Leave requests unanswered, as a slow disk would leave durable writes. What their
    /// verdicts would produce is never sent; what the session wrote after them is (unlike the
    /// connection, which holds it back).
    pub(crate) hold_requests: bool,
    /// Requests left unanswered, in order.
    held: Vec<PendingRequest>,
    /// For a client with an authorizer: its requests and the bytes behind them, as the
    /// connection holds them.
    driver: Option<Held>,
    /// How the connection ended, once it did.
    pub(crate) farewell: Option<Farewell>,
}

impl Harness {
    pub(crate) fn new() -> Self {
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
        let store =
            StoreMessageStore::open(Arc::new(MemStore::new()), Durability::Buffered).expect("an in-memory store opens");
        let mut settings = BrokerSettings::default();
        settings.queue.max_online = None;
        Self {
            broker: Broker::new(settings, Arc::new(store) as Arc<dyn MessageStore>),
            cfg: MqttConfig { allow_anonymous: true, ..MqttConfig::default() },
            max_connection_lifetime: None,
            now: Instant::now(),
        }
    }

    /// Connects a client with `c` as its CONNECT, as the connection task does: admission,
    /// registration, [`Session::accept`]. The CONNACK is waiting in [`Client::recv`].
    pub(crate) async fn connect(&self, c: Connect) -> Client {
        self.connect_with(c, None).await
    }

    /// Connects a client whose publishes and subscriptions `authorizer` decides on.
    pub(crate) async fn connect_authorized(&self, c: Connect, authorizer: Arc<ScriptedAuthorizer>) -> Client {
        self.connect_with(c, Some(authorizer)).await
    }

    async fn connect_with(&self, c: Connect, authorizer: Option<Arc<ScriptedAuthorizer>>) -> Client {
        let rules =
            ListenerRules { name: "test", allowed_protocol_versions: ALL_VERSIONS, allow_anonymous_override: false };
        let version = c.protocol.unwrap_or(ProtocolVersion::V4);
        let accepted = connect::admit(&c, rules, &self.cfg, &self.broker, || "assigned-id".into())
            .unwrap_or_else(|r| panic!("CONNECT refused: {r:?}"));
        let handle = ConnectionHandle::new(self.broker.next_connection_id());
        let key = QueueKey::new("", accepted.client_id.clone());
        let reg =
            self.broker.register(key, c.clean_start, handle.clone()).await.expect("a single node always registers");
        let mut session = Session::accept(
            self.broker.clone(),
            reg,
            Box::new(c),
            accepted,
            Arc::new(self.cfg.clone()),
            self.max_connection_lifetime,
            self.now,
        );
        if let Some(a) = &authorizer {
            session.require_authorization(a.clone());
        }
        let driver = authorizer.map(|a| Held::new(Some(a as Arc<dyn Authorizer>), self.cfg.mqtt_connect_timeout));
        let mut client = Client {
            version,
            session: Some(session),
            handle,
            to_server: BytesMut::new(),
            from_server: BytesMut::new(),
            hold_requests: false,
            held: Vec::new(),
            driver,
            farewell: None,
        };
        self.flush(&mut client).await;
        client
    }

    /// Runs every client until nothing more happens at the current instant.
    pub(crate) async fn drive(&self, clients: &mut [&mut Client]) {
        for _ in 0..1000 {
            let mut busy = false;
            for c in clients.iter_mut() {
                busy |= self.step(c).await;
            }
            if !busy {
                return;
            }
        }
        panic!("the sessions never went quiet");
    }

    /// Moves the virtual clock by `by`, fires what fell due, and drives.
    pub(crate) async fn advance(&mut self, by: Duration, clients: &mut [&mut Client]) {
        self.now += by;
        self.broker.publish_due_wills(self.now);
        self.broker.expire_sessions(self.now);
        for c in clients.iter_mut() {
            let Some(session) = c.session.as_mut() else { continue };
            if session.poll_timeout(self.now).is_some_and(|at| at <= self.now)
                && let Err(close) = session.handle_timeout(self.now)
            {
                self.end(c, End::Close(close)).await;
            }
        }
        self.drive(clients).await;
    }

    /// Feeds what the client wrote and collects what the session writes; true when anything
    /// moved.
    async fn step(&self, c: &mut Client) -> bool {
        let Some(session) = c.session.as_mut() else { return false };
        let mut busy = false;
        // A paused session leaves what the client sent unread, as its connection does.
        if !c.to_server.is_empty() && !session.input_paused() {
            busy = true;
            if let Err(end) = session.handle_bytes(&mut c.to_server, self.now) {
                self.end(c, end).await;
                return true;
            }
        }
        busy | self.flush(c).await
    }

    /// Pumps the session's queue and moves its output into the client's pipe, answering the
    /// session's requests as the connection does (unless the client holds them).
    async fn flush(&self, c: &mut Client) -> bool {
        let Some(session) = c.session.as_mut() else { return false };
        while session.pump(self.now) {}
        session.wake_subscribers();
        let mut tx = Transmit::default();
        session.take_transmit(&mut tx);
        if c.driver.is_some() {
            return self.flush_held(c, tx).await;
        }
        if tx.is_empty() {
            return false;
        }
        let mut written = 0;
        for (at, pending) in tx.requests.drain(..) {
            c.from_server.extend_from_slice(&tx.wire[written..at]);
            written = at;
            if c.hold_requests || !c.held.is_empty() {
                c.held.push(pending);
                continue;
            }
            let verdict = resolve(pending.request).await;
            let packet = session.handle_verdict(pending.token, verdict).expect("a settled acknowledgement is sendable");
            if let Some(packet) = packet {
                encode_into(&packet, c.version, &mut c.from_server);
            }
        }
        c.from_server.extend_from_slice(&tx.wire[written..]);
        true
    }

    /// Moves `tx` behind the requests that wait, writes what their verdicts let go, and
    /// resumes a session whose authorization was answered, as the connection does.
    async fn flush_held(&self, c: &mut Client, mut tx: Transmit) -> bool {
        let (Some(session), Some(held)) = (c.session.as_mut(), c.driver.as_mut()) else { return false };
        let mut busy = !tx.is_empty();
        held.push(&mut tx);
        let mut out = BytesMut::new();
        let released = held.take_ready(&mut out, session, c.version);
        busy |= !out.is_empty();
        c.from_server.extend_from_slice(&out);
        if let Err(close) = released {
            self.end(c, End::Close(close)).await;
            return true;
        }
        if session.resume_pending() {
            if let Err(end) = session.resume(&mut c.to_server, self.now) {
                self.end(c, end).await;
            }
            return true;
        }
        busy
    }

    /// Ends the connection as the connection task does after `end`.
    async fn end(&self, c: &mut Client, end: End) {
        let Some(mut session) = c.session.take() else { return };
        let farewell = session.finish(&end, self.now);
        let mut tx = Transmit::default();
        session.take_transmit(&mut tx);
        if let Some(held) = c.driver.as_mut() {
            // What still waits for a verdict is not sent, nor anything behind it.
            held.push(&mut tx);
            let mut out = BytesMut::new();
            let _ = held.take_ready(&mut out, &mut session, c.version);
            c.from_server.extend_from_slice(&out);
        }
        c.from_server.extend_from_slice(&tx.wire);
        if let Some(d) = &farewell.disconnect {
            encode_into(d, c.version, &mut c.from_server);
        }
        let slot = session.slot().clone();
        let mut farewell = farewell;
        if let Some((will, delay)) = farewell.will.take() {
            self.broker.schedule_will(will, delay, slot.clone(), farewell.generation, self.now);
        }
        self.broker.disconnected(&slot, c.handle.id, session.into_inflight(), farewell.session_expiry, self.now);
        c.handle.finish();
        c.farewell = Some(farewell);
    }

    /// The client's socket breaks (no DISCONNECT).
    pub(crate) async fn drop_connection(&self, c: &mut Client) {
        self.end(c, End::Gone("connection lost".into())).await;
    }
}

/// Finds out what `request` asks, as the connection's driver does.
async fn resolve(request: Request) -> Verdict {
    match request {
        Request::Durable(tickets) => {
            let mut result = Ok(());
            for ticket in tickets {
                if let Err(e) = ticket.wait().await {
                    result = result.and(Err(e));
                }
            }
            Verdict::Durable(result)
        }
        Request::AuthorizePublish { .. } | Request::AuthorizeSubscribe { .. } => {
            panic!("a session without an authorizer asked for an authorization: {request:?}")
        }
    }
}

/// What a client asked the [`ScriptedAuthorizer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Question {
    /// To publish to this topic.
    Publish(String),
    /// To subscribe to these filters.
    Subscribe(Vec<String>),
}

/// An authorizer that answers when the test says, in any order. A question dropped
/// unanswered is refused.
#[derive(Debug, Default)]
pub(crate) struct ScriptedAuthorizer {
    asked: Mutex<Vec<(Question, Option<Reply>)>>,
}

#[derive(Debug)]
enum Reply {
    Publish(oneshot::Sender<Authorization>),
    Subscribe(oneshot::Sender<Vec<Authorization>>),
}

impl ScriptedAuthorizer {
    /// Every question asked so far, in the order asked.
    pub(crate) fn questions(&self) -> Vec<Question> {
        self.asked.lock().expect("not poisoned").iter().map(|(q, _)| q.clone()).collect()
    }

    /// Answers question `n` (counted from 0), a publish.
    pub(crate) fn answer_publish(&self, n: usize, a: Authorization) {
        match self.asked.lock().expect("not poisoned")[n].1.take() {
            Some(Reply::Publish(tx)) => tx.send(a).expect("the session still waits"),
            other => panic!("question {n} is not an open publish question: {other:?}"),
        }
    }

    /// Answers question `n` (counted from 0), a subscription.
    pub(crate) fn answer_subscribe(&self, n: usize, a: Vec<Authorization>) {
        match self.asked.lock().expect("not poisoned")[n].1.take() {
            Some(Reply::Subscribe(tx)) => tx.send(a).expect("the session still waits"),
            other => panic!("question {n} is not an open subscribe question: {other:?}"),
        }
    }
}

impl Authorizer for ScriptedAuthorizer {
    fn authorize_publish(&self, _: &Subject, publish: &PublishIntent) -> Answer<Authorization> {
        let (tx, rx) = oneshot::channel();
        self.asked
            .lock()
            .expect("not poisoned")
            .push((Question::Publish(publish.topic.to_string()), Some(Reply::Publish(tx))));
        Box::pin(async move { rx.await.unwrap_or(Authorization::NOT_AUTHORIZED) })
    }

    fn authorize_subscribe(&self, _: &Subject, filters: &[SubscribeIntent]) -> Answer<Vec<Authorization>> {
        let (tx, rx) = oneshot::channel();
        let question = Question::Subscribe(filters.iter().map(|f| f.filter.clone()).collect());
        self.asked.lock().expect("not poisoned").push((question, Some(Reply::Subscribe(tx))));
        Box::pin(async move { rx.await.unwrap_or_default() })
    }
}

fn encode_into(p: &Packet, version: ProtocolVersion, out: &mut BytesMut) {
    vmq_mqtt::encode(p, version, out).expect("the session's packets encode");
}

impl Client {
    /// Writes `p` towards the session.
    pub(crate) fn send(&mut self, p: Packet) {
        encode_into(&p, self.version, &mut self.to_server);
    }

    /// Reads and decodes everything the session wrote so far.
    pub(crate) fn recv(&mut self) -> Vec<Packet> {
        let mut out = Vec::new();
        loop {
            match vmq_mqtt::decode(&mut self.from_server, self.version, usize::MAX) {
                Ok(Some(p)) => out.push(p),
                Ok(None) => break,
                Err(e) => panic!("the session wrote an undecodable packet: {e}"),
            }
        }
        assert!(self.from_server.is_empty(), "a partial packet was left: {:?}", self.from_server);
        out
    }

    /// True while the connection is open.
    pub(crate) fn is_connected(&self) -> bool {
        self.session.is_some()
    }

    /// The session (while connected).
    pub(crate) fn session(&self) -> &Session {
        self.session.as_ref().expect("the client is connected")
    }

    /// Takes the requests held unanswered, to answer them by hand.
    pub(crate) fn take_held_requests(&mut self) -> Vec<PendingRequest> {
        std::mem::take(&mut self.held)
    }

    /// The session (while connected), to hand it verdicts.
    pub(crate) fn session_mut(&mut self) -> &mut Session {
        self.session.as_mut().expect("the client is connected")
    }

    /// Requests the client holds unanswered.
    pub(crate) fn held_requests(&self) -> usize {
        self.held.len()
    }
}

// Packet builders for scripts.

pub(crate) fn connect_packet(version: ProtocolVersion, client_id: &str, clean: bool) -> Connect {
    Connect {
        protocol: Some(version),
        client_id: client_id.into(),
        clean_start: clean,
        keep_alive: 0,
        ..Connect::default()
    }
}

pub(crate) fn publish(topic: &str, qos: QoS, id: Option<u16>, payload: &'static [u8]) -> Packet {
    Packet::Publish(Publish {
        qos,
        topic: topic.into(),
        packet_id: id.map(PacketId),
        payload: Bytes::from_static(payload),
        ..Publish::default()
    })
}

pub(crate) fn subscribe(id: u16, filter: &str, qos: QoS) -> Packet {
    let options = SubscriptionOptions { qos, ..SubscriptionOptions::default() };
    Packet::Subscribe(Subscribe {
        packet_id: PacketId(id),
        filters: vec![SubscribeFilter { filter: filter.into(), options }],
        properties: Properties::default(),
    })
}

pub(crate) fn resp(id: u16) -> PubResp {
    PubResp { packet_id: PacketId(id), ..PubResp::default() }
}

pub(crate) fn disconnect(properties: Properties) -> Packet {
    Packet::Disconnect(Disconnect { code: ReasonCode::NORMAL_DISCONNECTION, properties })
}
