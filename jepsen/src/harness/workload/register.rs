//! `register`: several clients share each client id and connect to random nodes, so that the
//! cluster has to register, take over and disconnect sessions across nodes all the time.
//!
//! Ids `r{k}` (k < [`IDS`]) each have [`WORKERS`] workers. While faults run, a worker connects
//! (clean session) to a random node, holds the connection for 0.5-3 s while pinging, then
//! disconnects or, half the time, just keeps going with a new connection (leaving the broker to
//! take the old one over). After the final heal every worker that holds no connection makes one
//! more, and nobody reconnects again. When the run settles (the register bound after the heal)
//! every still-open connection is pinged and the answer recorded as [`Event::Live`]: a client id
//! with two connections that both answer has two live sessions.

use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{Ctx, Phase, RECONNECT_PAUSE, REQUEST_TIMEOUT};
use crate::harness::client::{Client, Incoming};
use crate::harness::cluster::mqtt_addr;
use crate::harness::rng::Rng;
use crate::history::Event;

/// Client ids.
pub const IDS: usize = 4;
/// Workers per client id.
pub const WORKERS: usize = 3;
/// How long a ping may take in the final liveness probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Starts every worker.
pub fn spawn(ctx: &Ctx, tasks: &mut JoinSet<()>) {
    for k in 0..IDS {
        for w in 0..WORKERS {
            tasks.spawn(worker(ctx.clone(), format!("r{k}"), w));
        }
    }
}

struct Held {
    client: Client,
    conn: String,
    node: usize,
}

async fn worker(mut ctx: Ctx, id: String, w: usize) {
    let mut rng = Rng::new(
        ctx.seed,
        0x7265_6700 + (w as u64) * 977 + id.len() as u64 * 7 + id.bytes().map(u64::from).sum::<u64>(),
    );
    let mut count = 0u32;
    let mut held: Option<Held> = None;
    while ctx.phase() < Phase::Quiet {
        if held.is_none() {
            held = connect(&ctx, &id, w, &mut count, &mut rng).await;
            if held.is_none() {
                tokio::time::sleep(RECONNECT_PAUSE).await;
                continue;
            }
        }
        let hold_for = Duration::from_millis(rng.range(500, 3_000));
        if let Some(h) = held.as_mut()
            && let Err(reason) = keep_alive(h, Instant::now() + hold_for).await
        {
            record_closed(&ctx, &id, h, reason);
            held = None;
            continue;
        }
        if rng.below(2) == 0
            && let Some(h) = held.take()
        {
            record_closed(&ctx, &id, &h, "disconnected by the client".into());
            h.client.disconnect().await;
        } else {
            // Keep it open and connect again: the broker must take the old one over.
            let old = held.take();
            held = connect(&ctx, &id, w, &mut count, &mut rng).await;
            if let Some(old) = old {
                // Watch the old connection in the background until the broker closes it (or the
                // run settles), so its end is recorded and, if it survives, it is probed.
                let ctx2 = ctx.clone();
                let id2 = id.clone();
                tokio::spawn(watch_until_settled(ctx2, id2, old));
            }
        }
    }
    // After the final heal: one connection per worker at most, and no more reconnecting.
    if held.is_none() {
        held = connect(&ctx, &id, w, &mut count, &mut rng).await;
    }
    if let Some(h) = held {
        watch_until_settled(ctx.clone(), id, h).await;
    }
    ctx.until(Phase::End).await;
}

async fn connect(ctx: &Ctx, id: &str, w: usize, count: &mut u32, rng: &mut Rng) -> Option<Held> {
    *count += 1;
    let node = rng.node(ctx.nodes);
    let conn = format!("{id}/w{w}#{count}");
    match Client::connect(mqtt_addr(node), id, true, REQUEST_TIMEOUT).await {
        Ok((client, present)) => {
            ctx.history.record(Event::Connect {
                client: id.to_owned(),
                conn: conn.clone(),
                node,
                ok: true,
                session_present: present,
                error: None,
            });
            Some(Held { client, conn, node })
        }
        Err(e) => {
            ctx.history.record(Event::Connect {
                client: id.to_owned(),
                conn,
                node,
                ok: false,
                session_present: false,
                error: Some(e.to_string()),
            });
            None
        }
    }
}

/// Pings every 500 ms until `until`; an error means the connection is gone.
async fn keep_alive(h: &mut Held, until: Instant) -> Result<(), String> {
    let mut last_pong = Instant::now();
    while Instant::now() < until {
        h.client.ping().await.map_err(|e| e.to_string())?;
        let step = (Instant::now() + Duration::from_millis(500)).min(until);
        loop {
            match h.client.next(step).await {
                Ok(Some(Incoming::PingResp)) => last_pong = Instant::now(),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) => return Err(e.to_string()),
            }
        }
        if last_pong.elapsed() > Duration::from_secs(10) {
            return Err("no PINGRESP for 10 s".into());
        }
    }
    Ok(())
}

/// Keeps a connection until the run settles, then probes it once.
async fn watch_until_settled(mut ctx: Ctx, id: String, mut h: Held) {
    loop {
        if ctx.phase() >= Phase::Settle {
            break;
        }
        // A connection the broker closed ends here; one that is merely silent stays for the probe.
        match h.client.next(Instant::now() + Duration::from_millis(500)).await {
            Ok(_) => {}
            Err(e) => {
                record_closed(&ctx, &id, &h, e.to_string());
                return;
            }
        }
        // Our own keep-alive: the broker would close a silent client after 15 s.
        if h.client.ping().await.is_err() {
            record_closed(&ctx, &id, &h, "write failed".into());
            return;
        }
    }
    let alive = probe(&mut h).await;
    ctx.history.record(Event::Live { client: id.clone(), conn: h.conn.clone(), node: h.node, alive });
    ctx.until(Phase::End).await;
    h.client.disconnect().await;
}

async fn probe(h: &mut Held) -> bool {
    if h.client.ping().await.is_err() {
        return false;
    }
    let deadline = Instant::now() + PROBE_TIMEOUT;
    loop {
        match h.client.next(deadline).await {
            Ok(Some(Incoming::PingResp)) => return true,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return false,
        }
    }
}

fn record_closed(ctx: &Ctx, id: &str, h: &Held, reason: String) {
    ctx.history.record(Event::Closed { client: id.to_owned(), conn: h.conn.clone(), reason });
}
