//! One client connection: reads and decodes packets, drives the session, writes what it
//! produces, and enforces keep-alive, connection lifetime and takeover.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::watch;
use tracing::{debug, info, warn};
use vmq_storage::QueueKey;

use super::acks::Held;
use super::connect::{self, Accepted};
use super::{ConnectionContext, ListenerSpec};
use crate::broker::message::{ForwardedProperties, Msg};
use crate::broker::{ConnectionHandle, Kick, NetsplitAction, Registration};
use vmq_mqtt::{self as mqtt, ConnAck, Connect, DecodeError, Disconnect, Packet, ProtocolVersion, Properties, ReasonCode, Will};
use crate::session::{ClientLimits, Close, Session, Transmit};

/// Settings for accepting CONNECT.
#[derive(Debug, Clone)]
pub struct ConnectSettings {
    /// `allow_anonymous`.
    pub allow_anonymous: bool,
    /// `max_client_id_size`.
    pub max_client_id_size: usize,
    /// `max_keepalive`.
    pub max_keepalive: Option<u16>,
    /// `mqtt.connect.timeout`: time a new connection has to send CONNECT.
    pub connect_timeout: Duration,
    /// `topic_max_depth` (for will topics).
    pub topic_max_depth: usize,
    /// `max_message_size` (0 = unlimited).
    pub max_message_size: usize,
    /// `max_last_will_delay`; `None` = the client's value.
    pub max_last_will_delay: Option<Duration>,
    /// `suppress_lwt_on_session_takeover`.
    pub suppress_lwt_on_session_takeover: bool,
    /// `receive_max_broker`, announced in CONNACK.
    pub receive_max_broker: u16,
    /// `topic_alias_max_broker`, announced in CONNACK.
    pub topic_alias_max_broker: u16,
}

impl Default for ConnectSettings {
    fn default() -> Self {
        Self {
            allow_anonymous: true,
            max_client_id_size: 100,
            max_keepalive: None,
            connect_timeout: Duration::from_secs(30),
            topic_max_depth: 10,
            max_message_size: 0,
            max_last_will_delay: None,
            suppress_lwt_on_session_takeover: false,
            receive_max_broker: u16::MAX,
            topic_alias_max_broker: 0,
        }
    }
}

/// Largest packet MQTT allows: 268,435,455 bytes of body plus a 5-byte fixed header.
const MQTT_MAX_PACKET: usize = 268_435_460;

fn max_packet_size(s: &ConnectSettings) -> usize {
    if s.max_message_size == 0 {
        MQTT_MAX_PACKET
    } else {
        // Room for the topic and properties around a maximal payload.
        s.max_message_size.saturating_add(2 * 65_536).min(MQTT_MAX_PACKET)
    }
}

/// Why a connection ended (for the will decision and the log).
enum End {
    /// The client sent DISCONNECT.
    ClientDisconnect { with_will: bool },
    /// The session or connection task closed it.
    Close(Close),
    /// The peer went away (EOF or I/O error).
    Gone(String),
    /// The registry or the broker asked it to leave.
    Kicked(Kick),
}

struct Writer {
    half: OwnedWriteHalf,
    buf: BytesMut,
    version: ProtocolVersion,
    /// Packets behind acknowledgements that wait for their publish to be taken.
    held: Held,
}

