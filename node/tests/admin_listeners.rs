//! `vmq-admin listener show|start|stop|restart|delete` against a real `vernemq` process, as an
//! operator uses them: the node's listeners in VerneMQ's columns, and an MQTT listener started
//! while the node runs, published to with `mosquitto_pub`, stopped (new connections refused,
//! open ones closed with `-k`), started again and deleted once stopped.
//!
//! `vmq-admin` is the binary built next to `vernemq` (`cargo test --workspace` builds both).
// Tests stop on anything unexpected.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::process::Broker;
use serde_json::Value;

/// The `vmq-admin` binary of this build, in the directory `vernemq` was built in.
fn vmq_admin() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_vernemq")).with_file_name("vmq-admin");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p vmq-admin` (or run `cargo test --workspace`)",
        bin.display()
    );
    bin
}

/// `vmq-admin --url <the node's HTTP listener>`.
struct Admin {
    url: String,
}

impl Admin {
    fn of(broker: &Broker) -> Admin {
        Admin { url: broker.logged_addr("HTTP listener ready").to_string() }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(vmq_admin()).arg("--url").arg(&self.url).args(args).output().expect("vmq-admin runs")
    }

    /// Runs a command that must succeed; its standard output.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "vmq-admin {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a command that must fail; its error message.
    fn refused(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "vmq-admin {args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// The rows of `listener show --format=json`.
    fn rows(&self) -> Vec<Value> {
        let answer: Value = serde_json::from_str(&self.ok(&["listener", "show", "--format=json"])).expect("JSON");
        assert_eq!(answer["type"], "table");
        answer["table"].as_array().expect("a table").clone()
    }

    /// The row of the listener on `port`, if listed.
    fn row(&self, port: u16) -> Option<Value> {
        // The port is a string, as in VerneMQ's JSON.
        self.rows().into_iter().find(|r| r["port"].as_str().and_then(|p| p.parse().ok()) == Some(port))
    }
}

fn mosquitto_pub(port: u16) -> Output {
    Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-t", "runtime/t", "-m", "hello"])
        .output()
        .expect("mosquitto_pub runs")
}

fn refuses_connections(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    matches!(TcpStream::connect_timeout(&addr, Duration::from_secs(2)), Err(e) if e.kind() == ErrorKind::ConnectionRefused)
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn listener_show_lists_the_cluster_mqtt_and_http_listeners_in_vernemq_columns() {
    let broker = Broker::start("listener.http.default = 127.0.0.1:0\n");
    let admin = Admin::of(&broker);
    let rows = admin.rows();
    let columns = ["type", "status", "address", "port", "mountpoint", "max_conns", "active_conns", "all_conns"];
    for row in &rows {
        let keys: Vec<&str> = row.as_object().expect("an object").keys().map(String::as_str).collect();
        assert_eq!(keys, columns);
    }
    let summary: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|r| (r["type"].as_str().unwrap(), r["status"].as_str().unwrap(), r["address"].as_str().unwrap()))
        .collect();
    assert_eq!(
        summary,
        [("vmq", "running", "127.0.0.1"), ("mqtt", "running", "127.0.0.1"), ("http", "running", "127.0.0.1")]
    );
    let mqtt = &rows[1];
    assert_eq!(mqtt["port"], broker.addr.port().to_string());
    assert_eq!((&mqtt["mountpoint"], &mqtt["max_conns"]), (&Value::from(""), &Value::from(10000)));
    assert_eq!(rows[2]["port"], admin.url.rsplit(':').next().unwrap());

    let table = admin.ok(&["listener", "show"]);
    let header: Vec<&str> = table.lines().nth(1).expect("a header line").split('|').map(str::trim).collect();
    assert_eq!(header[1..header.len() - 1], columns);
    let port = broker.addr.port().to_string();
    assert!(
        table.lines().any(|l| l.starts_with("| mqtt | running | 127.0.0.1 |") && l.contains(&format!("| {port} "))),
        "{table}"
    );
}

#[test]
fn a_listener_started_at_runtime_is_stopped_restarted_and_deleted() {
    let broker = Broker::start("listener.http.default = 127.0.0.1:0\n");
    let admin = Admin::of(&broker);

    // Port 0: the node binds a free port and says which.
    let done =
        admin.ok(&["listener", "start", "address=127.0.0.1", "port=0", "--mountpoint=/rt", "--nr_of_acceptors=10"]);
    let port: u16 = done
        .trim()
        .strip_prefix("Done: listening on 127.0.0.1:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected answer {done:?}"));
    let listener = ["address=127.0.0.1".to_string(), format!("port={port}")];
    let on = |command: &'static str| -> Vec<&str> {
        let mut args = vec!["listener", command];
        args.extend(listener.iter().map(String::as_str));
        args
    };
    let out = mosquitto_pub(port);
    assert!(out.status.success(), "mosquitto_pub: {}", String::from_utf8_lossy(&out.stderr));
    let row = admin.row(port).expect("the new listener is listed");
    assert_eq!((&row["type"], &row["status"], &row["mountpoint"]), (&"mqtt".into(), &"running".into(), &"/rt".into()));
    assert_eq!(row["all_conns"], 1);

    let refusal = admin.refused(&on("delete"));
    assert!(refusal.contains(&format!("listener.tcp.127.0.0.1:{port} is running: stop it first")), "{refusal}");

    // Stopping refuses new clients and keeps open ones; -k closes them.
    let mut sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "runtime/t", "-W", "30"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto_sub runs");
    wait_until("the subscriber is connected", || admin.row(port).is_some_and(|r| r["active_conns"] == 1));
    assert_eq!(admin.ok(&on("stop")), "Done\n");
    assert!(refuses_connections(port), "a stopped listener accepted a connection");
    let row = admin.row(port).expect("a stopped listener stays listed");
    assert_eq!((&row["status"], &row["active_conns"]), (&"stopped".into(), &1.into()));
    assert!(sub.try_wait().unwrap().is_none(), "stopping without -k closed a connection");
    let mut stop_kill = on("stop");
    stop_kill.push("-k");
    assert_eq!(admin.ok(&stop_kill), "Done\n");
    // mosquitto_sub tries to reconnect, and is refused: the listener counts no connection.
    wait_until("-k disconnects the subscriber", || admin.row(port).is_some_and(|r| r["active_conns"] == 0));
    sub.kill().unwrap();
    sub.wait().unwrap();

    assert_eq!(admin.ok(&on("restart")), "Done\n");
    let out = mosquitto_pub(port);
    assert!(out.status.success(), "mosquitto_pub after restart: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(admin.row(port).expect("listed")["status"], "running");

    assert_eq!(admin.ok(&on("stop")), "Done\n");
    assert_eq!(admin.ok(&on("delete")), "Done\n");
    assert!(admin.row(port).is_none(), "a deleted listener is listed: {:?}", admin.rows());
    let refusal = admin.refused(&on("restart"));
    assert!(refusal.contains(&format!("there is no MQTT listener on 127.0.0.1:{port}")), "{refusal}");
}

