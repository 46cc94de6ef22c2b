//! `queue`: persistent QoS 1 and QoS 2 subscribers spread over the nodes, publishers on every
//! node with unique sequence numbers, everyone reconnecting to a random node after a failure.
//!
//! Per node `i`: subscriber `q1-s{i}` holds `jq/1/#` at QoS 1 and `q2-s{i}` holds `jq/2/#` at
//! QoS 2, both persistent sessions (clean session off) homed on node `i`; publisher `p1-n{i}`
//! publishes QoS 1 to `jq/1/p1-n{i}` and `p2-n{i}` QoS 2 to `jq/2/p2-n{i}`. A QoS 0 publisher
//! `p0-n1` on `jq/1/p0-n1` shows QoS 0 loss, which VerneMQ allows. The payload is
//! `"{publisher} {seq}"`. A QoS 2 publish counts as acknowledged at PUBREC, when the broker
//! has taken ownership of it ([MQTT-4.3.3]).

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{Ctx, Phase, RECONNECT_PAUSE, REQUEST_TIMEOUT, SILENCE_TIMEOUT};
use crate::harness::client::{Client, Incoming};
use crate::harness::cluster::mqtt_addr;
use crate::harness::rng::Rng;
use crate::history::Event;
use crate::mqtt::codec::Ack;
use crate::mqtt::{PacketId, QoS};

/// In-flight window per publisher.
const WINDOW: usize = 10;
/// Time given to the first subscriptions to replicate before publishing starts.
const REPLICATION: Duration = Duration::from_secs(1);
/// How long subscribers wait for more deliveries once publishing stopped.
const DRAIN_IDLE: Duration = Duration::from_secs(5);

/// Starts every subscriber and publisher of the workload.
pub fn spawn(ctx: &Ctx, tasks: &mut JoinSet<()>) {
    for i in 1..=ctx.nodes {
        for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let q = qos.as_u8();
            tasks.spawn(subscriber(ctx.clone(), format!("q{q}-s{i}"), i, qos));
            tasks.spawn(publisher(ctx.clone(), format!("p{q}-n{i}"), i, qos));
        }
    }
    tasks.spawn(publisher(ctx.clone(), "p0-n1".into(), 1, QoS::AtMostOnce));
}

/// The payload of a message: publisher name and sequence number.
pub fn parse_payload(payload: &[u8]) -> Option<(String, u64)> {
    let text = std::str::from_utf8(payload).ok()?;
    let (name, seq) = text.split_once(' ')?;
    Some((name.to_owned(), seq.parse().ok()?))
}

fn stream_id(name: &str) -> u64 {
    name.bytes().fold(0u64, |h, b| h.wrapping_mul(131).wrapping_add(u64::from(b)))
}

