//! `listener.ws.<name>` and `listener.wss.<name>` on a real `vernemq` process: Eclipse paho
//! (Python) round trips over WebSocket and secure WebSocket on `/mqtt`, and what a hand-made
//! upgrade request or frame provokes: the wrong path, oversized request lines and headers,
//! text frames, frames beyond `max_ws_frame_size`, an unauthenticated client streaming a
//! huge frame, and a PROXY header in front of the upgrade.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::pki::Pki;
use common::process::Broker;
use vmq_mqtt::{self as mqtt, Packet, ProtocolVersion, ReasonCode};

fn ws_broker(extra: &str) -> (Broker, SocketAddr) {
    let broker = Broker::start(&format!("listener.ws.default = 127.0.0.1:0\n{extra}"));
    let addr = broker.logged_addr("listening for MQTT over WebSocket");
    (broker, addr)
}

/// Sends an upgrade request for `path` with `extra` header lines (each ending in CRLF);
/// returns the stream and the response head.
fn upgrade(stream: &mut TcpStream, path: &str, extra: &str) -> String {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: mqtt\r\n{extra}\r\n"
    );
    stream.write_all(request.as_bytes()).expect("request sent");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

fn open(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream
}

/// A client frame (masked, with a zero mask so the payload stays readable) of `opcode`.
fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    header_len(&mut out, payload.len() as u64);
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(payload);
    out
}

fn header_len(out: &mut Vec<u8>, len: u64) {
    match len {
        0..=125 => out.push(0x80 | len as u8),
        126..=0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(0x80 | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
}

fn connect_bytes(id: &str) -> Vec<u8> {
    let mut connect = common::RawClient::connect_packet(id, true);
    connect.protocol = Some(ProtocolVersion::V4);
    let mut out = BytesMut::new();
    mqtt::encode(&Packet::Connect(Box::new(connect)), ProtocolVersion::V4, &mut out).expect("encodes");
    out.to_vec()
}

/// Reads server frames until one carries a whole MQTT packet; `None` when the connection
/// closes first.
fn read_packet(stream: &mut TcpStream) -> Option<Packet> {
    let mut mqtt_bytes = BytesMut::new();
    loop {
        let mut head = [0u8; 2];
        stream.read_exact(&mut head).ok()?;
        let len = match head[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                stream.read_exact(&mut l).ok()?;
                u64::from(u16::from_be_bytes(l))
            }
            127 => {
                let mut l = [0u8; 8];
                stream.read_exact(&mut l).ok()?;
                u64::from_be_bytes(l)
            }
            n => u64::from(n),
        };
        let mut payload = vec![0u8; usize::try_from(len).ok()?];
        stream.read_exact(&mut payload).ok()?;
        match head[0] & 0x0f {
            0x2 | 0x0 => mqtt_bytes.extend_from_slice(&payload),
            0x8 => return None,
            _ => continue,
        }
        if let Ok(Some(p)) = mqtt::decode(&mut mqtt_bytes, ProtocolVersion::V4, usize::MAX) {
            return Some(p);
        }
    }
}

/// True once the server has closed the connection: a read returns end of file, a close
/// frame, or an error other than the read timeout.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            // A close frame (opcode 8) from the server.
            Ok(n) if n >= 1 && buf[0] & 0x0f == 0x8 => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return false,
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn paho_round_trips_over_websocket_on_the_mqtt_path() {
    let (broker, addr) = ws_broker("");
    common::process::paho_round_trip(addr.port(), &["--websockets"]);
    assert!(broker.stop().success());
}

#[test]
fn paho_round_trips_over_secure_websocket_trusting_the_servers_ca() {
    let pki = Pki::new("ws-ca", &["server"]);
    let config = format!(
        "listener.wss.default = 127.0.0.1:0\nlistener.wss.certfile = {}\nlistener.wss.keyfile = {}\n",
        pki.path("server.pem").display(),
        pki.path("server.key").display()
    );
    let broker = Broker::start(&config);
    let port = broker.logged_addr("listening for MQTT over secure WebSocket").port();
    let ca = pki.path("ca.pem");
    common::process::paho_round_trip(port, &["--websockets", "--cafile", ca.to_str().expect("utf-8 path")]);
    assert!(broker.stop().success());
}

#[test]
fn an_upgrade_off_the_mqtt_path_gets_404_and_oversized_requests_get_414_and_431() {
    let (broker, addr) =
        ws_broker("listener.ws.max_request_line_length = 200\nlistener.ws.max_header_value_length = 100\n");
    let head = upgrade(&mut open(addr), "/", "");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let long_path = format!("/mqtt?{}", "x".repeat(300));
    let head = upgrade(&mut open(addr), &long_path, "");
    assert!(head.starts_with("HTTP/1.1 414"), "{head}");
    let cookie = format!("Cookie: {}\r\n", "c".repeat(150));
    let head = upgrade(&mut open(addr), "/mqtt", &cookie);
    assert!(head.starts_with("HTTP/1.1 431"), "{head}");
    // Within the limits the upgrade goes through, naming the MQTT subprotocol.
    let cookie = format!("Cookie: {}\r\n", "c".repeat(90));
    let head = upgrade(&mut open(addr), "/mqtt", &cookie);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.to_ascii_lowercase().contains("sec-websocket-protocol: mqtt\r\n"), "{head}");
    assert!(broker.stop().success());
}

