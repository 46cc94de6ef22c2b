//! One client connection: reads bytes into the session, writes what the session produces,
//! sleeps until the session's next deadline, and gives way to takeover and shutdown. Every
//! protocol decision is the session's ([`crate::session`]); this file only does I/O, over any
//! byte stream (TCP today; TLS, WebSocket and PROXY-wrapped streams are the same to it).

use std::future::{Future, poll_fn};
use std::mem::MaybeUninit;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tracing::{Instrument, Span, debug, info, warn};
use vmq_storage::QueueKey;

use super::verdicts::Held;
use super::{ConnectionContext, KillSwitch, ListenerSpec, Peer, Tenancy};
use crate::authorize::{RegisterIntent, Subject};
use crate::broker::{ConnectionHandle, Kick};
use crate::session::connect::{self, Accepted, ListenerRules, Refused};
use crate::session::{End, Session, Transmit};
use vmq_mqtt::{self as mqtt, Connect, DecodeError, Packet, ProtocolVersion, ReasonCode};

/// What the connection writes: the bytes to flush next, and the packets held behind
/// acknowledgements that wait for their publish to be taken.
struct Writer {
    buf: BytesMut,
    version: ProtocolVersion,
    held: Held,
}

impl Writer {
    fn queue(&mut self, p: &Packet) {
        if let Err(e) = mqtt::encode(p, self.version, &mut self.buf) {
            warn!(error = %e, "packet not encodable; dropped");
        }
    }

    async fn flush<S: AsyncWrite + Unpin>(&mut self, stream: &mut S) -> std::io::Result<()> {
        stream.write_all(&self.buf).await?;
        // Streams that buffer (TLS) send only on flush; for TCP it costs nothing.
        stream.flush().await?;
        recycle(&mut self.buf);
        Ok(())
    }

