//! `listener.ssl.<name>` on a real `vernemq` process, driven by `mosquitto_sub` and
//! `mosquitto_pub` over TLS: server certificates, client certificates required and refused,
//! revoked ones, the TLS version, and certificates replaced while the node runs.

mod common;

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::pki::Pki;
use common::process::{Broker, Subscribed};

/// A broker with one TLS listener `extra` configures further (its port is logged).
fn tls_broker(server: &Pki, extra: &str) -> (Broker, u16) {
    let config = format!(
        "listener.ssl.default = 127.0.0.1:0\nlistener.ssl.certfile = {}\nlistener.ssl.keyfile = {}\n{extra}",
        server.path("server.pem").display(),
        server.path("server.key").display()
    );
    let broker = Broker::start(&config);
    let port = broker.logged_addr("listening for MQTT over TLS").port();
    (broker, port)
}

/// `mosquitto_pub` over TLS, trusting `cafile`, with a client certificate if given.
fn publish(port: u16, cafile: &Path, client: Option<(&Pki, &str)>, topic: &str, message: &str) -> Output {
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-t", topic, "-m", message]);
    cmd.arg("--cafile").arg(cafile);
    if let Some((pki, name)) = client {
        cmd.arg("--cert").arg(pki.path(&format!("{name}.pem"))).arg("--key").arg(pki.path(&format!("{name}.key")));
    }
    cmd.output().expect("mosquitto_pub runs")
}

/// `mosquitto_sub` over TLS waiting for one message on `topic`, started before the publish.
/// `mosquitto_sub` over TLS for one message on `topic`, subscribed when this returns.
fn subscriber(port: u16, cafile: &Path, client: Option<(&Pki, &str)>, topic: &str) -> Subscribed {
    let port = port.to_string();
    let mut args: Vec<OsString> =
        ["-h", "127.0.0.1", "-p", &port, "-q", "1", "-t", topic, "-C", "1", "-W", "10", "--cafile"]
            .map(OsString::from)
            .to_vec();
    args.push(cafile.into());
    if let Some((pki, name)) = client {
        args.extend(["--cert".into(), pki.path(&format!("{name}.pem")).into()]);
        args.extend(["--key".into(), pki.path(&format!("{name}.key")).into()]);
    }
    let args: Vec<&OsStr> = args.iter().map(OsString::as_os_str).collect();
    Subscribed::start(&args)
}

/// Subscribes, publishes once, and returns what the subscriber printed.
fn round_trip(port: u16, cafile: &Path, client: Option<(&Pki, &str)>) -> String {
    let sub = subscriber(port, cafile, client, "tls/t");
    let published = publish(port, cafile, client, "tls/t", "over-tls");
    assert!(published.status.success(), "mosquitto_pub failed: {}", String::from_utf8_lossy(&published.stderr));
    sub.messages().join("\n")
}

fn refused(out: &Output) -> bool {
    !out.status.success()
}

#[test]
fn mosquitto_clients_publish_and_subscribe_over_tls_trusting_the_servers_ca() {
    let server = Pki::new("server CA", &["server"]);
    let (b, port) = tls_broker(&server, "");
    assert_eq!(round_trip(port, &server.path("ca.pem"), None), "over-tls");
    // A client that trusts another CA refuses the server.
    let other = Pki::new("other CA", &["x"]);
    assert!(refused(&publish(port, &other.path("ca.pem"), None, "t", "m")));
    // Plain MQTT on the TLS port is not MQTT to it: closed in the handshake.
    let plain = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "t", "-m", "m"])
        .output()
        .expect("runs");
    assert!(refused(&plain));
    b.wait_for_line("TLS handshake failed");
}

#[test]
fn require_certificate_refuses_clients_without_one_signed_by_the_cafile_or_revoked() {
    let server = Pki::new("server CA", &["server"]);
    let clients = Pki::new("client CA", &["alice", "mallory"]);
    let rogue = Pki::new("rogue CA", &["alice"]);
    let extra = format!(
        "listener.ssl.cafile = {}\nlistener.ssl.require_certificate = on\nlistener.ssl.crlfile = {}\n",
        clients.path("ca.pem").display(),
        clients.path("crl.pem").display()
    );
    let (_b, port) = tls_broker(&server, &extra);
    let cafile = server.path("ca.pem");
    assert_eq!(round_trip(port, &cafile, Some((&clients, "alice"))), "over-tls");
    assert!(refused(&publish(port, &cafile, None, "t", "no certificate")));
    assert!(refused(&publish(port, &cafile, Some((&rogue, "alice")), "t", "rogue CA")));
    assert!(refused(&publish(port, &cafile, Some((&clients, "mallory")), "t", "revoked")));
}

