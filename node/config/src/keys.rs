//! Which keys exist: the ones we implement, the ones handed to other subsystems, and the
//! VerneMQ keys we know but do not implement yet.
//!
//! VerneMQ validates `vernemq.conf` against the schema files of its applications
//! (`vmq_server.schema`, `vmq_acl.schema`, ..., docs "Schema Files") and refuses to start on a
//! key no schema defines. We do the same for keys nobody knows, so a misspelt key is never
//! silently ignored; keys VerneMQ knows but we do not implement yet are accepted with a
//! warning naming them, so a `vernemq.conf` written for VerneMQ 2.1 still starts.
//!
//! The known-key lists come from the 2.0 `vernemq.conf` template and the prose of the VerneMQ
//! 2.1 documentation (`features.md` §2 indexes them).

use std::time::Duration;

use super::values::{self, ValueError};
use super::{Config, LogLevel, MetadataPlugin, QueueType, SharedSubscriptionPolicy};

/// A key the broker implements, outside the listener hierarchy.
pub struct Setting {
    /// The key, exactly as in VerneMQ.
    pub key: &'static str,
    /// The default, written in the key's own syntax (applying it changes nothing).
    pub default: &'static str,
    /// Parses `value` into `config`; `Ok(Some(note))` accepts it with a warning.
    pub apply: fn(&mut Config, &str) -> Result<Option<String>, ValueError>,
}

