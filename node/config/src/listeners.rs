//! The MQTT listener hierarchy (`listener.*`), as VerneMQ's `vmq_server.schema` defines it.
//!
//! A setting is looked up on three levels, the most specific winning (docs "MQTT Listeners"):
//!
//! 1. `listener.tcp.<name>.<setting>`: one listener;
//! 2. `listener.tcp.<setting>`: every TCP listener;
//! 3. `listener.<setting>`: every listener of every transport;
//!
//! and falls back to VerneMQ's default. `listener.tcp.<name> = ip:port` defines a listener;
//! a name is one word that is not a setting name. If no TCP listener is defined at all,
//! VerneMQ's default `listener.tcp.default = 127.0.0.1:1883` applies.
//!
//! The other transports (`ssl`, `ws`, `wss`, `https`) are known but not implemented: their
//! keys are accepted with a warning. `vmq`, `vmqs` and `http` are delegated before they get
//! here (see [`super::keys::DELEGATED_PREFIXES`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::ListenerConfig;
use super::keys::Unsupported;
use super::values::{self, ValueError};
use vmq_mqtt::ProtocolVersion;

/// Key patterns of the hierarchy, for suggestions (`*` is a listener name).
pub static PATTERNS: &[&str] = &[
    "listener.max_connections",
    "listener.max_connection_lifetime",
    "listener.mountpoint",
    "listener.nr_of_acceptors",
    "listener.tcp.*",
    "listener.tcp.max_connections",
    "listener.tcp.max_connection_lifetime",
    "listener.tcp.mountpoint",
    "listener.tcp.nr_of_acceptors",
    "listener.tcp.allowed_protocol_versions",
    "listener.tcp.allow_anonymous_override",
    "listener.tcp.proxy_protocol",
    "listener.tcp.proxy_protocol_use_cn_as_username",
    "listener.tcp.buffer_sizes",
    "listener.tcp.*.max_connections",
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
const GLOBAL_SETTINGS: &[&str] = &[
    "max_connections",
    "max_connection_lifetime",
    "mountpoint",
    "nr_of_acceptors",
];

/// Settings of TCP listeners, on the transport and the listener level.
const TCP_SETTINGS: &[&str] = &[
    "max_connections",
    "max_connection_lifetime",
    "mountpoint",
    "nr_of_acceptors",
    "allowed_protocol_versions",
    "allow_anonymous_override",
    "proxy_protocol",
    "proxy_protocol_use_cn_as_username",
    "buffer_sizes",
];

/// Settings of the not-yet-implemented transports (TLS, WebSocket, HTTPS listeners).
const OTHER_SETTINGS: &[&str] = &[
    "max_connections",
    "max_connection_lifetime",
    "mountpoint",
    "nr_of_acceptors",
    "allowed_protocol_versions",
    "allow_anonymous_override",
    "proxy_protocol",
    "proxy_protocol_use_cn_as_username",
    "buffer_sizes",
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
const DEFAULT_PROTOCOL_VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V3,
    ProtocolVersion::V4,
    ProtocolVersion::V5,
];

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
    max_connection_lifetime: Option<Option<Duration>>,
    mountpoint: Option<String>,
    allowed_protocol_versions: Option<Vec<ProtocolVersion>>,
    allow_anonymous_override: Option<bool>,
}

/// A listener-level setting, remembered with its line until all definitions are known.
#[derive(Debug)]
struct NamedSettings {
    first_line: usize,
    first_key: String,
    level: Level,
}

