//! MQTT over WebSocket (`listener.ws.<name>`, `listener.wss.<name>`): the HTTP upgrade on the
//! `/mqtt` path (VerneMQ refuses the base URL), then MQTT's bytes in binary frames.
//!
//! The handshake and framing are tokio-tungstenite's; [`WsStream`] turns the frames back into
//! the byte stream a connection reads and writes, so MQTT packets may span frames or share
//! one, as MQTT's WebSocket binding allows. A text frame closes the connection
//! ([MQTT-6.0.0-1]).
//!
//! Settings, through VerneMQ's listener hierarchy: `max_ws_frame_size` (global; larger frames
//! close the connection), `max_request_line_length` (longer request lines get HTTP 414) and
//! `max_header_value_length` (longer header values get HTTP 431); the whole upgrade request
//! must also fit in the 64 KiB tungstenite reads at most.
//!
//! Before the broker's first write (the CONNACK, sent once the client is authenticated) a
//! client can make it read at most [`PRE_AUTH_READ_LIMIT`] bytes: the WebSocket layer reserves
//! room for a whole frame as soon as it reads the frame's header, so without that bound an
//! unauthenticated client could make it hold `max_ws_frame_size` bytes.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use futures_core::Stream as _;
use futures_sink::Sink;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::ListenerSpec;
use crate::session::connect::MAX_CONNECT_SIZE;

/// The path MQTT clients connect to.
pub const PATH: &str = "/mqtt";

/// The subprotocols accepted, in order of preference: MQTT 3.1.1 and 5 clients ask for `mqtt`,
/// MQTT 3.1 clients for `mqttv3.1`.
const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// Cowboy's defaults, which VerneMQ's WebSocket listeners inherit.
const DEFAULT_MAX_REQUEST_LINE_LENGTH: usize = 8000;
const DEFAULT_MAX_HEADER_VALUE_LENGTH: usize = 4096;

/// Bytes read from an unauthenticated client at most: the largest CONNECT, the upgrade
/// request, and the frame headers around them.
pub const PRE_AUTH_READ_LIMIT: usize = MAX_CONNECT_SIZE + 64 * 1024 + 4096;

/// Read and write buffers of the WebSocket layer, per connection. tungstenite's 128 KiB
/// defaults would make an idle WebSocket connection forty times the size of a TCP one.
const BUFFER_SIZE: usize = 4096;

/// A WebSocket listener's settings.
#[derive(Debug, Clone)]
pub struct WsSettings {
    /// `max_ws_frame_size`; `None` = `infinity`.
    max_frame_size: Option<usize>,
    max_request_line_length: usize,
    max_header_value_length: usize,
}

impl WsSettings {
    /// Reads `spec`'s WebSocket settings; `max_frame_size` is the node's `max_ws_frame_size`.
    pub fn new(spec: &ListenerSpec, max_frame_size: Option<usize>) -> Result<WsSettings, String> {
        let length = |name: &str, default: usize| -> Result<usize, String> {
            match spec.transport_settings.get(name) {
                None => Ok(default),
                Some(v) => v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("{}.{name} = {v}: not a positive integer", spec.key())),
            }
        };
        Ok(WsSettings {
            max_frame_size,
            max_request_line_length: length("max_request_line_length", DEFAULT_MAX_REQUEST_LINE_LENGTH)?,
            max_header_value_length: length("max_header_value_length", DEFAULT_MAX_HEADER_VALUE_LENGTH)?,
        })
    }

    fn config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(BUFFER_SIZE)
            .write_buffer_size(BUFFER_SIZE)
            .max_frame_size(self.max_frame_size)
            // A message is one or more frames; MQTT's own `max_message_size` applies to the
            // packets inside.
            .max_message_size(self.max_frame_size)
    }

    /// Answers the upgrade request: the path, the header limits, the subprotocol.
    // tungstenite's `Callback` fixes this signature; it runs once per upgrade.
    #[allow(clippy::result_large_err)]
    fn answer(&self, request: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
        // "GET " + target + " HTTP/1.1"
        let request_line = request.uri().to_string().len() + 13;
        if request_line > self.max_request_line_length {
            return Err(refusal(StatusCode::URI_TOO_LONG, "request line longer than max_request_line_length"));
        }
        if request.headers().values().any(|v| v.len() > self.max_header_value_length) {
            return Err(refusal(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "a header value is longer than max_header_value_length",
            ));
        }
        if request.uri().path() != PATH {
            return Err(refusal(StatusCode::NOT_FOUND, "MQTT over WebSocket is served on /mqtt"));
        }
        let offered: Vec<&str> = request
            .headers()
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        if offered.is_empty() {
            // Clients that name no subprotocol speak MQTT all the same; nothing to select.
            return Ok(response);
        }
        let Some(chosen) = SUBPROTOCOLS.iter().find(|p| offered.contains(p)) else {
            return Err(refusal(StatusCode::BAD_REQUEST, "no subprotocol of mqtt, mqttv3.1 offered"));
        };
        response.headers_mut().insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(chosen));
        Ok(response)
    }
}

