//! A minimal HTTP/1.1 client for the node's management API. The API is local (loopback) unless
//! an API key is given, so a plain blocking request per command is all that is needed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use base64::Engine;

/// Where and how to reach a node's management API.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `host:port` of the node's HTTP listener.
    pub addr: SocketAddr,
    /// API key for non-local nodes (sent as the HTTP basic-auth user name).
    pub api_key: Option<String>,
    /// How long to wait for the node (VerneMQ's RPC timeout is 60 s).
    pub timeout: Duration,
}

/// Percent-encodes a query component.
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl Endpoint {
    /// An endpoint from `host:port`.
    pub fn parse(hostport: &str, api_key: Option<String>) -> anyhow::Result<Endpoint> {
        let addr = hostport
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve {hostport}"))?
            .next()
            .ok_or_else(|| anyhow!("{hostport} resolves to no address"))?;
        Ok(Endpoint { addr, api_key, timeout: Duration::from_secs(60) })
    }

    /// `GET path` and the JSON body; non-2xx answers become errors carrying the node's text.
    pub fn get(&self, path_and_query: &str) -> anyhow::Result<serde_json::Value> {
        let mut stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5)).with_context(|| {
            format!("cannot reach the node's management API at {} (is the node running?)", self.addr)
        })?;
        stream.set_read_timeout(Some(self.timeout))?;
        let auth = self
            .api_key
            .as_ref()
            .map(|k| {
                format!(
                    "Authorization: Basic {}\r\n",
                    base64::engine::general_purpose::STANDARD.encode(format!("{k}:"))
                )
            })
            .unwrap_or_default();
        write!(
            stream,
            "GET {path_and_query} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nConnection: close\r\n{auth}\r\n",
            self.addr
        )?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).context("reading the node's answer")?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| anyhow!("malformed HTTP answer from the node"))?;
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("malformed HTTP status line from the node"))?;
        let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
        let body = if chunked { dechunk(body)? } else { body.to_string() };
        let value: serde_json::Value =
            serde_json::from_str(&body).with_context(|| format!("the node answered {status} with a non-JSON body"))?;
        if !(200..300).contains(&status) {
            let msg = value.get("text").and_then(|t| t.as_str()).unwrap_or("request failed");
            bail!("{msg} (HTTP {status})");
        }
        Ok(value)
    }
}

fn dechunk(body: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut rest = body;
    loop {
        let (size, tail) = rest.split_once("\r\n").ok_or_else(|| anyhow!("bad chunked body"))?;
        let n = usize::from_str_radix(size.trim(), 16).map_err(|_| anyhow!("bad chunk size"))?;
        if n == 0 {
            return Ok(out);
        }
        let chunk = tail.get(..n).ok_or_else(|| anyhow!("truncated chunk"))?;
        out.push_str(chunk);
        rest = tail.get(n + 2..).unwrap_or_default();
    }
}
