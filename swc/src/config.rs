//! `vmq_swc.*` settings, with VerneMQ's names and defaults (`apps/vmq_swc/priv/vmq_swc.schema`).

/// Settings of the SWC replica. Field names follow the `vmq_swc.*` keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwcConfig {
    /// `vmq_swc.swc_groups`: independent replica groups the keys are spread over (1..=100). All
    /// nodes must use the same number.
    pub swc_groups: u16,
    /// `vmq_swc.sync_interval`: milliseconds between anti-entropy exchanges of a group; 0
    /// disables periodic exchanges.
    pub sync_interval: u64,
    /// `vmq_swc.sync_interval.leeway`: random extra milliseconds (0..=leeway) added to each
    /// interval so that nodes do not exchange in lockstep.
    pub sync_interval_leeway: u64,
    /// `vmq_swc.gc_interval`: milliseconds between periodic tombstone collections.
    pub gc_interval: u64,
    /// `vmq_swc.periodic_gc`: collect on `gc_interval` (exchanges always collect at their end).
    pub periodic_gc: bool,
    /// `vmq_swc.sync_timeout`: milliseconds an exchange may wait for one answer before it is
    /// abandoned (the next tick retries).
    pub sync_timeout: u64,
    /// `vmq_swc.enable_broadcast`: push every write to the reachable peers right away.
    pub enable_broadcast: bool,
    /// `vmq_swc.exchange_batch_size`: dots asked for per anti-entropy request.
    pub exchange_batch_size: usize,
    /// `vmq_swc.prevent_nonempty_join`: the node refuses to join a cluster unless
    /// `is_empty_history()`; the replica only reports it, the node enforces it.
    pub prevent_nonempty_join: bool,
    /// Bytes of values one anti-entropy answer carries at most (at least one object): a batch
    /// of large retained messages is answered in parts instead of one frame too large to send,
    /// which would stall the exchange for ever. Not a VerneMQ key.
    pub exchange_reply_bytes: usize,
}

impl Default for SwcConfig {
    fn default() -> Self {
        Self {
            swc_groups: 10,
            sync_interval: 5000,
            sync_interval_leeway: 2500,
            gc_interval: 15000,
            periodic_gc: true,
            sync_timeout: 60000,
            enable_broadcast: true,
            exchange_batch_size: 100,
            prevent_nonempty_join: true,
            exchange_reply_bytes: 4 * 1024 * 1024,
        }
    }
}

impl SwcConfig {
    /// Applies one `vmq_swc.*` key from the node's configuration file. Durations take
    /// milliseconds, optionally suffixed `ms` or `s`; flags take `on`/`off` (or `true`/`false`).
    /// Keys that VerneMQ has but that have no effect here (`directory`, `dkm_directory`,
    /// `db_backend`, `fast_call_timeout`) are accepted and ignored; `init_sync_procedure` is
    /// accepted only as `off`.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let value = value.trim();
        match key {
            "vmq_swc.swc_groups" => {
                let n: u16 = value.parse().map_err(|e| format!("{key}: {e}"))?;
                if !(1..=100).contains(&n) {
                    return Err(format!("{key}: must be between 1 and 100, got {n}"));
                }
                self.swc_groups = n;
            }
            "vmq_swc.sync_interval" => self.sync_interval = duration(key, value)?,
            "vmq_swc.sync_interval.leeway" => self.sync_interval_leeway = duration(key, value)?,
            "vmq_swc.gc_interval" => {
                let ms = duration(key, value)?;
                if ms == 0 {
                    return Err(format!("{key}: must be positive"));
                }
                self.gc_interval = ms;
            }
            "vmq_swc.periodic_gc" => self.periodic_gc = flag(key, value)?,
            "vmq_swc.sync_timeout" => self.sync_timeout = duration(key, value)?.max(1),
            "vmq_swc.enable_broadcast" => self.enable_broadcast = flag(key, value)?,
            "vmq_swc.exchange_batch_size" => {
                let n: usize = value.parse().map_err(|e| format!("{key}: {e}"))?;
                if n == 0 {
                    return Err(format!("{key}: must be positive"));
                }
                self.exchange_batch_size = n;
            }
            "vmq_swc.prevent_nonempty_join" => self.prevent_nonempty_join = flag(key, value)?,
            "vmq_swc.init_sync_procedure" => {
                if flag(key, value)? {
                    return Err(format!(
                        "{key}: not supported; a new node catches up through ordinary \
                         anti-entropy"
                    ));
                }
            }
            "vmq_swc.directory" | "vmq_swc.dkm_directory" | "vmq_swc.db_backend" => {}
            "vmq_swc.fast_call_timeout" => {
                duration(key, value)?;
            }
            _ => return Err(format!("unknown setting {key}")),
        }
        Ok(())
    }
}

fn duration(key: &str, value: &str) -> Result<u64, String> {
    let (digits, scale) = if let Some(ms) = value.strip_suffix("ms") {
        (ms, 1)
    } else if let Some(s) = value.strip_suffix('s') {
        (s, 1000)
    } else {
        (value, 1)
    };
    let n: u64 = digits.trim().parse().map_err(|e| format!("{key}: {value:?}: {e}"))?;
    n.checked_mul(scale).ok_or_else(|| format!("{key}: {value:?} is too large"))
}

fn flag(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err(format!("{key}: expected on or off, got {value:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_vernemqs() {
        let c = SwcConfig::default();
        assert_eq!((c.swc_groups, c.sync_interval, c.sync_interval_leeway, c.gc_interval), (10, 5000, 2500, 15000));
        assert!(c.periodic_gc && c.enable_broadcast && c.prevent_nonempty_join);
        assert_eq!((c.sync_timeout, c.exchange_batch_size), (60000, 100));
    }

    #[test]
    fn set_parses_durations_flags_and_rejects_bad_values() {
        let mut c = SwcConfig::default();
        c.set("vmq_swc.sync_interval", "3s").expect("3s");
        assert_eq!(c.sync_interval, 3000);
        c.set("vmq_swc.sync_interval.leeway", "100ms").expect("ms");
        assert_eq!(c.sync_interval_leeway, 100);
        c.set("vmq_swc.enable_broadcast", "off").expect("flag");
        assert!(!c.enable_broadcast);
        c.set("vmq_swc.swc_groups", "1").expect("groups");
        assert_eq!(c.swc_groups, 1);
        assert!(c.set("vmq_swc.swc_groups", "101").is_err());
        assert!(c.set("vmq_swc.exchange_batch_size", "0").is_err());
        assert!(c.set("vmq_swc.periodic_gc", "maybe").is_err());
        assert!(c.set("vmq_swc.nope", "1").is_err());
        assert!(c.set("vmq_swc.init_sync_procedure", "on").is_err());
        c.set("vmq_swc.init_sync_procedure", "off").expect("off is fine");
    }
}
