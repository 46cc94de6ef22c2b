//! One client connection: reads and decodes packets, drives the session, writes what it
//! produces, and enforces keep-alive, connection lifetime and takeover.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};
use vmq_storage::QueueKey;

use super::connect::{self, Accepted};
use super::{ConnectionContext, ListenerSpec};
use crate::broker::message::{ForwardedProperties, Msg};
use crate::broker::{ConnectionHandle, Kick};
use crate::mqtt::{self, ConnAck, Connect, DecodeError, Disconnect, Packet, ProtocolVersion, Properties, ReasonCode, Will};
use crate::session::{ClientLimits, Close, Output, Session};

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
}

impl Writer {
    fn queue(&mut self, p: &Packet) {
        if let Err(e) = mqtt::encode(p, self.version, &mut self.buf) {
            warn!(error = %e, "packet not encodable; dropped");
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.half.write_all(&self.buf).await?;
            self.buf.clear();
        }
        Ok(())
    }
}

/// Runs one connection to completion.
pub async fn run(
    stream: TcpStream,
    peer: SocketAddr,
    spec: Arc<ListenerSpec>,
    ctx: Arc<ConnectionContext>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (mut rd, wr) = stream.into_split();
    let mut rbuf = BytesMut::with_capacity(4096);
    let mut w = Writer { half: wr, buf: BytesMut::with_capacity(4096), version: ProtocolVersion::V4 };
    let max_packet = max_packet_size(&ctx.connect);

    // CONNECT must be the first packet [MQTT-3.1.0-1], within `mqtt.connect.timeout`.
    let first = tokio::select! {
        r = tokio::time::timeout(ctx.connect.connect_timeout, read_packet(&mut rd, &mut rbuf, ProtocolVersion::V4, max_packet)) => r,
        _ = shutdown.wait_for(|s| *s) => return,
    };
    let connect = match first {
        Err(_) => {
            info!(%peer, "no CONNECT within mqtt.connect.timeout; closing");
            return;
        }
        Ok(Err(ReadError::Decode(e @ (DecodeError::UnsupportedProtocolVersion(_) | DecodeError::InvalidProtocolName)))) => {
            // [MQTT-3.1.2-2]: answer with "unacceptable protocol version", then close.
            info!(%peer, error = %e, "CONNECT refused");
            w.queue(&Packet::ConnAck(ConnAck { code: ReasonCode::UNSUPPORTED_PROTOCOL_VERSION, ..ConnAck::default() }));
            let _ = w.flush().await;
            return;
        }
        Ok(Err(e)) => {
            info!(%peer, error = %e, "connection closed before CONNECT");
            return;
        }
        Ok(Ok(Packet::Connect(c))) => c,
        Ok(Ok(other)) => {
            info!(%peer, packet = ?packet_name(&other), "first packet is not CONNECT [MQTT-3.1.0-1]; closing");
            return;
        }
    };
    if let Some(v) = connect.protocol {
        w.version = v;
    }
    let accepted = match connect::validate(&connect, &spec, &ctx.connect, || assigned_client_id(&ctx)) {
        Ok(a) => a,
        Err(refused) => {
            info!(%peer, client_id = %connect.client_id, code = refused.code.0, cause = %refused.cause, "CONNECT refused");
            w.queue(&Packet::ConnAck(ConnAck { code: refused.code, ..ConnAck::default() }));
            let _ = w.flush().await;
            return;
        }
    };
    serve_session(connect, accepted, peer, spec, ctx, rd, rbuf, w, shutdown, max_packet).await;
}

