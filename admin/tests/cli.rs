//! `vmq-admin` against a running node, as an operator uses it.

use std::process::Command;

use vmq_node::config::{Config, ConfigEntry};
use vmq_node::server::Node;

async fn node() -> Node {
    let mut cfg = Config::embedded_default();
    cfg.nodename = "vmq1@127.0.0.1".into();
    cfg.listeners[0].addr = "127.0.0.1:0".parse().unwrap();
    cfg.delegated.retain(|e| !e.key.starts_with("listener.http."));
    cfg.delegated.push(ConfigEntry { key: "listener.http.default".into(), value: "127.0.0.1:0".into(), line: 0 });
    Node::start(&cfg).await.unwrap()
}

fn admin(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vmq-admin")).args(args).output().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_show_prints_vernemq_table_and_json() {
    let node = node().await;
    let url = node.http_addrs()[0].1.to_string();
    let u = url.clone();
    let out = tokio::task::spawn_blocking(move || admin(&["--url", &u, "cluster", "show"])).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let want = "\
+----------------+---------+
| Node           | Running |
+----------------+---------+
| vmq1@127.0.0.1 | true    |
+----------------+---------+
";
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
    let out = tokio::task::spawn_blocking(move || admin(&["--url", &url, "cluster", "show", "--format=json"])).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["table"][0]["Node"], "vmq1@127.0.0.1");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn finds_the_node_from_its_config_file() {
    let node = node().await;
    let dir = std::env::temp_dir().join(format!("vmq-admin-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("vernemq.conf");
    std::fs::write(
        &conf,
        format!("listener.tcp.default = 127.0.0.1:0\nlistener.http.default = {}\n", node.http_addrs()[0].1),
    )
    .unwrap();
    let c = conf.clone();
    let out = tokio::task::spawn_blocking(move || admin(&["-c", c.to_str().unwrap(), "cluster", "show"])).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("| vmq1@127.0.0.1 | true    |"));
    std::fs::remove_dir_all(&dir).unwrap();
    node.shutdown().await;
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
