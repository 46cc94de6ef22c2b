//! Client certificate chains: `depth` ([`DepthLimited`]) and the common name that
//! `use_identity_as_username` takes.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, SignatureScheme};
use thiserror::Error;

/// `depth`: a non-negative integer, the most intermediate CA certificates a client chain holds.
pub(super) fn parse_depth(value: &str) -> Result<usize, String> {
    value.trim().parse::<usize>().map_err(|_| {
        format!("depth: '{value}' is not a non-negative integer (the most intermediate CA certificates allowed)")
    })
}

/// `depth`: the client certificate verifier, also refusing a chain with more intermediate CA
/// certificates than `max_intermediates` (0: the client certificate is signed by a CA of the
/// cafile itself). rustls' verifier has no such limit.
///
/// Counted are the certificates the client sent after its own, not the path webpki builds from
/// them (rustls does not expose it). Self-issued ones (subject = issuer: a root the client
/// appends, a CA's key rollover certificate) do not count, as in Erlang's ssl; a certificate the
/// path does not need does, so a client that sends more than its chain is refused sooner than
/// the path alone would be.
#[derive(Debug)]
pub(super) struct DepthLimited {
    pub(super) inner: Arc<dyn ClientCertVerifier>,
    pub(super) max_intermediates: usize,
}

/// A client chain longer than `depth` allows.
#[derive(Error)]
#[error("the client certificate chain has {sent} intermediate CA certificates; depth allows {allowed}")]
struct ChainTooDeep {
    sent: usize,
    allowed: usize,
}

/// rustls shows a [`CertificateError::Other`] with `Debug`: the handshake failure in the log
/// reads as this sentence.
impl std::fmt::Debug for ChainTooDeep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl ClientCertVerifier for DepthLimited {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        let sent = intermediates.iter().filter(|cert| !self_issued(cert)).count();
        if sent > self.max_intermediates {
            let too_deep = ChainTooDeep { sent, allowed: self.max_intermediates };
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(too_deep)))));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }
}

/// Whether a DER certificate names itself as its issuer. One that does not parse is not.
fn self_issued(cert: &[u8]) -> bool {
    issuer_and_subject(cert).is_some_and(|(issuer, subject)| issuer == subject)
}

/// The issuer and subject names of a DER certificate, as encoded.
fn issuer_and_subject(cert: &[u8]) -> Option<(&[u8], &[u8])> {
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL,
    //   serialNumber, signature, issuer, validity, subject, ... }, ... }
    let (_, certificate, _) = der(cert)?;
    let (_, mut tbs, _) = der(certificate)?;
    let (tag, _, rest) = der(tbs)?;
    if tag == 0xa0 {
        tbs = rest;
    }
    // serialNumber, signature.
    for _ in 0..2 {
        tbs = der(tbs)?.2;
    }
    let (_, issuer, after_issuer) = der(tbs)?;
    let after_validity = der(after_issuer)?.2;
    let (_, subject, _) = der(after_validity)?;
    Some((issuer, subject))
}

/// The subject common name of a DER certificate (its first `CN`), for
/// `use_identity_as_username`. `None` when there is none or the certificate does not parse;
/// the handshake has verified it already, so this only reads it.
pub fn common_name(cert: &[u8]) -> Option<String> {
    // subject Name ::= SEQUENCE OF SET OF SEQUENCE { type OID, value ANY }
    let (_, mut rdns) = issuer_and_subject(cert)?;
    while !rdns.is_empty() {
        let (_, mut set, rest) = der(rdns)?;
        rdns = rest;
        while !set.is_empty() {
            let (_, attribute, rest) = der(set)?;
            set = rest;
            let (oid_tag, oid, value) = der(attribute)?;
            // id-at-commonName, 2.5.4.3.
            if oid_tag == 0x06 && oid == [0x55, 0x04, 0x03] {
                let (_, text, _) = der(value)?;
                return std::str::from_utf8(text).ok().map(str::to_owned);
            }
        }
    }
    None
}

