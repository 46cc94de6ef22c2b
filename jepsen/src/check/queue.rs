//! Checker of the `queue` workload.
//!
//! - **lost-acked** (violation): a QoS 1/2 publish acknowledged to its publisher that a
//!   subscriber whose first SUBACK came before the publish was sent never received by the end.
//! - **qos2-duplicate** (violation): a QoS 2 message delivered twice to a QoS 2 subscriber.
//! - **reordered** (violation): a first delivery with a lower sequence number than one already
//!   delivered from the same publisher connection (epoch).
//! - Allowed: **qos0-loss**; **qos1-duplicate**; **uncertain-window-loss**, an acknowledged
//!   publish lost for a subscriber whose latest SUBACK before the publish was made on another
//!   node, either less than [`WINDOW`] before the publish and not the subscriber's first
//!   (publishers wait for the first ones to replicate; this one was still being
//!   replicated: VerneMQ's subscription table is eventually consistent, and the window of
//!   uncertainty before a netsplit is detected is the same case), or, with
//!   `allow_publish_during_netsplit = on`, during a network fault that the publish came in or
//!   shortly after (the documented "publish that does not take into account a subscription made
//!   on a remote node"). With the setting `off` a publish in a detected netsplit must be refused,
//!   so only the first case is allowed.

use std::collections::{BTreeMap, HashMap};

use super::{Finding, Report, fault_windows};
use crate::history::{Event, Record};

/// How long a subscription made on one node may stay unknown to the others: the failure
/// detector needs about a second to declare a netsplit, replication a little more.
pub const WINDOW: u64 = 3_000;

#[derive(Debug, Default)]
struct Pub {
    t: u64,
    qos: u8,
    epoch: u32,
    node: usize,
    acked: Option<u64>,
}

/// Subscriber QoS that receives a publisher's messages: QoS 0 and 1 go to `jq/1/#`, QoS 2 to
/// `jq/2/#` (see the workload).
fn route(pub_qos: u8) -> u8 {
    pub_qos.max(1)
}