#[test]
fn tls_version_limits_the_handshake_to_that_version() {
    let server = Pki::new("server CA", &["server"]);
    let (_b, port) = tls_broker(&server, "listener.ssl.tls_version = tlsv1.3\n");
    let cafile = server.path("ca.pem");
    // mosquitto's --tls-version is a minimum; openssl's -tls1_2 offers TLS 1.2 alone.
    let handshake = |version: &str| {
        Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), version, "-verify_return_error"])
            .arg("-CAfile")
            .arg(&cafile)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("openssl runs")
    };
    assert!(refused(&handshake("-tls1_2")), "a TLS 1.2 client got in on a tlsv1.3 listener");
    assert!(handshake("-tls1_3").status.success(), "a TLS 1.3 client was refused");
    assert!(publish(port, &cafile, None, "t", "m").status.success());
}

#[test]
fn certificates_replaced_on_disk_are_used_for_new_connections() {
    let first = Pki::new("first CA", &["server"]);
    let (b, port) = tls_broker(&first, "");
    assert!(publish(port, &first.path("ca.pem"), None, "t", "m").status.success());
    let second = Pki::new("second CA", &["server"]);
    // Replaced as a deployment would: the new files moved over the old ones.
    for file in ["server.pem", "server.key"] {
        let staged = first.path(&format!("{file}.new"));
        std::fs::copy(second.path(file), &staged).expect("copy");
        std::fs::rename(&staged, first.path(file)).expect("rename");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !publish(port, &second.path("ca.pem"), None, "t", "m").status.success() {
        assert!(Instant::now() < deadline, "the new certificate was not used within 10 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    b.wait_for_line("TLS certificate files changed");
    assert!(refused(&publish(port, &first.path("ca.pem"), None, "t", "m")), "the old certificate is still served");
}

#[test]
fn a_tls_listener_without_its_files_stops_the_node_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let conf = dir.path().join("vernemq.conf");
    std::fs::write(
        &conf,
        format!(
            "listener.tcp.default = 127.0.0.1:0\nlistener.ssl.default = 127.0.0.1:0\n\
             listener.ssl.certfile = {0}/missing.pem\nlistener.ssl.keyfile = {0}/missing.key\n\
             listener.vmq.clustering = 127.0.0.1:0\nplatform_data_dir = {0}/data\n",
            dir.path().display()
        ),
    )
    .expect("write");
    let bin = std::env::var("VERNEMQ_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_vernemq").to_string());
    let out = Command::new(bin).args(["console", "-c"]).arg(&conf).env("NO_COLOR", "1").output().expect("runs");
    assert!(!out.status.success(), "the node started without its certificate");
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(all.contains("listener.ssl.default") && all.contains("missing.pem"), "{all}");
}

#[test]
fn use_identity_as_username_makes_the_certificates_common_name_the_user_the_acl_sees() {
    let server = Pki::new("server CA", &["server"]);
    let clients = Pki::new("client CA", &["alice", "bob"]);
    let acl = clients.path("vmq.acl");
    std::fs::write(&acl, "user alice\ntopic tls/#\n").expect("write");
    let extra = format!(
        "listener.ssl.cafile = {}\nlistener.ssl.require_certificate = on\n\
         listener.ssl.use_identity_as_username = on\nvmq_acl.acl_file = {}\n",
        clients.path("ca.pem").display(),
        acl.display()
    );
    let (_b, port) = tls_broker(&server, &extra);
    let cafile = server.path("ca.pem");
    // alice's certificate makes her `alice` to the ACL, whatever her CONNECT says.
    assert_eq!(round_trip(port, &cafile, Some((&clients, "alice"))), "over-tls");
    // bob's certificate is valid, but the ACL has nothing for `bob`: his subscription is refused.
    let out = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "tls/t", "-C", "1", "-W", "5", "-u", "alice"])
        .arg("--cafile")
        .arg(&cafile)
        .arg("--cert")
        .arg(clients.path("bob.pem"))
        .arg("--key")
        .arg(clients.path("bob.key"))
        .output()
        .expect("mosquitto_sub runs");
    let said = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(said.contains("denied"), "bob, claiming to be alice, was not refused: {said}");
}

/// `openssl s_client` to `port` trusting `cafile`, with `options` (`-tls1_2`, `-cipher ...`).
fn handshake(port: u16, cafile: &Path, options: &[&str]) -> Output {
    Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-verify_return_error"])
        .args(options)
        .arg("-CAfile")
        .arg(cafile)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl runs")
}