    /// Writes a session's packets: all of them at once, or, when acknowledgements among them
    /// (or before them) wait for their publish to be taken, what may go out now; the rest
    /// waits in `held` (see [`Writer::write_settled`]).
    async fn write_transmit<S: AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
        tx: &mut Transmit,
        session: &mut Session,
    ) -> Result<(), End> {
        if tx.requests.is_empty() && self.held.is_empty() {
            if !self.buf.is_empty() {
                stream.write_all(&self.buf).await.map_err(write_failed)?;
                recycle(&mut self.buf);
            }
            stream.write_all(&tx.wire).await.map_err(write_failed)?;
            stream.flush().await.map_err(write_failed)?;
            recycle(&mut tx.wire);
            return Ok(());
        }
        self.held.push(tx);
        self.write_settled(stream, session).await
    }

    /// Writes what `held` lets go: up to the first acknowledgement still waiting.
    async fn write_settled<S: AsyncWrite + Unpin>(&mut self, stream: &mut S, session: &mut Session) -> Result<(), End> {
        self.held.take_ready(&mut self.buf, session, self.version).map_err(End::Close)?;
        self.flush(stream).await.map_err(write_failed)
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

/// Reads what `stream` has into `rbuf`, at most one chunk per wake-up; `Ok(0)` at end of
/// stream.
///
/// An idle connection holds no read buffer: while `rbuf` has no capacity the read goes into a
/// chunk on the stack of this poll (not into the connection's future, which every connection
/// holds for its whole life), and only bytes that arrived are copied into a new `rbuf`. Any
/// stream works so, without a readiness API such as `TcpStream::readable`.
fn poll_read_some<S: AsyncRead + Unpin>(
    stream: &mut S,
    rbuf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    if rbuf.capacity() == 0 {
        // Left uninitialised: zeroing 8 KB on every wake-up would be work for nothing.
        let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut buf = ReadBuf::uninit(&mut chunk);
        return match std::pin::Pin::new(stream).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len();
                if n > 0 {
                    rbuf.reserve(READ_CHUNK);
                    rbuf.extend_from_slice(buf.filled());
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        };
    }
    if rbuf.capacity() - rbuf.len() < 1024 {
        rbuf.reserve(READ_CHUNK);
    }
    pin!(stream.read_buf(rbuf)).poll(cx)
}

/// Gives back a read buffer the session has emptied, wherever it was filled (the CONNECT read,
/// a read, packets resumed after an authorization): an idle connection holds no read buffer.
/// Payloads already decoded keep their slices of it alive on their own.
fn release_if_empty(rbuf: &mut BytesMut) {
    if rbuf.is_empty() && rbuf.capacity() > 0 {
        *rbuf = BytesMut::new();
    }
}

/// The clock the session runs on: tokio's, so that tests which pause tokio's time move the
/// session's deadlines too.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// How long one write to a client may take before the connection is given up (a client that
/// stopped reading, with its TCP window full).
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// A flush at least this large keeps its write buffer for the next one.
const KEEP_WRITE_BUFFER_AFTER: usize = 4096;
/// Largest write buffer kept between flushes.
const MAX_KEPT_WRITE_BUFFER: usize = 64 * 1024;
/// Most bytes read per wake-up, and room reserved in the read buffer before a read.
const READ_CHUNK: usize = 8192;
/// Most acknowledgements of one connection waiting for their publish to be taken; beyond it
/// (or beyond the client's window) the connection stops reading.
const MAX_WAITING_ACKS: usize = 1024;
/// Most bytes held behind waiting acknowledgements before the connection stops reading and
/// leaves deliveries in the queue.
const MAX_HELD_BYTES: usize = 1024 * 1024;

/// A connection before its CONNECT was accepted: what [`run`] is given, boxed so that the
/// connection's future keeps a pointer to it rather than room for every part.
struct Opening<S> {
    stream: S,
    /// A user name the connection established before MQTT (the TLS common name a PROXY
    /// header carried): it replaces the CONNECT's.
    identity: Option<String>,
    spec: Arc<ListenerSpec>,
    ctx: Arc<ConnectionContext>,
    shutdown: Arc<KillSwitch>,
    tenancy: Tenancy,
}

/// A connection whose session runs: everything it keeps while it lives, held once.
///
/// The connection's future is every connection's largest cost, idle ones included: an async
/// function's arguments and its locals that live across an await are each stored in its
/// future, and a future awaited inside another is stored in that one. So the setup and the
/// teardown run in boxed futures (they hold a box only while they run), and the serving loop
/// borrows this one value instead of taking its parts as arguments.
struct Serving<S> {
    session: Session,
    stream: S,
    w: Writer,
    rbuf: BytesMut,
    handle: ConnectionHandle,
    ctx: Arc<ConnectionContext>,
    shutdown: Arc<KillSwitch>,
    /// Released when the connection ends.
    _tenancy: Tenancy,
}

/// Runs one connection over `stream` to completion; `tenancy` is released at its end.
///
/// Its log events carry the peer address and, once CONNECT is read, the client id through the
/// connection's span.
pub(super) fn run<S>(
    stream: S,
    peer: Peer,
    identity: Option<String>,
    spec: Arc<ListenerSpec>,
    ctx: Arc<ConnectionContext>,
    shutdown: Arc<KillSwitch>,
    tenancy: Tenancy,
) -> impl Future<Output = ()> + Send + 'static
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let span = tracing::info_span!("mqtt", %peer, client_id = tracing::field::Empty);
    connection(Box::new(Opening { stream, identity, spec, ctx, shutdown, tenancy })).instrument(span)
}

async fn connection<S>(opening: Box<Opening<S>>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(mut serving) = Box::pin(open(opening)).await else { return };
    let end = serving.serve().await;
    Box::pin(serving.finish(end)).await;
}

