//! Checker of the `register` workload: after the final heal and the run's stated bound
//! (`register_bound_s`), at most one live session per client id.
//!
//! **two-live-sessions** (violation): two or more connections with the same client id both
//! answered PINGREQ in the final probe, i.e. the cluster let a client id hold two sessions.

use std::collections::BTreeMap;

use super::{Finding, Report};
use crate::history::{Event, Record};

/// Appends the register checker's stats and findings to `report`.
pub fn check(records: &[Record], report: &mut Report) {
    let mut live: BTreeMap<&str, Vec<(u64, &str, usize)>> = BTreeMap::new();
    let (mut connects, mut refused, mut probed) = (0u64, 0u64, 0u64);
    for r in records {
        match &r.event {
            Event::Connect { ok, .. } => {
                connects += 1;
                refused += u64::from(!ok);
            }
            Event::Live { client, conn, node, alive } => {
                probed += 1;
                if *alive {
                    live.entry(client).or_default().push((r.t, conn, *node));
                }
            }
            _ => {}
        }
    }
    let mut two = Finding::new(
        "two-live-sessions",
        "a client id held more than one live session after the final heal and the bound",
    );
    for (client, conns) in &live {
        if conns.len() > 1 {
            let t = conns.iter().map(|c| c.0).max().unwrap_or(0);
            two.add(t, || {
                let list: Vec<String> = conns.iter().map(|(_, c, n)| format!("{c} on node {n}")).collect();
                format!("client id {client}: {} live sessions ({})", conns.len(), list.join(", "))
            });
        }
    }
    report.stats.push(("connection attempts".into(), connects.to_string()));
    report.stats.push(("connections refused or failed".into(), refused.to_string()));
    report.stats.push(("connections probed at the end".into(), probed.to_string()));
    report.stats.push(("client ids with a live session".into(), live.len().to_string()));
    report.stats.push(("bound after the final heal".into(), format!("{} s", report.info.register_bound_s)));
    if probed == 0 {
        let mut none = Finding::new("not-probed", "no connection was left to probe: the check saw nothing");
        none.add(report.duration_ms, || "no `live` records in the history".into());
        report.push(none, false);
    }
    report.push(two, false);
}

#[cfg(test)]
mod tests {
    use super::super::check;
    use super::super::tests::{at, run};
    use crate::history::Event;

    fn live(t: u64, client: &str, conn: &str, node: usize, alive: bool) -> crate::history::Record {
        at(t, Event::Live { client: client.into(), conn: conn.into(), node, alive })
    }

    #[test]
    fn two_answering_connections_with_one_client_id_are_two_live_sessions() {
        let h = [
            run("register", "off"),
            live(10, "r0", "a", 1, true),
            live(10, "r0", "b", 2, true),
            live(10, "r1", "c", 1, true),
        ];
        let r = check(&h).unwrap();
        assert_eq!(r.violations.len(), 1);
        assert_eq!(r.violations[0].kind, "two-live-sessions");
        assert!(r.violations[0].examples[0].contains("r0"));
    }

    #[test]
    fn one_live_session_per_client_id_passes() {
        let h = [run("register", "off"), live(10, "r0", "a", 1, true), live(10, "r0", "b", 2, false)];
        assert!(check(&h).unwrap().ok());
    }
}
