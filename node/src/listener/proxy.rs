//! The PROXY protocol (HAProxy's, versions 1 and 2) on listeners with `proxy_protocol = on`: a
//! load balancer in front of the broker starts each connection with a header naming the client's
//! address, and with version 2 the TLS client certificate's common name it terminated.
//!
//! The header is read exactly, byte by byte where its length is not known yet, so that nothing
//! of the MQTT (or TLS) bytes behind it is consumed; it must arrive within
//! `mqtt.connect.timeout` and a malformed one closes the connection.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The version 2 signature.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest version 1 line, CRLF included.
const V1_MAX: usize = 107;
/// The longest version 2 address block and TLVs accepted: a load balancer sends a few hundred
/// bytes; the protocol would allow 64 KiB from anyone who can open a connection.
const V2_MAX: usize = 4096;
/// `PP2_TYPE_SSL`, and its sub-TLV `PP2_SUBTYPE_SSL_CN`.
const PP2_TYPE_SSL: u8 = 0x20;
const PP2_SUBTYPE_SSL_CN: u8 = 0x22;

/// What a PROXY header said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyHeader {
    /// The client's address; `None` for `UNKNOWN` (v1) or `LOCAL` (v2, the balancer's own
    /// health check): the connection's own peer address stands.
    pub source: Option<SocketAddr>,
    /// The common name of the client certificate the balancer verified (v2 `PP2_SUBTYPE_SSL_CN`).
    pub tls_common_name: Option<String>,
}

/// Why a PROXY header was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProxyError {
    /// The connection did not start with a PROXY header.
    #[error("no PROXY protocol header (proxy_protocol is on for this listener)")]
    Missing,
    /// A version 1 line that does not parse.
    #[error("malformed PROXY v1 header: {0}")]
    V1(&'static str),
    /// A version 2 header that does not parse.
    #[error("malformed PROXY v2 header: {0}")]
    V2(&'static str),
    /// The connection ended or failed within the header.
    #[error("connection ended within the PROXY header")]
    Closed,
}

/// Reads one PROXY header from `stream`, and not a byte more.
pub async fn read_header<S: AsyncRead + Unpin>(stream: &mut S) -> Result<ProxyHeader, ProxyError> {
    let mut start = [0u8; 12];
    stream.read_exact(&mut start).await.map_err(|_| ProxyError::Closed)?;
    if start == V2_SIGNATURE {
        let mut fixed = [0u8; 4];
        stream.read_exact(&mut fixed).await.map_err(|_| ProxyError::Closed)?;
        let len = usize::from(u16::from_be_bytes([fixed[2], fixed[3]]));
        if len > V2_MAX {
            return Err(ProxyError::V2("longer than 4096 bytes"));
        }
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).await.map_err(|_| ProxyError::Closed)?;
        return parse_v2(fixed[0], fixed[1], &body);
    }
    if !start.starts_with(b"PROXY ") {
        return Err(ProxyError::Missing);
    }
    let mut line = start.to_vec();
    while !line.ends_with(b"\r\n") {
        if line.len() >= V1_MAX {
            return Err(ProxyError::V1("no CRLF within 107 bytes"));
        }
        let byte = stream.read_u8().await.map_err(|_| ProxyError::Closed)?;
        line.push(byte);
    }
    parse_v1(&line)
}

/// `PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\r\n` or `PROXY UNKNOWN ...\r\n`.
fn parse_v1(line: &[u8]) -> Result<ProxyHeader, ProxyError> {
    let text = std::str::from_utf8(line).map_err(|_| ProxyError::V1("not ASCII"))?;
    let text = text.strip_suffix("\r\n").ok_or(ProxyError::V1("no CRLF"))?;
    let mut parts = text.split(' ');
    if parts.next() != Some("PROXY") {
        return Err(ProxyError::V1("does not start with PROXY"));
    }
    match parts.next() {
        Some("UNKNOWN") => return Ok(ProxyHeader::default()),
        Some("TCP4" | "TCP6") => {}
        _ => return Err(ProxyError::V1("protocol is not TCP4, TCP6 or UNKNOWN")),
    }
    let fields: Vec<&str> = parts.collect();
    let [src, _dst, sport, _dport] = fields.as_slice() else {
        return Err(ProxyError::V1("expected source, destination and both ports"));
    };
    let ip: IpAddr = src.parse().map_err(|_| ProxyError::V1("source address"))?;
    let port: u16 = sport.parse().map_err(|_| ProxyError::V1("source port"))?;
    Ok(ProxyHeader { source: Some(SocketAddr::new(ip, port)), tls_common_name: None })
}

/// The version 2 header after its signature: version and command, family and protocol, and
/// the address block with its TLVs.
fn parse_v2(version_command: u8, family: u8, body: &[u8]) -> Result<ProxyHeader, ProxyError> {
    if version_command >> 4 != 2 {
        return Err(ProxyError::V2("version is not 2"));
    }
    let local = match version_command & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(ProxyError::V2("command is neither LOCAL nor PROXY")),
    };
    let (source, addresses_len) = match family {
        // TCP over IPv4, IPv6.
        0x11 => {
            let b = body.get(..12).ok_or(ProxyError::V2("IPv4 address block too short"))?;
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            (SocketAddr::new(IpAddr::V4(ip), u16::from_be_bytes([b[8], b[9]])), 12)
        }
        0x21 => {
            let b = body.get(..36).ok_or(ProxyError::V2("IPv6 address block too short"))?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&b[..16]);
            (SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), u16::from_be_bytes([b[32], b[33]])), 36)
        }
        // UNSPEC (a LOCAL health check) and the families a broker does not speak: no address.
        _ if local => return Ok(ProxyHeader::default()),
        _ => return Err(ProxyError::V2("family is not TCP over IPv4 or IPv6")),
    };
    let tls_common_name = common_name(body.get(addresses_len..).unwrap_or_default())?;
    Ok(ProxyHeader { source: (!local).then_some(source), tls_common_name })
}

