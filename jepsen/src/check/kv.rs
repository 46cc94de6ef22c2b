//! Checker of the `subscriptions` and `retain` workloads: after the final heal every node's
//! replicated state is the same and equals the last acknowledged operation per key.
//!
//! The acceptable values of a key are those of its last acknowledged operation (by
//! acknowledgement time), of operations concurrent with it, and of later operations that were
//! never acknowledged (they may or may not have happened); with no acknowledged operation,
//! absent is acceptable too. The convergence time is from the final heal to the first probe
//! round in which every node showed the same acceptable state.
//!
//! - **diverged** (violation): in the last probe round the nodes disagree.
//! - **wrong-value** (violation): the nodes agree, on a value no acknowledged history allows.
//! - **not-probed** (violation): no probe round was recorded.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{Finding, Report, final_heal};
use crate::history::{Event, Record};

/// Probe round -> node -> (time, observed state).
type Rounds = BTreeMap<u32, BTreeMap<usize, (u64, BTreeMap<String, String>)>>;

#[derive(Debug)]
struct Op {
    key: String,
    value: Option<String>,
    invoked: u64,
    acked: Option<u64>,
}

fn acceptable(ops: &[&Op]) -> BTreeSet<Option<String>> {
    let last = ops.iter().filter(|o| o.acked.is_some()).max_by_key(|o| o.acked);
    let mut out = BTreeSet::new();
    match last {
        None => {
            out.insert(None);
            out.extend(ops.iter().map(|o| o.value.clone()));
        }
        Some(l) => {
            let l_ack = l.acked.unwrap_or(u64::MAX);
            for o in ops {
                let concurrent = o.invoked <= l_ack && o.acked.is_none_or(|a| a >= l.invoked);
                let later_unknown = o.acked.is_none() && o.invoked >= l.invoked;
                if std::ptr::eq(*o, *l) || concurrent || later_unknown {
                    out.insert(o.value.clone());
                }
            }
        }
    }
    out
}

