//! The publisher and subscriber loops every throughput scenario is built from.
//!
//! One tokio task per connection. A task never blocks on a full socket: it waits for
//! `readable()`/`writable()` and uses non-blocking reads and writes, so a publisher keeps reading
//! acknowledgements while its writes are stalled and the broker can never deadlock against it.
//! Frames are encoded in batches straight into the connection's write buffer and written with
//! one syscall; a read decodes every frame it brought in, answering with acknowledgements in one
//! write. Timestamps are taken once per batch, not per message.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use hdrhistogram::Histogram;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

use super::payload::Header;
use super::{Params, SETUP_TIMEOUT};
use crate::accounting::{PublisherId, PublisherLog, SubscriberLog};
use crate::mqtt::Connection;
use crate::mqtt::codec::{self, Ack, Connect, Packet, PacketId, QoS};

/// Messages encoded per batch before the socket is written.
const BATCH: usize = 256;
/// A publisher stops encoding while this much is unwritten: TCP backpressure reaches it.
const WBUF_HIGH: usize = 256 * 1024;
/// Packet ids cycle through 1..=ID_SPACE.
const ID_SPACE: u64 = 65_535;

/// Live totals across all tasks, for the progress line and for knowing when to stop.
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages written.
    pub sent: AtomicU64,
    /// Messages acknowledged by the broker.
    pub acked: AtomicU64,
    /// Deliveries received, duplicates included.
    pub delivered: AtomicU64,
}

/// One publisher of a plan.
#[derive(Debug, Clone)]
pub struct PubSpec {
    /// Id written into its payloads.
    pub id: PublisherId,
    /// Broker to connect to.
    pub addr: SocketAddr,
    /// Topic it publishes to.
    pub topic: String,
    /// Its own rate in msg/s, if paced.
    pub rate: Option<f64>,
    /// Stop after this many messages.
    pub max_messages: u64,
}

/// One subscriber of a plan.
#[derive(Debug, Clone)]
pub struct SubSpec {
    /// Broker to connect to.
    pub addr: SocketAddr,
    /// Its filter.
    pub filter: String,
    /// Client id (stable across reconnects for persistent sessions).
    pub client_id: String,
    /// Persistent session (clean session off, session expiry set in MQTT 5).
    pub persistent: bool,
}

/// What a subscriber task hands back.
#[derive(Debug)]
pub struct SubOutcome {
    /// Its deliveries.
    pub log: SubscriberLog,
    /// End-to-end latency in nanoseconds.
    pub latency: Histogram<u64>,
    /// When its last delivery arrived.
    pub last_delivery: Option<Instant>,
}

/// A latency histogram in nanoseconds, 1 ns to 100 s at three significant digits.
pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts (low >= 1, high >= 2 * low, sigfig <= 5).
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("constant histogram bounds are valid")
}

/// Connects a client with the run's protocol version.
pub async fn connect(
    p: &Params,
    addr: SocketAddr,
    client_id: &str,
    persistent: bool,
) -> anyhow::Result<(Connection, bool)> {
    let c = Connect {
        client_id,
        clean_start: !persistent,
        keep_alive: 600,
        session_expiry: if persistent { 3600 } else { 0 },
    };
    Connection::connect(addr, p.version, &c, SETUP_TIMEOUT)
        .await
        .with_context(|| format!("connecting {client_id} to {addr}"))
}