/// Appends the queue checker's stats and findings to `report`.
pub fn check(records: &[Record], report: &mut Report) {
    let publish_on = report.info.netsplit_settings.get("allow_publish_during_netsplit").is_some_and(|v| v == "on");
    let network_faults: Vec<(u64, u64)> = fault_windows(records)
        .into_iter()
        .filter(|(_, _, f)| f.starts_with("partition") || f == "slow")
        .map(|(s, e, _)| (s, e))
        .collect();
    let mut pubs: HashMap<(String, u64), Pub> = HashMap::new();
    // Subscriber -> (qos, [(SUBACK time, node)]).
    let mut subs: BTreeMap<String, (u8, Vec<(u64, usize)>)> = BTreeMap::new();
    let mut delivered: HashMap<String, HashMap<(String, u64), u32>> = HashMap::new();
    let mut reordered =
        Finding::new("reordered", "a message delivered after a later one from the same publisher connection");
    let mut dup2 = Finding::new("qos2-duplicate", "a QoS 2 message delivered more than once");
    let mut dup1 = Finding::new("qos1-duplicate", "a QoS 1 message delivered more than once (allowed)");
    let mut highest: HashMap<(String, String, u32), u64> = HashMap::new();
    let mut total_deliveries = 0u64;
    for r in records {
        match &r.event {
            Event::Publish { publisher, epoch, seq, node, qos } => {
                pubs.insert(
                    (publisher.clone(), *seq),
                    Pub { t: r.t, qos: *qos, epoch: *epoch, node: *node, acked: None },
                );
            }
            Event::PublishOk { publisher, seq } => {
                if let Some(p) = pubs.get_mut(&(publisher.clone(), *seq)) {
                    p.acked = Some(r.t);
                }
            }
            Event::Subscribed { client, node, qos, topic } => {
                // The filter names the QoS its publishers use (`jq/1/#`, `jq/2/#`); the granted
                // QoS may be lower.
                let class = topic
                    .strip_prefix("jq/")
                    .and_then(|t| t.split('/').next())
                    .and_then(|d| d.parse().ok())
                    .unwrap_or(*qos);
                subs.entry(client.clone()).or_insert((class, Vec::new())).1.push((r.t, *node));
            }
            Event::Deliver { subscriber, publisher, seq, qos, .. } => {
                total_deliveries += 1;
                let count =
                    delivered.entry(subscriber.clone()).or_default().entry((publisher.clone(), *seq)).or_insert(0);
                *count += 1;
                if *count > 1 {
                    let f = if *qos == 2 { &mut dup2 } else { &mut dup1 };
                    f.add(r.t, || format!("{subscriber} received {publisher} #{seq} again"));
                    continue;
                }
                let epoch = pubs.get(&(publisher.clone(), *seq)).map_or(0, |p| p.epoch);
                let key = (subscriber.clone(), publisher.clone(), epoch);
                match highest.get(&key) {
                    Some(&h) if h > *seq => reordered
                        .add(r.t, || format!("{subscriber} received {publisher} #{seq} after #{h} (epoch {epoch})")),
                    _ => {
                        highest.insert(key, *seq);
                    }
                }
            }
            _ => {}
        }
    }
    let mut lost = Finding::new(
        "lost-acked",
        "an acknowledged QoS 1/2 publish never delivered to a subscriber that subscribed before it",
    );
    let mut uncertain = Finding::new(
        "uncertain-window-loss",
        "an acknowledged publish missed a subscription made on a remote node in the window of uncertainty (allowed)",
    );
    let mut qos0 = Finding::new("qos0-loss", "a QoS 0 message not delivered (allowed)");
    let (mut acked, mut expected) = (0u64, 0u64);
    let mut keys: Vec<_> = pubs.iter().collect();
    keys.sort_by_key(|(k, p)| (p.t, k.0.clone(), k.1));
    for ((publisher, seq), p) in keys {
        if p.qos > 0 && p.acked.is_none() {
            continue;
        }
        if p.qos > 0 {
            acked += 1;
        }
        for (sub, (sub_qos, acks)) in &subs {
            if *sub_qos != route(p.qos) {
                continue;
            }
            let Some(&(first, _)) = acks.first() else {
                continue;
            };
            if first >= p.t {
                continue;
            }
            expected += 1;
            let got = delivered.get(sub).is_some_and(|d| d.contains_key(&(publisher.clone(), *seq)));
            if got {
                continue;
            }
            let example = || format!("{publisher} #{seq} (sent t={} ms on node {}) never reached {sub}", p.t, p.node);
            if p.qos == 0 {
                qos0.add(p.t, example);
                continue;
            }
            // The subscriber's latest SUBACK before the publish: made on another node, and
            // recently, or during a network fault this publish came in (or just after)?
            let latest = acks.iter().rev().find(|(t, _)| *t < p.t);
            let in_window = latest.is_some_and(|&(t, node)| {
                // Not for the first SUBACK: the workload gives those time to replicate before
                // anyone publishes.
                let replicating = t != first && p.t - t < WINDOW;
                let split =
                    publish_on && network_faults.iter().any(|&(s, e)| t + WINDOW >= s && t <= e && p.t <= e + WINDOW);
                node != p.node && (replicating || split)
            });
            if in_window {
                uncertain.add(p.t, example);
            } else {
                lost.add(p.t, example);
            }
        }
    }
    let published = pubs.len() as u64;
    report.stats.push(("publishes sent".into(), published.to_string()));
    report.stats.push(("QoS 1/2 publishes acknowledged".into(), acked.to_string()));
    report.stats.push(("subscribers".into(), subs.len().to_string()));
    report.stats.push(("deliveries expected (acknowledged × subscribed)".into(), expected.to_string()));
    report.stats.push(("deliveries seen (duplicates included)".into(), total_deliveries.to_string()));
    report.push(lost, false);
    report.push(dup2, false);
    report.push(reordered, false);
    report.push(uncertain, true);
    report.push(qos0, true);
    report.push(dup1, true);
}

#[cfg(test)]
mod tests {
    use super::super::tests::{at, run};
    use super::super::{Report, check};
    use crate::history::{Event, Record};

    fn publish(t: u64, seq: u64, qos: u8, node: usize) -> Record {
        at(t, Event::Publish { publisher: "p".into(), epoch: 1, seq, node, qos })
    }
    fn ok(t: u64, seq: u64) -> Record {
        at(t, Event::PublishOk { publisher: "p".into(), seq })
    }
    fn sub(t: u64, qos: u8, node: usize) -> Record {
        at(t, Event::Subscribed { client: "s".into(), node, topic: format!("jq/{qos}/#"), qos })
    }
    fn deliver(t: u64, seq: u64, qos: u8) -> Record {
        at(t, Event::Deliver { subscriber: "s".into(), publisher: "p".into(), seq, qos, dup: false })
    }
    fn kinds(r: &Report) -> (Vec<&str>, Vec<&str>) {
        (r.violations.iter().map(|f| f.kind.as_str()).collect(), r.allowed.iter().map(|f| f.kind.as_str()).collect())
    }

