//! The result of one benchmark run: a table for people, one JSON object for scripts.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::Params;
use super::runner::DrainEnd;
use crate::accounting::Verdict;
use crate::mqtt::QoS;

/// End-to-end latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Latency {
    /// Deliveries measured.
    pub count: u64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
}

impl Latency {
    /// Percentiles of a nanosecond histogram; `None` when it is empty.
    pub fn from_histogram(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Some(Self {
            count: h.len(),
            p50_us: us(0.5),
            p90_us: us(0.9),
            p99_us: us(0.99),
            p999_us: us(0.999),
            max_us: h.max() as f64 / 1000.0,
        })
    }
}

/// Results specific to `conns`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ConnsResult {
    /// Connections that completed CONNECT/CONNACK.
    pub connected: u64,
    /// Connections that failed.
    pub failed: u64,
    /// Achieved opening rate, connections per second.
    pub open_rate: f64,
    /// Broker process id measured.
    pub broker_pid: u32,
    /// Broker RSS before opening, bytes.
    pub rss_before: u64,
    /// Broker RSS with all connections open (largest sample), bytes.
    pub rss_after: u64,
    /// (rss_after - rss_before) / connected.
    pub rss_per_conn: f64,
}

/// Results specific to `offline`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OfflineResult {
    /// Persistent sessions that were offline while publishing.
    pub sessions: u64,
    /// Acknowledged publishes per second into the offline sessions.
    pub enqueue_rate: f64,
    /// Deliveries per second after the sessions reconnected.
    pub drain_rate: f64,
    /// Whether every session came back with session present.
    pub sessions_present: bool,
}

/// One run's report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: &'static str,
    /// Broker name given with `--broker`.
    pub broker: String,
    /// MQTT protocol level (4 or 5).
    pub protocol: u8,
    /// QoS used.
    pub qos: u8,
    /// Payload bytes.
    pub payload: usize,
    /// Publisher connections.
    pub publishers: u64,
    /// Subscriber connections.
    pub subscribers: u64,
    /// Publishing time requested, seconds.
    pub duration_s: f64,
    /// Wall time of the measured phase, seconds.
    pub elapsed_s: f64,
    /// Messages sent per second over the publishing time.
    pub send_rate: f64,
    /// Deliveries per second, from the start until the last delivery: the throughput.
    pub throughput: f64,
    /// The accounting check.
    pub verdict: Verdict,
    /// Latency percentiles, when any delivery was timed.
    pub latency: Option<Latency>,
    /// `conns` results.
    pub conns: Option<ConnsResult>,
    /// `offline` results.
    pub offline: Option<OfflineResult>,
    /// How the wait for the last deliveries ended (absent for `conns`).
    pub drain: Option<DrainEnd>,
    /// False when an acknowledged message was not delivered.
    pub ok: bool,
}

impl Report {
    /// A report with the run's parameters filled in and no results yet.
    pub fn new(p: &Params) -> Self {
        Self {
            scenario: p.scenario.name(),
            broker: p.broker.clone(),
            protocol: match p.version {
                crate::mqtt::ProtocolVersion::V311 => 4,
                crate::mqtt::ProtocolVersion::V5 => 5,
            },
            qos: p.qos.as_u8(),
            payload: p.payload,
            publishers: 0,
            subscribers: 0,
            duration_s: p.duration.as_secs_f64(),
            elapsed_s: 0.0,
            send_rate: 0.0,
            throughput: 0.0,
            verdict: Verdict::default(),
            latency: None,
            conns: None,
            offline: None,
            drain: None,
            ok: true,
        }
    }

    /// Sets `verdict` and derives `ok` from it: acknowledged loss fails a QoS 1/2 run.
    pub fn set_verdict(&mut self, v: Verdict) {
        self.ok = !(self.qos > QoS::AtMostOnce.as_u8() && v.lost_acknowledged());
        self.verdict = v;
    }

