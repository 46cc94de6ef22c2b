//! `vernemq.conf`: the node's configuration, in VerneMQ 2.1's format, key names and defaults.
//!
//! A file written for VerneMQ starts this broker unchanged:
//!
//! - keys we implement are parsed and validated with VerneMQ's value syntax and defaults
//!   (`keys::SETTINGS`, `listeners`);
//! - keys of subsystems that validate their own settings (metadata replication, storage,
//!   clustering, the HTTP listener) are kept in [`Config::delegated`] with their line, see
//!   `keys::DELEGATED_PREFIXES`;
//! - keys VerneMQ knows but we do not implement yet are accepted with a [`ConfigWarning`] that
//!   names them (`keys::KNOWN_UNSUPPORTED`), and so are accepted keys that have no effect
//!   yet, whatever their value (`keys::WITHOUT_EFFECT`, and the keys of the metadata backend
//!   `metadata_plugin` did not choose);
//! - anything else is a [`ConfigError`] naming the file, line and key, with what is accepted
//!   and, for a misspelt key, the key it most likely meant. The node must not start then.
//!
//! A key given twice is not an error: as cuttlefish does, the last value wins (with a warning
//! on the earlier line). `docs/configuration.md` is the user-facing reference of all of this.

mod error;
pub mod http;
mod keys;
mod listeners;
pub use listeners::{TLS_IMPLEMENTED, WEBSOCKET_IMPLEMENTED};
mod parser;
mod values;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use error::{ConfigError, ConfigWarning};
pub use values::{ValueError, parse_bytes};

use keys::KeyClass;
use listeners::{DEFAULT_MAX_WS_FRAME_SIZE, Handled, ListenerBuilder};
use vmq_mqtt::ProtocolVersion;

/// The node's whole configuration. Build it with [`Config::load`], [`Config::parse`] or
/// [`Config::embedded_default`]; every field then holds a validated value.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from; `None` for the embedded defaults or parsed text.
    pub source: Option<PathBuf>,
    /// `nodename`: this node's name in the cluster, `name@host`. Default `VerneMQ@127.0.0.1`.
    pub nodename: String,
    /// `distributed_cookie`: shared secret of the cluster's nodes. Default `vmq`.
    pub distributed_cookie: String,
    /// `platform_data_dir`: where the node keeps its data. Default `./data`.
    pub platform_data_dir: PathBuf,
    /// `log.console.level`. Default `info`.
    pub log_console_level: LogLevel,
    /// `log.console.console.format = json`: one JSON object per log line (time, level,
    /// message, fields, spans), for log collectors. Default `text`.
    pub log_console_json: bool,
    /// `metadata_plugin`: how subscriptions and retained messages are replicated.
    pub metadata_plugin: MetadataPlugin,
    /// The MQTT listeners of every transport (`listener.tcp|ssl|ws|wss.<name>` and their
    /// settings), in file order; `listener.tcp.default` first when VerneMQ's default applies.
    pub listeners: Vec<ListenerConfig>,
    /// MQTT behaviour shared by all sessions.
    pub mqtt: MqttConfig,
    /// What is allowed while the cluster is partitioned.
    pub netsplit: NetsplitConfig,
    /// The `$SYS` tree (`systree_*`).
    pub systree: SysTreeConfig,
    /// The file-based authentication and authorisation plugins (`vmq_passwd`, `vmq_acl`).
    pub auth_files: AuthFilesConfig,
    /// Entries for other subsystems, in file order, unvalidated; see
    /// [`Config::delegated_entries`] and [`Config::invalid_entry`].
    pub delegated: Vec<ConfigEntry>,
    /// Keys that were accepted without effect (not implemented yet, without effect yet,
    /// deprecated, given twice), in file order. The node logs each one at start.
    pub warnings: Vec<ConfigWarning>,
}

/// A `key = value` line kept for the subsystem that owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// The key as written.
    pub key: String,
    /// The value, without quotes, blanks or comment.
    pub value: String,
    /// 1-based line number, for error messages.
    pub line: usize,
}

