//! TLS for `listener.ssl.<name>` and `listener.wss.<name>` (rustls, with the ring provider the
//! cluster transport uses).
//!
//! Settings, resolved through VerneMQ's listener hierarchy ([`vmq_config::TLS_IMPLEMENTED`]; the
//! others are warned about when the file is read):
//! - `certfile` and `keyfile` (PEM, required);
//! - `cafile` (the CAs client certificates are checked against), `require_certificate` (a client
//!   without a certificate signed by them is refused in the handshake; off: one is checked when
//!   sent), `crlfile` (revoked client certificates) and `depth` (the most intermediate CA
//!   certificates a client's chain may hold; see [`DepthLimited`]);
//! - `tls_version` (`tlsv1.2` or `tlsv1.3`: only that version; unset: both);
//! - `ciphers`, an OpenSSL cipher list (`ECDHE-ECDSA-AES256-GCM-SHA384:...`; IANA and rustls
//!   names work too), and `eccs`, the named curves for the key exchange (`[secp384r1, x25519]`).
//!   Both narrow the ring provider's suites and groups; names it lacks (the CBC, RSA key
//!   exchange and PSK suites VerneMQ's examples list, brainpool curves, ...) are skipped with a
//!   warning so that a configuration written for VerneMQ still starts, and a list of which
//!   nothing is usable stops the listener. Unset: every suite and group of the provider.
//!
//! Files replaced on disk are picked up for new connections (checked at most once a second, on
//! accept); open connections keep theirs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, SupportedKxGroup};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, CipherSuite, DigitallySignedStruct, DistinguishedName, NamedGroup, OtherError, ServerConfig,
    SignatureScheme, SupportedCipherSuite, SupportedProtocolVersion,
};
use thiserror::Error;
use tracing::{info, warn};

use super::ListenerSpec;

/// `tls_version = tlsv1.2`.
static ONLY_TLS12: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
/// `tls_version = tlsv1.3`.
static ONLY_TLS13: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];

/// How often the files are looked at for changes, at most.
const RECHECK: Duration = Duration::from_secs(1);

