//! `vmq-jepsen bench`: throughput, latency, connection and offline-queue benchmarks against any
//! MQTT broker listening on loopback.
//!
//! Every scenario is a plan of publishers and subscribers run by [`runner`], checked with
//! [`crate::accounting`] and summarised in a [`report::Report`]. Runs are bounded in time:
//! publishing stops after `--duration`, and waiting for the last deliveries stops after
//! `--drain` more seconds whatever happens.

pub mod conns;
pub mod offline;
pub mod payload;
pub mod procfs;
pub mod report;
pub mod runner;
pub mod throughput;

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::mqtt::{ProtocolVersion, QoS};

pub use report::Report;

/// The benchmark to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// P publishers → 1 wildcard subscriber.
    Fanin,
    /// 1 publisher → S subscribers of the same topic.
    Fanout,
    /// N publisher/subscriber pairs, one topic each.
    Pairs,
    /// Paced at `--rate` in total; end-to-end latency percentiles.
    Latency,
    /// C idle connections opened at `--conn-rate`, held; broker RSS per connection.
    Conns,
    /// QoS 1 into offline persistent sessions, then drained.
    Offline,
    /// Pairs with publishers on `--addr` and subscribers on `--addr2`.
    Cluster,
}

impl Scenario {
    /// The lowercase name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fanin => "fanin",
            Self::Fanout => "fanout",
            Self::Pairs => "pairs",
            Self::Latency => "latency",
            Self::Conns => "conns",
            Self::Offline => "offline",
            Self::Cluster => "cluster",
        }
    }
}

/// Command-line options of `vmq-jepsen bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Scenario to run.
    #[arg(value_enum)]
    pub scenario: Scenario,
    /// Broker address; must be loopback.
    #[arg(long, default_value = "127.0.0.1:1883")]
    pub addr: String,
    /// Second broker address (subscribers of `cluster`); defaults to `--addr`.
    #[arg(long)]
    pub addr2: Option<String>,
    /// Name of the broker in the report.
    #[arg(long, default_value = "broker")]
    pub broker: String,
    /// QoS of publications and subscriptions (0, 1 or 2).
    #[arg(long, default_value_t = 0)]
    pub qos: u8,
    /// Payload size in bytes (at least the 20-byte header).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// MQTT protocol version: 4 (3.1.1) or 5.
    #[arg(long, default_value_t = 4)]
    pub protocol: u8,
    /// Publishers (fanin, latency, offline); default 8 for fanin, 1 for latency, 4 for offline.
    #[arg(long)]
    pub publishers: Option<u32>,
    /// Subscribers (fanout, offline); default 8 for fanout, 1 for offline.
    #[arg(long)]
    pub subscribers: Option<u32>,
    /// Publisher/subscriber pairs (pairs, cluster); default 8.
    #[arg(long)]
    pub pairs: Option<u32>,
    /// Seconds of publishing (of holding, for conns).
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds to wait for outstanding acknowledgements and deliveries after publishing stops.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
    /// QoS 1/2 messages in flight per publisher.
    #[arg(long, default_value_t = 100)]
    pub inflight: u32,
    /// Total publish rate in msg/s; unlimited when absent, 50000 for latency.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Idle connections to open (conns).
    #[arg(long, default_value_t = 10_000)]
    pub conns: u32,
    /// Connections opened per second (conns).
    #[arg(long, default_value_t = 2_000.0)]
    pub conn_rate: f64,
    /// Messages to publish in total (offline).
    #[arg(long, default_value_t = 200_000)]
    pub messages: u64,
    /// Broker process id for RSS (conns); found from the listening socket when absent.
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// Print the report as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// No progress lines on stderr.
    #[arg(long)]
    pub quiet: bool,
}

/// Options after validation, shared by every scenario.
#[derive(Debug, Clone)]
pub struct Params {
    /// Scenario being run.
    pub scenario: Scenario,
    /// Broker name for the report.
    pub broker: String,
    /// Main broker address (loopback).
    pub addr: SocketAddr,
    /// Subscriber-side address of `cluster` (loopback).
    pub addr2: SocketAddr,
    /// Delivery QoS.
    pub qos: QoS,
    /// Payload bytes per message.
    pub payload: usize,
    /// Protocol version.
    pub version: ProtocolVersion,
    /// Publishing time.
    pub duration: Duration,
    /// Extra time for acknowledgements and deliveries.
    pub drain: Duration,
    /// QoS 1/2 window per publisher.
    pub inflight: usize,
    /// Total publish rate, if paced.
    pub rate: Option<f64>,
    /// Print progress lines.
    pub progress: bool,
    /// A tag unique to this run, used in topics and client ids so runs never see each other.
    pub run_tag: String,
}