/// One MQTT listener (`listener.<transport>.<name>`), after resolving VerneMQ's listener
/// hierarchy (`listener.<transport>.<name>.X`, else `listener.<transport>.X`, else
/// `listener.X`, else the default). Build one with [`ListenerConfig::new`]. This is the only
/// definition of a listener's settings: the node runs listeners from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// The `<transport>`: what the connections' bytes run over.
    pub transport: Transport,
    /// The `<name>` in `listener.<transport>.<name>`.
    pub name: String,
    /// The address to bind: an IP address and port, or a Unix domain socket.
    pub addr: ListenAddr,
    /// `max_connections`: concurrent connections; `None` = `infinity`. Default 10000.
    pub max_connections: Option<usize>,
    /// `max_connection_rate`: connections accepted per second at most, with a burst of one
    /// second's worth; beyond it accepting waits and clients wait in the kernel's backlog.
    /// `None` = `infinity` (default). Not a VerneMQ setting: VerneMQ leaves this to load
    /// balancers.
    pub max_connection_rate: Option<u32>,
    /// `mountpoint`: prefix isolating this listener's topics; `""` = none (VerneMQ's `off`).
    pub mountpoint: String,
    /// `allowed_protocol_versions`, sorted, without duplicates. Default `3,4,5`.
    pub allowed_protocol_versions: Vec<ProtocolVersion>,
    /// `max_connection_lifetime`: connections are closed after this long; `None` = `0`, no limit.
    pub max_connection_lifetime: Option<Duration>,
    /// `allow_anonymous_override`: anonymous clients are accepted on this listener when this
    /// or the global `allow_anonymous` is on (VerneMQ ORs the two). Default off.
    pub allow_anonymous_override: bool,
    /// `proxy_protocol`: connections start with a PROXY protocol header (v1 or v2) whose
    /// source address is the client's. Default off.
    pub proxy_protocol: bool,
    /// `proxy_protocol_use_cn_as_username`: the user name is the client certificate's common
    /// name from the PROXY v2 header. Default off.
    pub proxy_protocol_use_cn_as_username: bool,
    /// The TLS and WebSocket settings (`certfile`, `keyfile`, `cafile`, `ciphers`,
    /// `require_certificate`, `max_header_value_length`, ...) by setting name, validated by
    /// the transport that reads them when the listener starts. Empty for TCP.
    pub transport_settings: BTreeMap<String, String>,
    /// The global `max_ws_frame_size`, for WebSocket listeners; `None` = `infinity`.
    pub max_ws_frame_size: Option<usize>,
}

/// Where a listener accepts connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// An IP address and TCP port (port 0: any free port).
    Inet(SocketAddr),
    /// A Unix domain socket, VerneMQ's `local:<path>:0`.
    Local(PathBuf),
}

/// What a listener's MQTT connections run over: the `<transport>` of `listener.<transport>.*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Transport {
    /// `tcp`: plain TCP.
    Tcp,
    /// `ssl`: TLS over TCP.
    Ssl,
    /// `ws`: MQTT over WebSocket.
    Ws,
    /// `wss`: MQTT over WebSocket over TLS.
    Wss,
}

