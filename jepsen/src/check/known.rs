//! The list of violations the cluster is known to have today, and the comparison of a run's
//! verdict with it (what CI checks).
//!
//! One entry per line, `#` starts a comment:
//!
//! ```text
//! workload  backend  nemesis         violation   must|may  what will fix it
//! queue     *        partition,kill  lost-acked  may       ack QoS 1 after the forward is accepted
//! ```
//!
//! `backend` and `nemesis` may be `*`; `nemesis` is compared as a set. `must`: the violation is
//! expected in every such run, and a run without it fails (it was fixed: remove the entry).
//! `may`: it depends on timing and may or may not show. A run fails on any violation kind that
//! no entry names, so an entry never hides a new kind of violation.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, bail};

use crate::history::RunInfo;

/// Whether a listed violation must show in every matching run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Every matching run has it.
    Must,
    /// Timing-dependent: a matching run may have it.
    May,
}

/// One line of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Workload name.
    pub workload: String,
    /// Backend or `*`.
    pub backend: String,
    /// Nemesis kinds, sorted, or `None` for `*`.
    pub nemesis: Option<BTreeSet<String>>,
    /// Violation kind.
    pub violation: String,
    /// Must or may.
    pub expect: Expect,
    /// What will fix it.
    pub fix: String,
    /// Line number in the file.
    pub line: usize,
}

fn nemesis_set(s: &str) -> BTreeSet<String> {
    s.split(',').map(str::trim).filter(|p| !p.is_empty() && *p != "none").map(String::from).collect()
}

/// Parses the list.
pub fn parse(text: &str) -> anyhow::Result<Vec<Entry>> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let mut f = line.split_whitespace();
        let mut field =
            |what: &str| f.next().map(str::to_owned).with_context(|| format!("line {}: missing {what}", i + 1));
        let (workload, backend, nemesis, violation, expect) =
            (field("workload")?, field("backend")?, field("nemesis")?, field("violation")?, field("must|may")?);
        let fix = f.collect::<Vec<_>>().join(" ");
        if fix.is_empty() {
            bail!("line {}: say what will fix `{violation}`", i + 1);
        }
        out.push(Entry {
            workload,
            backend,
            nemesis: (nemesis != "*").then(|| nemesis_set(&nemesis)),
            violation,
            expect: match expect.as_str() {
                "must" => Expect::Must,
                "may" => Expect::May,
                other => bail!("line {}: `{other}` is neither must nor may", i + 1),
            },
            fix,
            line: i + 1,
        });
    }
    Ok(out)
}

/// Reads and parses the list.
pub fn load(path: &Path) -> anyhow::Result<Vec<Entry>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse(&text).with_context(|| format!("in {}", path.display()))
}

impl Entry {
    fn applies(&self, run: &RunInfo) -> bool {
        self.workload == run.workload
            && (self.backend == "*" || self.backend == run.backend)
            && self.nemesis.as_ref().is_none_or(|n| *n == nemesis_set(&run.nemesis))
    }
}

/// A run's verdict against the list.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Comparison {
    /// Violations found that the list names for this run.
    pub known: Vec<String>,
    /// Violations found that the list does not name: a regression or a new finding.
    pub unexpected: Vec<String>,
    /// `must` entries for this run whose violation did not show: fixed, update the list.
    pub missing: Vec<String>,
}

impl Comparison {
    /// True when the verdict matches the list.
    pub fn ok(&self) -> bool {
        self.unexpected.is_empty() && self.missing.is_empty()
    }
}

/// Compares the violation kinds `found` in a run with the list.
pub fn compare(entries: &[Entry], run: &RunInfo, found: &BTreeSet<String>) -> Comparison {
    let applicable: Vec<&Entry> = entries.iter().filter(|e| e.applies(run)).collect();
    let mut c = Comparison::default();
    for kind in found {
        match applicable.iter().find(|e| e.violation == *kind) {
            Some(e) => c.known.push(format!("{kind} (known, line {}: {})", e.line, e.fix)),
            None => c.unexpected.push(kind.clone()),
        }
    }
    for e in applicable.iter().filter(|e| e.expect == Expect::Must) {
        if !found.contains(&e.violation) {
            c.missing.push(format!("{} (line {}, listed as must)", e.violation, e.line));
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::tests::run;
    use crate::history::Event;

    fn info(workload: &str) -> RunInfo {
        match run(workload, "off").event {
            Event::Run(i) => i,
            _ => unreachable!("run() builds a run record"),
        }
    }

    const LIST: &str = "\
# comment
queue * partition lost-acked may  the data path fix
register vmq_swc * two-live-sessions must  registration through a leader
";

    fn set(kinds: &[&str]) -> BTreeSet<String> {
        kinds.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn may_entries_pass_whether_or_not_the_violation_shows() {
        let list = parse(LIST).unwrap();
        assert!(compare(&list, &info("queue"), &set(&["lost-acked"])).ok());
        assert!(compare(&list, &info("queue"), &set(&[])).ok());
    }

    #[test]
    fn an_unlisted_violation_fails_even_next_to_a_listed_one() {
        let list = parse(LIST).unwrap();
        let c = compare(&list, &info("queue"), &set(&["lost-acked", "qos2-duplicate"]));
        assert!(!c.ok());
        assert_eq!(c.unexpected, ["qos2-duplicate"]);
    }

    #[test]
    fn a_must_entry_that_no_longer_shows_fails() {
        let list = parse(LIST).unwrap();
        let c = compare(&list, &info("register"), &set(&[]));
        assert_eq!(c.missing.len(), 1);
        assert!(compare(&list, &info("register"), &set(&["two-live-sessions"])).ok());
    }

    #[test]
    fn entries_match_nemesis_as_a_set_and_backend_exactly() {
        let list = parse("queue vmq_plumtree kill,partition lost-acked must fix\n").unwrap();
        let mut i = info("queue");
        i.nemesis = "partition,kill".into();
        i.backend = "vmq_plumtree".into();
        assert!(compare(&list, &i, &set(&["lost-acked"])).ok());
        i.backend = "vmq_swc".into();
        assert_eq!(compare(&list, &i, &set(&["lost-acked"])).unexpected, ["lost-acked"]);
    }

    #[test]
    fn entries_without_a_fix_or_with_a_bad_status_are_rejected() {
        assert!(parse("queue * * lost-acked may\n").is_err());
        assert!(parse("queue * * lost-acked sometimes fix\n").is_err());
    }
}
