//! The `vernemq` binary as a user runs it: a config file, clients we did not write
//! (`mosquitto_pub`/`mosquitto_sub`, Python paho-mqtt), SIGTERM for a graceful stop.
//! `.ci/run` installs those clients.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

struct Broker {
    child: Child,
    addr: SocketAddr,
    lines: mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

impl Broker {
    fn start(extra_config: &str) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("vernemq.conf");
        let text = format!(
            "listener.tcp.default = 127.0.0.1:0\nallow_anonymous = on\nplatform_data_dir = {}\n{extra_config}\n",
            dir.path().join("data").display()
        );
        std::fs::write(&conf, text).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_vernemq"))
            .args(["console", "-c"])
            .arg(&conf)
            .env("NO_COLOR", "1")
            .env("RUST_LOG_STYLE", "never")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("vernemq starts");
        let (tx, lines) = mpsc::channel();
        for out in [Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>, Box::new(child.stderr.take().unwrap())] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let mut b = Broker { child, addr: "127.0.0.1:0".parse().unwrap(), lines, _dir: dir };
        let ready = b.wait_for_line("MQTT listener ready");
        let addr = strip_ansi(&ready).split("addr=").nth(1).and_then(|s| s.split_whitespace().next()).expect("addr in log").to_string();
        b.addr = addr.parse().expect("socket address");
        b
    }

    fn wait_for_line(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if strip_ansi(&line).contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no log line containing {needle:?}"),
            }
        }
    }

    fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(std::time::Instant::now() < deadline, "vernemq did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn mosquitto_clients_round_trip_every_version_and_qos() {
    let broker = Broker::start("");
    let port = broker.addr.port().to_string();
    for version in ["mqttv31", "mqttv311", "mqttv5"] {
        for qos in ["0", "1", "2"] {
            let topic = format!("mosq/{version}/{qos}");
            let id = format!("sub-{version}-{qos}");
            // `-d` makes mosquitto_sub report its SUBACK, so we publish only once subscribed;
            // `stdbuf -oL` makes it print each line as it happens rather than at exit.
            let mut sub = Command::new("stdbuf")
                .args(["-oL", "mosquitto_sub", "-d", "-h", "127.0.0.1", "-p", &port, "-V", version, "-q", qos, "-t", &topic, "-C", "1", "-W", "20", "-i", &id])
                .stdout(Stdio::piped())
                .spawn()
                .expect("mosquitto_sub is installed (.ci/run installs mosquitto-clients)");
            let mut lines = BufReader::new(sub.stdout.take().unwrap()).lines().map_while(Result::ok);
            assert!(lines.by_ref().any(|l| l.contains("SUBACK")), "mosquitto_sub {version} got no SUBACK");
            let payload = format!("hello {version} q{qos}");
            let status = Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &port, "-V", version, "-q", qos, "-t", &topic, "-m", &payload])
                .status()
                .unwrap();
            assert!(status.success(), "mosquitto_pub {version} q{qos}");
            assert!(lines.any(|l| l == payload), "mosquitto_sub {version} q{qos} did not receive {payload:?}");
            assert!(sub.wait().unwrap().success());
        }
    }
    assert!(broker.stop().success(), "SIGTERM stops the node with exit code 0");
}

#[test]
fn paho_python_round_trip_v311_and_v5() {
    let broker = Broker::start("");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/paho_roundtrip.py");
    let out = Command::new("python3")
        .arg(script)
        .arg("127.0.0.1")
        .arg(broker.addr.port().to_string())
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "paho round trip failed (.ci/run installs paho-mqtt):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(broker.stop().success());
}

#[test]
fn misspelt_config_key_names_file_line_and_key_and_the_node_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("vernemq.conf");
    std::fs::write(&conf, "listener.tcp.default = 127.0.0.1:0\nmax_inflight_mesages = 10\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vernemq")).args(["console", "-c"]).arg(&conf).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("vernemq.conf:2"), "{err}");
    assert!(err.contains("max_inflight_mesages"), "{err}");
    assert!(err.contains("max_inflight_messages"), "suggests the right key: {err}");
}