/// Reads CONNECT, registers the client and starts its session; `None` when the connection
/// ended first (refused, closed, shut down), answered as it should be.
async fn open<S: AsyncRead + AsyncWrite + Unpin>(opening: Box<Opening<S>>) -> Option<Serving<S>> {
    let Opening { mut stream, identity, spec, ctx, shutdown, tenancy } = *opening;
    let mut rbuf = BytesMut::new();
    // Authorizations are bounded as CONNECT's is: by `mqtt.connect.timeout`.
    let held = Held::new(ctx.authorizer.clone(), ctx.mqtt.mqtt_connect_timeout);
    let mut w = Writer { buf: BytesMut::new(), version: ProtocolVersion::V4, held };
    let accepted = tokio::select! {
        r = handshake(&mut stream, &mut rbuf, &mut w, &spec, &ctx, identity) => r,
        () = shutdown.pulled() => return None,
    };
    let (connect, accepted) = accepted?;
    let handle = ConnectionHandle::new(ctx.broker.next_connection_id());
    let key = QueueKey::new(spec.mountpoint.clone(), accepted.client_id.clone());
    let reg = match ctx.broker.register(key, connect.clean_start, handle.clone()).await {
        Ok(reg) => reg,
        Err(refused) => {
            // The registration could not finish (leader unreachable, the old session not
            // taken over, a newer connection won): CONNACK 3, 0x88 in MQTT 5, and nothing
            // of the client id is left registered here.
            info!(reason = %refused, "CONNECT refused: registration did not complete");
            let refused = Refused { code: ReasonCode::SERVER_UNAVAILABLE, cause: refused.to_string() };
            w.queue(&refused.connack());
            let _ = w.flush(&mut stream).await;
            handle.finish();
            return None;
        }
    };
    let version = accepted.version;
    let session_present = reg.session_present && !connect.clean_start;
    let mut session = Session::accept(
        ctx.broker.clone(),
        reg,
        connect,
        accepted,
        ctx.mqtt.clone(),
        spec.max_connection_lifetime,
        now(),
    );
    if let Some(authorizer) = &ctx.authorizer {
        session.require_authorization(authorizer.clone());
    }
    info!(version = version.level(), session_present, "client connected");
    Some(Serving { session, stream, w, rbuf, handle, ctx, shutdown, _tenancy: tenancy })
}

/// Reads CONNECT and asks the session rules whether to accept it; answers a refusal itself
/// and returns `None` then.
async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    rbuf: &mut BytesMut,
    w: &mut Writer,
    spec: &ListenerSpec,
    ctx: &ConnectionContext,
    identity: Option<String>,
) -> Option<(Box<Connect>, Accepted)> {
    let max_packet = connect::max_connect_size(&ctx.mqtt);
    // CONNECT must be the first packet [MQTT-3.1.0-1], within `mqtt.connect.timeout`.
    let first =
        tokio::time::timeout(ctx.mqtt.mqtt_connect_timeout, read_packet(stream, rbuf, ProtocolVersion::V4, max_packet))
            .await;
    let refused = match first {
        Err(_) => {
            info!("no CONNECT within mqtt.connect.timeout; closing");
            return None;
        }
        Ok(Err(ReadError::Decode(e))) => match connect::refusal_for(&e) {
            Some(refused) => refused,
            None => {
                info!(error = %e, "connection closed before CONNECT");
                return None;
            }
        },
        Ok(Err(e)) => {
            info!(error = %e, "connection closed before CONNECT");
            return None;
        }
        Ok(Ok(Packet::Connect(mut connect))) => {
            if let Some(name) = identity {
                connect.username = Some(name);
            }
            if let Some(v) = connect.protocol {
                w.version = v;
            }
            let rules = ListenerRules {
                name: &spec.name,
                allowed_protocol_versions: &spec.allowed_protocol_versions,
                allow_anonymous_override: spec.allow_anonymous_override,
            };
            match connect::admit(&connect, rules, &ctx.mqtt, &ctx.broker, || assigned_client_id(ctx)) {
                Ok(accepted) => {
                    Span::current().record("client_id", tracing::field::display(&accepted.client_id));
                    let refused =
                        if accepted.authenticate { authenticate(ctx, spec, &connect, &accepted).await } else { None };
                    match refused {
                        None => return Some((connect, accepted)),
                        Some(refused) => refused,
                    }
                }
                Err(refused) => {
                    Span::current().record("client_id", tracing::field::display(&connect.client_id));
                    info!(code = refused.code.0, cause = %refused.cause, "CONNECT refused");
                    w.queue(&refused.connack());
                    let _ = w.flush(stream).await;
                    return None;
                }
            }
        }
        Ok(Ok(other)) => {
            info!(packet = ?packet_name(&other), "first packet is not CONNECT [MQTT-3.1.0-1]; closing");
            return None;
        }
    };
    info!(code = refused.code.0, cause = %refused.cause, "CONNECT refused");
    w.queue(&refused.connack());
    let _ = w.flush(stream).await;
    None
}

