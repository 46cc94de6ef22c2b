//! The MQTT listener hierarchy (`listener.*`), as VerneMQ's `vmq_server.schema` defines it.
//!
//! `listener.<transport>.<name> = ip:port` defines a listener, `<transport>` one of `tcp`,
//! `ssl`, `ws`, `wss` ([`Transport`]); a name is one word that is not a setting name. A setting
//! is looked up on three levels, the most specific winning (docs "MQTT Listeners"):
//!
//! 1. `listener.<transport>.<name>.<setting>`: one listener;
//! 2. `listener.<transport>.<setting>`: every listener of that transport;
//! 3. `listener.<setting>`: every listener of every transport (a few settings only);
//!
//! and falls back to VerneMQ's default. If no TCP listener is defined at all, VerneMQ's
//! default `listener.tcp.default = 127.0.0.1:1883` applies.
//!
//! Every transport's listeners become one [`ListenerConfig`]. Only TCP is implemented: the
//! keys of `ssl`, `ws` and `wss` are parsed and validated like TCP's, but each one whose value
//! is not `off` gets a warning, and the node does not start those listeners. `https` (an HTTP
//! listener) is known and warned about, nothing more; `vmq`, `vmqs` and `http` are delegated
//! before they get here (see [`super::keys::DELEGATED_PREFIXES`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::keys::Unsupported;
use super::values::{self, ValueError};
use super::{ListenAddr, ListenerConfig, Transport};
use vmq_mqtt::ProtocolVersion;

/// Key patterns of the hierarchy, for suggestions (`*` is a listener name).
pub static PATTERNS: &[&str] = &[
    "listener.max_connections",
    "listener.max_connection_rate",
    "listener.max_connection_lifetime",
    "listener.mountpoint",
    "listener.nr_of_acceptors",
    "listener.tcp.*",
    "listener.tcp.max_connections",
    "listener.tcp.max_connection_rate",
    "listener.tcp.max_connection_lifetime",
    "listener.tcp.mountpoint",
    "listener.tcp.nr_of_acceptors",
    "listener.tcp.allowed_protocol_versions",
    "listener.tcp.allow_anonymous_override",
    "listener.tcp.proxy_protocol",
    "listener.tcp.proxy_protocol_use_cn_as_username",
    "listener.tcp.buffer_sizes",
    "listener.tcp.*.max_connections",
    "listener.tcp.*.max_connection_rate",
    "listener.tcp.*.max_connection_lifetime",
    "listener.tcp.*.mountpoint",
    "listener.tcp.*.nr_of_acceptors",
    "listener.tcp.*.allowed_protocol_versions",
    "listener.tcp.*.allow_anonymous_override",
    "listener.tcp.*.proxy_protocol",
    "listener.tcp.*.proxy_protocol_use_cn_as_username",
    "listener.tcp.*.buffer_sizes",
    "listener.ssl.*",
    "listener.ws.*",
    "listener.wss.*",
    "listener.https.*",
    "listener.ssl.*.*",
    "listener.ws.*.*",
    "listener.wss.*.*",
    "listener.https.*.*",
];

/// Settings that exist on every level (`listener.<setting>` too).
const GLOBAL_SETTINGS: &[&str] =
    &["max_connections", "max_connection_rate", "max_connection_lifetime", "mountpoint", "nr_of_acceptors"];

/// Settings of every transport, on the transport and the listener level; they become
/// fields of [`ListenerConfig`].
const LISTENER_SETTINGS: &[&str] = &[
    "max_connections",
    "max_connection_rate",
    "max_connection_lifetime",
    "mountpoint",
    "nr_of_acceptors",
    "allowed_protocol_versions",
    "allow_anonymous_override",
    "proxy_protocol",
    "proxy_protocol_use_cn_as_username",
    "buffer_sizes",
];

/// Settings of the TLS and WebSocket transports that TCP has not, kept by name in
/// [`ListenerConfig::transport_settings`] until those transports are implemented.
const TRANSPORT_SETTINGS: &[&str] = &[
    "cafile",
    "capath",
    "depth",
    "certfile",
    "keyfile",
    "ciphers",
    "eccs",
    "crlfile",
    "require_certificate",
    "tls_version",
    "use_identity_as_username",
    "psk_support",
    "psk_identity_hint",
    "pskfile",
    "pskfile_separator",
    "tls_handshake_timeout",
    "max_request_line_length",
    "max_header_value_length",
    "http_modules",
    "config_mod",
    "config_fun",
];

/// VerneMQ's default `allowed_protocol_versions`. The template says `3,4,5,131` and the prose
/// `3,4` (`features.md` §12.2); we enable the three MQTT versions we implement and not the
/// bridge variant.
const DEFAULT_PROTOCOL_VERSIONS: [ProtocolVersion; 3] = [ProtocolVersion::V3, ProtocolVersion::V4, ProtocolVersion::V5];

