//! Publishing and (un)subscribing against the routing trie.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::message::{Delivery, Msg};
use super::queue::{Durable, EnqueueOutcome, Queue, Wakes};
use super::trie::{Match, SubEntry, Trie};
use super::{Broker, Forward, SessionSlot, SubscriptionRecord};
use vmq_config::SharedSubscriptionPolicy;
use vmq_mqtt::topic;
use vmq_storage::metadata::NodeId;

/// What a publish did.
#[derive(Debug, Default)]
pub struct PublishOutcome {
    /// Subscriptions (counting a shared group once) that received it.
    pub matched: usize,
    /// Of those, how many dropped it (full or offline QoS 0).
    pub dropped: usize,
    /// Remote nodes it was forwarded to.
    pub forwarded: usize,
    /// Offline queues and remote nodes it went to; acknowledge the publish only once every
    /// ticket resolved.
    pub durable: Vec<Durable>,
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
        let mut wakes = Wakes::default();
        let outcome = self.publish_batched(msg, &mut wakes);
        wakes.wake_all();
        outcome
    }

    /// [`Broker::publish`], leaving the subscribers' wake-ups in `wakes` for the caller to
    /// send after its batch of publishes.
    pub fn publish_batched(&self, msg: Arc<Msg>, wakes: &mut Wakes) -> PublishOutcome {
        if msg.retain {
            self.retained().set(msg.clone());
            if let Some(cluster) = self.cluster() {
                cluster.retained_changed(&msg);
            }
        }
        let mut targets: Vec<Target> = Vec::new();
        let mut groups: Vec<LocalGroup> = Vec::new();
        {
            let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
            if let Some(trie) = routes.get(&msg.mountpoint) {
                trie.for_each_match(&msg.topic, &mut |m| match m {
                    Match::Plain(e) => {
                        if e.options.no_local && msg.publisher.as_deref() == Some(&*e.client_id) {
                            return; // [MQTT-3.8.3-3]
                        }
                        // A session moving to another node that is known here gets what is
                        // published here by forward, like any remote subscriber; only what other
                        // nodes still route here goes into its queue and follows the drain.
                        if e.queue.is_moved() {
                            return;
                        }
                        targets.push(self.target(&msg, e));
                    }
                    Match::Shared(group, filter, members) => {
                        groups.push(LocalGroup {
                            group: group.into(),
                            filter: filter.into(),
                            members: members.to_vec(),
                        });
                    }
                });
            }
        }
        let forwards = self.route_shared_and_remote(&msg, groups, &mut targets);
        let forwarded = !forwards.is_empty();
        let mut outcome = PublishOutcome { forwarded: forwards.len(), ..PublishOutcome::default() };
        if let Some(cluster) = self.cluster().filter(|_| forwarded) {
            outcome.durable = cluster.forward(&msg, forwards);
            if cfg!(feature = "fault-ack-before-forward") {
                // The deliberately broken build the partition harness must catch.
                outcome.durable.clear();
            }
        }
        if targets.len() > 1 {
            merge_overlapping(&mut targets);
        }
        outcome.matched = targets.len();
        for t in targets {
            match t.queue.enqueue_batched(t.delivery, wakes) {
                EnqueueOutcome::Queued => {}
                EnqueueOutcome::Stored(ticket) => outcome.durable.push(ticket),
                EnqueueOutcome::Dropped => outcome.dropped += 1,
            }
        }
        self.counters.messages_routed.fetch_add(outcome.matched as u64, Ordering::Relaxed);
        self.counters.queue_message_drop.fetch_add(outcome.dropped as u64, Ordering::Relaxed);
        if outcome.matched == 0 && !forwarded {
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

    /// Picks the member of every matching shared subscription, across the cluster when there
    /// is one, following `shared_subscription_policy` (VerneMQ's `vmq_shared_subscriptions`),
    /// and decides which remote nodes get the message: each node with a matching plain
    /// subscription once, plus the picked remote shared members (one frame per node).
    fn route_shared_and_remote(
        &self,
        msg: &Arc<Msg>,
        groups: Vec<LocalGroup>,
        targets: &mut Vec<Target>,
    ) -> Vec<Forward> {
        let Some(cluster) = self.cluster() else {
            for g in &groups {
                if let Some(e) = self.pick_shared(&g.members) {
                    targets.push(self.target(msg, e));
                }
            }
            return Vec::new();
        };
        let mut remote = cluster.remote_matches(&msg.mountpoint, &msg.topic);
        // A shared-subscription member on an unreachable node is not chosen: the message
        // would wait there for the heal instead of going to a member that can take it now.
        if !cluster.is_ready() {
            for group in &mut remote.shared {
                group.members.retain(|(node, _)| cluster.is_reachable(node));
            }
        }
        let mut forwards: Vec<Forward> =
            remote.nodes.into_iter().map(|node| Forward { node, plain: true, shared: Vec::new() }).collect();
        let mut remote_shared = remote.shared;
        for g in &groups {
            let remote_members = remote_shared
                .iter()
                .position(|r| *r.group == *g.group && *r.filter == *g.filter)
                .map(|i| remote_shared.swap_remove(i).members)
                .unwrap_or_default();
            match self.pick_cluster_member(&g.members, &remote_members) {
                Some(Pick::Local(i)) => {
                    if let Some(e) = g.members.get(i) {
                        targets.push(self.target(msg, e));
                    }
                }
                Some(Pick::Remote(i)) => {
                    if let Some((node, client_id)) = remote_members.get(i) {
                        let full = format!("$share/{}/{}", g.group, g.filter);
                        add_shared_forward(&mut forwards, node, client_id.clone(), full);
                    }
                }
                None => {}
            }
        }
        // Groups with remote members only.
        for r in remote_shared {
            if self.settings.shared_policy == SharedSubscriptionPolicy::LocalOnly || r.members.is_empty() {
                continue;
            }
            let i = (self.random() % r.members.len() as u64) as usize;
            if let Some((node, client_id)) = r.members.get(i) {
                let full = format!("$share/{}/{}", r.group, r.filter);
                add_shared_forward(&mut forwards, node, client_id.clone(), full);
            }
        }
        forwards
    }

    fn pick_cluster_member(&self, local: &[SubEntry<Arc<Queue>>], remote: &[(NodeId, Arc<str>)]) -> Option<Pick> {
        let online: Vec<usize> = (0..local.len()).filter(|&i| local[i].queue.is_online()).collect();
        let pick_from = |pool: &[usize]| pool.get((self.random() % pool.len().max(1) as u64) as usize).copied();
        let random_remote =
            || (!remote.is_empty()).then(|| Pick::Remote((self.random() % remote.len() as u64) as usize));
        let random_local = || {
            if online.is_empty() {
                (!local.is_empty()).then(|| Pick::Local((self.random() % local.len() as u64) as usize))
            } else {
                pick_from(&online).map(Pick::Local)
            }
        };
        match self.settings.shared_policy {
            SharedSubscriptionPolicy::LocalOnly => random_local(),
            SharedSubscriptionPolicy::PreferLocal => random_local().or_else(random_remote),
            // Remote members count as online: their node holds them only while subscribed.
            SharedSubscriptionPolicy::PreferOnlineBeforeLocal => {
                if online.is_empty() {
                    random_remote().or_else(random_local)
                } else {
                    random_local()
                }
            }
            SharedSubscriptionPolicy::Random => {
                let n = local.len() + remote.len();
                if n == 0 {
                    return None;
                }
                let i = (self.random() % n as u64) as usize;
                Some(if i < local.len() { Pick::Local(i) } else { Pick::Remote(i - local.len()) })
            }
        }
    }

    /// Delivers a publish forwarded by another node: to local plain subscribers when `plain`
    /// and to the named shared-subscription members (client id, `$share/..` filter). It never
    /// forwards again and never touches the retained store (retained messages replicate
    /// through the metadata backend). A named member that is gone by now (unsubscribed, or
    /// its session ended) is replaced by another local member of its group, if any.
    pub fn publish_remote_batched(
        &self,
        msg: Arc<Msg>,
        plain: bool,
        shared: &[(Arc<str>, String)],
        wakes: &mut Wakes,
    ) -> PublishOutcome {
        let mut targets: Vec<Target> = Vec::new();
        let mut missing: Vec<&str> = Vec::new();
        {
            let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
            let trie = routes.get(&msg.mountpoint);
            if let (true, Some(trie)) = (plain, trie) {
                trie.for_each_match(&msg.topic, &mut |m| {
                    if let Match::Plain(e) = m
                        && !(e.options.no_local && msg.publisher.as_deref() == Some(&*e.client_id))
                    {
                        targets.push(self.target(&msg, e));
                    }
                });
            }
            for (client_id, filter) in shared {
                let key = vmq_storage::QueueKey::new(msg.mountpoint.clone(), client_id.clone());
                let record = self.session(&key).and_then(|slot| {
                    let record = slot.state().subscriptions.get(filter).copied()?;
                    Some(SubEntry {
                        client_id: client_id.clone(),
                        queue: slot.queue.clone(),
                        options: record.options,
                        id: record.id,
                    })
                });
                match record {
                    Some(entry) => targets.push(self.target(&msg, &entry)),
                    None => missing.push(filter),
                }
            }
            for filter in missing {
                let member = trie.and_then(|t| self.other_shared_member(t, filter, &msg.topic));
                match member {
                    Some(entry) => targets.push(self.target(&msg, &entry)),
                    None => {
                        tracing::warn!(%filter, topic = %msg.topic, "forwarded message for a shared subscription with no member left here")
                    }
                }
            }
        }
        if targets.len() > 1 {
            merge_overlapping(&mut targets);
        }
        let mut outcome = PublishOutcome { matched: targets.len(), ..PublishOutcome::default() };
        for t in targets {
            match t.queue.enqueue_batched(t.delivery, wakes) {
                EnqueueOutcome::Queued => {}
                EnqueueOutcome::Stored(ticket) => outcome.durable.push(ticket),
                EnqueueOutcome::Dropped => outcome.dropped += 1,
            }
        }
        self.counters.messages_routed.fetch_add(outcome.matched as u64, Ordering::Relaxed);
        self.counters.queue_message_drop.fetch_add(outcome.dropped as u64, Ordering::Relaxed);
        outcome
    }

    /// A local member of the shared subscription `filter` (`$share/<group>/<f>`) matching
    /// `topic`, picked as for a local publish.
    fn other_shared_member(&self, trie: &Trie<Arc<Queue>>, filter: &str, topic: &str) -> Option<SubEntry<Arc<Queue>>> {
        let parsed = topic::parse_filter(filter).ok()?;
        let group = parsed.share?;
        let mut members: Vec<SubEntry<Arc<Queue>>> = Vec::new();
        trie.for_each_match(topic, &mut |m| {
            if let Match::Shared(g, f, entries) = m
                && *g == *group
                && *f == *parsed.filter
            {
                members = entries.to_vec();
            }
        });
        self.pick_shared(&members).cloned()
    }

    fn pick_shared<'a>(&self, members: &'a [SubEntry<Arc<Queue>>]) -> Option<&'a SubEntry<Arc<Queue>>> {
        // On a single node every policy picks among local members; all prefer an online member
        // so that a message is not parked in an offline queue while a consumer is connected.
        let online = members.iter().filter(|e| e.queue.is_online()).count();
        let pool_online =
            online > 0 && self.settings.shared_policy != SharedSubscriptionPolicy::Random || online == members.len();
        let n = if pool_online { online } else { members.len() };
        if n == 0 {
            return None;
        }
        let pick = (self.random() % n as u64) as usize;
        if pool_online { members.iter().filter(|e| e.queue.is_online()).nth(pick) } else { members.get(pick) }
    }

    /// Adds (or replaces) a subscription of the session; returns true when it replaced one.
    pub fn subscribe(
        &self,
        slot: &Arc<SessionSlot>,
        filter: &str,
        record: SubscriptionRecord,
    ) -> Result<bool, topic::TopicError> {
        let parsed = topic::parse_filter(filter)?;
        let entry = SubEntry {
            client_id: slot.key.client_id.clone(),
            queue: slot.queue.clone(),
            options: record.options,
            id: record.id,
        };
        let mountpoint: Arc<str> = slot.key.mountpoint.clone();
        let existed = {
            let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
            routes.entry(mountpoint).or_default().insert(parsed.share, parsed.filter, entry)
        };
        slot.state().subscriptions.insert(filter.to_string(), record);
        self.announce_subscriptions(slot);
        Ok(existed)
    }

    /// Removes a subscription of the session; true when it existed.
    pub fn unsubscribe(&self, slot: &Arc<SessionSlot>, filter: &str) -> bool {
        let existed = slot.state().subscriptions.remove(filter).is_some();
        let removed = self.remove_route(&slot.key, filter) || existed;
        if removed {
            self.announce_subscriptions(slot);
        }
        removed
    }

    pub(super) fn remove_route(&self, key: &vmq_storage::QueueKey, filter: &str) -> bool {
        let Ok(parsed) = topic::parse_filter(filter) else { return false };
        let mut routes = self.routes.write().unwrap_or_else(|e| e.into_inner());
        let Some(trie) = routes.get_mut(&*key.mountpoint) else { return false };
        let removed = trie.remove(parsed.share, parsed.filter, &key.client_id);
        if trie.is_empty() {
            routes.remove(&*key.mountpoint);
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

/// A local shared subscription matching a publish, before a member is picked.
struct LocalGroup {
    group: Box<str>,
    filter: Box<str>,
    members: Vec<SubEntry<Arc<Queue>>>,
}

enum Pick {
    Local(usize),
    Remote(usize),
}

fn add_shared_forward(forwards: &mut Vec<Forward>, node: &NodeId, client_id: Arc<str>, filter: String) {
    match forwards.iter_mut().find(|f| &f.node == node) {
        Some(f) => f.shared.push((client_id, filter)),
        None => forwards.push(Forward { node: node.clone(), plain: false, shared: vec![(client_id, filter)] }),
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
