//! Broker memory from `/proc`: finds the process listening on a port and reads its RSS.

use std::fs;

use anyhow::{Context, bail};

/// Resident set size of `pid` in bytes (`VmRSS` in `/proc/PID/status`).
pub fn rss_bytes(pid: u32) -> anyhow::Result<u64> {
    let status =
        fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("reading /proc/{pid}/status"))?;
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix("VmRSS:") {
            let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().context("parsing VmRSS")?;
            return Ok(kb * 1024);
        }
    }
    bail!("no VmRSS in /proc/{pid}/status")
}

/// The inode of the socket listening on TCP `port`, from `/proc/net/tcp{,6}` (state `0A`).
fn listening_inode(port: u16) -> Option<u64> {
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            let Some((_, p)) = local.rsplit_once(':') else {
                continue;
            };
            if *state == "0A" && u16::from_str_radix(p, 16).ok() == Some(port) {
                return inode.parse().ok();
            }
        }
    }
    None
}

/// The process that owns the socket listening on `port` (must be readable by this user).
pub fn listener_pid(port: u16) -> anyhow::Result<u32> {
    let Some(inode) = listening_inode(port) else { bail!("no process listens on TCP port {port}") };
    let want = format!("socket:[{inode}]");
    for entry in fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == want.as_str()) {
                return Ok(pid);
            }
        }
    }
    bail!("cannot find the process owning the listener on port {port}; pass --broker-pid")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_own_listener_and_reads_own_rss() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert_eq!(listener_pid(port).unwrap(), std::process::id());
        assert!(rss_bytes(std::process::id()).unwrap() > 0);
    }
}
