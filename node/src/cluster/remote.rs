//! What remote nodes subscribe to: per mountpoint a trie whose entries name the node holding
//! the subscription, built from the replicated `subscriber` prefix (VerneMQ's
//! `vmq_reg_trie` keeps remote subscriptions the same way, with the node as the target).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use vmq_storage::metadata::NodeId;

use crate::broker::trie::{Match, SubEntry, Trie};
use crate::broker::{RemoteMatches, RemoteShared};
use vmq_mqtt::topic;

use super::wire::NodeSubscriptions;

/// Remote subscriptions of every mountpoint.
#[derive(Debug, Default)]
pub(crate) struct RemoteRoutes {
    tries: HashMap<String, Trie<NodeId>>,
    // What was inserted per (mountpoint, client id), to remove it when the value changes.
    by_client: HashMap<(String, String), Vec<String>>,
}

impl RemoteRoutes {
    /// Replaces the remote subscriptions of `client_id` with those of `entries` held by
    /// nodes other than `me`.
    pub fn apply(&mut self, me: &NodeId, mountpoint: &str, client_id: &str, entries: &[NodeSubscriptions]) {
        let key = (mountpoint.to_string(), client_id.to_string());
        if let Some(old) = self.by_client.remove(&key)
            && let Some(trie) = self.tries.get_mut(mountpoint)
        {
            for filter in old {
                if let Ok(parsed) = topic::parse_filter(&filter) {
                    trie.remove(parsed.share, parsed.filter, client_id);
                }
            }
            if trie.is_empty() {
                self.tries.remove(mountpoint);
            }
        }
        let mut inserted = Vec::new();
        for entry in entries.iter().filter(|e| &e.node != me) {
            for sub in &entry.subscriptions {
                let Ok(parsed) = topic::parse_filter(&sub.filter) else { continue };
                let record = sub.record();
                let sub_entry = SubEntry {
                    client_id: Arc::from(client_id),
                    queue: entry.node.clone(),
                    options: record.options,
                    id: record.id,
                };
                self.tries.entry(mountpoint.to_string()).or_default().insert(parsed.share, parsed.filter, sub_entry);
                inserted.push(sub.filter.clone());
            }
        }
        if !inserted.is_empty() {
            self.by_client.insert(key, inserted);
        }
    }

    /// Remote subscriptions matching `topic`.
    pub fn matches(&self, mountpoint: &str, topic: &str) -> RemoteMatches {
        let Some(trie) = self.tries.get(mountpoint) else { return RemoteMatches::default() };
        let mut nodes = BTreeSet::new();
        let mut shared = Vec::new();
        trie.for_each_match(topic, &mut |m| match m {
            Match::Plain(e) => {
                nodes.insert(e.queue.clone());
            }
            Match::Shared(group, filter, members) => shared.push(RemoteShared {
                group: group.to_string(),
                filter: filter.to_string(),
                members: members.iter().map(|e| (e.queue.clone(), e.client_id.clone())).collect(),
            }),
        });
        RemoteMatches { nodes: nodes.into_iter().collect(), shared }
    }

    /// Number of remote subscriptions.
    pub fn len(&self) -> usize {
        self.tries.values().map(Trie::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::wire::WireSubscription;

    fn subs(node: &str, filters: &[&str]) -> NodeSubscriptions {
        NodeSubscriptions {
            node: NodeId::new(node),
            clean_session: true,
            subscriptions: filters
                .iter()
                .map(|f| WireSubscription {
                    filter: f.to_string(),
                    qos: 1,
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: 0,
                    id: None,
                })
                .collect(),
        }
    }

    #[test]
    fn matches_name_each_remote_node_once_and_skip_own_entries() {
        let me = NodeId::new("me");
        let mut r = RemoteRoutes::default();
        r.apply(&me, "", "c1", &[subs("b", &["a/+", "a/#"])]);
        r.apply(&me, "", "c2", &[subs("b", &["a/b"])]);
        r.apply(&me, "", "c3", &[subs("me", &["a/b"])]);
        r.apply(&me, "", "c4", &[subs("c", &["$share/g/a/b"])]);
        let m = r.matches("", "a/b");
        assert_eq!(m.nodes, vec![NodeId::new("b")]);
        assert_eq!(m.shared.len(), 1);
        assert_eq!((m.shared[0].group.as_str(), m.shared[0].filter.as_str()), ("g", "a/b"));
        // A changed value replaces the old subscriptions.
        r.apply(&me, "", "c1", &[]);
        r.apply(&me, "", "c2", &[]);
        assert!(r.matches("", "a/b").nodes.is_empty());
        assert_eq!(r.len(), 1);
    }
}
