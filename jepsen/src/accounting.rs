//! Exact per-(publisher, sequence) accounting of a run.
//!
//! Every publisher numbers its messages 0, 1, 2, ... and records which were sent and which the
//! broker acknowledged; every subscriber records each delivery it sees. [`check`] then compares
//! the two sides for each (subscriber, publisher) pair that should have been connected by a
//! subscription, and counts what was lost, what was lost although acknowledged, duplicates and
//! reorderings. The logs are bitsets, so a ten-million-message run costs about a megabyte per
//! stream and recording is a couple of instructions, cheap enough for the hot path.
//!
//! The same logs serve the partition harness: it records histories with these types and
//! checks them with [`check`].

use serde::Serialize;

/// The identifier a publisher writes into every payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct PublisherId(pub u32);

/// Index of a subscriber within a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct SubscriberId(pub u32);

/// A growable set of sequence numbers.
#[derive(Debug, Clone, Default)]
struct BitSet {
    words: Vec<u64>,
}

impl BitSet {
    /// Sets `i` and returns whether it was already set.
    fn insert(&mut self, i: u64) -> bool {
        let (w, b) = ((i / 64) as usize, i % 64);
        if w >= self.words.len() {
            self.words.resize(w + 1, 0);
        }
        let was = self.words[w] & (1 << b) != 0;
        self.words[w] |= 1 << b;
        was
    }

    fn contains(&self, i: u64) -> bool {
        self.words.get((i / 64) as usize).is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
}

/// What one publisher did: messages `0..sent` were written to the socket, and the set of those
/// the broker acknowledged (PUBACK for QoS 1, PUBCOMP for QoS 2).
#[derive(Debug, Clone)]
pub struct PublisherLog {
    /// Whose log this is.
    pub id: PublisherId,
    sent: u64,
    acked: BitSet,
    acked_count: u64,
}

impl PublisherLog {
    /// An empty log for publisher `id`.
    pub fn new(id: PublisherId) -> Self {
        Self { id, sent: 0, acked: BitSet::default(), acked_count: 0 }
    }

    /// Records that the next sequence number was sent and returns it.
    pub fn handle_sent(&mut self) -> u64 {
        self.sent += 1;
        self.sent - 1
    }

    /// Records the broker's acknowledgement of `seq`.
    pub fn handle_acked(&mut self, seq: u64) {
        if !self.acked.insert(seq) {
            self.acked_count += 1;
        }
    }

    /// Messages sent so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Distinct messages acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acked_count
    }
}

/// Deliveries seen by one subscriber from one publisher.
#[derive(Debug, Clone, Default)]
struct StreamLog {
    seen: BitSet,
    delivered: u64,
    duplicates: u64,
    reordered: u64,
    highest: Option<u64>,
}

/// What one subscriber received, split by the publisher named in each payload.
#[derive(Debug, Clone, Default)]
pub struct SubscriberLog {
    streams: Vec<StreamLog>,
    malformed: u64,
}

impl SubscriberLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the delivery of `(publisher, seq)`.
    pub fn handle_delivery(&mut self, publisher: PublisherId, seq: u64) {
        let p = publisher.0 as usize;
        if p >= self.streams.len() {
            self.streams.resize_with(p + 1, StreamLog::default);
        }
        let s = &mut self.streams[p];
        s.delivered += 1;
        if s.seen.insert(seq) {
            s.duplicates += 1;
        } else if s.highest.is_some_and(|h| seq < h) {
            // A first delivery below one already seen: the broker broke the per-publisher
            // order that [MQTT-4.6.0-6] requires for ordered topics.
            s.reordered += 1;
        }
        s.highest = s.highest.max(Some(seq));
    }

    /// Records a payload that did not carry a (publisher, sequence) header.
    pub fn handle_malformed(&mut self) {
        self.malformed += 1;
    }

    /// Deliveries recorded so far, duplicates included.
    pub fn delivered(&self) -> u64 {
        self.streams.iter().map(|s| s.delivered).sum()
    }
}

/// The outcome of comparing publisher and subscriber logs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Messages written by all publishers.
    pub sent: u64,
    /// Messages the broker acknowledged (0 for QoS 0).
    pub acked: u64,
    /// Deliveries seen by all subscribers, duplicates included.
    pub delivered: u64,
    /// Deliveries the subscriptions call for: sent messages times matching subscribers.
    pub expected: u64,
    /// Expected deliveries that never arrived.
    pub lost: u64,
    /// Of `lost`, those whose publish the broker had acknowledged: a broken guarantee at QoS >= 1.
    pub lost_after_ack: u64,
    /// Deliveries of a (publisher, seq) the subscriber had already seen.
    pub duplicates: u64,
    /// First deliveries that arrived after a higher sequence from the same publisher.
    pub reordered: u64,
    /// Deliveries from a publisher the subscriber should not hear, or with a malformed payload.
    pub unexpected: u64,
}

impl Verdict {
    /// True when the broker lost a message it had acknowledged.
    pub fn lost_acknowledged(&self) -> bool {
        self.lost_after_ack > 0
    }
}

