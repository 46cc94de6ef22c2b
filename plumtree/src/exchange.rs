//! Anti-entropy exchange over hash trees (VerneMQ's `plumtree_metadata_exchange_fsm` with
//! `plumtree_metadata_hashtree`), and tombstone reclamation.
//!
//! Every `broadcast_exchange_timer` a node that runs fewer than
//! `broadcast_start_exchange_limit` exchanges picks a random reachable peer and walks both
//! hash trees top-down, one round trip per level: prefixes, buckets, segments, keys. Only the
//! keys that differ are transferred, in both directions, and merged. Unlike VerneMQ no tree is
//! locked: the trees are updated incrementally and a comparison is always against the current
//! state, so a concurrent write at worst makes a key look different and be sent once more.
//!
//! **beyond** VerneMQ, which keeps tombstones forever: wherever a comparison finds a subtree
//! equal, every tombstone under it is *confirmed* for that peer. A tombstone confirmed for every
//! current member and older than `tombstone_grace_period` is reclaimed. A peer that lacks a key
//! whose tombstone it has confirmed has reclaimed it, so it is not sent back.

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;
use vmq_storage::metadata::{MetaKey, Millis, NodeId};

use crate::hashtree::{bucket_of, segment_of};
use crate::message::{BucketSegments, MessageV1, Object, PrefixBuckets, SegmentKeys};
use crate::replica::Replica;

/// An exchange this node started.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The responder.
    pub peer: NodeId,
    /// When it started: tombstones older than this are confirmed by an equal prefix.
    pub started: Millis,
    /// When it is abandoned unless the next step arrives.
    pub deadline: Millis,
    /// Prefixes sent in the first step.
    pub prefixes: Vec<String>,
    /// `ExchangeObjects` answers still expected for the repair chunks sent.
    pub pending_replies: usize,
    /// How long it may wait for its next step.
    pub step_timeout: u64,
    /// For an exchange owed to a healed peer: how many more times it starts again when a step
    /// does not come (its frames may have gone down with the connection the heal replaced).
    pub heal_retries: u8,
}

/// How long a heal exchange waits for each step before it starts again: a repair that waits
/// for the next periodic exchange takes seconds, not the fraction of a second a heal should.
///
/// Short, because the first steps after a heal are the ones most often lost: in the
/// three-node heal tests, now and then every first exchange with the healed node, on both
/// sides, timed out and only its new start completed; with a step of a second such a heal
/// took nearly two. A step answers within milliseconds on a working link, so starting again
/// after a few hundred costs one small message when nothing was lost.
const HEAL_STEP_TIMEOUT: u64 = 300;
/// How many times a heal exchange starts again (about four seconds in all before the
/// periodic exchange takes over).
const HEAL_RETRIES: u8 = 12;

/// Objects (and wanted keys) per repair frame.
const REPAIR_CHUNK: usize = 500;

/// Which parts of a prefix a comparison found equal.
enum Scope {
    Prefix,
    Buckets(BTreeSet<u16>),
    Segments(BTreeSet<u32>),
}

impl Replica {
    /// Starts an exchange with a random reachable peer, if under the limit.
    pub(crate) fn start_exchange(&mut self, now: Millis) {
        if self.exchanges.len() >= self.config.broadcast_start_exchange_limit {
            return;
        }
        let busy: BTreeSet<&NodeId> = self.exchanges.values().map(|x| &x.peer).collect();
        let candidates: Vec<NodeId> = self
            .members
            .iter()
            .filter(|p| **p != self.me && !self.unreachable.contains(*p) && !busy.contains(p))
            .filter(|p| !self.is_refused(p))
            .cloned()
            .collect();
        if candidates.is_empty() {
            return;
        }
        let peer = candidates[self.rng.random_range(0..candidates.len())].clone();
        self.start_exchange_with(now, peer);
    }