impl Writer {
    fn queue(&mut self, p: &Packet) {
        if let Err(e) = mqtt::encode(p, self.version, &mut self.buf) {
            warn!(error = %e, "packet not encodable; dropped");
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        self.half.write_all(&self.buf).await?;
        recycle(&mut self.buf);
        Ok(())
    }

    /// Writes a session's packets: all of them at once, or, when acknowledgements among them
    /// (or before them) wait for their publish to be taken, what may go out now; the rest
    /// waits in `held` (see [`Writer::write_settled`]).
    async fn write_transmit(&mut self, tx: &mut Transmit, session: &mut Session) -> Result<(), End> {
        if tx.deferred.is_empty() && self.held.is_empty() {
            self.flush().await.map_err(write_failed)?;
            self.half.write_all(&tx.wire).await.map_err(write_failed)?;
            recycle(&mut tx.wire);
            return Ok(());
        }
        self.held.push(tx);
        self.write_settled(session).await
    }

    /// Writes what `held` lets go: up to the first acknowledgement still waiting.
    async fn write_settled(&mut self, session: &mut Session) -> Result<(), End> {
        self.held.take_ready(&mut self.buf, session, self.version).map_err(End::Close)?;
        self.flush().await.map_err(write_failed)
    }
}

fn write_failed(e: std::io::Error) -> End {
    End::Gone(format!("write failed: {e}"))
}

/// Empties a written buffer. A connection that writes little (most of them, most of the time)
/// gives the buffer back rather than holding it while idle; one streaming deliveries keeps a
/// bounded one.
fn recycle(buf: &mut BytesMut) {
    if buf.len() >= KEEP_WRITE_BUFFER_AFTER && buf.capacity() <= MAX_KEPT_WRITE_BUFFER {
        buf.clear();
    } else if buf.capacity() > 0 {
        *buf = BytesMut::new();
    }
}

/// How long one write to a client may take before the connection is given up (a client that
/// stopped reading, with its TCP window full).
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// A flush at least this large keeps its write buffer for the next one.
const KEEP_WRITE_BUFFER_AFTER: usize = 4096;
/// Largest write buffer kept between flushes.
const MAX_KEPT_WRITE_BUFFER: usize = 64 * 1024;
/// Room reserved in the read buffer before a read.
const READ_CHUNK: usize = 8192;
/// Most acknowledgements of one connection waiting for their publish to be taken; beyond it
/// (or beyond the client's window) the connection stops reading.
const MAX_WAITING_ACKS: usize = 1024;
/// Most bytes held behind waiting acknowledgements before the connection stops reading and
/// leaves deliveries in the queue.
const MAX_HELD_BYTES: usize = 1024 * 1024;

/// Runs one connection to completion.
pub async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    spec: Arc<ListenerSpec>,
    ctx: Arc<ConnectionContext>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (mut rd, wr) = stream.into_split();
    let mut rbuf = BytesMut::new();
    let mut w = Writer { half: wr, buf: BytesMut::new(), version: ProtocolVersion::V4, held: Held::default() };
    let max_packet = max_packet_size(&ctx.connect);
    // Boxed, like the other one-off phases (registration, durable acks, teardown): what a
    // future holds across its awaits is held by every connection for its whole life, a box
    // only while the phase runs.
    let handshake = Box::pin(handshake(&mut rd, &mut rbuf, &mut w, peer, &spec, &ctx, max_packet));
    let accepted = tokio::select! {
        r = handshake => r,
        _ = shutdown.wait_for(|s| *s) => return,
    };
    let Some((connect, accepted)) = accepted else { return };
    serve_session(connect, accepted, peer, spec, ctx, rd, rbuf, w, shutdown, max_packet).await;
}