/// Asks the authentication plugin about a client that must authenticate (anonymous access
/// is off for it); `None` lets it in. Without a plugin nobody gets in.
async fn authenticate(
    ctx: &ConnectionContext,
    spec: &ListenerSpec,
    connect: &Connect,
    accepted: &Accepted,
) -> Option<connect::Refused> {
    let Some(authorizer) = &ctx.authorizer else { return Some(connect::unauthenticated_refusal(connect)) };
    let who = Subject {
        mountpoint: spec.mountpoint.as_str().into(),
        client_id: accepted.client_id.as_str().into(),
        username: connect.username.as_deref().map(Into::into),
    };
    let intent = RegisterIntent {
        username: connect.username.clone(),
        password: connect.password.clone(),
        clean_start: connect.clean_start,
        version: accepted.version,
    };
    let verdict = tokio::time::timeout(ctx.mqtt.mqtt_connect_timeout, authorizer.authorize_register(&who, &intent));
    connect::register_refusal(verdict.await.ok())
}

impl<S: AsyncRead + AsyncWrite + Unpin> Serving<S> {
    /// Runs the session until the connection ends, and says why.
    ///
    /// One timer serves every deadline of the session: it is armed for the earliest one and
    /// moved only when a deadline earlier than the armed one appears; a deadline that moved
    /// later (keep-alive after every packet) is found out when the timer fires. Re-registering
    /// timers per packet would cost a timer-wheel update on every message.
    async fn serve(&mut self) -> End {
        let queue = self.session.slot().queue.clone();
        let mut throttled = false;
        let mut tx = Transmit::default();
        let timer = tokio::time::sleep_until(tokio::time::Instant::now());
        tokio::pin!(timer);
        // Whether the timer is set for a deadline not reached yet (`timer.deadline()`).
        let mut armed = false;
        // MQTT 5 clients are held to the Receive Maximum by the session, which disconnects
        // them past it [MQTT-3.3.4-9], so their connection keeps reading (their PUBACKs for
        // our deliveries among the rest); MQTT 3 has no such limit, so the connection stops
        // reading.
        let max_waiting = if self.session.version().is_v5() {
            MAX_WAITING_ACKS
        } else {
            self.session.incoming_window().clamp(1, MAX_WAITING_ACKS)
        };
        // Packets that came right behind CONNECT, read with it: a client need not wait for the
        // CONNACK (MQTT 3.1.1 section 3.1.4), and no further read may come to hand them over.
        if !self.rbuf.is_empty()
            && let Err(end) = self.session.handle_bytes(&mut self.rbuf, now())
        {
            return end;
        }
        release_if_empty(&mut self.rbuf);
        loop {
            // Deliveries stay in the queue while too much waits behind acknowledgements.
            let more = self.w.held.bytes() < MAX_HELD_BYTES && self.session.pump(now());
            self.session.wake_subscribers();
            self.session.take_transmit(&mut tx);
            // A client that stops reading must not keep its connection from being taken over
            // or shut down: the write gives way to a kick, and to WRITE_TIMEOUT. What was being
            // written stays in the session's in-flight state, saved at teardown and sent again.
            // Most rounds have nothing to write: no timer for them.
            let idle = tx.is_empty() && self.w.buf.is_empty() && self.w.held.is_empty();
            if !idle {
                let written = {
                    let write = self.w.write_transmit(&mut self.stream, &mut tx, &mut self.session);
                    tokio::pin!(write);
                    // Most writes finish at once, the socket having room: no timer for them. The
                    // others get a boxed one, so that no connection's future keeps room for it.
                    match poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await {
                        Poll::Ready(r) => r,
                        // The client is slow to read: the rest of the write, with its timer,
                        // waits in a box.
                        Poll::Pending => {
                            Box::pin(async {
                                tokio::select! {
                                    r = &mut write => r,
                                    () = tokio::time::sleep(WRITE_TIMEOUT) => Err(End::Gone(format!(
                                        "no write progress for {} s",
                                        WRITE_TIMEOUT.as_secs()
                                    ))),
                                    k = self.handle.kicked() => Err(End::Kicked(k)),
                                    () = self.shutdown.pulled() => Err(End::Kicked(Kick::Shutdown)),
                                }
                            })
                            .await
                        }
                    }
                };
                if let Err(end) = written {
                    return end;
                }
                // An authorization was answered: the packets read after it are handled now, and
                // what they produce is written before anything more is read.
                if self.session.resume_pending() {
                    if let Err(end) = self.session.resume(&mut self.rbuf, now()) {
                        return end;
                    }
                    release_if_empty(&mut self.rbuf);
                    continue;
                }
            }
            let at = now();
            let throttle = self.session.throttle(at);
            if throttle.is_some() && !throttled {
                self.ctx.broker.counters.rate_limited.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            throttled = throttle.is_some();
            if let Some(next) = self.session.poll_timeout(at).map(tokio::time::Instant::from_std)
                && (!armed || next < timer.deadline())
            {
                timer.as_mut().reset(next);
                armed = true;
            }
            // Publishes keep being read while their acknowledgements wait, up to the window;
            // nothing is read while an authorization is pending (the packets already read wait
            // for it).
            let read = throttle.is_none()
                && self.w.held.waiting() < max_waiting
                && self.w.held.bytes() < MAX_HELD_BYTES
                && !self.session.input_paused();
            tokio::select! {
                r = poll_fn(|cx| poll_read_some(&mut self.stream, &mut self.rbuf, cx)), if read => {
                    match r {
                        Ok(0) => return End::Gone("connection closed by client".into()),
                        Ok(_) => {}
                        // Bytes the transport refused (a WebSocket text frame or oversized
                        // frame, a bad TLS record): the client's fault, worth a log line.
                        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                            info!(error = %e, "connection closed: the client broke its transport's framing");
                            return End::Gone(format!("read failed: {e}"));
                        }
                        Err(e) => return End::Gone(format!("read failed: {e}")),
                    }
                    // One clock read per batch read from the socket, not per packet.
                    if let Err(end) = self.session.handle_bytes(&mut self.rbuf, now()) {
                        return end;
                    }
                    release_if_empty(&mut self.rbuf);
                }
                // Written at the top of the loop, with whatever settled along with it.
                () = front_settled(&mut self.w.held), if !self.w.held.is_empty() => {}
                _ = queue.notified() => {}
                // Messages still waiting: go round again, after letting other tasks (the
                // publishers filling the queue among them) and the other branches run.
                () = tokio::task::yield_now(), if more => {}
                _ = &mut timer, if armed => {
                    armed = false;
                    if let Err(close) = self.session.handle_timeout(now()) {
                        return End::Close(close);
                    }
                }
                k = self.handle.kicked() => return End::Kicked(k),
                () = self.shutdown.pulled() => return End::Kicked(Kick::Shutdown),
            }
        }
    }