/// MQTT behaviour settings (VerneMQ's `vmq_server` keys). Defaults are VerneMQ 2.1's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttConfig {
    /// `allow_anonymous`: accept clients without authentication. Default off.
    pub allow_anonymous: bool,
    /// `max_client_id_size`: longest accepted client identifier, in bytes. Default 100.
    pub max_client_id_size: usize,
    /// `topic_max_depth`: most topic levels in a topic or filter. Default 10.
    pub topic_max_depth: usize,
    /// `max_message_size`: largest accepted MQTT message, in bytes; 0 = unlimited (default).
    pub max_message_size: usize,
    /// `max_inflight_messages`: unacknowledged QoS 1/2 messages per session; 0 = unlimited.
    /// Default 20.
    pub max_inflight_messages: u16,
    /// `receive_max_broker`: Receive Maximum the broker announces to MQTT 5 clients.
    /// Default 65535.
    pub receive_max_broker: u16,
    /// `receive_max_client`: the most in-flight messages the broker sends an MQTT 5 client
    /// when the client announces more (or nothing). Default 65535.
    pub receive_max_client: u16,
    /// `retry_interval`: wait before resending an unacknowledged QoS 1/2 message. Default 20 s.
    pub retry_interval: Duration,
    /// `max_online_messages`: queued messages per online session; `None` = unlimited (`-1`).
    /// Default 1000.
    pub max_online_messages: Option<usize>,
    /// `max_offline_messages`: QoS 1/2 messages kept for an offline session; `None` =
    /// unlimited (`-1`). Default 1000.
    pub max_offline_messages: Option<usize>,
    /// `override_max_online_messages`: on reconnect move all offline messages online,
    /// ignoring `max_online_messages`. Default off.
    pub override_max_online_messages: bool,
    /// `queue_type`: delivery order of queued messages. Default `fifo`.
    pub queue_type: QueueType,
    /// `upgrade_outgoing_qos`: deliver with the subscription's QoS even if the publish had a
    /// lower one (non-standard). Default off.
    pub upgrade_outgoing_qos: bool,
    /// `max_message_rate`: incoming publishes per second per session; 0 = unlimited (default).
    pub max_message_rate: u32,
    /// `persistent_client_expiration`: remove persistent sessions offline this long;
    /// `None` = `never` (default).
    pub persistent_client_expiration: Option<Duration>,
    /// `max_last_will_delay`: cap on the MQTT 5 Will Delay Interval; `None` = `client`
    /// (use the client's value, default).
    pub max_last_will_delay: Option<Duration>,
    /// `suppress_lwt_on_session_takeover`: do not publish the will when another connection
    /// takes the session over. Default off.
    pub suppress_lwt_on_session_takeover: bool,
    /// `max_ws_frame_size`: largest WebSocket frame a client may send, in bytes; `None` =
    /// `infinity`. Default 268435456. Copied into every listener
    /// ([`ListenerConfig::max_ws_frame_size`]).
    pub max_ws_frame_size: Option<usize>,
    /// `topic_alias_max_broker`: Topic Alias Maximum the broker announces to MQTT 5 clients.
    /// Default 0 (no aliases).
    pub topic_alias_max_broker: u16,
    /// `topic_alias_max_client`: most topic aliases the broker uses towards a client.
    /// Default 0 (none).
    pub topic_alias_max_client: u16,
    /// `shared_subscription_policy`: how a shared subscription's member is chosen.
    /// Default `prefer_local`.
    pub shared_subscription_policy: SharedSubscriptionPolicy,
    /// `max_keepalive`: cap on the keep-alive a client asks for, in seconds; `None` = no cap
    /// (`0`, default). MQTT 5 clients are told the capped value as Server Keep Alive.
    pub max_keepalive: Option<u16>,
    /// `mqtt.connect.timeout`: how long a new connection may take to send CONNECT
    /// (milliseconds in the file). Default 30000 ms.
    pub mqtt_connect_timeout: Duration,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            allow_anonymous: false,
            max_client_id_size: 100,
            topic_max_depth: 10,
            max_message_size: 0,
            max_inflight_messages: 20,
            receive_max_broker: u16::MAX,
            receive_max_client: u16::MAX,
            retry_interval: Duration::from_secs(20),
            max_online_messages: Some(1000),
            max_offline_messages: Some(1000),
            override_max_online_messages: false,
            queue_type: QueueType::Fifo,
            upgrade_outgoing_qos: false,
            max_message_rate: 0,
            persistent_client_expiration: None,
            max_last_will_delay: None,
            suppress_lwt_on_session_takeover: false,
            max_ws_frame_size: Some(DEFAULT_MAX_WS_FRAME_SIZE),
            topic_alias_max_broker: 0,
            topic_alias_max_client: 0,
            shared_subscription_policy: SharedSubscriptionPolicy::PreferLocal,
            max_keepalive: None,
            mqtt_connect_timeout: Duration::from_millis(30_000),
        }
    }
}

