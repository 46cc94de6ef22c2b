//! `vmq-admin listener show|start|stop|restart|delete`: the node's listeners as VerneMQ lists
//! them, and MQTT listeners started, stopped, started again and removed while the node runs.
//! Nothing is written to `vernemq.conf`: as in VerneMQ, a listener started here is gone when
//! the node restarts, and a configured one that was stopped or deleted is back.
//!
//! `listener show` prints one row per listener, in VerneMQ's column order:
//! - `type`: `vmq` (the cluster endpoint), `mqtt`, `mqtts`, `mqttws`, `mqttwss` (TCP, TLS,
//!   WebSocket, secure WebSocket) or `http`;
//! - `status`: `running` or `stopped`;
//! - `address` and `port` (a string, as in VerneMQ's JSON); a Unix socket listener is
//!   `local:<path>`, port `0`, as `vernemq.conf` writes it (`local:<path>:0`);
//! - `mountpoint`, `max_conns` (a number or `infinity`);
//! - `active_conns`: connections open now; `all_conns`: connections served since the listener
//!   was first started. The counts the node does not keep are null, an empty cell in the
//!   table: `all_conns` of the cluster endpoint, both of the HTTP listeners.
//!
//! `-t`/`--tls` and `-m`/`--mqtt` add VerneMQ's TLS and MQTT columns.
//!
//! The other commands name an MQTT listener by `address=<ip> port=<port>`, whatever its name
//! in the configuration. A listener started here is named after its address
//! (`listener.tcp.127.0.0.1:1884` in the log), gets VerneMQ's default for every setting not
//! given, and is refused on an address another listener has, running or stopped.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use vmq_admin_commands::Command;
use vmq_config::{ListenAddr, ListenerConfig, Transport};
use vmq_mqtt::ProtocolVersion;

use super::{HttpState, table, text_error, text_result};
use crate::listener::{ListenerError, ListenerInfo};

/// The TLS settings `listener start` takes as `--<setting>=<value>`.
const TLS_OPTIONS: [&str; 7] = ["certfile", "keyfile", "cafile", "crlfile", "ciphers", "eccs", "tls_version"];

/// The TLS settings `listener start` takes as flags.
const TLS_FLAGS: [&str; 2] = ["require_certificate", "use_identity_as_username"];

/// `listener show [-t] [-m]`.
pub(super) fn show(s: &HttpState, command: &Command, args: &[(String, String)]) -> Response {
    let columns = Columns { tls: command.flag(args, "tls"), mqtt: command.flag(args, "mqtt") };
    let mut rows = Vec::new();
    if let Some(cluster) = s.cluster.listener() {
        let mut row = Row::new("vmq", true, &ListenAddr::Inet(cluster.addr));
        row.active_conns = Some(cluster.connections);
        rows.push(row.render(&columns, None));
    }
    for info in s.listeners.list() {
        rows.push(mqtt_row(&info).render(&columns, Some(&info.spec)));
    }
    for (addr, serving) in s.listeners.http() {
        rows.push(Row::new("http", serving, &ListenAddr::Inet(addr)).render(&columns, None));
    }
    table(rows)
}

/// `listener start address=<ip> port=<port> [arguments]`. Port 0 binds a free port, which the
/// answer gives (`Done: listening on 127.0.0.1:43567`); the JSON answer carries the address and
/// port in every case.
pub(super) async fn start(s: &HttpState, command: &Command, args: &[(String, String)]) -> Response {
    let spec = match start_spec(command, args) {
        Ok(spec) => spec,
        Err(why) => return text_error(StatusCode::BAD_REQUEST, &why),
    };
    let picks_port = spec.addr.inet().is_some_and(|a| a.port() == 0);
    match s.listeners.start_named_by_address(spec).await {
        Ok(addr) => {
            let text = if picks_port { format!("Done: listening on {addr}") } else { "Done".to_string() };
            let (address, port) = address_and_port(&addr);
            axum::Json(json!({"type": "text", "text": text, "address": address, "port": port})).into_response()
        }
        Err(e) => text_error(status_of(&e), &e.to_string()),
    }
}

/// `listener stop address=<ip> port=<port> [-k]`.
pub(super) async fn stop(s: &HttpState, command: &Command, args: &[(String, String)]) -> Response {
    let info = match find(s, command, args) {
        Ok(info) => info,
        Err((code, why)) => return text_error(code, &why),
    };
    let kill = command.flag(args, "kill_sessions");
    done(s.listeners.stop(info.spec.transport, &info.spec.name, kill).await)
}