/// The names a `ciphers` list may give each suite of the ring provider, matched ignoring case:
/// OpenSSL's first (those of VerneMQ's documentation; for TLS 1.3 OpenSSL takes IANA's), then
/// the other of IANA's and rustls' (which differ only in rustls' `TLS13_` prefix).
const CIPHER_SUITE_NAMES: &[(CipherSuite, &[&str])] = &[
    (
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        &["ECDHE-ECDSA-AES256-GCM-SHA384", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"],
    ),
    (
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        &["ECDHE-ECDSA-AES128-GCM-SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"],
    ),
    (
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        &["ECDHE-ECDSA-CHACHA20-POLY1305", "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"],
    ),
    (
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        &["ECDHE-RSA-AES256-GCM-SHA384", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"],
    ),
    (
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        &["ECDHE-RSA-AES128-GCM-SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"],
    ),
    (
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        &["ECDHE-RSA-CHACHA20-POLY1305", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"],
    ),
    (CipherSuite::TLS13_AES_256_GCM_SHA384, &["TLS_AES_256_GCM_SHA384", "TLS13_AES_256_GCM_SHA384"]),
    (CipherSuite::TLS13_AES_128_GCM_SHA256, &["TLS_AES_128_GCM_SHA256", "TLS13_AES_128_GCM_SHA256"]),
    (CipherSuite::TLS13_CHACHA20_POLY1305_SHA256, &["TLS_CHACHA20_POLY1305_SHA256", "TLS13_CHACHA20_POLY1305_SHA256"]),
];

/// The names an `eccs` list may give each key exchange group of the ring provider: Erlang's and
/// OpenSSL's (`prime256v1` is OpenSSL's name for secp256r1), then NIST's. Matched ignoring case.
const KX_GROUP_NAMES: &[(NamedGroup, &[&str])] = &[
    (NamedGroup::X25519, &["x25519"]),
    (NamedGroup::secp256r1, &["secp256r1", "prime256v1", "P-256"]),
    (NamedGroup::secp384r1, &["secp384r1", "P-384"]),
];

/// Why a TLS listener cannot run.
#[derive(Debug, Error)]
#[error("{key}: {why}")]
pub struct TlsSetupError {
    /// `listener.ssl.<name>`.
    pub key: String,
    /// What is wrong.
    pub why: String,
}

/// A TLS listener's settings and its current server configuration.
#[derive(Debug)]
pub struct TlsListener {
    key: String,
    files: Files,
    handshake: Handshake,
    /// `use_identity_as_username`: the client certificate's common name is the user name.
    pub use_identity_as_username: bool,
    current: RwLock<Arc<ServerConfig>>,
    /// When the files were last looked at, and their modification times then.
    checked: Mutex<(Instant, Vec<Option<SystemTime>>)>,
}

#[derive(Debug, Clone)]
struct Files {
    certfile: PathBuf,
    keyfile: PathBuf,
    cafile: Option<PathBuf>,
    crlfile: Option<PathBuf>,
}

impl Files {
    fn all(&self) -> impl Iterator<Item = &Path> {
        [Some(&self.certfile), Some(&self.keyfile), self.cafile.as_ref(), self.crlfile.as_ref()]
            .into_iter()
            .flatten()
            .map(PathBuf::as_path)
    }

    fn modified(&self) -> Vec<Option<SystemTime>> {
        self.all().map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok()).collect()
    }
}

/// The settings besides the files, read once: a reload only reads the files again.
#[derive(Debug)]
struct Handshake {
    require_certificate: bool,
    versions: &'static [&'static SupportedProtocolVersion],
    /// The ring provider narrowed to `ciphers` and `eccs`.
    provider: Arc<CryptoProvider>,
    /// `depth`, when set.
    max_intermediates: Option<usize>,
}

impl TlsListener {
    /// Reads `spec`'s TLS settings and files; the error names the listener and what is wrong.
    pub fn new(spec: &ListenerSpec) -> Result<TlsListener, TlsSetupError> {
        let key = spec.key();
        let err = |why: String| TlsSetupError { key: key.clone(), why };
        let setting = |name: &str| spec.transport_settings.get(name).map(String::as_str).filter(|v| !v.is_empty());
        let path = |name: &str| setting(name).map(PathBuf::from);
        let files = Files {
            certfile: path("certfile").ok_or_else(|| err("certfile is required for a TLS listener".into()))?,
            keyfile: path("keyfile").ok_or_else(|| err("keyfile is required for a TLS listener".into()))?,
            cafile: path("cafile"),
            crlfile: path("crlfile"),
        };
        let require_certificate = match setting("require_certificate") {
            None | Some("off") => false,
            Some("on") => true,
            Some(other) => {
                return Err(err(format!("require_certificate: '{other}' is not a flag; accepted: on or off")));
            }
        };
        let use_identity_as_username = match setting("use_identity_as_username") {
            None | Some("off") => false,
            Some("on") => true,
            Some(other) => {
                return Err(err(format!("use_identity_as_username: '{other}' is not a flag; accepted: on or off")));
            }
        };
        if use_identity_as_username && files.cafile.is_none() {
            return Err(
                err("use_identity_as_username = on needs a cafile to check client certificates against".into()),
            );
        }
        if require_certificate && files.cafile.is_none() {
            return Err(err("require_certificate = on needs a cafile to check client certificates against".into()));
        }
        let versions: &'static [&'static SupportedProtocolVersion] = match setting("tls_version") {
            None => rustls::DEFAULT_VERSIONS,
            Some("tlsv1.2") => &ONLY_TLS12,
            Some("tlsv1.3") => &ONLY_TLS13,
            Some(v @ ("tlsv1" | "tlsv1.1")) => {
                return Err(err(format!(
                    "tls_version = {v}: TLS 1.0 and 1.1 are insecure and not supported; use tlsv1.2"
                )));
            }
            Some(other) => return Err(err(format!("tls_version: '{other}' is not one of tlsv1.2, tlsv1.3"))),
        };
        let mut provider = rustls::crypto::ring::default_provider();
        if let Some(list) = setting("ciphers") {
            let (chosen, skipped) = choose_cipher_suites(list, &provider.cipher_suites, versions).map_err(&err)?;
            if !skipped.is_empty() {
                warn!(
                    listener = %key,
                    "ciphers: skipping {}: not among this server's cipher suites ({})",
                    skipped.join(", "),
                    cipher_suite_names(&provider.cipher_suites)
                );
            }
            provider.cipher_suites = chosen;
        }
        if let Some(list) = setting("eccs") {
            let (chosen, skipped) = choose_kx_groups(list, &provider.kx_groups).map_err(&err)?;
            if !skipped.is_empty() {
                warn!(
                    listener = %key,
                    "eccs: skipping {}: not among this server's curves ({})",
                    skipped.join(", "),
                    kx_group_names(&provider.kx_groups)
                );
            }
            provider.kx_groups = chosen;
        }
        let max_intermediates = setting("depth").map(parse_depth).transpose().map_err(&err)?;
        if max_intermediates.is_some() && files.cafile.is_none() {
            warn!(listener = %key, "depth has no effect without a cafile: client certificates are not checked");
        }
        let handshake = Handshake { require_certificate, versions, provider: Arc::new(provider), max_intermediates };
        let config = build(&files, &handshake).map_err(err)?;
        let checked = Mutex::new((Instant::now(), files.modified()));
        Ok(TlsListener {
            key,
            files,
            handshake,
            use_identity_as_username,
            current: RwLock::new(Arc::new(config)),
            checked,
        })
    }

    /// The configuration for a new connection: the files read again first when one of them
    /// changed since the last look (at most once per [`RECHECK`]). A change that does not load
    /// is logged and the previous configuration stays.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.reload_if_changed();
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn reload_if_changed(&self) {
        let mut checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
        if checked.0.elapsed() < RECHECK {
            return;
        }
        let modified = self.files.modified();
        checked.0 = Instant::now();
        if modified == checked.1 {
            return;
        }
        checked.1 = modified;
        match build(&self.files, &self.handshake) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
                info!(listener = %self.key, "TLS certificate files changed: new connections use them");
            }
            Err(why) => {
                warn!(listener = %self.key, "TLS files changed but cannot be used ({why}); keeping the previous ones")
            }
        }
    }
}

