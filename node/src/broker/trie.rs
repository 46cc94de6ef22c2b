//! The routing trie: topic filters of one mountpoint, matched against topic names
//! (VerneMQ's `vmq_reg_trie`). One level of the filter per node; `+` and `#` are children like
//! any other level and are looked up beside the exact level while matching.

use std::collections::HashMap;
use std::sync::Arc;

use vmq_mqtt::SubscriptionOptions;

/// One subscription of one client to one filter.
#[derive(Debug, Clone)]
pub struct SubEntry<Q> {
    /// The subscriber's client id.
    pub client_id: Arc<str>,
    /// Where matching messages go (the client's queue).
    pub queue: Q,
    /// Options from SUBSCRIBE.
    pub options: SubscriptionOptions,
    /// Subscription Identifier, if the client gave one.
    pub id: Option<u32>,
}

/// A match found for a topic.
#[derive(Debug)]
pub enum Match<'a, Q> {
    /// An ordinary subscription.
    Plain(&'a SubEntry<Q>),
    /// The members of a shared subscription `$share/<group>/<filter>` (group, filter,
    /// members): exactly one of them gets the message. The filter tells apart groups of the
    /// same name on different filters, which the cluster needs to merge local and remote
    /// members of one shared subscription.
    Shared(&'a str, &'a str, &'a [SubEntry<Q>]),
}

#[derive(Debug)]
struct Node<Q> {
    // The filter leading to this node, set when a subscription is inserted here.
    filter: Box<str>,
    children: HashMap<Box<str>, Node<Q>>,
    subs: Vec<SubEntry<Q>>,
    shared: Vec<(Box<str>, Vec<SubEntry<Q>>)>,
}

impl<Q> Default for Node<Q> {
    fn default() -> Self {
        Self { filter: Box::default(), children: HashMap::new(), subs: Vec::new(), shared: Vec::new() }
    }
}

impl<Q> Node<Q> {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.subs.is_empty() && self.shared.is_empty()
    }
}

/// Subscriptions of one mountpoint.
#[derive(Debug)]
pub struct Trie<Q> {
    root: Node<Q>,
    len: usize,
}

impl<Q> Default for Trie<Q> {
    fn default() -> Self {
        Self { root: Node::default(), len: 0 }
    }
}

impl<Q: Clone> Trie<Q> {
    /// Adds or replaces the subscription of `entry.client_id` to `filter` (in share group
    /// `share` when given). Returns true when it replaced an existing one [MQTT-3.8.4-3].
    pub fn insert(&mut self, share: Option<&str>, filter: &str, entry: SubEntry<Q>) -> bool {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = node.children.entry(level.into()).or_default();
        }
        if node.filter.is_empty() {
            node.filter = filter.into();
        }
        let list = match share {
            None => &mut node.subs,
            Some(group) => {
                let idx = match node.shared.iter().position(|(g, _)| &**g == group) {
                    Some(i) => i,
                    None => {
                        node.shared.push((group.into(), Vec::new()));
                        node.shared.len() - 1
                    }
                };
                &mut node.shared[idx].1
            }
        };
        if let Some(existing) = list.iter_mut().find(|e| e.client_id == entry.client_id) {
            *existing = entry;
            true
        } else {
            list.push(entry);
            self.len += 1;
            false
        }
    }

    /// Removes the subscription of `client_id` to `filter`; true when it existed.
    pub fn remove(&mut self, share: Option<&str>, filter: &str, client_id: &str) -> bool {
        let levels: Vec<&str> = filter.split('/').collect();
        let removed = remove_at(&mut self.root, &levels, share, client_id);
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Number of subscriptions.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there is no subscription.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Calls `f` for every subscription matching `topic`, following [MQTT-4.7.2-1]: a filter
    /// starting with a wildcard does not match a topic starting with `$`.
    pub fn for_each_match<'a>(&'a self, topic: &str, f: &mut dyn FnMut(Match<'a, Q>)) {
        let levels: Vec<&str> = topic.split('/').collect();
        let dollar = topic.starts_with('$');
        match_at(&self.root, &levels, 0, dollar, f);
    }
}

fn emit<'a, Q>(node: &'a Node<Q>, f: &mut dyn FnMut(Match<'a, Q>)) {
    for e in &node.subs {
        f(Match::Plain(e));
    }
    for (group, members) in &node.shared {
        if !members.is_empty() {
            f(Match::Shared(group, &node.filter, members));
        }
    }
}

