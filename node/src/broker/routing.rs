//! Publishing and (un)subscribing against the routing trie.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::message::{Delivery, Msg};
use super::queue::{EnqueueOutcome, Queue};
use super::trie::{Match, SubEntry, Trie};
use super::{Broker, SessionSlot, SharedPolicy, SubscriptionRecord};
use crate::mqtt::topic;

/// What a publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PublishOutcome {
    /// Subscriptions (counting a shared group once) that received it.
    pub matched: usize,
    /// Of those, how many dropped it (full or offline QoS 0).
    pub dropped: usize,
}

struct Target {
    queue: Arc<Queue>,
    client_id: Arc<str>,
    delivery: Delivery,
}

impl Broker {
    /// Routes `msg` to every matching subscription of its mountpoint and, when it is
    /// retained, stores it as the topic's retained message.
    pub fn publish(&self, msg: Arc<Msg>) -> PublishOutcome {
        if msg.retain {
            self.retained().set(msg.clone());
        }
        let mut targets: Vec<Target> = Vec::new();
        {
            let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
            if let Some(trie) = routes.get(&msg.mountpoint) {
                trie.for_each_match(&msg.topic, &mut |m| match m {
                    Match::Plain(e) => {
                        if e.options.no_local && msg.publisher.as_deref() == Some(&*e.client_id) {
                            return; // [MQTT-3.8.3-3]
                        }
                        targets.push(self.target(&msg, e));
                    }
                    Match::Shared(_, members) => {
                        if let Some(e) = self.pick_shared(members) {
                            targets.push(self.target(&msg, e));
                        }
                    }
                });
            }
        }
        if targets.len() > 1 {
            merge_overlapping(&mut targets);
        }
        let mut outcome = PublishOutcome { matched: targets.len(), dropped: 0 };
        for t in targets {
            if t.queue.enqueue(t.delivery) == EnqueueOutcome::Dropped {
                outcome.dropped += 1;
            }
        }
        self.counters.messages_routed.fetch_add(outcome.matched as u64, Ordering::Relaxed);
        self.counters.queue_message_drop.fetch_add(outcome.dropped as u64, Ordering::Relaxed);
        if outcome.matched == 0 {
            self.counters.router_matches_none.fetch_add(1, Ordering::Relaxed);
        }
        outcome
    }

    fn target(&self, msg: &Arc<Msg>, e: &SubEntry<Arc<Queue>>) -> Target {
        let qos = if self.settings.upgrade_outgoing_qos { e.options.qos } else { msg.qos.min(e.options.qos) };
        Target {
            queue: e.queue.clone(),
            client_id: e.client_id.clone(),
            delivery: Delivery {
                msg: msg.clone(),
                qos,
                // Retain As Published; otherwise forwarded messages have RETAIN 0 [MQTT-3.3.1-12].
                retain: e.options.retain_as_published && msg.retain,
                subscription_ids: e.id.into_iter().collect(),
            },
        }
    }

    fn pick_shared<'a>(&self, members: &'a [SubEntry<Arc<Queue>>]) -> Option<&'a SubEntry<Arc<Queue>>> {
        // On a single node every policy picks among local members; all prefer an online member
        // so that a message is not parked in an offline queue while a consumer is connected.
        let online = members.iter().filter(|e| e.queue.is_online()).count();
        let pool_online = online > 0 && self.settings.shared_policy != SharedPolicy::Random || online == members.len();
        let n = if pool_online { online } else { members.len() };
        if n == 0 {
            return None;
        }
        let pick = (self.random() % n as u64) as usize;
        if pool_online {
            members.iter().filter(|e| e.queue.is_online()).nth(pick)
        } else {
            members.get(pick)
        }
    }

    /// Adds (or replaces) a subscription of the session; returns true when it replaced one.
    pub fn subscribe(&self, slot: &Arc<SessionSlot>, filter: &str, record: SubscriptionRecord) -> Result<bool, topic::TopicError> {
        let parsed = topic::parse_filter(filter)?;
        let entry = SubEntry {
            client_id: slot.key.client_id.as_str().into(),
            queue: slot.queue.clone(),
            options: record.options,
            id: record.id,
        };
        let mountpoint: Arc<str> = slot.key.mountpoint.as_str().into();
        let existed = {
            let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
            routes.entry(mountpoint).or_insert_with(Trie::default).insert(parsed.share, parsed.filter, entry)
        };
        slot.state().subscriptions.insert(filter.to_string(), record);
        Ok(existed)
    }

    /// Removes a subscription of the session; true when it existed.
    pub fn unsubscribe(&self, slot: &Arc<SessionSlot>, filter: &str) -> bool {
        let existed = slot.state().subscriptions.remove(filter).is_some();
        self.remove_route(&slot.key, filter) || existed
    }

    pub(super) fn remove_route(&self, key: &vmq_storage::QueueKey, filter: &str) -> bool {
        let Ok(parsed) = topic::parse_filter(filter) else { return false };
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        let Some(trie) = routes.get_mut(key.mountpoint.as_str()) else { return false };
        let removed = trie.remove(parsed.share, parsed.filter, &key.client_id);
        if trie.is_empty() {
            routes.remove(key.mountpoint.as_str());
        }
        removed
    }

    /// Retained messages for a new subscription to `filter` (a shared subscription gets
    /// none: retained messages are not sent for shared subscriptions, MQTT 5.0 section 4.8.2).
    pub fn retained_for(&self, mountpoint: &str, filter: &str, now: Instant) -> Vec<Arc<Msg>> {
        match topic::parse_filter(filter) {
            Ok(p) if p.share.is_none() => self.retained().matching(mountpoint, p.filter, now),
            _ => Vec::new(),
        }
    }
}

/// A client with several matching subscriptions gets the message once, at the highest QoS,
/// with every subscription identifier [MQTT-3.3.4-2], [MQTT-3.3.4-3].
fn merge_overlapping(targets: &mut Vec<Target>) {
    targets.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    let mut merged: Vec<Target> = Vec::with_capacity(targets.len());
    for t in targets.drain(..) {
        match merged.last_mut() {
            Some(last) if last.client_id == t.client_id && Arc::ptr_eq(&last.queue, &t.queue) => {
                last.delivery.qos = last.delivery.qos.max(t.delivery.qos);
                last.delivery.retain |= t.delivery.retain;
                last.delivery.subscription_ids.extend(t.delivery.subscription_ids);
            }
            _ => merged.push(t),
        }
    }
    *targets = merged;
}
