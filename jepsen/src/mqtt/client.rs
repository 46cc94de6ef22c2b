//! A minimal MQTT connection over tokio, built for load generation.
//!
//! [`Connection`] owns the socket, one read buffer and one write buffer. Callers append many
//! frames to [`Connection::wbuf`] and write them with one syscall; reads pull whatever the
//! kernel has (up to [`READ_CHUNK`]) and [`Connection::drain`] decodes every whole frame in
//! place. Nothing is allocated per message. The hot loops in `bench` drive the socket with
//! `readable()`/`writable()` and the `try_*` methods so that one task can read and write
//! without ever blocking on a full socket while the broker blocks on ours.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::codec::{self, Connect, DecodeError, Packet, PacketId, ProtocolVersion, QoS};

/// How much the read buffer grows by before each read.
pub const READ_CHUNK: usize = 64 * 1024;
/// Buffer size while connecting and subscribing.
const SETUP_CHUNK: usize = 1024;

/// Why a connection failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// Socket error.
    #[error("io: {0}")]
    Io(#[from] io::Error),
    /// The broker sent a frame this client cannot decode.
    #[error("decode: {0}")]
    Decode(#[from] DecodeError),
    /// CONNACK with a non-zero code.
    #[error("connection refused with code {0:#x}")]
    Refused(u8),
    /// SUBACK with a failure code.
    #[error("subscription to {0} refused with code {1:#x}")]
    SubscribeRefused(String, u8),
    /// The broker closed the socket.
    #[error("connection closed by the broker")]
    Closed,
    /// No answer in time.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// An answer that does not fit the request.
    #[error("unexpected packet while waiting for {0}")]
    Unexpected(&'static str),
}

/// One MQTT connection; see the module documentation for how to drive it.
#[derive(Debug)]
pub struct Connection {
    /// The socket; exposed so hot loops can await `readable()`/`writable()` directly.
    pub stream: TcpStream,
    /// Protocol version negotiated in CONNECT.
    pub version: ProtocolVersion,
    rbuf: BytesMut,
    wbuf: BytesMut,
    next_id: u16,
    receive_maximum: Option<u16>,
}

impl Connection {
    /// Connects, sends CONNECT and waits for CONNACK. Returns the connection and the
    /// session-present flag.
    pub async fn connect(
        addr: SocketAddr,
        version: ProtocolVersion,
        connect: &Connect<'_>,
        timeout: Duration,
    ) -> Result<(Self, bool), ClientError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout("TCP connect"))??;
        // Latency runs measure the broker, not Nagle's delay on our small frames.
        stream.set_nodelay(true)?;
        let mut conn = Self {
            stream,
            version,
            // Small until the connection carries load: `conns` holds ten thousand of these.
            rbuf: BytesMut::with_capacity(SETUP_CHUNK),
            wbuf: BytesMut::with_capacity(SETUP_CHUNK),
            next_id: 0,
            receive_maximum: None,
        };
        codec::encode_connect(&mut conn.wbuf, version, connect);
        conn.flush().await?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            conn.read_until(deadline, "CONNACK").await?;
            // Only the CONNACK is taken: a persistent session's queued PUBLISHes may follow it
            // in the same read and belong to the caller.
            match conn.take_one(|p| match p {
                Packet::ConnAck { code: 0, session_present, receive_maximum } => {
                    Some(Ok((session_present, receive_maximum)))
                }
                Packet::ConnAck { code, .. } => Some(Err(code)),
                _ => None,
            })? {
                Some(Ok((present, recv_max))) => {
                    conn.receive_maximum = recv_max;
                    return Ok((conn, present));
                }
                Some(Err(code)) => return Err(ClientError::Refused(code)),
                None => {}
            }
        }
    }

    /// Subscribes to one filter and waits for the SUBACK.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS, timeout: Duration) -> Result<(), ClientError> {
        let id = self.next_packet_id();
        codec::encode_subscribe(&mut self.wbuf, self.version, id, filter, qos);
        self.flush().await?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.read_until(deadline, "SUBACK").await?;
            let result = self.take_one(|p| match p {
                Packet::SubAck { packet_id, codes } if packet_id == id => Some(codes.first().copied().unwrap_or(0x80)),
                _ => None,
            })?;
            match result {
                Some(code) if code < 0x80 => return Ok(()),
                Some(code) => return Err(ClientError::SubscribeRefused(filter.to_owned(), code)),
                None => {}
            }
        }
    }

    /// The broker's MQTT 5 Receive Maximum from CONNACK: how many QoS 1/2 publishes it
    /// accepts unacknowledged [MQTT-3.3.4-9]. `None` for 3.1.1 or when absent.
    pub fn receive_maximum(&self) -> Option<u16> {
        self.receive_maximum
    }

    /// A fresh packet identifier, cycling through 1..=65535 ([MQTT-2.3.1-1]).
    pub fn next_packet_id(&mut self) -> PacketId {
        self.next_id = if self.next_id == u16::MAX { 1 } else { self.next_id + 1 };
        PacketId(self.next_id)
    }

    /// The write buffer: append frames with the `codec::encode_*` functions.
    pub fn wbuf(&mut self) -> &mut BytesMut {
        &mut self.wbuf
    }

    /// Bytes waiting to be written.
    pub fn pending_write(&self) -> usize {
        self.wbuf.len()
    }

    /// Writes the whole write buffer, waiting as needed.
    pub async fn flush(&mut self) -> io::Result<()> {
        self.stream.write_all(&self.wbuf).await?;
        self.wbuf.clear();
        Ok(())
    }

    /// Writes as much of the write buffer as the socket takes now, without waiting.
    pub fn try_flush(&mut self) -> io::Result<()> {
        while !self.wbuf.is_empty() {
            match self.stream.try_write(&self.wbuf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.wbuf.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads whatever the socket has now, without waiting. Returns false on end of stream.
    pub fn try_fill(&mut self) -> Result<bool, ClientError> {
        self.rbuf.reserve(READ_CHUNK);
        match self.stream.try_read_buf(&mut self.rbuf) {
            Ok(0) => Ok(false),
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    /// Waits for and reads at least one byte, or fails at `deadline`.
    pub async fn read_until(&mut self, deadline: tokio::time::Instant, what: &'static str) -> Result<(), ClientError> {
        self.rbuf.reserve(SETUP_CHUNK);
        match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.rbuf)).await {
            Err(_) => Err(ClientError::Timeout(what)),
            Ok(Ok(0)) => Err(ClientError::Closed),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.into()),
        }
    }

    /// Decodes whole frames until `f` returns `Some`, leaving any later frames buffered.
    /// Frames before it are dropped: during setup nothing else is expected.
    fn take_one<T>(&mut self, mut f: impl FnMut(Packet<'_>) -> Option<T>) -> Result<Option<T>, DecodeError> {
        while let Some((p, n)) = codec::decode(&self.rbuf, self.version)? {
            let out = f(p);
            self.rbuf.advance(n);
            if out.is_some() {
                return Ok(out);
            }
        }
        Ok(None)
    }

    /// Decodes every whole frame in the read buffer, handing each to `f` together with the
    /// write buffer (for acknowledgements), then drops the consumed bytes.
    pub fn drain<F>(&mut self, mut f: F) -> Result<(), DecodeError>
    where
        F: FnMut(Packet<'_>, &mut BytesMut),
    {
        let mut at = 0;
        let result = loop {
            match codec::decode(&self.rbuf[at..], self.version) {
                Ok(Some((p, n))) => {
                    f(p, &mut self.wbuf);
                    at += n;
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        self.rbuf.advance(at);
        result
    }

    /// Sends DISCONNECT and closes the write side, ignoring errors: the run is over.
    pub async fn disconnect(mut self) {
        codec::encode_disconnect(&mut self.wbuf);
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            let _ = self.flush().await;
            let _ = self.stream.shutdown().await;
        })
        .await;
    }
}
