//! The failure detector of every simulated node: it reports each change of a link, in order,
//! after the node's own delay, never at once and never ahead of the change.

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;
use rand::rngs::StdRng;

use crate::metadata::Millis;

/// A report due to node `at` (in incarnation `life`): `peer` is now `up` or down.
#[derive(Debug, Clone, Copy)]
pub(super) struct Report {
    pub(super) at: usize,
    pub(super) life: u64,
    pub(super) peer: usize,
    pub(super) up: bool,
}

#[derive(Debug, Default)]
pub(super) struct Detector {
    delay: Vec<u64>,
    jitter: u64,
    /// `(at, peer)`: `at` was told `peer` is unreachable.
    down: BTreeSet<(usize, usize)>,
    /// `(at, peer)`: `at` will believe `peer` unreachable once its scheduled reports arrive.
    expected_down: BTreeSet<(usize, usize)>,
    /// When the last report scheduled per `(at, peer)` is due: later ones never overtake it.
    last_due: BTreeMap<(usize, usize), Millis>,
    reports: BTreeMap<(Millis, u64), Report>,
    seq: u64,
}

impl Detector {
    pub(super) fn add_node(&mut self) {
        self.delay.push(0);
    }

    pub(super) fn set_delay(&mut self, at: usize, ms: u64) {
        self.delay[at] = ms;
    }

    pub(super) fn set_jitter(&mut self, ms: u64) {
        self.jitter = ms;
    }

    pub(super) fn believes_up(&self, at: usize, peer: usize) -> bool {
        !self.down.contains(&(at, peer))
    }

    pub(super) fn is_idle(&self) -> bool {
        self.reports.is_empty()
    }

    /// The link from `at` to `peer` is now `up` (or not): schedules a report unless one
    /// saying so is already due.
    pub(super) fn observe(&mut self, now: Millis, at: usize, life: u64, peer: usize, up: bool, rng: &mut StdRng) {
        let pair = (at, peer);
        if up != self.expected_down.contains(&pair) {
            return;
        }
        if up {
            self.expected_down.remove(&pair);
        } else {
            self.expected_down.insert(pair);
        }
        let mut due = now.plus(self.delay[at] + rng.random_range(0..=self.jitter));
        if let Some(last) = self.last_due.get(&pair) {
            due = due.max(*last);
        }
        self.last_due.insert(pair, due);
        self.seq += 1;
        self.reports.insert((due, self.seq), Report { at, life, peer, up });
    }

    pub(super) fn next_due(&self) -> Option<Millis> {
        self.reports.keys().next().map(|(t, _)| *t)
    }

    /// The earliest report due by `now`, now believed by its node.
    pub(super) fn pop_due(&mut self, now: Millis) -> Option<Report> {
        if self.next_due().is_none_or(|t| t > now) {
            return None;
        }
        let (_, r) = self.reports.pop_first()?;
        if r.up {
            self.down.remove(&(r.at, r.peer));
        } else {
            self.down.insert((r.at, r.peer));
        }
        Some(r)
    }

    /// Node `at` crashed: its next process starts believing every peer reachable.
    pub(super) fn forget(&mut self, at: usize) {
        self.down.retain(|(a, _)| *a != at);
        self.expected_down.retain(|(a, _)| *a != at);
        self.last_due.retain(|(a, _), _| *a != at);
        self.reports.retain(|_, r| r.at != at);
    }
}
