//! The receiving side of forwarded publishes: routes the frames of one read of a peer's
//! `Publish` stream to local queues, in the reader's own task (one per link), never behind
//! the metadata driver; the batch is accepted once every offline queue it went to has it on
//! disk, which is when the transport acknowledges it to the sending node.

use std::sync::Arc;

use bytes::Bytes;
use tracing::warn;
use vmq_storage::metadata::NodeId;

use super::transport::{Acceptance, PublishSink};
use super::wire::publish::{Decoder, Forwarded};
use crate::broker::Broker;
use crate::broker::queue::{Durable, Wakes};

/// Routes forwarded publishes into the local broker.
pub(crate) struct Router {
    broker: Arc<Broker>,
}

impl Router {
    pub(crate) fn new(broker: Arc<Broker>) -> Self {
        Router { broker }
    }
}

impl PublishSink for Router {
    fn deliver(&self, from: &NodeId, frames: Vec<(u64, Bytes)>) -> Acceptance {
        // Subscribers are woken once per batch, not once per message.
        let mut wakes = Wakes::default();
        let mut waits: Vec<(u64, Vec<Durable>)> = Vec::new();
        let mut decoder = Decoder::default();
        for (seq, payload) in frames {
            match decoder.decode(payload) {
                Some(Forwarded { msg, plain, shared }) => {
                    let outcome = self.broker.publish_remote_batched(Arc::new(msg), plain, &shared, &mut wakes);
                    if !outcome.durable.is_empty() {
                        waits.push((seq, outcome.durable));
                    }
                }
                // Accepted all the same: the sender would send the same bytes again for ever.
                None => warn!(peer = %from, seq, "malformed forwarded publish ignored"),
            }
        }
        wakes.wake_all();
        if waits.is_empty() {
            return Acceptance::Done(Vec::new());
        }
        Acceptance::Later(Box::pin(async move {
            let mut refused = Vec::new();
            for (seq, tickets) in waits {
                for ticket in tickets {
                    if let Err(e) = ticket.wait().await {
                        warn!(seq, error = %e, "forwarded publish not stored; refused to its sender");
                        refused.push(seq);
                        break;
                    }
                }
            }
            refused
        }))
    }
}
