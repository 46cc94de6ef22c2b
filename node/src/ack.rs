//! Acceptance tickets for sequenced logs: what a QoS 1/2 publisher waits for before its
//! PUBACK/PUBREC when its message was forwarded to another node.
//!
//! The sender of a log numbers its entries `1, 2, 3, ...`; the receiver reports how far it
//! has accepted them, cumulatively. One [`Progress`] per log is published through a
//! `watch` channel, so a ticket costs a reference count and a sequence number, not a
//! channel per message. This module is a leaf: the broker waits on tickets, the cluster
//! transport hands them out, and neither depends on the other through it.

use std::sync::Arc;

use tokio::sync::watch;

/// How far the receiver of a log has taken it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// Every entry up to and including this one was accepted (or refused, see `refused`).
    pub accepted: u64,
    /// Every entry up to and including this one that was not accepted never will be: the
    /// log was given up (its peer left the cluster, or the node shuts down).
    pub abandoned: u64,
    /// Every entry up to and including this one is durable on the sending node (its outbox
    /// for an unreachable receiver), so it will be delivered even across a restart: as good
    /// as accepted for the publisher.
    pub secured: u64,
    /// Recent entries at or below `accepted` that the receiver refused (e.g. its disk was
    /// full); sorted. Only the most recent [`MAX_REFUSED`] are kept: tickets are waited for
    /// as soon as they are handed out, long before that many refusals follow.
    pub refused: Arc<[u64]>,
}

/// Refused sequence numbers kept in a [`Progress`].
pub const MAX_REFUSED: usize = 4096;

impl Progress {
    fn outcome(&self, seq: u64) -> Option<Result<(), NotAccepted>> {
        if seq <= self.secured && seq > self.accepted {
            return Some(Ok(()));
        }
        if seq <= self.accepted {
            if self.refused.binary_search(&seq).is_ok() {
                return Some(Err(NotAccepted::Refused));
            }
            return Some(Ok(()));
        }
        (seq <= self.abandoned).then_some(Err(NotAccepted::Abandoned))
    }
}

/// Why an entry was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotAccepted {
    /// The receiving node could not take it (e.g. it could not store it).
    #[error("the receiving node refused the message")]
    Refused,
    /// The link was given up before the receiver accepted it.
    #[error("the link to the receiving node was given up")]
    Abandoned,
}

/// Resolves once entry `seq` of one log was accepted or refused.
#[derive(Debug)]
#[must_use]
pub struct Ticket {
    progress: watch::Receiver<Progress>,
    seq: u64,
}

impl Ticket {
    /// A ticket for entry `seq` of the log whose progress `progress` follows.
    pub fn new(progress: watch::Receiver<Progress>, seq: u64) -> Self {
        Ticket { progress, seq }
    }

    /// The entry's sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Waits for the receiver's verdict. A log whose sender is gone counts as abandoned.
    pub async fn wait(mut self) -> Result<(), NotAccepted> {
        self.settled().await
    }

    /// [`Ticket::wait`] without giving the ticket up: the wait may be dropped and begun again
    /// (in a `select!`) without missing the verdict.
    pub async fn settled(&mut self) -> Result<(), NotAccepted> {
        let seq = self.seq;
        match self.progress.wait_for(|p| p.outcome(seq).is_some()).await {
            Ok(p) => p.outcome(seq).unwrap_or(Err(NotAccepted::Abandoned)),
            Err(_) => Err(NotAccepted::Abandoned),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tickets_resolve_when_the_cumulative_acceptance_reaches_them() {
        let (tx, rx) = watch::channel(Progress::default());
        let first = Ticket::new(rx.clone(), 1);
        let third = tokio::spawn(Ticket::new(rx.clone(), 3).wait());
        tx.send_modify(|p| p.accepted = 2);
        assert_eq!(first.wait().await, Ok(()));
        assert!(!third.is_finished());
        tx.send_modify(|p| {
            p.accepted = 3;
            p.refused = Arc::from([3u64].as_slice());
        });
        assert_eq!(third.await.unwrap(), Err(NotAccepted::Refused));
    }

    #[tokio::test]
    async fn entries_secured_by_the_sender_resolve_before_the_receiver_accepts_them() {
        let (tx, rx) = watch::channel(Progress::default());
        let t = tokio::spawn(Ticket::new(rx, 4).wait());
        tx.send_modify(|p| p.secured = 4);
        assert_eq!(t.await.unwrap(), Ok(()));
    }

    #[tokio::test]
    async fn abandoned_and_orphaned_logs_fail_their_tickets() {
        let (tx, rx) = watch::channel(Progress::default());
        let t = Ticket::new(rx.clone(), 5);
        tx.send_modify(|p| p.abandoned = 9);
        assert_eq!(t.wait().await, Err(NotAccepted::Abandoned));
        let t = Ticket::new(rx, 10);
        drop(tx);
        assert_eq!(t.wait().await, Err(NotAccepted::Abandoned));
    }
}
