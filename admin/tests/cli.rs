//! `vmq-admin` against a running `vernemq` process, as an operator uses it.
//!
//! The node is the `vernemq` binary built next to `vmq-admin` (`cargo test --workspace` builds
//! both); `vmq-admin` itself links no broker.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A `vernemq` child process with an HTTP listener on a free port; killed when dropped.
struct Node {
    child: Child,
    http: String,
    _dir: tempfile::TempDir,
}

impl Node {
    fn start() -> Node {
        let dir = tempfile::tempdir().expect("temporary directory");
        let conf = dir.path().join("vernemq.conf");
        std::fs::write(
            &conf,
            format!(
                "nodename = vmq1@127.0.0.1\nlistener.tcp.default = 127.0.0.1:0\nlistener.vmq.clustering = 127.0.0.1:0\n\
                 listener.http.default = 127.0.0.1:0\nallow_anonymous = on\nplatform_data_dir = {}\n",
                dir.path().join("data").display()
            ),
        )
        .expect("config written");
        let mut child = Command::new(vernemq())
            .args(["console", "-c"])
            .arg(&conf)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("vernemq starts");
        let (tx, lines) = mpsc::channel();
        for out in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        let http = loop {
            let line = lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("vernemq printed no HTTP listener address:\n{}", seen.join("\n")));
            if line.contains("HTTP listener ready") {
                break line
                    .split("addr=")
                    .nth(1)
                    .expect("addr field")
                    .split_whitespace()
                    .next()
                    .expect("address")
                    .to_string();
            }
            seen.push(line);
        };
        Node { child, http, _dir: dir }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `vernemq` binary of this build, in the directory `vmq-admin` was built in.
fn vernemq() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_vmq-admin")).with_file_name("vernemq");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p vmq-node` (or run `cargo test --workspace`)",
        bin.display()
    );
    bin
}

fn admin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmq-admin")).args(args).output().expect("vmq-admin runs")
}

/// `GET path` on the node's HTTP listener, as another client of the API would send it:
/// `(status, body)`.
fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("HTTP listener reachable");
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("request sent");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("answer read");
    let status = raw.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("status line");
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