/// The `$SYS` tree: the node's figures published as MQTT messages (VerneMQ docs "$SYSTree").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysTreeConfig {
    /// `systree_enabled`. Default on.
    pub enabled: bool,
    /// `systree_interval` (milliseconds in the file): time between two publications; zero
    /// switches publishing off. Default 20 s.
    pub interval: Duration,
    /// `systree_mountpoint`: the mountpoint the messages are published in; `""` = none
    /// (default).
    pub mountpoint: String,
    /// `systree_qos`: 0, 1 or 2. Default 0.
    pub qos: u8,
    /// `systree_retain`: publish retained. Default off.
    pub retain: bool,
}

impl Default for SysTreeConfig {
    fn default() -> Self {
        SysTreeConfig {
            enabled: true,
            interval: Duration::from_secs(20),
            mountpoint: String::new(),
            qos: 0,
            retain: false,
        }
    }
}

/// What the node allows while some cluster member is unreachable (VerneMQ docs "Netsplits").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetsplitConfig {
    /// `allow_register_during_netsplit`: accept CONNECT. Default off.
    pub allow_register: bool,
    /// `allow_publish_during_netsplit`: accept PUBLISH. Default off.
    pub allow_publish: bool,
    /// `allow_subscribe_during_netsplit`: accept SUBSCRIBE. Default off.
    pub allow_subscribe: bool,
    /// `allow_unsubscribe_during_netsplit`: accept UNSUBSCRIBE. Default off.
    pub allow_unsubscribe: bool,
    /// `coordinate_registrations`: registrations go through the client id's registration
    /// leader, so that its other session anywhere is disconnected before the CONNACK. Off:
    /// each node registers locally, and the other session is closed once its node sees the
    /// newer registration. Default on.
    pub coordinate_registrations: bool,
}

impl Default for NetsplitConfig {
    fn default() -> Self {
        NetsplitConfig {
            allow_register: false,
            allow_publish: false,
            allow_subscribe: false,
            allow_unsubscribe: false,
            coordinate_registrations: true,
        }
    }
}

/// The `vmq_passwd` and `vmq_acl` plugins: their switches, files and reload intervals.
/// Defaults are VerneMQ 2.1's (both on, files under `/etc/vernemq`, reloaded every 10 s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthFilesConfig {
    /// `plugins.vmq_passwd`: CONNECT is checked against the password file. Default on.
    pub passwd: bool,
    /// `vmq_passwd.password_file`. Default `/etc/vernemq/vmq.passwd`.
    pub password_file: PathBuf,
    /// `vmq_passwd.password_reload_interval` (seconds; `None` = `0`, never). Default 10 s.
    pub password_reload_interval: Option<Duration>,
    /// `plugins.vmq_acl`: publishes and subscriptions are checked against the ACL file.
    /// Default on.
    pub acl: bool,
    /// `vmq_acl.acl_file`. Default `/etc/vernemq/vmq.acl`.
    pub acl_file: PathBuf,
    /// `vmq_acl.acl_reload_interval` (seconds; `None` = `0`, never). Default 10 s.
    pub acl_reload_interval: Option<Duration>,
}

impl AuthFilesConfig {
    /// The password file VerneMQ's packages install.
    pub const DEFAULT_PASSWORD_FILE: &'static str = "/etc/vernemq/vmq.passwd";
    /// The ACL file VerneMQ's packages install.
    pub const DEFAULT_ACL_FILE: &'static str = "/etc/vernemq/vmq.acl";
}

