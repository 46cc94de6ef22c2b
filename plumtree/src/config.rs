//! Tuning of the plumtree replica, with the names and defaults of VerneMQ's plumtree
//! application (`plumtree_broadcast`, `plumtree_metadata_exchange_fsm`,
//! `plumtree_metadata_hashtree`).

/// Plumtree settings. Durations are milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlumtreeConfig {
    /// `min_lazy_tick_interval`: how often outstanding `i_have`s are sent to lazy peers.
    /// 1 s (riak_core's `lazy_tick_period`) rather than VerneMQ's 10 s: prunes that cross
    /// pushes can leave a node off a broadcast tree, and it hears of new writes, and grafts
    /// itself back, at the next tick. The announcements cost the same either way (each is
    /// sent until acknowledged, normally once).
    pub min_lazy_tick_interval: u64,
    /// `broadcast_exchange_timer`: how often an anti-entropy exchange with a random peer starts.
    pub broadcast_exchange_timer: u64,
    /// `broadcast_start_exchange_limit`: at most this many exchanges started by this node run at
    /// once.
    pub broadcast_start_exchange_limit: usize,
    /// `metadata_exchange_timeout`: an exchange without progress for this long is abandoned.
    pub metadata_exchange_timeout: u64,
    /// `metadata_hashtree_timer`: VerneMQ rebuilds its hash trees on this tick. Our trees are
    /// updated on every write, so the tick drives the tombstone sweep instead.
    pub metadata_hashtree_timer: u64,
    /// `drop_i_have_threshold`: when this many messages wait to be sent, lazy `i_have`s are
    /// skipped for this tick (they stay outstanding), VerneMQ's overload shedding.
    pub drop_i_have_threshold: usize,
    /// `outstanding_limit`: at most this many unacknowledged `i_have`s are kept per lazy peer;
    /// beyond that the oldest are dropped and anti-entropy repairs instead.
    pub outstanding_limit: usize,
    /// `tombstone_grace_period` (**beyond** VerneMQ, which never frees tombstones): a
    /// tombstone confirmed on every member by an exchange is reclaimed once it is this old.
    pub tombstone_grace_period: u64,
}

impl Default for PlumtreeConfig {
    fn default() -> Self {
        Self {
            min_lazy_tick_interval: 1_000,
            broadcast_exchange_timer: 10_000,
            broadcast_start_exchange_limit: 1,
            metadata_exchange_timeout: 60_000,
            metadata_hashtree_timer: 10_000,
            drop_i_have_threshold: 10_000,
            outstanding_limit: 100_000,
            tombstone_grace_period: 3_600_000,
        }
    }
}

/// The config-file prefixes under which the keys are accepted besides their bare names.
const PREFIXES: [&str; 2] = ["vmq_plumtree.", "plumtree."];

impl PlumtreeConfig {
    /// Sets one key from the node's config file. Keys are VerneMQ's names, bare or under
    /// `vmq_plumtree.` / `plumtree.`; durations take milliseconds or a `ms`/`s`/`m`/`h` suffix.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let name = PREFIXES.iter().find_map(|p| key.strip_prefix(p)).unwrap_or(key);
        match name {
            "min_lazy_tick_interval" => self.min_lazy_tick_interval = duration(key, value)?,
            "broadcast_exchange_timer" => self.broadcast_exchange_timer = duration(key, value)?,
            "broadcast_start_exchange_limit" => self.broadcast_start_exchange_limit = count(key, value)?,
            "metadata_exchange_timeout" => self.metadata_exchange_timeout = duration(key, value)?,
            "metadata_hashtree_timer" => self.metadata_hashtree_timer = duration(key, value)?,
            "drop_i_have_threshold" => self.drop_i_have_threshold = count(key, value)?,
            "outstanding_limit" => self.outstanding_limit = count(key, value)?,
            "tombstone_grace_period" => self.tombstone_grace_period = duration(key, value)?,
            _ => return Err(format!("unknown plumtree setting `{key}`")),
        }
        Ok(())
    }
}

fn count(key: &str, value: &str) -> Result<usize, String> {
    value.trim().parse().map_err(|_| format!("`{key}` needs a non-negative integer, got `{value}`"))
}

fn duration(key: &str, value: &str) -> Result<u64, String> {
    let v = value.trim();
    let err = || format!("`{key}` needs a duration in milliseconds (or with ms/s/m/h), got `{value}`");
    let (digits, scale) = if let Some(d) = v.strip_suffix("ms") {
        (d, 1)
    } else if let Some(d) = v.strip_suffix('s') {
        (d, 1_000)
    } else if let Some(d) = v.strip_suffix('m') {
        (d, 60_000)
    } else if let Some(d) = v.strip_suffix('h') {
        (d, 3_600_000)
    } else {
        (v, 1)
    };
    let n: u64 = digits.trim().parse().map_err(|_| err())?;
    n.checked_mul(scale).ok_or_else(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_vernemqs() {
        let c = PlumtreeConfig::default();
        assert_eq!(c.min_lazy_tick_interval, 1_000);
        assert_eq!(c.broadcast_exchange_timer, 10_000);
        assert_eq!(c.broadcast_start_exchange_limit, 1);
        assert_eq!(c.metadata_exchange_timeout, 60_000);
        assert_eq!(c.metadata_hashtree_timer, 10_000);
    }

    #[test]
    fn set_accepts_bare_and_prefixed_names_and_units() {
        let mut c = PlumtreeConfig::default();
        c.set("broadcast_exchange_timer", "2500").unwrap();
        c.set("vmq_plumtree.min_lazy_tick_interval", "2s").unwrap();
        c.set("plumtree.tombstone_grace_period", "1h").unwrap();
        c.set("broadcast_start_exchange_limit", "3").unwrap();
        assert_eq!(c.broadcast_exchange_timer, 2500);
        assert_eq!(c.min_lazy_tick_interval, 2000);
        assert_eq!(c.tombstone_grace_period, 3_600_000);
        assert_eq!(c.broadcast_start_exchange_limit, 3);
    }

    #[test]
    fn set_rejects_unknown_keys_and_bad_values() {
        let mut c = PlumtreeConfig::default();
        assert!(c.set("lazy_tick", "1").unwrap_err().contains("unknown"));
        assert!(c.set("metadata_exchange_timeout", "soon").unwrap_err().contains("duration"));
        assert!(c.set("outstanding_limit", "-1").is_err());
        assert_eq!(c, PlumtreeConfig::default());
    }
}