/// Compares the logs. `expect` lists which subscriber should receive which publisher's
/// messages; every message a publisher sent should reach each such subscriber.
pub fn check(
    publishers: &[PublisherLog],
    subscribers: &[SubscriberLog],
    expect: &[(SubscriberId, PublisherId)],
) -> Verdict {
    let mut v = Verdict {
        sent: publishers.iter().map(|p| p.sent).sum(),
        acked: publishers.iter().map(|p| p.acked_count).sum(),
        delivered: subscribers.iter().map(SubscriberLog::delivered).sum(),
        unexpected: subscribers.iter().map(|s| s.malformed).sum(),
        ..Verdict::default()
    };
    let empty = StreamLog::default();
    let mut wanted = vec![Vec::new(); subscribers.len()];
    for &(s, p) in expect {
        let Some(w) = wanted.get_mut(s.0 as usize) else {
            continue;
        };
        w.push(p);
        let Some(publog) = publishers.iter().find(|l| l.id == p) else {
            continue;
        };
        let stream = subscribers[s.0 as usize].streams.get(p.0 as usize).unwrap_or(&empty);
        v.expected += publog.sent;
        for seq in 0..publog.sent {
            if !stream.seen.contains(seq) {
                v.lost += 1;
                if publog.acked.contains(seq) {
                    v.lost_after_ack += 1;
                }
            }
        }
    }
    for (sub, wanted) in subscribers.iter().zip(&wanted) {
        for (p, stream) in sub.streams.iter().enumerate() {
            if wanted.contains(&PublisherId(p as u32)) {
                v.duplicates += stream.duplicates;
                v.reordered += stream.reordered;
            } else {
                v.unexpected += stream.delivered;
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publisher(id: u32, sent: u64, acked: &[u64]) -> PublisherLog {
        let mut p = PublisherLog::new(PublisherId(id));
        for _ in 0..sent {
            p.handle_sent();
        }
        for &a in acked {
            p.handle_acked(a);
        }
        p
    }

    #[test]
    fn synthetic_history_reports_lost_duplicated_and_reordered() {
        // Publisher 0 sent 0..6, the broker acknowledged all but 5.
        let p = publisher(0, 6, &[0, 1, 2, 3, 4]);
        let mut s = SubscriberLog::new();
        // 2 is lost (acknowledged), 1 is duplicated, 4 arrives after 5 (reordered),
        // 5 arrives though unacknowledged, 3 arrives.
        for seq in [0, 1, 1, 3, 5, 4] {
            s.handle_delivery(PublisherId(0), seq);
        }
        let v = check(&[p], &[s], &[(SubscriberId(0), PublisherId(0))]);
        assert_eq!(
            v,
            Verdict {
                sent: 6,
                acked: 5,
                delivered: 6,
                expected: 6,
                lost: 1,
                lost_after_ack: 1,
                duplicates: 1,
                reordered: 1,
                unexpected: 0,
            }
        );
        assert!(v.lost_acknowledged());
    }

    #[test]
    fn unacknowledged_loss_is_not_a_broken_guarantee() {
        let p = publisher(0, 3, &[0, 1]);
        let mut s = SubscriberLog::new();
        s.handle_delivery(PublisherId(0), 0);
        s.handle_delivery(PublisherId(0), 1);
        let v = check(&[p], &[s], &[(SubscriberId(0), PublisherId(0))]);
        assert_eq!((v.lost, v.lost_after_ack), (1, 0));
        assert!(!v.lost_acknowledged());
    }

    #[test]
    fn fanout_expects_every_message_at_every_subscriber() {
        let p = publisher(0, 100, &[]);
        let mut full = SubscriberLog::new();
        let mut half = SubscriberLog::new();
        for seq in 0..100 {
            full.handle_delivery(PublisherId(0), seq);
            if seq % 2 == 0 {
                half.handle_delivery(PublisherId(0), seq);
            }
        }
        let expect = [(SubscriberId(0), PublisherId(0)), (SubscriberId(1), PublisherId(0))];
        let v = check(&[p], &[full, half], &expect);
        assert_eq!((v.expected, v.delivered, v.lost, v.duplicates, v.reordered), (200, 150, 50, 0, 0));
    }

    #[test]
    fn deliveries_from_unsubscribed_publishers_and_garbage_are_unexpected() {
        let a = publisher(0, 1, &[0]);
        let b = publisher(1, 1, &[0]);
        let mut s = SubscriberLog::new();
        s.handle_delivery(PublisherId(0), 0);
        s.handle_delivery(PublisherId(1), 0);
        s.handle_malformed();
        let v = check(&[a, b], &[s], &[(SubscriberId(0), PublisherId(0))]);
        assert_eq!((v.lost, v.unexpected, v.expected), (0, 2, 1));
    }

    #[test]
    fn duplicate_acks_count_once_and_bitset_grows_across_words() {
        let mut p = PublisherLog::new(PublisherId(3));
        for _ in 0..200 {
            p.handle_sent();
        }
        p.handle_acked(130);
        p.handle_acked(130);
        assert_eq!((p.sent(), p.acked()), (200, 1));
        let mut s = SubscriberLog::new();
        s.handle_delivery(PublisherId(3), 199);
        s.handle_delivery(PublisherId(3), 64);
        let v = check(&[p], &[s], &[(SubscriberId(0), PublisherId(3))]);
        assert_eq!((v.lost, v.lost_after_ack, v.reordered), (198, 1, 1));
    }
}