/// VerneMQ's default `max_ws_frame_size`: 256 MiB.
pub(crate) const DEFAULT_MAX_WS_FRAME_SIZE: usize = 268_435_456;

/// VerneMQ's default `listener.max_connections`.
const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// The outcome of one accepted listener key.
#[derive(Debug, PartialEq, Eq)]
pub enum Handled {
    /// Applied, nothing to report.
    Done,
    /// Accepted with this warning text (after the key).
    Warning(String),
    /// Not a key of the hierarchy.
    Unknown,
}

/// Settings given on one level; `None` = not given there.
#[derive(Debug, Default, Clone)]
struct Level {
    max_connections: Option<Option<usize>>,
    max_connection_rate: Option<Option<u32>>,
    max_connection_lifetime: Option<Option<Duration>>,
    mountpoint: Option<String>,
    allowed_protocol_versions: Option<Vec<ProtocolVersion>>,
    allow_anonymous_override: Option<bool>,
    proxy_protocol: Option<bool>,
    proxy_protocol_use_cn_as_username: Option<bool>,
    /// [`TRANSPORT_SETTINGS`] given on this level, by setting name.
    transport_settings: BTreeMap<String, String>,
}

/// A listener-level setting, remembered with its line until all definitions are known.
#[derive(Debug)]
struct NamedSettings {
    first_line: usize,
    first_key: String,
    level: Level,
}

/// A `listener.<transport>.<name> = ip:port` line.
#[derive(Debug, Clone)]
struct Definition {
    transport: Transport,
    name: String,
    addr: ListenAddr,
    line: usize,
}

/// Collects listener keys in file order, then resolves the hierarchy in [`Self::finish`].
#[derive(Debug, Default)]
pub struct ListenerBuilder {
    global: Level,
    transports: BTreeMap<Transport, Level>,
    named: BTreeMap<(Transport, String), NamedSettings>,
    /// In file order.
    defined: Vec<Definition>,
}

/// A listener error found only once the whole file is read.
#[derive(Debug, PartialEq, Eq)]
pub struct LateError {
    /// Line of the offending key.
    pub line: usize,
    /// The offending key.
    pub key: String,
    /// What is wrong.
    pub error: ValueError,
}

impl ListenerBuilder {
    /// Handles one key under `listener.` (not delegated).
    pub fn handle(&mut self, key: &str, value: &str, line: usize) -> Result<Handled, ValueError> {
        let segs: Vec<&str> = key.split('.').collect();
        let handled = match segs.as_slice() {
            ["listener", setting] if GLOBAL_SETTINGS.contains(setting) => {
                return apply(&mut self.global, setting, value);
            }
            ["listener", transport, rest @ ..] => match Transport::from_key(transport) {
                Some(transport) => self.handle_transport(transport, rest, key, value, line)?,
                None => return Ok(other_transport(transport, rest, value)),
            },
            _ => return Ok(Handled::Unknown),
        };
        Ok(match handled {
            // Parsed, but without effect (a transport or a TLS setting not implemented yet):
            // say so unless the value switches something off.
            Handled::Done if !takes_effect(key) && value != "off" => {
                Handled::Warning(Unsupported::NotYet(not_implemented(key)).message())
            }
            other => other,
        })
    }

    fn handle_transport(
        &mut self,
        transport: Transport,
        rest: &[&str],
        key: &str,
        value: &str,
        line: usize,
    ) -> Result<Handled, ValueError> {
        match rest {
            [setting] if transport.accepts(setting) => {
                apply(self.transports.entry(transport).or_default(), setting, value)
            }
            [name] => self.define(transport, name, value, line),
            [name, setting] if transport.accepts(setting) => {
                let entry = self.named.entry((transport, (*name).to_string())).or_insert_with(|| NamedSettings {
                    first_line: line,
                    first_key: key.to_string(),
                    level: Level::default(),
                });
                apply(&mut entry.level, setting, value)
            }
            _ => Ok(Handled::Unknown),
        }
    }

    fn define(&mut self, transport: Transport, name: &str, value: &str, line: usize) -> Result<Handled, ValueError> {
        let addr = if value.starts_with("local:") {
            ListenAddr::Local(parse_local(value)?)
        } else {
            ListenAddr::Inet(values::parse_socket_addr(value).map_err(|mut e| {
                // `listener.tcp.max_conections = 500` reads as a listener named
                // `max_conections`; point at the setting the user most likely meant.
                let mut settings = LISTENER_SETTINGS.iter().chain(TRANSPORT_SETTINGS);
                if let Some(close) = settings.find(|s| transport.accepts(s) && near(s, name)) {
                    let transport = transport.key();
                    e.message.push_str(&format!(" (did you mean listener.{transport}.{close}?)"));
                }
                e
            })?)
        };
        self.defined.retain(|d| !(d.transport == transport && d.name == name));
        self.defined.push(Definition { transport, name: name.to_string(), addr, line });
        Ok(Handled::Done)
    }