/// Collects listener keys in file order, then resolves the hierarchy in [`Self::finish`].
#[derive(Debug, Default)]
pub struct ListenerBuilder {
    global: Level,
    tcp: Level,
    named: BTreeMap<String, NamedSettings>,
    /// `(name, address, line)` in file order.
    defined: Vec<(String, SocketAddr, usize)>,
    /// Listeners that were defined but skipped (Unix sockets), so their settings are not errors.
    skipped: Vec<String>,
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
        match segs.as_slice() {
            ["listener", setting] if GLOBAL_SETTINGS.contains(setting) => {
                apply(&mut self.global, setting, value)
            }
            ["listener", "tcp", word] if TCP_SETTINGS.contains(word) => {
                apply(&mut self.tcp, word, value)
            }
            ["listener", "tcp", name] => self.define(name, value, line),
            ["listener", "tcp", name, setting] if TCP_SETTINGS.contains(setting) => {
                let entry =
                    self.named
                        .entry((*name).to_string())
                        .or_insert_with(|| NamedSettings {
                            first_line: line,
                            first_key: key.to_string(),
                            level: Level::default(),
                        });
                apply(&mut entry.level, setting, value)
            }
            ["listener", transport, rest @ ..] => Ok(other_transport(transport, rest, value)),
            _ => Ok(Handled::Unknown),
        }
    }

    fn define(&mut self, name: &str, value: &str, line: usize) -> Result<Handled, ValueError> {
        if value.starts_with("local:") {
            self.skipped.push(name.to_string());
            return Ok(Handled::Warning(
                Unsupported::NotYet("Unix domain socket listeners").message(),
            ));
        }
        let addr = values::parse_socket_addr(value).map_err(|mut e| {
            // `listener.tcp.max_conections = 500` reads as a listener named
            // `max_conections`; point at the setting the user most likely meant.
            if let Some(close) = TCP_SETTINGS.iter().find(|s| near(s, name)) {
                e.message
                    .push_str(&format!(" (did you mean listener.tcp.{close}?)"));
            }
            e
        })?;
        self.defined.retain(|(n, _, _)| n != name);
        self.defined.push((name.to_string(), addr, line));
        Ok(Handled::Done)
    }

    /// Resolves every defined TCP listener. Errors: settings for a listener never defined,
    /// and two listeners on the same address.
    pub fn finish(self) -> Result<Vec<ListenerConfig>, LateError> {
        for (name, settings) in &self.named {
            let defined = self.defined.iter().any(|(n, _, _)| n == name);
            if !defined && !self.skipped.contains(name) {
                let names: Vec<&str> = self.defined.iter().map(|(n, _, _)| n.as_str()).collect();
                return Err(LateError {
                    line: settings.first_line,
                    key: settings.first_key.clone(),
                    error: ValueError {
                        message: format!("there is no TCP listener named '{name}'"),
                        accepted: format!(
                            "settings of a listener defined with listener.tcp.{name} = ip:port \
                             (defined: {})",
                            if names.is_empty() {
                                "none".to_string()
                            } else {
                                names.join(", ")
                            }
                        ),
                    },
                });
            }
        }
        let mut defined = self.defined.clone();
        if defined.is_empty() && self.skipped.is_empty() {
            let addr = SocketAddr::from(([127, 0, 0, 1], 1883));
            defined.push(("default".to_string(), addr, 0));
        }
        let mut listeners: Vec<ListenerConfig> = Vec::with_capacity(defined.len());
        for (name, addr, line) in defined {
            if addr.port() != 0
                && let Some(other) = listeners.iter().find(|l| l.addr == addr)
            {
                return Err(LateError {
                    line,
                    key: format!("listener.tcp.{name}"),
                    error: ValueError {
                        message: format!(
                            "address {addr} is already used by listener.tcp.{}",
                            other.name
                        ),
                        accepted: "a different address or port for each listener".into(),
                    },
                });
            }
            let named = self.named.get(&name).map(|s| &s.level);
            listeners.push(self.resolve(name, addr, named));
        }
        Ok(listeners)
    }

    fn resolve(&self, name: String, addr: SocketAddr, named: Option<&Level>) -> ListenerConfig {
        // Most specific level first: listener, transport, global.
        let levels = [named, Some(&self.tcp), Some(&self.global)];
        let pick = |f: &dyn Fn(&Level) -> bool| levels.iter().flatten().find(|l| f(l)).copied();
        let mut listener = ListenerConfig::new(name, addr);
        if let Some(l) = pick(&|l| l.max_connections.is_some()) {
            listener.max_connections = l.max_connections.flatten();
        }
        if let Some(l) = pick(&|l| l.mountpoint.is_some()) {
            listener.mountpoint = l.mountpoint.clone().unwrap_or_default();
        }
        if let Some(versions) = pick(&|l| l.allowed_protocol_versions.is_some())
            .and_then(|l| l.allowed_protocol_versions.clone())
        {
            listener.allowed_protocol_versions = versions;
        }
        if let Some(l) = pick(&|l| l.max_connection_lifetime.is_some()) {
            listener.max_connection_lifetime = l.max_connection_lifetime.flatten();
        }
        if let Some(allow) = pick(&|l| l.allow_anonymous_override.is_some())
            .and_then(|l| l.allow_anonymous_override)
        {
            listener.allow_anonymous_override = allow;
        }
        listener
    }
}

impl ListenerConfig {
    /// A listener `name` on `addr` with VerneMQ's defaults for every setting.
    pub fn new(name: impl Into<String>, addr: SocketAddr) -> ListenerConfig {
        ListenerConfig {
            name: name.into(),
            addr,
            max_connections: Some(DEFAULT_MAX_CONNECTIONS),
            mountpoint: String::new(),
            allowed_protocol_versions: DEFAULT_PROTOCOL_VERSIONS.to_vec(),
            max_connection_lifetime: None,
            allow_anonymous_override: false,
        }
    }
}

