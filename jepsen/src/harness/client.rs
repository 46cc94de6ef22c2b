//! A convenience client for the fault workloads: owned packets, one at a time.
//!
//! The load generator's [`Connection`] decodes in place for speed; the workloads here run at a
//! few hundred messages per second and care about every packet, so this wrapper turns each
//! frame into an owned [`Incoming`] and hands them out in order.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::time::Instant;

use crate::mqtt::codec::{self, Ack};
use crate::mqtt::{ClientError, Connect, Connection, Packet, PacketId, ProtocolVersion, QoS};

/// A packet from the broker, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// PUBLISH.
    Publish {
        /// DUP flag.
        dup: bool,
        /// RETAIN flag.
        retain: bool,
        /// Delivery QoS.
        qos: QoS,
        /// Topic.
        topic: String,
        /// Packet id for QoS 1/2.
        packet_id: Option<PacketId>,
        /// Payload.
        payload: Vec<u8>,
    },
    /// PUBACK.
    PubAck(PacketId),
    /// PUBREC.
    PubRec(PacketId),
    /// PUBREL.
    PubRel(PacketId),
    /// PUBCOMP.
    PubComp(PacketId),
    /// SUBACK with its first return code.
    SubAck(PacketId, u8),
    /// UNSUBACK.
    UnsubAck(PacketId),
    /// PINGRESP.
    PingResp,
    /// Anything else (a stray CONNACK, an MQTT 5 DISCONNECT).
    Other,
}

/// One MQTT 3.1.1 connection of a workload.
#[derive(Debug)]
pub struct Client {
    conn: Connection,
    queue: VecDeque<Incoming>,
}

impl Client {
    /// Connects with MQTT 3.1.1; returns the client and the session-present flag.
    pub async fn connect(
        addr: SocketAddr,
        client_id: &str,
        clean: bool,
        timeout: Duration,
    ) -> Result<(Self, bool), ClientError> {
        let connect = Connect {
            client_id,
            clean_start: clean,
            // The broker closes a silent connection after 1.5 keep-alives, which is how a
            // client behind a cut link eventually learns about it.
            keep_alive: 10,
            session_expiry: 0,
        };
        let (conn, present) = Connection::connect(addr, ProtocolVersion::V311, &connect, timeout).await?;
        Ok((Self { conn, queue: VecDeque::new() }, present))
    }

    /// A fresh packet id.
    pub fn next_id(&mut self) -> PacketId {
        self.conn.next_packet_id()
    }

    /// Appends frames with `f` and writes them.
    pub async fn send(&mut self, f: impl FnOnce(&mut BytesMut, ProtocolVersion)) -> Result<(), ClientError> {
        let v = self.conn.version;
        f(self.conn.wbuf(), v);
        self.conn.flush().await?;
        Ok(())
    }

    /// Sends a PUBLISH.
    pub async fn publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
        id: Option<PacketId>,
    ) -> Result<(), ClientError> {
        self.send(|b, v| codec::encode_publish_retain(b, v, qos, id, topic.as_bytes(), payload, retain)).await
    }

    /// Sends an acknowledgement.
    pub async fn ack(&mut self, ack: Ack, id: PacketId) -> Result<(), ClientError> {
        self.send(|b, _| codec::encode_ack(b, ack, id)).await
    }

    /// Sends SUBSCRIBE for one filter; the SUBACK arrives through [`Client::next`].
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> Result<PacketId, ClientError> {
        let id = self.next_id();
        self.send(|b, v| codec::encode_subscribe(b, v, id, filter, qos)).await?;
        Ok(id)
    }

    /// Sends UNSUBSCRIBE for one filter.
    pub async fn unsubscribe(&mut self, filter: &str) -> Result<PacketId, ClientError> {
        let id = self.next_id();
        self.send(|b, v| codec::encode_unsubscribe(b, v, id, filter)).await?;
        Ok(id)
    }

    /// Sends PINGREQ.
    pub async fn ping(&mut self) -> Result<(), ClientError> {
        self.send(|b, _| codec::encode_pingreq(b)).await
    }

    /// The next packet, or `Ok(None)` when none arrives before `deadline`.
    pub async fn next(&mut self, deadline: Instant) -> Result<Option<Incoming>, ClientError> {
        loop {
            if let Some(p) = self.queue.pop_front() {
                return Ok(Some(p));
            }
            let queue = &mut self.queue;
            self.conn.drain(|p, _| queue.push_back(owned(p)))?;
            if !self.queue.is_empty() {
                continue;
            }
            match self.conn.read_until(deadline, "a packet").await {
                Ok(()) => {}
                Err(ClientError::Timeout(_)) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits for the packet `want` picks, answering QoS flows of other packets with `other`.
    /// Packets that are not picked are passed to `other`, in order.
    pub async fn wait_for<T>(
        &mut self,
        deadline: Instant,
        what: &'static str,
        mut want: impl FnMut(&Incoming) -> Option<T>,
        mut other: impl FnMut(Incoming),
    ) -> Result<T, ClientError> {
        loop {
            match self.next(deadline).await? {
                None => return Err(ClientError::Timeout(what)),
                Some(p) => match want(&p) {
                    Some(t) => return Ok(t),
                    None => other(p),
                },
            }
        }
    }

    /// Sends DISCONNECT and closes.
    pub async fn disconnect(self) {
        self.conn.disconnect().await;
    }
}

fn owned(p: Packet<'_>) -> Incoming {
    match p {
        Packet::Publish { dup, retain, qos, topic, packet_id, payload } => Incoming::Publish {
            dup,
            retain,
            qos,
            topic: String::from_utf8_lossy(topic).into_owned(),
            packet_id,
            payload: payload.to_vec(),
        },
        Packet::PubAck(id) => Incoming::PubAck(id),
        Packet::PubRec(id) => Incoming::PubRec(id),
        Packet::PubRel(id) => Incoming::PubRel(id),
        Packet::PubComp(id) => Incoming::PubComp(id),
        Packet::SubAck { packet_id, codes } => Incoming::SubAck(packet_id, codes.first().copied().unwrap_or(0x80)),
        Packet::UnsubAck(id) => Incoming::UnsubAck(id),
        Packet::PingResp => Incoming::PingResp,
        Packet::ConnAck { .. } | Packet::Disconnect(_) => Incoming::Other,
    }
}
