//! `subscriptions` and `retain`: replicated state written on random nodes, then read back from
//! every node after the final heal.
//!
//! The nodes have no HTTP endpoint that lists their subscription table or retained store, so
//! both are read through MQTT, which is also what a client sees:
//!
//! - `subscriptions`: clients `ws{c}` (persistent sessions) subscribe to and unsubscribe from
//!   `js/t{j}` on whatever node they are connected to; the key is `"ws{c} js/t{j}"`. A probe
//!   round publishes one QoS 1 message to every `js/t{j}` on each node in turn; a node's table
//!   holds `(ws{c}, js/t{j})` if that client receives the probe published on that node.
//! - `retain`: writers set (`v{id}`) or clear (empty payload) the retained message of `jr/k{j}`
//!   on random nodes; a probe round subscribes to `jr/#` on each node with a fresh client and
//!   records the retained messages it is sent.
//!
//! Writers stop at the final heal. Probe rounds start then and repeat once a second until every
//! node shows the same state twice in a row, or [`PROBE_LIMIT`] passes; the checker compares them with the last
//! acknowledged operation per key and reports the convergence time.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{Ctx, Phase, RECONNECT_PAUSE, REQUEST_TIMEOUT};
use crate::harness::client::{Client, Incoming};
use crate::harness::cluster::mqtt_addr;
use crate::harness::rng::Rng;
use crate::history::Event;
use crate::mqtt::QoS;
use crate::mqtt::codec::Ack;

/// Clients (subscriptions) or writers (retain).
const CLIENTS: usize = 3;
/// Topics per workload.
const KEYS: usize = 4;
/// How long probing may go on before the state counts as not converged.
pub const PROBE_LIMIT: Duration = Duration::from_secs(30);
/// What a subscribed key reads as.
pub const SUBSCRIBED: &str = "subscribed";

/// Which replicated state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The subscription table.
    Subscriptions,
    /// The retained store.
    Retain,
}

/// Probe messages received by the `ws` clients: (round, node) → keys that got one.
type Seen = Arc<Mutex<BTreeMap<(u32, usize), BTreeSet<String>>>>;

/// Starts the writers and the prober.
pub fn spawn(ctx: &Ctx, kind: Kind, tasks: &mut JoinSet<()>) {
    let seen: Seen = Arc::default();
    let next_op = Arc::new(std::sync::atomic::AtomicU64::new(1));
    for c in 0..CLIENTS {
        tasks.spawn(writer(ctx.clone(), kind, c, seen.clone(), next_op.clone()));
    }
    tasks.spawn(prober(ctx.clone(), kind, seen));
}