fn build(files: &Files, handshake: &Handshake) -> Result<ServerConfig, String> {
    let provider = &handshake.provider;
    let chain =
        crate::pem::certificates(&files.certfile).map_err(|e| format!("certfile {}: {e}", files.certfile.display()))?;
    let key = PrivateKeyDer::from_pem_file(&files.keyfile)
        .map_err(|e| format!("keyfile {}: {e}", files.keyfile.display()))?;
    // A TLS 1.2 suite names the key type it signs with (ECDHE-ECDSA, ECDHE-RSA): a `ciphers`
    // list of the other kind would leave a TLS 1.2-only listener refusing every handshake.
    let algorithm = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| format!("keyfile {}: {e}", files.keyfile.display()))?
        .algorithm();
    let signs = |suite: &SupportedCipherSuite| {
        handshake.versions.contains(&suite.version()) && suite.usable_for_signature_algorithm(algorithm)
    };
    if !provider.cipher_suites.iter().any(signs) {
        return Err(format!(
            "ciphers: none of the cipher suites enabled ({}) works with the {algorithm:?} key of keyfile {}",
            cipher_suite_names(&provider.cipher_suites),
            files.keyfile.display()
        ));
    }
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(handshake.versions)
        .map_err(|e| format!("tls_version: {e}"))?;
    let builder = match &files.cafile {
        None => builder.with_no_client_auth(),
        Some(cafile) => builder.with_client_cert_verifier(client_verifier(files, cafile, handshake)?),
    };
    builder.with_single_cert(chain, key).map_err(|e| format!("certfile/keyfile: {e}"))
}

fn client_verifier(files: &Files, cafile: &Path, handshake: &Handshake) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let roots = crate::pem::roots(cafile).map_err(|e| format!("cafile {}: {e}", cafile.display()))?;
    let mut verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), handshake.provider.clone());
    if let Some(crlfile) = &files.crlfile {
        let crls = CertificateRevocationListDer::pem_file_iter(crlfile)
            .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("crlfile {}: {e}", crlfile.display()))?;
        verifier = verifier.with_crls(crls);
    }
    if !handshake.require_certificate {
        verifier = verifier.allow_unauthenticated();
    }
    let verifier = verifier.build().map_err(|e| format!("cafile {}: {e}", cafile.display()))?;
    Ok(match handshake.max_intermediates {
        None => verifier,
        Some(max_intermediates) => Arc::new(DepthLimited { inner: verifier, max_intermediates }),
    })
}

/// The items of a `ciphers` or `eccs` list: OpenSSL separates them by colons, commas or spaces,
/// and VerneMQ's `eccs` examples put them in brackets (`[secp384r1, x25519]`).
fn list_items(list: &str) -> impl Iterator<Item = &str> {
    let list = list.trim();
    let list = list.strip_prefix('[').and_then(|l| l.strip_suffix(']')).unwrap_or(list);
    list.split([':', ',', ' ', '\t']).filter(|item| !item.is_empty())
}

