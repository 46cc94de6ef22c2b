//! Outgoing QoS 1/2 messages awaiting acknowledgement, and incoming QoS 2 packet ids awaiting
//! PUBREL. Kept in the session slot between connections so they are resent with their
//! original packet ids on reconnect [MQTT-4.4.0-1].

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use super::queue::Queued;

/// Where an outgoing QoS 1/2 delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutState {
    /// QoS 1 PUBLISH sent, waiting for PUBACK.
    AwaitPubAck,
    /// QoS 2 PUBLISH sent, waiting for PUBREC.
    AwaitPubRec,
    /// PUBREL sent, waiting for PUBCOMP.
    AwaitPubComp,
}

/// One outgoing message in flight.
#[derive(Debug, Clone)]
pub struct OutFlight {
    /// The message.
    pub queued: Queued,
    /// Protocol state.
    pub state: OutState,
    /// When it was last sent (for `retry_interval`).
    pub sent_at: Instant,
    /// Send order, so retries and resends keep the original order.
    pub order: u64,
}

/// In-flight state that survives a reconnect.
#[derive(Debug, Default)]
pub struct SavedInflight {
    /// Outgoing messages by packet id.
    pub outgoing: BTreeMap<u16, OutFlight>,
    /// Incoming QoS 2 packet ids whose PUBREC was sent and PUBREL not yet received.
    pub incoming_qos2: HashSet<u16>,
    /// Next packet id to try.
    pub next_packet_id: u16,
    /// Next send order number.
    pub next_order: u64,
}

impl SavedInflight {
    /// A free non-zero packet id [MQTT-2.2.1-3], or `None` when all 65,535 are in use.
    pub fn allocate_packet_id(&mut self) -> Option<u16> {
        for _ in 0..u16::MAX {
            self.next_packet_id = self.next_packet_id.wrapping_add(1);
            if self.next_packet_id == 0 {
                self.next_packet_id = 1;
            }
            if !self.outgoing.contains_key(&self.next_packet_id) {
                return Some(self.next_packet_id);
            }
        }
        None
    }

    /// Outgoing entries in send order.
    pub fn in_send_order(&self) -> Vec<u16> {
        let mut ids: Vec<(u64, u16)> = self.outgoing.iter().map(|(id, f)| (f.order, *id)).collect();
        ids.sort_unstable();
        ids.into_iter().map(|(_, id)| id).collect()
    }
}
