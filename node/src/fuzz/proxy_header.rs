//! The PROXY protocol header reader of the listeners (`listener::proxy`).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use crate::listener::proxy::{ProxyError, ProxyHeader, read_header};

/// The version 2 signature, written out here as the specification gives it rather than taken
/// from the reader: the target checks the reader against the specification.
pub(super) const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Version 2 with the command LOCAL (the balancer's own connection) or PROXY.
pub(super) const LOCAL: u8 = 0x20;
pub(super) const PROXY: u8 = 0x21;
const PP2_TYPE_SSL: u8 = 0x20;
const PP2_SUBTYPE_SSL_CN: u8 = 0x22;

/// The input is the start of a connection. The reader must stop at the end of the header it
/// accepts (the MQTT or TLS bytes behind it belong to the connection), and what it read must
/// read back the same when written as a version 2 header, and as a version 1 line when there is
/// no TLS common name (which version 1 cannot carry).
pub fn proxy(data: &[u8]) {
    let (result, consumed) = read(data);
    let Ok(header) = result else {
        return;
    };
    assert_eq!(consumed, header_len(data), "the reader did not stop at the end of the header");
    if header.tls_common_name.is_none() {
        let line = v1(&header);
        assert_eq!(read(&line), (Ok(header.clone()), line.len()), "{header:?} as a v1 line");
    }
    let v2 = v2(&header);
    assert_eq!(read(&v2), (Ok(header.clone()), v2.len()), "{header:?} as a v2 header");
}

/// The reader's verdict on `data`, and how many bytes it took.
fn read(data: &[u8]) -> (Result<ProxyHeader, ProxyError>, usize) {
    let mut rest = data;
    let result = complete(read_header(&mut rest));
    (result, data.len() - rest.len())
}

/// Runs a future that never waits: the reader over a byte slice finds every byte ready.
fn complete<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("reading a PROXY header from memory waited"),
    }
}

/// The length of the header at the start of `data`, by the specification: a version 2 header
/// is 16 bytes and the length in bytes 14 and 15; a version 1 line ends at its first CRLF.
fn header_len(data: &[u8]) -> usize {
    match data.strip_prefix(&V2_SIGNATURE) {
        Some([_, _, hi, lo, ..]) => 16 + usize::from(u16::from_be_bytes([*hi, *lo])),
        _ => data.windows(2).position(|w| w == b"\r\n").map_or(data.len(), |at| at + 2),
    }
}

/// `header` as a version 1 line.
fn v1(header: &ProxyHeader) -> Vec<u8> {
    match header.source {
        None => b"PROXY UNKNOWN\r\n".to_vec(),
        Some(source) => {
            let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
            let ip = source.ip();
            let port = source.port();
            format!("PROXY {family} {ip} {ip} {port} {port}\r\n").into_bytes()
        }
    }
}

/// `header` as a version 2 header: PROXY with the source as both addresses, or LOCAL without
/// one; the common name in a `PP2_TYPE_SSL` TLV.
fn v2(header: &ProxyHeader) -> Vec<u8> {
    let (command, family, mut body) = match header.source {
        Some(SocketAddr::V4(a)) => (PROXY, 0x11, [&a.ip().octets()[..], &a.ip().octets(), &ports(a.port())].concat()),
        Some(SocketAddr::V6(a)) => (PROXY, 0x21, [&a.ip().octets()[..], &a.ip().octets(), &ports(a.port())].concat()),
        // The receiver ignores a LOCAL header's addresses, but its TLVs follow an address block.
        None if header.tls_common_name.is_some() => (LOCAL, 0x11, vec![0; 12]),
        None => (LOCAL, 0x00, Vec::new()),
    };
    if let Some(cn) = &header.tls_common_name {
        body.extend_from_slice(&ssl_tlv(cn.as_bytes()));
    }
    v2_header(command, family, &body)
}

fn ports(port: u16) -> [u8; 4] {
    let [hi, lo] = port.to_be_bytes();
    [hi, lo, hi, lo]
}

/// A `PP2_TYPE_SSL` TLV (client flags 1: TLS, verified) holding the common name.
pub(super) fn ssl_tlv(cn: &[u8]) -> Vec<u8> {
    let mut value = vec![0x01, 0, 0, 0, 0];
    value.extend_from_slice(&tlv(PP2_SUBTYPE_SSL_CN, cn));
    tlv(PP2_TYPE_SSL, &value)
}

/// One type-length-value; values here are far below 64 KiB.
pub(super) fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// A version 2 header: signature, version and command, family, length, body.
pub(super) fn v2_header(version_command: u8, family: u8, body: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(version_command);
    out.push(family);
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
    out
}
