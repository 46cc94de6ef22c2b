//! The `vernemq` binary as a child process: a config file in a temporary directory, the bound
//! MQTT address read from its log, SIGTERM or SIGKILL to stop it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const WAIT: Duration = Duration::from_secs(20);

pub struct Broker {
    pub child: Child,
    pub addr: SocketAddr,
    pub lines: mpsc::Receiver<String>,
    pub dir: tempfile::TempDir,
    /// Log lines printed before the MQTT listener was ready (startup: bound addresses).
    pub early: Vec<String>,
}

impl Broker {
    pub fn start(extra_config: &str) -> Broker {
        Broker::start_in(tempfile::tempdir().unwrap(), extra_config)
    }

    /// Starts on the data kept in `dir` (a restart after [`Broker::kill`]).
    pub fn start_in(dir: tempfile::TempDir, extra_config: &str) -> Broker {
        let conf = dir.path().join("vernemq.conf");
        let text = format!(
            "listener.tcp.default = 127.0.0.1:0\nlistener.vmq.clustering = 127.0.0.1:0\nallow_anonymous = on\nplatform_data_dir = {}\n{extra_config}\n",
            dir.path().join("data").display()
        );
        std::fs::write(&conf, text).unwrap();
        // VERNEMQ_BIN runs another build (e.g. a copy kept while the tree is rebuilt).
        let bin = std::env::var("VERNEMQ_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_vernemq").to_string());
        let mut child = Command::new(bin)
            .args(["console", "-c"])
            .arg(&conf)
            .env("NO_COLOR", "1")
            .env("RUST_LOG_STYLE", "never")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("vernemq starts");
        let (tx, lines) = mpsc::channel();
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let mut b = Broker { child, addr: "127.0.0.1:0".parse().unwrap(), lines, dir, early: Vec::new() };
        let deadline = std::time::Instant::now() + WAIT;
        let ready = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match b.lines.recv_timeout(left) {
                Ok(line) if strip_ansi(&line).contains("MQTT listener ready") => break line,
                Ok(line) => b.early.push(line),
                Err(_) => panic!("no log line containing \"MQTT listener ready\"; before it: {:#?}", b.early),
            }
        };
        b.addr = logged_addr(&ready).expect("addr in log");
        b
    }

    /// The `addr=` of the first log line containing `needle`, from startup or waited for.
    pub fn logged_addr(&self, needle: &str) -> SocketAddr {
        let line = match self.early.iter().find(|l| strip_ansi(l).contains(needle)) {
            Some(line) => line.clone(),
            None => self.wait_for_line(needle),
        };
        logged_addr(&line).unwrap_or_else(|| panic!("no addr= in {line:?}"))
    }

    pub fn wait_for_line(&self, needle: &str) -> String {
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

    /// `kill -9`: no shutdown, no flush. Returns the data directory for a restart.
    pub fn kill(mut self) -> tempfile::TempDir {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.dir
    }

    pub fn stop(mut self) -> std::process::ExitStatus {
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

fn logged_addr(line: &str) -> Option<SocketAddr> {
    // `log.console.console.format = json`: the address is a field.
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(line) {
        return json["fields"]["addr"].as_str()?.parse().ok();
    }
    let value = strip_ansi(line).split("addr=").nth(1)?.split_whitespace().next()?.to_string();
    // `addr=Some(..)` where the address is logged as an `Option`.
    let value = value.strip_prefix("Some(").and_then(|v| v.strip_suffix(')')).unwrap_or(&value);
    value.parse().ok()
}

pub fn strip_ansi(s: &str) -> String {
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

/// Runs `tests/clients/paho_roundtrip.py` (Eclipse paho, MQTT 3.1.1 and 5.0, QoS 0, 1, 2)
/// against 127.0.0.1:`port`, with `args` after host and port (`--websockets`, `--cafile F`).
pub fn paho_round_trip(port: u16, args: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/paho_roundtrip.py");
    let out = Command::new("python3")
        .arg(script)
        .args(["127.0.0.1", &port.to_string()])
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "paho round trip failed (.ci/run installs paho-mqtt):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A `mosquitto_sub -d` (debug output) that is subscribed: [`Subscribed::start`] returns once
/// its SUBACK arrived, so a message published after that reaches it.
pub struct Subscribed {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Subscribed {
    /// Runs `mosquitto_sub -d <args>` (give it `-C <count>` so it ends) and waits for its SUBACK.
    pub fn start(args: &[&std::ffi::OsStr]) -> Subscribed {
        // Line-buffered: piped, mosquitto_sub would hold its SUBACK line until it exits.
        let mut child = Command::new("stdbuf")
            .args(["-oL", "mosquitto_sub", "-d"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub runs");
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line.contains("received SUBACK") => return Subscribed { child, lines },
                Ok(_) => {}
                Err(_) => {
                    let _ = child.kill();
                    let out = child.wait_with_output().expect("mosquitto_sub ends");
                    panic!("mosquitto_sub got no SUBACK: {}", String::from_utf8_lossy(&out.stderr));
                }
            }
        }
    }

    /// Waits for it to end; the messages it printed (its lines that are not debug output).
    pub fn messages(mut self) -> Vec<String> {
        let status = self.child.wait().expect("mosquitto_sub ends");
        assert!(status.success(), "mosquitto_sub failed: {status}");
        // The reader ends at the end of its output, which the exit has closed.
        self.lines.iter().filter(|l| !l.starts_with("Client ") && !l.starts_with("Subscribed (mid")).collect()
    }
}