/// Appends the convergence checker's stats and findings to `report`.
pub fn check(records: &[Record], report: &mut Report) {
    let mut ops: HashMap<u64, Op> = HashMap::new();
    // round -> node -> (time, state)
    let mut rounds = Rounds::new();
    for r in records {
        match &r.event {
            Event::Op { id, key, value, .. } => {
                ops.insert(*id, Op { key: key.clone(), value: value.clone(), invoked: r.t, acked: None });
            }
            Event::OpOk { id } => {
                if let Some(o) = ops.get_mut(id) {
                    o.acked = Some(r.t);
                }
            }
            Event::Probe { round, node, state } => {
                rounds.entry(*round).or_default().insert(*node, (r.t, state.clone()));
            }
            _ => {}
        }
    }
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for o in ops.values() {
        by_key.entry(&o.key).or_default().push(o);
    }
    let allowed: BTreeMap<&str, BTreeSet<Option<String>>> = by_key.iter().map(|(k, v)| (*k, acceptable(v))).collect();
    let fits = |state: &BTreeMap<String, String>| {
        allowed.iter().all(|(k, ok)| ok.contains(&state.get(*k).cloned()))
            && state.keys().all(|k| allowed.contains_key(k.as_str()))
    };
    let heal = final_heal(records).unwrap_or(0);
    let mut converged_at = None;
    for nodes in rounds.values() {
        let first = nodes.values().next().map(|(_, s)| s);
        if nodes.values().all(|(_, s)| Some(s) == first) && first.is_some_and(fits) {
            converged_at = nodes.values().map(|(t, _)| *t).max();
            break;
        }
    }
    report.stats.push(("operations".into(), ops.len().to_string()));
    report
        .stats
        .push(("operations acknowledged".into(), ops.values().filter(|o| o.acked.is_some()).count().to_string()));
    report.stats.push(("keys".into(), by_key.len().to_string()));
    report.stats.push(("probe rounds".into(), rounds.len().to_string()));
    report.stats.push((
        "convergence time after the final heal".into(),
        match converged_at {
            Some(t) => format!("{:.1} s", t.saturating_sub(heal) as f64 / 1000.0),
            None => "not converged".into(),
        },
    ));
    let Some((_, last)) = rounds.iter().next_back() else {
        let mut f = Finding::new("not-probed", "no probe round was recorded: the check saw nothing");
        f.add(report.duration_ms, || "no `probe` records in the history".into());
        report.push(f, false);
        return;
    };
    let t = last.values().map(|(t, _)| *t).max().unwrap_or(0);
    let first = last.values().next().map(|(_, s)| s.clone()).unwrap_or_default();
    let mut diverged = Finding::new("diverged", "after the final heal the nodes' replicated state differs");
    let mut wrong = Finding::new(
        "wrong-value",
        "after the final heal the nodes agree on a value that is not the last acknowledged one",
    );
    if last.values().any(|(_, s)| *s != first) {
        let mut keys: BTreeSet<&String> = BTreeSet::new();
        for (_, s) in last.values() {
            keys.extend(s.keys());
        }
        for k in keys {
            let views: Vec<String> = last
                .iter()
                .map(|(n, (_, s))| format!("node {n}: {}", s.get(k).map_or("absent", String::as_str)))
                .collect();
            let values: BTreeSet<Option<&String>> = last.values().map(|(_, s)| s.get(k)).collect();
            if values.len() > 1 {
                diverged.add(t, || format!("{k}: {}", views.join(", ")));
            }
        }
    } else if !fits(&first) {
        for (k, ok) in &allowed {
            let have = first.get(*k).cloned();
            if !ok.contains(&have) {
                wrong.add(t, || format!("{k}: every node shows {:?}, acceptable {:?}", have, ok));
            }
        }
        for k in first.keys().filter(|k| !allowed.contains_key(k.as_str())) {
            wrong.add(t, || format!("{k}: present on every node but never written"));
        }
    }
    report.push(diverged, false);
    report.push(wrong, false);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::check;
    use super::super::tests::{at, run};
    use crate::history::{Event, Record};

    fn op(t: u64, id: u64, key: &str, value: Option<&str>) -> Record {
        at(t, Event::Op { id, key: key.into(), value: value.map(Into::into), node: 1 })
    }
    fn ok(t: u64, id: u64) -> Record {
        at(t, Event::OpOk { id })
    }
    fn probe(t: u64, round: u32, node: usize, state: &[(&str, &str)]) -> Record {
        let state: BTreeMap<String, String> = state.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        at(t, Event::Probe { round, node, state })
    }

    #[test]
    fn nodes_that_disagree_after_the_heal_diverged() {
        let h = [
            run("retain", "off"),
            op(1, 1, "jr/k0", Some("v1")),
            ok(2, 1),
            probe(10, 0, 1, &[("jr/k0", "v1")]),
            probe(10, 0, 2, &[]),
        ];
        let r = check(&h).unwrap();
        assert_eq!(r.violations.len(), 1);
        assert_eq!(r.violations[0].kind, "diverged");
        assert!(r.violations[0].examples[0].contains("node 2: absent"));
    }

    #[test]
    fn agreeing_on_an_overwritten_value_is_wrong_value() {
        let h = [
            run("retain", "off"),
            op(1, 1, "jr/k0", Some("v1")),
            ok(2, 1),
            op(3, 2, "jr/k0", None),
            ok(4, 2),
            probe(10, 0, 1, &[("jr/k0", "v1")]),
            probe(10, 0, 2, &[("jr/k0", "v1")]),
        ];
        assert_eq!(check(&h).unwrap().violations[0].kind, "wrong-value");
    }

    #[test]
    fn an_unacknowledged_later_write_may_or_may_not_have_happened() {
        for seen in ["v1", "v2"] {
            let h = [
                run("retain", "off"),
                op(1, 1, "jr/k0", Some("v1")),
                ok(2, 1),
                op(3, 2, "jr/k0", Some("v2")),
                probe(10, 0, 1, &[("jr/k0", seen)]),
                probe(10, 0, 2, &[("jr/k0", seen)]),
            ];
            assert!(check(&h).unwrap().ok(), "{seen}");
        }
    }

    #[test]
    fn convergence_time_counts_from_the_final_heal() {
        let heal =
            at(5_000, Event::Nemesis { fault: "heal".into(), nodes: vec![], detail: String::new(), active: false });
        let h = [
            run("subscriptions", "off"),
            op(1, 1, "ws0 js/t0", Some("subscribed")),
            ok(2, 1),
            heal,
            probe(6_000, 0, 1, &[]),
            probe(6_000, 0, 2, &[("ws0 js/t0", "subscribed")]),
            probe(7_500, 1, 1, &[("ws0 js/t0", "subscribed")]),
            probe(7_500, 1, 2, &[("ws0 js/t0", "subscribed")]),
        ];
        let r = check(&h).unwrap();
        assert!(r.ok(), "{:?}", r.violations);
        assert!(r.stats.iter().any(|(k, v)| k.starts_with("convergence") && v == "2.5 s"), "{:?}", r.stats);
    }
}