/// `listener restart address=<ip> port=<port>`.
pub(super) async fn restart(s: &HttpState, command: &Command, args: &[(String, String)]) -> Response {
    match find(s, command, args) {
        Ok(info) => done(s.listeners.restart(info.spec.transport, &info.spec.name).await.map(drop)),
        Err((code, why)) => text_error(code, &why),
    }
}

/// `listener delete address=<ip> port=<port>`.
pub(super) async fn delete(s: &HttpState, command: &Command, args: &[(String, String)]) -> Response {
    match find(s, command, args) {
        Ok(info) => done(s.listeners.delete(info.spec.transport, &info.spec.name).await),
        Err((code, why)) => text_error(code, &why),
    }
}

fn done(result: Result<(), ListenerError>) -> Response {
    match result {
        Ok(()) => text_result(Ok("Done".to_string())),
        Err(e) => text_error(status_of(&e), &e.to_string()),
    }
}

/// The status of a refusal of the registry, saying whose fault it is: unusable settings are
/// the request's, an unknown listener is not found, the rest conflicts with the node's state.
fn status_of(e: &ListenerError) -> StatusCode {
    match e {
        ListenerError::Setting(_) | ListenerError::Tls(_) => StatusCode::BAD_REQUEST,
        ListenerError::Unknown { .. } | ListenerError::NoneAt { .. } => StatusCode::NOT_FOUND,
        _ => StatusCode::CONFLICT,
    }
}

/// The MQTT listener `address=` and `port=` name; when there is none, the status and the
/// text to answer.
fn find(s: &HttpState, command: &Command, args: &[(String, String)]) -> Result<ListenerInfo, (StatusCode, String)> {
    let addr = requested_addr(command, args).map_err(|why| (StatusCode::BAD_REQUEST, why))?;
    if let Some(info) = s.listeners.at(&addr) {
        return Ok(info);
    }
    let inet = addr.inet();
    let other = if inet.is_some() && inet == s.cluster.listener().map(|c| c.addr) {
        Some("the cluster listener")
    } else if s.listeners.http().iter().any(|(a, _)| Some(*a) == inet) {
        Some("an HTTP listener")
    } else {
        None
    };
    Err(match other {
        Some(what) => (
            StatusCode::CONFLICT,
            format!("{addr} is {what}: only MQTT listeners are stopped, restarted or deleted while the node runs"),
        ),
        None => {
            let e = ListenerError::NoneAt { addr };
            (status_of(&e), e.to_string())
        }
    })
}

/// The address `address=` and `port=` give; `Command::check` has made sure both are there.
fn requested_addr(command: &Command, args: &[(String, String)]) -> Result<ListenAddr, String> {
    listen_addr(command.value(args, "address").unwrap_or_default(), command.value(args, "port").unwrap_or_default())
}

/// `address=<ip>|local:<path>` and `port=<port>` as the address a listener is bound to.
fn listen_addr(address: &str, port: &str) -> Result<ListenAddr, String> {
    let port: u16 = port.parse().map_err(|_| format!("port: '{port}' is not a port number (0 to 65535)"))?;
    if let Some(path) = address.strip_prefix("local:") {
        if path.is_empty() {
            return Err("address: local: needs the socket's path, e.g. local:/run/vernemq/mqtt.sock".into());
        }
        if port != 0 {
            return Err(format!("port: a Unix socket listener takes port=0, not {port}"));
        }
        return Ok(ListenAddr::Local(PathBuf::from(path)));
    }
    let unbracketed = address.strip_prefix('[').and_then(|a| a.strip_suffix(']')).unwrap_or(address);
    let ip: IpAddr = unbracketed
        .parse()
        .map_err(|_| format!("address: '{address}' is not an IP address (nor local:<path> for a Unix socket)"))?;
    Ok(ListenAddr::Inet(SocketAddr::new(ip, port)))
}

