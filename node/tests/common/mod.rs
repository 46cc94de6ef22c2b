//! Shared helpers: an in-process broker on port 0, clients of an independent library
//! (rumqttc) for MQTT 3.1.1 and 5.0, and a raw client for bytes no library would send.
#![allow(dead_code)]
// Test helpers stop the test on anything unexpected, as the tests themselves do.
#![allow(clippy::unwrap_used)]

pub mod nodes;
pub mod pki;
pub mod process;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use vmq_config::Config;
use vmq_mqtt::{self as mqtt, Connect, Packet, ProtocolVersion};
use vmq_node::server::Node;

/// How long a test waits for something that should happen promptly.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// Starts a broker on 127.0.0.1:0 with the embedded defaults changed by `f`.
pub async fn start(f: impl FnOnce(&mut Config)) -> Node {
    init_tracing();
    let mut cfg = test_config();
    f(&mut cfg);
    Node::start(&cfg).await.expect("broker starts")
}

/// The embedded defaults with every listener (MQTT, HTTP, cluster) on 127.0.0.1 port 0, so
/// that tests running in parallel never collide.
pub fn test_config() -> Config {
    let mut cfg = Config::embedded_default();
    for l in &mut cfg.listeners {
        l.addr = "127.0.0.1:0".parse().unwrap();
    }
    for e in &mut cfg.delegated {
        if e.key.starts_with("listener.http.") && !e.key["listener.http.".len()..].contains('.') {
            e.value = "127.0.0.1:0".into();
        }
    }
    set_delegated(&mut cfg, "listener.vmq.clustering", "127.0.0.1:0");
    cfg
}

/// Sets (or replaces) a delegated entry such as `listener.vmq.clustering`.
pub fn set_delegated(cfg: &mut Config, key: &str, value: &str) {
    cfg.delegated.retain(|e| e.key != key);
    cfg.delegated.push(vmq_config::ConfigEntry { key: key.into(), value: value.into(), line: 0 });
}

/// Polls `cond` until it holds, failing after [`WAIT`].
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A client speaking raw packets through our codec.
pub struct RawClient {
    pub stream: TcpStream,
    pub buf: BytesMut,
    pub version: ProtocolVersion,
}

impl RawClient {
    pub async fn open(addr: SocketAddr, version: ProtocolVersion) -> RawClient {
        let stream = TcpStream::connect(addr).await.expect("tcp connect");
        RawClient { stream, buf: BytesMut::new(), version }
    }

    /// Connects with `connect` (its protocol set to the client's) and returns the CONNACK.
    pub async fn connect(addr: SocketAddr, version: ProtocolVersion, mut connect: Connect) -> (RawClient, Packet) {
        let mut c = RawClient::open(addr, version).await;
        connect.protocol = Some(version);
        c.send(&Packet::Connect(Box::new(connect))).await;
        let ack = c.recv().await.expect("CONNACK");
        (c, ack)
    }

    pub fn connect_packet(client_id: &str, clean: bool) -> Connect {
        Connect { client_id: client_id.into(), clean_start: clean, keep_alive: 60, ..Connect::default() }
    }

    pub async fn send(&mut self, p: &Packet) {
        let mut out = BytesMut::new();
        mqtt::encode(p, self.version, &mut out).expect("encodable");
        self.send_bytes(&out).await;
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        // The server may already have closed; tests then observe that through `recv`.
        let _ = self.stream.write_all(bytes).await;
    }

    /// The next packet, or `None` when the server closed the connection.
    pub async fn recv(&mut self) -> Option<Packet> {
        tokio::time::timeout(WAIT, self.recv_inner()).await.expect("server answered in time")
    }