/// `ciphers`: the suites of `available` that `list` names, in its order, and the names skipped.
///
/// OpenSSL's cipher list governs TLS 1.2 and below; TLS 1.3 suites are a setting of their own
/// (`-ciphersuites`) that a VerneMQ configuration has no key for. So a list without a TLS 1.3
/// suite leaves TLS 1.3 its default suites when `versions` allows it (all of them AEADs with
/// forward secrecy, nothing a legacy list would mean to exclude); a list naming some TLS 1.3
/// suite restricts TLS 1.3 to those. Refused: a list naming no suite of `available`, and one
/// whose suites all belong to a version `versions` excludes.
fn choose_cipher_suites<'a>(
    list: &'a str,
    available: &[SupportedCipherSuite],
    versions: &[&SupportedProtocolVersion],
) -> Result<(Vec<SupportedCipherSuite>, Vec<&'a str>), String> {
    let mut chosen: Vec<SupportedCipherSuite> = Vec::new();
    let mut skipped = Vec::new();
    for name in list_items(list) {
        let known = CIPHER_SUITE_NAMES
            .iter()
            .find(|(_, names)| names.iter().any(|n| n.eq_ignore_ascii_case(name)))
            .and_then(|(id, _)| available.iter().find(|suite| suite.suite() == *id));
        match known {
            Some(suite) if chosen.iter().any(|c| c.suite() == suite.suite()) => {}
            Some(suite) => chosen.push(*suite),
            None => skipped.push(name),
        }
    }
    if chosen.is_empty() {
        return Err(format!(
            "ciphers: none of '{list}' is among this server's cipher suites ({})",
            cipher_suite_names(available)
        ));
    }
    let tls13 = &rustls::version::TLS13;
    if versions.contains(&tls13) && !chosen.iter().any(|suite| suite.version() == tls13) {
        chosen.extend(available.iter().filter(|suite| suite.version() == tls13));
    }
    if !chosen.iter().any(|suite| versions.contains(&suite.version())) {
        return Err(format!(
            "ciphers: '{list}' names TLS 1.3 suites only, but tls_version allows TLS 1.2 only; \
             name some of {}",
            cipher_suite_names(available)
        ));
    }
    Ok((chosen, skipped))
}

/// `eccs`: the key exchange groups of `available` that `list` names, in its order, and the
/// names skipped; a list naming none of them is refused. Erlang's `eccs` governs TLS 1.2 only
/// (its TLS 1.3 groups are another option VerneMQ has no key for); here, as with OpenSSL's
/// groups list, the curves are those of TLS 1.3 too, so that the list is the whole choice.
fn choose_kx_groups<'a>(
    list: &'a str,
    available: &[&'static dyn SupportedKxGroup],
) -> Result<(Vec<&'static dyn SupportedKxGroup>, Vec<&'a str>), String> {
    let mut chosen: Vec<&'static dyn SupportedKxGroup> = Vec::new();
    let mut skipped = Vec::new();
    for name in list_items(list) {
        let known = KX_GROUP_NAMES
            .iter()
            .find(|(_, names)| names.iter().any(|n| n.eq_ignore_ascii_case(name)))
            .and_then(|(id, _)| available.iter().find(|group| group.name() == *id));
        match known {
            Some(group) if chosen.iter().any(|c| c.name() == group.name()) => {}
            Some(group) => chosen.push(*group),
            None => skipped.push(name),
        }
    }
    if chosen.is_empty() {
        return Err(format!("eccs: none of '{list}' is among this server's curves ({})", kx_group_names(available)));
    }
    Ok((chosen, skipped))
}

/// `depth`: a non-negative integer, the most intermediate CA certificates a client chain holds.
fn parse_depth(value: &str) -> Result<usize, String> {
    value.trim().parse::<usize>().map_err(|_| {
        format!("depth: '{value}' is not a non-negative integer (the most intermediate CA certificates allowed)")
    })
}

/// The OpenSSL names of `suites`, for messages.
fn cipher_suite_names(suites: &[SupportedCipherSuite]) -> String {
    let names: Vec<&str> = suites
        .iter()
        .filter_map(|suite| CIPHER_SUITE_NAMES.iter().find(|(id, _)| *id == suite.suite()))
        .filter_map(|(_, names)| names.first().copied())
        .collect();
    names.join(":")
}

