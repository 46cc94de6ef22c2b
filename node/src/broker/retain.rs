//! Retained messages (VerneMQ's `vmq_retain_srv`): the last retained message per topic and
//! mountpoint, sent to new matching subscriptions.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::message::Msg;
use vmq_mqtt::topic;

/// Retained messages of every mountpoint.
#[derive(Debug, Default)]
pub struct RetainStore {
    by_mountpoint: HashMap<Arc<str>, HashMap<Arc<str>, Arc<Msg>>>,
}

impl RetainStore {
    /// Stores `msg` as the retained message of its topic, or clears the topic when the payload
    /// is empty [MQTT-3.3.1-6], [MQTT-3.3.1-7].
    pub fn set(&mut self, msg: Arc<Msg>) {
        let topics = self.by_mountpoint.entry(msg.mountpoint.clone()).or_default();
        if msg.payload.is_empty() {
            topics.remove(&msg.topic);
        } else {
            topics.insert(msg.topic.clone(), msg);
        }
    }

    /// Retained messages matching `filter` in `mountpoint`, dropping expired ones
    /// [MQTT-3.3.2-5].
    pub fn matching(&mut self, mountpoint: &str, filter: &str, now: Instant) -> Vec<Arc<Msg>> {
        let Some(topics) = self.by_mountpoint.get_mut(mountpoint) else { return Vec::new() };
        topics.retain(|_, m| !m.is_expired(now));
        if !filter.contains(['+', '#']) {
            return topics.get(filter).cloned().into_iter().collect();
        }
        let mut out: Vec<Arc<Msg>> =
            topics.iter().filter(|(t, _)| topic::matches(filter, t)).map(|(_, m)| m.clone()).collect();
        // Deterministic order for subscribers and tests.
        out.sort_by(|a, b| a.topic.cmp(&b.topic));
        out
    }

    /// Removes the retained message of `topic` in `mountpoint`, if any.
    pub fn remove(&mut self, mountpoint: &str, topic: &str) {
        if let Some(topics) = self.by_mountpoint.get_mut(mountpoint) {
            topics.remove(topic);
        }
    }

    /// Number of retained messages.
    pub fn len(&self) -> usize {
        self.by_mountpoint.values().map(HashMap::len).sum()
    }

    /// True when nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use vmq_mqtt::QoS;

    fn msg(mp: &str, t: &str, p: &'static [u8]) -> Arc<Msg> {
        Arc::new(Msg {
            mountpoint: mp.into(),
            topic: t.into(),
            payload: Bytes::from_static(p),
            qos: QoS::AtMostOnce,
            retain: true,
            properties: None,
            expires_at: None,
            publisher: None,
        })
    }

    #[test]
    fn set_replace_clear_and_match_mqtt_3_3_1_5_to_7() {
        let mut r = RetainStore::default();
        let now = Instant::now();
        r.set(msg("", "a/b", b"1"));
        r.set(msg("", "a/b", b"2"));
        r.set(msg("", "a/c", b"3"));
        r.set(msg("other", "a/b", b"x"));
        let got: Vec<_> = r.matching("", "a/+", now).iter().map(|m| m.payload.clone()).collect();
        assert_eq!(got, [Bytes::from_static(b"2"), Bytes::from_static(b"3")]);
        r.set(msg("", "a/b", b""));
        assert_eq!(r.matching("", "a/b", now).len(), 0);
        assert_eq!(r.matching("other", "#", now).len(), 1, "mountpoints are isolated");
    }
}