#[test]
fn listeners_defined_in_the_config_are_named_by_address_too_and_bad_starts_bind_nothing() {
    let broker = Broker::start("listener.http.default = 127.0.0.1:0\n");
    let admin = Admin::of(&broker);
    let port = broker.addr.port();
    let default = ["listener", "stop", "address=127.0.0.1"];
    let port_arg = format!("port={port}");
    assert_eq!(admin.ok(&[&default[..], &[port_arg.as_str()]].concat()), "Done\n");
    assert!(refuses_connections(port));
    let refusal = admin.refused(&["listener", "start", "address=127.0.0.1", &port_arg]);
    assert!(
        refusal.contains("is taken by listener.tcp.default, which is stopped: restart it, or delete it first"),
        "{refusal}"
    );
    assert_eq!(admin.ok(&["listener", "restart", "address=127.0.0.1", &port_arg]), "Done\n");
    assert!(mosquitto_pub(port).status.success());

    let before = admin.rows().len();
    let refusal = admin.refused(&["listener", "start", "address=127.0.0.1", "port=http"]);
    assert!(refusal.contains("port: 'http' is not a port number (0 to 65535) (HTTP 400)"), "{refusal}");
    let refusal = admin.refused(&["listener", "start", "address=127.0.0.1", "port=0", "--ssl"]);
    assert!(refusal.contains("certfile is required for a TLS listener (HTTP 400)"), "{refusal}");
    let refusal = admin.refused(&["listener", "start", "address=127.0.0.1", "port=0", "--certfile=/c.pem"]);
    assert!(refusal.contains("--certfile needs --ssl"), "{refusal}");
    assert_eq!(admin.rows().len(), before, "a refused start left a listener behind");
    let http_port = admin.url.rsplit(':').next().unwrap().to_string();
    let refusal = admin.refused(&["listener", "stop", "address=127.0.0.1", &format!("port={http_port}")]);
    assert!(refusal.contains("is an HTTP listener: only MQTT listeners are stopped"), "{refusal}");
}

#[test]
fn a_unix_socket_listener_is_named_local_path_port_0() {
    let broker = Broker::start("listener.http.default = 127.0.0.1:0\n");
    let admin = Admin::of(&broker);
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("mqtt.sock");
    let address = format!("address=local:{}", socket.display());
    let listener =
        |command: &'static str| -> Vec<String> { ["listener", command, &address, "port=0"].map(String::from).to_vec() };
    let run = |args: Vec<String>| admin.ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(run(listener("start")), "Done\n");
    let out = Command::new("mosquitto_pub")
        .arg("--unix")
        .arg(&socket)
        .args(["-t", "unix/t", "-m", "hello"])
        .output()
        .expect("mosquitto_pub runs");
    assert!(out.status.success(), "mosquitto_pub --unix: {}", String::from_utf8_lossy(&out.stderr));
    let rows = admin.rows();
    let row = rows.iter().find(|r| r["address"] == format!("local:{}", socket.display())).expect("listed");
    assert_eq!((&row["type"], &row["port"], &row["all_conns"]), (&"mqtt".into(), &"0".into(), &1.into()));
    assert_eq!(run(listener("stop")), "Done\n");
    assert_eq!(run(listener("delete")), "Done\n");
    assert!(!socket.exists(), "a deleted listener leaves its socket file behind");
}