/// Parses `value` for `setting` into `level`.
fn apply(level: &mut Level, setting: &str, value: &str) -> Result<Handled, ValueError> {
    match setting {
        "max_connections" => {
            level.max_connections = Some(values::parse_integer_or_infinity(value)?);
        }
        "max_connection_lifetime" => {
            let secs = values::parse_integer_in(value, 0, i64::from(u32::MAX))?;
            let secs = u64::try_from(secs).unwrap_or(0);
            level.max_connection_lifetime = Some((secs != 0).then(|| Duration::from_secs(secs)));
        }
        // VerneMQ's `listener.mountpoint` defaults to the text "off", meaning no mountpoint.
        "mountpoint" => {
            level.mountpoint = Some(if value == "off" {
                String::new()
            } else {
                value.into()
            });
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
            if values::parse_flag(value)? {
                return Ok(Handled::Warning(
                    Unsupported::NotYet("PROXY protocol").message(),
                ));
            }
        }
        "buffer_sizes" => {
            return Ok(Handled::Warning(
                Unsupported::NotYet("per-listener socket buffer sizes").message(),
            ));
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
                    .ok_or_else(|| {
                        ValueError::new(item, "is not an MQTT protocol version", ACCEPTED)
                    })?;
                if !versions.contains(&level_byte) {
                    versions.push(level_byte);
                }
            }
        }
    }
    if versions.is_empty() {
        return Err(ValueError::new(
            value,
            "enables no MQTT version this broker implements",
            ACCEPTED,
        ));
    }
    versions.sort();
    level.allowed_protocol_versions = Some(versions);
    Ok(if bridge {
        Handled::Warning(
            "lists 131/132 (bridge protocol versions), which are not supported yet and ignored"
                .into(),
        )
    } else {
        Handled::Done
    })
}

/// Keys of transports we do not implement: known ones are accepted with a warning.
fn other_transport(transport: &str, rest: &[&str], value: &str) -> Handled {
    let feature = match transport {
        "ssl" => "TLS listeners",
        "ws" => "WebSocket listeners",
        "wss" => "secure WebSocket listeners",
        "https" => "HTTPS listeners",
        _ => return Handled::Unknown,
    };
    let known = match rest {
        // `listener.ssl.<name>` or `listener.ssl.<setting>`
        [_] => true,
        [_, setting] => OTHER_SETTINGS.contains(setting),
        // `listener.https.<name>.http_module(s).<module>...`
        [_, group, _, ..] => {
            transport == "https" && (*group == "http_module" || *group == "http_modules")
        }
        [] => false,
    };
    match known {
        false => Handled::Unknown,
        true if value == "off" => Handled::Done,
        true => Handled::Warning(Unsupported::NotYet(feature).message()),
    }
}