    /// Tears the connection down as the session's [`crate::session::Farewell`] says: writes
    /// what may still go out and the server's DISCONNECT, hands the will to the broker and
    /// releases the session.
    async fn finish(self, end: End) {
        let Serving { mut session, mut stream, mut w, handle, ctx, .. } = self;
        let at = now();
        let farewell = session.finish(&end, at);
        // Answers to packets handled before the end still go out (e.g. PUBRECs before the one
        // publish that broke the window), in order: acknowledgements still waiting for their
        // publish to be taken are not sent, nor anything behind them, and the client resends
        // those publishes.
        session.wake_subscribers();
        let mut tx = Transmit::default();
        session.take_transmit(&mut tx);
        w.held.push(&mut tx);
        // The connection ends anyway: a refusal that closes it (MQTT 3) changes nothing.
        let _ = w.held.take_ready(&mut w.buf, &mut session, w.version);
        if let Some(disconnect) = &farewell.disconnect {
            w.queue(disconnect);
        }
        // Bounded: a peer that stopped reading must not hold the teardown.
        let _ = tokio::time::timeout(Duration::from_secs(1), w.flush(&mut stream)).await;
        let log = &farewell.cause;
        match &end {
            End::ClientDisconnect { .. } | End::Kicked(_) => info!("{log}"),
            End::Close(c) => warn!(code = c.reason.0, "closing connection: {log}"),
            End::Gone(_) => debug!("{log}"),
        }
        let slot = session.slot().clone();
        // The will goes out before the session is released, so that whoever observes the
        // session gone (a takeover, a test) also observes the will published.
        if let Some((will, delay)) = farewell.will {
            ctx.broker.schedule_will(will, delay, slot.clone(), farewell.generation, at);
        }
        ctx.broker.disconnected(&slot, handle.id, session.into_inflight(), farewell.session_expiry, at);
        handle.finish();
    }
}