/// Every implemented non-listener key with its VerneMQ default.
///
/// Where the prose of the docs and the template disagree (`features.md` §12), the template's
/// default is used: `max_client_id_size = 100`, `topic_max_depth = 10`.
pub static SETTINGS: &[Setting] = &[
    Setting {
        key: "allow_anonymous",
        default: "off",
        apply: |c, v| set(&mut c.mqtt.allow_anonymous, values::parse_flag(v)),
    },
    Setting { key: "systree_enabled", default: "on", apply: |c, v| set(&mut c.systree.enabled, values::parse_flag(v)) },
    Setting {
        key: "systree_interval",
        default: "20000",
        apply: |c, v| {
            let ms = values::parse_integer_in(v, 0, i64::from(u32::MAX))?;
            set(&mut c.systree.interval, Ok(Duration::from_millis(u64::try_from(ms).unwrap_or(0))))
        },
    },
    Setting {
        key: "systree_mountpoint",
        default: "off",
        apply: |c, v| set(&mut c.systree.mountpoint, Ok(if v == "off" { String::new() } else { v.to_string() })),
    },
    Setting {
        key: "systree_qos",
        default: "0",
        apply: |c, v| set(&mut c.systree.qos, values::parse_integer_in(v, 0, 2).map(|q| u8::try_from(q).unwrap_or(0))),
    },
    Setting { key: "systree_retain", default: "off", apply: |c, v| set(&mut c.systree.retain, values::parse_flag(v)) },
    Setting {
        key: "allow_register_during_netsplit",
        default: "off",
        apply: |c, v| set(&mut c.netsplit.allow_register, values::parse_flag(v)),
    },
    Setting {
        key: "allow_publish_during_netsplit",
        default: "off",
        apply: |c, v| set(&mut c.netsplit.allow_publish, values::parse_flag(v)),
    },
    Setting {
        key: "allow_subscribe_during_netsplit",
        default: "off",
        apply: |c, v| set(&mut c.netsplit.allow_subscribe, values::parse_flag(v)),
    },
    Setting {
        key: "allow_unsubscribe_during_netsplit",
        default: "off",
        apply: |c, v| set(&mut c.netsplit.allow_unsubscribe, values::parse_flag(v)),
    },
    Setting {
        key: "coordinate_registrations",
        default: "on",
        apply: |c, v| set(&mut c.netsplit.coordinate_registrations, values::parse_flag(v)),
    },
    Setting {
        key: "retry_interval",
        default: "20",
        apply: |c, v| {
            let secs = values::parse_integer_in(v, 1, i64::from(u32::MAX))?;
            set(&mut c.mqtt.retry_interval, Ok(secs_duration(secs)))
        },
    },
    Setting {
        key: "max_client_id_size",
        default: "100",
        // A client identifier is a UTF-8 string with a two-byte length [MQTT-1.5.4].
        apply: |c, v| {
            let n = values::parse_u16_from(v, 1)?;
            set(&mut c.mqtt.max_client_id_size, Ok(usize::from(n)))
        },
    },
    Setting {
        key: "persistent_client_expiration",
        default: "never",
        apply: |c, v| set(&mut c.mqtt.persistent_client_expiration, values::parse_expiration(v)),
    },
    Setting {
        key: "max_last_will_delay",
        default: "client",
        apply: |c, v| set(&mut c.mqtt.max_last_will_delay, values::parse_will_delay(v)),
    },
    Setting {
        key: "max_inflight_messages",
        default: "20",
        apply: |c, v| set(&mut c.mqtt.max_inflight_messages, values::parse_u16_from(v, 0)),
    },
    Setting {
        key: "max_online_messages",
        default: "1000",
        apply: |c, v| set(&mut c.mqtt.max_online_messages, values::parse_queue_limit(v)),
    },
    Setting {
        key: "max_offline_messages",
        default: "1000",
        apply: |c, v| set(&mut c.mqtt.max_offline_messages, values::parse_queue_limit(v)),
    },
    Setting {
        key: "override_max_online_messages",
        default: "off",
        apply: |c, v| set(&mut c.mqtt.override_max_online_messages, values::parse_flag(v)),
    },
    Setting {
        key: "max_message_size",
        default: "0",
        apply: |c, v| set(&mut c.mqtt.max_message_size, values::parse_bytes(v)),
    },
    Setting {
        key: "upgrade_outgoing_qos",
        default: "off",
        apply: |c, v| set(&mut c.mqtt.upgrade_outgoing_qos, values::parse_flag(v)),
    },
    Setting {
        key: "max_message_rate",
        default: "0",
        apply: |c, v| set(&mut c.mqtt.max_message_rate, values::parse_u32(v)),
    },
    Setting {
        key: "queue_type",
        default: "fifo",
        apply: |c, v| {
            let q = match values::parse_choice(v, &["fifo", "lifo"])? {
                0 => QueueType::Fifo,
                _ => QueueType::Lifo,
            };
            set(&mut c.mqtt.queue_type, Ok(q))
        },
    },
    Setting {
        key: "shared_subscription_policy",
        default: "prefer_local",
        apply: |c, v| {
            let policy = SharedSubscriptionPolicy::from_name(v).ok_or_else(|| {
                ValueError::new(v, "is not a valid choice", values::one_of(SharedSubscriptionPolicy::NAMES))
            })?;
            set(&mut c.mqtt.shared_subscription_policy, Ok(policy))
        },
    },
    Setting {
        key: "receive_max_broker",
        default: "65535",
        // Receive Maximum 0 is a protocol error [MQTT-3.2.2.3.3].
        apply: |c, v| set(&mut c.mqtt.receive_max_broker, values::parse_u16_from(v, 1)),
    },
    Setting {
        key: "receive_max_client",
        default: "65535",
        apply: |c, v| set(&mut c.mqtt.receive_max_client, values::parse_u16_from(v, 1)),
    },
    Setting {
        key: "max_ws_frame_size",
        default: "268435456",
        apply: |c, v| set(&mut c.mqtt.max_ws_frame_size, values::parse_integer_or_infinity(v)),
    },
    Setting {
        key: "topic_alias_max_broker",
        default: "0",
        apply: |c, v| set(&mut c.mqtt.topic_alias_max_broker, values::parse_u16_from(v, 0)),
    },
    Setting {
        key: "topic_alias_max_client",
        default: "0",
        apply: |c, v| set(&mut c.mqtt.topic_alias_max_client, values::parse_u16_from(v, 0)),
    },
    Setting {
        key: "suppress_lwt_on_session_takeover",
        default: "off",
        apply: |c, v| set(&mut c.mqtt.suppress_lwt_on_session_takeover, values::parse_flag(v)),
    },
    Setting {
        key: "topic_max_depth",
        default: "10",
        apply: |c, v| set(&mut c.mqtt.topic_max_depth, values::parse_usize_from(v, 1)),
    },
    Setting {
        key: "max_keepalive",
        default: "0",
        apply: |c, v| {
            let secs = values::parse_u16_from(v, 0)?;
            set(&mut c.mqtt.max_keepalive, Ok((secs != 0).then_some(secs)))
        },
    },
    Setting {
        key: "mqtt.connect.timeout",
        default: "30000",
        apply: |c, v| {
            let ms = values::parse_integer_in(v, 1, i64::from(u32::MAX))?;
            let ms = u64::try_from(ms).unwrap_or(u64::MAX);
            set(&mut c.mqtt.mqtt_connect_timeout, Ok(Duration::from_millis(ms)))
        },
    },
    Setting {
        key: "metadata_plugin",
        default: "vmq_swc",
        apply: |c, v| {
            let plugin = match values::parse_choice(v, &["vmq_swc", "vmq_plumtree"])? {
                0 => MetadataPlugin::VmqSwc,
                _ => MetadataPlugin::VmqPlumtree,
            };
            set(&mut c.metadata_plugin, Ok(plugin))
        },
    },
    Setting {
        key: "plugins.vmq_passwd",
        default: "on",
        apply: |c, v| set(&mut c.auth_files.passwd, values::parse_flag(v)),
    },
    Setting {
        key: "vmq_passwd.password_file",
        default: "/etc/vernemq/vmq.passwd",
        apply: |c, v| set(&mut c.auth_files.password_file, values::parse_text(v).map(Into::into)),
    },
    Setting {
        key: "vmq_passwd.password_reload_interval",
        default: "10",
        apply: |c, v| set(&mut c.auth_files.password_reload_interval, reload_interval(v)),
    },
    Setting { key: "plugins.vmq_acl", default: "on", apply: |c, v| set(&mut c.auth_files.acl, values::parse_flag(v)) },
    Setting {
        key: "vmq_acl.acl_file",
        default: "/etc/vernemq/vmq.acl",
        apply: |c, v| set(&mut c.auth_files.acl_file, values::parse_text(v).map(Into::into)),
    },
    Setting {
        key: "vmq_acl.acl_reload_interval",
        default: "10",
        apply: |c, v| set(&mut c.auth_files.acl_reload_interval, reload_interval(v)),
    },
    Setting { key: "nodename", default: "VerneMQ@127.0.0.1", apply: |c, v| set(&mut c.nodename, parse_nodename(v)) },
    Setting {
        key: "distributed_cookie",
        default: "vmq",
        apply: |c, v| set(&mut c.distributed_cookie, values::parse_text(v).map(str::to_owned)),
    },
    Setting {
        key: "platform_data_dir",
        default: "./data",
        apply: |c, v| set(&mut c.platform_data_dir, values::parse_text(v).map(Into::into)),
    },
    Setting {
        key: "log.console.console.format",
        default: "text",
        apply: |c, v| {
            let json = match v {
                "text" => false,
                "json" => true,
                _ => return Err(ValueError::new(v, "is not a log format", "text or json")),
            };
            set(&mut c.log_console_json, Ok(json))
        },
    },
    Setting {
        key: "log.console.level",
        default: "info",
        apply: |c, v| {
            let (level, note) = LogLevel::from_vernemq(v)?;
            c.log_console_level = level;
            Ok(note)
        },
    },
];