    #[test]
    fn acknowledged_publish_missing_at_a_subscriber_is_lost_acked() {
        let h = [
            run("queue", "off"),
            sub(1, 1, 1),
            publish(5, 1, 1, 1),
            ok(6, 1),
            publish(7, 2, 1, 1),
            ok(8, 2),
            deliver(9, 2, 1),
        ];
        let r = check(&h).unwrap();
        assert_eq!(kinds(&r).0, ["lost-acked"]);
        assert_eq!(r.violations[0].count, 1);
        assert!(r.violations[0].examples[0].contains("p #1"), "{:?}", r.violations[0].examples);
    }

    #[test]
    fn unacknowledged_or_pre_subscription_publishes_may_be_missing() {
        let h = [run("queue", "off"), publish(1, 1, 1, 1), ok(2, 1), sub(3, 1, 1), publish(5, 2, 1, 1)];
        assert!(check(&h).unwrap().ok());
    }

    #[test]
    fn qos2_duplicate_is_a_violation_and_qos1_duplicate_is_allowed() {
        let h = [run("queue", "off"), sub(1, 2, 1), publish(5, 1, 2, 1), ok(6, 1), deliver(7, 1, 2), deliver(8, 1, 2)];
        assert_eq!(kinds(&check(&h).unwrap()).0, ["qos2-duplicate"]);
        let h = [run("queue", "off"), sub(1, 1, 1), publish(5, 1, 1, 1), ok(6, 1), deliver(7, 1, 1), deliver(8, 1, 1)];
        let r = check(&h).unwrap();
        assert!(r.ok());
        assert_eq!(kinds(&r).1, ["qos1-duplicate"]);
    }

    #[test]
    fn a_publish_right_after_a_remote_subscription_may_miss_it_under_any_setting() {
        // SUBACK on node 2 at t=100 (first subscription long before, on node 1), publish on
        // node 1 at t=600: replication had 500 ms. A publish on node 2 itself may not miss it.
        for (pub_node, allowed) in [(1, true), (2, false)] {
            let h = [run("queue", "off"), sub(1, 1, 1), sub(100, 1, 2), publish(600, 1, 1, pub_node), ok(601, 1)];
            let r = check(&h).unwrap();
            assert_eq!(r.ok(), allowed, "publish on node {pub_node}");
        }
    }

    #[test]
    fn first_deliveries_out_of_sequence_are_reordered() {
        let h = [
            run("queue", "off"),
            sub(1, 1, 1),
            publish(5, 1, 1, 1),
            ok(6, 1),
            publish(7, 2, 1, 1),
            ok(8, 2),
            deliver(9, 2, 1),
            deliver(10, 1, 1),
        ];
        assert_eq!(kinds(&check(&h).unwrap()).0, ["reordered"]);
    }

    #[test]
    fn qos0_loss_is_allowed() {
        let h = [run("queue", "off"), sub(1, 1, 1), publish(5, 1, 0, 1)];
        let r = check(&h).unwrap();
        assert!(r.ok());
        assert_eq!(kinds(&r).1, ["qos0-loss"]);
    }

    #[test]
    fn loss_of_a_remote_subscription_made_in_the_window_is_allowed_only_with_publish_during_netsplit() {
        let fault = |t, active| {
            at(t, Event::Nemesis { fault: "partition-halves".into(), nodes: vec![1, 2], detail: String::new(), active })
        };
        // Subscribed on node 2 (first at t=1, again at t=1200 after a reconnect, inside a
        // partition from t=1000 to t=4000), publish on node 1 at t=4500, 3.3 s later: allowed
        // only when publishing during a netsplit is.
        let h = |setting| {
            vec![
                run("queue", setting),
                sub(1, 1, 2),
                fault(1000, true),
                sub(1200, 1, 2),
                fault(4000, false),
                publish(4500, 1, 1, 1),
                ok(4501, 1),
            ]
        };
        let on = check(&h("on")).unwrap();
        assert!(on.ok());
        assert_eq!(kinds(&on).1, ["uncertain-window-loss"]);
        assert_eq!(kinds(&check(&h("off")).unwrap()).0, ["lost-acked"]);
    }
}