/// The oldest held request settling. Boxed, and only while one waits: the select that waits
/// for it is in every connection's future, idle ones included.
fn front_settled(held: &mut Held) -> impl Future<Output = ()> + Send + '_ {
    let waiting = (!held.is_empty()).then(|| Box::pin(held.front_settled()));
    async move {
        match waiting {
            Some(front) => front.await,
            None => std::future::pending().await,
        }
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

async fn read_packet<S: AsyncRead + Unpin>(
    rd: &mut S,
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

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Mutex;

    use tokio::io::duplex;
    use tokio::sync::Notify;
    use tokio::sync::watch;
    use vmq_config::{MqttConfig, Transport};
    use vmq_mqtt::{PacketId, Publish, QoS};
    use vmq_storage::{Durability, MemStore, MessageStore, StoreMessageStore};

    use super::*;
    use crate::authorize::{Answer, Authorization, Authorizer, PublishIntent, Subject, SubscribeIntent};
    use crate::broker::{Broker, BrokerSettings};

    /// Refuses topics under `secret/`, once the test opens the gate; records the questions.
    #[derive(Debug)]
    struct Gate {
        open: watch::Sender<bool>,
        asked: Mutex<Vec<String>>,
        asking: Notify,
    }

    impl Authorizer for Gate {
        fn authorize_publish(&self, _: &Subject, publish: &PublishIntent) -> Answer<Authorization> {
            self.asked.lock().expect("not poisoned").push(publish.topic.to_string());
            self.asking.notify_one();
            let (mut open, secret) = (self.open.subscribe(), publish.topic.starts_with("secret/"));
            Box::pin(async move {
                let _ = open.wait_for(|open| *open).await;
                if secret { Authorization::NOT_AUTHORIZED } else { Authorization::Allow }
            })
        }

        fn authorize_subscribe(&self, _: &Subject, filters: &[SubscribeIntent]) -> Answer<Vec<Authorization>> {
            Box::pin(std::future::ready(vec![Authorization::Allow; filters.len()]))
        }
    }

    /// An MQTT 5 clean-start CONNECT of client `c`.
    fn v5_connect() -> Packet {
        let connect = Connect {
            protocol: Some(ProtocolVersion::V5),
            client_id: "c".into(),
            clean_start: true,
            ..Connect::default()
        };
        Packet::Connect(Box::new(connect))
    }

    fn publish(topic: &str, id: u16) -> Packet {
        Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            topic: topic.into(),
            packet_id: Some(PacketId(id)),
            payload: bytes::Bytes::from_static(b"m"),
            ..Publish::default()
        })
    }

    /// What a test connection runs with: an in-memory broker, `authorizer`, and a TCP
    /// listener's settings. Without an authorizer anonymous clients are allowed; with one,
    /// anonymous access is off, so that it is asked about CONNECT too (as VerneMQ asks its
    /// plugins only then).
    fn context(authorizer: Option<Arc<dyn Authorizer>>) -> (Arc<ConnectionContext>, Arc<ListenerSpec>) {
        let store = StoreMessageStore::open(Arc::new(MemStore::new()), Durability::Buffered).unwrap();
        let broker = Broker::new(BrokerSettings::default(), Arc::new(store) as Arc<dyn MessageStore>);
        let mqtt = Arc::new(MqttConfig { allow_anonymous: authorizer.is_none(), ..MqttConfig::default() });
        let addr: SocketAddr = "127.0.0.1:1883".parse().unwrap();
        (
            Arc::new(ConnectionContext { broker, mqtt, authorizer }),
            Arc::new(ListenerSpec::new(Transport::Tcp, "test", addr.into())),
        )
    }

    /// Runs a connection of `ctx` over an in-memory stream; returns the client's end.
    fn serve_in_memory(
        ctx: Arc<ConnectionContext>,
        spec: Arc<ListenerSpec>,
    ) -> (tokio::io::DuplexStream, tokio::task::JoinHandle<()>) {
        let (client, server) = duplex(64 * 1024);
        let tenancy = Tenancy::detached(ctx.broker.clone());
        let peer = Peer::Local(Arc::from("in-memory"));
        (client, tokio::spawn(run(server, peer, None, spec, ctx, Arc::new(KillSwitch::default()), tenancy)))
    }

    #[tokio::test]
    async fn a_connection_with_an_authorizer_answers_in_packet_order_once_the_verdicts_came() {
        let gate = Arc::new(Gate { open: watch::channel(false).0, asked: Mutex::default(), asking: Notify::new() });
        let (ctx, spec) = context(Some(gate.clone()));
        let (mut client, served) = serve_in_memory(ctx, spec);

        let mut out = BytesMut::new();
        for p in [v5_connect(), publish("secret/a", 1), publish("open/b", 2), Packet::PingReq] {
            mqtt::encode(&p, ProtocolVersion::V5, &mut out).unwrap();
        }
        client.write_all(&out).await.unwrap();
        let mut rbuf = BytesMut::new();
        let first = read_packet(&mut client, &mut rbuf, ProtocolVersion::V5, usize::MAX).await.unwrap();
        // The publishes came with CONNECT, in one write: nothing else is read from now on.
        assert!(matches!(first, Packet::ConnAck(_)), "{first:?}");
        tokio::time::timeout(Duration::from_secs(30), gate.asking.notified()).await.expect("asked");
        assert_eq!(*gate.asked.lock().unwrap(), ["secret/a"], "the second publish waits for the first one's verdict");

        gate.open.send_replace(true);
        let mut got = Vec::new();
        for _ in 0..3 {
            // Bounded only so that a regression fails rather than hangs.
            let next = read_packet(&mut client, &mut rbuf, ProtocolVersion::V5, usize::MAX);
            got.push(tokio::time::timeout(Duration::from_secs(30), next).await.expect("answered").unwrap());
        }
        let codes: Vec<_> = got
            .iter()
            .map(|p| match p {
                Packet::PubAck(r) => (r.packet_id.0, r.code),
                Packet::PingResp => (0, ReasonCode::SUCCESS),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            codes,
            [(1, ReasonCode::NOT_AUTHORIZED), (2, ReasonCode::NO_MATCHING_SUBSCRIBERS), (0, ReasonCode::SUCCESS)]
        );
        assert_eq!(*gate.asked.lock().unwrap(), ["secret/a", "open/b"]);
        drop(client);
        served.await.unwrap();
    }

    /// Never answers a publish or subscribe question.
    #[derive(Debug)]
    struct Silent;

    impl Authorizer for Silent {
        fn authorize_publish(&self, _: &Subject, _: &PublishIntent) -> Answer<Authorization> {
            Box::pin(std::future::pending())
        }

        fn authorize_subscribe(&self, _: &Subject, _: &[SubscribeIntent]) -> Answer<Vec<Authorization>> {
            Box::pin(std::future::pending())
        }
    }

    /// An authorizer that never answers must not hold a connection for good (its input is
    /// paused and its keep-alive held while it waits): past `mqtt.connect.timeout` the publish
    /// is refused, and the connection goes on.
    #[tokio::test(start_paused = true)]
    async fn an_authorization_that_never_comes_is_a_refusal_after_the_connect_timeout() {
        let (ctx, spec) = context(Some(Arc::new(Silent)));
        let limit = ctx.mqtt.mqtt_connect_timeout;
        let (mut client, served) = serve_in_memory(ctx, spec);
        let mut out = BytesMut::new();
        for p in [v5_connect(), publish("any/topic", 1), Packet::PingReq] {
            mqtt::encode(&p, ProtocolVersion::V5, &mut out).unwrap();
        }
        client.write_all(&out).await.unwrap();
        let mut rbuf = BytesMut::new();
        let first = read_packet(&mut client, &mut rbuf, ProtocolVersion::V5, usize::MAX).await.unwrap();
        assert!(matches!(first, Packet::ConnAck(_)), "{first:?}");
        let asked = tokio::time::Instant::now();
        // Bounded so that a regression fails rather than hangs.
        let answer = read_packet(&mut client, &mut rbuf, ProtocolVersion::V5, usize::MAX);
        let answer = tokio::time::timeout(limit * 2, answer).await.expect("answered within twice the limit").unwrap();
        match answer {
            Packet::PubAck(r) => assert_eq!((r.packet_id.0, r.code), (1, ReasonCode::NOT_AUTHORIZED)),
            other => panic!("{other:?}"),
        }
        assert!(asked.elapsed() >= limit, "refused after {:?}, before the limit {limit:?}", asked.elapsed());
        let next = read_packet(&mut client, &mut rbuf, ProtocolVersion::V5, usize::MAX).await.unwrap();
        assert!(matches!(next, Packet::PingResp), "the connection goes on: {next:?}");
        drop(client);
        served.await.unwrap();
    }

    /// Refuses the registration of user `mallory`, allows everyone else.
    #[derive(Debug)]
    struct Doorman;

    impl Authorizer for Doorman {
        fn authorize_register(&self, _: &Subject, register: &RegisterIntent) -> Answer<Authorization> {
            let refused = register.username.as_deref() == Some("mallory");
            Box::pin(async move { if refused { Authorization::NOT_AUTHORIZED } else { Authorization::Allow } })
        }

        fn authorize_publish(&self, _: &Subject, _: &PublishIntent) -> Answer<Authorization> {
            Box::pin(std::future::ready(Authorization::Allow))
        }

        fn authorize_subscribe(&self, _: &Subject, filters: &[SubscribeIntent]) -> Answer<Vec<Authorization>> {
            Box::pin(std::future::ready(vec![Authorization::Allow; filters.len()]))
        }
    }

    /// What a client sending `connect` is answered by a node with the [`Doorman`].
    async fn connack_from_doorman(connect: Connect) -> Packet {
        let (ctx, spec) = context(Some(Arc::new(Doorman)));
        let (mut client, served) = serve_in_memory(ctx, spec);
        let version = connect.protocol.unwrap_or(ProtocolVersion::V4);
        let mut out = BytesMut::new();
        mqtt::encode(&Packet::Connect(Box::new(connect)), version, &mut out).unwrap();
        client.write_all(&out).await.unwrap();
        let mut rbuf = BytesMut::new();
        let next = read_packet(&mut client, &mut rbuf, version, usize::MAX);
        let answer = tokio::time::timeout(Duration::from_secs(30), next).await.expect("answered").unwrap();
        drop(client);
        served.await.unwrap();
        answer
    }

    #[tokio::test]
    async fn a_registration_the_authorizer_refuses_gets_not_authorized_in_both_protocols() {
        for version in [ProtocolVersion::V4, ProtocolVersion::V5] {
            let connect = |user: &str| Connect {
                protocol: Some(version),
                client_id: format!("c-{user}"),
                clean_start: true,
                username: Some(user.into()),
                password: Some(bytes::Bytes::from_static(b"secret")),
                ..Connect::default()
            };
            match connack_from_doorman(connect("mallory")).await {
                // MQTT 3.1.1 says it with return code 5, which decodes to the same reason code.
                Packet::ConnAck(ack) => assert_eq!(ack.code, ReasonCode::NOT_AUTHORIZED, "{version:?}"),
                other => panic!("{version:?}: {other:?}"),
            }
            match connack_from_doorman(connect("alice")).await {
                Packet::ConnAck(ack) => assert_eq!(ack.code, ReasonCode::SUCCESS, "{version:?}"),
                other => panic!("{version:?}: {other:?}"),
            }
        }
    }

    /// Every connection holds its task's future for its whole life, idle ones included: the
    /// figure behind the RSS per idle connection the README states. A local added across an
    /// await of the serving loop, or a part passed twice, shows here first.
    #[tokio::test]
    async fn a_tcp_connection_future_stays_small() {
        let (ctx, _) = context(None);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spec = Arc::new(ListenerSpec::new(Transport::Tcp, "test", addr.into()));
        let stop = Arc::new(KillSwitch::default());

        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let mut out = BytesMut::new();
        let connect = Connect { client_id: "c".into(), clean_start: true, ..Connect::default() };
        mqtt::encode(&Packet::Connect(Box::new(connect)), ProtocolVersion::V4, &mut out).unwrap();
        client.write_all(&out).await.unwrap();
        let tenancy = Tenancy::detached(ctx.broker.clone());
        let opening = Opening {
            stream: server,
            identity: None,
            spec: spec.clone(),
            ctx: ctx.clone(),
            shutdown: stop.clone(),
            tenancy,
        };
        let mut serving = open(Box::new(opening)).await.expect("CONNECT accepted");
        let serve = std::mem::size_of_val(&serving.serve());
        let served = std::mem::size_of_val(&serving);

        let _second = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let tenancy = Tenancy::detached(ctx.broker.clone());
        let future = std::mem::size_of_val(&run(server, Peer::Inet(addr), None, spec, ctx, stop, tenancy));
        eprintln!("connection future: {future} B: the served connection {served} B, its serving loop {serve} B");
        assert!(future <= 1600, "the connection future grew to {future} B (served {served} B, loop {serve} B)");
    }
}