#[allow(clippy::too_many_arguments)]
async fn serve_session(
    connect: Box<Connect>,
    accepted: Accepted,
    peer: SocketAddr,
    spec: Arc<ListenerSpec>,
    ctx: Arc<ConnectionContext>,
    mut rd: tokio::net::tcp::OwnedReadHalf,
    mut rbuf: BytesMut,
    mut w: Writer,
    mut shutdown: watch::Receiver<bool>,
    max_packet: usize,
) {
    let broker = ctx.broker.clone();
    let version = accepted.version;
    let key = QueueKey::new(spec.mountpoint.clone(), accepted.client_id.clone());
    let conn_id = broker.next_connection_id();
    let (kick_tx, mut kick_rx) = mpsc::channel(1);
    let (done_tx, done_rx) = watch::channel(false);
    let handle = ConnectionHandle { id: conn_id, kick: kick_tx, done: done_rx };
    let reg = broker.register(key.clone(), connect.clean_start, handle).await;
    // A clean start never resumes [MQTT-3.2.2-2]; the registry discarded any old session.
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

    let now = Instant::now();
    let limits = ClientLimits {
        receive_maximum: connect.properties.receive_maximum.unwrap_or(u16::MAX),
        maximum_packet_size: connect.properties.maximum_packet_size,
        topic_alias_maximum: connect.properties.topic_alias_maximum.unwrap_or(0),
    };
    let mut session = Session::new(broker.clone(), reg.slot.clone(), ctx.session.clone(), version, limits, reg.inflight, now);
    let mut session_expiry = accepted.session_expiry;
    let keep_alive = (accepted.keep_alive > 0).then(|| Duration::from_millis(u64::from(accepted.keep_alive) * 1500));
    let lifetime_end = spec.max_connection_lifetime.map(|d| tokio::time::Instant::now() + d);
    let queue = reg.slot.queue.clone();
    let mut last_packet = tokio::time::Instant::now();
    let mut throttled = false;

    let end = 'conn: loop {
        session.pump(Instant::now());
        let outputs: Vec<Output> = session.poll_transmit().collect();
        for out in outputs {
            match out {
                Output::Packet(p) => w.queue(&p),
                Output::AfterDurable { ack, durable, qos2_id } => {
                    if let Err(close) = ack_when_durable(&mut w, &mut session, ack, durable, qos2_id).await {
                        break 'conn End::Close(close);
                    }
                }
            }
        }
        if let Err(e) = w.flush().await {
            break 'conn End::Gone(format!("write failed: {e}"));
        }
        let throttle = session.throttle(Instant::now()).map(tokio::time::Instant::from_std);
        if throttle.is_some() && !throttled {
            broker.counters.rate_limited.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        throttled = throttle.is_some();
        let retry = session.poll_retry_deadline().map(tokio::time::Instant::from_std);
        let keepalive_deadline = keep_alive.map(|ka| last_packet + ka);
        tokio::select! {
            r = rd.read_buf(&mut rbuf), if throttle.is_none() => {
                match r {
                    Ok(0) => break 'conn End::Gone("connection closed by client".into()),
                    Err(e) => break 'conn End::Gone(format!("read failed: {e}")),
                    Ok(_) => {}
                }
                last_packet = tokio::time::Instant::now();
                loop {
                    let packet = match mqtt::decode(&mut rbuf, version, max_packet) {
                        Ok(Some(p)) => p,
                        Ok(None) => break,
                        Err(e) => break 'conn End::Close(Close {
                            reason: e.reason_code(),
                            cause: format!("bad packet: {e}"),
                            send_disconnect: true,
                            publish_will: true,
                        }),
                    };
                    if let Packet::Disconnect(d) = packet {
                        match disconnect_expiry(&d, &connect, session_expiry) {
                            Ok(exp) => session_expiry = exp,
                            Err(close) => break 'conn End::Close(close),
                        }
                        break 'conn End::ClientDisconnect { with_will: d.code == ReasonCode::DISCONNECT_WITH_WILL };
                    }
                    if let Err(close) = session.handle_packet(packet, Instant::now()) {
                        break 'conn End::Close(close);
                    }
                }
            }
            _ = queue.notified() => {}
            _ = sleep_until_opt(throttle) => {}
            _ = sleep_until_opt(retry) => session.handle_retry(Instant::now()),
            _ = sleep_until_opt(keepalive_deadline) => {
                // [MQTT-3.1.2-24]: nothing received within 1.5 times the keep-alive.
                break 'conn End::Close(Close {
                    reason: ReasonCode::KEEP_ALIVE_TIMEOUT,
                    cause: "keep-alive timeout".into(),
                    send_disconnect: true,
                    publish_will: true,
                });
            }
            _ = sleep_until_opt(lifetime_end) => break 'conn End::Close(Close {
                reason: ReasonCode::MAXIMUM_CONNECT_TIME,
                cause: "max_connection_lifetime reached".into(),
                send_disconnect: true,
                publish_will: true,
            }),
            k = kick_rx.recv() => break 'conn End::Kicked(k.unwrap_or(Kick::Shutdown)),
            _ = shutdown.wait_for(|s| *s) => break 'conn End::Kicked(Kick::Shutdown),
        }
    };

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
    // publish that broke the window). Acknowledgements still waiting for the disk are not
    // sent: the client resends those publishes.
    for out in session.poll_transmit() {
        if let Output::Packet(p) = out {
            w.queue(&p);
        }
    }
    if let Some(code) = reason {
        if version.is_v5() {
            let mut properties = Properties::default();
            // Reason String only when the client did not opt out [MQTT-3.1.2-29].
            if connect.properties.request_problem_information != Some(0) {
                properties.reason_string = Some(log.clone());
            }
            w.queue(&Packet::Disconnect(Disconnect { code, properties }));
        }
    }
    // Bounded: a peer that stopped reading must not hold the teardown.
    let _ = tokio::time::timeout(Duration::from_secs(1), w.flush()).await;
    match &end {
        End::ClientDisconnect { .. } | End::Kicked(_) => {
            info!(%peer, client_id = %accepted.client_id, "{log}");
        }
        End::Close(c) => warn!(%peer, client_id = %accepted.client_id, code = c.reason.0, "closing connection: {log}"),
        End::Gone(_) => debug!(%peer, client_id = %accepted.client_id, "{log}"),
    }
    let shutting_down = matches!(end, End::Kicked(Kick::Shutdown));
    let slot = session.slot().clone();
    // The will goes out before the session is released, so that whoever observes the
    // session gone (a takeover, a test) also observes the will published.
    if publish_will {
        if let Some(will) = connect.will.as_ref() {
            let delay = will_delay(will, session_expiry, &ctx.connect, shutting_down);
            publish_will_after(&ctx, &spec.mountpoint, &accepted.client_id, will, delay, slot.clone(), reg.generation);
        }
    }
    broker.disconnected(&slot, conn_id, session.into_inflight(), session_expiry);
    let _ = done_tx.send(true);
}

