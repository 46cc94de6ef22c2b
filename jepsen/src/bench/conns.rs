//! `conns`: opens C idle MQTT connections at a given rate, holds them, and reads the broker's
//! resident memory from `/proc` before and after.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, Semaphore};
use tokio::time::Instant;

use super::Params;
use super::procfs;
use super::report::{ConnsResult, Report};
use super::runner;

/// Connection attempts in flight at once; enough to keep up with any sane `--conn-rate`
/// without a SYN flood against the listen backlog.
const CONCURRENCY: usize = 256;

/// Runs the scenario: `count` connections at `rate` per second, held for `p.duration`.
pub async fn run(p: &Params, count: u32, rate: f64, pid: Option<u32>) -> anyhow::Result<Report> {
    let pid = match pid {
        Some(pid) => pid,
        None => procfs::listener_pid(p.addr.port())?,
    };
    let rss_before = procfs::rss_bytes(pid)?;
    let held = Arc::new(Mutex::new(Vec::with_capacity(count as usize)));
    let failed = Arc::new(AtomicU64::new(0));
    let sem = Arc::new(Semaphore::new(CONCURRENCY));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(count as usize);
    for i in 0..count {
        let due = start + Duration::from_secs_f64(f64::from(i) / rate.max(1e-3));
        tokio::time::sleep_until(due).await;
        let Ok(permit) = sem.clone().acquire_owned().await else {
            break;
        };
        let (pc, held, failed) = (p.clone(), held.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let id = format!("vmqb-{}-c{i}", pc.run_tag);
            match runner::connect(&pc, pc.addr, &id, false).await {
                Ok((c, _)) => held.lock().await.push(c),
                Err(_) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            drop(permit);
        }));
        if p.progress && (i + 1) % 1000 == 0 {
            eprintln!("[conns {} {:>5.1}s] opened {}", p.broker, start.elapsed().as_secs_f64(), i + 1);
        }
    }
    for t in tasks {
        t.await?;
    }
    let open_secs = start.elapsed().as_secs_f64().max(1e-9);
    // Hold, sampling RSS once a second; the largest sample is what the connections cost.
    let hold_end = Instant::now() + p.duration;
    let mut rss_after = procfs::rss_bytes(pid)?;
    while Instant::now() < hold_end {
        tokio::time::sleep(Duration::from_secs(1).min(hold_end - Instant::now())).await;
        rss_after = rss_after.max(procfs::rss_bytes(pid)?);
    }
    let conns: Vec<_> = std::mem::take(&mut *held.lock().await);
    let connected = conns.len() as u64;
    let elapsed = start.elapsed().as_secs_f64();
    drop(conns);
    let mut r = Report::new(p);
    r.subscribers = connected;
    r.elapsed_s = elapsed;
    r.conns = Some(ConnsResult {
        connected,
        failed: failed.load(Ordering::Relaxed),
        open_rate: connected as f64 / open_secs,
        broker_pid: pid,
        rss_before,
        rss_after,
        rss_per_conn: rss_after.saturating_sub(rss_before) as f64 / (connected.max(1) as f64),
    });
    Ok(r)
}
