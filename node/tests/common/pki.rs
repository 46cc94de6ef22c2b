//! A test PKI: a CA and certificates it signed, written as PEM files to a temporary directory.

use std::path::PathBuf;

/// A CA, and per name a certificate it signed (for 127.0.0.1 and localhost) with its key.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    pub fn new(ca_name: &str, names: &[&str]) -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, ca_name);
        ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let ca_key = rcgen::KeyPair::generate().expect("key");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA");
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write");
        for (serial, name) in names.iter().enumerate() {
            let mut params =
                rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).expect("params");
            params.distinguished_name.push(rcgen::DnType::CommonName, *name);
            params.serial_number = Some(rcgen::SerialNumber::from((serial as u64 + 1).to_be_bytes().to_vec()));
            params.extended_key_usages =
                vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth, rcgen::ExtendedKeyUsagePurpose::ClientAuth];
            let key = rcgen::KeyPair::generate().expect("key");
            let cert = params.signed_by(&key, &*ca).expect("signed");
            std::fs::write(dir.path().join(format!("{name}.pem")), cert.pem()).expect("write");
            std::fs::write(dir.path().join(format!("{name}.key")), key.serialize_pem()).expect("write");
        }
        // A revocation list naming the certificate of `names[1]`, if any.
        if names.len() > 1 {
            let crl = rcgen::CertificateRevocationListParams {
                this_update: rcgen::date_time_ymd(2024, 1, 1),
                next_update: rcgen::date_time_ymd(2099, 1, 1),
                crl_number: rcgen::SerialNumber::from(1u64.to_be_bytes().to_vec()),
                issuing_distribution_point: None,
                revoked_certs: vec![rcgen::RevokedCertParams {
                    serial_number: rcgen::SerialNumber::from(2u64.to_be_bytes().to_vec()),
                    revocation_time: rcgen::date_time_ymd(2024, 6, 1),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                }],
                key_identifier_method: rcgen::KeyIdMethod::Sha256,
            };
            let crl = crl.signed_by(&*ca).expect("CRL");
            std::fs::write(dir.path().join("crl.pem"), crl.pem().expect("pem")).expect("write");
        }
        Pki { dir }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }
}
