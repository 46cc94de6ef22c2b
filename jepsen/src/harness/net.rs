//! The test network: one network namespace per node, joined by veth pairs to a bridge.
//!
//! Node `i` (1-based) lives in namespace `vmqj-n{i}` with address `10.213.0.{10+i}/24` on its
//! `eth0`; the other end of its veth (`vmqj-h{i}`) is enslaved to the bridge `vmqj-br`, which
//! holds `10.213.0.1/24` so that the harness's clients, in the root namespace, reach every node.
//! No namespace has a default route: traffic can only go to addresses this module created.
//!
//! Faults are packet filters, not link changes: each namespace has an nftables table
//! `inet vmqj` with one output chain, rewritten as a whole on every change, so a partition drops
//! packets silently the way a broken switch does (the nodes see loss, never an error). Slow links
//! use `tc netem` on the node's `eth0` when the kernel has it, and otherwise random loss in
//! the same nftables chain. Rules live inside the namespaces and vanish with them.
//!
//! Everything is named with the [`PREFIX`]; [`cleanup`] removes whatever carries it, and runs
//! before a run starts (a killed run leaves its namespaces behind) and when [`Network`] drops.
//!
//! Where namespaces are not available ([`Mode::Loopback`]), node `i` binds `127.0.0.{1+i}`
//! and the same `inet vmqj` table, in the root namespace, drops packets by source and
//! destination address; the nodes' pids are kept in [`PID_FILE`] so that a later run can
//! remove what a killed one left.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{Context, bail};

/// Prefix of every namespace and link the harness creates.
pub const PREFIX: &str = "vmqj-";
const BRIDGE: &str = "vmqj-br";
const BRIDGE_ADDR: &str = "10.213.0.1/24";
const SUBNET: &str = "10.213.0.0/24";

/// Where the loopback mode records its node pids.
pub const PID_FILE: &str = "/tmp/vmqj-loopback.pids";

/// How the nodes are separated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One network namespace per node (the default).
    Namespaces,
    /// One loopback address per node, filters in the root namespace.
    Loopback,
}

static MODE: OnceLock<Mode> = OnceLock::new();

/// The mode of this process's run (namespaces until a [`Network`] chose).
pub fn mode() -> Mode {
    MODE.get().copied().unwrap_or(Mode::Namespaces)
}

/// Address of node `i` (1-based): inside its namespace, or its loopback alias.
pub fn node_ip(i: usize) -> Ipv4Addr {
    match mode() {
        Mode::Namespaces => Ipv4Addr::new(10, 213, 0, 10 + i as u8),
        Mode::Loopback => Ipv4Addr::new(127, 0, 0, 1 + i as u8),
    }
}

/// The command prefix that runs a program in node `i`'s network.
pub fn in_node(i: usize) -> Vec<String> {
    match mode() {
        Mode::Namespaces => vec!["ip".into(), "netns".into(), "exec".into(), namespace(i)],
        Mode::Loopback => Vec::new(),
    }
}

/// Whether this machine can create network namespaces (tries one and removes it).
pub fn namespaces_available() -> bool {
    let probe = format!("{PREFIX}probe");
    let ok = run("ip", &["netns", "add", &probe]).is_ok();
    let _ = run("ip", &["netns", "del", &probe]);
    ok
}

/// Namespace of node `i`.
pub fn namespace(i: usize) -> String {
    format!("{PREFIX}n{i}")
}

/// True when running as root (`Uid:` in `/proc/self/status`, effective uid 0).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Runs a command, failing with its stderr.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    run_with_input(program, args, None)
}