/// One DER element: its tag, its contents, and what follows it. Only definite lengths of up to
/// four bytes, as certificates use.
fn der(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = bytes.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    let (contents, rest) = rest.split_at(len);
    Some((tag, contents, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::server::WebPkiClientVerifier;

    #[test]
    fn depth_is_a_non_negative_integer() {
        assert_eq!(parse_depth("0"), Ok(0));
        assert_eq!(parse_depth(" 3 "), Ok(3));
        for bad in ["-1", "one", "1.5", ""] {
            let err = parse_depth(bad).unwrap_err();
            assert!(err.starts_with("depth: "), "{err}");
        }
    }

    /// A root CA, an intermediate CA it signed, and a client certificate the intermediate signed.
    fn chain() -> (CertificateDer<'static>, CertificateDer<'static>, CertificateDer<'static>) {
        let ca = |name: &str| {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params.distinguished_name.push(rcgen::DnType::CommonName, name);
            params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
            params
        };
        let root =
            rcgen::CertifiedIssuer::self_signed(ca("root"), rcgen::KeyPair::generate().expect("key")).expect("root");
        let intermediate =
            rcgen::CertifiedIssuer::signed_by(ca("intermediate"), rcgen::KeyPair::generate().expect("key"), &root)
                .expect("intermediate");
        let mut params = rcgen::CertificateParams::new(vec!["client".to_string()]).expect("params");
        params.distinguished_name.push(rcgen::DnType::CommonName, "client");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let leaf = params.signed_by(&rcgen::KeyPair::generate().expect("key"), &intermediate).expect("leaf");
        (root.der().clone(), intermediate.der().clone(), leaf.der().clone())
    }

    #[test]
    fn depth_refuses_chains_with_more_intermediates_not_counting_a_root_sent_along() {
        let (root, intermediate, leaf) = chain();
        assert!(self_issued(&root));
        assert!(!self_issued(&intermediate) && !self_issued(&leaf));
        assert!(!self_issued(b"\x30\x03\x30\x01"));
        let mut roots = rustls::RootCertStore::empty();
        roots.add(root.clone()).expect("root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().expect("verifier");
        let limited = |max_intermediates| DepthLimited { inner: inner.clone(), max_intermediates };
        let now = UnixTime::now();
        let refused = |result: Result<ClientCertVerified, rustls::Error>| match result {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(e))) => e.to_string(),
            other => panic!("not refused for its depth: {other:?}"),
        };
        let why = refused(limited(0).verify_client_cert(&leaf, std::slice::from_ref(&intermediate), now));
        assert!(why.contains("1 intermediate") && why.contains("depth allows 0"), "{why}");
        assert!(limited(1).verify_client_cert(&leaf, std::slice::from_ref(&intermediate), now).is_ok());
        assert!(limited(1).verify_client_cert(&leaf, &[intermediate.clone(), root], now).is_ok());
        // A chain the CAs do not vouch for is refused for that, whatever the depth.
        assert!(matches!(
            limited(5).verify_client_cert(&leaf, &[], now),
            Err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer))
        ));
    }

    #[test]
    fn the_common_name_is_read_from_a_certificate_and_garbage_gives_none() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "vmq");
        params.distinguished_name.push(rcgen::DnType::CommonName, "device-42");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        assert_eq!(common_name(cert.der()).as_deref(), Some("device-42"));
        let unnamed = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        let mut unnamed = unnamed;
        unnamed.distinguished_name = rcgen::DistinguishedName::new();
        let cert = unnamed.self_signed(&key).expect("cert");
        assert_eq!(common_name(cert.der()), None);
        for garbage in [&b""[..], b"\x30", b"\x30\x84\xff\xff\xff\xff", b"\x30\x03\x30\x01"] {
            assert_eq!(common_name(garbage), None);
        }
        // Every truncation of a real certificate reads as nothing, never a panic.
        let der = cert.der().to_vec();
        for end in 0..der.len() {
            let _ = common_name(&der[..end]);
        }
    }
}