    /// Resolves every defined listener. Errors: settings for a listener never defined,
    /// and two listeners on the same address.
    pub fn finish(self) -> Result<Vec<ListenerConfig>, LateError> {
        for ((transport, name), settings) in &self.named {
            let defined = self.defined.iter().any(|d| d.transport == *transport && d.name == *name);
            // Only TCP listeners: VerneMQ's template sets
            // `listener.ssl.name.allow_anonymous_override = off` without defining `ssl.name`,
            // and every other such key was warned about when read.
            if !defined && *transport == Transport::Tcp {
                let names: Vec<&str> =
                    self.defined.iter().filter(|d| d.transport == *transport).map(|d| d.name.as_str()).collect();
                return Err(LateError {
                    line: settings.first_line,
                    key: settings.first_key.clone(),
                    error: ValueError {
                        message: format!("there is no {} listener named '{name}'", transport.description()),
                        accepted: format!(
                            "settings of a listener defined with listener.{}.{name} = ip:port \
                             (defined: {})",
                            transport.key(),
                            if names.is_empty() { "none".to_string() } else { names.join(", ") }
                        ),
                    },
                });
            }
        }
        let mut defined = self.defined.clone();
        let tcp_given = |t: &Transport| *t == Transport::Tcp;
        if !defined.iter().any(|d| tcp_given(&d.transport)) {
            defined.insert(
                0,
                Definition {
                    transport: Transport::Tcp,
                    name: "default".to_string(),
                    addr: ListenAddr::Inet(SocketAddr::from(([127, 0, 0, 1], 1883))),
                    line: 0,
                },
            );
        }
        let mut listeners: Vec<ListenerConfig> = Vec::with_capacity(defined.len());
        for d in defined {
            let any_port = matches!(d.addr, ListenAddr::Inet(a) if a.port() == 0);
            if !any_port && let Some(other) = listeners.iter().find(|l| l.addr == d.addr) {
                return Err(LateError {
                    line: d.line,
                    key: format!("listener.{}.{}", d.transport.key(), d.name),
                    error: ValueError {
                        message: format!("address {} is already used by {}", d.addr, other.key()),
                        accepted: "a different address, port or socket path for each listener".into(),
                    },
                });
            }
            listeners.push(self.resolve(d));
        }
        Ok(listeners)
    }

    fn resolve(&self, d: Definition) -> ListenerConfig {
        let named = self.named.get(&(d.transport, d.name.clone())).map(|s| &s.level);
        // Most specific level first: listener, transport, global.
        let levels = [named, self.transports.get(&d.transport), Some(&self.global)];
        let levels = levels.iter().flatten();
        let mut listener = ListenerConfig::new(d.transport, d.name, d.addr);
        if let Some(v) = levels.clone().find_map(|l| l.max_connections) {
            listener.max_connections = v;
        }
        if let Some(v) = levels.clone().find_map(|l| l.max_connection_rate) {
            listener.max_connection_rate = v;
        }
        if let Some(v) = levels.clone().find_map(|l| l.mountpoint.clone()) {
            listener.mountpoint = v;
        }
        if let Some(v) = levels.clone().find_map(|l| l.allowed_protocol_versions.clone()) {
            listener.allowed_protocol_versions = v;
        }
        if let Some(v) = levels.clone().find_map(|l| l.max_connection_lifetime) {
            listener.max_connection_lifetime = v;
        }
        if let Some(v) = levels.clone().find_map(|l| l.allow_anonymous_override) {
            listener.allow_anonymous_override = v;
        }
        if let Some(v) = levels.clone().find_map(|l| l.proxy_protocol) {
            listener.proxy_protocol = v;
        }
        if let Some(v) = levels.clone().find_map(|l| l.proxy_protocol_use_cn_as_username) {
            listener.proxy_protocol_use_cn_as_username = v;
        }
        // Least specific first, so the more specific levels overwrite.
        for level in levels.rev() {
            for (setting, value) in &level.transport_settings {
                listener.transport_settings.insert(setting.clone(), value.clone());
            }
        }
        listener
    }
}

impl Transport {
    /// Every transport, in the order of the variants.
    pub const ALL: [Transport; 4] = [Transport::Tcp, Transport::Ssl, Transport::Ws, Transport::Wss];