/// Connection setup (CONNECT/SUBSCRIBE answers) must come within this time.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Resolves `s` and refuses anything that is not loopback: the benchmark is a load generator
/// and must never be pointed at someone else's machine.
pub fn loopback_addr(s: &str) -> anyhow::Result<SocketAddr> {
    let addrs: Vec<SocketAddr> =
        s.to_socket_addrs().with_context(|| format!("cannot resolve broker address {s:?}"))?.collect();
    let Some(first) = addrs.first().copied() else { bail!("broker address {s:?} resolves to nothing") };
    if let Some(bad) = addrs.iter().find(|a| !a.ip().is_loopback()) {
        bail!(
            "refusing non-loopback broker address {bad} (from {s:?}): vmq-jepsen bench only loads 127.0.0.0/8 or ::1"
        );
    }
    Ok(first)
}

impl Params {
    /// Validates the command line.
    pub fn from_args(a: &BenchArgs) -> anyhow::Result<Self> {
        let addr = loopback_addr(&a.addr)?;
        let addr2 = match &a.addr2 {
            Some(s) => loopback_addr(s)?,
            None => addr,
        };
        let Some(qos) = QoS::from_u8(a.qos) else { bail!("--qos must be 0, 1 or 2") };
        let Some(version) = ProtocolVersion::from_level(a.protocol) else { bail!("--protocol must be 4 or 5") };
        if a.payload < payload::HEADER_LEN {
            bail!("--payload must be at least {} bytes (publisher, sequence, timestamp)", payload::HEADER_LEN);
        }
        if !((0.0..=3600.0).contains(&a.duration) && a.duration > 0.0 && (0.0..=600.0).contains(&a.drain)) {
            bail!("--duration must be in (0, 3600] s and --drain in [0, 600] s");
        }
        if a.inflight == 0 || a.inflight > 65_000 {
            bail!("--inflight must be in 1..=65000");
        }
        let rate = match (a.scenario, a.rate) {
            (_, Some(r)) if !r.is_finite() || r <= 0.0 => bail!("--rate must be positive"),
            (Scenario::Latency, None) => Some(50_000.0),
            (_, r) => r,
        };
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        Ok(Self {
            scenario: a.scenario,
            broker: a.broker.clone(),
            addr,
            addr2,
            qos,
            payload: a.payload,
            version,
            duration: Duration::from_secs_f64(a.duration),
            drain: Duration::from_secs_f64(a.drain),
            inflight: a.inflight as usize,
            rate,
            progress: !a.quiet,
            run_tag: format!("{:x}", (nanos as u64) ^ u64::from(std::process::id())),
        })
    }
}

/// Runs the scenario the arguments name and returns its report.
pub async fn run(args: &BenchArgs) -> anyhow::Result<Report> {
    let p = Params::from_args(args)?;
    match p.scenario {
        Scenario::Fanin => throughput::fanin(&p, args.publishers.unwrap_or(8)).await,
        Scenario::Fanout => throughput::fanout(&p, args.subscribers.unwrap_or(8)).await,
        Scenario::Pairs | Scenario::Cluster => throughput::pairs(&p, args.pairs.unwrap_or(8)).await,
        Scenario::Latency => throughput::latency(&p, args.publishers.unwrap_or(1)).await,
        Scenario::Conns => conns::run(&p, args.conns, args.conn_rate, args.broker_pid).await,
        Scenario::Offline => {
            offline::run(&p, args.publishers.unwrap_or(4), args.subscribers.unwrap_or(1), args.messages).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_addresses_are_accepted() {
        assert!(loopback_addr("127.0.0.1:1883").is_ok());
        assert!(loopback_addr("[::1]:1883").is_ok());
        let err = loopback_addr("10.1.2.3:1883").unwrap_err().to_string();
        assert!(err.contains("non-loopback"), "{err}");
        assert!(loopback_addr("192.168.0.1:1").is_err());
    }
}
