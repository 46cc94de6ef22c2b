//! The `vernemq` processes under test: one per namespace, each with its own config and data
//! directory, joined with the real `vmq-admin cluster join`.
//!
//! A node is started as `ip netns exec vmqj-n{i} vernemq console -c n{i}/vernemq.conf`
//! (`ip netns exec` replaces itself with the broker, so the child's pid is the broker's and
//! signals reach it directly). MQTT and the cluster listener bind the node's namespace address;
//! HTTP binds the namespace's own loopback, where `vmq-admin`, run inside the namespace too, is
//! a local client of the management API. Console output is appended to `n{i}/console.log`
//! across restarts.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use super::net::{self, Mode, in_node, node_ip};

/// MQTT port on every node's address.
pub const MQTT_PORT: u16 = 1883;
const CLUSTER_PORT: u16 = 44053;
/// `vmq-admin` calls that take longer than this count as failed (a paused node never answers).
const ADMIN_TIMEOUT_S: &str = "5";

/// How to configure the nodes.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Directory with `vernemq` and `vmq-admin`.
    pub bin_dir: PathBuf,
    /// Directory for configs, data and logs.
    pub dir: PathBuf,
    /// Number of nodes.
    pub nodes: usize,
    /// `metadata_plugin`.
    pub backend: String,
    /// Extra `key = value` lines (the `allow_*_during_netsplit` settings).
    pub settings: BTreeMap<String, String>,
}

/// The running nodes; every process is killed on drop.
#[derive(Debug)]
pub struct Cluster {
    spec: ClusterSpec,
    children: Vec<Option<Child>>,
    paused: Vec<bool>,
}

/// Node name of node `i`, as `vmq-admin cluster show` prints it.
pub fn nodename(i: usize) -> String {
    format!("vmq{i}@{}", node_ip(i))
}

/// MQTT address of node `i`.
pub fn mqtt_addr(i: usize) -> SocketAddr {
    SocketAddr::new(node_ip(i).into(), MQTT_PORT)
}

impl Cluster {
    /// Writes every node's config and starts every node.
    pub fn start(spec: ClusterSpec) -> anyhow::Result<Self> {
        for bin in ["vernemq", "vmq-admin"] {
            let path = spec.bin_dir.join(bin);
            if !path.is_file() {
                bail!(
                    "{} not found: build it (`cargo build -p vmq-node -p vmq-admin`) or pass --bin-dir",
                    path.display()
                );
            }
        }
        let mut cluster =
            Self { children: (0..spec.nodes).map(|_| None).collect(), paused: vec![false; spec.nodes], spec };
        for i in 1..=cluster.spec.nodes {
            let dir = cluster.node_dir(i);
            std::fs::create_dir_all(dir.join("data")).with_context(|| format!("cannot create {}", dir.display()))?;
            let mut conf = format!(
                "nodename = {name}\ndistributed_cookie = vmq-jepsen-cookie\nallow_anonymous = on\n\
                 platform_data_dir = {data}\nlistener.tcp.default = {ip}:{MQTT_PORT}\n\
                 listener.http.default = {http}:8888\nlistener.vmq.clustering = {ip}:{CLUSTER_PORT}\n\
                 metadata_plugin = {backend}\nmax_offline_messages = -1\nmax_online_messages = -1\n\
                 max_inflight_messages = 100\n",
                name = nodename(i),
                data = dir.join("data").display(),
                ip = node_ip(i),
                // In a namespace the API listens on the namespace's own loopback.
                http = if net::mode() == Mode::Namespaces { "127.0.0.1".to_owned() } else { node_ip(i).to_string() },
                backend = cluster.spec.backend,
            );
            for (k, v) in &cluster.spec.settings {
                conf.push_str(&format!("{k} = {v}\n"));
            }
            std::fs::write(dir.join("vernemq.conf"), conf)
                .with_context(|| format!("cannot write the config of node {i}"))?;
            cluster.launch(i)?;
        }
        Ok(cluster)
    }

    fn node_dir(&self, i: usize) -> PathBuf {
        self.spec.dir.join(format!("n{i}"))
    }

    /// Path of node `i`'s console log.
    pub fn log_path(&self, i: usize) -> PathBuf {
        self.node_dir(i).join("console.log")
    }

