//! The hello each side of a new cluster connection sends, and the cookie MAC that
//! authenticates it.
//!
//! VerneMQ's `vmq_cluster_node` opens a link with `"vmq-connect" <<L:32>> term_to_binary(node())`
//! and relies on the Erlang distribution cookie for authentication. Here the proof of the
//! shared `distributed_cookie` travels in the hello itself: an HMAC-SHA256 keyed by the cookie
//! over keying material exported from this connection's TLS session (RFC 5705 / RFC 8446
//! §7.5), the sender's role and the hello body. Because the exported material is unique per TLS
//! session, a recorded hello is useless on another connection (no replay), and a man in the
//! middle terminating TLS on both sides sees two different sessions, so the MAC it relays does
//! not verify (no relay). The role byte stops a peer from reflecting our own hello back to us.
//!
//! Wire format (all integers big-endian), pinned by the golden tests below:
//!
//! ```text
//! u16   body length (everything after this field)
//! [4]   magic "VMQC"
//! u16   protocol version
//! u16   node name length, then the node name (UTF-8, `name@host`)
//! u8    backend name length, then the backend name (`vmq_swc` / `vmq_plumtree`)
//! [32]  HMAC-SHA256(cookie, MAC_DOMAIN || role || exported keying material || body before MAC)
//! ```

use ring::hmac;
use thiserror::Error;
use vmq_storage::metadata::NodeId;

/// The protocol version this node speaks; a peer with another version is refused. Version 2:
/// the `Publish` stream carries numbered, acknowledged frames and the `Control` stream exists.
/// Version 3: forwarded publishes are written in the compact format 2 of
/// `cluster::wire::publish`, which a version 2 node cannot read (it would acknowledge and drop
/// them).
pub const PROTOCOL_VERSION: u16 = 3;
/// The first bytes of every hello body.
pub const MAGIC: [u8; 4] = *b"VMQC";
/// Length of the cookie MAC (HMAC-SHA256).
pub const MAC_LEN: usize = 32;
/// Largest hello body accepted; a longer length field is malformed.
pub const MAX_HELLO_LEN: usize = 1024;
/// Longest node name accepted in a hello.
pub const MAX_NODE_NAME_LEN: usize = 255;
/// The TLS exporter label (RFC 5705 §4) for the cookie MAC's keying material.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-vmq-rs-cluster-cookie";
/// Bytes of keying material exported for the MAC.
pub const EXPORTED_LEN: usize = 32;
/// Domain separation: the MAC key (the cookie) may be reused elsewhere.
const MAC_DOMAIN: &[u8] = b"vmq-rs cluster hello v1";

/// Which side of the connection sent a hello; part of the MAC so hellos cannot be reflected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The node that opened the QUIC connection.
    Dialer,
    /// The node that accepted it.
    Acceptor,
}

impl Role {
    fn byte(self) -> u8 {
        match self {
            Role::Dialer => 0x01,
            Role::Acceptor => 0x02,
        }
    }
}

/// What a node says about itself when a connection opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The sender's protocol version ([`PROTOCOL_VERSION`]).
    pub version: u16,
    /// The sender's node name.
    pub node: NodeId,
    /// The sender's metadata backend, `vmq_swc` or `vmq_plumtree`.
    pub backend: String,
}

/// Why a hello could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HelloError {
    /// Fewer bytes than the format needs.
    #[error("hello truncated")]
    Truncated,
    /// The body does not start with [`MAGIC`]: not a vmq-rs cluster node.
    #[error("hello has a wrong magic, not a vmq-rs cluster node")]
    BadMagic,
    /// The length field exceeds [`MAX_HELLO_LEN`].
    #[error("hello of {0} bytes exceeds the maximum of {MAX_HELLO_LEN}")]
    TooLong(usize),
    /// The node name is empty, too long, not UTF-8 or not `name@host`.
    #[error("hello carries an invalid node name")]
    BadNodeName,
    /// The backend name is not UTF-8.
    #[error("hello carries an invalid backend name")]
    BadBackend,
    /// Bytes follow the MAC.
    #[error("hello has {0} trailing bytes")]
    Trailing(usize),
}

/// A decoded hello with its MAC, not verified yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedHello {
    /// The decoded fields.
    pub hello: Hello,
    /// The MAC as received.
    pub mac: [u8; MAC_LEN],
    /// The body bytes the MAC covers (magic up to the MAC).
    pub signed: Vec<u8>,
}

impl Hello {
    /// This node's hello.
    pub fn new(node: NodeId, backend: impl Into<String>) -> Self {
        Self { version: PROTOCOL_VERSION, node, backend: backend.into() }
    }

