//! The HTTP listener: health checks, metrics and the management API.
// Test helpers stop the test on anything unexpected, as the tests themselves do.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;

use common::V4;

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn health_metrics_and_cluster_show() {
    let node = common::start(|cfg| cfg.nodename = "vmq1@127.0.0.1".into()).await;
    let http = node.http_addrs()[0].1;
    let (status, body) = tokio::task::spawn_blocking(move || get(http, "/health")).await.unwrap();
    assert_eq!((status, body.as_str()), (200, r#"{"status":"OK"}"#));
    let (status, _) = tokio::task::spawn_blocking(move || get(http, "/health/ping")).await.unwrap();
    assert_eq!(status, 200);

    let (publ, _) = V4::connect(V4::options(node.mqtt_addr(), "p")).await;
    publ.client.publish("m", rumqttc::QoS::AtLeastOnce, false, "x").await.unwrap();
    let broker = node.broker().clone();
    common::wait_until("publish counted", || {
        broker.counters.publish_received.load(std::sync::atomic::Ordering::Relaxed) == 1
    })
    .await;
    let (status, metrics) = tokio::task::spawn_blocking(move || get(http, "/metrics")).await.unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("mqtt_publish_received{node=\"vmq1@127.0.0.1\"} 1"), "{metrics}");
    assert!(metrics.contains("# TYPE router_subscriptions gauge"));
    assert!(metrics.contains("cluster_bytes_dropped{node=\"vmq1@127.0.0.1\"} 0"), "{metrics}");

    let (status, show) = tokio::task::spawn_blocking(move || get(http, "/api/v1/cluster/show")).await.unwrap();
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&show).unwrap();
    assert_eq!(v, serde_json::json!({"type": "table", "table": [{"Node": "vmq1@127.0.0.1", "Running": true}]}));
    let (status, _) = tokio::task::spawn_blocking(move || get(http, "/api/v1/no/such")).await.unwrap();
    assert_eq!(status, 404);
    node.shutdown().await;
}
