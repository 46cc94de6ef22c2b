//! `vmq-jepsen test`: real `vernemq` processes in their own network namespaces, real clients,
//! a nemesis that cuts links and kills nodes, and a recorded history for the checkers.
//!
//! The run: stale-state cleanup, namespaces ([`net`]), nodes and `vmq-admin cluster join`
//! ([`cluster`]), then the workload ([`workload`]) under the nemesis schedule ([`nemesis`])
//! for `--time` seconds, a final heal, a quiet period, a settle phase (drain or probe), and the
//! check. The [`Network`](net::Network) and [`Cluster`](cluster::Cluster) are removed when
//! they drop, which also happens on Ctrl-C (the run future is dropped) and on panic.

pub mod client;
pub mod cluster;
pub mod nemesis;
pub mod net;
pub mod rng;
pub mod workload;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::history::{Event, HistoryWriter, RunInfo};
use cluster::{Cluster, ClusterSpec};
use nemesis::{FaultKind, Nemesis};
use net::Network;
use workload::{Ctx, Phase};

/// Options of `vmq-jepsen test`.
#[derive(Debug, Clone, Args)]
pub struct TestArgs {
    /// queue | register | subscriptions | retain.
    #[arg(long, default_value = "queue")]
    pub workload: String,
    /// Faults, comma-separated: partition, kill, pause, slow (or none).
    #[arg(long, default_value = "partition")]
    pub nemesis: String,
    /// Number of nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Seconds of faults.
    #[arg(long, default_value_t = 60)]
    pub time: u64,
    /// Seed of the schedule and the clients' choices (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
    /// metadata_plugin: vmq_swc | vmq_plumtree.
    #[arg(long, default_value = "vmq_swc")]
    pub metadata_plugin: String,
    /// allow_publish_during_netsplit (on|off; node default when absent).
    #[arg(long)]
    pub allow_publish_during_netsplit: Option<String>,
    /// allow_register_during_netsplit (on|off).
    #[arg(long)]
    pub allow_register_during_netsplit: Option<String>,
    /// allow_subscribe_during_netsplit (on|off).
    #[arg(long)]
    pub allow_subscribe_during_netsplit: Option<String>,
    /// allow_unsubscribe_during_netsplit (on|off).
    #[arg(long)]
    pub allow_unsubscribe_during_netsplit: Option<String>,
    /// Directory with `vernemq` and `vmq-admin` (default: beside this executable).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// Output directory for the history, summary, timeline and node logs.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seconds of quiet after the final heal.
    #[arg(long, default_value_t = 10)]
    pub quiet: u64,
    /// Publishes per second per publisher (queue), operations per second per client (others).
    #[arg(long, default_value_t = 20)]
    pub rate: u32,
    /// Seconds after the final heal within which a client id must be down to one session.
    #[arg(long, default_value_t = 10)]
    pub register_bound: u64,
    /// Compare the verdict with this known-violations list (exit 0 when it matches).
    #[arg(long)]
    pub known_violations: Option<PathBuf>,
    /// namespaces (default when available) | loopback (127.0.0.2, 127.0.0.3, ... with filters).
    #[arg(long)]
    pub net: Option<String>,
    /// No ANSI colours in the summary.
    #[arg(long)]
    pub no_color: bool,
}

/// Where a finished run left its files.
#[derive(Debug)]
pub struct RunFiles {
    /// The JSONL history.
    pub history: PathBuf,
    /// The output directory.
    pub dir: PathBuf,
}

fn settings(args: &TestArgs) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (key, v) in [
        ("allow_publish_during_netsplit", &args.allow_publish_during_netsplit),
        ("allow_register_during_netsplit", &args.allow_register_during_netsplit),
        ("allow_subscribe_during_netsplit", &args.allow_subscribe_during_netsplit),
        ("allow_unsubscribe_during_netsplit", &args.allow_unsubscribe_during_netsplit),
    ] {
        if let Some(v) = v {
            if v != "on" && v != "off" {
                bail!("--{} must be on or off", key.replace('_', "-"));
            }
            out.insert(key.to_owned(), v.clone());
        }
    }
    Ok(out)
}