fn refusal(status: StatusCode, why: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(format!("{why}\n")));
    *response.status_mut() = status;
    response
}

/// Runs the upgrade on `stream` and returns the MQTT byte stream inside it.
// The upgrade answer's error is an HTTP response, as tungstenite's `Callback` takes it.
#[allow(clippy::result_large_err)]
pub async fn accept<S>(stream: S, settings: &WsSettings) -> Result<WsStream<S>, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let capped = Capped { inner: stream, left: Some(PRE_AUTH_READ_LIMIT) };
    let answer = |request: &Request, response: Response| settings.answer(request, response);
    let ws = tokio_tungstenite::accept_hdr_async_with_config(capped, answer, Some(settings.config()))
        .await
        .map_err(|e| format!("WebSocket upgrade failed: {e}"))?;
    Ok(WsStream { ws, read: Bytes::new() })
}

/// MQTT's bytes inside a WebSocket: read from binary frames, written as one binary frame per
/// write.
pub struct WsStream<S> {
    ws: WebSocketStream<Capped<S>>,
    /// The rest of the last binary frame read.
    read: Bytes,
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            if !self.read.is_empty() {
                let n = self.read.len().min(buf.remaining());
                buf.put_slice(&self.read[..n]);
                self.read.advance(n);
                return Poll::Ready(Ok(()));
            }
            // Pings are answered inside tungstenite; a close frame, or its absence, ends the
            // stream.
            match ready!(Pin::new(&mut self.ws).poll_next(cx)) {
                None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(())),
                Some(Ok(Message::Binary(bytes))) => self.read = bytes,
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a text frame: MQTT over WebSocket uses binary frames",
                    )));
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                // A client that closes its TCP connection without a close frame has gone as
                // surely as one that sent it.
                Some(Err(
                    WsError::ConnectionClosed
                    | WsError::AlreadyClosed
                    | WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake),
                )) => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(into_io(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        // The broker writes nothing before the client is authenticated.
        self.ws.get_mut().left = None;
        ready!(Pin::new(&mut self.ws).poll_ready(cx)).map_err(into_io)?;
        Pin::new(&mut self.ws).start_send(Message::Binary(Bytes::copy_from_slice(buf))).map_err(into_io)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(into_io)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(Pin::new(&mut self.ws).poll_close(cx)) {
            Ok(()) | Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(into_io(e))),
        }
    }
}

fn into_io(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

/// A stream that fails reads beyond `left` bytes until the limit is lifted (`left = None`).
struct Capped<S> {
    inner: S,
    left: Option<usize>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Capped<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let Some(left) = self.left else {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        };
        if left == 0 {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "more than the CONNECT limit sent before authentication",
            )));
        }
        if buf.remaining() <= left {
            let before = buf.filled().len();
            ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
            self.left = Some(left - (buf.filled().len() - before));
        } else {
            // Near the limit only: read no more than is left, through a small buffer.
            let mut room = [0u8; 1024];
            let mut limited = ReadBuf::new(&mut room[..left.min(1024)]);
            ready!(Pin::new(&mut self.inner).poll_read(cx, &mut limited))?;
            buf.put_slice(limited.filled());
            self.left = Some(left - limited.filled().len());
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Capped<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