fn run_with_input(program: &str, args: &[&str], input: Option<&str>) -> anyhow::Result<String> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("cannot run {program} (is it installed?)"))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        use std::io::Write;
        stdin.write_all(text.as_bytes()).with_context(|| format!("cannot write to {program}"))?;
    }
    let out = child.wait_with_output().with_context(|| format!("{program} did not finish"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Removes every namespace and link named with [`PREFIX`], killing the processes inside the
/// namespaces first. Returns what it removed. Never fails: it is what runs when things failed.
pub fn cleanup() -> Vec<String> {
    let mut removed = Vec::new();
    if let Ok(list) = run("ip", &["netns", "list"]) {
        for ns in list.lines().filter_map(|l| l.split_whitespace().next()).filter(|n| n.starts_with(PREFIX)) {
            if let Ok(pids) = run("ip", &["netns", "pids", ns]) {
                for pid in pids.split_whitespace() {
                    let _ = run("kill", &["-9", pid]);
                }
            }
            if run("ip", &["netns", "del", ns]).is_ok() {
                removed.push(format!("namespace {ns}"));
            }
        }
    }
    if let Ok(pids) = std::fs::read_to_string(PID_FILE) {
        for pid in pids.split_whitespace() {
            // Only a process that still is one of our nodes: pids are reused.
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains("vernemq") && run("kill", &["-9", pid]).is_ok() {
                removed.push(format!("node process {pid}"));
            }
        }
        let _ = std::fs::remove_file(PID_FILE);
    }
    if run("nft", &["delete", "table", "inet", "vmqj"]).is_ok() {
        removed.push("nftables table inet vmqj".into());
    }
    if let Ok(links) = run("ip", &["-o", "link", "show"]) {
        for link in links.lines().filter_map(|l| {
            // "12: vmqj-h1@if11: <...>": the name is the second field, up to '@' or ':'.
            l.split_whitespace().nth(1).map(|n| n.trim_end_matches(':').split('@').next().unwrap_or(n))
        }) {
            if link.starts_with(PREFIX) && run("ip", &["link", "del", link]).is_ok() {
                removed.push(format!("link {link}"));
            }
        }
    }
    removed
}

/// One directed link between nodes (1-based `from` → `to`).
pub type Link = (usize, usize);

/// The current faults of the network, applied as a whole by [`Network::apply`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// Packets from `from` to `to` are dropped.
    pub blocked: BTreeSet<Link>,
    /// Nodes whose outgoing traffic is slow: (node, delay ms, loss %, reorder %).
    pub slow: Vec<(usize, u32, u32, u32)>,
}

/// The namespaces, veths and bridge of one run; removed on drop.
#[derive(Debug)]
pub struct Network {
    nodes: usize,
    netem: bool,
}

impl Network {
    /// Removes stale state, then creates the bridge and one namespace per node (or, in
    /// loopback mode, only the filter table). `mode` `None` picks namespaces when available.
    pub fn create(nodes: usize, mode: Option<Mode>) -> anyhow::Result<Self> {
        if !(1..=200).contains(&nodes) {
            bail!("--nodes must be between 1 and 200");
        }
        for stale in cleanup() {
            eprintln!("vmq-jepsen: removed stale {stale}");
        }
        let mode = match mode {
            Some(m) => m,
            None if namespaces_available() => Mode::Namespaces,
            None => {
                eprintln!("vmq-jepsen: network namespaces are not available; using loopback addresses");
                Mode::Loopback
            }
        };
        if MODE.get_or_init(|| mode) != &mode {
            bail!("one process runs one network mode");
        }
        if mode == Mode::Loopback {
            let net = Self { nodes, netem: false };
            net.apply(&Faults::default())?;
            return Ok(net);
        }
        // Our subnet must not already be routed somewhere else on this machine.
        let routes = run("ip", &["-4", "route", "show", SUBNET])?;
        if !routes.trim().is_empty() {
            bail!("{SUBNET} is already routed on this machine ({}); refusing to use it", routes.trim());
        }
        let net = Self { nodes, netem: false };
        run("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
        run("ip", &["addr", "add", BRIDGE_ADDR, "dev", BRIDGE])?;
        run("ip", &["link", "set", BRIDGE, "up"])?;
        for i in 1..=nodes {
            let ns = namespace(i);
            let host = format!("{PREFIX}h{i}");
            let peer = format!("{PREFIX}p{i}");
            run("ip", &["netns", "add", &ns])?;
            run("ip", &["link", "add", &host, "type", "veth", "peer", "name", &peer])?;
            run("ip", &["link", "set", &peer, "netns", &ns])?;
            run("ip", &["link", "set", &host, "master", BRIDGE, "up"])?;
            run("ip", &["-n", &ns, "link", "set", &peer, "name", "eth0"])?;
            let addr = format!("{}/24", node_ip(i));
            run("ip", &["-n", &ns, "addr", "add", &addr, "dev", "eth0"])?;
            run("ip", &["-n", &ns, "link", "set", "eth0", "up"])?;
            run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        }
        let mut net = net;
        net.netem = run(
            "ip",
            &["netns", "exec", &namespace(1), "tc", "qdisc", "replace", "dev", "eth0", "root", "netem", "delay", "0ms"],
        )
        .is_ok();
        if net.netem {
            let _ = run("ip", &["netns", "exec", &namespace(1), "tc", "qdisc", "del", "dev", "eth0", "root"]);
        }
        net.apply(&Faults::default())?;
        Ok(net)
    }

    /// Whether slow links use `tc netem` (true) or random loss in nftables (false).
    pub fn has_netem(&self) -> bool {
        self.netem
    }

    /// Number of nodes.
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// Replaces every namespace's filter with `faults`.
    pub fn apply(&self, faults: &Faults) -> anyhow::Result<()> {
        if mode() == Mode::Loopback {
            return self.apply_loopback(faults);
        }
        for i in 1..=self.nodes {
            let ns = namespace(i);
            let mut rules = String::new();
            for &(_, to) in faults.blocked.iter().filter(|(from, _)| *from == i) {
                rules.push_str(&format!("    ip daddr {} drop\n", node_ip(to)));
            }
            let slow = faults.slow.iter().find(|s| s.0 == i);
            if !self.netem
                && let Some(&(_, _, loss, _)) = slow
            {
                // Without netem only the loss part of a slow link can be had: random drops on
                // the links to the other nodes (clients keep a clean path to watch the effect).
                for to in (1..=self.nodes).filter(|&t| t != i) {
                    rules.push_str(&format!("    ip daddr {} numgen random mod 100 < {loss} drop\n", node_ip(to)));
                }
            }
            let script = format!(
                "table inet vmqj {{}}\ndelete table inet vmqj\n\
                 table inet vmqj {{\n  chain out {{\n    type filter hook output priority 0; policy accept;\n{rules}  }}\n}}\n"
            );
            run_with_input("ip", &["netns", "exec", &ns, "nft", "-f", "-"], Some(&script))
                .with_context(|| format!("cannot set the packet filter of {ns} (is nftables installed?)"))?;
            if self.netem {
                let _ = run("ip", &["netns", "exec", &ns, "tc", "qdisc", "del", "dev", "eth0", "root"]);
                if let Some(&(_, delay, loss, reorder)) = slow {
                    let (d, j, l, r) =
                        (format!("{delay}ms"), format!("{}ms", delay / 2), format!("{loss}%"), format!("{reorder}%"));
                    run(
                        "ip",
                        &[
                            "netns", "exec", &ns, "tc", "qdisc", "add", "dev", "eth0", "root", "netem", "delay", &d,
                            &j, "loss", &l, "reorder", &r,
                        ],
                    )?;
                }
            }
        }
        Ok(())
    }
}

impl Network {
    fn apply_loopback(&self, faults: &Faults) -> anyhow::Result<()> {
        let mut rules = String::new();
        for &(from, to) in &faults.blocked {
            rules.push_str(&format!("    ip saddr {} ip daddr {} drop\n", node_ip(from), node_ip(to)));
        }
        for &(node, _, loss, _) in &faults.slow {
            for to in (1..=self.nodes).filter(|&t| t != node) {
                rules.push_str(&format!(
                    "    ip saddr {} ip daddr {} numgen random mod 100 < {loss} drop\n",
                    node_ip(node),
                    node_ip(to)
                ));
            }
        }
        let script = format!(
            "table inet vmqj {{}}\ndelete table inet vmqj\n\
             table inet vmqj {{\n  chain out {{\n    type filter hook output priority 0; policy accept;\n{rules}  }}\n}}\n"
        );
        run_with_input("nft", &["-f", "-"], Some(&script))
            .context("cannot set the loopback packet filter (is nftables installed?)")?;
        Ok(())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        cleanup();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_addresses_stay_inside_the_harness_subnet() {
        assert_eq!(node_ip(1), Ipv4Addr::new(10, 213, 0, 11));
        assert_eq!(node_ip(9), Ipv4Addr::new(10, 213, 0, 19));
        assert!(namespace(3).starts_with(PREFIX));
    }
}
