//! `fanin`, `fanout`, `pairs`, `cluster` and `latency`: plans of online publishers and
//! subscribers run by one driver, [`run_plan`].

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::report::{Latency, Report};
use super::runner::{self, Counters, PubSpec, SubSpec};
use super::{Params, Scenario};
use crate::accounting::{self, PublisherId, SubscriberId};

/// Who publishes where, who subscribes to what, and which subscriber should hear which publisher.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Publishers.
    pub pubs: Vec<PubSpec>,
    /// Subscribers.
    pub subs: Vec<SubSpec>,
    /// (subscriber, publisher) pairs connected by a subscription.
    pub expect: Vec<(SubscriberId, PublisherId)>,
}

fn topic(p: &Params, rest: &str) -> String {
    format!("bench/{}/{}/{rest}", p.run_tag, p.scenario.name())
}

fn sub(p: &Params, addr: std::net::SocketAddr, filter: String, i: u32) -> SubSpec {
    SubSpec { addr, filter, client_id: format!("vmqb-{}-s{i}", p.run_tag), persistent: false }
}

fn publisher(p: &Params, id: u32, topic: String, share: u32) -> PubSpec {
    PubSpec {
        id: PublisherId(id),
        addr: p.addr,
        topic,
        rate: p.rate.map(|r| r / f64::from(share.max(1))),
        max_messages: u64::MAX,
    }
}

/// `fanin`: `n` publishers on their own topics, one subscriber on the wildcard.
pub async fn fanin(p: &Params, n: u32) -> anyhow::Result<Report> {
    let plan = Plan {
        pubs: (0..n).map(|i| publisher(p, i, topic(p, &i.to_string()), n)).collect(),
        subs: vec![sub(p, p.addr, topic(p, "+"), 0)],
        expect: (0..n).map(|i| (SubscriberId(0), PublisherId(i))).collect(),
    };
    run_plan(p, plan).await
}

/// `latency`: like `fanin`, paced at `--rate` in total.
pub async fn latency(p: &Params, n: u32) -> anyhow::Result<Report> {
    fanin(p, n).await
}

/// `fanout`: one publisher, `n` subscribers of its topic.
pub async fn fanout(p: &Params, n: u32) -> anyhow::Result<Report> {
    let plan = Plan {
        pubs: vec![publisher(p, 0, topic(p, "t"), 1)],
        subs: (0..n).map(|i| sub(p, p.addr, topic(p, "t"), i)).collect(),
        expect: (0..n).map(|i| (SubscriberId(i), PublisherId(0))).collect(),
    };
    run_plan(p, plan).await
}

/// `pairs` (and `cluster`, whose subscribers connect to `--addr2`): `n` publisher/subscriber
/// pairs on one topic each.
pub async fn pairs(p: &Params, n: u32) -> anyhow::Result<Report> {
    let sub_addr = if p.scenario == Scenario::Cluster { p.addr2 } else { p.addr };
    let plan = Plan {
        pubs: (0..n).map(|i| publisher(p, i, topic(p, &i.to_string()), n)).collect(),
        subs: (0..n).map(|i| sub(p, sub_addr, topic(p, &i.to_string()), i)).collect(),
        expect: (0..n).map(|i| (SubscriberId(i), PublisherId(i))).collect(),
    };
    run_plan(p, plan).await
}

/// How long `cluster` waits after its subscribers subscribed on `--addr2` before publishing on
/// `--addr`: replication takes milliseconds on a healthy cluster.
const CLUSTER_SUBSCRIPTIONS_SETTLE: Duration = Duration::from_secs(1);

/// Connects the plan, publishes for `p.duration`, drains for at most `p.drain`, checks the
/// histories and builds the report.
pub async fn run_plan(p: &Params, plan: Plan) -> anyhow::Result<Report> {
    let sub_conns = runner::connect_subscribers(p, &plan.subs).await?;
    if p.scenario == Scenario::Cluster {
        // The subscriptions reach the publishers' node by replication, after their SUBACK: a
        // publish routed there before that has no subscriber yet and is acknowledged without
        // one (as in VerneMQ), which the check would count as lost.
        tokio::time::sleep(CLUSTER_SUBSCRIPTIONS_SETTLE).await;
    }
    let pub_conns = runner::connect_publishers(p, &plan.pubs).await?;
    let counters = Arc::new(Counters::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let epoch = Instant::now();
    let deadline = epoch + p.duration;
    let hard_deadline = deadline + p.drain;
    if p.progress {
        let label = format!("{} {}", p.scenario.name(), p.broker);
        tokio::spawn(runner::progress(label, epoch, counters.clone(), stop_rx.clone()));
    }
    let subs: Vec<_> = sub_conns
        .into_iter()
        .map(|c| tokio::spawn(runner::run_subscriber(c, epoch, stop_rx.clone(), hard_deadline, counters.clone())))
        .collect();
    let pub_logs = runner::run_publishers(p, pub_conns, &plan.pubs, epoch, deadline, hard_deadline, &counters).await?;
    let publish_end = Instant::now();
    let expected: u64 =
        plan.expect.iter().filter_map(|(_, pid)| pub_logs.iter().find(|l| l.id == *pid)).map(|l| l.sent()).sum();
    // QoS 0 loss is allowed, so a quiet second means the broker has nothing more to give.
    let drain_end = runner::await_deliveries(&counters, expected, Duration::from_secs(1), hard_deadline).await;
    let _ = stop_tx.send(true);
    let mut sub_logs = Vec::new();
    let mut hist = runner::new_histogram();
    let mut last = None;
    for t in subs {
        let o = t.await??;
        sub_logs.push(o.log);
        hist.add(&o.latency)?;
        last = last.max(o.last_delivery);
    }
    let verdict = accounting::check(&pub_logs, &sub_logs, &plan.expect);
    let mut r = Report::new(p);
    r.publishers = plan.pubs.len() as u64;
    r.subscribers = plan.subs.len() as u64;
    let publish_secs = publish_end.duration_since(epoch).as_secs_f64().max(1e-9);
    r.send_rate = verdict.sent as f64 / publish_secs.min(p.duration.as_secs_f64()).max(1e-9);
    let delivery_secs = last.map_or(publish_secs, |l| l.duration_since(epoch).as_secs_f64()).max(1e-9);
    r.throughput = verdict.delivered as f64 / delivery_secs;
    r.elapsed_s = epoch.elapsed().as_secs_f64();
    r.latency = Latency::from_histogram(&hist);
    r.drain = Some(drain_end);
    r.set_verdict(verdict);
    Ok(r)
}