fn match_at<'a, Q>(node: &'a Node<Q>, levels: &[&str], depth: usize, dollar: bool, f: &mut dyn FnMut(Match<'a, Q>)) {
    let wildcards_allowed = !(dollar && depth == 0);
    if wildcards_allowed {
        // `#` also matches the parent level: `a/#` matches `a` [MQTT-4.7.1-2].
        if let Some(hash) = node.children.get("#") {
            emit(hash, f);
        }
    }
    let Some((level, rest)) = levels.split_first() else {
        emit(node, f);
        return;
    };
    if let Some(child) = node.children.get(*level) {
        match_at(child, rest, depth + 1, dollar, f);
    }
    if wildcards_allowed
        && *level != "+"
        && let Some(plus) = node.children.get("+")
    {
        match_at(plus, rest, depth + 1, dollar, f);
    }
}

fn remove_at<Q>(node: &mut Node<Q>, levels: &[&str], share: Option<&str>, client_id: &str) -> bool {
    let Some((level, rest)) = levels.split_first() else {
        return match share {
            None => remove_client(&mut node.subs, client_id),
            Some(group) => {
                let Some(i) = node.shared.iter().position(|(g, _)| &**g == group) else {
                    return false;
                };
                let removed = remove_client(&mut node.shared[i].1, client_id);
                if node.shared[i].1.is_empty() {
                    node.shared.swap_remove(i);
                }
                removed
            }
        };
    };
    let Some(child) = node.children.get_mut(*level) else { return false };
    let removed = remove_at(child, rest, share, client_id);
    if child.is_empty() {
        node.children.remove(*level);
    }
    removed
}

fn remove_client<Q>(list: &mut Vec<SubEntry<Q>>, client_id: &str) -> bool {
    match list.iter().position(|e| &*e.client_id == client_id) {
        Some(i) => {
            list.swap_remove(i);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use vmq_mqtt::topic;

    fn entry(c: &str) -> SubEntry<()> {
        SubEntry { client_id: c.into(), queue: (), options: SubscriptionOptions::default(), id: None }
    }

    fn matched(t: &Trie<()>, topic: &str) -> Vec<String> {
        let mut out = Vec::new();
        t.for_each_match(topic, &mut |m| match m {
            Match::Plain(e) => out.push(e.client_id.to_string()),
            Match::Shared(g, _, members) => {
                out.extend(members.iter().map(|e| format!("{g}:{}", e.client_id)));
            }
        });
        out.sort();
        out
    }

    #[test]
    fn wildcards_and_dollar_topics() {
        let mut t = Trie::default();
        t.insert(None, "a/+/c", entry("plus"));
        t.insert(None, "a/#", entry("hash"));
        t.insert(None, "#", entry("all"));
        t.insert(None, "$SYS/#", entry("sys"));
        t.insert(Some("g"), "a/b/c", entry("s1"));
        assert_eq!(matched(&t, "a/b/c"), ["all", "g:s1", "hash", "plus"]);
        assert_eq!(matched(&t, "a"), ["all", "hash"]);
        assert_eq!(matched(&t, "$SYS/x"), ["sys"], "[MQTT-4.7.2-1]");
    }

    #[test]
    fn resubscribe_replaces_and_remove_prunes() {
        let mut t = Trie::default();
        assert!(!t.insert(None, "a/b", entry("c")));
        assert!(t.insert(None, "a/b", entry("c")), "[MQTT-3.8.4-3] replaces");
        assert_eq!(t.len(), 1);
        assert!(t.remove(None, "a/b", "c"));
        assert!(!t.remove(None, "a/b", "c"));
        assert!(t.root.is_empty(), "empty nodes are pruned");
        t.insert(Some("g"), "x", entry("c"));
        assert!(t.remove(Some("g"), "x", "c"));
        assert!(t.root.is_empty() && t.is_empty());
    }

    fn level() -> impl Strategy<Value = String> {
        prop_oneof![Just("a".to_string()), Just("b".to_string()), Just("".to_string()), Just("$s".to_string())]
    }

    fn topic_name() -> impl Strategy<Value = String> {
        prop::collection::vec(level(), 1..4).prop_map(|l| l.join("/"))
    }

    fn filter() -> impl Strategy<Value = String> {
        (prop::collection::vec(prop_oneof![level(), Just("+".to_string())], 1..4), any::<bool>()).prop_map(
            |(mut l, hash)| {
                if hash {
                    l.push("#".into());
                }
                l.join("/")
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 256,
            failure_persistence: Some(Box::new(
                proptest::test_runner::FileFailurePersistence::Direct(
                    "../proptest-regressions/node-trie-brute-force.txt"))),
            ..ProptestConfig::default()
        })]
        #[test]
        fn trie_agrees_with_brute_force_matcher(filters in prop::collection::vec(filter(), 0..12), t in topic_name()) {
            let mut trie = Trie::default();
            for (i, f) in filters.iter().enumerate() {
                trie.insert(None, f, entry(&format!("{i:02}")));
            }
            let mut want: Vec<String> = filters.iter().enumerate()
                .filter(|(_, f)| topic::matches(f, &t))
                .map(|(i, _)| format!("{i:02}")).collect();
            want.sort();
            prop_assert_eq!(matched(&trie, &t), want);
        }
    }
}