#[test]
fn cluster_show_prints_vernemq_table_and_json() {
    let node = Node::start();
    let out = admin(&["--url", &node.http, "cluster", "show"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let want = "\
+----------------+---------+
| Node           | Running |
+----------------+---------+
| vmq1@127.0.0.1 | true    |
+----------------+---------+
";
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
    let out = admin(&["--url", &node.http, "cluster", "show", "--format=json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    assert_eq!(v["table"][0]["Node"], "vmq1@127.0.0.1");
}

#[test]
fn finds_the_node_from_its_config_file() {
    let node = Node::start();
    let dir = tempfile::tempdir().expect("temporary directory");
    let conf = dir.path().join("vernemq.conf");
    std::fs::write(&conf, format!("listener.tcp.default = 127.0.0.1:0\nlistener.http.default = {}\n", node.http))
        .expect("config written");
    let out = admin(&["-c", conf.to_str().expect("utf-8 path"), "cluster", "show"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("| vmq1@127.0.0.1 | true    |"));
}

#[test]
fn unknown_command_and_unreachable_node_are_clear_errors() {
    let out = admin(&["cluster", "shwo"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown command 'cluster shwo'"));
    let out = admin(&["--url", "127.0.0.1:1", "cluster", "show"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the node's management API"));
}

#[test]
fn help_lists_the_global_options_and_every_command() {
    let want = "\
usage: vmq-admin [-c FILE] [--url HOST:PORT] [--api-key KEY] <command> [key=value ...] [--format=json]

options:
  -c, --config <FILE>    The node's configuration file, to find its management API (default ./vernemq.conf, then /etc/vernemq/vernemq.conf)
      --url <HOST:PORT>  The management API of another node
      --api-key <KEY>    API key for a node that is not on this host
      --format <FORMAT>  Output: VerneMQ's tables (human) or the API's JSON (json)
  -h, --help             Prints this help, or a command's

commands:
  cluster show          Prints the cluster members and whether each is running.
  cluster join          discovery-node=<Node>: joins this node to the cluster of <Node>.
  cluster leave         node=<Node> [-k] [-i <secs>] [-t <secs>]: stops <Node>'s MQTT listeners; -k also disconnects its clients, moves its remaining queues after -t seconds (default 60) with progress every -i seconds (default 5), and removes it from the cluster. A node that is down is removed at once.
  cluster leave-status  node=<Node>: prints how far the leave of <Node> is.
  set                   KEY=VALUE ...: changes settings at runtime, not written back to vernemq.conf (allow_register|publish|subscribe|unsubscribe_during_netsplit=on|off, systree_enabled=on|off, systree_interval=<ms>).
  metrics show          [-d] [--request=<connect|publish|subscribe|unsubscribe>] [--peer=<Node>]: prints the node's metrics, one `counter.<name> = <value>` or `gauge.<name> = <value>` line per series (labelled series with their labels); -d adds each metric's description; a label option keeps the series with that label value.
  listener show         [-t] [-m]: prints every listener: type (mqtt, mqtts, mqttws, mqttwss, vmq, http), status, address, port, mountpoint, max_conns, active_conns and all_conns (connections accepted since it was first started).
  listener start        address=<IpAddr> port=<Port> [arguments]: creates and starts an MQTT listener on <IpAddr>:<Port> (port 0: a free port, printed), until the node stops: it is not written to vernemq.conf. Settings not given take VerneMQ's defaults.
  listener stop         address=<IpAddr> port=<Port> [-k]: stops accepting new connections on the listener at <IpAddr>:<Port>; its connections go on unless -k closes them.
  listener restart      address=<IpAddr> port=<Port>: accepts new connections again on a stopped listener, with the settings it had.
  listener delete       address=<IpAddr> port=<Port>: removes a stopped listener (closing the connections it still has) until the node restarts.
";
    for args in [&["--help"][..], &["-h"], &[]] {
        let out = admin(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), want, "{args:?}");
    }
}

#[test]
fn command_help_lists_its_arguments() {
    let want = "\
usage: vmq-admin [options] cluster leave node=<Node> [-k] [-i <secs>] [-t <secs>] [--format=json]

stops <Node>'s MQTT listeners; -k also disconnects its clients, moves its remaining queues after -t seconds (default 60) with progress every -i seconds (default 5), and removes it from the cluster. A node that is down is removed at once.

arguments:
  node=<Node>                   the node, as `cluster show` names it
  -k, --kill_sessions           disconnect its clients, move its queues and remove it from the cluster
  -i <secs>, --interval=<secs>  seconds between progress reports with -k (default 5)
  -t <secs>, --timeout=<secs>   seconds to wait for clients to leave before moving the queues (default 60)
";
    for args in [&["cluster", "leave", "--help"][..], &["--help", "cluster", "leave"], &["cluster", "leave", "-h"]] {
        let out = admin(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), want, "{args:?}");
    }
}

#[test]
fn listener_start_help_lists_vernemq_options() {
    let out = admin(&["listener", "start", "--help"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.starts_with(
        "usage: vmq-admin [options] listener start address=<IpAddr> port=<Port> [arguments] [--format=json]\n"
    ));
    for line in [
        "  -m <Mountpoint>, --mountpoint=<Mountpoint>  the prefix isolating this listener's topics",
        "  --nr_of_acceptors=<n>                       accepted for VerneMQ's command line and ignored: one task accepts per listener",
        "  --websocket                                 MQTT over WebSocket (on /mqtt)",
        "  --certfile=<file>                           with --ssl: the PEM server certificate (required)",
    ] {
        assert!(help.lines().any(|l| l == line), "no line {line:?} in\n{help}");
    }
}

#[test]
fn listener_show_prints_vernemq_columns() {
    let node = Node::start();
    let out = admin(&["--url", &node.http, "listener", "show"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stdout);
    let header: Vec<&str> = table.lines().nth(1).expect("a header").split('|').map(str::trim).collect();
    let columns = ["", "type", "status", "address", "port", "mountpoint", "max_conns", "active_conns", "all_conns", ""];
    assert_eq!(header, columns);
    let types: Vec<&str> = table.lines().skip(3).filter_map(|l| l.split('|').nth(1)).map(str::trim).collect();
    assert_eq!(types, ["vmq", "mqtt", "http"]);
}

#[test]
fn cli_and_api_refuse_an_unknown_argument_with_the_same_error() {
    let node = Node::start();
    let out = admin(&["--url", &node.http, "cluster", "show", "foo=1"]);
    assert!(!out.status.success());
    let cli = String::from_utf8_lossy(&out.stderr).to_string();
    let want = "'cluster show' takes no argument 'foo=1' (usage: cluster show)";
    assert_eq!(cli, format!("vmq-admin: {want}\n"));
    let (status, body) = http_get(&node.http, "/api/v1/cluster/show?foo=1");
    assert_eq!(status, 400, "{body}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).expect("JSON")["text"], want);
    let (status, body) = http_get(&node.http, "/api/v1/cluster/shwo");
    assert_eq!(status, 404, "{body}");
    let out = admin(&["--url", &node.http, "cluster", "shwo"]);
    let text = serde_json::from_str::<serde_json::Value>(&body).expect("JSON")["text"].as_str().map(String::from);
    assert_eq!(
        Some(String::from_utf8_lossy(&out.stderr).trim_start_matches("vmq-admin: ").trim_end().to_string()),
        text
    );
}

#[test]
fn set_changes_a_runtime_setting() {
    let node = Node::start();
    let out = admin(&["--url", &node.http, "set", "allow_publish_during_netsplit=on"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Done\n");
    let out = admin(&["--url", &node.http, "set", "allow_everything=on"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("'allow_everything' cannot be set at runtime (HTTP 400)"));
}