/// Reads and validates CONNECT; answers a refusal itself and returns `None` then.
async fn handshake(
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    rbuf: &mut BytesMut,
    w: &mut Writer,
    peer: SocketAddr,
    spec: &ListenerSpec,
    ctx: &ConnectionContext,
    max_packet: usize,
) -> Option<(Box<Connect>, Accepted)> {
    // CONNECT must be the first packet [MQTT-3.1.0-1], within `mqtt.connect.timeout`.
    let first = tokio::time::timeout(ctx.connect.connect_timeout, read_packet(rd, rbuf, ProtocolVersion::V4, max_packet)).await;
    let connect = match first {
        Err(_) => {
            info!(%peer, "no CONNECT within mqtt.connect.timeout; closing");
            return None;
        }
        Ok(Err(ReadError::Decode(e @ (DecodeError::UnsupportedProtocolVersion(_) | DecodeError::InvalidProtocolName)))) => {
            // [MQTT-3.1.2-2]: answer with "unacceptable protocol version", then close.
            info!(%peer, error = %e, "CONNECT refused");
            w.queue(&Packet::ConnAck(ConnAck { code: ReasonCode::UNSUPPORTED_PROTOCOL_VERSION, ..ConnAck::default() }));
            let _ = w.flush().await;
            return None;
        }
        Ok(Err(e)) => {
            info!(%peer, error = %e, "connection closed before CONNECT");
            return None;
        }
        Ok(Ok(Packet::Connect(c))) => c,
        Ok(Ok(other)) => {
            info!(%peer, packet = ?packet_name(&other), "first packet is not CONNECT [MQTT-3.1.0-1]; closing");
            return None;
        }
    };
    if let Some(v) = connect.protocol {
        w.version = v;
    }
    match connect::validate(&connect, spec, &ctx.connect, || assigned_client_id(ctx)) {
        Ok(_) if !ctx.broker.netsplit_allows(NetsplitAction::Register) => {
            // `allow_register_during_netsplit = off` while a cluster member is unreachable:
            // CONNACK 3 (server unavailable), 0x88 in MQTT 5.
            ctx.broker.counters.netsplit_refused[0].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            info!(%peer, client_id = %connect.client_id, "CONNECT refused: cluster not ready (netsplit)");
            w.queue(&Packet::ConnAck(ConnAck { code: ReasonCode::SERVER_UNAVAILABLE, ..ConnAck::default() }));
            let _ = w.flush().await;
            None
        }
        Ok(a) => Some((connect, a)),
        Err(refused) => {
            info!(%peer, client_id = %connect.client_id, code = refused.code.0, cause = %refused.cause, "CONNECT refused");
            w.queue(&Packet::ConnAck(ConnAck { code: refused.code, ..ConnAck::default() }));
            let _ = w.flush().await;
            None
        }
    }
}

/// Serves a connection whose CONNECT was accepted.
///
/// Setup and teardown happen in plain functions and boxed futures: locals of an async
/// function that are in scope across an await are stored in its future, which every
/// connection holds for its whole life.
#[allow(clippy::too_many_arguments)]
async fn serve_session(
    connect: Box<Connect>,
    accepted: Accepted,
    peer: SocketAddr,
    spec: Arc<ListenerSpec>,
    ctx: Arc<ConnectionContext>,
    rd: tokio::net::tcp::OwnedReadHalf,
    rbuf: BytesMut,
    mut w: Writer,
    shutdown: watch::Receiver<bool>,
    max_packet: usize,
) {
    let handle = ConnectionHandle::new(ctx.broker.next_connection_id());
    let key = QueueKey::new(spec.mountpoint.clone(), accepted.client_id.clone());
    let clean_start = connect.clean_start;
    let reg = match Box::pin(ctx.broker.register(key, clean_start, handle.clone())).await {
        Ok(reg) => reg,
        Err(refused) => {
            // The registration could not finish (leader unreachable, the old session not
            // taken over, a newer connection won): CONNACK 3, 0x88 in MQTT 5, and nothing
            // of the client id is left registered here.
            info!(%peer, client_id = %accepted.client_id, reason = %refused, "CONNECT refused: registration did not complete");
            w.queue(&Packet::ConnAck(ConnAck { code: ReasonCode::SERVER_UNAVAILABLE, ..ConnAck::default() }));
            let _ = w.flush().await;
            handle.finish();
            return;
        }
    };
    let mut conn = start_session(
        reg,
        connect,
        accepted,
        peer,
        &spec,
        &ctx,
        &mut w,
        max_packet,
    );
    let end = conn.serve(&mut w, rd, rbuf, &handle, shutdown, &ctx).await;
    Box::pin(finish(end, conn, peer, &spec, &ctx, &mut w, handle.id)).await;
    handle.finish();
}