/// The listener `listener start` asks for, every value checked. Its TLS files are read when it
/// is bound, before its socket is.
fn start_spec(command: &Command, args: &[(String, String)]) -> Result<ListenerConfig, String> {
    let value = |name: &str| command.value(args, name);
    let flag = |name: &str| command.flag(args, name);
    let ssl = flag("ssl");
    let transport = match (ssl, flag("websocket")) {
        (false, false) => Transport::Tcp,
        (true, false) => Transport::Ssl,
        (false, true) => Transport::Ws,
        (true, true) => Transport::Wss,
    };
    // The name is set from the bound address by the registry.
    let mut spec = ListenerConfig::new(transport, String::new(), requested_addr(command, args)?);
    if let Some(mountpoint) = value("mountpoint") {
        spec.mountpoint = mountpoint.to_string();
    }
    if let Some(max) = value("max_connections") {
        spec.max_connections = parse_max_connections(max)?;
    }
    if let Some(n) = value("nr_of_acceptors") {
        // Checked so that a typo is caught; one task accepts per listener, whatever the number.
        n.parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("--nr_of_acceptors: '{n}' is not a number of at least 1"))?;
    }
    if let Some(versions) = value("allowed_protocol_versions") {
        spec.allowed_protocol_versions = parse_protocol_versions(versions)?;
    }
    spec.allow_anonymous_override = flag("allow_anonymous_override");
    spec.proxy_protocol = flag("proxy_protocol");
    spec.proxy_protocol_use_cn_as_username = flag("proxy_protocol_use_cn_as_username");
    if spec.proxy_protocol_use_cn_as_username && !spec.proxy_protocol {
        return Err("--proxy_protocol_use_cn_as_username needs --proxy_protocol".into());
    }
    // VerneMQ ignores the TLS options without --ssl; a listener that would silently run
    // without the TLS its operator asked for is refused instead.
    let tls_settings = TLS_OPTIONS
        .iter()
        .filter_map(|name| value(name).map(|v| (*name, v.to_string())))
        .chain(TLS_FLAGS.iter().filter(|name| flag(name)).map(|name| (*name, "on".to_string())));
    for (name, setting) in tls_settings {
        if !ssl {
            return Err(format!("--{name} needs --ssl"));
        }
        spec.transport_settings.insert(name.to_string(), setting);
    }
    Ok(spec)
}

/// `--max_connections=<n|infinity>`; `None` is `infinity`.
fn parse_max_connections(value: &str) -> Result<Option<usize>, String> {
    if value == "infinity" {
        return Ok(None);
    }
    value.parse().map(Some).map_err(|_| format!("--max_connections: '{value}' is not a number nor infinity"))
}