#[test]
fn a_connect_split_across_frames_is_accepted_and_a_text_frame_closes_the_connection() {
    let (broker, addr) = ws_broker("");
    let mut stream = open(addr);
    assert!(upgrade(&mut stream, "/mqtt", "").starts_with("HTTP/1.1 101"));
    let connect = connect_bytes("ws-split");
    let (first, rest) = connect.split_at(5);
    stream.write_all(&frame(0x2, first)).expect("sent");
    stream.write_all(&frame(0x2, rest)).expect("sent");
    let ack = read_packet(&mut stream).expect("CONNACK");
    assert!(matches!(ack, Packet::ConnAck(ref a) if a.code == ReasonCode::SUCCESS), "{ack:?}");
    stream.write_all(&frame(0x1, b"not mqtt")).expect("sent");
    assert!(closed_by_server(&mut stream), "a text frame did not close the connection");
    broker.wait_for_line("MQTT over WebSocket uses binary frames");
    assert!(broker.stop().success());
}

#[test]
fn a_frame_beyond_max_ws_frame_size_closes_the_connection() {
    let (broker, addr) = ws_broker("max_ws_frame_size = 1024\n");
    let mut stream = open(addr);
    assert!(upgrade(&mut stream, "/mqtt", "").starts_with("HTTP/1.1 101"));
    stream.write_all(&frame(0x2, &connect_bytes("ws-big"))).expect("sent");
    assert!(matches!(read_packet(&mut stream), Some(Packet::ConnAck(_))));
    let _ = stream.write_all(&frame(0x2, &[0u8; 2048]));
    assert!(closed_by_server(&mut stream), "a 2 KiB frame was taken with max_ws_frame_size = 1024");
    assert!(broker.stop().success());
}

#[test]
fn an_unauthenticated_client_streaming_a_huge_frame_is_cut_off_at_the_connect_limit() {
    let (broker, addr) = ws_broker("");
    let mut stream = open(addr);
    assert!(upgrade(&mut stream, "/mqtt", "").starts_with("HTTP/1.1 101"));
    // A 64 MiB binary frame (within the default max_ws_frame_size) before any CONNECT.
    let mut head = vec![0x82];
    header_len(&mut head, 64 << 20);
    head.extend_from_slice(&[0, 0, 0, 0]);
    stream.write_all(&head).expect("sent");
    let chunk = vec![0u8; 64 * 1024];
    let mut sent = 0usize;
    stream.set_write_timeout(Some(Duration::from_secs(10))).expect("timeout");
    while sent < 64 << 20 {
        match stream.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    // The broker reads about 450 KiB before cutting the client off; socket buffers hold a
    // few MiB more at most.
    assert!(sent < 16 << 20, "the broker read {sent} bytes of an unauthenticated frame");
    assert!(closed_by_server(&mut stream), "the broker stopped reading but kept the connection");
    assert!(broker.stop().success());
}

#[test]
fn a_proxy_header_before_the_upgrade_sets_the_client_address() {
    let (broker, addr) = ws_broker("listener.ws.proxy_protocol = on\n");
    let mut stream = open(addr);
    stream.write_all(b"PROXY TCP4 198.51.100.23 10.0.0.1 6000 9001\r\n").expect("sent");
    assert!(upgrade(&mut stream, "/mqtt", "").starts_with("HTTP/1.1 101"));
    stream.write_all(&frame(0x2, &connect_bytes("ws-behind-proxy"))).expect("sent");
    assert!(matches!(read_packet(&mut stream), Some(Packet::ConnAck(_))));
    let line = broker.wait_for_line("ws-behind-proxy");
    assert!(line.contains("peer=198.51.100.23:6000"), "{line}");
    assert!(broker.stop().success());
}
