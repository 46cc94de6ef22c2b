//! The transport's settings and how they are read from `vernemq.conf`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use vmq_storage::metadata::NodeId;

use super::frame::DEFAULT_MAX_FRAME_SIZE;
use vmq_config::{Config, ConfigEntry, ConfigError, MetadataPlugin};

/// Default `listener.vmq.clustering`.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:44053";
/// Default `outgoing_clustering_buffer_size` (bytes), VerneMQ 2.1's shipped value.
pub const DEFAULT_OUTGOING_BUFFER_SIZE: usize = 10_000;
/// Default bound on bytes queued for a reachable but slow peer (VerneMQ's
/// `incoming_clustering_buffer_size`, 64 MiB).
pub const DEFAULT_CONNECTED_QUEUE_LIMIT: usize = 64 * 1024 * 1024;

/// Largest PUBLISH payload MQTT can carry (the remaining length's maximum).
const MQTT_MAX_PAYLOAD: usize = 268_435_455;
/// Room in a frame for what travels with a forwarded payload (topic, properties, ids).
const FRAME_OVERHEAD: usize = 256 * 1024;

/// PEM files of the cluster CA mode (`listener.vmqs.cafile`, `.certfile`, `.keyfile`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterTlsFiles {
    /// CA certificates every node's certificate must chain to (`listener.vmqs.cafile`).
    pub cafile: PathBuf,
    /// This node's certificate chain (`listener.vmqs.certfile`).
    pub certfile: PathBuf,
    /// This node's private key, PKCS#8, PKCS#1 or SEC1 (`listener.vmqs.keyfile`).
    pub keyfile: PathBuf,
}

/// Everything [`super::Transport::bind`] needs. Build with [`TransportConfig::new`] (tests,
/// defaults) or [`TransportConfig::from_config`] (the node), then adjust fields.
#[derive(Debug, Clone, PartialEq)]
pub struct TransportConfig {
    /// This node's name (`nodename`).
    pub node: NodeId,
    /// UDP address to bind (`listener.vmq.clustering`, or `listener.vmqs.clustering` when
    /// given). Port 0 picks a free port; see [`super::Transport::local_addr`].
    pub listen: SocketAddr,
    /// The shared secret (`distributed_cookie`).
    pub cookie: String,
    /// The metadata backend (`metadata_plugin`); peers running another one are refused.
    pub backend: MetadataPlugin,
    /// Cluster CA mode; `None` generates a self-signed certificate at start and leaves
    /// authentication to the cookie MAC.
    pub tls: Option<ClusterTlsFiles>,
    /// Bytes buffered per peer while it is unreachable (`outgoing_clustering_buffer_size`).
    pub outgoing_buffer_size: usize,
    /// Bytes queued per peer while it is reachable; beyond it frames are dropped too.
    pub connected_queue_limit: usize,
    /// Largest frame payload sent or accepted; a larger incoming frame closes the connection.
    pub max_frame_size: usize,
    /// QUIC keep-alive and heartbeat interval; must be well below `suspect_after`.
    pub keep_alive: Duration,
    /// A connected peer silent this long is suspected (logged).
    pub suspect_after: Duration,
    /// A connected peer silent this long is reported `Down` (unreachable) and its connection
    /// closed and redialed; everything queued for it stays.
    pub down_after: Duration,
    /// QUIC idle timeout, a backstop above `down_after` (the failure detector closes a silent
    /// connection first).
    pub idle_timeout: Duration,
    /// Time allowed for the TLS and hello exchange of a new connection. Short, so that a dial
    /// made while the link was cut gives way to a fresh one soon after the heal.
    pub handshake_timeout: Duration,
    /// First redial delay after a failed dial or a lost connection.
    pub reconnect_min: Duration,
    /// Largest redial delay (the delay doubles up to it).
    pub reconnect_max: Duration,
    /// Round-trip time QUIC assumes before it has measured one. A dial made while the link
    /// is cut resends its first packet after three times this, doubling, until the dial gives
    /// up; a low value lets a dial under way find a healed link within about half a second
    /// instead of waiting out its timeout (quinn's default is 333 ms).
    pub initial_rtt: Duration,
    /// Capacity of the event channel. Frame delivery waits for room (back-pressure through
    /// QUIC flow control); `Refused` events are dropped when it is full.
    pub event_capacity: usize,
    /// Incoming connections allowed in their TLS and hello exchange at once; more are
    /// refused at once, so unauthenticated senders cannot tie up unbounded resources.
    pub max_pending_handshakes: usize,
}

impl TransportConfig {
    /// Defaults for `node` with `cookie` and `backend`: binds `0.0.0.0:44053`, self-signed
    /// certificate, heartbeats every 200 ms, suspect after 600 ms and unreachable after 1.2 s of
    /// silence (docs/architecture.md "Netsplit"), connection idle timeout 10 s, redial 100 ms .. 250 ms.
    pub fn new(node: NodeId, cookie: impl Into<String>, backend: MetadataPlugin) -> Self {
        Self {
            node,
            listen: SocketAddr::from(([0, 0, 0, 0], 44053)),
            cookie: cookie.into(),
            backend,
            tls: None,
            outgoing_buffer_size: DEFAULT_OUTGOING_BUFFER_SIZE,
            connected_queue_limit: DEFAULT_CONNECTED_QUEUE_LIMIT,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            keep_alive: Duration::from_millis(200),
            suspect_after: Duration::from_millis(600),
            down_after: Duration::from_millis(1200),
            idle_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(1),
            reconnect_min: Duration::from_millis(100),
            // A healed link is found again within this (plus a dial), which bounds how soon
            // the metadata backends can repair the split (issue 18: within a second).
            reconnect_max: Duration::from_millis(250),
            initial_rtt: Duration::from_millis(20),
            event_capacity: 4096,
            max_pending_handshakes: 64,
        }
    }

