//! `vmq-admin metrics show` against a real `vernemq` process: VerneMQ's `counter.<name> =
//! <value>` lines, descriptions with `-d`, and a label filter.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::process::Broker;

/// `vmq-admin --url <url> metrics show <args>`; its output.
fn metrics_show(url: &str, args: &[&str]) -> String {
    let admin = PathBuf::from(env!("CARGO_BIN_EXE_vernemq")).with_file_name("vmq-admin");
    assert!(admin.exists(), "build vmq-admin first (`cargo test --workspace` does)");
    let out = Command::new(admin).args(["--url", url, "metrics", "show"]).args(args).output().expect("vmq-admin runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn metrics_show_prints_vernemq_lines_descriptions_and_filters_by_label() {
    let broker = Broker::start("listener.http.default = 127.0.0.1:0\n");
    let url = broker.logged_addr("HTTP listener ready").to_string();
    let published = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.addr.port().to_string(), "-t", "m/t", "-m", "x"])
        .status()
        .expect("mosquitto_pub runs");
    assert!(published.success());

    let all = metrics_show(&url, &[]);
    let value = |name: &str| -> Option<u64> {
        all.lines().find_map(|l| l.strip_prefix(&format!("{name} = "))).and_then(|v| v.parse().ok())
    };
    assert!(value("counter.mqtt_publish_received").is_some_and(|n| n >= 1), "{all}");
    assert!(value("counter.socket_open").is_some_and(|n| n >= 1), "{all}");
    assert!(value("gauge.router_subscriptions").is_some(), "{all}");
    assert!(all.contains("counter.netsplit_refused{request=\"publish\"} = 0\n"), "{all}");

    let described = metrics_show(&url, &["-d"]);
    assert!(described.contains("# Client connections accepted.\ncounter.socket_open = "), "{described}");

    let filtered = metrics_show(&url, &["--request=subscribe"]);
    assert_eq!(filtered, "counter.netsplit_refused{request=\"subscribe\"} = 0\n");
    assert!(broker.stop().success());
}
