//! The `vernemq` binary as a user runs it: a config file, clients we did not write
//! (`mosquitto_pub`/`mosquitto_sub`, Python paho-mqtt), SIGTERM for a graceful stop.
//! `.ci/run` installs those clients.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::process::Broker;

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
                .args([
                    "-oL",
                    "mosquitto_sub",
                    "-d",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port,
                    "-V",
                    version,
                    "-q",
                    qos,
                    "-t",
                    &topic,
                    "-C",
                    "1",
                    "-W",
                    "20",
                    "-i",
                    &id,
                ])
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
    common::process::paho_round_trip(broker.addr.port(), &[]);
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

#[test]
fn json_log_lines_carry_the_message_and_the_clients_fields() {
    let broker = Broker::start("log.console.console.format = json\n");
    // Every line from the start is one JSON object.
    for line in &broker.early {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{line}");
    }
    let out = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.addr.port().to_string(), "-i", "json-logger", "-t", "t", "-m", "x"])
        .output()
        .expect("mosquitto_pub runs");
    assert!(out.status.success());
    let line = broker.wait_for_line("json-logger");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert!(v["fields"]["message"].is_string(), "{line}");
    assert_eq!(v["span"]["client_id"], "json-logger", "{line}");
    assert!(broker.stop().success());
}
