//! Unix domain socket listeners (`listener.tcp.<name> = local:<path>:0`) on a real `vernemq`
//! process: `mosquitto_pub --unix` publishes through the socket to a subscriber on TCP, and a
//! node killed with `kill -9` (leaving its socket file behind) listens on it again when it
//! restarts.

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use common::process::{Broker, Subscribed};

/// Publishes through the socket to a subscriber on TCP; checks it got the message.
fn publish_through(socket: &Path, tcp_port: u16, message: &str) {
    let port = tcp_port.to_string();
    let args = ["-h", "127.0.0.1", "-p", &port, "-q", "1", "-t", "local/t", "-C", "1", "-W", "10"];
    let sub = Subscribed::start(&args.map(OsStr::new));
    let out = Command::new("mosquitto_pub")
        .arg("--unix")
        .arg(socket)
        .args(["-q", "1", "-t", "local/t", "-m", message])
        .output()
        .expect("mosquitto_pub runs");
    assert!(out.status.success(), "mosquitto_pub --unix failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(sub.messages(), [message]);
}

#[test]
fn mosquitto_publishes_through_a_unix_socket_and_a_killed_node_listens_on_it_again() {
    let sockets = tempfile::tempdir().expect("temp dir");
    let socket = sockets.path().join("mqtt.sock");
    let config = format!("listener.tcp.local = local:{}:0\n", socket.display());
    let broker = Broker::start(&config);
    let line = broker.wait_for_line("listener=local");
    assert!(line.contains(&format!("local:{}", socket.display())), "{line}");
    publish_through(&socket, broker.addr.port(), "through-the-socket");

    let dir = broker.kill();
    assert!(socket.exists(), "a killed node leaves its socket file");
    let broker = Broker::start_in(dir, &config);
    publish_through(&socket, broker.addr.port(), "after-kill-9");
    assert!(broker.stop().success());
}