/// Sends `ack` once the publish it acknowledges is durable in every offline queue it went to.
/// When the store failed (e.g. a full disk) the publish is refused instead of acknowledged and
/// lost: MQTT 5 clients get the ack with Quota Exceeded, MQTT 3 clients (which have no failure
/// code for it) are disconnected without the ack and resend after reconnecting.
async fn ack_when_durable(
    w: &mut Writer,
    session: &mut Session,
    mut ack: Packet,
    durable: Vec<crate::broker::queue::Durable>,
    qos2_id: Option<u16>,
) -> Result<(), Close> {
    let mut failure = None;
    for ticket in durable {
        if let Err(e) = ticket.wait().await {
            failure = Some(e);
        }
    }
    let Some(e) = failure else {
        w.queue(&ack);
        return Ok(());
    };
    session.durable_failed(qos2_id);
    if w.version.is_v5() {
        if let Packet::PubAck(r) | Packet::PubRec(r) = &mut ack {
            r.code = ReasonCode::QUOTA_EXCEEDED;
            r.properties.reason_string = Some(format!("message not stored: {e}"));
        }
        w.queue(&ack);
        return Ok(());
    }
    Err(Close {
        reason: ReasonCode::IMPLEMENTATION_SPECIFIC_ERROR,
        cause: format!("publish refused, offline message not stored: {e}"),
        send_disconnect: false,
        publish_will: true,
    })
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
fn disconnect_expiry(d: &Disconnect, c: &Connect, current: Option<Duration>) -> Result<Option<Duration>, Close> {
    let Some(secs) = d.properties.session_expiry_interval else { return Ok(current) };
    if c.properties.session_expiry_interval.unwrap_or(0) == 0 && secs != 0 {
        return Err(Close {
            reason: ReasonCode::PROTOCOL_ERROR,
            cause: "DISCONNECT sets a session expiry after CONNECT had none [MQTT-3.14.2-2]".into(),
            send_disconnect: true,
            publish_will: false,
        });
    }
    Ok(if secs == u32::MAX { None } else { Some(Duration::from_secs(u64::from(secs))) })
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
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