/// Queues CONNACK and builds the connection's session state.
#[allow(clippy::too_many_arguments)]
fn start_session(
    reg: Registration,
    mut connect: Box<Connect>,
    accepted: Accepted,
    peer: SocketAddr,
    spec: &ListenerSpec,
    ctx: &ConnectionContext,
    w: &mut Writer,
    max_packet: usize,
) -> Conn {
    let version = accepted.version;
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
        p.receive_maximum = Some(ctx.connect.receive_max_broker.max(1));
        if ctx.connect.topic_alias_max_broker > 0 {
            p.topic_alias_maximum = Some(ctx.connect.topic_alias_max_broker);
        }
        if ctx.connect.max_message_size > 0 {
            p.maximum_packet_size = u32::try_from(max_packet).ok();
        }
    }
    w.queue(&Packet::ConnAck(ack));
    info!(%peer, client_id = %accepted.client_id, version = version.level(), session_present, "client connected");

    let limits = ClientLimits {
        receive_maximum: connect.properties.receive_maximum.unwrap_or(u16::MAX),
        maximum_packet_size: connect.properties.maximum_packet_size,
        topic_alias_maximum: connect.properties.topic_alias_maximum.unwrap_or(0),
    };
    Conn {
        session: Session::new(ctx.broker.clone(), reg.slot, ctx.session.clone(), version, limits, reg.inflight, Instant::now()),
        session_expiry: accepted.session_expiry,
        keep_alive: (accepted.keep_alive > 0).then(|| Duration::from_millis(u64::from(accepted.keep_alive) * 1500)),
        lifetime_end: spec.max_connection_lifetime.map(|d| tokio::time::Instant::now() + d),
        version,
        max_packet,
        generation: reg.generation,
        client_id: accepted.client_id,
        // Only these parts of CONNECT matter from here on; the rest is freed now.
        will: connect.will.take().map(Box::new),
        connect_expiry_set: connect.properties.session_expiry_interval.unwrap_or(0) != 0,
        problem_information: connect.properties.request_problem_information != Some(0),
    }
}

/// A connected session and what its connection keeps of CONNECT.
struct Conn {
    session: Session,
    session_expiry: Option<Duration>,
    keep_alive: Option<Duration>,
    lifetime_end: Option<tokio::time::Instant>,
    version: ProtocolVersion,
    max_packet: usize,
    /// The registration generation (for delayed wills).
    generation: u64,
    client_id: String,
    will: Option<Box<Will>>,
    /// CONNECT carried a non-zero Session Expiry Interval.
    connect_expiry_set: bool,
    /// The client accepts Reason Strings [MQTT-3.1.2-29].
    problem_information: bool,
}