    /// Starts an exchange with `peer` now. Not bounded by `broadcast_start_exchange_limit`,
    /// which paces the periodic background exchanges: one owed to a healed or new peer is
    /// what repairs the split, and callers start at most one per peer.
    pub(crate) fn start_exchange_with(&mut self, now: Millis, peer: NodeId) {
        self.start_exchange_as(now, peer, self.config.metadata_exchange_timeout, 0);
    }

    /// Starts an exchange owed to `peer` after a heal: short steps, started again if one
    /// does not come.
    pub(crate) fn start_heal_exchange(&mut self, now: Millis, peer: NodeId) {
        tracing::debug!(%peer, "heal exchange started");
        let step = HEAL_STEP_TIMEOUT.min(self.config.metadata_exchange_timeout);
        self.start_exchange_as(now, peer, step, HEAL_RETRIES);
    }

    fn start_exchange_as(&mut self, now: Millis, peer: NodeId, step_timeout: u64, heal_retries: u8) {
        let id: u64 = self.rng.random();
        let prefixes = self.tree.prefixes();
        let names = prefixes.iter().map(|(p, _)| p.clone()).collect();
        let deadline = now.plus(step_timeout);
        self.exchanges.insert(
            id,
            Exchange {
                peer: peer.clone(),
                started: now,
                deadline,
                prefixes: names,
                pending_replies: 0,
                step_timeout,
                heal_retries,
            },
        );
        self.send(&peer, MessageV1::ExchangeRoot { exchange: id, prefixes });
    }

    /// Drops exchanges past their deadline.
    pub(crate) fn expire_exchanges(&mut self, now: Millis) {
        let expired: Vec<(u64, Exchange)> =
            self.exchanges.iter().filter(|(_, x)| x.deadline <= now).map(|(id, x)| (*id, x.clone())).collect();
        for (id, x) in expired {
            tracing::debug!(peer = %x.peer, retries = x.heal_retries, "exchange timed out");
            self.exchanges.remove(&id);
            self.stats.exchanges_timed_out += 1;
            let reachable = !self.unreachable.contains(&x.peer) && self.members.contains(&x.peer);
            if x.heal_retries > 0 && reachable && !self.is_refused(&x.peer) {
                self.start_exchange_as(now, x.peer, x.step_timeout, x.heal_retries - 1);
            }
        }
    }

    fn finish_exchange(&mut self, now: Millis, id: u64) {
        if let Some(x) = self.exchanges.remove(&id) {
            tracing::debug!(peer = %x.peer, "exchange completed");
            self.stats.exchanges_completed += 1;
            let peer = self.peer_stats.entry(x.peer).or_default();
            peer.completed += 1;
            peer.last_completed = Some(now);
        }
    }

    /// The running exchange `id` with `from`, refreshed, or `None` for a stale answer.
    fn exchange_step(&mut self, now: Millis, from: &NodeId, id: u64) -> Option<Exchange> {
        let x = self.exchanges.get_mut(&id).filter(|x| x.peer == *from)?;
        x.deadline = now.plus(x.step_timeout);
        Some(x.clone())
    }

    /// One exchange message (either role).
    pub(crate) fn handle_exchange(&mut self, now: Millis, from: &NodeId, msg: MessageV1) {
        match msg {
            MessageV1::ExchangeRoot { exchange, prefixes } => self.on_root(from, exchange, prefixes),
            MessageV1::ExchangeBuckets { exchange, prefixes } => self.on_buckets(now, from, exchange, prefixes),
            MessageV1::ExchangeSegments { exchange, buckets } => self.on_segments(from, exchange, buckets),
            MessageV1::ExchangeKeys { exchange, segments } => self.on_keys(now, from, exchange, segments),
            MessageV1::ExchangeRepair { exchange, objects, want } => {
                self.merge_all(now, from, objects);
                let objects = self.objects_for(from, &want);
                self.send(from, MessageV1::ExchangeObjects { exchange, objects });
            }
            MessageV1::ExchangeObjects { exchange, objects } => {
                if self.exchange_step(now, from, exchange).is_some() {
                    self.merge_all(now, from, objects);
                    let left = self.exchanges.get_mut(&exchange).map(|x| {
                        x.pending_replies = x.pending_replies.saturating_sub(1);
                        x.pending_replies
                    });
                    if left == Some(0) {
                        self.finish_exchange(now, exchange);
                    }
                }
            }
            other => tracing::debug!(peer = %from, kind = ?other, "not an exchange message"),
        }
    }

