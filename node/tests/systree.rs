//! The `$SYS` tree on a real `vernemq` process, read with `mosquitto_sub`: the node's figures
//! under `$SYS/<nodename>/`, their values, the retained flag, and the switch.

mod common;

use std::process::Command;

use common::process::Broker;

const NODE: &str = "systree@127.0.0.1";

/// `mosquitto_sub -v` on `$SYS/<node>/#` until `count` messages or `wait_s` seconds; the
/// `topic payload` lines.
fn sys_messages(port: u16, count: usize, wait_s: u32, extra: &[&str]) -> Vec<String> {
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-v", "-t", &format!("$SYS/{NODE}/#")])
        .args(["-C", &count.to_string(), "-W", &wait_s.to_string()])
        .args(extra)
        .output()
        .expect("mosquitto_sub runs");
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

#[test]
fn the_nodes_figures_are_published_under_its_name_every_interval() {
    let broker = Broker::start(&format!("nodename = {NODE}\nsystree_interval = 200\n"));
    // More than two publications' worth (a publication has one message per figure).
    let lines = sys_messages(broker.addr.port(), 40, 10, &[]);
    assert_eq!(lines.len(), 40, "{lines:#?}");
    let value = |topic: &str| -> Option<u64> {
        let prefix = format!("$SYS/{NODE}/{topic} ");
        lines.iter().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.parse().ok())
    };
    // This subscriber's own connection is open, and its subscription counted.
    assert!(value("socket/open").is_some_and(|n| n >= 1), "{lines:#?}");
    assert!(value("router/subscriptions").is_some_and(|n| n >= 1), "{lines:#?}");
    assert!(value("mqtt/publish/received").is_some(), "{lines:#?}");
    for line in &lines {
        let (_, payload) = line.split_once(' ').expect("topic and payload");
        assert!(payload.parse::<u64>().is_ok(), "not a number: {line}");
    }
    assert!(broker.stop().success());
}

#[test]
fn retained_figures_reach_a_late_subscriber_at_once_and_an_off_tree_publishes_nothing() {
    let broker = Broker::start(&format!("nodename = {NODE}\nsystree_interval = 100\nsystree_retain = on\n"));
    // Retained: the figures are there before the next publication; `--retained-only` stops at
    // the first message that is not retained.
    let first = sys_messages(broker.addr.port(), 1, 10, &[]);
    assert_eq!(first.len(), 1, "no $SYS publication within 10 s");
    let retained = sys_messages(broker.addr.port(), 5, 10, &["--retained-only"]);
    assert_eq!(retained.len(), 5, "{retained:#?}");
    assert!(broker.stop().success());

    let off = Broker::start(&format!("nodename = {NODE}\nsystree_interval = 100\nsystree_enabled = off\n"));
    // Ten intervals with nothing published.
    assert_eq!(sys_messages(off.addr.port(), 1, 1, &[]), Vec::<String>::new());
    assert!(off.stop().success());
}

#[test]
fn vmq_admin_set_switches_the_tree_on_and_changes_its_interval_at_runtime() {
    let broker =
        Broker::start(&format!("nodename = {NODE}\nsystree_enabled = off\nlistener.http.default = 127.0.0.1:0\n"));
    let admin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_vernemq")).with_file_name("vmq-admin");
    assert!(admin.exists(), "build vmq-admin first (`cargo test --workspace` does)");
    let url = broker.logged_addr("HTTP listener ready").to_string();
    let set = |args: &[&str]| {
        let out = Command::new(&admin).arg("--url").arg(&url).arg("set").args(args).output().expect("vmq-admin runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    assert_eq!(sys_messages(broker.addr.port(), 1, 1, &[]), Vec::<String>::new(), "published while off");
    let (ok, text) = set(&["systree_interval=abc"]);
    assert!(!ok && text.contains("not milliseconds"), "{text}");
    let (ok, text) = set(&["systree_enabled=on", "systree_interval=100"]);
    assert!(ok, "{text}");
    assert_eq!(sys_messages(broker.addr.port(), 20, 10, &[]).len(), 20);
    assert!(broker.stop().success());
}