    /// The body without the length field and without the MAC: what the MAC covers.
    fn signed_body(&self) -> Vec<u8> {
        let name = self.node.as_str().as_bytes();
        let backend = self.backend.as_bytes();
        let mut out = Vec::with_capacity(4 + 2 + 2 + name.len() + 1 + backend.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&self.version.to_be_bytes());
        // Lengths are bounded by MAX_NODE_NAME_LEN / u8::MAX: names are validated by `encode`.
        out.extend_from_slice(&(name.len() as u16).to_be_bytes());
        out.extend_from_slice(name);
        out.push(backend.len() as u8);
        out.extend_from_slice(backend);
        out
    }

    /// The full wire form (length field, body, MAC) for `role`, keyed by `cookie` over the
    /// connection's exported keying material `exported`. `None` if the node name or backend
    /// name is too long to encode.
    pub fn encode(&self, cookie: &[u8], role: Role, exported: &[u8]) -> Option<Vec<u8>> {
        if self.node.as_str().len() > MAX_NODE_NAME_LEN || self.backend.len() > usize::from(u8::MAX) {
            return None;
        }
        let body = self.signed_body();
        let mac = compute_mac(cookie, role, exported, &body);
        let len = u16::try_from(body.len() + MAC_LEN).ok()?;
        let mut out = Vec::with_capacity(2 + usize::from(len));
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&body);
        out.extend_from_slice(&mac);
        Some(out)
    }
}

/// The body length announced by a hello's first two bytes, checked against
/// [`MAX_HELLO_LEN`].
pub fn decode_len(prefix: [u8; 2]) -> Result<usize, HelloError> {
    let len = usize::from(u16::from_be_bytes(prefix));
    if len > MAX_HELLO_LEN {
        return Err(HelloError::TooLong(len));
    }
    Ok(len)
}

/// Decodes the magic and the version only, so a peer speaking another version gets a
/// "version mismatch" rather than "malformed" even if the rest of its format changed.
pub fn decode_version(body: &[u8]) -> Result<u16, HelloError> {
    let mut r = Reader(body);
    if r.take(4)? != MAGIC {
        return Err(HelloError::BadMagic);
    }
    r.u16()
}

/// Decodes a hello body (everything after the length field).
pub fn decode(body: &[u8]) -> Result<ReceivedHello, HelloError> {
    let version = decode_version(body)?;
    let mut r = Reader(&body[6..]);
    let name_len = usize::from(r.u16()?);
    if name_len == 0 || name_len > MAX_NODE_NAME_LEN {
        return Err(HelloError::BadNodeName);
    }
    let name = std::str::from_utf8(r.take(name_len)?).map_err(|_| HelloError::BadNodeName)?;
    let valid_name = name.split_once('@').is_some_and(|(n, h)| !n.is_empty() && !h.is_empty())
        && !name.chars().any(|c| c.is_whitespace() || c.is_control());
    if !valid_name {
        return Err(HelloError::BadNodeName);
    }
    let backend_len = usize::from(r.u8()?);
    let backend = std::str::from_utf8(r.take(backend_len)?).map_err(|_| HelloError::BadBackend)?;
    let signed_len = body.len() - r.0.len();
    let mut mac = [0u8; MAC_LEN];
    mac.copy_from_slice(r.take(MAC_LEN)?);
    if !r.0.is_empty() {
        return Err(HelloError::Trailing(r.0.len()));
    }
    Ok(ReceivedHello {
        hello: Hello { version, node: NodeId::new(name), backend: backend.to_owned() },
        mac,
        signed: body[..signed_len].to_vec(),
    })
}

impl ReceivedHello {
    /// Whether the MAC proves the sender, in `role`, knows `cookie` and holds this TLS session.
    /// Constant-time comparison (`ring::hmac::verify`).
    pub fn verify(&self, cookie: &[u8], role: Role, exported: &[u8]) -> bool {
        let key = hmac::Key::new(hmac::HMAC_SHA256, cookie);
        hmac::verify(&key, &mac_input(role, exported, &self.signed), &self.mac).is_ok()
    }
}

/// HMAC-SHA256 keyed by the cookie over the domain label, role, keying material and body.
pub fn compute_mac(cookie: &[u8], role: Role, exported: &[u8], body: &[u8]) -> [u8; MAC_LEN] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, cookie);
    let tag = hmac::sign(&key, &mac_input(role, exported, body));
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(tag.as_ref());
    out
}