/// `--allowed_protocol_versions=3,4,5`: sorted, without duplicates.
fn parse_protocol_versions(value: &str) -> Result<Vec<ProtocolVersion>, String> {
    let mut versions = value
        .split(',')
        .map(|v| {
            v.trim().parse().ok().and_then(ProtocolVersion::from_level).ok_or_else(|| {
                format!("--allowed_protocol_versions: '{}' is not one of 3 (MQTT 3.1), 4 (3.1.1), 5 (5.0)", v.trim())
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    versions.sort();
    versions.dedup();
    Ok(versions)
}

/// VerneMQ's name of a transport in `listener show`.
fn type_name(transport: Transport) -> &'static str {
    match transport {
        Transport::Tcp => "mqtt",
        Transport::Ssl => "mqtts",
        Transport::Ws => "mqttws",
        Transport::Wss => "mqttwss",
    }
}

/// The `address` and `port` cells: an IP address without brackets and the port, or
/// `local:<path>` and `0`.
fn address_and_port(addr: &ListenAddr) -> (String, String) {
    match addr {
        ListenAddr::Inet(a) => (a.ip().to_string(), a.port().to_string()),
        ListenAddr::Local(_) => (addr.to_string(), "0".to_string()),
    }
}

/// The optional column groups of `listener show`.
struct Columns {
    tls: bool,
    mqtt: bool,
}

/// One row of `listener show`.
struct Row {
    kind: &'static str,
    running: bool,
    addr: ListenAddr,
    mountpoint: String,
    /// `None`: `infinity`.
    max_conns: Option<usize>,
    active_conns: Option<usize>,
    all_conns: Option<u64>,
}

fn mqtt_row(info: &ListenerInfo) -> Row {
    let spec = &info.spec;
    Row {
        kind: type_name(spec.transport),
        running: info.running,
        addr: spec.addr.clone(),
        mountpoint: spec.mountpoint.clone(),
        max_conns: spec.max_connections,
        active_conns: Some(info.connections),
        all_conns: Some(info.accepted),
    }
}

impl Row {
    /// A listener the node caps no connections of and counts none of.
    fn new(kind: &'static str, running: bool, addr: &ListenAddr) -> Row {
        Row {
            kind,
            running,
            addr: addr.clone(),
            mountpoint: String::new(),
            max_conns: None,
            active_conns: None,
            all_conns: None,
        }
    }

    /// The row as the API answers it; `spec` gives the TLS and MQTT columns of an MQTT
    /// listener (other listeners leave them empty).
    fn render(&self, columns: &Columns, spec: Option<&ListenerConfig>) -> Value {
        let (address, port) = address_and_port(&self.addr);
        let mut row = Map::new();
        row.insert("type".into(), json!(self.kind));
        row.insert("status".into(), json!(if self.running { "running" } else { "stopped" }));
        row.insert("address".into(), json!(address));
        row.insert("port".into(), json!(port));
        row.insert("mountpoint".into(), json!(self.mountpoint));
        row.insert("max_conns".into(), self.max_conns.map_or(json!("infinity"), |n| json!(n)));
        row.insert("active_conns".into(), json!(self.active_conns));
        row.insert("all_conns".into(), json!(self.all_conns));
        let tls = spec.filter(|s| matches!(s.transport, Transport::Ssl | Transport::Wss));
        if columns.tls {
            let setting = |name: &str| json!(tls.and_then(|s| s.transport_settings.get(name)).map_or("", |v| v));
            let on = |name: &str| match tls {
                Some(s) => json!(s.transport_settings.get(name).is_some_and(|v| v == "on")),
                None => json!(""),
            };
            row.insert("tls_version".into(), setting("tls_version"));
            row.insert("certfile".into(), setting("certfile"));
            row.insert("cafile".into(), setting("cafile"));
            row.insert("keyfile".into(), setting("keyfile"));
            row.insert("require_certificate".into(), on("require_certificate"));
            row.insert("use_identity_as_username".into(), on("use_identity_as_username"));
            row.insert("psk_support".into(), on("psk_support"));
            row.insert("pskfile".into(), setting("pskfile"));
        }
        if columns.mqtt {
            let versions = spec.map(|s| {
                s.allowed_protocol_versions.iter().map(|v| v.level().to_string()).collect::<Vec<_>>().join(",")
            });
            row.insert("allowed_protocol_versions".into(), json!(versions.unwrap_or_default()));
            row.insert(
                "allow_anonymous_override".into(),
                spec.map_or(json!(""), |s| json!(s.allow_anonymous_override)),
            );
        }
        Value::Object(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start_args(line: &str) -> Result<ListenerConfig, String> {
        let command = vmq_admin_commands::by_path("listener/start").expect("in the table");
        let words: Vec<String> = line.split_whitespace().map(String::from).collect();
        let args = command.parse_args(&words).map_err(|e| e.to_string())?;
        start_spec(command, &args)
    }

    #[test]
    fn addresses_are_ip_and_port_or_a_unix_socket() {
        assert_eq!(listen_addr("127.0.0.1", "1884"), Ok(ListenAddr::Inet("127.0.0.1:1884".parse().unwrap())));
        assert_eq!(listen_addr("::1", "0"), Ok(ListenAddr::Inet("[::1]:0".parse().unwrap())));
        assert_eq!(listen_addr("[::1]", "1"), Ok(ListenAddr::Inet("[::1]:1".parse().unwrap())));
        assert_eq!(listen_addr("local:/run/mqtt.sock", "0"), Ok(ListenAddr::Local("/run/mqtt.sock".into())));
        assert_eq!(listen_addr("127.0.0.1", "x"), Err("port: 'x' is not a port number (0 to 65535)".into()));
        assert_eq!(listen_addr("127.0.0.1", "65536"), Err("port: '65536' is not a port number (0 to 65535)".into()));
        assert!(listen_addr("localhost", "1").unwrap_err().starts_with("address: 'localhost' is not an IP address"));
        assert_eq!(
            listen_addr("local:/run/mqtt.sock", "1883"),
            Err("port: a Unix socket listener takes port=0, not 1883".into())
        );
        assert_eq!(address_and_port(&ListenAddr::Inet("[::1]:8".parse().unwrap())), ("::1".into(), "8".into()));
        assert_eq!(address_and_port(&ListenAddr::Local("/s".into())), ("local:/s".into(), "0".into()));
    }

    #[test]
    fn start_builds_the_listener_vernemq_would() {
        let spec = start_args("address=127.0.0.1 port=1884").unwrap();
        assert_eq!(spec, ListenerConfig::new(Transport::Tcp, "", "127.0.0.1:1884".parse().unwrap()));
        let spec = start_args(
            "address=0.0.0.0 port=1 --mountpoint /test --nr_of_acceptors=10 --max_connections=infinity \
             --allowed_protocol_versions=5,4,5 --proxy_protocol --allow_anonymous_override",
        )
        .unwrap();
        assert_eq!((spec.transport, spec.mountpoint.as_str(), spec.max_connections), (Transport::Tcp, "/test", None));
        assert_eq!(spec.allowed_protocol_versions, [ProtocolVersion::V4, ProtocolVersion::V5]);
        assert!(spec.proxy_protocol && spec.allow_anonymous_override && !spec.proxy_protocol_use_cn_as_username);
        assert_eq!(start_args("address=::1 port=1 --websocket").unwrap().transport, Transport::Ws);
        let spec = start_args(
            "address=::1 port=1 --websocket --ssl --certfile=c.pem --keyfile=k.pem --tls_version=tlsv1.3 \
             --require_certificate=true --use_identity_as_username=false",
        )
        .unwrap();
        assert_eq!(spec.transport, Transport::Wss);
        let settings: Vec<(&str, &str)> =
            spec.transport_settings.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(
            settings,
            [("certfile", "c.pem"), ("keyfile", "k.pem"), ("require_certificate", "on"), ("tls_version", "tlsv1.3")]
        );
    }

    #[test]
    fn start_refuses_bad_values_before_anything_is_bound() {
        let refused = |line: &str| start_args(&format!("address=127.0.0.1 port=1 {line}")).unwrap_err();
        assert_eq!(refused("--max_connections=many"), "--max_connections: 'many' is not a number nor infinity");
        assert_eq!(refused("--nr_of_acceptors=0"), "--nr_of_acceptors: '0' is not a number of at least 1");
        assert_eq!(
            refused("--allowed_protocol_versions=4,131"),
            "--allowed_protocol_versions: '131' is not one of 3 (MQTT 3.1), 4 (3.1.1), 5 (5.0)"
        );
        assert_eq!(refused("--certfile=c.pem"), "--certfile needs --ssl");
        assert_eq!(refused("--require_certificate"), "--require_certificate needs --ssl");
        assert_eq!(
            refused("--proxy_protocol_use_cn_as_username"),
            "--proxy_protocol_use_cn_as_username needs --proxy_protocol"
        );
        assert_eq!(
            start_args("address=x port=1").unwrap_err(),
            "address: 'x' is not an IP address (nor local:<path> for a Unix socket)"
        );
    }

    #[test]
    fn rows_have_vernemq_columns_in_order() {
        let mut spec = ListenerConfig::new(Transport::Ssl, "s", "127.0.0.1:8883".parse().unwrap());
        spec.transport_settings.insert("certfile".into(), "c.pem".into());
        spec.transport_settings.insert("require_certificate".into(), "on".into());
        let info = ListenerInfo { spec: std::sync::Arc::new(spec), running: false, connections: 2, accepted: 7 };
        let row = mqtt_row(&info).render(&Columns { tls: false, mqtt: false }, Some(&info.spec));
        assert_eq!(
            row.to_string(),
            r#"{"type":"mqtts","status":"stopped","address":"127.0.0.1","port":"8883","mountpoint":"","max_conns":10000,"active_conns":2,"all_conns":7}"#
        );
        let all = Columns { tls: true, mqtt: true };
        let keys = |v: &Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
        let tls_row = mqtt_row(&info).render(&all, Some(&info.spec));
        let http_row = Row::new("http", true, &"127.0.0.1:8888".parse().unwrap()).render(&all, None);
        assert_eq!(keys(&tls_row), keys(&http_row));
        assert_eq!((&tls_row["certfile"], &tls_row["require_certificate"]), (&json!("c.pem"), &json!(true)));
        assert_eq!(tls_row["allowed_protocol_versions"], "3,4,5");
        assert_eq!(
            (&http_row["max_conns"], &http_row["all_conns"], &http_row["cafile"]),
            (&json!("infinity"), &Value::Null, &json!(""))
        );
    }
}
