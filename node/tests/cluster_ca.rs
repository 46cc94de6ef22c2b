//! `scripts/cluster-ca` on real `vernemq` processes: nodes whose certificates it made join one
//! cluster over the cluster CA; a node whose certificate another CA signed is refused in the
//! TLS handshake, cookie or not.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::nodes::{NodeProcess, wait_until};

/// Runs `scripts/cluster-ca DIR NODES...` and checks it succeeded.
fn cluster_ca(dir: &Path, nodes: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/cluster-ca");
    let out = Command::new(script).arg(dir).args(nodes).output().expect("the script runs");
    assert!(out.status.success(), "cluster-ca failed: {}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8_lossy(&out.stdout);
    for node in nodes {
        assert!(printed.contains(&format!("listener.vmqs.certfile = {}/{node}.pem", dir.display())), "{printed}");
    }
}

/// The configuration lines of `node` with the CA of `ca_dir` and the certificate of `cert_dir`.
fn tls(ca_dir: &Path, cert_dir: &Path, node: &str) -> String {
    format!(
        "listener.vmqs.cafile = {}/ca.pem\nlistener.vmqs.certfile = {}/{node}.pem\nlistener.vmqs.keyfile = {}/{node}.key\n",
        ca_dir.display(),
        cert_dir.display(),
        cert_dir.display()
    )
}

#[test]
fn nodes_with_certificates_from_scripts_cluster_ca_join_and_a_node_of_another_ca_is_refused() {
    let root = tempfile::tempdir().expect("temp dir");
    let (cluster, rogue) = (root.path().join("cluster"), root.path().join("rogue"));
    cluster_ca(&cluster, &["vmq1@127.0.0.1", "vmq2@127.0.0.1"]);
    cluster_ca(&rogue, &["vmq3@127.0.0.1"]);

    let n1 = NodeProcess::start("vmq1", root.path().join("vmq1"), &tls(&cluster, &cluster, "vmq1@127.0.0.1"));
    let n2 = NodeProcess::start("vmq2", root.path().join("vmq2"), &tls(&cluster, &cluster, "vmq2@127.0.0.1"));
    let (status, body) = n2.http_get(&format!("/api/v1/cluster/join?discovery-node={}", n1.discovery()));
    assert_eq!(status, 200, "vmq2 joins: {body}");
    wait_until("both nodes run one cluster", Duration::from_secs(20), || {
        [&n1, &n2].iter().all(|n| {
            let show = n.cluster_show();
            show.len() == 2 && show.iter().all(|(_, running)| *running)
        })
    });

    // vmq3 trusts the cluster's CA, but its own certificate is the rogue CA's.
    let n3 = NodeProcess::start("vmq3", root.path().join("vmq3"), &tls(&cluster, &rogue, "vmq3@127.0.0.1"));
    let _ = n3.http_get(&format!("/api/v1/cluster/join?discovery-node={}", n1.discovery()));
    let refused = n1.wait_for_log("cluster connection refused", Duration::from_secs(20));
    assert!(refused.contains("TLS"), "{refused}");
    assert_eq!(n1.cluster_show().len(), 2, "vmq3 became a member");
}