async fn writer(ctx: Ctx, kind: Kind, c: usize, seen: Seen, next_op: Arc<std::sync::atomic::AtomicU64>) {
    let name = match kind {
        Kind::Subscriptions => format!("ws{c}"),
        Kind::Retain => format!("wr{c}"),
    };
    let mut rng = Rng::new(ctx.seed, 0x6b76_0000 + c as u64);
    let mut conn_no = 0;
    let interval = Duration::from_secs_f64(1.0 / f64::from(ctx.rate.clamp(1, 50)));
    while ctx.phase() < Phase::End {
        let node = rng.node(ctx.nodes);
        conn_no += 1;
        let conn = format!("{name}#{conn_no}");
        let persistent = kind == Kind::Subscriptions;
        let result = Client::connect(mqtt_addr(node), &name, !persistent, REQUEST_TIMEOUT).await;
        ctx.history.record(Event::Connect {
            client: name.clone(),
            conn: conn.clone(),
            node,
            ok: result.is_ok(),
            session_present: result.as_ref().is_ok_and(|r| r.1),
            error: result.as_ref().err().map(ToString::to_string),
        });
        let Ok((mut client, _)) = result else {
            tokio::time::sleep(RECONNECT_PAUSE).await;
            continue;
        };
        let reason = loop {
            let phase = ctx.phase();
            if phase >= Phase::End {
                client.disconnect().await;
                break "end of run".to_owned();
            }
            let deadline = Instant::now() + interval;
            if phase < Phase::Quiet {
                let id = next_op.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Err(e) = operate(&ctx, &mut client, kind, &name, node, id, &mut rng, &seen).await {
                    break e;
                }
            } else if kind == Kind::Retain {
                client.disconnect().await;
                ctx.clone().until(Phase::End).await;
                break "end of run".to_owned();
            }
            // Between operations (and while probing) the subscriptions clients take deliveries.
            if let Err(e) = receive_until(&mut client, &name, deadline, &seen).await {
                break e;
            }
        };
        ctx.closed(&name, conn, reason, Phase::End).await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn operate(
    ctx: &Ctx,
    client: &mut Client,
    kind: Kind,
    name: &str,
    node: usize,
    id: u64,
    rng: &mut Rng,
    seen: &Seen,
) -> Result<(), String> {
    let j = rng.below(KEYS as u64);
    let set = rng.below(3) != 0;
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let want = match kind {
        Kind::Subscriptions => {
            let topic = format!("js/t{j}");
            ctx.history.record(Event::Op {
                id,
                key: format!("{name} {topic}"),
                value: set.then(|| SUBSCRIBED.to_owned()),
                node,
            });
            if set { client.subscribe(&topic, QoS::AtLeastOnce).await } else { client.unsubscribe(&topic).await }
                .map_err(|e| e.to_string())?
        }
        Kind::Retain => {
            let topic = format!("jr/k{j}");
            let value = format!("v{id}");
            ctx.history.record(Event::Op { id, key: topic.clone(), value: set.then(|| value.clone()), node });
            let pid = client.next_id();
            let payload = if set { value.as_bytes() } else { &[][..] };
            client.publish(&topic, payload, QoS::AtLeastOnce, true, Some(pid)).await.map_err(|e| e.to_string())?;
            pid
        }
    };
    loop {
        let p = match client.next(deadline).await {
            Ok(Some(p)) => p,
            Ok(None) => return Err("no acknowledgement".into()),
            Err(e) => return Err(e.to_string()),
        };
        match p {
            Incoming::SubAck(pid, code) if pid == want => {
                if code >= 0x80 {
                    return Err(format!("SUBACK refused ({code:#x})"));
                }
                break;
            }
            Incoming::UnsubAck(pid) | Incoming::PubAck(pid) if pid == want => break,
            other => handle_delivery(client, name, other, seen).await?,
        }
    }
    ctx.history.record(Event::OpOk { id });
    Ok(())
}

async fn receive_until(client: &mut Client, name: &str, until: Instant, seen: &Seen) -> Result<(), String> {
    // A ping per round keeps the session alive and makes a dead connection fail on write.
    client.ping().await.map_err(|e| e.to_string())?;
    loop {
        match client.next(until).await {
            Ok(Some(p)) => handle_delivery(client, name, p, seen).await?,
            Ok(None) => return Ok(()),
            Err(e) => return Err(e.to_string()),
        }
    }
}

async fn handle_delivery(client: &mut Client, name: &str, p: Incoming, seen: &Seen) -> Result<(), String> {
    if let Incoming::Publish { topic, packet_id, payload, qos, .. } = p {
        // Probe payloads are "probe {round} {node}"; the key is "{receiver} {topic}".
        if let Ok(text) = std::str::from_utf8(&payload)
            && let Some(rest) = text.strip_prefix("probe ")
        {
            let mut parts = rest.split(' ');
            if let (Some(Ok(round)), Some(Ok(node))) =
                (parts.next().map(str::parse::<u32>), parts.next().map(str::parse::<usize>))
            {
                let mut map = seen.lock().unwrap_or_else(|e| e.into_inner());
                map.entry((round, node)).or_default().insert(format!("{name} {topic}"));
            }
        }
        if let (QoS::AtLeastOnce, Some(id)) = (qos, packet_id) {
            client.ack(Ack::PubAck, id).await.map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

async fn prober(mut ctx: Ctx, kind: Kind, seen: Seen) {
    // Writers stop at the final heal, so probing starts there and the first round that agrees
    // measures the convergence time.
    ctx.until(Phase::Quiet).await;
    let start = Instant::now();
    let mut previous: Option<BTreeMap<usize, BTreeMap<String, String>>> = None;
    let mut round = 0u32;
    while start.elapsed() < PROBE_LIMIT {
        let mut states = BTreeMap::new();
        for node in 1..=ctx.nodes {
            let state = match kind {
                Kind::Retain => read_retained(node, round).await,
                Kind::Subscriptions => publish_probes(node, round).await,
            };
            states.insert(node, state.unwrap_or_default());
        }
        if kind == Kind::Subscriptions {
            // Give the probes time to arrive, then read what each node's table routed.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let map = seen.lock().unwrap_or_else(|e| e.into_inner());
            for node in 1..=ctx.nodes {
                let keys = map.get(&(round, node)).cloned().unwrap_or_default();
                states.insert(node, keys.into_iter().map(|k| (k, SUBSCRIBED.to_owned())).collect());
            }
        }
        for (node, state) in &states {
            ctx.history.record(Event::Probe { round, node: *node, state: state.clone() });
        }
        let agree = states.values().all(|s| Some(s) == states.values().next());
        let stable = previous.as_ref() == Some(&states);
        if agree && stable {
            break;
        }
        previous = Some(states);
        round += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    ctx.history.record(Event::Phase { name: "probed".into() });
    ctx.done.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Publishes one probe per topic on `node`; every client that receives it records the key
/// `"{client} {topic}"` for this round and node.
async fn publish_probes(node: usize, round: u32) -> Option<BTreeMap<String, String>> {
    let (mut client, _) =
        Client::connect(mqtt_addr(node), &format!("probe-{node}"), true, REQUEST_TIMEOUT).await.ok()?;
    for j in 0..KEYS {
        let id = client.next_id();
        let payload = format!("probe {round} {node}");
        client.publish(&format!("js/t{j}"), payload.as_bytes(), QoS::AtLeastOnce, false, Some(id)).await.ok()?;
    }
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut acked = 0;
    while acked < KEYS {
        match client.next(deadline).await {
            Ok(Some(Incoming::PubAck(_))) => acked += 1,
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    client.disconnect().await;
    Some(BTreeMap::new())
}

/// Subscribes to `jr/#` on `node` and collects the retained messages it sends.
async fn read_retained(node: usize, round: u32) -> Option<BTreeMap<String, String>> {
    let (mut client, _) =
        Client::connect(mqtt_addr(node), &format!("probe-{node}-{round}"), true, REQUEST_TIMEOUT).await.ok()?;
    let want = client.subscribe("jr/#", QoS::AtMostOnce).await.ok()?;
    let mut state = BTreeMap::new();
    let mut deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut subacked = false;
    loop {
        match client.next(deadline).await {
            Ok(Some(Incoming::SubAck(id, _))) if id == want => {
                subacked = true;
                // Retained messages follow the SUBACK; wait until none comes for a while.
                deadline = Instant::now() + Duration::from_millis(700);
            }
            Ok(Some(Incoming::Publish { retain: true, topic, payload, .. })) => {
                state.insert(topic, String::from_utf8_lossy(&payload).into_owned());
                deadline = Instant::now() + Duration::from_millis(700);
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    client.disconnect().await;
    subacked.then_some(state)
}