    /// The `<transport>` segment of its keys: `tcp`, `ssl`, `ws` or `wss`.
    pub fn key(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Ssl => "ssl",
            Transport::Ws => "ws",
            Transport::Wss => "wss",
        }
    }

    /// The transport whose keys use `key`.
    pub fn from_key(key: &str) -> Option<Transport> {
        Transport::ALL.into_iter().find(|t| t.key() == key)
    }

    /// What it is called in messages.
    pub fn description(self) -> &'static str {
        match self {
            Transport::Tcp => "TCP",
            Transport::Ssl => "TLS",
            Transport::Ws => "WebSocket",
            Transport::Wss => "secure WebSocket",
        }
    }

    /// Whether `setting` is a setting of this transport's listeners.
    fn accepts(self, setting: &str) -> bool {
        LISTENER_SETTINGS.contains(&setting) || (self != Transport::Tcp && TRANSPORT_SETTINGS.contains(&setting))
    }
}

impl ListenerConfig {
    /// A listener `name` of `transport` on `addr`, with VerneMQ's defaults for every setting.
    pub fn new(transport: Transport, name: impl Into<String>, addr: ListenAddr) -> ListenerConfig {
        ListenerConfig {
            transport,
            name: name.into(),
            addr,
            max_connections: Some(DEFAULT_MAX_CONNECTIONS),
            max_connection_rate: None,
            mountpoint: String::new(),
            allowed_protocol_versions: DEFAULT_PROTOCOL_VERSIONS.to_vec(),
            max_connection_lifetime: None,
            allow_anonymous_override: false,
            proxy_protocol: false,
            proxy_protocol_use_cn_as_username: false,
            transport_settings: BTreeMap::new(),
            max_ws_frame_size: Some(DEFAULT_MAX_WS_FRAME_SIZE),
        }
    }

    /// The key that defines it, `listener.<transport>.<name>`.
    pub fn key(&self) -> String {
        format!("listener.{}.{}", self.transport.key(), self.name)
    }
}

/// Parses VerneMQ's Unix domain socket address, `local:/var/run/app.sock:0` (the port is
/// always 0).
fn parse_local(value: &str) -> Result<PathBuf, ValueError> {
    const ACCEPTED: &str = "an IP address and port, or local:<socket path>:0";
    let path = value.strip_prefix("local:").and_then(|v| v.strip_suffix(":0")).unwrap_or_default();
    if path.is_empty() {
        return Err(ValueError::new(value, "is not a Unix domain socket address", ACCEPTED));
    }
    Ok(PathBuf::from(path))
}

impl ListenAddr {
    /// The IP address and port; `None` for a Unix domain socket.
    pub fn inet(&self) -> Option<SocketAddr> {
        match self {
            ListenAddr::Inet(addr) => Some(*addr),
            ListenAddr::Local(_) => None,
        }
    }
}

impl std::str::FromStr for ListenAddr {
    type Err = ValueError;

    /// `ip:port`, or `local:<path>:0` for a Unix domain socket.
    fn from_str(value: &str) -> Result<ListenAddr, ValueError> {
        if value.starts_with("local:") {
            parse_local(value).map(ListenAddr::Local)
        } else {
            values::parse_socket_addr(value).map(ListenAddr::Inet)
        }
    }
}

impl From<SocketAddr> for ListenAddr {
    fn from(addr: SocketAddr) -> ListenAddr {
        ListenAddr::Inet(addr)
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Inet(addr) => addr.fmt(f),
            ListenAddr::Local(path) => write!(f, "local:{}", path.display()),
        }
    }
}

/// The transport of a `listener.<transport>...` key.
fn transport_of(key: &str) -> Option<Transport> {
    key.split('.').nth(1).and_then(Transport::from_key)
}

/// The settings of a TLS listener (`listener.ssl.*`, `listener.wss.*`) that take effect; its
/// other transport settings (`capath`, TLS-PSK, ...) are accepted with a warning.
pub const TLS_IMPLEMENTED: [&str; 10] = [
    "certfile",
    "keyfile",
    "cafile",
    "require_certificate",
    "use_identity_as_username",
    "crlfile",
    "tls_version",
    "ciphers",
    "eccs",
    "depth",
];

/// The settings of a WebSocket listener (`listener.ws.*`) that take effect, besides those of
/// every transport; a secure WebSocket listener (`listener.wss.*`) takes these and
/// [`TLS_IMPLEMENTED`].
pub const WEBSOCKET_IMPLEMENTED: [&str; 2] = ["max_request_line_length", "max_header_value_length"];

/// Whether an accepted listener key takes effect: every TCP key, and a TLS listener's
/// definition and settings but the TLS settings not implemented yet.
fn takes_effect(key: &str) -> bool {
    match transport_of(key) {
        Some(Transport::Tcp) | None => true,
        Some(transport) => {
            let last = key.rsplit('.').next().unwrap_or_default();
            let tls = matches!(transport, Transport::Ssl | Transport::Wss) && TLS_IMPLEMENTED.contains(&last);
            let websocket =
                matches!(transport, Transport::Ws | Transport::Wss) && WEBSOCKET_IMPLEMENTED.contains(&last);
            !TRANSPORT_SETTINGS.contains(&last) || tls || websocket
        }
    }
}

