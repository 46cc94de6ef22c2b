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

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{ServerConfig, SupportedCipherSuite, SupportedProtocolVersion};
use thiserror::Error;
use tracing::{info, warn};

use super::ListenerSpec;

mod client_chain;
mod suites;

pub use client_chain::common_name;
use client_chain::{DepthLimited, parse_depth};
use suites::{choose_cipher_suites, choose_kx_groups, cipher_suite_names, kx_group_names};

/// `tls_version = tlsv1.2`.
static ONLY_TLS12: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS12];
/// `tls_version = tlsv1.3`.
static ONLY_TLS13: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];

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
        // Names rustls lacks are skipped with a warning, so that a list written for VerneMQ
        // (full of CBC and PSK suites) still starts.
        let warn_skipped = |setting: &str, skipped: &[&str], available: String| {
            if !skipped.is_empty() {
                warn!(listener = %key, "{setting}: skipping {}: this server has only {available}", skipped.join(", "));
            }
        };
        if let Some(list) = setting("ciphers") {
            let (chosen, skipped) = choose_cipher_suites(list, &provider.cipher_suites, versions).map_err(&err)?;
            warn_skipped("ciphers", &skipped, cipher_suite_names(&provider.cipher_suites));
            provider.cipher_suites = chosen;
        }
        if let Some(list) = setting("eccs") {
            let (chosen, skipped) = choose_kx_groups(list, &provider.kx_groups).map_err(&err)?;
            warn_skipped("eccs", &skipped, kx_group_names(&provider.kx_groups));
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
