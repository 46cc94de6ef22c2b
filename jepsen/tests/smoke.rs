//! CI smoke of `vmq-jepsen bench`: every scenario, briefly, against the real `vernemq` binary.
//!
//! Starts `target/debug/vernemq console` with a port-0 config in a temporary directory, then runs
//! the `vmq-jepsen` binary itself (the path users take) once per scenario with `--json`, and
//! checks that no acknowledged message was lost and that the report carries its fields. Speed
//! is not asserted here; it lives in `scripts/bench-compare`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// Kills the broker when the test ends, pass or fail.
struct Broker {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn vernemq_binary() -> PathBuf {
    // The test executable is target/<profile>/deps/smoke-<hash>; the broker is target/<profile>/vernemq.
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target/<profile> directory");
    let bin = profile_dir.join("vernemq");
    assert!(
        bin.exists(),
        "{} not found: run `cargo build -p vmq-node` first (cargo test --workspace builds it)",
        bin.display()
    );
    bin
}

fn start_broker() -> Broker {
    let dir = tempfile::tempdir().expect("temp dir");
    let conf = dir.path().join("vernemq.conf");
    let data = dir.path().join("data");
    std::fs::write(
        &conf,
        format!(
            "listener.tcp.default = 127.0.0.1:0\nlistener.vmq.clustering = 127.0.0.1:0\n\
             allow_anonymous = on\nplatform_data_dir = {}\n\
             max_offline_messages = -1\nmax_online_messages = -1\n",
            data.display()
        ),
    )
    .expect("write config");
    let mut child = Command::new(vernemq_binary())
        .args(["console", "-c"])
        .arg(&conf)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vernemq");
    let (tx, rx) = mpsc::channel();
    for out in [
        child.stdout.take().map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
        child.stderr.take().map(|e| Box::new(e) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        // Keeps draining the pipe after the address is found so the broker never blocks on logging.
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if line.contains("MQTT listener ready")
                    && let Some(addr) = line.split_whitespace().find_map(|w| w.strip_prefix("addr="))
                {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
    }
    let addr = rx.recv_timeout(Duration::from_secs(20));
    let mut broker = Broker { child, addr: String::new(), _dir: dir };
    broker.addr = addr.expect("vernemq printed no 'MQTT listener ready ... addr=' line within 20 s");
    broker
}

fn bench(addr: &str, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_vmq-jepsen"))
        .args(["bench", "--addr", addr, "--broker", "vernemq", "--json", "--quiet", "--drain", "5"])
        .args(args)
        .output()
        .expect("run vmq-jepsen");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "vmq-jepsen bench {args:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("bad JSON ({e}): {stdout}"))
}

fn check_delivery_report(r: &Value, scenario: &str) {
    assert_eq!(r["scenario"], scenario);
    assert_eq!(r["ok"], true, "{r}");
    let v = &r["verdict"];
    for f in
        ["sent", "acked", "delivered", "expected", "lost", "lost_after_ack", "duplicates", "reordered", "unexpected"]
    {
        assert!(v[f].is_u64(), "verdict.{f} missing in {r}");
    }
    assert_eq!(v["lost_after_ack"], 0, "{r}");
    assert!(v["sent"].as_u64() > Some(0), "nothing sent: {r}");
    assert!(v["delivered"].as_u64() > Some(0), "nothing delivered: {r}");
    for f in ["p50_us", "p90_us", "p99_us", "p999_us", "max_us"] {
        assert!(r["latency"][f].is_number(), "latency.{f} missing in {r}");
    }
    assert!(r["throughput"].as_f64() > Some(0.0), "{r}");
    assert!(r["drain"].is_string(), "drain missing in {r}");
}

#[test]
fn every_scenario_runs_against_vernemq_without_losing_acknowledged_messages() {
    let broker = start_broker();
    let a = broker.addr.as_str();
    let short = ["--duration", "1"];

    let r = bench(a, &[&["fanin", "--qos", "0", "--publishers", "2"][..], &short].concat());
    check_delivery_report(&r, "fanin");

    let r = bench(a, &[&["fanin", "--qos", "1", "--publishers", "4"][..], &short].concat());
    check_delivery_report(&r, "fanin");
    assert_eq!(r["verdict"]["lost"], 0, "QoS 1 fanin lost messages: {r}");

    let r = bench(a, &[&["fanout", "--qos", "1", "--protocol", "5", "--subscribers", "4"][..], &short].concat());
    check_delivery_report(&r, "fanout");
    assert_eq!(r["subscribers"], 4);

    let r = bench(a, &[&["pairs", "--qos", "2", "--pairs", "2", "--inflight", "10"][..], &short].concat());
    check_delivery_report(&r, "pairs");
    assert_eq!(r["verdict"]["duplicates"], 0, "QoS 2 duplicated: {r}");

    let r = bench(a, &[&["latency", "--qos", "1", "--rate", "2000"][..], &short].concat());
    check_delivery_report(&r, "latency");

    // Clustering is not merged yet: both addresses name the same node.
    let r = bench(a, &[&["cluster", "--qos", "1", "--pairs", "2", "--addr2", a][..], &short].concat());
    check_delivery_report(&r, "cluster");

    let r = bench(a, &[&["offline", "--qos", "1", "--messages", "2000", "--duration", "5"][..]].concat());
    check_delivery_report(&r, "offline");
    assert_eq!(r["verdict"]["delivered"], 2000, "offline drain incomplete: {r}");
    assert_eq!(r["offline"]["sessions_present"], true, "{r}");
    assert!(r["offline"]["enqueue_rate"].as_f64() > Some(0.0), "{r}");

    let r = bench(a, &["conns", "--conns", "200", "--conn-rate", "2000", "--duration", "0.5"]);
    assert_eq!(r["scenario"], "conns");
    assert_eq!(r["conns"]["connected"], 200, "{r}");
    assert_eq!(r["conns"]["failed"], 0, "{r}");
    assert!(r["conns"]["rss_after"].as_u64() > Some(0), "{r}");
    assert!(r["conns"]["rss_per_conn"].is_number(), "{r}");
}

#[test]
fn non_loopback_addresses_are_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_vmq-jepsen"))
        .args(["bench", "fanin", "--addr", "192.0.2.1:1883", "--duration", "1"])
        .output()
        .expect("run vmq-jepsen");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("non-loopback"));
}