/// Runs the cluster, workload and nemesis; returns the files. Checking is the caller's.
pub async fn run(args: &TestArgs) -> anyhow::Result<RunFiles> {
    if !["queue", "register", "subscriptions", "retain"].contains(&args.workload.as_str()) {
        bail!("unknown workload '{}' (accepted: queue, register, subscriptions, retain)", args.workload);
    }
    if !["vmq_swc", "vmq_plumtree"].contains(&args.metadata_plugin.as_str()) {
        bail!("--metadata-plugin must be vmq_swc or vmq_plumtree");
    }
    let kinds = FaultKind::parse_list(&args.nemesis)?;
    let netsplit = settings(args)?;
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_secs())
    });
    let bin_dir = match &args.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()
            .context("cannot find this executable")?
            .parent()
            .context("the executable has no directory")?
            .to_path_buf(),
    };
    let dir = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("jepsen-runs").join(format!(
            "{}-{}-{}-{seed}",
            args.workload,
            args.nemesis.replace(',', "+"),
            args.metadata_plugin
        ))
    });
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = dir.canonicalize().context("output directory")?;
    let history_path = dir.join("history.jsonl");
    let history = Arc::new(HistoryWriter::create(&history_path)?);
    history.record(Event::Run(RunInfo {
        workload: args.workload.clone(),
        nemesis: if kinds.is_empty() { "none".into() } else { args.nemesis.clone() },
        backend: args.metadata_plugin.clone(),
        nodes: args.nodes,
        seed,
        time_s: args.time,
        netsplit_settings: netsplit.clone(),
        register_bound_s: args.register_bound,
    }));

    eprintln!("vmq-jepsen: creating the network of {} nodes", args.nodes);
    let mode = match args.net.as_deref() {
        None => None,
        Some("namespaces") => Some(net::Mode::Namespaces),
        Some("loopback") => Some(net::Mode::Loopback),
        Some(other) => bail!("--net must be namespaces or loopback, not {other}"),
    };
    let net = Network::create(args.nodes, mode)?;
    let mut cluster = Cluster::start(ClusterSpec {
        bin_dir,
        dir: dir.join("nodes"),
        nodes: args.nodes,
        backend: args.metadata_plugin.clone(),
        settings: netsplit,
    })?;
    eprintln!("vmq-jepsen: joining the cluster");
    cluster.join_all(Duration::from_secs(60)).await?;
    eprintln!("vmq-jepsen: cluster agreed; running {} for {} s (seed {seed})", args.workload, args.time);

    let (phase_tx, phase_rx) = watch::channel(Phase::Faults);
    let ctx = Ctx {
        history: history.clone(),
        nodes: args.nodes,
        seed,
        phase: phase_rx,
        rate: args.rate,
        done: Arc::new(AtomicBool::new(false)),
        subscribed: Arc::default(),
    };
    let mut tasks = JoinSet::new();
    match args.workload.as_str() {
        "queue" => workload::queue::spawn(&ctx, &mut tasks),
        "register" => workload::register::spawn(&ctx, &mut tasks),
        "subscriptions" => workload::kv::spawn(&ctx, workload::kv::Kind::Subscriptions, &mut tasks),
        _ => workload::kv::spawn(&ctx, workload::kv::Kind::Retain, &mut tasks),
    }
    let progress = tokio::spawn(progress(history.clone(), args.time));
    history.record(Event::Phase { name: "faults".into() });

    let mut nemesis = Nemesis::new(kinds, seed, args.nodes);
    nemesis.run(Duration::from_secs(args.time), &net, &mut cluster, &history).await?;
    nemesis.final_heal(&net, &mut cluster, &history)?;
    if let Err(e) = cluster.wait_agreed(tokio::time::Instant::now() + Duration::from_secs(60)).await {
        eprintln!("vmq-jepsen: {e:#}");
    }
    history.record(Event::Phase { name: "quiet".into() });
    let _ = phase_tx.send(Phase::Quiet);
    let quiet = if args.workload == "register" { args.quiet.max(args.register_bound) } else { args.quiet };
    tokio::time::sleep(Duration::from_secs(quiet)).await;
    history.record(Event::Phase { name: "settle".into() });
    let _ = phase_tx.send(Phase::Settle);
    settle(&args.workload, &ctx).await;
    let _ = phase_tx.send(Phase::End);
    history.record(Event::Phase { name: "end".into() });
    let joined =
        tokio::time::timeout(Duration::from_secs(15), async { while tasks.join_next().await.is_some() {} }).await;
    if joined.is_err() {
        tasks.abort_all();
    }
    progress.abort();
    eprintln!();
    nemesis::record_exits(&mut cluster, &history);
    history.flush()?;
    drop(cluster);
    drop(net);
    for i in 1..=args.nodes {
        // Keep the logs, not the databases.
        let _ = std::fs::remove_dir_all(dir.join("nodes").join(format!("n{i}")).join("data"));
    }
    Ok(RunFiles { history: history_path, dir })
}

/// Waits for the workload's final reading: deliveries to stop (queue), the liveness probe
/// (register), the probe rounds (subscriptions, retain).
async fn settle(workload: &str, ctx: &Ctx) {
    let start = tokio::time::Instant::now();
    match workload {
        "queue" => {
            let mut last = ctx.history.counts.delivered.load(Ordering::Relaxed);
            let mut idle_since = tokio::time::Instant::now();
            while start.elapsed() < Duration::from_secs(90) && idle_since.elapsed() < Duration::from_secs(6) {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let now = ctx.history.counts.delivered.load(Ordering::Relaxed);
                if now != last {
                    last = now;
                    idle_since = tokio::time::Instant::now();
                }
            }
        }
        "register" => tokio::time::sleep(Duration::from_secs(5)).await,
        _ => {
            while !ctx.done.load(Ordering::Relaxed)
                && start.elapsed() < workload::kv::PROBE_LIMIT + Duration::from_secs(15)
            {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

/// Prints a progress line to stderr: rewritten every second on a terminal, a new line every
/// ten seconds otherwise (a CI log).
async fn progress(history: Arc<HistoryWriter>, time: u64) {
    use std::io::IsTerminal;
    let tty = std::io::stderr().is_terminal();
    let c = &history.counts;
    loop {
        tokio::time::sleep(Duration::from_secs(if tty { 1 } else { 10 })).await;
        eprint!(
            "{}[{:>4}s / {time}s of faults] invoked {} acked {} delivered {} failed connects {} faults {}   {}",
            if tty { "\r" } else { "" },
            history.now() / 1000,
            c.invoked.load(Ordering::Relaxed),
            c.acked.load(Ordering::Relaxed),
            c.delivered.load(Ordering::Relaxed),
            c.connect_failed.load(Ordering::Relaxed),
            c.faults.load(Ordering::Relaxed),
            if tty { "" } else { "\n" },
        );
    }
}