/// The first log line containing `needle`, from startup or waited for.
fn logged(broker: &Broker, needle: &str) -> String {
    match broker.early.iter().find(|line| common::process::strip_ansi(line).contains(needle)) {
        Some(line) => line.clone(),
        None => broker.wait_for_line(needle),
    }
}

/// Runs a node with a TLS listener (`server`'s certificate) that `extra` configures further,
/// expecting it to stop at startup; returns what it printed.
fn refused_to_start(server: &Pki, extra: &str) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let conf = dir.path().join("vernemq.conf");
    std::fs::write(
        &conf,
        format!(
            "listener.tcp.default = 127.0.0.1:0\nlistener.ssl.default = 127.0.0.1:0\n\
             listener.ssl.certfile = {}\nlistener.ssl.keyfile = {}\n\
             listener.vmq.clustering = 127.0.0.1:0\nplatform_data_dir = {}\n{extra}",
            server.path("server.pem").display(),
            server.path("server.key").display(),
            dir.path().join("data").display()
        ),
    )
    .expect("write");
    let output = std::fs::File::create(dir.path().join("output")).expect("create");
    let bin = std::env::var("VERNEMQ_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_vernemq").to_string());
    let mut node = Command::new(bin)
        .args(["console", "-c"])
        .arg(&conf)
        .env("NO_COLOR", "1")
        .stdout(output.try_clone().expect("clone"))
        .stderr(output)
        .spawn()
        .expect("runs");
    let deadline = Instant::now() + common::process::WAIT;
    let status = loop {
        if let Some(status) = node.try_wait().expect("node state") {
            break status;
        }
        if Instant::now() > deadline {
            node.kill().expect("kill");
            node.wait().expect("wait");
            panic!("the node started with {extra:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "the node exited successfully with {extra:?}");
    std::fs::read_to_string(dir.path().join("output")).expect("read")
}

#[test]
fn ciphers_limit_the_tls12_suites_and_leave_tls13_its_own() {
    let server = Pki::new("server CA", &["server"]);
    let cafile = server.path("ca.pem");
    // The test certificates have EC P-256 keys: ECDSA suites.
    let (_b, port) = tls_broker(
        &server,
        "listener.ssl.ciphers = ECDHE-ECDSA-AES256-GCM-SHA384\nlistener.ssl.tls_version = tlsv1.2\n",
    );
    let listed = handshake(port, &cafile, &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384"]);
    assert!(listed.status.success(), "the listed suite was refused: {}", String::from_utf8_lossy(&listed.stderr));
    assert!(String::from_utf8_lossy(&listed.stdout).contains("Cipher is ECDHE-ECDSA-AES256-GCM-SHA384"));
    let unlisted = handshake(port, &cafile, &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"]);
    assert!(refused(&unlisted), "a suite the list leaves out was negotiated");
    assert!(publish(port, &cafile, None, "t", "m").status.success());
    // An OpenSSL cipher list is about TLS 1.2: TLS 1.3 keeps its suites where it is allowed.
    let (_b, port) = tls_broker(&server, "listener.ssl.ciphers = ECDHE-ECDSA-AES256-GCM-SHA384\n");
    assert!(handshake(port, &cafile, &["-tls1_3"]).status.success(), "TLS 1.3 was refused");
    assert!(refused(&handshake(port, &cafile, &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"])));
}

#[test]
fn eccs_limit_the_key_exchange_curves_skipping_those_not_provided() {
    let server = Pki::new("server CA", &["server"]);
    let cafile = server.path("ca.pem");
    // VerneMQ's example value: brainpool and binary curves are not provided.
    let (b, port) = tls_broker(
        &server,
        "listener.ssl.eccs = [brainpoolP384r1, secp384r1, sect283k1]\nlistener.ssl.tls_version = tlsv1.2\n",
    );
    let warning = logged(&b, "eccs: skipping");
    assert!(warning.contains("brainpoolP384r1, sect283k1"), "{warning}");
    assert!(refused(&handshake(port, &cafile, &["-tls1_2", "-curves", "prime256v1"])), "P-256 was accepted");
    // In TLS 1.2 a client's curves also bound the server certificate's key, here on P-256.
    let listed = handshake(port, &cafile, &["-tls1_2", "-curves", "secp384r1:prime256v1"]);
    assert!(listed.status.success(), "P-384 was refused: {}", String::from_utf8_lossy(&listed.stderr));
    let said = String::from_utf8_lossy(&listed.stdout);
    assert!(said.lines().any(|l| l.starts_with("Server Temp Key") && l.contains("secp384r1")), "{said}");
    let err = refused_to_start(&server, "listener.ssl.eccs = sect571k1:brainpoolP512r1\n");
    assert!(err.contains("listener.ssl.default") && err.contains("eccs"), "{err}");
}

/// A client CA whose certificates are issued by an intermediate CA: `ca.pem` (the root),
/// `client-chain.pem` (the client certificate, then the intermediate's) and `client.key`.
struct IntermediatePki {
    dir: tempfile::TempDir,
}

impl IntermediatePki {
    fn new() -> IntermediatePki {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = |name: &str| {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params.distinguished_name.push(rcgen::DnType::CommonName, name);
            params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
            params
        };
        let root = rcgen::CertifiedIssuer::self_signed(ca("client root CA"), rcgen::KeyPair::generate().expect("key"))
            .expect("root");
        let intermediate = rcgen::CertifiedIssuer::signed_by(
            ca("client intermediate CA"),
            rcgen::KeyPair::generate().expect("key"),
            &root,
        )
        .expect("intermediate");
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        params.distinguished_name.push(rcgen::DnType::CommonName, "client");
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate().expect("key");
        let client = params.signed_by(&key, &intermediate).expect("client");
        std::fs::write(dir.path().join("ca.pem"), root.pem()).expect("write");
        std::fs::write(dir.path().join("client-chain.pem"), format!("{}{}", client.pem(), intermediate.pem()))
            .expect("write");
        std::fs::write(dir.path().join("client.key"), key.serialize_pem()).expect("write");
        IntermediatePki { dir }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }
}

#[test]
fn depth_bounds_the_intermediate_cas_of_a_client_chain() {
    let server = Pki::new("server CA", &["server"]);
    let clients = IntermediatePki::new();
    let cafile = server.path("ca.pem");
    let publish_with_chain = |port: u16| {
        Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "t", "-m", "m"])
            .arg("--cafile")
            .arg(&cafile)
            .arg("--cert")
            .arg(clients.path("client-chain.pem"))
            .arg("--key")
            .arg(clients.path("client.key"))
            .output()
            .expect("mosquitto_pub runs")
    };
    let settings = |depth: &str| {
        format!(
            "listener.ssl.cafile = {}\nlistener.ssl.require_certificate = on\nlistener.ssl.depth = {depth}\n",
            clients.path("ca.pem").display()
        )
    };
    let (b, port) = tls_broker(&server, &settings("0"));
    assert!(refused(&publish_with_chain(port)), "a chain with an intermediate CA got in with depth = 0");
    b.wait_for_line("depth allows 0");
    let (_b, port) = tls_broker(&server, &settings("1"));
    let out = publish_with_chain(port);
    assert!(out.status.success(), "refused with depth = 1: {}", String::from_utf8_lossy(&out.stderr));
    let err = refused_to_start(&server, &settings("-1"));
    assert!(err.contains("listener.ssl.default") && err.contains("depth"), "{err}");
}

#[test]
fn a_cipher_list_of_legacy_suites_only_stops_the_node_and_a_mixed_one_skips_them() {
    let server = Pki::new("server CA", &["server"]);
    let err = refused_to_start(&server, "listener.ssl.ciphers = AES256-SHA:DES-CBC3-SHA\n");
    assert!(err.contains("listener.ssl.default") && err.contains("ciphers"), "{err}");
    // RSA suites for an ECDSA key: no TLS 1.2 handshake could succeed.
    let err = refused_to_start(
        &server,
        "listener.ssl.ciphers = ECDHE-RSA-AES256-GCM-SHA384\nlistener.ssl.tls_version = tlsv1.2\n",
    );
    assert!(err.contains("listener.ssl.default") && err.contains("ciphers") && err.contains("ECDSA"), "{err}");
    let (b, port) =
        tls_broker(&server, "listener.ssl.ciphers = AES256-SHA:ECDHE-ECDSA-AES128-GCM-SHA256:DES-CBC3-SHA\n");
    let warning = logged(&b, "ciphers: skipping");
    assert!(warning.contains("AES256-SHA, DES-CBC3-SHA") && warning.contains("listener.ssl.default"), "{warning}");
    let cafile = server.path("ca.pem");
    assert!(handshake(port, &cafile, &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"]).status.success());
    assert!(publish(port, &cafile, None, "t", "m").status.success());
}
