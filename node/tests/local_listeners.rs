//! Unix domain socket listeners (`listener.tcp.<name> = local:<path>:0`) on a real `vernemq`
//! process: `mosquitto_pub --unix` publishes through the socket to a subscriber on TCP, and a
//! node killed with `kill -9` (leaving its socket file behind) listens on it again when it
//! restarts.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::process::Broker;

/// Publishes through the socket until the TCP subscriber (which needs a moment to subscribe)
/// got the message.
fn publish_through(socket: &Path, tcp_port: u16, message: &str) {
    let mut sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &tcp_port.to_string(), "-q", "1", "-t", "local/t", "-C", "1", "-W", "10"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub runs");
    let deadline = Instant::now() + Duration::from_secs(10);
    while sub.try_wait().expect("mosquitto_sub state").is_none() {
        assert!(Instant::now() < deadline, "mosquitto_sub got nothing within 10 s");
        let out = Command::new("mosquitto_pub")
            .arg("--unix")
            .arg(socket)
            .args(["-q", "1", "-t", "local/t", "-m", message])
            .output()
            .expect("mosquitto_pub runs");
        assert!(out.status.success(), "mosquitto_pub --unix failed: {}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = sub.wait_with_output().expect("mosquitto_sub ends");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), message);
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