    /// Responder, step 2.
    fn on_root(&mut self, from: &NodeId, exchange: u64, theirs: Vec<(String, u64)>) {
        let theirs: BTreeMap<String, u64> = theirs.into_iter().collect();
        let mine: BTreeMap<String, u64> = self.tree.prefixes().into_iter().collect();
        let all: BTreeSet<&String> = theirs.keys().chain(mine.keys()).collect();
        let mut differ = Vec::new();
        for prefix in all {
            if theirs.get(prefix) == mine.get(prefix) {
                self.confirm(from, prefix, Scope::Prefix, None);
            } else {
                differ.push(PrefixBuckets { prefix: prefix.clone(), buckets: self.tree.buckets(prefix) });
            }
        }
        self.send(from, MessageV1::ExchangeBuckets { exchange, prefixes: differ });
    }

    /// Initiator, step 3.
    fn on_buckets(&mut self, now: Millis, from: &NodeId, exchange: u64, prefixes: Vec<PrefixBuckets>) {
        let Some(x) = self.exchange_step(now, from, exchange) else {
            return;
        };
        let listed: BTreeSet<&String> = prefixes.iter().map(|p| &p.prefix).collect();
        for prefix in &x.prefixes {
            if !listed.contains(prefix) {
                // Equal at the responder to what we sent at the start.
                self.confirm(from, prefix, Scope::Prefix, Some(x.started));
            }
        }
        let mut differ = Vec::new();
        for PrefixBuckets { prefix, buckets } in prefixes {
            let theirs: BTreeMap<u16, u64> = buckets.into_iter().collect();
            let mine: BTreeMap<u16, u64> = self.tree.buckets(&prefix).into_iter().collect();
            let all: BTreeSet<u16> = theirs.keys().chain(mine.keys()).copied().collect();
            let (same, other): (BTreeSet<u16>, BTreeSet<u16>) =
                all.into_iter().partition(|b| theirs.get(b) == mine.get(b));
            self.confirm(from, &prefix, Scope::Buckets(same), None);
            for bucket in other {
                let segments = self.tree.segments(&prefix, bucket);
                differ.push(BucketSegments { prefix: prefix.clone(), bucket, segments });
            }
        }
        if differ.is_empty() {
            self.finish_exchange(now, exchange);
        } else {
            self.send(from, MessageV1::ExchangeSegments { exchange, buckets: differ });
        }
    }

    /// Responder, step 4.
    fn on_segments(&mut self, from: &NodeId, exchange: u64, buckets: Vec<BucketSegments>) {
        let mut wanted: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
        // Equal segments of every bucket, confirmed with one pass over each prefix's
        // tombstones: a pass per bucket made a heal cost buckets x tombstones.
        let mut same_all: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
        for BucketSegments { prefix, bucket, segments } in buckets {
            let theirs: BTreeMap<u32, u64> = segments.into_iter().collect();
            let mine: BTreeMap<u32, u64> = self.tree.segments(&prefix, bucket).into_iter().collect();
            let all: BTreeSet<u32> = theirs.keys().chain(mine.keys()).copied().collect();
            let (same, other): (BTreeSet<u32>, BTreeSet<u32>) =
                all.into_iter().partition(|s| theirs.get(s) == mine.get(s));
            same_all.entry(prefix.clone()).or_default().extend(same);
            wanted.entry(prefix.clone()).or_default().extend(other);
        }
        for (prefix, same) in same_all {
            self.confirm(from, &prefix, Scope::Segments(same), None);
        }
        let mut segments = Vec::new();
        for (prefix, segs) in wanted {
            let mut keys = self.keys_in_segments(&prefix, &segs);
            for seg in segs {
                let keys = keys.remove(&seg).unwrap_or_default();
                segments.push(SegmentKeys { prefix: prefix.clone(), segment: seg, keys });
            }
        }
        self.send(from, MessageV1::ExchangeKeys { exchange, segments });
    }

