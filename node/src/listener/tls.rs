//! TLS for `listener.ssl.<name>` (rustls, with the ring provider the cluster transport uses).
//!
//! Settings, resolved through VerneMQ's listener hierarchy: `certfile` and `keyfile` (PEM,
//! required), `cafile` (the CAs client certificates are checked against), `require_certificate`
//! (a client without a certificate signed by them is refused in the handshake; off: one is
//! checked when sent), `crlfile` (revoked client certificates) and `tls_version` (`tlsv1.2` or
//! `tlsv1.3`: only that version; unset: both) ([`vmq_config::TLS_IMPLEMENTED`]; the others are
//! warned about when the file is read). Files replaced on disk are picked up for new
//! connections (checked at most once a second, on accept); open connections keep theirs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use thiserror::Error;
use tracing::{info, warn};

use super::ListenerSpec;

/// `tls_version = tlsv1.2`.
static ONLY_TLS12: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
/// `tls_version = tlsv1.3`.
static ONLY_TLS13: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];

/// How often the files are looked at for changes, at most.
const RECHECK: Duration = Duration::from_secs(1);

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
    require_certificate: bool,
    /// `use_identity_as_username`: the client certificate's common name is the user name.
    pub use_identity_as_username: bool,
    versions: &'static [&'static rustls::SupportedProtocolVersion],
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
        let versions: &'static [&'static rustls::SupportedProtocolVersion] = match setting("tls_version") {
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
        let config = build(&files, require_certificate, versions).map_err(err)?;
        let checked = Mutex::new((Instant::now(), files.modified()));
        Ok(TlsListener {
            key,
            files,
            require_certificate,
            use_identity_as_username,
            versions,
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
        match build(&self.files, self.require_certificate, self.versions) {
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

fn build(
    files: &Files,
    require_certificate: bool,
    versions: &'static [&'static rustls::SupportedProtocolVersion],
) -> Result<ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain =
        crate::pem::certificates(&files.certfile).map_err(|e| format!("certfile {}: {e}", files.certfile.display()))?;
    let key = PrivateKeyDer::from_pem_file(&files.keyfile)
        .map_err(|e| format!("keyfile {}: {e}", files.keyfile.display()))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| format!("tls_version: {e}"))?;
    let builder = match &files.cafile {
        None => builder.with_no_client_auth(),
        Some(cafile) => {
            builder.with_client_cert_verifier(client_verifier(files, cafile, require_certificate, provider)?)
        }
    };
    builder.with_single_cert(chain, key).map_err(|e| format!("certfile/keyfile: {e}"))
}

fn client_verifier(
    files: &Files,
    cafile: &Path,
    require_certificate: bool,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, String> {
    let roots = crate::pem::roots(cafile).map_err(|e| format!("cafile {}: {e}", cafile.display()))?;
    let mut verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    if let Some(crlfile) = &files.crlfile {
        let crls = CertificateRevocationListDer::pem_file_iter(crlfile)
            .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("crlfile {}: {e}", crlfile.display()))?;
        verifier = verifier.with_crls(crls);
    }
    if !require_certificate {
        verifier = verifier.allow_unauthenticated();
    }
    verifier.build().map_err(|e| format!("cafile {}: {e}", cafile.display()))
}

/// The subject common name of a DER certificate (its first `CN`), for
/// `use_identity_as_username`. `None` when there is none or the certificate does not parse;
/// the handshake has verified it already, so this only reads it.
pub fn common_name(cert: &[u8]) -> Option<String> {
    // Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL,
    //   serialNumber, signature, issuer, validity, subject, ... }, ... }
    let (_, certificate, _) = der(cert)?;
    let (_, mut tbs, _) = der(certificate)?;
    let (tag, _, rest) = der(tbs)?;
    if tag == 0xa0 {
        tbs = rest;
    }
    // serialNumber, signature, issuer, validity.
    for _ in 0..4 {
        tbs = der(tbs)?.2;
    }
    // subject Name ::= SEQUENCE OF SET OF SEQUENCE { type OID, value ANY }
    let (_, mut rdns, _) = der(tbs)?;
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