    /// Reads `nodename`, `distributed_cookie`, `metadata_plugin` and the delegated keys
    /// `listener.vmq.clustering`, `listener.vmqs.clustering`, `listener.vmqs.cafile`,
    /// `listener.vmqs.certfile`, `listener.vmqs.keyfile` and `outgoing_clustering_buffer_size`
    /// (the last entry of a key wins, as for every other key). The three `listener.vmqs` files
    /// go together: giving some but not all is an error naming the missing ones.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let mut out =
            Self::new(NodeId::new(config.nodename.clone()), config.distributed_cookie.clone(), config.metadata_plugin);
        let last = |key: &str| config.delegated.iter().rev().find(|e| e.key == key);
        let parse_addr = |entry: &ConfigEntry| {
            entry.value.parse::<SocketAddr>().map_err(|_| {
                config.invalid_entry(entry, "is not an IP/port pair", "an IP/port pair, e.g. 127.0.0.1:44053")
            })
        };
        if let Some(entry) = last("listener.vmq.clustering") {
            out.listen = parse_addr(entry)?;
        }
        if let Some(entry) = last("listener.vmqs.clustering") {
            out.listen = parse_addr(entry)?;
        }
        if let Some(entry) = last("outgoing_clustering_buffer_size") {
            out.outgoing_buffer_size = entry.value.parse::<usize>().map_err(|_| {
                config.invalid_entry(entry, "is not a byte count", "an integer number of bytes, e.g. 10000")
            })?;
        }
        // A forwarded publish is one frame: the frame limit follows the largest message a
        // client may publish (MQTT's own limit when `max_message_size` is unlimited), plus
        // room for its topic, properties and framing. A smaller limit used to drop large
        // messages after their PUBACK.
        let largest_message = match config.mqtt.max_message_size {
            0 => MQTT_MAX_PAYLOAD,
            n => n,
        };
        out.max_frame_size = out.max_frame_size.max(largest_message.saturating_add(FRAME_OVERHEAD));
        let files = ["cafile", "certfile", "keyfile"]
            .map(|name| last(&format!("listener.vmqs.{name}")).map(|e| (e, PathBuf::from(&e.value))));
        match files {
            [None, None, None] => {}
            [Some((_, cafile)), Some((_, certfile)), Some((_, keyfile))] => {
                out.tls = Some(ClusterTlsFiles { cafile, certfile, keyfile });
            }
            [ref a, ref b, ref c] => {
                let given = [a, b, c].into_iter().flatten().next();
                let missing: Vec<String> = ["cafile", "certfile", "keyfile"]
                    .iter()
                    .zip([a, b, c])
                    .filter(|(_, f)| f.is_none())
                    .map(|(n, _)| format!("listener.vmqs.{n}"))
                    .collect();
                if let Some((entry, _)) = given {
                    return Err(config.invalid_entry(
                        entry,
                        format!("needs {} as well", missing.join(" and ")),
                        "listener.vmqs.cafile, listener.vmqs.certfile and listener.vmqs.keyfile together",
                    ));
                }
            }
        }
        Ok(out)
    }

    /// The backend name carried in the hello.
    pub fn backend_name(&self) -> &'static str {
        backend_name(self.backend)
    }
}

/// VerneMQ's name of a metadata backend.
pub fn backend_name(backend: MetadataPlugin) -> &'static str {
    match backend {
        MetadataPlugin::VmqSwc => "vmq_swc",
        MetadataPlugin::VmqPlumtree => "vmq_plumtree",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_vernemq() {
        let config = TransportConfig::from_config(&Config::embedded_default()).unwrap();
        assert_eq!(config.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(config.outgoing_buffer_size, 10_000);
        assert_eq!(config.tls, None);
        assert_eq!(config.backend_name(), "vmq_swc");
        assert!(config.max_frame_size > 268_435_455, "any MQTT message fits a frame");
    }

    #[test]
    fn clustering_keys_are_read() {
        let config = Config::parse(
            "listener.vmq.clustering = 127.0.0.1:18883\n\
             outgoing_clustering_buffer_size = 4096\n\
             listener.vmqs.cafile = /etc/ca.pem\n\
             listener.vmqs.certfile = /etc/cert.pem\n\
             listener.vmqs.keyfile = /etc/key.pem\n",
            None,
        )
        .unwrap();
        let transport = TransportConfig::from_config(&config).unwrap();
        assert_eq!(transport.listen, "127.0.0.1:18883".parse().unwrap());
        assert_eq!(transport.outgoing_buffer_size, 4096);
        assert_eq!(
            transport.tls,
            Some(ClusterTlsFiles {
                cafile: "/etc/ca.pem".into(),
                certfile: "/etc/cert.pem".into(),
                keyfile: "/etc/key.pem".into(),
            })
        );
    }

    #[test]
    fn incomplete_certificate_settings_are_an_error() {
        let config = Config::parse("listener.vmqs.cafile = /etc/ca.pem\n", None).unwrap();
        let err = TransportConfig::from_config(&config).unwrap_err().to_string();
        assert!(err.contains("listener.vmqs.certfile and listener.vmqs.keyfile"), "{err}");
    }

    #[test]
    fn bad_address_is_an_error() {
        let config = Config::parse("listener.vmq.clustering = nowhere\n", None).unwrap();
        assert!(TransportConfig::from_config(&config).is_err());
    }
}
