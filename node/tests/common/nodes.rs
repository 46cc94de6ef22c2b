//! A cluster of real `vernemq` processes on 127.0.0.1: each with its own data directory,
//! MQTT, HTTP and cluster ports (port 0, read back from the log), joined through the HTTP
//! management API (what `vmq-admin cluster join` calls). Nodes are paused with SIGSTOP,
//! resumed with SIGCONT and killed with SIGKILL; every process is killed when the cluster is
//! dropped, pass or fail.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::process::strip_ansi;

/// How long a node may take to start, join or agree.
pub const WAIT: Duration = Duration::from_secs(30);

/// One `vernemq` process.
pub struct NodeProcess {
    pub name: String,
    pub child: Child,
    pub mqtt: SocketAddr,
    pub http: SocketAddr,
    pub cluster: SocketAddr,
    pub dir: PathBuf,
    pub lines: mpsc::Receiver<String>,
    extra: String,
    /// Where this process's lines start in `console.log` (a restart appends to it).
    log_start: usize,
}

impl NodeProcess {
    /// Starts node `name` on the data in `dir` with `extra` configuration lines.
    pub fn start(name: &str, dir: PathBuf, extra: &str) -> NodeProcess {
        std::fs::create_dir_all(&dir).expect("node directory");
        let conf = dir.join("vernemq.conf");
        let text = format!(
            "nodename = {name}@127.0.0.1\ndistributed_cookie = process-test-cookie\nallow_anonymous = on\n\
             listener.tcp.default = 127.0.0.1:0\nlistener.http.default = 127.0.0.1:0\n\
             listener.vmq.clustering = 127.0.0.1:0\nplatform_data_dir = {}\n{extra}\n",
            dir.join("data").display()
        );
        std::fs::write(&conf, text).expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_vernemq"))
            .args(["console", "-c"])
            .arg(&conf)
            .env("NO_COLOR", "1")
            .env("RUST_LOG_STYLE", "never")
            // The test's own log filter must not hide the lines the ports are read from.
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("vernemq starts");
        let (tx, lines) = mpsc::channel();
        let outputs: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stdout.take().expect("stdout piped")),
            Box::new(child.stderr.take().expect("stderr piped")),
        ];
        let log = dir.join("console.log");
        let log_start = std::fs::metadata(&log).map_or(0, |m| m.len() as usize);
        for out in outputs {
            let tx = tx.clone();
            let log = log.clone();
            std::thread::spawn(move || {
                let mut file = std::fs::OpenOptions::new().create(true).append(true).open(log).ok();
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if let Some(f) = file.as_mut() {
                        let _ = writeln!(f, "{line}");
                    }
                    let _ = tx.send(line);
                }
            });
        }
        let mut node = NodeProcess {
            name: format!("{name}@127.0.0.1"),
            child,
            mqtt: "127.0.0.1:0".parse().expect("address"),
            http: "127.0.0.1:0".parse().expect("address"),
            cluster: "127.0.0.1:0".parse().expect("address"),
            dir,
            lines,
            extra: extra.to_string(),
            log_start,
        };
        // The three listeners log their bound addresses while starting, in any order.
        let (mut mqtt, mut http, mut cluster) = (None, None, None);
        let deadline = Instant::now() + WAIT;
        while mqtt.is_none() || http.is_none() || cluster.is_none() {
            let line = node.next_line(deadline);
            if line.contains("MQTT listener ready") {
                mqtt = addr_after(&line, "addr=");
            } else if line.contains("HTTP listener ready") {
                http = addr_after(&line, "addr=");
            } else if line.contains("cluster layer started") {
                cluster = addr_after(&line, "addr=");
            }
        }
        node.mqtt = mqtt.expect("MQTT address");
        node.http = http.expect("HTTP address");
        node.cluster = cluster.expect("cluster address");
        node
    }

    fn next_line(&self, deadline: Instant) -> String {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(line) => strip_ansi(&line),
            Err(_) => {
                // The directory goes with the test; the log is worth keeping.
                let kept = std::env::temp_dir().join(format!("{}-{}.log", self.name, std::process::id()));
                let _ = std::fs::copy(self.dir.join("console.log"), &kept);
                panic!("{}: no log line in time (see {})", self.name, kept.display())
            }
        }
    }

    /// Waits until this process (not an earlier one on the same directory) has logged a line
    /// containing `needle`, also while starting, and returns it.
    pub fn wait_for_log(&self, needle: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let text = std::fs::read(self.dir.join("console.log")).unwrap_or_default();
            let mine = String::from_utf8_lossy(text.get(self.log_start..).unwrap_or_default()).into_owned();
            if let Some(line) = mine.lines().find(|l| l.contains(needle)) {
                return strip_ansi(line);
            }
            assert!(Instant::now() < deadline, "{}: no log line with {needle:?} in time", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `name@127.0.0.1:port`, for `cluster join discovery-node=...`.
    pub fn discovery(&self) -> String {
        format!("{}:{}", self.name, self.cluster.port())
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill").args([signal, &self.child.id().to_string()]).status().expect("kill runs");
        assert!(status.success(), "kill {signal} {}", self.name);
    }

    /// SIGSTOP: the process stops answering anything, its sockets stay open.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONT.
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    /// GET `path` on the node's HTTP listener: `(status, body)`.
    pub fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.http, path)
    }

    /// A counter or gauge of `/metrics` (the first sample of `name`).
    pub fn metric(&self, name: &str) -> u64 {
        let (_, body) = self.http_get("/metrics");
        body.lines()
            .find(|l| l.starts_with(&format!("{name}{{")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{}: no metric {name}", self.name))
    }

    /// Members and whether each runs, as `cluster show` reports them here.
    pub fn cluster_show(&self) -> Vec<(String, bool)> {
        let (status, body) = self.http_get("/api/v1/cluster/show");
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let mut rows: Vec<(String, bool)> = v["table"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|r| {
                        (r["Node"].as_str().unwrap_or_default().to_string(), r["Running"].as_bool().unwrap_or(false))
                    })
                    .collect()
            })
            .unwrap_or_default();
        rows.sort();
        rows
    }

    /// Whether `/health` says the node is ready (every member reachable).
    pub fn is_ready(&self) -> bool {
        self.http_get("/health").0 == 200
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The test failed: its directory goes, the node's log is kept for reading.
            static KEPT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let n = KEPT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let kept = std::env::temp_dir().join(format!("{}-{}-{n}.log", self.name, std::process::id()));
            if std::fs::copy(self.dir.join("console.log"), &kept).is_ok() {
                eprintln!("log of {}: {}", self.name, kept.display());
            }
        }
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return; // exited already (killed, or stopped after a cluster leave)
        }
        // A paused process must be resumed to die promptly and release its ports.
        let _ = Command::new("kill").args(["-CONT", &self.child.id().to_string()]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn addr_after(line: &str, marker: &str) -> Option<SocketAddr> {
    let rest = line.split(marker).nth(1)?;
    let end = rest.find(|c: char| c == ')' || c.is_whitespace()).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// A minimal HTTP/1.1 GET (the management API and `/metrics` need nothing more).
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, WAIT).expect("HTTP connect");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").expect("HTTP request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("HTTP response");
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// Polls `cond` every 20 ms until it holds; panics with `what` after `within`.
pub fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < within, "timed out after {within:?} waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// N joined nodes.
pub struct Nodes {
    pub nodes: Vec<NodeProcess>,
    _root: tempfile::TempDir,
}

impl Nodes {
    /// Starts `n` nodes (`vmq1` .. `vmqN`) with `extra` configuration and joins them into
    /// one cluster; returns once every node reports every member running.
    pub fn start(n: usize, extra: &str) -> Nodes {
        let root = tempfile::tempdir().expect("temp dir");
        let nodes: Vec<NodeProcess> = (1..=n)
            .map(|i| NodeProcess::start(&format!("vmq{i}"), root.path().join(format!("vmq{i}")), extra))
            .collect();
        let cluster = Nodes { nodes, _root: root };
        let discovery = cluster.nodes[0].discovery();
        for node in &cluster.nodes[1..] {
            let (status, body) = node.http_get(&format!("/api/v1/cluster/join?discovery-node={discovery}"));
            assert_eq!(status, 200, "{} joins: {body}", node.name);
        }
        cluster.wait_all_running();
        cluster
    }

    /// Waits until every node reports every member running.
    pub fn wait_all_running(&self) -> Duration {
        let names: Vec<(String, bool)> = {
            let mut v: Vec<_> = self.nodes.iter().map(|n| (n.name.clone(), true)).collect();
            v.sort();
            v
        };
        wait_until("every node sees every member running", WAIT, || {
            self.nodes.iter().all(|n| n.cluster_show() == names)
        })
    }

    pub fn node(&self, i: usize) -> &NodeProcess {
        &self.nodes[i]
    }

    /// Kills node `i` with SIGKILL and starts it again on its data directory.
    pub fn kill_and_restart(&mut self, i: usize) {
        let old = &mut self.nodes[i];
        let _ = old.child.kill();
        let _ = old.child.wait();
        let short = old.name.split('@').next().unwrap_or_default().to_string();
        // The same cluster port: the other members dial the address they know.
        let (dir, cluster) = (old.dir.clone(), old.cluster);
        let extra = format!("{}\nlistener.vmq.clustering = {cluster}", old.extra);
        let mut restarted = NodeProcess::start(&short, dir, &extra);
        restarted.extra = old.extra.clone();
        self.nodes[i] = restarted;
    }
}

/// The two metadata backends, as `metadata_plugin` values.
pub const BACKENDS: [&str; 2] = ["vmq_swc", "vmq_plumtree"];

/// Runs each named `async fn(backend: &str)` of the test file once per metadata backend, as
/// tests `swc::<name>` and `plumtree::<name>` (each starts its own processes).
#[macro_export]
macro_rules! both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod swc {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario($crate::common::nodes::BACKENDS[0]).await;
                }
            )*
        }
        mod plumtree {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario($crate::common::nodes::BACKENDS[1]).await;
                }
            )*
        }
    };
}

/// MQTT 3.1.1 options for a session test: `clean` session or not, 100 in flight, 60 s keep-alive.
pub fn session_options(addr: SocketAddr, id: &str, clean: bool) -> rumqttc::MqttOptions {
    let mut o = super::V4::options(addr, id);
    o.set_clean_session(clean);
    o.set_inflight(100);
    o.set_keep_alive(Duration::from_secs(60));
    o
}
