//! `listener.http.<name>` entries (VerneMQ's HTTP listeners for health, metrics, status and the
//! management API), read from the configuration's delegated entries.

use std::net::SocketAddr;

use crate::{Config, ConfigError};

/// One HTTP listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpListenerConfig {
    /// The `<name>` in `listener.http.<name>`.
    pub name: String,
    /// Address to bind.
    pub addr: SocketAddr,
}

/// Settings of a listener that are accepted and need no action here (modules are all served).
const ACCEPTED_SETTINGS: &[&str] = &["http_modules", "http_module"];

/// The HTTP listeners of `cfg`, validated with file and line in errors.
pub fn http_listeners(cfg: &Config) -> Result<Vec<HttpListenerConfig>, ConfigError> {
    let mut out: Vec<HttpListenerConfig> = Vec::new();
    for e in cfg.delegated_entries("listener.http.") {
        let rest = &e.key["listener.http.".len()..];
        match rest.split_once('.') {
            None => {
                let addr: SocketAddr = e.value.parse().map_err(|_| {
                    cfg.invalid_entry(e, format!("'{}' is not an address", e.value), "ip:port, e.g. 127.0.0.1:8888")
                })?;
                out.retain(|l| l.name != rest);
                out.push(HttpListenerConfig { name: rest.to_string(), addr });
            }
            Some((_, setting)) if ACCEPTED_SETTINGS.iter().any(|s| setting.starts_with(s)) => {}
            Some((_, setting)) => {
                return Err(cfg.invalid_entry(e, format!("unknown HTTP listener setting '{setting}'"), "http_modules"));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_named_listeners_and_reports_bad_addresses_with_their_line() {
        let cfg = Config::parse(
            "listener.tcp.default = 127.0.0.1:1883\nlistener.http.default = 127.0.0.1:8888\nlistener.http.default.http_modules = vmq_health_http\n",
            None,
        )
        .unwrap();
        assert_eq!(
            http_listeners(&cfg).unwrap(),
            vec![HttpListenerConfig { name: "default".into(), addr: "127.0.0.1:8888".parse().unwrap() }]
        );
        let bad = Config::parse("listener.tcp.default = 127.0.0.1:1883\nlistener.http.x = nowhere\n", None).unwrap();
        let err = http_listeners(&bad).unwrap_err().to_string();
        assert!(err.contains(":2:") && err.contains("listener.http.x"), "{err}");
    }
}