    fn launch(&mut self, i: usize) -> anyhow::Result<()> {
        let dir = self.node_dir(i);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("console.log"))
            .context("cannot open the node's log")?;
        let err: File = log.try_clone().context("cannot open the node's log")?;
        let bin = self.spec.bin_dir.join("vernemq");
        let prefix = in_node(i);
        let mut cmd = match prefix.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let child = cmd
            .args(["console", "-c"])
            .arg(dir.join("vernemq.conf"))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .with_context(|| format!("cannot start node {i}"))?;
        if net::mode() == Mode::Loopback {
            // Recorded so that the cleanup of a later run can stop it if this one is killed.
            use std::io::Write;
            if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(net::PID_FILE) {
                let _ = writeln!(f, "{}", child.id());
            }
        }
        self.children[i - 1] = Some(child);
        self.paused[i - 1] = false;
        Ok(())
    }

    /// Runs `vmq-admin` in node `i`'s network with its config; stdout on success.
    pub fn admin(&self, i: usize, args: &[&str]) -> anyhow::Result<String> {
        let conf = self.node_dir(i).join("vernemq.conf");
        let bin = self.spec.bin_dir.join("vmq-admin");
        let (conf, bin) = (path_str(&conf)?, path_str(&bin)?);
        let prefix = in_node(i);
        let mut full = vec![ADMIN_TIMEOUT_S];
        full.extend(prefix.iter().map(String::as_str));
        full.extend_from_slice(&[bin, "-c", conf]);
        full.extend_from_slice(args);
        // `timeout`: a paused node never answers, and the harness must not hang on it.
        net::run("timeout", &full)
    }

    /// `vmq-admin cluster show` on node `i`: (node name, running) per member.
    pub fn show(&self, i: usize) -> anyhow::Result<Vec<(String, bool)>> {
        let out = self.admin(i, &["cluster", "show", "--format=json"])?;
        let v: Value = serde_json::from_str(out.trim()).context("cluster show: not JSON")?;
        let rows = v.get("table").and_then(Value::as_array).context("cluster show: no table")?;
        Ok(rows
            .iter()
            .filter_map(|r| Some((r.get("Node")?.as_str()?.to_owned(), r.get("Running")?.as_bool()?)))
            .collect())
    }

    /// True when every node's `cluster show` lists all nodes as running.
    pub fn agreed(&self) -> bool {
        (1..=self.spec.nodes).all(|i| self.show(i).is_ok_and(|rows| self.all_running(&rows)))
    }

    fn all_running(&self, rows: &[(String, bool)]) -> bool {
        rows.len() == self.spec.nodes
            && (1..=self.spec.nodes).all(|j| rows.iter().any(|(n, r)| *r && *n == nodename(j)))
    }

    /// Waits for every node's API, joins nodes 2..N to node 1, and waits until `cluster show`
    /// agrees on every node.
    pub async fn join_all(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        for i in 1..=self.spec.nodes {
            loop {
                match self.show(i) {
                    Ok(_) => break,
                    Err(e) if tokio::time::Instant::now() > deadline => {
                        return Err(e.context(format!(
                            "node {i} did not answer on its management API (log: {})",
                            self.log_path(i).display()
                        )));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }
        let discovery = format!("discovery-node={}:{CLUSTER_PORT}", nodename(1));
        for i in 2..=self.spec.nodes {
            self.admin(i, &["cluster", "join", &discovery])
                .with_context(|| format!("vmq-admin cluster join on node {i}"))?;
        }
        self.wait_agreed(deadline).await
    }

    /// Polls `cluster show` on every node until all agree that every node runs.
    pub async fn wait_agreed(&self, deadline: tokio::time::Instant) -> anyhow::Result<()> {
        loop {
            if self.agreed() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                let views: Vec<String> = (1..=self.spec.nodes)
                    .map(|i| match self.show(i) {
                        Ok(rows) => format!("node {i}: {rows:?}"),
                        Err(e) => format!("node {i}: {e:#}"),
                    })
                    .collect();
                bail!("the nodes did not agree on the cluster in time: {}", views.join("; "));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// `kill -9` node `i` and reap it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i - 1].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused[i - 1] = false;
    }

    /// Starts node `i` again on the same data directory.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill(i);
        self.launch(i)
    }

    /// Whether node `i` has a process (running or paused).
    pub fn is_up(&self, i: usize) -> bool {
        self.children[i - 1].is_some()
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`) to node `i`.
    pub fn pause(&mut self, i: usize, stop: bool) -> anyhow::Result<()> {
        let Some(child) = &self.children[i - 1] else {
            return Ok(());
        };
        let pid = child.id().to_string();
        net::run("kill", &[if stop { "-STOP" } else { "-CONT" }, &pid])?;
        self.paused[i - 1] = stop;
        Ok(())
    }

    /// Resumes paused nodes and restarts killed ones.
    pub fn revive_all(&mut self) -> anyhow::Result<Vec<usize>> {
        let mut revived = Vec::new();
        for i in 1..=self.spec.nodes {
            if self.paused[i - 1] {
                self.pause(i, false)?;
                revived.push(i);
            } else if !self.is_up(i) {
                self.launch(i)?;
                revived.push(i);
            }
        }
        Ok(revived)
    }

    /// Pids of nodes that exited on their own (crashed) since the last call, with status.
    pub fn crashed(&mut self) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        for (k, slot) in self.children.iter_mut().enumerate() {
            if let Some(child) = slot
                && let Ok(Some(status)) = child.try_wait()
            {
                out.push((k + 1, status.to_string()));
                *slot = None;
            }
        }
        out
    }
}

fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str().with_context(|| format!("{} is not valid UTF-8", p.display()))
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for slot in &mut self.children {
            if let Some(mut child) = slot.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