/// Connects and subscribes every subscriber, concurrently.
pub async fn connect_subscribers(p: &Params, subs: &[SubSpec]) -> anyhow::Result<Vec<Connection>> {
    let mut tasks = Vec::new();
    for s in subs {
        let (p, s) = (p.clone(), s.clone());
        tasks.push(tokio::spawn(async move {
            let (mut c, _) = connect(&p, s.addr, &s.client_id, s.persistent).await?;
            c.subscribe(&s.filter, p.qos, SETUP_TIMEOUT).await.with_context(|| format!("subscribing {}", s.filter))?;
            anyhow::Ok(c)
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await??);
    }
    Ok(out)
}

/// Connects every publisher, concurrently.
pub async fn connect_publishers(p: &Params, pubs: &[PubSpec]) -> anyhow::Result<Vec<Connection>> {
    let mut tasks = Vec::new();
    for s in pubs {
        let (p, s) = (p.clone(), s.clone());
        let id = format!("vmqb-{}-p{}", p.run_tag, s.id.0);
        tasks.push(tokio::spawn(async move { anyhow::Ok(connect(&p, s.addr, &id, false).await?.0) }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await??);
    }
    Ok(out)
}

/// Runs one [`run_publisher`] task per connection, all with the same deadlines and counters,
/// and returns their logs in connection order.
pub async fn run_publishers(
    p: &Params,
    conns: Vec<Connection>,
    specs: &[PubSpec],
    epoch: Instant,
    deadline: Instant,
    hard_deadline: Instant,
    counters: &Arc<Counters>,
) -> anyhow::Result<Vec<PublisherLog>> {
    let tasks: Vec<_> = conns
        .into_iter()
        .zip(specs.iter().cloned())
        .map(|(c, s)| tokio::spawn(run_publisher(c, s, p.clone(), epoch, deadline, hard_deadline, counters.clone())))
        .collect();
    let mut logs = Vec::with_capacity(tasks.len());
    for t in tasks {
        logs.push(t.await??);
    }
    Ok(logs)
}

/// Publishes until `deadline` or `max_messages`, then waits for outstanding acknowledgements
/// until `hard_deadline`. QoS 1/2 keep at most `p.inflight` messages unacknowledged.
pub async fn run_publisher(
    mut conn: Connection,
    spec: PubSpec,
    p: Params,
    epoch: Instant,
    deadline: Instant,
    hard_deadline: Instant,
    counters: Arc<Counters>,
) -> anyhow::Result<PublisherLog> {
    let mut log = PublisherLog::new(spec.id);
    let qos = p.qos;
    let topic = spec.topic.as_bytes();
    let window = match (qos, conn.receive_maximum()) {
        (QoS::AtMostOnce, _) => usize::MAX,
        // Exceeding the broker's Receive Maximum is a protocol error [MQTT-3.3.4-9].
        (_, Some(max)) => p.inflight.min(usize::from(max.max(1))),
        (_, None) => p.inflight,
    };
    // seq_of[id] is the sequence in flight under packet id `id`, u64::MAX when free.
    let mut seq_of = vec![u64::MAX; ID_SPACE as usize + 1];
    let mut inflight = 0usize;
    loop {
        let now = Instant::now();
        let sending = now < deadline && log.sent() < spec.max_messages;
        let mut budget = BATCH as u64;
        if let Some(rate) = spec.rate {
            let due = (rate * now.duration_since(epoch).as_secs_f64()) as u64;
            budget = budget.min(due.saturating_sub(log.sent()));
        }
        if sending && budget > 0 {
            let sent_at_ns = now.duration_since(epoch).as_nanos() as u64;
            let before = log.sent();
            while budget > 0 && inflight < window && conn.pending_write() < WBUF_HIGH && log.sent() < spec.max_messages
            {
                let seq = log.sent();
                let id = if qos == QoS::AtMostOnce {
                    None
                } else {
                    let id = (seq % ID_SPACE + 1) as usize;
                    if seq_of[id] != u64::MAX {
                        break;
                    }
                    seq_of[id] = seq;
                    inflight += 1;
                    Some(PacketId(id as u16))
                };
                log.handle_sent();
                let h = Header { publisher: spec.id, seq, sent_at_ns }.encode();
                codec::encode_publish(conn.wbuf(), p.version, qos, id, topic, &h, p.payload);
                budget -= 1;
            }
            counters.sent.fetch_add(log.sent() - before, Ordering::Relaxed);
        }
        conn.try_flush().context("publisher write")?;
        if qos != QoS::AtMostOnce && inflight > 0 {
            if !conn.try_fill().context("publisher read")? {
                anyhow::bail!("broker closed publisher {} connection", spec.id.0);
            }
            let before = log.acked();
            conn.drain(|pkt, wbuf| {
                let (id, done) = match pkt {
                    Packet::PubAck(id) if qos == QoS::AtLeastOnce => (id, true),
                    Packet::PubRec(id) if qos == QoS::ExactlyOnce => {
                        codec::encode_ack(wbuf, Ack::PubRel, id);
                        (id, false)
                    }
                    Packet::PubComp(id) if qos == QoS::ExactlyOnce => (id, true),
                    _ => return,
                };
                let slot = &mut seq_of[usize::from(id.0)];
                if done && *slot != u64::MAX {
                    log.handle_acked(*slot);
                    *slot = u64::MAX;
                    inflight -= 1;
                }
            })?;
            counters.acked.fetch_add(log.acked() - before, Ordering::Relaxed);
        }
        let sending = Instant::now() < deadline && log.sent() < spec.max_messages;
        if !sending && inflight == 0 && conn.pending_write() == 0 {
            break;
        }
        if Instant::now() >= hard_deadline {
            break;
        }
        let room = sending && inflight < window && conn.pending_write() < WBUF_HIGH;
        if room && spec.rate.is_none() && conn.pending_write() == 0 {
            // Nothing to wait for: let the other connections on this worker run, then go on.
            tokio::task::yield_now().await;
            continue;
        }
        let wake = match spec.rate {
            Some(rate) if room => epoch + Duration::from_secs_f64((log.sent() + 1) as f64 / rate),
            _ if sending => deadline,
            _ => hard_deadline,
        };
        let want_read = qos != QoS::AtMostOnce && inflight > 0;
        let want_write = conn.pending_write() > 0;
        tokio::select! {
            r = conn.stream.readable(), if want_read => r?,
            r = conn.stream.writable(), if want_write => r?,
            () = sleep_until(wake.min(hard_deadline)) => {}
        }
    }
    conn.disconnect().await;
    Ok(log)
}

/// Receives and acknowledges deliveries until `stop` turns true or `hard_deadline`.
pub async fn run_subscriber(
    mut conn: Connection,
    epoch: Instant,
    mut stop: watch::Receiver<bool>,
    hard_deadline: Instant,
    counters: Arc<Counters>,
) -> anyhow::Result<SubOutcome> {
    let mut out = SubOutcome { log: SubscriberLog::new(), latency: new_histogram(), last_delivery: None };
    // Frames may already be buffered (a persistent session's queue arrives right behind its
    // CONNACK), so the loop handles what it has before it waits.
    loop {
        let now = Instant::now();
        let now_ns = now.duration_since(epoch).as_nanos() as u64;
        let before = out.log.delivered();
        let (log, hist) = (&mut out.log, &mut out.latency);
        conn.drain(|pkt, wbuf| match pkt {
            Packet::Publish { qos, packet_id, payload, .. } => {
                match Header::decode(payload) {
                    Some(h) => {
                        log.handle_delivery(h.publisher, h.seq);
                        hist.saturating_record(now_ns.saturating_sub(h.sent_at_ns).max(1));
                    }
                    None => log.handle_malformed(),
                }
                match (qos, packet_id) {
                    (QoS::AtLeastOnce, Some(id)) => codec::encode_ack(wbuf, Ack::PubAck, id),
                    (QoS::ExactlyOnce, Some(id)) => codec::encode_ack(wbuf, Ack::PubRec, id),
                    _ => {}
                }
            }
            Packet::PubRel(id) => codec::encode_ack(wbuf, Ack::PubComp, id),
            _ => {}
        })?;
        let got = out.log.delivered() - before;
        if got > 0 {
            counters.delivered.fetch_add(got, Ordering::Relaxed);
            out.last_delivery = Some(now);
        }
        conn.try_flush().context("subscriber write")?;
        let want_write = conn.pending_write() > 0;
        tokio::select! {
            r = conn.stream.readable() => r?,
            r = conn.stream.writable(), if want_write => r?,
            _ = stop.wait_for(|s| *s) => break,
            () = sleep_until(hard_deadline) => break,
        }
        if !conn.try_fill().context("subscriber read")? {
            anyhow::bail!("broker closed a subscriber connection");
        }
    }
    // Acknowledgements still buffered belong to messages already counted; send them so a
    // persistent session does not redeliver them.
    let _ = tokio::time::timeout(Duration::from_secs(1), conn.flush()).await;
    conn.disconnect().await;
    Ok(out)
}

/// Prints a progress line every second until `stop` turns true.
pub async fn progress(label: String, epoch: Instant, counters: Arc<Counters>, mut stop: watch::Receiver<bool>) {
    let mut last = (0u64, 0u64, 0u64);
    let mut tick = tokio::time::interval_at(epoch + Duration::from_secs(1), Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = (
            counters.sent.load(Ordering::Relaxed),
            counters.acked.load(Ordering::Relaxed),
            counters.delivered.load(Ordering::Relaxed),
        );
        eprintln!(
            "[{label} {:>5.1}s] sent {} ({}/s)  acked {} ({}/s)  delivered {} ({}/s)",
            epoch.elapsed().as_secs_f64(),
            now.0,
            now.0 - last.0,
            now.1,
            now.1 - last.1,
            now.2,
            now.2 - last.2
        );
        last = now;
    }
}

/// How waiting for the last deliveries ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DrainEnd {
    /// Every expected delivery arrived.
    Complete,
    /// Nothing arrived for the quiet period: what is missing is not coming.
    Quiet,
    /// The hard deadline passed while deliveries were still arriving: missing messages may
    /// still have been queued in the broker.
    Deadline,
}

/// Waits until `expected` deliveries arrived, nothing arrived for `quiet`, or `hard_deadline`.
pub async fn await_deliveries(counters: &Counters, expected: u64, quiet: Duration, hard_deadline: Instant) -> DrainEnd {
    let mut last = counters.delivered.load(Ordering::Relaxed);
    let mut last_change = Instant::now();
    loop {
        let now = Instant::now();
        let d = counters.delivered.load(Ordering::Relaxed);
        if d >= expected {
            return DrainEnd::Complete;
        }
        if now >= hard_deadline {
            return DrainEnd::Deadline;
        }
        if d != last {
            last = d;
            last_change = now;
        } else if now.duration_since(last_change) >= quiet {
            return DrainEnd::Quiet;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