    /// Initiator, step 5.
    fn on_keys(&mut self, now: Millis, from: &NodeId, exchange: u64, segments: Vec<SegmentKeys>) {
        if self.exchange_step(now, from, exchange).is_none() {
            return;
        }
        let mut by_prefix: BTreeMap<String, Vec<SegmentKeys>> = BTreeMap::new();
        for s in segments {
            by_prefix.entry(s.prefix.clone()).or_default().push(s);
        }
        let (mut give, mut want) = (Vec::new(), Vec::new());
        for (prefix, segs) in by_prefix {
            let seg_set: BTreeSet<u32> = segs.iter().map(|s| s.segment).collect();
            let mut mine = self.keys_in_segments(&prefix, &seg_set);
            for SegmentKeys { segment, keys, .. } in segs {
                let theirs: BTreeMap<Vec<u8>, u64> = keys.into_iter().collect();
                let ours: BTreeMap<Vec<u8>, u64> = mine.remove(&segment).unwrap_or_default().into_iter().collect();
                let all: BTreeSet<&Vec<u8>> = theirs.keys().chain(ours.keys()).collect();
                for k in all {
                    let key = MetaKey::new(prefix.clone(), k.clone());
                    match (ours.get(k), theirs.get(k)) {
                        (Some(a), Some(b)) if a == b => {
                            if let Some(t) = self.tombstones.get_mut(&key) {
                                t.confirmed.insert(from.clone());
                            }
                        }
                        (Some(_), Some(_)) => {
                            give.push(key.clone());
                            want.push(key);
                        }
                        (Some(_), None) => give.push(key),
                        (None, _) => want.push(key),
                    }
                }
            }
        }
        let objects = self.objects_for(from, &give);
        // Frames stay bounded however far apart the replicas are (a joining node gets every
        // key): the repair goes out in chunks, each answered by one `ExchangeObjects`.
        let chunks = objects.len().div_ceil(REPAIR_CHUNK).max(want.len().div_ceil(REPAIR_CHUNK));
        if chunks == 0 {
            self.finish_exchange(now, exchange);
            return;
        }
        if let Some(x) = self.exchanges.get_mut(&exchange) {
            x.pending_replies = chunks;
        }
        let mut objects = objects.into_iter();
        let mut want = want.into_iter();
        for _ in 0..chunks {
            let objects = objects.by_ref().take(REPAIR_CHUNK).collect();
            let want = want.by_ref().take(REPAIR_CHUNK).collect();
            self.send(from, MessageV1::ExchangeRepair { exchange, objects, want });
        }
    }

    /// Our objects for `keys`, except tombstones `peer` lacks because it reclaimed them.
    fn objects_for(&self, peer: &NodeId, keys: &[MetaKey]) -> Vec<(MetaKey, Object)> {
        keys.iter()
            .filter_map(|k| {
                let s = self.objects.get(k)?;
                if self.tombstones.get(k).is_some_and(|t| t.confirmed.contains(peer)) {
                    return None;
                }
                Some((k.clone(), s.object.clone()))
            })
            .collect()
    }

    fn merge_all(&mut self, now: Millis, from: &NodeId, objects: Vec<(MetaKey, Object)>) {
        for (key, object) in objects {
            if self.merge_remote(now, &key, &object) {
                self.stats.keys_repaired += 1;
                self.peer_stats.entry(from.clone()).or_default().keys_repaired += 1;
            }
        }
    }

    /// Our keys in `segments` of `prefix` with their hashes, by segment.
    fn keys_in_segments(&self, prefix: &str, segments: &BTreeSet<u32>) -> BTreeMap<u32, Vec<(Vec<u8>, u64)>> {
        let mut out: BTreeMap<u32, Vec<(Vec<u8>, u64)>> = BTreeMap::new();
        let start = MetaKey::new(prefix, Vec::new());
        for (key, s) in self.objects.range(start..).take_while(|(k, _)| k.prefix == prefix) {
            let seg = segment_of(&key.key);
            if segments.contains(&seg) {
                out.entry(seg).or_default().push((key.key.clone(), s.hash));
            }
        }
        out
    }