async fn subscriber(mut ctx: Ctx, name: String, home: usize, qos: QoS) {
    let mut rng = Rng::new(ctx.seed, stream_id(&name));
    let filter = format!("jq/{}/#", qos.as_u8());
    // QoS 2 packet ids we sent PUBREC for and whose PUBREL has not come: a PUBLISH with one of
    // these ids is the same message again, not a new delivery ([MQTT-4.3.3-9]).
    let mut awaiting_rel: HashSet<u16> = HashSet::new();
    let mut attempt = 0u32;
    let mut conn_no = 0u32;
    let mut subscribed_once = false;
    while ctx.phase() < Phase::End {
        let node = if attempt == 0 { home } else { rng.node(ctx.nodes) };
        attempt += 1;
        conn_no += 1;
        let conn = format!("{name}#{conn_no}");
        let (mut client, present) = match Client::connect(mqtt_addr(node), &name, false, REQUEST_TIMEOUT).await {
            Ok(c) => c,
            Err(e) => {
                record_connect(&ctx, &name, &conn, node, Err(e.to_string()));
                tokio::time::sleep(RECONNECT_PAUSE).await;
                continue;
            }
        };
        record_connect(&ctx, &name, &conn, node, Ok(present));
        if !present {
            awaiting_rel.clear();
        }
        let result = serve_subscriber(
            &mut ctx,
            &mut client,
            &name,
            node,
            &filter,
            qos,
            !present,
            &mut awaiting_rel,
            &mut subscribed_once,
        )
        .await;
        let reason = match result {
            Ok(()) => {
                client.disconnect().await;
                "end of run".to_owned()
            }
            Err(e) => e,
        };
        ctx.closed(&name, conn, reason, Phase::End).await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve_subscriber(
    ctx: &mut Ctx,
    client: &mut Client,
    name: &str,
    node: usize,
    filter: &str,
    qos: QoS,
    subscribe: bool,
    awaiting_rel: &mut HashSet<u16>,
    subscribed_once: &mut bool,
) -> Result<(), String> {
    let mut suback: Option<(PacketId, Instant)> = None;
    if subscribe {
        let id = client.subscribe(filter, qos).await.map_err(|e| e.to_string())?;
        suback = Some((id, Instant::now() + REQUEST_TIMEOUT));
    }
    let mut last_heard = Instant::now();
    let mut ping_sent: Option<Instant> = None;
    let mut last_delivery = Instant::now();
    loop {
        let phase = ctx.phase();
        if phase >= Phase::End {
            return Ok(());
        }
        if phase >= Phase::Settle && last_delivery.elapsed() > DRAIN_IDLE && suback.is_none() {
            // Drained: nothing new for a while after publishing stopped.
            ctx.until(Phase::End).await;
            return Ok(());
        }
        if let Some((_, deadline)) = suback
            && Instant::now() > deadline
        {
            return Err("no SUBACK".into());
        }
        if last_heard.elapsed() > SILENCE_TIMEOUT {
            return Err("broker silent (no PINGRESP)".into());
        }
        if ping_sent.is_none() && last_heard.elapsed() > Duration::from_secs(3) {
            client.ping().await.map_err(|e| e.to_string())?;
            ping_sent = Some(Instant::now());
        }
        let p = match client.next(Instant::now() + Duration::from_millis(500)).await {
            Ok(Some(p)) => p,
            Ok(None) => continue,
            Err(e) => return Err(e.to_string()),
        };
        last_heard = Instant::now();
        ping_sent = None;
        match p {
            Incoming::SubAck(id, code) if suback.is_some_and(|(want, _)| want == id) => {
                if code >= 0x80 {
                    return Err(format!("SUBACK refused ({code:#x})"));
                }
                suback = None;
                if !*subscribed_once {
                    *subscribed_once = true;
                    ctx.subscribed.fetch_add(1, Ordering::Relaxed);
                }
                ctx.history.record(Event::Subscribed {
                    client: name.to_owned(),
                    node,
                    topic: filter.to_owned(),
                    qos: code,
                });
            }
            Incoming::Publish { dup, qos: q, packet_id, payload, .. } => {
                let repeat = q == QoS::ExactlyOnce && packet_id.is_some_and(|id| !awaiting_rel.insert(id.0));
                if !repeat {
                    last_delivery = Instant::now();
                    if let Some((publisher, seq)) = parse_payload(&payload) {
                        ctx.history.record(Event::Deliver {
                            subscriber: name.to_owned(),
                            publisher,
                            seq,
                            qos: q.as_u8(),
                            dup,
                        });
                    }
                }
                match (q, packet_id) {
                    (QoS::AtLeastOnce, Some(id)) => client.ack(Ack::PubAck, id).await,
                    (QoS::ExactlyOnce, Some(id)) => client.ack(Ack::PubRec, id).await,
                    _ => Ok(()),
                }
                .map_err(|e| e.to_string())?;
            }
            Incoming::PubRel(id) => {
                awaiting_rel.remove(&id.0);
                client.ack(Ack::PubComp, id).await.map_err(|e| e.to_string())?;
            }
            _ => {}
        }
    }
}

fn record_connect(ctx: &Ctx, client: &str, conn: &str, node: usize, r: Result<bool, String>) {
    ctx.history.record(Event::Connect {
        client: client.to_owned(),
        conn: conn.to_owned(),
        node,
        ok: r.is_ok(),
        session_present: *r.as_ref().unwrap_or(&false),
        error: r.err(),
    });
}

/// Publishing starts once every subscriber has its first SUBACK and the subscriptions had
/// [`REPLICATION`] to reach the other nodes, so that the first messages do not race them.
async fn wait_for_subscribers(ctx: &Ctx) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let all = 2 * ctx.nodes;
    while ctx.subscribed.load(Ordering::Relaxed) < all && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(REPLICATION).await;
}

async fn publisher(ctx: Ctx, name: String, home: usize, qos: QoS) {
    let mut rng = Rng::new(ctx.seed, stream_id(&name));
    let topic = format!("jq/{}/{name}", qos.as_u8().max(1));
    let interval = Duration::from_secs_f64(1.0 / f64::from(ctx.rate.max(1)));
    let mut seq = 0u64;
    let mut epoch = 0u32;
    wait_for_subscribers(&ctx).await;
    while ctx.phase() < Phase::Settle {
        let node = if epoch == 0 { home } else { rng.node(ctx.nodes) };
        epoch += 1;
        let conn = format!("{name}#{epoch}");
        let mut client = match Client::connect(mqtt_addr(node), &name, true, REQUEST_TIMEOUT).await {
            Ok((c, _)) => c,
            Err(e) => {
                record_connect(&ctx, &name, &conn, node, Err(e.to_string()));
                tokio::time::sleep(RECONNECT_PAUSE).await;
                continue;
            }
        };
        record_connect(&ctx, &name, &conn, node, Ok(false));
        let reason = match publish_loop(&ctx, &mut client, &name, &topic, node, epoch, qos, interval, &mut seq).await {
            Ok(()) => {
                client.disconnect().await;
                "end of run".to_owned()
            }
            Err(e) => e,
        };
        ctx.closed(&name, conn, reason, Phase::Settle).await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn publish_loop(
    ctx: &Ctx,
    client: &mut Client,
    name: &str,
    topic: &str,
    node: usize,
    epoch: u32,
    qos: QoS,
    interval: Duration,
    seq: &mut u64,
) -> Result<(), String> {
    // Packet id -> (sequence, sent at). QoS 2 entries leave at PUBREC (acknowledged) and their
    // PUBREL/PUBCOMP exchange is tracked apart.
    let mut inflight: BTreeMap<u16, (u64, Instant)> = BTreeMap::new();
    let mut releasing: BTreeMap<u16, Instant> = BTreeMap::new();
    let mut next_send = Instant::now();
    let mut stopping_since: Option<Instant> = None;
    loop {
        if ctx.phase() >= Phase::Settle {
            let since = *stopping_since.get_or_insert_with(Instant::now);
            if (inflight.is_empty() && releasing.is_empty()) || since.elapsed() > REQUEST_TIMEOUT {
                return Ok(());
            }
        }
        let oldest = inflight.values().map(|v| v.1).chain(releasing.values().copied()).min();
        if oldest.is_some_and(|t| t.elapsed() > SILENCE_TIMEOUT) {
            return Err("acknowledgement timed out".into());
        }
        if stopping_since.is_none() && Instant::now() >= next_send && inflight.len() < WINDOW {
            *seq += 1;
            let id = (qos != QoS::AtMostOnce).then(|| client.next_id());
            ctx.history.record(Event::Publish { publisher: name.to_owned(), epoch, seq: *seq, node, qos: qos.as_u8() });
            let payload = format!("{name} {}", *seq);
            client.publish(topic, payload.as_bytes(), qos, false, id).await.map_err(|e| e.to_string())?;
            if let Some(id) = id {
                inflight.insert(id.0, (*seq, Instant::now()));
            }
            next_send += interval;
            if next_send < Instant::now() {
                next_send = Instant::now() + interval;
            }
            continue;
        }
        let wait_until = if stopping_since.is_none() && inflight.len() < WINDOW {
            next_send
        } else {
            Instant::now() + Duration::from_millis(200)
        };
        let p = match client.next(wait_until).await {
            Ok(Some(p)) => p,
            Ok(None) => continue,
            Err(e) => return Err(e.to_string()),
        };
        match p {
            Incoming::PubAck(id) | Incoming::PubRec(id) => {
                if let Some((s, _)) = inflight.remove(&id.0) {
                    ctx.history.record(Event::PublishOk { publisher: name.to_owned(), seq: s });
                }
                if matches!(p, Incoming::PubRec(_)) {
                    releasing.insert(id.0, Instant::now());
                    client.ack(Ack::PubRel, id).await.map_err(|e| e.to_string())?;
                }
            }
            Incoming::PubComp(id) => {
                releasing.remove(&id.0);
            }
            _ => {}
        }
    }
}
