//! The WebSocket listener's upgrade and framing (`listener::websocket`): the bytes a client
//! sends, through the HTTP upgrade and the frames, to the MQTT bytes a connection reads.

use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use vmq_config::{ListenerConfig, Transport};

use crate::listener::websocket::{self, WsSettings};

/// A valid upgrade request, put in front of the input when its first byte is odd, so that most
/// mutations exercise the framing rather than break the request.
pub(super) const UPGRADE: &[u8] = b"GET /mqtt HTTP/1.1\r\nHost: fuzz\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
Sec-WebSocket-Protocol: mqtt\r\n\r\n";

/// The first byte picks the request (bit 0: prepend [`UPGRADE`]) and `max_ws_frame_size`
/// (bit 1: 64 bytes, else the default); the rest is what the client sends. The upgrade and the
/// frame reader must return on any input, and the MQTT bytes read out of the frames can never
/// be more than the client sent.
pub fn websocket(data: &[u8]) {
    if let Some((sent, Ok(mqtt))) = session(data) {
        assert!(mqtt.len() <= sent, "{} MQTT bytes out of {sent} sent", mqtt.len());
    }
}

/// Runs the upgrade and reads the MQTT bytes to the end: how many bytes the client sent, and
/// the MQTT bytes, or why the upgrade or a frame was refused. `None` for an empty input, or
/// if the reading waited.
pub(super) fn session(data: &[u8]) -> Option<(usize, Result<Vec<u8>, String>)> {
    let (&selector, rest) = data.split_first()?;
    let input = if selector & 1 == 1 { [UPGRADE, rest].concat() } else { rest.to_vec() };
    let max_frame_size = if selector & 2 == 2 { Some(64) } else { Some(268_435_456) };
    let spec = ListenerConfig::new(Transport::Ws, "fuzz", std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into());
    let Ok(settings) = WsSettings::new(&spec, max_frame_size) else {
        panic!("the default WebSocket settings are refused");
    };
    let read = run(async {
        let client = Client { input: &input, at: 0, answered: false };
        let mut stream = websocket::accept(client, &settings).await?;
        let mut mqtt = Vec::new();
        // Ends at the end of the input (a closed connection) or at the first framing error.
        stream.read_to_end(&mut mqtt).await.map_err(|e| e.to_string())?;
        Ok(mqtt)
    })?;
    Some((input.len(), read))
}

/// Polls `future` until it completes; `None` if it waits, which over an input held in memory
/// means it gave up reading (a bug would be a panic or an endless loop, not a wait).
fn run<F: Future>(future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

/// A client connection held in memory: reads the input, then end of file; writes vanish. As
/// RFC 6455 requires of a client, it sends nothing after its upgrade request (up to the first
/// blank line) until the server has answered.
struct Client<'a> {
    input: &'a [u8],
    at: usize,
    answered: bool,
}

impl AsyncRead for Client<'_> {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let request_end = self.input.windows(4).position(|w| w == b"\r\n\r\n").map_or(self.input.len(), |at| at + 4);
        let end = if self.answered { self.input.len() } else { request_end };
        let rest = self.input.get(self.at..end).unwrap_or_default();
        let n = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..n]);
        self.at += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Client<'_> {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.answered = true;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