    async fn recv_inner(&mut self) -> Option<Packet> {
        loop {
            if let Ok(Some(p)) = mqtt::decode(&mut self.buf, self.version, usize::MAX) {
                return Some(p);
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Reads until the server closes, returning what it sent before closing.
    pub async fn until_closed(&mut self) -> Vec<Packet> {
        let mut seen = Vec::new();
        while let Some(p) = self.recv().await {
            seen.push(p);
        }
        seen
    }
}

/// An MQTT 3.1.1 client from rumqttc whose events are collected in a channel.
pub struct V4 {
    pub client: rumqttc::AsyncClient,
    pub events: mpsc::UnboundedReceiver<Result<rumqttc::Event, String>>,
}

impl V4 {
    pub fn options(addr: SocketAddr, id: &str) -> rumqttc::MqttOptions {
        let mut o = rumqttc::MqttOptions::new(id, addr.ip().to_string(), addr.port());
        o.set_keep_alive(Duration::from_secs(30));
        o
    }

    /// Connects and waits for CONNACK; returns the client and whether a session was present.
    pub async fn connect(opts: rumqttc::MqttOptions) -> (V4, bool) {
        V4::try_connect(opts).await.unwrap_or_else(|e| panic!("connect failed: {e}"))
    }

    /// Connects and waits for CONNACK: the client and whether a session was present, or why
    /// the connect failed (refused, closed, no CONNACK in time).
    pub async fn try_connect(opts: rumqttc::MqttOptions) -> Result<(V4, bool), String> {
        let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 1000);
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let ev = eventloop.poll().await.map_err(|e| e.to_string());
                let stop = ev.is_err();
                if tx.send(ev).is_err() || stop {
                    return;
                }
            }
        });
        let mut c = V4 { client, events: rx };
        loop {
            match tokio::time::timeout(WAIT, c.events.recv()).await {
                Ok(Some(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(a))))) => {
                    if a.code != rumqttc::ConnectReturnCode::Success {
                        return Err(format!("refused: {:?}", a.code));
                    }
                    return Ok((c, a.session_present));
                }
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => return Err(e),
                Ok(None) => return Err("closed".into()),
                Err(_) => return Err("no CONNACK in time".into()),
            }
        }
    }

    pub async fn next(&mut self) -> Result<rumqttc::Event, String> {
        tokio::time::timeout(WAIT, self.events.recv()).await.expect("event in time").unwrap_or(Err("closed".into()))
    }

    pub async fn subscribe(&mut self, filter: &str, qos: rumqttc::QoS) {
        self.client.subscribe(filter, qos).await.unwrap();
        loop {
            if let rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_)) = self.next().await.unwrap() {
                return;
            }
        }
    }

    pub async fn publish_event(&mut self) -> rumqttc::Publish {
        loop {
            match self.next().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => return p,
                Ok(_) => {}
                Err(e) => panic!("connection failed while waiting for a publish: {e}"),
            }
        }
    }
}

/// An MQTT 5 client from rumqttc whose events are collected in a channel.
pub struct V5 {
    pub client: rumqttc::v5::AsyncClient,
    pub events: mpsc::UnboundedReceiver<Result<rumqttc::v5::Event, String>>,
}

impl V5 {
    pub fn options(addr: SocketAddr, id: &str) -> rumqttc::v5::MqttOptions {
        let mut o = rumqttc::v5::MqttOptions::new(id, addr.ip().to_string(), addr.port());
        o.set_keep_alive(Duration::from_secs(30));
        o
    }

    pub async fn connect(opts: rumqttc::v5::MqttOptions) -> (V5, rumqttc::v5::mqttbytes::v5::ConnAck) {
        let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(opts, 1000);
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let ev = eventloop.poll().await.map_err(|e| format!("{e:?}"));
                let stop = ev.is_err();
                if tx.send(ev).is_err() || stop {
                    return;
                }
            }
        });
        let mut c = V5 { client, events: rx };
        let ack = loop {
            match c.next().await {
                Ok(rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::ConnAck(a))) => break a,
                Ok(_) => {}
                Err(e) => panic!("connect failed: {e}"),
            }
        };
        (c, ack)
    }

    pub async fn next(&mut self) -> Result<rumqttc::v5::Event, String> {
        tokio::time::timeout(WAIT, self.events.recv()).await.expect("event in time").unwrap_or(Err("closed".into()))
    }

    pub async fn suback(&mut self) -> rumqttc::v5::mqttbytes::v5::SubAck {
        loop {
            if let rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::SubAck(a)) =
                self.next().await.unwrap()
            {
                return a;
            }
        }
    }

    pub async fn subscribe(&mut self, filter: &str, qos: rumqttc::v5::mqttbytes::QoS) {
        self.client.subscribe(filter, qos).await.unwrap();
        self.suback().await;
    }

    pub async fn publish_event(&mut self) -> rumqttc::v5::mqttbytes::v5::Publish {
        loop {
            match self.next().await {
                Ok(rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::Publish(p))) => return p,
                Ok(_) => {}
                Err(e) => panic!("connection failed while waiting for a publish: {e}"),
            }
        }
    }
}