    /// The report as an aligned two-column table.
    pub fn table(&self) -> String {
        let mut rows: Vec<(String, String)> = vec![
            ("scenario".into(), self.scenario.into()),
            ("broker".into(), self.broker.clone()),
            ("protocol / qos / payload".into(), format!("{} / {} / {} B", self.protocol, self.qos, self.payload)),
            ("publishers / subscribers".into(), format!("{} / {}", self.publishers, self.subscribers)),
            ("duration / elapsed".into(), format!("{:.1} s / {:.1} s", self.duration_s, self.elapsed_s)),
        ];
        if self.conns.is_none() {
            let v = &self.verdict;
            rows.push(("send rate".into(), format!("{:.0} msg/s", self.send_rate)));
            rows.push(("throughput (delivered)".into(), format!("{:.0} msg/s", self.throughput)));
            rows.push(("sent / acked".into(), format!("{} / {}", v.sent, v.acked)));
            rows.push(("delivered / expected".into(), format!("{} / {}", v.delivered, v.expected)));
            rows.push(("lost / lost after ack".into(), format!("{} / {}", v.lost, v.lost_after_ack)));
            rows.push(("duplicates / reordered".into(), format!("{} / {}", v.duplicates, v.reordered)));
            rows.push(("unexpected".into(), v.unexpected.to_string()));
        }
        if let Some(l) = &self.latency {
            rows.push((
                "latency p50/p90/p99/p99.9/max".into(),
                format!("{:.0} / {:.0} / {:.0} / {:.0} / {:.0} µs", l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.max_us),
            ));
        }
        if let Some(c) = &self.conns {
            rows.push(("connected / failed".into(), format!("{} / {}", c.connected, c.failed)));
            rows.push(("open rate".into(), format!("{:.0} conn/s", c.open_rate)));
            rows.push((
                "broker RSS before / after".into(),
                format!("{} / {} KiB (pid {})", c.rss_before / 1024, c.rss_after / 1024, c.broker_pid),
            ));
            rows.push(("RSS per connection".into(), format!("{:.0} B", c.rss_per_conn)));
        }
        if let Some(o) = &self.offline {
            rows.push(("offline sessions".into(), format!("{} (session present: {})", o.sessions, o.sessions_present)));
            rows.push(("enqueue rate (acked)".into(), format!("{:.0} msg/s", o.enqueue_rate)));
            rows.push(("drain rate".into(), format!("{:.0} msg/s", o.drain_rate)));
        }
        if let Some(d) = self.drain {
            rows.push(("drain".into(), format!("{d:?}").to_lowercase()));
        }
        let result = match (self.ok, self.drain) {
            (true, _) => "ok".to_owned(),
            (false, Some(DrainEnd::Deadline)) => format!(
                "FAILED: {} acknowledged messages undelivered at the drain deadline (deliveries were still arriving; raise --drain)",
                self.verdict.lost_after_ack
            ),
            (false, _) => format!("FAILED: {} acknowledged messages lost", self.verdict.lost_after_ack),
        };
        rows.push(("result".into(), result));
        let w = rows.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
        let mut s = String::new();
        for (k, v) in rows {
            let _ = writeln!(s, "{k:<w$}  {v}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_percentiles_come_from_the_histogram_in_microseconds() {
        let mut h = crate::bench::runner::new_histogram();
        for ns in 1..=1000u64 {
            h.record(ns * 1000).unwrap();
        }
        let l = Latency::from_histogram(&h).unwrap();
        assert_eq!(l.count, 1000);
        assert!((l.p50_us - 500.0).abs() < 1.0, "{l:?}");
        assert!((l.p99_us - 990.0).abs() < 1.0, "{l:?}");
        assert!((l.max_us - 1000.0).abs() < 1.0, "{l:?}");
        assert!(Latency::from_histogram(&crate::bench::runner::new_histogram()).is_none());
    }
}