/// The `PP2_SUBTYPE_SSL_CN` inside a `PP2_TYPE_SSL` TLV, if any.
fn common_name(mut tlvs: &[u8]) -> Result<Option<String>, ProxyError> {
    while !tlvs.is_empty() {
        let (kind, value, rest) = tlv(tlvs)?;
        tlvs = rest;
        if kind != PP2_TYPE_SSL {
            continue;
        }
        // client (1 byte) and verify (4 bytes), then sub-TLVs.
        let mut subs = value.get(5..).ok_or(ProxyError::V2("SSL TLV too short"))?;
        while !subs.is_empty() {
            let (sub, sub_value, sub_rest) = tlv(subs)?;
            subs = sub_rest;
            if sub == PP2_SUBTYPE_SSL_CN {
                let cn = std::str::from_utf8(sub_value).map_err(|_| ProxyError::V2("common name is not UTF-8"))?;
                return Ok(Some(cn.to_string()));
            }
        }
    }
    Ok(None)
}

/// One type-length-value: its type, its value, and what follows it.
fn tlv(bytes: &[u8]) -> Result<(u8, &[u8], &[u8]), ProxyError> {
    let [kind, hi, lo, rest @ ..] = bytes else { return Err(ProxyError::V2("truncated TLV")) };
    let len = usize::from(u16::from_be_bytes([*hi, *lo]));
    if rest.len() < len {
        return Err(ProxyError::V2("TLV longer than the header"));
    }
    let (value, rest) = rest.split_at(len);
    Ok((*kind, value, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v2 header for TCP over IPv4 from `src`, with `tlvs`.
    fn v2(command: u8, src: [u8; 4], sport: u16, tlvs: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&src);
        body.extend_from_slice(&[10, 0, 0, 1]);
        body.extend_from_slice(&sport.to_be_bytes());
        body.extend_from_slice(&1883u16.to_be_bytes());
        body.extend_from_slice(tlvs);
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(0x11);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    fn ssl_tlv(cn: &str) -> Vec<u8> {
        let mut sub = vec![PP2_SUBTYPE_SSL_CN];
        sub.extend_from_slice(&(cn.len() as u16).to_be_bytes());
        sub.extend_from_slice(cn.as_bytes());
        let mut value = vec![0x01, 0, 0, 0, 0];
        value.extend_from_slice(&sub);
        let mut tlv = vec![PP2_TYPE_SSL];
        tlv.extend_from_slice(&(value.len() as u16).to_be_bytes());
        tlv.extend_from_slice(&value);
        tlv
    }

    async fn read(bytes: &[u8]) -> (Result<ProxyHeader, ProxyError>, Vec<u8>) {
        let mut stream = bytes;
        let header = read_header(&mut stream).await;
        (header, stream.to_vec())
    }

    #[tokio::test]
    async fn version_1_gives_the_source_and_leaves_what_follows() {
        let (header, rest) = read(b"PROXY TCP4 203.0.113.7 10.0.0.1 4711 1883\r\n\x10\x0c").await;
        assert_eq!(header.unwrap().source, Some("203.0.113.7:4711".parse().unwrap()));
        assert_eq!(rest, b"\x10\x0c", "the MQTT bytes behind the header stay unread");
        let (header, _) = read(b"PROXY TCP6 2001:db8::1 2001:db8::2 5000 1883\r\n").await;
        assert_eq!(header.unwrap().source, Some("[2001:db8::1]:5000".parse().unwrap()));
        assert_eq!(read(b"PROXY UNKNOWN\r\n").await.0, Ok(ProxyHeader::default()));
    }

    #[tokio::test]
    async fn version_2_gives_the_source_and_the_tls_common_name() {
        let mut bytes = v2(1, [203, 0, 113, 7], 4711, &ssl_tlv("device-42"));
        bytes.extend_from_slice(b"\x10");
        let (header, rest) = read(&bytes).await;
        let header = header.unwrap();
        assert_eq!(header.source, Some("203.0.113.7:4711".parse().unwrap()));
        assert_eq!(header.tls_common_name.as_deref(), Some("device-42"));
        assert_eq!(rest, b"\x10");
        // LOCAL: the balancer's own connection, no client address.
        assert_eq!(read(&v2(0, [1, 2, 3, 4], 1, &[])).await.0.unwrap().source, None);
    }

    #[tokio::test]
    async fn malformed_headers_are_refused_with_a_reason() {
        assert_eq!(read(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c").await.0, Err(ProxyError::Missing));
        assert!(matches!(read(b"PROXY TCP4 nonsense\r\n").await.0, Err(ProxyError::V1(_))));
        assert!(matches!(read(&[b'P'; 20]).await.0, Err(ProxyError::Missing)));
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat();
        assert!(matches!(read(&long).await.0, Err(ProxyError::V1(_))));
        let truncated_tlv = v2(1, [1, 2, 3, 4], 1, &[PP2_TYPE_SSL, 0, 9, 1]);
        assert!(matches!(read(&truncated_tlv).await.0, Err(ProxyError::V2(_))));
        let mut huge = V2_SIGNATURE.to_vec();
        huge.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(matches!(read(&huge).await.0, Err(ProxyError::V2(_))));
        assert_eq!(read(&V2_SIGNATURE[..8]).await.0, Err(ProxyError::Closed));
    }
}