/// Whether two setting names are one or two edits apart (cheap check for the hint).
fn near(a: &str, b: &str) -> bool {
    a != b && a.len().abs_diff(b.len()) <= 2 && {
        let common = a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count();
        let common_end = a
            .chars()
            .rev()
            .zip(b.chars().rev())
            .take_while(|(x, y)| x == y)
            .count();
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
        b.finish()
            .map_err(|e| format!("{}:{}: {}", e.line, e.key, e.error))
    }

    #[test]
    fn no_listener_means_vernemq_default() {
        let listeners = build(&[]).unwrap();
        assert_eq!(listeners.len(), 1);
        let l = &listeners[0];
        assert_eq!(l.name, "default");
        assert_eq!(l.addr, "127.0.0.1:1883".parse().unwrap());
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
        assert_eq!(
            default.max_connection_lifetime,
            Some(Duration::from_secs(3600))
        );
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
        let handled = b
            .handle("listener.tcp.allowed_protocol_versions", "3,4,5,131", 1)
            .unwrap();
        assert!(matches!(handled, Handled::Warning(w) if w.contains("131/132")));
        let listeners = b.finish().unwrap();
        assert_eq!(
            listeners[0].allowed_protocol_versions,
            DEFAULT_PROTOCOL_VERSIONS
        );
    }

    #[test]
    fn protocol_versions_errors() {
        let err = build(&[("listener.tcp.allowed_protocol_versions", "4,6")]).unwrap_err();
        assert!(err.contains("'6' is not an MQTT protocol version"), "{err}");
        let err = build(&[("listener.tcp.allowed_protocol_versions", "131")]).unwrap_err();
        assert!(err.contains("enables no MQTT version"), "{err}");
        let listeners = build(&[("listener.tcp.allowed_protocol_versions", "5, 4,4")]).unwrap();
        assert_eq!(
            listeners[0].allowed_protocol_versions,
            [ProtocolVersion::V4, ProtocolVersion::V5]
        );
    }

    #[test]
    fn settings_for_undefined_listener_are_an_error() {
        let err = build(&[
            ("listener.tcp.default", "127.0.0.1:1883"),
            ("listener.tcp.defualt.max_connections", "5"),
        ])
        .unwrap_err();
        assert!(
            err.starts_with("2:listener.tcp.defualt.max_connections:"),
            "{err}"
        );
        assert!(err.contains("no TCP listener named 'defualt'"), "{err}");
        assert!(err.contains("defined: default"), "{err}");
    }

    #[test]
    fn duplicate_address_is_an_error_but_port_zero_is_not() {
        let err = build(&[
            ("listener.tcp.a", "127.0.0.1:1883"),
            ("listener.tcp.b", "127.0.0.1:1883"),
        ])
        .unwrap_err();
        assert!(err.contains("already used by listener.tcp.a"), "{err}");
        let ok = build(&[
            ("listener.tcp.a", "127.0.0.1:0"),
            ("listener.tcp.b", "127.0.0.1:0"),
        ])
        .unwrap();
        assert_eq!(ok.len(), 2);
    }

    #[test]
    fn misspelt_setting_read_as_listener_gets_a_hint() {
        let err = build(&[("listener.tcp.max_conections", "500")]).unwrap_err();
        assert!(
            err.contains("did you mean listener.tcp.max_connections?"),
            "{err}"
        );
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(build(&[("listener.tcp.default", "localhost:1883")]).is_err());
        assert!(build(&[("listener.max_connections", "-5")]).is_err());
        assert!(build(&[("listener.tcp.nr_of_acceptors", "zero")]).is_err());
        assert!(build(&[("listener.tcp.proxy_protocol", "yes")]).is_err());
    }

    #[test]
    fn unimplemented_tcp_settings_warn_when_switched_on() {
        let mut b = ListenerBuilder::default();
        b.handle("listener.tcp.default", "127.0.0.1:1883", 1)
            .unwrap();
        for key in [
            "listener.tcp.proxy_protocol",
            "listener.tcp.default.proxy_protocol_use_cn_as_username",
        ] {
            assert_eq!(b.handle(key, "off", 2), Ok(Handled::Done), "{key}");
            assert!(
                matches!(b.handle(key, "on", 3), Ok(Handled::Warning(_))),
                "{key}"
            );
            assert!(b.handle(key, "maybe", 4).is_err(), "{key}");
        }
        assert!(matches!(
            b.handle("listener.tcp.buffer_sizes", "4096,16384,32768", 5),
            Ok(Handled::Warning(_))
        ));
    }

    #[test]
    fn unix_socket_is_skipped_with_warning() {
        let mut b = ListenerBuilder::default();
        let handled = b
            .handle("listener.tcp.local", "local:/var/run/app.sock:0", 1)
            .unwrap();
        assert!(matches!(handled, Handled::Warning(w) if w.contains("Unix domain socket")));
        b.handle("listener.tcp.local.max_connections", "5", 2)
            .unwrap();
        assert!(b.finish().unwrap().is_empty());
    }

    #[test]
    fn other_transports_warn_or_are_unknown() {
        let mut b = ListenerBuilder::default();
        let warn = |h: Result<Handled, ValueError>| matches!(h, Ok(Handled::Warning(_)));
        assert!(warn(b.handle("listener.ssl.default", "127.0.0.1:8883", 1)));
        assert!(warn(b.handle(
            "listener.ssl.cafile",
            "./etc/cacerts.pem",
            2
        )));
        assert!(warn(b.handle(
            "listener.wss.wss_default.certfile",
            "./etc/cert.pem",
            3
        )));
        assert!(warn(b.handle(
            "listener.https.mgmt.http_module.vmq_mgmt_http.auth.mode",
            "apikey",
            4
        )));
        assert_eq!(
            b.handle("listener.ssl.name.allow_anonymous_override", "off", 5),
            Ok(Handled::Done)
        );
        assert_eq!(
            b.handle("listener.ssl.default.cafiel", "x", 6),
            Ok(Handled::Unknown)
        );
        assert_eq!(
            b.handle("listener.quic.default", "x", 7),
            Ok(Handled::Unknown)
        );
        assert_eq!(
            b.handle("listener.allowed_protocol_versions", "3", 8),
            Ok(Handled::Unknown)
        );
        assert_eq!(
            b.handle("listener.tcp.default.cafile", "x", 9),
            Ok(Handled::Unknown)
        );
    }

    #[test]
    fn redefinition_keeps_the_last_address() {
        let listeners = build(&[
            ("listener.tcp.default", "127.0.0.1:1883"),
            ("listener.tcp.default", "0.0.0.0:1884"),
        ])
        .unwrap();
        assert_eq!(listeners.len(), 1);
        assert_eq!(listeners[0].addr, "0.0.0.0:1884".parse().unwrap());
    }
}