    /// Records that `peer` holds the tombstones of `scope` under `prefix` (those unchanged
    /// since `not_after`, when the comparison was against an older snapshot of ours).
    fn confirm(&mut self, peer: &NodeId, prefix: &str, scope: Scope, not_after: Option<Millis>) {
        if matches!(&scope, Scope::Buckets(b) if b.is_empty()) || matches!(&scope, Scope::Segments(s) if s.is_empty()) {
            return;
        }
        let start = MetaKey::new(prefix, Vec::new());
        for (key, t) in self.tombstones.range_mut(start..).take_while(|(k, _)| k.prefix == prefix) {
            let inside = match &scope {
                Scope::Prefix => true,
                Scope::Buckets(b) => b.contains(&bucket_of(segment_of(&key.key))),
                Scope::Segments(s) => s.contains(&segment_of(&key.key)),
            };
            if inside && not_after.is_none_or(|limit| t.since <= limit) {
                t.confirmed.insert(peer.clone());
            }
        }
    }

    /// Reclaims tombstones confirmed on every other member and older than the grace period.
    pub(crate) fn sweep_tombstones(&mut self, now: Millis) {
        let grace = self.config.tombstone_grace_period;
        let others: Vec<&NodeId> = self.members.iter().filter(|m| **m != self.me).collect();
        let ripe: Vec<MetaKey> = self
            .tombstones
            .iter()
            .filter(|(_, t)| now.0.saturating_sub(t.since.0) >= grace)
            .filter(|(_, t)| others.iter().all(|m| t.confirmed.contains(*m)))
            .map(|(k, _)| k.clone())
            .collect();
        for key in ripe {
            self.forget(&key);
            self.stats.tombstones_reclaimed += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use vmq_storage::metadata::{LocalOp, MetaValue, MetadataBackend};

    use super::*;
    use crate::config::PlumtreeConfig;
    use crate::message::Message;
    use crate::persist::Recovered;

    /// Two replicas that know each other but never broadcast (writes happen before they meet).
    fn pair() -> (Replica, Replica) {
        let config = PlumtreeConfig { min_lazy_tick_interval: 0, ..PlumtreeConfig::default() };
        let a = Replica::new(config.clone(), NodeId::new("a"), 1, Recovered::empty());
        let b = Replica::new(config, NodeId::new("b"), 2, Recovered::empty());
        (a, b)
    }

    fn put(r: &mut Replica, k: u32, data: &[u8]) {
        let key = MetaKey::new("subscriber", k.to_be_bytes().to_vec());
        let value = MetaValue { timestamp: 1, data: data.to_vec() };
        r.handle_local(Millis(0), LocalOp::Put { key, value, context: Default::default() });
    }

    /// Tells `r` its members and drops what that sends, including the exchanges a new member
    /// gets at once, so that a test starts the exchange it checks itself.
    fn meet(r: &mut Replica) {
        r.handle_membership(Millis(0), &[NodeId::new("a"), NodeId::new("b")]);
        flush(r);
        r.exchanges.clear();
    }

    fn flush(r: &mut Replica) -> Vec<(NodeId, Message)> {
        while let Some(w) = r.poll_write() {
            r.handle_persisted(w.token);
        }
        std::iter::from_fn(|| r.poll_transmit()).collect()
    }

    /// Delivers frames between the two until quiet; returns every frame sent.
    fn run(a: &mut Replica, b: &mut Replica, mut inflight: Vec<(NodeId, Message)>) -> Vec<Message> {
        let mut log = Vec::new();
        while let Some((to, msg)) = inflight.pop() {
            log.push(msg.clone());
            let (dst, src) = if to.as_str() == "a" { (&mut *a, NodeId::new("b")) } else { (&mut *b, NodeId::new("a")) };
            dst.handle_message(Millis(1), &src, msg);
            inflight.extend(flush(dst));
        }
        log
    }

    #[test]
    fn an_exchange_transfers_only_the_differing_keys_both_ways() {
        let (mut a, mut b) = pair();
        // The same writes on both sides, made by one writer id, give identical objects.
        let mut shared = Replica::new(PlumtreeConfig::default(), NodeId::new("w"), 3, Recovered::empty());
        for k in 0..1000 {
            put(&mut shared, k, b"same");
        }
        let objects: Vec<(MetaKey, Object)> =
            shared.objects.iter().map(|(k, s)| (k.clone(), s.object.clone())).collect();
        for r in [&mut a, &mut b] {
            for (k, o) in &objects {
                r.merge_remote(Millis(0), k, o);
            }
        }
        put(&mut a, 5000, b"only on a");
        put(&mut b, 6000, b"only on b");
        put(&mut b, 7, b"changed on b");
        for r in [&mut a, &mut b] {
            meet(r);
        }
        a.start_exchange(Millis(0));
        let first = flush(&mut a);
        let log = run(&mut a, &mut b, first);
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.stats.exchanges_completed, 1);
        let moved: usize = log
            .iter()
            .map(|m| match m {
                Message::V1(MessageV1::ExchangeRepair { objects, .. } | MessageV1::ExchangeObjects { objects, .. }) => {
                    objects.len()
                }
                _ => 0,
            })
            .sum();
        // a sends its key 5000 and its version of key 7; b sends 6000 and its key 7.
        assert_eq!(moved, 4, "{log:?}");
        assert_eq!(a.read(&MetaKey::new("subscriber", 7u32.to_be_bytes().to_vec())).values.len(), 2);
    }

    #[test]
    fn a_confirmed_tombstone_is_not_sent_back_to_a_peer_that_reclaimed_it() {
        let (mut a, mut b) = pair();
        for r in [&mut a, &mut b] {
            meet(r);
        }
        put(&mut a, 1, b"x");
        let key = MetaKey::new("subscriber", 1u32.to_be_bytes().to_vec());
        let context = a.read(&key).context;
        a.handle_local(Millis(0), LocalOp::Delete { key: key.clone(), context });
        let obj = a.objects[&key].object.clone();
        b.merge_remote(Millis(0), &key, &obj);
        flush(&mut a);
        flush(&mut b);
        // b confirms a's tombstone as the responder of an equal prefix.
        a.start_exchange(Millis(0));
        let first = flush(&mut a);
        run(&mut a, &mut b, first);
        assert!(b.tombstones[&key].confirmed.contains(&NodeId::new("a")));
        // a reclaims (as if its grace period passed with b's confirmation).
        a.forget(&key);
        flush(&mut a);
        b.start_exchange(Millis(1));
        let first = flush(&mut b);
        let log = run(&mut a, &mut b, first);
        assert!(!a.objects.contains_key(&key), "tombstone came back: {log:?}");
    }

    #[test]
    fn a_large_repair_travels_in_bounded_frames_and_completes() {
        let (mut a, mut b) = pair();
        for k in 0..1200 {
            put(&mut b, k, b"on b");
        }
        for k in 2000..2700 {
            put(&mut a, k, b"on a");
        }
        for r in [&mut a, &mut b] {
            meet(r);
        }
        a.start_exchange(Millis(0));
        let first = flush(&mut a);
        let log = run(&mut a, &mut b, first);
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.object_count(), 1900);
        assert_eq!(a.stats.exchanges_completed, 1);
        assert!(a.exchanges.is_empty());
        for m in &log {
            if let Message::V1(MessageV1::ExchangeRepair { objects, want, .. }) = m {
                assert!(objects.len() <= REPAIR_CHUNK && want.len() <= REPAIR_CHUNK);
            }
            if let Message::V1(MessageV1::ExchangeObjects { objects, .. }) = m {
                assert!(objects.len() <= REPAIR_CHUNK);
            }
        }
    }
}
