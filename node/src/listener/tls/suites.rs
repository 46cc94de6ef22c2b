//! `ciphers` and `eccs`: VerneMQ's (OpenSSL's) names of cipher suites and curves, matched to
//! the ring provider's.

use rustls::crypto::SupportedKxGroup;
use rustls::{CipherSuite, NamedGroup, SupportedCipherSuite, SupportedProtocolVersion};

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
pub(super) fn choose_cipher_suites<'a>(
    list: &'a str,
    available: &[SupportedCipherSuite],
    versions: &[&SupportedProtocolVersion],
) -> Result<(Vec<SupportedCipherSuite>, Vec<&'a str>), String> {
    let (mut chosen, skipped) = pick(list, CIPHER_SUITE_NAMES, available, SupportedCipherSuite::suite);
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
pub(super) fn choose_kx_groups<'a>(
    list: &'a str,
    available: &[&'static dyn SupportedKxGroup],
) -> Result<(Vec<&'static dyn SupportedKxGroup>, Vec<&'a str>), String> {
    let (chosen, skipped) = pick(list, KX_GROUP_NAMES, available, |group| group.name());
    if chosen.is_empty() {
        return Err(format!("eccs: none of '{list}' is among this server's curves ({})", kx_group_names(available)));
    }
    Ok((chosen, skipped))
}

/// The items of `available` that `list` names (any name `names` gives an item's id, ignoring
/// case), in the list's order and without repeats, and the names that matched none.
fn pick<'a, Id: PartialEq, T: Copy>(
    list: &'a str,
    names: &[(Id, &[&str])],
    available: &[T],
    id: impl Fn(&T) -> Id,
) -> (Vec<T>, Vec<&'a str>) {
    let mut chosen: Vec<T> = Vec::new();
    let mut skipped = Vec::new();
    for name in list_items(list) {
        let known = names
            .iter()
            .find(|(_, aliases)| aliases.iter().any(|n| n.eq_ignore_ascii_case(name)))
            .and_then(|(wanted, _)| available.iter().find(|item| id(item) == *wanted));
        match known {
            Some(item) if chosen.iter().any(|c| id(c) == id(item)) => {}
            Some(item) => chosen.push(*item),
            None => skipped.push(name),
        }
    }
    (chosen, skipped)
}

/// The first names `names` gives the ids of `items`, joined by `separator`, for messages.
fn names_of<Id: PartialEq, T>(items: &[T], names: &[(Id, &[&str])], id: impl Fn(&T) -> Id, separator: &str) -> String {
    let found: Vec<&str> = items
        .iter()
        .filter_map(|item| names.iter().find(|(wanted, _)| *wanted == id(item)))
        .filter_map(|(_, aliases)| aliases.first().copied())
        .collect();
    found.join(separator)
}

/// The OpenSSL names of `suites`, for messages.
pub(super) fn cipher_suite_names(suites: &[SupportedCipherSuite]) -> String {
    names_of(suites, CIPHER_SUITE_NAMES, SupportedCipherSuite::suite, ":")
}

/// The names of `groups`, for messages.
pub(super) fn kx_group_names(groups: &[&'static dyn SupportedKxGroup]) -> String {
    names_of(groups, KX_GROUP_NAMES, |group| group.name(), ", ")
}

#[cfg(test)]
mod tests {
    use super::super::{ONLY_TLS12, ONLY_TLS13};
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
}