/// The feature a key without effect belongs to, for its warning.
fn not_implemented(key: &str) -> &'static str {
    match transport_of(key) {
        Some(Transport::Ssl | Transport::Wss) => "this TLS setting",
        Some(Transport::Ws) => "this WebSocket setting",
        Some(Transport::Tcp) | None => "this listener setting",
    }
}

/// Parses `value` for `setting` into `level`.
fn apply(level: &mut Level, setting: &str, value: &str) -> Result<Handled, ValueError> {
    match setting {
        "max_connections" => {
            level.max_connections = Some(values::parse_integer_or_infinity(value)?);
        }
        "max_connection_rate" => {
            let rate = match value {
                "infinity" => None,
                _ => Some(values::parse_integer_in(value, 1, i64::from(u32::MAX)).and_then(|n| {
                    u32::try_from(n).map_err(|_| ValueError::new(value, "is too large", "1 to 4294967295"))
                })?),
            };
            level.max_connection_rate = Some(rate);
        }
        "max_connection_lifetime" => {
            let secs = values::parse_integer_in(value, 0, i64::from(u32::MAX))?;
            let secs = u64::try_from(secs).unwrap_or(0);
            level.max_connection_lifetime = Some((secs != 0).then(|| Duration::from_secs(secs)));
        }
        // VerneMQ's `listener.mountpoint` defaults to the text "off", meaning no mountpoint.
        "mountpoint" => {
            level.mountpoint = Some(if value == "off" { String::new() } else { value.into() });
        }
        "allowed_protocol_versions" => return parse_protocol_versions(level, value),
        "allow_anonymous_override" => {
            level.allow_anonymous_override = Some(values::parse_flag(value)?);
        }
        "nr_of_acceptors" => {
            // Validated so a typo is caught, but Erlang acceptor pools have no counterpart:
            // one task accepts per listener.
            values::parse_integer_in(value, 1, i64::from(u32::MAX))?;
        }
        "proxy_protocol" | "proxy_protocol_use_cn_as_username" => {
            let on = values::parse_flag(value)?;
            if setting == "proxy_protocol" {
                level.proxy_protocol = Some(on);
            } else {
                level.proxy_protocol_use_cn_as_username = Some(on);
            }
        }
        "buffer_sizes" => {
            return Ok(Handled::Warning(Unsupported::NotYet("per-listener socket buffer sizes").message()));
        }
        _ if TRANSPORT_SETTINGS.contains(&setting) => {
            level.transport_settings.insert(setting.to_string(), value.to_string());
        }
        _ => return Ok(Handled::Unknown),
    }
    Ok(Handled::Done)
}

fn parse_protocol_versions(level: &mut Level, value: &str) -> Result<Handled, ValueError> {
    const ACCEPTED: &str = "a comma-separated list of 3 (MQTT 3.1), 4 (MQTT 3.1.1), \
                            5 (MQTT 5.0), 131 and 132 (bridges, ignored)";
    let mut versions = Vec::new();
    let mut bridge = false;
    for item in values::split_list(value) {
        match item {
            "131" | "132" => bridge = true,
            _ => {
                let level_byte = item
                    .parse::<u8>()
                    .ok()
                    .and_then(ProtocolVersion::from_level)
                    .ok_or_else(|| ValueError::new(item, "is not an MQTT protocol version", ACCEPTED))?;
                if !versions.contains(&level_byte) {
                    versions.push(level_byte);
                }
            }
        }
    }
    if versions.is_empty() {
        return Err(ValueError::new(value, "enables no MQTT version this broker implements", ACCEPTED));
    }
    versions.sort();
    level.allowed_protocol_versions = Some(versions);
    Ok(if bridge {
        Handled::Warning("lists 131/132 (bridge protocol versions), which are not supported yet and ignored".into())
    } else {
        Handled::Done
    })
}

/// Keys of `listener.https.*`, an HTTP listener we do not implement: accepted with a warning.
fn other_transport(transport: &str, rest: &[&str], value: &str) -> Handled {
    if transport != "https" {
        return Handled::Unknown;
    }
    let known = match rest {
        // `listener.https.<name>` or `listener.https.<setting>`
        [_] => true,
        [_, setting] => LISTENER_SETTINGS.contains(setting) || TRANSPORT_SETTINGS.contains(setting),
        // `listener.https.<name>.http_module(s).<module>...`
        [_, group, _, ..] => *group == "http_module" || *group == "http_modules",
        [] => false,
    };
    match known {
        false => Handled::Unknown,
        true if value == "off" => Handled::Done,
        true => Handled::Warning(Unsupported::NotYet("HTTPS listeners").message()),
    }
}