impl Default for AuthFilesConfig {
    fn default() -> Self {
        AuthFilesConfig {
            passwd: true,
            password_file: PathBuf::from(Self::DEFAULT_PASSWORD_FILE),
            password_reload_interval: Some(Duration::from_secs(10)),
            acl: true,
            acl_file: PathBuf::from(Self::DEFAULT_ACL_FILE),
            acl_reload_interval: Some(Duration::from_secs(10)),
        }
    }
}

/// `log.console.level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// `none`: no console log.
    None,
    /// `error` (also VerneMQ's `critical`, `alert`, `emergency`).
    Error,
    /// `warning`.
    Warning,
    /// `info` (also VerneMQ's `notice`).
    Info,
    /// `debug`.
    Debug,
}

impl LogLevel {
    /// The `tracing` level, `None` for [`LogLevel::None`].
    pub fn level(self) -> Option<tracing::Level> {
        match self {
            LogLevel::None => None,
            LogLevel::Error => Some(tracing::Level::ERROR),
            LogLevel::Warning => Some(tracing::Level::WARN),
            LogLevel::Info => Some(tracing::Level::INFO),
            LogLevel::Debug => Some(tracing::Level::DEBUG),
        }
    }

    /// Parses VerneMQ's level names (syslog severities). Those without a `tracing`
    /// counterpart map to the nearest level and come with a note for a warning.
    fn from_vernemq(value: &str) -> Result<(LogLevel, Option<String>), ValueError> {
        let mapped =
            |level: LogLevel, name: &str| Ok((level, Some(format!("is '{value}', which vmq-rs logs as '{name}'"))));
        match value {
            "none" => Ok((LogLevel::None, None)),
            "debug" => Ok((LogLevel::Debug, None)),
            "info" => Ok((LogLevel::Info, None)),
            "warning" => Ok((LogLevel::Warning, None)),
            "error" => Ok((LogLevel::Error, None)),
            "notice" => mapped(LogLevel::Info, "info"),
            "critical" | "alert" | "emergency" => mapped(LogLevel::Error, "error"),
            _ => Err(ValueError::new(
                value,
                "is not a log level",
                "one of: debug, info, notice, warning, error, critical, alert, emergency, none",
            )),
        }
    }
}

impl From<LogLevel> for tracing::level_filters::LevelFilter {
    fn from(level: LogLevel) -> Self {
        match level.level() {
            Some(level) => level.into(),
            None => tracing::level_filters::LevelFilter::OFF,
        }
    }
}

/// `metadata_plugin`: the replication protocol for subscriptions and retained messages.
/// The two are incompatible: all nodes of a cluster must use the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataPlugin {
    /// `vmq_swc`: Server-Wide Clocks (default, recommended for new clusters).
    VmqSwc,
    /// `vmq_plumtree`: Plumtree epidemic broadcast.
    VmqPlumtree,
}

/// `queue_type`: the order a queue delivers its messages in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueType {
    /// `fifo`: oldest first (default); when the queue is full, new messages are dropped.
    #[default]
    Fifo,
    /// `lifo`: newest first; when the queue is full, the oldest message is dropped.
    Lifo,
}

/// `shared_subscription_policy`: which subscriber of a shared subscription gets a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SharedSubscriptionPolicy {
    /// `prefer_local`: a subscriber on this node if there is one, else any (default).
    #[default]
    PreferLocal,
    /// `random`: any subscriber in the cluster.
    Random,
    /// `local_only`: only subscribers on this node.
    LocalOnly,
    /// `prefer_online_before_local`: an online subscriber first, local ones preferred.
    PreferOnlineBeforeLocal,
}

impl SharedSubscriptionPolicy {
    /// The names VerneMQ accepts, in the order of the variants.
    pub const NAMES: &'static [&'static str] = &["prefer_local", "random", "local_only", "prefer_online_before_local"];

    /// The policy named `name` in `vernemq.conf`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "prefer_local" => Some(SharedSubscriptionPolicy::PreferLocal),
            "random" => Some(SharedSubscriptionPolicy::Random),
            "local_only" => Some(SharedSubscriptionPolicy::LocalOnly),
            "prefer_online_before_local" => Some(SharedSubscriptionPolicy::PreferOnlineBeforeLocal),
            _ => None,
        }
    }
}