fn set<T>(field: &mut T, value: Result<T, ValueError>) -> Result<Option<String>, ValueError> {
    *field = value?;
    Ok(None)
}

/// A reload interval in seconds; 0 switches reloading off.
fn reload_interval(value: &str) -> Result<Option<Duration>, ValueError> {
    let secs = values::parse_integer_in(value, 0, i64::from(u32::MAX))?;
    Ok((secs > 0).then(|| secs_duration(secs)))
}

fn secs_duration(secs: i64) -> Duration {
    Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

/// An Erlang-style node name `name@host`: VerneMQ's node names are Erlang node names, and
/// the cluster commands (`vmq-admin cluster join discovery-node=...`) take them in that form.
fn parse_nodename(value: &str) -> Result<String, ValueError> {
    const ACCEPTED: &str = "a node name of the form name@host, e.g. VerneMQ@127.0.0.1";
    let valid = value.split_once('@').is_some_and(|(name, host)| {
        !name.is_empty() && !host.is_empty() && !host.contains('@') && !value.chars().any(char::is_whitespace)
    });
    if valid { Ok(value.to_owned()) } else { Err(ValueError::new(value, "is not a node name", ACCEPTED)) }
}

/// Keys whose entries go unvalidated to the subsystems that own them: these prefixes, and
/// the exact keys in [`DELEGATED_KEYS`].
pub static DELEGATED_PREFIXES: &[&str] = &[
    "vmq_swc.",
    "vmq_plumtree.",
    "plumtree.",
    "rocksdb.",
    "leveldb.",
    "message_store.",
    "listener.vmq.",
    "listener.vmqs.",
    "listener.http.",
    "cluster.",
];

/// Exact keys handed to other subsystems (the cluster and queue-migration code).
pub static DELEGATED_KEYS: &[&str] = &[
    "outgoing_clustering_buffer_size",
    "outgoing_clustering_outbox_size",
    "max_drain_time",
    "max_msgs_per_drain_step",
];

/// Why a known VerneMQ key has no effect here; it decides the warning's wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsupported {
    /// A VerneMQ feature not implemented yet: "(feature) is not supported yet, ignored".
    NotYet(&'static str),
    /// A setting of the Erlang runtime or of VerneMQ internals that has no counterpart.
    NoEquivalent(&'static str),
    /// A key VerneMQ itself deprecated.
    Deprecated(&'static str),
    /// A key whose value is read or passed on, but which changes nothing yet; says why.
    NoEffectYet(&'static str),
}

impl Unsupported {
    /// The warning text after the key.
    pub fn message(self) -> String {
        match self {
            Unsupported::NotYet(what) => format!("({what}) is not supported yet, ignored"),
            Unsupported::NoEquivalent(what) => {
                format!("({what}) has no equivalent in vmq-rs, ignored")
            }
            Unsupported::Deprecated(what) => format!("is deprecated ({what}), ignored"),
            Unsupported::NoEffectYet(why) => format!("has no effect yet ({why})"),
        }
    }
}

/// A known but unimplemented key: a pattern, why it is ignored, and the values that mean
/// "feature off" (besides `off`), which need no warning since behaviour is the same.
pub struct KnownKey {
    /// Dotted pattern: `*` is one segment, a trailing `**` one or more.
    pub pattern: &'static str,
    /// Why it is ignored.
    pub why: Unsupported,
    /// Values that behave as we do anyway, so accepting them needs no warning.
    pub quiet: &'static [&'static str],
}

const fn known(pattern: &'static str, why: Unsupported) -> KnownKey {
    KnownKey { pattern, why, quiet: &[] }
}

const GRAPHITE: Unsupported = Unsupported::NotYet("Graphite reporting");
const LOG_FILES: Unsupported = Unsupported::NotYet("log files and syslog; vmq-rs logs to the console");
const ERLANG: Unsupported = Unsupported::NoEquivalent("Erlang VM setting");

/// VerneMQ 2.1 keys outside the listener hierarchy that we accept without implementing.
pub static KNOWN_UNSUPPORTED: &[KnownKey] = &[
    known("logging.obfuscation_secret", Unsupported::NotYet("credential obfuscation in logs")),
    known("logging.keepalive_as_warning", Unsupported::NotYet("keep-alive log level")),
    known("systree_reg_view", Unsupported::NoEquivalent("routing views of VerneMQ internals")),
    known("prometheus_namespace", Unsupported::NotYet("Prometheus metric prefix")),
    known("graphite_enabled", GRAPHITE),
    known("graphite_host", GRAPHITE),
    known("graphite_port", GRAPHITE),
    known("graphite_interval", GRAPHITE),
    known("graphite_prefix", GRAPHITE),
    known("graphite_api_key", GRAPHITE),
    known("graphite_connect_timeout", GRAPHITE),
    known("graphite_reconnect_timeout", GRAPHITE),
    known("graphite_include_labels", GRAPHITE),
    known("plugins.**", Unsupported::NotYet("plugins")),
    known("vmq_diversity.**", Unsupported::NotYet("Lua and database auth, vmq_diversity")),
    known("vmq_bcrypt.**", Unsupported::NotYet("bcrypt hashing, vmq_bcrypt")),
    known("vmq_webhooks.**", Unsupported::NotYet("webhooks, vmq_webhooks")),
    known("vmq_bridge.**", Unsupported::NotYet("the MQTT bridge, vmq_bridge")),
    known("vmq_http_pub.**", Unsupported::NotYet("HTTP publish, vmq_http_pub")),
    known("vmq_web_ui.**", Unsupported::NotYet("the web UI, vmq_web_ui")),
    known("http_module.**", Unsupported::NotYet("HTTP module authentication")),
    known("max_apikey_expiry_days", Unsupported::NotYet("API key policy")),
    known("min_apikey_length", Unsupported::NotYet("API key policy")),
    known("remote_enqueue_timeout", Unsupported::NotYet("remote enqueue timeout")),
    KnownKey { pattern: "log.console", why: LOG_FILES, quiet: &["console"] },
    known("log.console.file", LOG_FILES),
    known("log.console.file.format", LOG_FILES),
    known("log.console.rotation.**", LOG_FILES),
    known("log.error", LOG_FILES),
    known("log.error.**", LOG_FILES),
    known("log.crash", LOG_FILES),
    known("log.crash.**", LOG_FILES),
    known("log.sasl", LOG_FILES),
    known("log.sasl.**", LOG_FILES),
    known("log.syslog", LOG_FILES),
    known("log.syslog.**", LOG_FILES),
    known("platform_log_dir", LOG_FILES),
    known("platform_bin_dir", Unsupported::NoEquivalent("release layout")),
    known("platform_etc_dir", Unsupported::NoEquivalent("release layout")),
    known("platform_lib_dir", Unsupported::NoEquivalent("release layout")),
    known("erlang.**", ERLANG),
    known("tcp_listen_options", ERLANG),
    known("default_reg_view", Unsupported::NoEquivalent("routing views of VerneMQ internals")),
    known("vmq_reg_view", Unsupported::NoEquivalent("routing views of VerneMQ internals")),
    known("reg_views", Unsupported::NoEquivalent("routing views of VerneMQ internals")),
    known("queue_sup_sup_children", Unsupported::NoEquivalent("Erlang supervisor tree")),
    KnownKey { pattern: "allow_multiple_sessions", why: Unsupported::Deprecated("removed in VerneMQ 2.0"), quiet: &[] },
    KnownKey {
        pattern: "queue_deliver_mode",
        why: Unsupported::Deprecated("only used with allow_multiple_sessions, removed in VerneMQ 2.0"),
        quiet: &["fanout"],
    },
];

const NO_ACCEPTOR_POOL: Unsupported = Unsupported::NoEquivalent("Erlang acceptor pool; one task accepts per listener");
const SWC_IN_ROCKSDB: Unsupported =
    Unsupported::NoEquivalent("the SWC replica lives in the node's RocksDB in platform_data_dir");

/// Keys that are accepted, and validated or handed to their subsystem, but that change
/// nothing yet. Unlike [`KNOWN_UNSUPPORTED`], every value warns, the default included: a user
/// who writes one of these expects it to act, and the warning is the only place they learn
/// it does not. A key here that gets implemented must leave this list (the example
/// configuration's test lists the warnings it expects).
pub static WITHOUT_EFFECT: &[(&str, Unsupported)] = &[
    ("plumtree.**", Unsupported::NoEffectYet("the Plumtree backend reads only vmq_plumtree.* keys")),
    ("cluster.**", Unsupported::NoEffectYet("no cluster.* setting is read")),
    // Except the keys in TRANSPORT_KEYS.
    ("listener.vmq.**", Unsupported::NoEffectYet("the cluster transport reads only listener.vmq.clustering")),
    (
        "listener.vmqs.**",
        Unsupported::NoEffectYet(
            "the cluster transport reads only listener.vmqs.clustering, .cafile, .certfile \
             and .keyfile",
        ),
    ),
    ("listener.http.*.http_modules", Unsupported::NoEffectYet("every HTTP listener serves every module")),
    ("listener.http.*.http_module.**", Unsupported::NoEffectYet("every HTTP listener serves every module")),
    ("listener.nr_of_acceptors", NO_ACCEPTOR_POOL),
    ("listener.tcp.nr_of_acceptors", NO_ACCEPTOR_POOL),
    ("listener.tcp.*.nr_of_acceptors", NO_ACCEPTOR_POOL),
    ("vmq_swc.directory", SWC_IN_ROCKSDB),
    ("vmq_swc.dkm_directory", SWC_IN_ROCKSDB),
    ("vmq_swc.db_backend", SWC_IN_ROCKSDB),
    ("vmq_swc.fast_call_timeout", Unsupported::NoEquivalent("Erlang call timeout")),
];

/// The keys under `listener.vmq.` and `listener.vmqs.` that the cluster transport reads
/// (`cluster::transport::config`); the rest of those prefixes is in [`WITHOUT_EFFECT`].
pub static TRANSPORT_KEYS: &[&str] = &[
    "listener.vmq.clustering",
    "listener.vmqs.clustering",
    "listener.vmqs.cafile",
    "listener.vmqs.certfile",
    "listener.vmqs.keyfile",
];

/// Why an accepted `key` has no effect, if it has none.
pub fn without_effect(key: &str) -> Option<Unsupported> {
    if TRANSPORT_KEYS.contains(&key) {
        return None;
    }
    WITHOUT_EFFECT.iter().find(|(pattern, _)| matches(pattern, key)).map(|(_, why)| *why)
}

/// Keys older VerneMQ versions used, rejected with the key that replaced them: accepting them
/// would silently lose the user's intent.
pub static RENAMED: &[(&str, &str)] = &[
    ("max_queued_messages", "max_online_messages (renamed after VerneMQ 0.10)"),
    ("message_size_limit", "max_message_size"),
    (
        "trade_consistency",
        "allow_register_during_netsplit, allow_publish_during_netsplit, \
         allow_subscribe_during_netsplit and allow_unsubscribe_during_netsplit",
    ),
];

/// What a key is.
pub enum KeyClass {
    /// An implemented key outside the listener hierarchy.
    Setting(&'static Setting),
    /// Under `listener.` and not delegated: handled by [`super::listeners`].
    Listener,
    /// Handed to another subsystem.
    Delegated,
    /// Known to VerneMQ, not implemented: accepted with a warning unless `value` is quiet.
    Unsupported(&'static KnownKey),
    /// Replaced by another key in VerneMQ.
    Renamed(&'static str),
    /// Nobody knows it.
    Unknown,
}

/// Classifies `key`.
pub fn classify(key: &str) -> KeyClass {
    if let Some(setting) = SETTINGS.iter().find(|s| s.key == key) {
        return KeyClass::Setting(setting);
    }
    if DELEGATED_KEYS.contains(&key) || DELEGATED_PREFIXES.iter().any(|p| key.starts_with(p)) {
        return KeyClass::Delegated;
    }
    if key.starts_with("listener.") {
        return KeyClass::Listener;
    }
    if let Some(known) = KNOWN_UNSUPPORTED.iter().find(|k| matches(k.pattern, key)) {
        return KeyClass::Unsupported(known);
    }
    if let Some((_, new)) = RENAMED.iter().find(|(old, _)| *old == key) {
        return KeyClass::Renamed(new);
    }
    KeyClass::Unknown
}

impl KnownKey {
    /// Whether accepting `value` needs a warning: `off` and the quiet values behave as vmq-rs
    /// does anyway (the feature switched off), so they do not.
    pub fn warns_for(&self, value: &str) -> bool {
        value != "off" && !self.quiet.contains(&value)
    }
}

/// Whether dotted `key` matches `pattern` (`*` one segment, trailing `**` one or more).
pub fn matches(pattern: &str, key: &str) -> bool {
    let mut keys = key.split('.');
    let mut pats = pattern.split('.').peekable();
    while let Some(p) = pats.next() {
        if p == "**" && pats.peek().is_none() {
            return keys.next().is_some();
        }
        match keys.next() {
            Some(k) if p == "*" || p == k => {}
            _ => return false,
        }
    }
    keys.next().is_none()
}

/// Patterns of every key we know, for "did you mean" suggestions.
fn all_patterns() -> impl Iterator<Item = String> {
    let fixed = SETTINGS
        .iter()
        .map(|s| s.key)
        .chain(DELEGATED_KEYS.iter().copied())
        .chain(KNOWN_UNSUPPORTED.iter().map(|k| k.pattern))
        .chain(super::listeners::PATTERNS.iter().copied())
        .map(str::to_string);
    fixed.chain(DELEGATED_PREFIXES.iter().map(|p| format!("{p}**")))
}

/// The known key closest to a misspelt `key`, if one is close enough to be a likely typo.
pub fn suggest(key: &str) -> Option<String> {
    let key_lower = key.to_ascii_lowercase();
    let limit = (key.len() / 6).max(2);
    all_patterns()
        .map(|p| instantiate(&p, &key_lower))
        .map(|candidate| (edit_distance(&key_lower, &candidate), candidate))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, candidate)| candidate)
}

/// Writes `pattern` with its wildcards filled from `key`'s segments at the same positions
/// (a trailing `**` takes the rest of `key`, or the placeholder `<name>` when `key` is shorter).
fn instantiate(pattern: &str, key: &str) -> String {
    let key_segs: Vec<&str> = key.split('.').collect();
    let mut out: Vec<&str> = Vec::new();
    for (i, p) in pattern.split('.').enumerate() {
        match p {
            "**" => {
                if key_segs.len() > i {
                    out.extend(&key_segs[i..]);
                } else {
                    out.push("<name>");
                }
                return out.join(".");
            }
            "*" => out.push(key_segs.get(i).copied().unwrap_or("<name>")),
            literal => out.push(literal),
        }
    }
    out.join(".")
}

/// Levenshtein distance over bytes (keys are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != *cb);
            cur.push(substitute.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applying_each_default_changes_nothing() {
        let defaults = Config::vernemq_default();
        for setting in SETTINGS {
            let mut config = Config::vernemq_default();
            let note = (setting.apply)(&mut config, setting.default)
                .unwrap_or_else(|e| panic!("{}: default rejected: {e}", setting.key));
            assert_eq!(note, None, "{}", setting.key);
            assert_eq!(config, defaults, "{}: default differs", setting.key);
        }
    }

    #[test]
    fn setting_keys_are_unique_and_not_shadowed() {
        for (i, s) in SETTINGS.iter().enumerate() {
            assert!(SETTINGS[i + 1..].iter().all(|t| t.key != s.key), "{} twice", s.key);
            // `plugins.**` accepts plugins of any name; the ones implemented are settings,
            // which `classify` finds first.
            let shadowing = KNOWN_UNSUPPORTED.iter().filter(|k| k.pattern != "plugins.**");
            assert!(shadowing.clone().all(|k| !matches(k.pattern, s.key)), "{} also unsupported", s.key);
        }
    }

    #[test]
    fn patterns_match_segments() {
        assert!(matches("plugins.**", "plugins.vmq_acl"));
        assert!(matches("plugins.**", "plugins.my.path"));
        assert!(!matches("plugins.**", "plugins"));
        assert!(matches("log.crash", "log.crash"));
        assert!(!matches("log.crash", "log.crash.file"));
        assert!(matches("a.*.c", "a.b.c"));
        assert!(!matches("a.*.c", "a.b.d"));
        assert!(!matches("a.*", "a.b.c"));
    }

    #[test]
    fn classification() {
        assert!(matches!(classify("allow_anonymous"), KeyClass::Setting(_)));
        assert!(matches!(classify("log.console.level"), KeyClass::Setting(_)));
        assert!(matches!(classify("vmq_swc.sync_interval"), KeyClass::Delegated));
        assert!(matches!(classify("listener.vmq.clustering"), KeyClass::Delegated));
        assert!(matches!(classify("listener.http.default"), KeyClass::Delegated));
        assert!(matches!(classify("max_drain_time"), KeyClass::Delegated));
        assert!(matches!(classify("cluster.anything"), KeyClass::Delegated));
        assert!(matches!(classify("listener.tcp.default"), KeyClass::Listener));
        assert!(matches!(classify("vmq_bridge.tcp.br0"), KeyClass::Unsupported(_)));
        assert!(matches!(classify("erlang.async_threads"), KeyClass::Unsupported(_)));
        assert!(matches!(classify("log.console"), KeyClass::Unsupported(_)));
        assert!(matches!(classify("trade_consistency"), KeyClass::Renamed(_)));
        assert!(matches!(classify("allow_anonymus"), KeyClass::Unknown));
        assert!(matches!(classify("vmq_swc"), KeyClass::Unknown));
    }

    #[test]
    fn quiet_values_need_no_warning() {
        let KeyClass::Unsupported(k) = classify("plugins.vmq_bridge") else {
            panic!("plugins.vmq_bridge should be known");
        };
        assert!(!k.warns_for("off"));
        assert!(k.warns_for("on"));
        let KeyClass::Unsupported(k) = classify("log.console") else {
            panic!("log.console should be known");
        };
        assert!(!k.warns_for("console"));
        assert!(k.warns_for("file"));
    }

    #[test]
    fn without_effect_spares_the_keys_the_transport_reads() {
        for key in TRANSPORT_KEYS {
            assert_eq!(without_effect(key), None, "{key}");
        }
        assert!(without_effect("listener.vmqs.ciphers").is_some());
        assert!(without_effect("listener.vmq.clustering.mountpoint").is_some());
        assert_eq!(without_effect("vmq_swc.sync_interval"), None);
        assert_eq!(without_effect("allow_register_during_netsplit"), None);
        assert_eq!(without_effect("outgoing_clustering_buffer_size"), None);
    }

    #[test]
    fn without_effect_lists_only_accepted_keys() {
        for (pattern, _) in WITHOUT_EFFECT {
            let key = pattern.replace('*', "x");
            assert!(
                !matches!(classify(&key), KeyClass::Unknown | KeyClass::Renamed(_)),
                "{pattern} is not accepted, so it cannot be silent"
            );
            assert!(
                KNOWN_UNSUPPORTED.iter().all(|k| !matches(k.pattern, &key)),
                "{pattern} is also in KNOWN_UNSUPPORTED"
            );
        }
    }

    #[test]
    fn no_effect_yet_message_says_so() {
        assert_eq!(
            Unsupported::NoEffectYet("queues do not migrate between nodes yet").message(),
            "has no effect yet (queues do not migrate between nodes yet)"
        );
    }

    #[test]
    fn suggestions_for_typos() {
        assert_eq!(suggest("max_inflight_mesages").as_deref(), Some("max_inflight_messages"));
        assert_eq!(suggest("allow_anonymus").as_deref(), Some("allow_anonymous"));
        assert_eq!(suggest("Allow_Anonymous").as_deref(), Some("allow_anonymous"));
        assert_eq!(suggest("graphite.interval").as_deref(), Some("graphite_interval"));
        assert_eq!(suggest("plugin.vmq_acl").as_deref(), Some("plugins.vmq_acl"));
        assert_eq!(suggest("vmq_sw.sync_interval").as_deref(), Some("vmq_swc.sync_interval"));
        assert_eq!(suggest("completely_unrelated_setting"), None);
    }

    #[test]
    fn edit_distance_basics() {
        assert_eq!(edit_distance("", ""), 0);
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(edit_distance("abc", "abd"), 1);
        assert_eq!(edit_distance("abc", "ab"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