/// Whether two setting names are one or two edits apart (cheap check for the hint).
fn near(a: &str, b: &str) -> bool {
    a != b && a.len().abs_diff(b.len()) <= 2 && {
        let common = a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
        let common_end = a.chars().rev().zip(b.chars().rev()).take_while(|(x, y)| x == y).count();
        common + common_end + 2 >= a.len().max(b.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(lines: &[(&str, &str)]) -> Result<Vec<ListenerConfig>, String> {
        let mut b = ListenerBuilder::default();
        for (i, (k, v)) in lines.iter().enumerate() {
            match b.handle(k, v, i + 1) {
                Ok(Handled::Unknown) => return Err(format!("unknown {k}")),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        b.finish().map_err(|e| format!("{}:{}: {}", e.line, e.key, e.error))
    }

    #[test]
    fn no_listener_means_vernemq_default() {
        let listeners = build(&[]).unwrap();
        assert_eq!(listeners.len(), 1);
        let l = &listeners[0];
        assert_eq!(l.name, "default");
        assert_eq!(l.addr, ListenAddr::Inet("127.0.0.1:1883".parse().unwrap()));
        assert_eq!(l.max_connections, Some(10_000));
        assert_eq!(l.mountpoint, "");
        assert_eq!(l.allowed_protocol_versions, DEFAULT_PROTOCOL_VERSIONS);
        assert_eq!(l.max_connection_lifetime, None);
        assert!(!l.allow_anonymous_override);
    }

    #[test]
    fn most_specific_level_wins() {
        let listeners = build(&[
            ("listener.max_connections", "100"),
            ("listener.tcp.max_connections", "200"),
            ("listener.mountpoint", "global"),
            ("listener.max_connection_lifetime", "3600"),
            ("listener.tcp.default", "127.0.0.1:1883"),
            ("listener.tcp.internal", "0.0.0.0:10883"),
            ("listener.tcp.internal.max_connections", "infinity"),
            ("listener.tcp.internal.mountpoint", "internal"),
            ("listener.tcp.internal.allowed_protocol_versions", "5"),
            ("listener.tcp.internal.allow_anonymous_override", "on"),
        ])
        .unwrap();
        let [default, internal] = listeners.as_slice() else {
            panic!("two listeners expected: {listeners:?}");
        };
        assert_eq!(default.max_connections, Some(200));
        assert_eq!(default.mountpoint, "global");
        assert_eq!(default.max_connection_lifetime, Some(Duration::from_secs(3600)));
        assert_eq!(internal.max_connections, None);
        assert_eq!(internal.mountpoint, "internal");
        assert_eq!(internal.allowed_protocol_versions, [ProtocolVersion::V5]);
        assert!(internal.allow_anonymous_override);
        assert!(!default.allow_anonymous_override);
    }

    #[test]
    fn mountpoint_off_means_none_and_lifetime_zero_means_unlimited() {
        let listeners = build(&[
            ("listener.tcp.mountpoint", "tcp-mp"),
            ("listener.tcp.a", "127.0.0.1:1"),
            ("listener.tcp.a.mountpoint", "off"),
            ("listener.tcp.a.max_connection_lifetime", "0"),
        ])
        .unwrap();
        assert_eq!(listeners[0].mountpoint, "");
        assert_eq!(listeners[0].max_connection_lifetime, None);
    }

    #[test]
    fn protocol_versions_bridge_is_warned_and_dropped() {
        let mut b = ListenerBuilder::default();
        let handled = b.handle("listener.tcp.allowed_protocol_versions", "3,4,5,131", 1).unwrap();
        assert!(matches!(handled, Handled::Warning(w) if w.contains("131/132")));
        let listeners = b.finish().unwrap();
        assert_eq!(listeners[0].allowed_protocol_versions, DEFAULT_PROTOCOL_VERSIONS);
    }

    #[test]
    fn protocol_versions_errors() {
        let err = build(&[("listener.tcp.allowed_protocol_versions", "4,6")]).unwrap_err();
        assert!(err.contains("'6' is not an MQTT protocol version"), "{err}");
        let err = build(&[("listener.tcp.allowed_protocol_versions", "131")]).unwrap_err();
        assert!(err.contains("enables no MQTT version"), "{err}");
        let listeners = build(&[("listener.tcp.allowed_protocol_versions", "5, 4,4")]).unwrap();
        assert_eq!(listeners[0].allowed_protocol_versions, [ProtocolVersion::V4, ProtocolVersion::V5]);
    }

    #[test]
    fn settings_for_undefined_listener_are_an_error() {
        let err = build(&[("listener.tcp.default", "127.0.0.1:1883"), ("listener.tcp.defualt.max_connections", "5")])
            .unwrap_err();
        assert!(err.starts_with("2:listener.tcp.defualt.max_connections:"), "{err}");
        assert!(err.contains("no TCP listener named 'defualt'"), "{err}");
        assert!(err.contains("defined: default"), "{err}");
    }

    #[test]
    fn duplicate_address_is_an_error_but_port_zero_is_not() {
        let err = build(&[("listener.tcp.a", "127.0.0.1:1883"), ("listener.tcp.b", "127.0.0.1:1883")]).unwrap_err();
        assert!(err.contains("already used by listener.tcp.a"), "{err}");
        let ok = build(&[("listener.tcp.a", "127.0.0.1:0"), ("listener.tcp.b", "127.0.0.1:0")]).unwrap();
        assert_eq!(ok.len(), 2);
    }

    #[test]
    fn misspelt_setting_read_as_listener_gets_a_hint() {
        let err = build(&[("listener.tcp.max_conections", "500")]).unwrap_err();
        assert!(err.contains("did you mean listener.tcp.max_connections?"), "{err}");
        let err = build(&[("listener.ssl.certfiel", "./etc/cert.pem")]).unwrap_err();
        assert!(err.contains("did you mean listener.ssl.certfile?"), "{err}");
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(build(&[("listener.tcp.default", "localhost:1883")]).is_err());
        assert!(build(&[("listener.max_connections", "-5")]).is_err());
        assert!(build(&[("listener.tcp.nr_of_acceptors", "zero")]).is_err());
        assert!(build(&[("listener.tcp.proxy_protocol", "yes")]).is_err());
    }

    #[test]
    fn proxy_settings_are_flags_and_buffer_sizes_warn() {
        let mut b = ListenerBuilder::default();
        b.handle("listener.tcp.default", "127.0.0.1:1883", 1).unwrap();
        for key in ["listener.tcp.proxy_protocol", "listener.tcp.default.proxy_protocol_use_cn_as_username"] {
            assert_eq!(b.handle(key, "off", 2), Ok(Handled::Done), "{key}");
            assert_eq!(b.handle(key, "on", 3), Ok(Handled::Done), "{key}");
            assert!(b.handle(key, "maybe", 4).is_err(), "{key}");
        }
        assert!(matches!(b.handle("listener.tcp.buffer_sizes", "4096,16384,32768", 5), Ok(Handled::Warning(_))));
    }

    #[test]
    fn a_unix_socket_listener_takes_its_settings_and_replaces_the_default_one() {
        let mut b = ListenerBuilder::default();
        assert_eq!(b.handle("listener.tcp.local", "local:/var/run/app.sock:0", 1), Ok(Handled::Done));
        b.handle("listener.tcp.local.max_connections", "5", 2).unwrap();
        let listeners = b.finish().unwrap();
        assert_eq!(listeners.len(), 1);
        assert_eq!(listeners[0].addr, ListenAddr::Local(PathBuf::from("/var/run/app.sock")));
        assert_eq!(listeners[0].addr.to_string(), "local:/var/run/app.sock");
        assert_eq!(listeners[0].max_connections, Some(5));
        let mut b = ListenerBuilder::default();
        for bad in ["local:", "local:/x.sock", "local::0", "local:/x.sock:1"] {
            assert!(b.handle("listener.tcp.local", bad, 1).is_err(), "{bad}");
        }
        let err = build(&[("listener.tcp.a", "local:/run/a.sock:0"), ("listener.ws.b", "local:/run/a.sock:0")]);
        assert!(err.unwrap_err().contains("already used by listener.tcp.a"));
    }

    #[test]
    fn transports_and_settings_without_effect_warn_or_are_unknown() {
        let mut b = ListenerBuilder::default();
        let warn = |h: Result<Handled, ValueError>| matches!(h, Ok(Handled::Warning(_)));
        // TLS listeners run with the settings they implement; the others warn.
        assert_eq!(b.handle("listener.ssl.default", "127.0.0.1:8883", 1), Ok(Handled::Done));
        assert_eq!(b.handle("listener.ssl.cafile", "./etc/cacerts.pem", 2), Ok(Handled::Done));
        assert_eq!(b.handle("listener.ssl.default.ciphers", "ECDHE-RSA-AES256-GCM-SHA384", 2), Ok(Handled::Done));
        assert_eq!(b.handle("listener.ssl.eccs", "[secp384r1, x25519]", 2), Ok(Handled::Done));
        assert_eq!(b.handle("listener.ssl.depth", "3", 2), Ok(Handled::Done));
        assert!(warn(b.handle("listener.ssl.psk_support", "on", 2)));
        assert_eq!(b.handle("listener.wss.wss_default.certfile", "./etc/cert.pem", 3), Ok(Handled::Done));
        assert!(warn(b.handle("listener.https.mgmt.http_module.vmq_mgmt_http.auth.mode", "apikey", 4)));
        assert_eq!(b.handle("listener.ssl.name.allow_anonymous_override", "off", 5), Ok(Handled::Done));
        assert_eq!(b.handle("listener.ssl.default.cafiel", "x", 6), Ok(Handled::Unknown));
        assert_eq!(b.handle("listener.quic.default", "x", 7), Ok(Handled::Unknown));
        assert_eq!(b.handle("listener.allowed_protocol_versions", "3", 8), Ok(Handled::Unknown));
        assert_eq!(b.handle("listener.tcp.default.cafile", "x", 9), Ok(Handled::Unknown));
    }

    #[test]
    fn every_transport_resolves_its_own_level_then_the_global_one() {
        let listeners = build(&[
            ("listener.max_connections", "100"),
            ("listener.ssl.max_connections", "200"),
            ("listener.ssl.certfile", "/etc/ssl/cert.pem"),
            ("listener.ssl.default", "127.0.0.1:8883"),
            ("listener.ssl.default.certfile", "/etc/ssl/default.pem"),
            ("listener.ssl.default.keyfile", "/etc/ssl/default.key"),
            ("listener.ssl.other", "127.0.0.1:8884"),
            ("listener.ws.default", "127.0.0.1:8080"),
            ("listener.ws.default.mountpoint", "web"),
            ("listener.wss.default", "127.0.0.1:8443"),
            ("listener.wss.allowed_protocol_versions", "5"),
            ("listener.tcp.default", "127.0.0.1:1883"),
        ])
        .unwrap();
        let by_key = |key: &str| {
            listeners.iter().find(|l| l.key() == key).unwrap_or_else(|| panic!("{key} missing: {listeners:?}"))
        };
        let ssl = by_key("listener.ssl.default");
        assert_eq!(ssl.transport, Transport::Ssl);
        assert_eq!(ssl.max_connections, Some(200));
        assert_eq!(ssl.transport_settings.get("certfile").map(String::as_str), Some("/etc/ssl/default.pem"));
        assert_eq!(ssl.transport_settings.get("keyfile").map(String::as_str), Some("/etc/ssl/default.key"));
        let other = by_key("listener.ssl.other");
        assert_eq!(other.transport_settings.get("certfile").map(String::as_str), Some("/etc/ssl/cert.pem"));
        assert_eq!(other.transport_settings.get("keyfile"), None);
        let ws = by_key("listener.ws.default");
        assert_eq!((ws.transport, ws.max_connections), (Transport::Ws, Some(100)));
        assert_eq!(ws.mountpoint, "web");
        let wss = by_key("listener.wss.default");
        assert_eq!(wss.allowed_protocol_versions, [ProtocolVersion::V5]);
        let tcp = by_key("listener.tcp.default");
        assert_eq!(tcp.max_connections, Some(100));
        assert!(tcp.transport_settings.is_empty());
        assert_eq!(listeners.len(), 5);
    }

    #[test]
    fn only_tls_and_websocket_listeners_take_tls_settings() {
        let err = build(&[("listener.tcp.certfile", "/etc/ssl/cert.pem")]).unwrap_err();
        assert!(err.contains("'/etc/ssl/cert.pem' is not"), "{err}");
        let err =
            build(&[("listener.ssl.default", "127.0.0.1:8883"), ("listener.ssl.default.cafiel", "x")]).unwrap_err();
        assert!(err.starts_with("unknown listener.ssl.default.cafiel"), "{err}");
    }

    #[test]
    fn a_tls_listener_alone_still_gets_the_default_tcp_listener() {
        let listeners = build(&[("listener.ssl.default", "127.0.0.1:8883")]).unwrap();
        let keys: Vec<String> = listeners.iter().map(|l| l.key()).collect();
        assert_eq!(keys, ["listener.tcp.default", "listener.ssl.default"]);
    }

    #[test]
    fn two_transports_on_one_address_is_an_error() {
        let err = build(&[("listener.tcp.default", "127.0.0.1:1883"), ("listener.ws.default", "127.0.0.1:1883")])
            .unwrap_err();
        assert!(err.starts_with("2:listener.ws.default:"), "{err}");
        assert!(err.contains("already used by listener.tcp.default"), "{err}");
    }

    #[test]
    fn proxy_protocol_is_carried() {
        let mut b = ListenerBuilder::default();
        b.handle("listener.tcp.default", "127.0.0.1:1883", 1).unwrap();
        assert_eq!(b.handle("listener.tcp.default.proxy_protocol", "on", 2), Ok(Handled::Done));
        let listeners = b.finish().unwrap();
        assert!(listeners[0].proxy_protocol);
        assert!(!listeners[0].proxy_protocol_use_cn_as_username);
    }

    #[test]
    fn redefinition_keeps_the_last_address() {
        let listeners =
            build(&[("listener.tcp.default", "127.0.0.1:1883"), ("listener.tcp.default", "0.0.0.0:1884")]).unwrap();
        assert_eq!(listeners.len(), 1);
        assert_eq!(listeners[0].addr, ListenAddr::Inet("0.0.0.0:1884".parse().unwrap()));
    }
}