fn mac_input(role: Role, exported: &[u8], body: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(MAC_DOMAIN.len() + 1 + exported.len() + body.len());
    input.extend_from_slice(MAC_DOMAIN);
    input.push(role.byte());
    input.extend_from_slice(exported);
    input.extend_from_slice(body);
    input
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], HelloError> {
        if self.0.len() < n {
            return Err(HelloError::Truncated);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, HelloError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, HelloError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPORTED: [u8; EXPORTED_LEN] = [7u8; EXPORTED_LEN];

    fn hello() -> Hello {
        Hello::new(NodeId::new("a@h"), "vmq_swc")
    }

    #[test]
    fn hello_encoding_matches_golden_bytes() {
        let wire = hello().encode(b"vmq", Role::Dialer, &EXPORTED).unwrap();
        let mac = compute_mac(b"vmq", Role::Dialer, &EXPORTED, &wire[2..2 + 19]);
        let mut expected = vec![
            0x00, 0x33, // body length: 19 + 32
            b'V', b'M', b'Q', b'C', // magic
            0x00, 0x03, // protocol version 3
            0x00, 0x03, b'a', b'@', b'h', // node name
            0x07, b'v', b'm', b'q', b'_', b's', b'w', b'c', // backend
        ];
        expected.extend_from_slice(&mac);
        assert_eq!(wire, expected);
    }

    #[test]
    fn mac_matches_golden_value() {
        // HMAC-SHA256("vmq", "vmq-rs cluster hello v1" 0x01 [7; 32] "VMQC" 00 03 00 03 "a@h"
        // 07 "vmq_swc"): pins the MAC input layout, so a change breaks compatibility loudly.
        let wire = hello().encode(b"vmq", Role::Dialer, &EXPORTED).unwrap();
        let mac_hex: String = wire[21..].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(mac_hex, GOLDEN_MAC_HEX);
    }

    const GOLDEN_MAC_HEX: &str = "d4a750935592ce55cd3abf9c8f7ec4bb0cc0112b96033bd0132f8983c5ee63ad";

    #[test]
    fn decode_round_trips_and_verifies() {
        let wire = hello().encode(b"secret", Role::Acceptor, &EXPORTED).unwrap();
        assert_eq!(decode_len([wire[0], wire[1]]).unwrap(), wire.len() - 2);
        let received = decode(&wire[2..]).unwrap();
        assert_eq!(received.hello, hello());
        assert!(received.verify(b"secret", Role::Acceptor, &EXPORTED));
    }

    #[test]
    fn mac_fails_with_wrong_cookie_role_or_session() {
        let wire = hello().encode(b"secret", Role::Dialer, &EXPORTED).unwrap();
        let received = decode(&wire[2..]).unwrap();
        assert!(!received.verify(b"other", Role::Dialer, &EXPORTED));
        assert!(!received.verify(b"secret", Role::Acceptor, &EXPORTED));
        assert!(!received.verify(b"secret", Role::Dialer, &[8u8; EXPORTED_LEN]));
    }

    #[test]
    fn mac_fails_when_body_is_altered() {
        let mut wire = hello().encode(b"secret", Role::Dialer, &EXPORTED).unwrap();
        // Change the backend name's last byte: still decodes, no longer verifies.
        wire[20] = b'x';
        let received = decode(&wire[2..]).unwrap();
        assert_eq!(received.hello.backend, "vmq_swx");
        assert!(!received.verify(b"secret", Role::Dialer, &EXPORTED));
    }

    #[test]
    fn malformed_hellos_are_rejected() {
        let wire = hello().encode(b"k", Role::Dialer, &EXPORTED).unwrap();
        let body = &wire[2..];
        assert_eq!(decode(&body[..body.len() - 1]), Err(HelloError::Truncated));
        let mut trailing = body.to_vec();
        trailing.push(0);
        assert_eq!(decode(&trailing), Err(HelloError::Trailing(1)));
        let mut magic = body.to_vec();
        magic[0] = b'X';
        assert_eq!(decode(&magic), Err(HelloError::BadMagic));
        assert_eq!(decode(&[]), Err(HelloError::Truncated));
        assert_eq!(decode_len([0xff, 0xff]), Err(HelloError::TooLong(0xffff)));
    }

    #[test]
    fn node_names_must_be_name_at_host() {
        for name in ["nohost", "@h", "a@", "a b@h", ""] {
            let mut body = Vec::new();
            body.extend_from_slice(&MAGIC);
            body.extend_from_slice(&1u16.to_be_bytes());
            body.extend_from_slice(&(name.len() as u16).to_be_bytes());
            body.extend_from_slice(name.as_bytes());
            body.push(0);
            body.extend_from_slice(&[0u8; MAC_LEN]);
            assert_eq!(decode(&body), Err(HelloError::BadNodeName), "{name:?}");
        }
    }

    #[test]
    fn version_is_readable_before_the_rest() {
        let mut body = Vec::new();
        body.extend_from_slice(&MAGIC);
        body.extend_from_slice(&9u16.to_be_bytes());
        body.extend_from_slice(b"a format from the future");
        assert_eq!(decode_version(&body), Ok(9));
    }

    #[test]
    fn overlong_names_are_not_encoded() {
        let long = format!("{}@h", "a".repeat(MAX_NODE_NAME_LEN));
        assert!(Hello::new(NodeId::new(long), "vmq_swc").encode(b"k", Role::Dialer, &[]).is_none());
    }
}