/// The name used for text that did not come from a file.
const UNNAMED: &str = "vernemq.conf";

impl Config {
    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let io_error = |source| ConfigError::Io { path: path.to_path_buf(), source };
        let bytes = std::fs::read(path).map_err(io_error)?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            ConfigError::Encoding {
                file: path.display().to_string(),
                line: 1 + valid.iter().filter(|b| **b == b'\n').count(),
            }
        })?;
        Config::parse(&text, Some(path))
    }

    /// Parses `text`; `source` names the file in errors (and is kept in [`Config::source`]).
    pub fn parse(text: &str, source: Option<&Path>) -> Result<Config, ConfigError> {
        let file = source.map_or_else(|| UNNAMED.to_string(), |p| p.display().to_string());
        let raw = parser::parse_lines(text).map_err(|e| ConfigError::Syntax {
            file: file.clone(),
            line: e.line,
            message: e.message,
        })?;
        let invalid = |line: usize, key: &str, error: ValueError| ConfigError::Invalid {
            file: file.clone(),
            line,
            key: key.to_string(),
            message: error.message,
            accepted: error.accepted,
        };

        let mut config = Config::vernemq_default();
        config.source = source.map(Path::to_path_buf);
        config.listeners.clear();
        let mut listeners = ListenerBuilder::default();

        // As in cuttlefish, the last occurrence of a key wins; earlier ones are skipped
        // (not validated) and reported.
        let mut last_line: HashMap<&str, usize> = HashMap::new();
        for entry in &raw {
            last_line.insert(entry.key.as_str(), entry.line);
        }
        for entry in &raw {
            let (key, value, line) = (entry.key.as_str(), entry.value.as_str(), entry.line);
            let last = last_line.get(key).copied().unwrap_or(line);
            if last != line {
                config.warnings.push(ConfigWarning {
                    line: Some(line),
                    key: key.to_string(),
                    message: format!("is set again on line {last}, which wins; ignored"),
                });
                continue;
            }
            let warning = match keys::classify(key) {
                KeyClass::Setting(setting) => (setting.apply)(&mut config, value).map_err(|e| invalid(line, key, e))?,
                KeyClass::Delegated => {
                    config.delegated.push(ConfigEntry { key: key.to_string(), value: value.to_string(), line });
                    None
                }
                KeyClass::Unsupported(known) => known.warns_for(value).then(|| known.why.message()),
                KeyClass::Renamed(new) => {
                    return Err(invalid(
                        line,
                        key,
                        ValueError {
                            message: "is not a VerneMQ 2.1 key".into(),
                            accepted: format!("use {new} instead"),
                        },
                    ));
                }
                KeyClass::Listener => match listeners.handle(key, value, line).map_err(|e| invalid(line, key, e))? {
                    Handled::Done => None,
                    Handled::Warning(w) => Some(w),
                    Handled::Unknown => return Err(unknown_key(&file, line, key)),
                },
                KeyClass::Unknown => return Err(unknown_key(&file, line, key)),
            };
            let warning = warning.or_else(|| keys::without_effect(key).map(|why| why.message()));
            if let Some(message) = warning {
                config.warnings.push(ConfigWarning { line: Some(line), key: key.to_string(), message });
            }
        }
        config.listeners = listeners.finish().map_err(|e| invalid(e.line, &e.key, e.error))?;
        for listener in &mut config.listeners {
            listener.max_ws_frame_size = config.mqtt.max_ws_frame_size;
        }
        config.warn_other_backend_keys();
        Ok(config)
    }

    /// Only the backend `metadata_plugin` chooses reads (and validates) its keys; the other
    /// backend's would be dropped silently, so each one gets a warning.
    fn warn_other_backend_keys(&mut self) {
        let (chosen, other) = match self.metadata_plugin {
            MetadataPlugin::VmqSwc => ("vmq_swc", "vmq_plumtree."),
            MetadataPlugin::VmqPlumtree => ("vmq_plumtree", "vmq_swc."),
        };
        for entry in self.delegated.iter().filter(|e| e.key.starts_with(other)) {
            let line = Some(entry.line);
            if self.warnings.iter().any(|w| w.line == line) {
                continue;
            }
            self.warnings.push(ConfigWarning {
                line,
                key: entry.key.clone(),
                message: format!("has no effect with metadata_plugin = {chosen}, ignored"),
            });
        }
        // Warnings in file order, as they are read.
        self.warnings.sort_by_key(|w| w.line);
    }

    /// VerneMQ's defaults, as a `vernemq.conf` with no settings gives: one listener `default`
    /// on 127.0.0.1:1883, anonymous clients refused.
    pub fn vernemq_default() -> Config {
        Config {
            source: None,
            nodename: "VerneMQ@127.0.0.1".into(),
            distributed_cookie: "vmq".into(),
            platform_data_dir: PathBuf::from("./data"),
            log_console_level: LogLevel::Info,
            log_console_json: false,
            metadata_plugin: MetadataPlugin::VmqSwc,
            listeners: vec![ListenerConfig::new(
                Transport::Tcp,
                "default",
                SocketAddr::from(([127, 0, 0, 1], 1883)).into(),
            )],
            mqtt: MqttConfig::default(),
            netsplit: NetsplitConfig::default(),
            systree: SysTreeConfig::default(),
            auth_files: AuthFilesConfig::default(),
            delegated: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// What the node runs with no configuration file (`vernemq console` on a laptop):
    /// VerneMQ's defaults, except that anonymous clients are allowed so that
    /// `mosquitto_pub -t t -m hello` works without setting up authentication first.
    /// The listener stays on 127.0.0.1, so this is not reachable from other machines.
    pub fn embedded_default() -> Config {
        let mut config = Config::vernemq_default();
        config.mqtt.allow_anonymous = true;
        // VerneMQ's shipped template serves health, metrics and the management API here.
        config.delegated.push(ConfigEntry {
            key: "listener.http.default".into(),
            value: "127.0.0.1:8888".into(),
            line: 0,
        });
        config
    }

    /// The implemented keys outside the listener hierarchy, with their defaults in
    /// `vernemq.conf` syntax (for `vmq-admin` and documentation checks).
    pub fn known_settings() -> impl Iterator<Item = (&'static str, &'static str)> {
        keys::SETTINGS.iter().map(|s| (s.key, s.default))
    }

    /// The file name used in messages.
    pub fn file_label(&self) -> String {
        self.source.as_ref().map_or_else(|| UNNAMED.to_string(), |p| p.display().to_string())
    }

    /// The delegated entries whose key is `prefix` or starts with it (e.g. `"vmq_swc."`,
    /// `"max_drain_time"`), in file order.
    pub fn delegated_entries<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a ConfigEntry> + 'a {
        self.delegated.iter().filter(move |e| e.key.starts_with(prefix))
    }

    /// The error a subsystem returns for a delegated entry it rejects, so the user sees the
    /// same "file:line: key: problem; accepted: ..." message as for every other key.
    pub fn invalid_entry(
        &self,
        entry: &ConfigEntry,
        message: impl Into<String>,
        accepted: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            file: self.file_label(),
            line: entry.line,
            key: entry.key.clone(),
            message: message.into(),
            accepted: accepted.into(),
        }
    }
}

fn unknown_key(file: &str, line: usize, key: &str) -> ConfigError {
    let message = match keys::suggest(key) {
        Some(candidate) => format!("unknown key (did you mean '{candidate}'?)"),
        None => "unknown key".to_string(),
    };
    ConfigError::Invalid {
        file: file.to_string(),
        line,
        key: key.to_string(),
        message,
        accepted: "the keys of VerneMQ 2.1 listed in docs/configuration.md".into(),
    }
}

#[cfg(test)]
mod tests;
