//! `offline`: QoS 1 publishes into persistent sessions whose clients are disconnected, then
//! the clients come back and drain their queues.
//!
//! Phase 1 creates the sessions (clean session off, or MQTT 5 session expiry) and subscribes;
//! phase 2 publishes `messages` in total and measures acknowledged publishes per second, which
//! is the broker's rate of enqueueing into offline queues (VerneMQ `vmq_queue` offline state,
//! RocksDB-backed in `vmq_lvldb_store`'s place); phase 3 reconnects and measures the drain.
//! The run accepts QoS 1 and 2 only: QoS 0 is not queued for offline sessions [MQTT-3.1.2-5].

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::watch;
use tokio::time::Instant;

use super::Params;
use super::report::{Latency, OfflineResult, Report};
use super::runner::{self, Counters, PubSpec, SubSpec};
use crate::accounting::{self, PublisherId, SubscriberId};
use crate::mqtt::QoS;

/// Runs the scenario with `publishers` publishers, `sessions` persistent sessions and
/// `messages` publishes in total (each delivered to every session).
pub async fn run(p: &Params, publishers: u32, sessions: u32, messages: u64) -> anyhow::Result<Report> {
    if p.qos == QoS::AtMostOnce {
        bail!("offline needs --qos 1 or 2: QoS 0 messages are not queued for offline sessions");
    }
    let base = format!("bench/{}/offline", p.run_tag);
    let subs: Vec<SubSpec> = (0..sessions)
        .map(|i| SubSpec {
            addr: p.addr,
            filter: format!("{base}/+"),
            client_id: format!("vmqb-{}-o{i}", p.run_tag),
            persistent: true,
        })
        .collect();
    let share = messages.div_ceil(u64::from(publishers.max(1)));
    let pubs: Vec<PubSpec> = (0..publishers)
        .map(|i| PubSpec {
            id: PublisherId(i),
            addr: p.addr,
            topic: format!("{base}/{i}"),
            rate: p.rate.map(|r| r / f64::from(publishers)),
            max_messages: share.min(messages.saturating_sub(share * u64::from(i))),
        })
        .collect();
    let expect: Vec<_> =
        (0..sessions).flat_map(|s| (0..publishers).map(move |q| (SubscriberId(s), PublisherId(q)))).collect();

    // Phase 1: create the sessions, then leave them offline.
    for c in runner::connect_subscribers(p, &subs).await? {
        c.disconnect().await;
    }

    // Phase 2: publish into the offline queues.
    let counters = Arc::new(Counters::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let pub_conns = runner::connect_publishers(p, &pubs).await?;
    let epoch = Instant::now();
    let deadline = epoch + p.duration;
    let hard_deadline = deadline + p.drain;
    if p.progress {
        let label = format!("offline {} enqueue", p.broker);
        tokio::spawn(runner::progress(label, epoch, counters.clone(), stop_rx.clone()));
    }
    let pub_logs = runner::run_publishers(p, pub_conns, &pubs, epoch, deadline, hard_deadline, &counters).await?;
    let enqueue_secs = epoch.elapsed().as_secs_f64().max(1e-9);
    let _ = stop_tx.send(true);

    // Phase 3: reconnect and drain.
    let (stop_tx, stop_rx) = watch::channel(false);
    let counters = Arc::new(Counters::default());
    let drain_epoch = Instant::now();
    let drain_deadline = drain_epoch + p.duration + p.drain;
    if p.progress {
        let label = format!("offline {} drain", p.broker);
        tokio::spawn(runner::progress(label, drain_epoch, counters.clone(), stop_rx.clone()));
    }
    let mut present = true;
    let mut sub_tasks = Vec::new();
    for s in &subs {
        let (c, session_present) = runner::connect(p, s.addr, &s.client_id, true)
            .await
            .with_context(|| format!("reconnecting offline session {}", s.client_id))?;
        present &= session_present;
        // Timestamps in payloads are relative to the publishing epoch, so latency here is
        // time spent queued plus delivery.
        sub_tasks.push(tokio::spawn(runner::run_subscriber(
            c,
            epoch,
            stop_rx.clone(),
            drain_deadline,
            counters.clone(),
        )));
    }
    let expected: u64 = pub_logs.iter().map(|l| l.sent()).sum::<u64>() * u64::from(sessions);
    let drain_end = runner::await_deliveries(&counters, expected, Duration::from_secs(2), drain_deadline).await;
    let _ = stop_tx.send(true);
    let mut sub_logs = Vec::new();
    let mut hist = runner::new_histogram();
    let mut last = None;
    for t in sub_tasks {
        let o = t.await??;
        sub_logs.push(o.log);
        hist.add(&o.latency)?;
        last = last.max(o.last_delivery);
    }
    let verdict = accounting::check(&pub_logs, &sub_logs, &expect);
    let drain_secs = last.map_or(1e-9, |l| l.duration_since(drain_epoch).as_secs_f64()).max(1e-9);
    let mut r = Report::new(p);
    r.publishers = u64::from(publishers);
    r.subscribers = u64::from(sessions);
    r.send_rate = verdict.sent as f64 / enqueue_secs;
    r.throughput = verdict.delivered as f64 / drain_secs;
    r.elapsed_s = epoch.elapsed().as_secs_f64();
    r.latency = Latency::from_histogram(&hist);
    r.offline = Some(OfflineResult {
        sessions: u64::from(sessions),
        enqueue_rate: verdict.acked as f64 * f64::from(sessions.max(1)) / enqueue_secs,
        drain_rate: r.throughput,
        sessions_present: present,
    });
    r.drain = Some(drain_end);
    r.set_verdict(verdict);
    Ok(r)
}
