//! Wills whose publication waits for the Will Delay Interval [MQTT-3.1.3-9]: one heap for the
//! whole broker, ordered by due time, instead of a sleeping task per disconnected client. The
//! node's sweep task sleeps until [`Broker::next_will_due`] and calls
//! [`Broker::publish_due_wills`]; [`Broker::will_scheduled`] wakes it when an earlier will
//! arrives.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::message::Msg;
use super::{Broker, SessionSlot};

/// One will waiting for its delay.
#[derive(Debug)]
struct Pending {
    due: Instant,
    /// Tie-breaker keeping wills due at the same instant in scheduling order.
    seq: u64,
    msg: Arc<Msg>,
    slot: Arc<SessionSlot>,
    /// The registration generation of the connection that left the will.
    generation: u64,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

/// The delayed wills of a broker.
#[derive(Debug, Default)]
pub(super) struct DelayedWills {
    heap: BinaryHeap<Reverse<Pending>>,
    next_seq: u64,
}

impl DelayedWills {
    fn push(&mut self, due: Instant, msg: Arc<Msg>, slot: Arc<SessionSlot>, generation: u64) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Reverse(Pending { due, seq, msg, slot, generation }));
    }

    fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(p)| p.due)
    }

    /// Removes the wills due at `now` into `out`, leaving out those whose session was resumed
    /// meanwhile.
    fn take_due(&mut self, now: Instant, out: &mut Vec<Arc<Msg>>) {
        while self.heap.peek().is_some_and(|Reverse(p)| p.due <= now) {
            let Some(Reverse(p)) = self.heap.pop() else { break };
            // A reconnect within the delay resumes the session and cancels the will.
            let st = p.slot.state();
            let resumed = st.generation != p.generation || st.connection.is_some();
            drop(st);
            if !resumed {
                out.push(p.msg);
            }
        }
    }
}

impl Broker {
    /// Publishes `will` of the connection of registration `generation` on `slot` after
    /// `delay`, unless the session was resumed by then; at once when `delay` is zero.
    pub fn schedule_will(
        &self,
        will: Arc<Msg>,
        delay: Duration,
        slot: Arc<SessionSlot>,
        generation: u64,
        now: Instant,
    ) {
        if delay.is_zero() {
            self.publish(will);
            return;
        }
        let due = now + delay;
        let earlier = {
            let mut wills = self.delayed_wills();
            let earlier = wills.next_due().is_none_or(|at| due < at);
            wills.push(due, will, slot, generation);
            earlier
        };
        if earlier {
            self.will_scheduled.notify_one();
        }
    }

    /// When the next delayed will is due.
    pub fn next_will_due(&self) -> Option<Instant> {
        self.delayed_wills().next_due()
    }

    /// Resolves when a will due earlier than every other was scheduled (the sweep task then
    /// sleeps until [`Broker::next_will_due`] again).
    pub async fn will_scheduled(&self) {
        self.will_scheduled.notified().await;
    }

    /// Publishes the delayed wills due at `now`; returns how many.
    pub fn publish_due_wills(&self, now: Instant) -> usize {
        let mut due = Vec::new();
        self.delayed_wills().take_due(now, &mut due);
        let n = due.len();
        for will in due {
            self.publish(will);
        }
        n
    }

    fn delayed_wills(&self) -> std::sync::MutexGuard<'_, DelayedWills> {
        // Every section leaves the heap consistent, so a poisoned lock is still usable.
        self.wills.lock().unwrap_or_else(|e| e.into_inner())
    }
}