/// The names of `groups`, for messages.
fn kx_group_names(groups: &[&'static dyn SupportedKxGroup]) -> String {
    let names: Vec<&str> = groups
        .iter()
        .filter_map(|group| KX_GROUP_NAMES.iter().find(|(id, _)| *id == group.name()))
        .filter_map(|(_, names)| names.first().copied())
        .collect();
    names.join(", ")
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
struct DepthLimited {
    inner: Arc<dyn ClientCertVerifier>,
    max_intermediates: usize,
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

    fn suite_ids(suites: &[SupportedCipherSuite]) -> Vec<CipherSuite> {
        suites.iter().map(SupportedCipherSuite::suite).collect()
    }

    fn tls13_ids() -> Vec<CipherSuite> {
        vec![
            CipherSuite::TLS13_AES_256_GCM_SHA384,
            CipherSuite::TLS13_AES_128_GCM_SHA256,
            CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
        ]
    }

    #[test]
    fn ciphers_take_openssl_iana_and_rustls_names_and_skip_what_the_provider_lacks() {
        let available = rustls::crypto::ring::default_provider().cipher_suites;
        let list = "ECDHE-RSA-CHACHA20-POLY1305:AES256-SHA:tls_ecdhe_ecdsa_with_aes_128_gcm_sha256, \
                    DES-CBC3-SHA ECDHE-RSA-CHACHA20-POLY1305:PSK-AES256-GCM-SHA384";
        let (chosen, skipped) = choose_cipher_suites(list, &available, &ONLY_TLS12).expect("usable");
        assert_eq!(
            suite_ids(&chosen),
            [
                CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
                CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            ]
        );
        assert_eq!(skipped, ["AES256-SHA", "DES-CBC3-SHA", "PSK-AES256-GCM-SHA384"]);
        let err = choose_cipher_suites("AES256-SHA:DES-CBC3-SHA", &available, rustls::DEFAULT_VERSIONS).unwrap_err();
        assert!(err.starts_with("ciphers: none of 'AES256-SHA:DES-CBC3-SHA'"), "{err}");
        assert!(err.contains("ECDHE-ECDSA-AES256-GCM-SHA384"), "the error lists what works: {err}");
    }

    #[test]
    fn a_cipher_list_without_tls13_suites_keeps_them_where_tls13_is_allowed() {
        let available = rustls::crypto::ring::default_provider().cipher_suites;
        let ecdsa = CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384;
        let (chosen, _) =
            choose_cipher_suites("ECDHE-ECDSA-AES256-GCM-SHA384", &available, rustls::DEFAULT_VERSIONS).unwrap();
        let mut expected = vec![ecdsa];
        expected.extend(tls13_ids());
        assert_eq!(suite_ids(&chosen), expected);
        let (chosen, _) = choose_cipher_suites("ECDHE-ECDSA-AES256-GCM-SHA384", &available, &ONLY_TLS12).unwrap();
        assert_eq!(suite_ids(&chosen), [ecdsa]);
        // A list naming a TLS 1.3 suite restricts TLS 1.3 to it.
        let (chosen, _) =
            choose_cipher_suites("TLS_AES_128_GCM_SHA256:ECDHE-ECDSA-AES256-GCM-SHA384", &available, &ONLY_TLS13)
                .unwrap();
        assert_eq!(suite_ids(&chosen), [CipherSuite::TLS13_AES_128_GCM_SHA256, ecdsa]);
        let (chosen, _) = choose_cipher_suites("TLS13_CHACHA20_POLY1305_SHA256", &available, &ONLY_TLS13).unwrap();
        assert_eq!(suite_ids(&chosen), [CipherSuite::TLS13_CHACHA20_POLY1305_SHA256]);
        let err = choose_cipher_suites("TLS_AES_256_GCM_SHA384", &available, &ONLY_TLS12).unwrap_err();
        assert!(err.contains("TLS 1.3 suites only"), "{err}");
    }

    #[test]
    fn eccs_take_erlang_openssl_and_nist_names_in_brackets_or_not() {
        let available = rustls::crypto::ring::default_provider().kx_groups;
        let names = |groups: &[&'static dyn SupportedKxGroup]| groups.iter().map(|g| g.name()).collect::<Vec<_>>();
        let (chosen, skipped) = choose_kx_groups("[brainpoolP384r1, secp384r1, sect283k1]", &available).unwrap();
        assert_eq!(names(&chosen), [NamedGroup::secp384r1]);
        assert_eq!(skipped, ["brainpoolP384r1", "sect283k1"]);
        let (chosen, skipped) = choose_kx_groups("X25519:prime256v1:P-384:secp256r1", &available).unwrap();
        assert_eq!(names(&chosen), [NamedGroup::X25519, NamedGroup::secp256r1, NamedGroup::secp384r1]);
        assert!(skipped.is_empty());
        let err = choose_kx_groups("[sect571k1,secp521r1,brainpoolP512r1]", &available).unwrap_err();
        assert!(err.starts_with("eccs: none of") && err.contains("secp384r1"), "{err}");
    }

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