impl Conn {
    /// Runs the session until the connection ends, and says why.
    ///
    /// One timer serves keep-alive, connection lifetime, retries and rate limiting: it is
    /// armed for the earliest deadline and moved only when a deadline earlier than the armed
    /// one appears; a deadline that moved later (keep-alive after every packet) is found out
    /// when the timer fires. Re-registering timers per packet would cost a timer-wheel update
    /// on every message.
    async fn serve(
        &mut self,
        w: &mut Writer,
        rd: tokio::net::tcp::OwnedReadHalf,
        mut rbuf: BytesMut,
        handle: &ConnectionHandle,
        mut shutdown: watch::Receiver<bool>,
        ctx: &ConnectionContext,
    ) -> End {
        let queue = self.session.slot().queue.clone();
        let mut last_packet = tokio::time::Instant::now();
        let mut throttled = false;
        let mut tx = Transmit::default();
        let timer = tokio::time::sleep_until(tokio::time::Instant::now());
        tokio::pin!(timer);
        let mut armed: Option<tokio::time::Instant> = None;
        let max_waiting = self.session.incoming_window().clamp(1, MAX_WAITING_ACKS);
        loop {
            let session = &mut self.session;
            // Deliveries stay in the queue while too much waits behind acknowledgements.
            let more = w.held.bytes() < MAX_HELD_BYTES && session.pump(Instant::now());
            session.wake_subscribers();
            session.take_transmit(&mut tx);
            // A client that stops reading must not keep its connection from being taken over
            // or shut down: the write gives way to a kick, and to WRITE_TIMEOUT. What was being
            // written stays in the session's in-flight state, saved at teardown and sent again.
            // Most rounds have nothing to write: no timer for them.
            let idle = tx.is_empty() && w.buf.is_empty() && w.held.is_empty();
            if !idle {
                tokio::select! {
                    r = tokio::time::timeout(WRITE_TIMEOUT, w.write_transmit(&mut tx, session)) => match r {
                        Ok(Ok(())) => {}
                        Ok(Err(end)) => return end,
                        Err(_) => return End::Gone(format!("no write progress for {} s", WRITE_TIMEOUT.as_secs())),
                    },
                    k = handle.kicked() => return End::Kicked(k),
                    _ = shutdown.wait_for(|s| *s) => return End::Kicked(Kick::Shutdown),
                }
            }
            let throttle = session.throttle(Instant::now()).map(tokio::time::Instant::from_std);
            if throttle.is_some() && !throttled {
                ctx.broker.counters.rate_limited.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            throttled = throttle.is_some();
            let retry = session.poll_retry_deadline().map(tokio::time::Instant::from_std);
            let keepalive = self.keep_alive.map(|ka| last_packet + ka);
            let next = [throttle, retry, keepalive, self.lifetime_end].into_iter().flatten().min();
            if let Some(next) = next {
                if armed.is_none_or(|at| next < at) {
                    timer.as_mut().reset(next);
                    armed = Some(next);
                }
            }
            // Publishes keep being read while their acknowledgements wait, up to the window.
            let read = throttle.is_none() && w.held.waiting() < max_waiting && w.held.bytes() < MAX_HELD_BYTES;
            tokio::select! {
                r = rd.readable(), if read => {
                    if let Err(e) = r {
                        return End::Gone(format!("read failed: {e}"));
                    }
                    if rbuf.capacity() - rbuf.len() < 1024 {
                        rbuf.reserve(READ_CHUNK);
                    }
                    match rd.try_read_buf(&mut rbuf) {
                        Ok(0) => return End::Gone("connection closed by client".into()),
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                        Err(e) => return End::Gone(format!("read failed: {e}")),
                    }
                    last_packet = tokio::time::Instant::now();
                    if let Some(end) = self.handle_input(&mut rbuf) {
                        return end;
                    }
                    // Idle connections hold no read buffer; payloads already decoded keep
                    // their slices of it alive on their own.
                    if rbuf.is_empty() {
                        rbuf = BytesMut::new();
                    }
                }
                // Written at the top of the loop, with whatever settled along with it.
                () = w.held.front_settled(), if !w.held.is_empty() => {}
                _ = queue.notified() => {}
                // Messages still waiting: go round again, after letting other tasks (the
                // publishers filling the queue among them) and the other branches run.
                () = tokio::task::yield_now(), if more => {}
                _ = &mut timer, if armed.is_some() => {
                    armed = None;
                    let now = tokio::time::Instant::now();
                    if keepalive.is_some_and(|at| at <= now) {
                        // [MQTT-3.1.2-24]: nothing received within 1.5 times the keep-alive.
                        return End::Close(Close {
                            reason: ReasonCode::KEEP_ALIVE_TIMEOUT,
                            cause: "keep-alive timeout".into(),
                            send_disconnect: true,
                            publish_will: true,
                        });
                    }
                    if self.lifetime_end.is_some_and(|at| at <= now) {
                        return End::Close(Close {
                            reason: ReasonCode::MAXIMUM_CONNECT_TIME,
                            cause: "max_connection_lifetime reached".into(),
                            send_disconnect: true,
                            publish_will: true,
                        });
                    }
                    if retry.is_some_and(|at| at <= now) {
                        self.session.handle_retry(now.into_std());
                    }
                }
                k = handle.kicked() => return End::Kicked(k),
                _ = shutdown.wait_for(|s| *s) => return End::Kicked(Kick::Shutdown),
            }
        }
    }

    /// Decodes and handles every complete packet in `rbuf`; `Some` when the connection ends.
    fn handle_input(&mut self, rbuf: &mut BytesMut) -> Option<End> {
        // One clock read per batch read from the socket, not per packet.
        let now = Instant::now();
        loop {
            let packet = match mqtt::decode(rbuf, self.version, self.max_packet) {
                Ok(Some(p)) => p,
                Ok(None) => return None,
                Err(e) => {
                    return Some(End::Close(Close {
                        reason: e.reason_code(),
                        cause: format!("bad packet: {e}"),
                        send_disconnect: true,
                        publish_will: true,
                    }));
                }
            };
            if let Packet::Disconnect(d) = packet {
                return Some(match disconnect_expiry(&d, self.connect_expiry_set, self.session_expiry) {
                    Ok(exp) => {
                        self.session_expiry = exp;
                        End::ClientDisconnect { with_will: d.code == ReasonCode::DISCONNECT_WITH_WILL }
                    }
                    Err(close) => End::Close(close),
                });
            }
            if let Err(close) = self.session.handle_packet(packet, now) {
                return Some(End::Close(close));
            }
        }
    }
}

/// Tears a connection down: tells the client why where the protocol can, publishes the will
/// when due, and releases the session.
async fn finish(end: End, conn: Conn, peer: SocketAddr, spec: &ListenerSpec, ctx: &Arc<ConnectionContext>, w: &mut Writer, conn_id: u64) {
    let Conn { mut session, session_expiry, version, generation, client_id, will, problem_information, .. } = conn;
    // Tell the client why, where the protocol has a way to (MQTT 5 DISCONNECT).
    let (reason, publish_will, log) = match &end {
        End::ClientDisconnect { with_will } => (None, *with_will, "client disconnected".to_string()),
        End::Close(c) => (c.send_disconnect.then_some(c.reason), c.publish_will, c.cause.clone()),
        End::Gone(cause) => (None, true, cause.clone()),
        End::Kicked(Kick::TakenOver) => (
            Some(ReasonCode::SESSION_TAKEN_OVER),
            !ctx.connect.suppress_lwt_on_session_takeover,
            "session taken over".into(),
        ),
        End::Kicked(Kick::Administrative) => (Some(ReasonCode::ADMINISTRATIVE_ACTION), true, "disconnected by an operator".into()),
        End::Kicked(Kick::Shutdown) => (Some(ReasonCode::SERVER_SHUTTING_DOWN), true, "server shutting down".into()),
    };
    // Answers to packets handled before the end still go out (e.g. PUBRECs before the one
    // publish that broke the window), in order: acknowledgements still waiting for their
    // publish to be taken are not sent, nor anything behind them, and the client resends
    // those publishes.
    session.wake_subscribers();
    let mut tx = Transmit::default();
    session.take_transmit(&mut tx);
    w.held.push(&mut tx);
    // The connection ends anyway: a refusal that closes it (MQTT 3) changes nothing.
    let _ = w.held.take_ready(&mut w.buf, &mut session, version);
    if let Some(code) = reason {
        if version.is_v5() {
            let mut properties = Properties::default();
            // Reason String only when the client did not opt out [MQTT-3.1.2-29].
            if problem_information {
                properties.reason_string = Some(log.clone());
            }
            w.queue(&Packet::Disconnect(Disconnect { code, properties }));
        }
    }
    // Bounded: a peer that stopped reading must not hold the teardown.
    let _ = tokio::time::timeout(Duration::from_secs(1), w.flush()).await;
    match &end {
        End::ClientDisconnect { .. } | End::Kicked(_) => info!(%peer, %client_id, "{log}"),
        End::Close(c) => warn!(%peer, %client_id, code = c.reason.0, "closing connection: {log}"),
        End::Gone(_) => debug!(%peer, %client_id, "{log}"),
    }
    let shutting_down = matches!(end, End::Kicked(Kick::Shutdown));
    let slot = session.slot().clone();
    // The will goes out before the session is released, so that whoever observes the
    // session gone (a takeover, a test) also observes the will published.
    if publish_will {
        if let Some(will) = will.as_deref() {
            let delay = will_delay(will, session_expiry, &ctx.connect, shutting_down);
            publish_will_after(ctx, &spec.mountpoint, &client_id, will, delay, slot.clone(), generation);
        }
    }
    ctx.broker.disconnected(&slot, conn_id, session.into_inflight(), session_expiry);
}

/// The will is published after the Will Delay Interval or when the session ends, whichever
/// comes first [MQTT-3.1.3-9]; `max_last_will_delay` caps it; at shutdown it is sent at once.
fn will_delay(will: &Will, session_expiry: Option<Duration>, s: &ConnectSettings, shutting_down: bool) -> Duration {
    if shutting_down {
        return Duration::ZERO;
    }
    let mut delay = Duration::from_secs(u64::from(will.properties.will_delay_interval.unwrap_or(0)));
    if let Some(max) = s.max_last_will_delay {
        delay = delay.min(max);
    }
    if let Some(exp) = session_expiry {
        delay = delay.min(exp);
    }
    delay
}

fn publish_will_after(
    ctx: &Arc<ConnectionContext>,
    mountpoint: &str,
    client_id: &str,
    will: &Will,
    delay: Duration,
    slot: Arc<crate::broker::SessionSlot>,
    generation: u64,
) {
    let now = Instant::now();
    let msg = Arc::new(Msg {
        mountpoint: mountpoint.into(),
        topic: will.topic.as_str().into(),
        payload: will.payload.clone(),
        qos: will.qos,
        retain: will.retain,
        properties: ForwardedProperties::from_properties(&will.properties),
        expires_at: will.properties.message_expiry_interval.map(|s| now + delay + Duration::from_secs(u64::from(s))),
        publisher: Some(client_id.into()),
    });
    let broker = ctx.broker.clone();
    if delay.is_zero() {
        broker.publish(msg);
        return;
    }
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        // A reconnect within the delay resumes the session and cancels the will [MQTT-3.1.3-9].
        let st = slot.state();
        let resumed = st.generation != generation || st.connection.is_some();
        drop(st);
        if !resumed {
            broker.publish(msg);
        }
    });
}

/// Session expiry after a DISCONNECT that may change it. Setting a non-zero interval when
/// CONNECT had zero is a protocol error [MQTT-3.14.2-2].
fn disconnect_expiry(d: &Disconnect, connect_expiry_set: bool, current: Option<Duration>) -> Result<Option<Duration>, Close> {
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

fn assigned_client_id(ctx: &ConnectionContext) -> String {
    format!("vmq-{:016x}", ctx.broker.random())
}

#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("{0}")]
    Decode(DecodeError),
    #[error("connection closed")]
    Closed,
    #[error("read failed: {0}")]
    Io(std::io::Error),
}

async fn read_packet(
    rd: &mut tokio::net::tcp::OwnedReadHalf,
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max: usize,
) -> Result<Packet, ReadError> {
    loop {
        if let Some(p) = mqtt::decode(buf, version, max).map_err(ReadError::Decode)? {
            return Ok(p);
        }
        match rd.read_buf(buf).await {
            Ok(0) => return Err(ReadError::Closed),
            Ok(_) => {}
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
}

fn packet_name(p: &Packet) -> &'static str {
    match p {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect(_) => "DISCONNECT",
        Packet::Auth(_) => "AUTH",
    }
}
