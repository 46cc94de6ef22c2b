//! End-to-end tests of `Config::parse` / `Config::load`: the rules of `docs/configuration.md`.

use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, FileFailurePersistence};

use super::*;

/// The README's example, a realistic part of VerneMQ's template.
const EXAMPLE: &str = include_str!("../../../examples/vernemq.conf");
/// The user-facing reference.
const DOCS: &str = include_str!("../../../docs/configuration.md");

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Some(Path::new("/etc/vernemq/vernemq.conf")))
}

fn parse_err(text: &str) -> String {
    parse(text).expect_err("expected an error").to_string()
}

fn line_of(text: &str, key: &str) -> usize {
    let prefix = format!("{key} =");
    1 + text.lines().position(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("{key} not in text"))
}

#[test]
fn example_parses_with_only_warnings() {
    let config = parse(EXAMPLE).expect("the example must parse");
    assert_eq!(config.source.as_deref(), Some(Path::new("/etc/vernemq/vernemq.conf")));
    assert!(!config.mqtt.allow_anonymous);
    assert_eq!(config.nodename, "VerneMQ@127.0.0.1");
    assert_eq!(config.mqtt.persistent_client_expiration, Some(Duration::from_secs(7 * 86_400)));
    let names: Vec<String> = config.listeners.iter().map(|l| l.key()).collect();
    assert_eq!(names, ["listener.tcp.default", "listener.tcp.internal", "listener.ssl.default"]);
    let ssl = &config.listeners[2];
    assert_eq!(ssl.transport, Transport::Ssl);
    assert_eq!(ssl.transport_settings.get("certfile").map(String::as_str), Some("./etc/cert.pem"));
    assert_eq!(config.listeners[1].mountpoint, "internal");
    assert_eq!(config.listeners[1].max_connections, None);
    assert_eq!(config.listeners[0].max_connections, Some(10_000));

    let warned: Vec<&str> = config.warnings.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(
        warned,
        ["logging.obfuscation_secret", "listener.nr_of_acceptors", "erlang.async_threads", "erlang.max_ports",]
    );
    for w in &config.warnings {
        assert_eq!(w.line, Some(line_of(EXAMPLE, &w.key)), "{w}");
    }
    // The TLS listener runs; a TLS setting without effect says so.
    let tls = parse("listener.ssl.default = 127.0.0.1:8883\nlistener.ssl.default.psk_support = on\n").expect("parses");
    let warned: Vec<String> = tls.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warned,
        ["vernemq.conf:2: 'listener.ssl.default.psk_support' (this TLS setting) is not supported yet, ignored"]
    );

    let delegated: Vec<(&str, &str)> = config.delegated.iter().map(|e| (e.key.as_str(), e.value.as_str())).collect();
    assert_eq!(
        delegated,
        [
            ("listener.vmq.clustering", "0.0.0.0:44053"),
            ("listener.http.default", "127.0.0.1:8888"),
            ("leveldb.maximum_memory.percent", "70"),
        ]
    );
    for e in &config.delegated {
        assert_eq!(e.line, line_of(EXAMPLE, &e.key));
    }
}

#[test]
fn example_values_equal_vernemq_defaults_where_it_keeps_them() {
    let config = parse(EXAMPLE).expect("the example must parse");
    let defaults = Config::vernemq_default();
    assert_eq!(config.netsplit, defaults.netsplit);
    let mut mqtt = config.mqtt.clone();
    mqtt.persistent_client_expiration = None;
    assert_eq!(mqtt, defaults.mqtt);
    assert_eq!(config.listeners[0], defaults.listeners[0]);
}

#[test]
fn empty_file_gives_vernemq_defaults() {
    let config = parse("# nothing here\n\n").unwrap();
    let mut expected = Config::vernemq_default();
    expected.source = Some("/etc/vernemq/vernemq.conf".into());
    assert_eq!(config, expected);
    assert!(!config.mqtt.allow_anonymous);
}

#[test]
fn embedded_default_is_a_laptop_broker() {
    let config = Config::embedded_default();
    assert_eq!(config.source, None);
    assert!(config.mqtt.allow_anonymous);
    assert_eq!(config.listeners.len(), 1);
    assert_eq!(config.listeners[0].name, "default");
    assert_eq!(config.listeners[0].addr, ListenAddr::Inet("127.0.0.1:1883".parse().unwrap()));
    assert_eq!(config.platform_data_dir, Path::new("./data"));
    assert_eq!(config.nodename, "VerneMQ@127.0.0.1");
    assert_eq!(config.distributed_cookie, "vmq");
    assert_eq!(config.metadata_plugin, MetadataPlugin::VmqSwc);
    assert_eq!(config.log_console_level, LogLevel::Info);
    // Apart from anonymous access and the HTTP listener of VerneMQ's shipped template,
    // VerneMQ's defaults.
    let mut vernemq = Config::vernemq_default();
    vernemq.mqtt.allow_anonymous = true;
    vernemq.delegated.push(ConfigEntry {
        key: "listener.http.default".into(),
        value: "127.0.0.1:8888".into(),
        line: 0,
    });
    assert_eq!(config, vernemq);
}

#[test]
fn misspelt_key_is_an_error_with_suggestion() {
    let text = "allow_anonymous = on\nmax_inflight_mesages = 10\n";
    assert_eq!(
        parse_err(text),
        "/etc/vernemq/vernemq.conf:2: max_inflight_mesages: unknown key (did you mean \
         'max_inflight_messages'?); accepted: the keys of VerneMQ 2.1 listed in \
         docs/configuration.md"
    );
}

#[test]
fn misspelt_listener_keys_get_suggestions() {
    let err = parse_err("listener.tcp.default.max_conections = 10\n");
    assert!(err.contains("did you mean 'listener.tcp.default.max_connections'?"), "{err}");
    let err = parse_err("listener.allowed_protocol_versions = 3,4\n");
    assert!(err.contains("did you mean 'listener.tcp.allowed_protocol_versions'?"), "{err}");
    let err = parse_err("listeners.https.default.http_modules = vmq_status_http\n");
    assert!(err.contains(":1: listeners.https.default.http_modules: unknown key"), "{err}");
}

#[test]
fn unknown_key_without_close_match() {
    let err = parse_err("\n\nfrobnicate_the_widgets = yes\n");
    assert!(err.starts_with("/etc/vernemq/vernemq.conf:3: frobnicate_the_widgets: unknown key; accepted:"), "{err}");
}

#[test]
fn bad_value_names_file_line_key_and_accepted() {
    assert_eq!(
        parse_err("# comment\nmax_inflight_messages = lots\n"),
        "/etc/vernemq/vernemq.conf:2: max_inflight_messages: 'lots' is not an integer; \
         accepted: an integer from 0 to 65535"
    );
    assert_eq!(
        parse_err("allow_anonymous = yes\n"),
        "/etc/vernemq/vernemq.conf:1: allow_anonymous: 'yes' is not a flag; accepted: on or off"
    );
    assert_eq!(
        parse_err("shared_subscription_policy = nearest\n"),
        "/etc/vernemq/vernemq.conf:1: shared_subscription_policy: 'nearest' is not a valid \
         choice; accepted: one of: prefer_local, random, local_only, prefer_online_before_local"
    );
    assert_eq!(
        parse_err("listener.tcp.default = localhost:1883\n"),
        "/etc/vernemq/vernemq.conf:1: listener.tcp.default: 'localhost:1883' is not an IP \
         address and port; accepted: an IP address and port, e.g. 127.0.0.1:1883, \
         0.0.0.0:1883 or [::1]:1883"
    );
}

#[test]
fn text_without_source_is_named_vernemq_conf() {
    let err = Config::parse("topic_max_depth = 0\n", None).unwrap_err();
    assert!(err.to_string().starts_with("vernemq.conf:1: topic_max_depth:"), "{err}");
}

#[test]
fn obfuscated_nodename_from_the_docs_is_rejected() {
    // The published docs show node names as "[email protected]".
    let err = parse_err("nodename = [email protected]\n");
    assert!(err.contains("accepted: a node name of the form name@host"), "{err}");
}

#[test]
fn duplicate_key_last_wins_with_warning() {
    let config = parse("max_inflight_messages = 10\nretry_interval = 5\nmax_inflight_messages = 30\n").unwrap();
    assert_eq!(config.mqtt.max_inflight_messages, 30);
    assert_eq!(
        config.warnings,
        [ConfigWarning {
            line: Some(1),
            key: "max_inflight_messages".into(),
            message: "is set again on line 3, which wins; ignored".into(),
        }]
    );
    // The overridden value is not validated, as cuttlefish only sees the last one.
    let config = parse("max_inflight_messages = bad\nmax_inflight_messages = 1\n").unwrap();
    assert_eq!(config.mqtt.max_inflight_messages, 1);
}

#[test]
fn duplicate_delegated_key_keeps_the_last_line() {
    let config = parse("vmq_swc.x = 1\nvmq_swc.x = 2\n").unwrap();
    assert_eq!(config.delegated, [ConfigEntry { key: "vmq_swc.x".into(), value: "2".into(), line: 2 }]);
}

#[test]
fn renamed_keys_point_to_their_replacement() {
    let err = parse_err("max_queued_messages = 100\n");
    assert!(err.contains("accepted: use max_online_messages"), "{err}");
    let err = parse_err("trade_consistency = on\n");
    assert!(err.contains("allow_publish_during_netsplit"), "{err}");
}

#[test]
fn syntax_error_names_file_and_line() {
    let err = parse_err("allow_anonymous = on\nthis is not a setting\n");
    assert!(err.starts_with("/etc/vernemq/vernemq.conf:2: cannot parse 'this is not a setting'"), "{err}");
}

#[test]
fn missing_file_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.conf");
    let err = Config::load(&path).unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }));
    let text = err.to_string();
    assert!(text.starts_with(&format!("cannot read configuration file {}:", path.display())), "{text}");
}

#[test]
fn load_reads_the_file_and_keeps_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vernemq.conf");
    std::fs::write(&path, "allow_anonymous = on\nlistener.tcp.default = 0.0.0.0:1883\n").unwrap();
    let config = Config::load(&path).unwrap();
    assert_eq!(config.source.as_deref(), Some(path.as_path()));
    assert!(config.mqtt.allow_anonymous);
    assert_eq!(config.listeners[0].addr, ListenAddr::Inet("0.0.0.0:1883".parse().unwrap()));
    assert_eq!(config.file_label(), path.display().to_string());

    std::fs::write(&path, b"allow_anonymous = on\nbad = \xff\n").unwrap();
    let err = Config::load(&path).unwrap_err();
    assert!(matches!(err, ConfigError::Encoding { line: 2, .. }), "{err:?}");
}

#[test]
fn quoted_value_may_contain_hash() {
    let config = parse("distributed_cookie = 'a#b' # the cookie\n").unwrap();
    assert_eq!(config.distributed_cookie, "a#b");
    let config = parse("distributed_cookie = a#b\n").unwrap();
    assert_eq!(config.distributed_cookie, "a");
}

#[test]
fn every_implemented_key_takes_a_non_default_value() {
    type Check = fn(&Config) -> bool;
    let cases: &[(&str, &str, Check)] = &[
        ("allow_anonymous", "on", |c| c.mqtt.allow_anonymous),
        ("allow_register_during_netsplit", "on", |c| c.netsplit.allow_register),
        ("allow_publish_during_netsplit", "on", |c| c.netsplit.allow_publish),
        ("allow_subscribe_during_netsplit", "on", |c| c.netsplit.allow_subscribe),
        ("allow_unsubscribe_during_netsplit", "on", |c| c.netsplit.allow_unsubscribe),
        ("coordinate_registrations", "off", |c| !c.netsplit.coordinate_registrations),
        ("retry_interval", "5", |c| c.mqtt.retry_interval == Duration::from_secs(5)),
        ("max_client_id_size", "23", |c| c.mqtt.max_client_id_size == 23),
        ("persistent_client_expiration", "2d", |c| {
            c.mqtt.persistent_client_expiration == Some(Duration::from_secs(2 * 86_400))
        }),
        ("max_last_will_delay", "1h", |c| c.mqtt.max_last_will_delay == Some(Duration::from_secs(3600))),
        ("max_inflight_messages", "0", |c| c.mqtt.max_inflight_messages == 0),
        ("max_online_messages", "-1", |c| c.mqtt.max_online_messages.is_none()),
        ("max_offline_messages", "0", |c| c.mqtt.max_offline_messages == Some(0)),
        ("override_max_online_messages", "on", |c| c.mqtt.override_max_online_messages),
        ("max_message_size", "64KB", |c| c.mqtt.max_message_size == 65_536),
        ("systree_enabled", "off", |c| !c.systree.enabled),
        ("systree_interval", "0", |c| c.systree.interval.is_zero()),
        ("systree_mountpoint", "ops", |c| c.systree.mountpoint == "ops"),
        ("systree_qos", "1", |c| c.systree.qos == 1),
        ("systree_retain", "on", |c| c.systree.retain),
        ("max_ws_frame_size", "infinity", |c| {
            c.mqtt.max_ws_frame_size.is_none() && c.listeners.iter().all(|l| l.max_ws_frame_size.is_none())
        }),
        ("upgrade_outgoing_qos", "on", |c| c.mqtt.upgrade_outgoing_qos),
        ("max_message_rate", "100", |c| c.mqtt.max_message_rate == 100),
        ("queue_type", "lifo", |c| c.mqtt.queue_type == QueueType::Lifo),
        ("shared_subscription_policy", "prefer_online_before_local", |c| {
            c.mqtt.shared_subscription_policy == SharedSubscriptionPolicy::PreferOnlineBeforeLocal
        }),
        ("receive_max_broker", "10", |c| c.mqtt.receive_max_broker == 10),
        ("receive_max_client", "11", |c| c.mqtt.receive_max_client == 11),
        ("topic_alias_max_broker", "12", |c| c.mqtt.topic_alias_max_broker == 12),
        ("topic_alias_max_client", "13", |c| c.mqtt.topic_alias_max_client == 13),
        ("suppress_lwt_on_session_takeover", "on", |c| c.mqtt.suppress_lwt_on_session_takeover),
        ("topic_max_depth", "20", |c| c.mqtt.topic_max_depth == 20),
        ("max_keepalive", "300", |c| c.mqtt.max_keepalive == Some(300)),
        ("mqtt.connect.timeout", "5000", |c| c.mqtt.mqtt_connect_timeout == Duration::from_millis(5000)),
        ("metadata_plugin", "vmq_plumtree", |c| c.metadata_plugin == MetadataPlugin::VmqPlumtree),
        ("nodename", "node1@10.0.0.1", |c| c.nodename == "node1@10.0.0.1"),
        ("distributed_cookie", "s3cret", |c| c.distributed_cookie == "s3cret"),
        ("platform_data_dir", "/var/lib/vernemq", |c| c.platform_data_dir == Path::new("/var/lib/vernemq")),
        ("log.console.level", "debug", |c| c.log_console_level == LogLevel::Debug),
        ("log.console.console.format", "json", |c| c.log_console_json),
        ("plugins.vmq_passwd", "off", |c| !c.auth_files.passwd),
        ("vmq_passwd.password_file", "./etc/vmq.passwd", |c| {
            c.auth_files.password_file == Path::new("./etc/vmq.passwd")
        }),
        ("vmq_passwd.password_reload_interval", "0", |c| c.auth_files.password_reload_interval.is_none()),
        ("plugins.vmq_acl", "off", |c| !c.auth_files.acl),
        ("vmq_acl.acl_file", "./etc/vmq.acl", |c| c.auth_files.acl_file == Path::new("./etc/vmq.acl")),
        ("vmq_acl.acl_reload_interval", "60", |c| c.auth_files.acl_reload_interval == Some(Duration::from_secs(60))),
    ];
    let covered: Vec<&str> = cases.iter().map(|(k, _, _)| *k).collect();
    for (key, _) in Config::known_settings() {
        assert!(covered.contains(&key), "{key} has no case");
    }
    for (key, value, check) in cases {
        let config = parse(&format!("{key} = {value}\n")).unwrap_or_else(|e| panic!("{key} = {value}: {e}"));
        assert!(check(&config), "{key} = {value} not applied");
        let warned: Vec<&str> = config.warnings.iter().map(|w| w.key.as_str()).collect();
        assert!(warned.is_empty(), "{key}: {:?}", config.warnings);
        let free_text = [
            "distributed_cookie",
            "platform_data_dir",
            "vmq_passwd.password_file",
            "vmq_acl.acl_file",
            "systree_mountpoint",
        ];
        if !free_text.contains(key) {
            assert!(parse(&format!("{key} = \u{1f600}\n")).is_err(), "{key} accepts anything");
        }
    }
}

#[test]
fn log_levels_convert_to_tracing() {
    use tracing::level_filters::LevelFilter;
    assert_eq!(LevelFilter::from(LogLevel::Debug), LevelFilter::DEBUG);
    assert_eq!(LevelFilter::from(LogLevel::Warning), LevelFilter::WARN);
    assert_eq!(LevelFilter::from(LogLevel::None), LevelFilter::OFF);
    assert_eq!(LogLevel::Error.level(), Some(tracing::Level::ERROR));

    let config = parse("log.console.level = notice\n").unwrap();
    assert_eq!(config.log_console_level, LogLevel::Info);
    assert_eq!(config.warnings.len(), 1);
    assert!(config.warnings[0].message.contains("'info'"));
    let config = parse("log.console.level = none\n").unwrap();
    assert_eq!(config.log_console_level, LogLevel::None);
    assert!(parse("log.console.level = verbose\n").is_err());
}

#[test]
fn listener_errors_name_line_and_key() {
    let text = "listener.tcp.default = 127.0.0.1:1883\nlistener.tcp.other.mountpoint = x\n";
    let err = parse_err(text);
    assert!(
        err.starts_with(
            "/etc/vernemq/vernemq.conf:2: listener.tcp.other.mountpoint: there is no TCP \
             listener named 'other'"
        ),
        "{err}"
    );
    let err = parse_err("listener.tcp.a = 127.0.0.1:1883\nlistener.tcp.b = 127.0.0.1:1883\n");
    assert!(err.starts_with("/etc/vernemq/vernemq.conf:2: listener.tcp.b:"), "{err}");
}

#[test]
fn ipv6_listener_and_bridge_versions() {
    let config =
        parse("listener.tcp.v6 = [::1]:1883\nlistener.tcp.v6.allowed_protocol_versions = 3,4,5,131\n").unwrap();
    assert_eq!(config.listeners.len(), 1);
    assert_eq!(config.listeners[0].addr, ListenAddr::Inet("[::1]:1883".parse().unwrap()));
    assert_eq!(config.warnings.len(), 1);
    assert_eq!(config.warnings[0].key, "listener.tcp.v6.allowed_protocol_versions");
}

#[test]
fn unimplemented_features_warn_unless_switched_off() {
    let text = "plugins.vmq_bridge = off\nvmq_bridge.tcp.br0 = 10.0.0.1:1883\n\
                listener.tcp.proxy_protocol = off\nlistener.tcp.proxy_protocol = on\n\
                queue_deliver_mode = fanout\nallow_multiple_sessions = on\n";
    let config = parse(text).unwrap();
    let warned: Vec<(Option<usize>, &str)> = config.warnings.iter().map(|w| (w.line, w.key.as_str())).collect();
    assert_eq!(
        warned,
        [
            (Some(2), "vmq_bridge.tcp.br0"),
            // Given twice: the first is overridden (the PROXY protocol itself works).
            (Some(3), "listener.tcp.proxy_protocol"),
            (Some(6), "allow_multiple_sessions"),
        ]
    );
    assert!(config.warnings[0].message.contains("vmq_bridge"));
    assert!(config.warnings[2].message.contains("deprecated"));
}

#[test]
fn delegated_entries_and_their_errors() {
    let text = "vmq_swc.sync_interval = 1000\nmax_drain_time = 20\ncluster.seed = a@b\n";
    let config = parse(text).unwrap();
    let swc: Vec<&ConfigEntry> = config.delegated_entries("vmq_swc.").collect();
    assert_eq!(swc.len(), 1);
    assert_eq!(swc[0].line, 1);
    let drain: Vec<&ConfigEntry> = config.delegated_entries("max_drain_time").collect();
    let err = config.invalid_entry(drain[0], "'20' is too short", "an integer of at least 100");
    assert_eq!(
        err.to_string(),
        "/etc/vernemq/vernemq.conf:2: max_drain_time: '20' is too short; accepted: an integer \
         of at least 100"
    );
}

#[test]
fn docs_cover_every_key() {
    for (key, default) in Config::known_settings() {
        let row = DOCS
            .lines()
            .find(|l| l.starts_with(&format!("| `{key}` ")))
            .unwrap_or_else(|| panic!("docs/configuration.md has no row for {key}"));
        assert!(row.contains(&format!("`{default}`")), "{key}: default {default} not in {row}");
    }
    for prefix in keys::DELEGATED_PREFIXES.iter().chain(keys::DELEGATED_KEYS) {
        assert!(DOCS.contains(&format!("`{prefix}")), "{prefix} not documented");
    }
    for known in keys::KNOWN_UNSUPPORTED {
        let shown = known.pattern.replace(".**", ".*");
        assert!(DOCS.contains(&format!("`{shown}`")), "{} not documented", known.pattern);
    }
    for (pattern, _) in keys::WITHOUT_EFFECT {
        let shown = pattern.replace(".**", ".*");
        assert!(DOCS.contains(&format!("`{shown}`")), "{pattern} not documented");
    }
    for (old, _) in keys::RENAMED {
        assert!(DOCS.contains(&format!("`{old}`")), "{old} not documented");
    }
}

/// The keys `text` was warned about, with their line, in file order.
fn warned(text: &str) -> Vec<(usize, String)> {
    let config = parse(text).unwrap_or_else(|e| panic!("{e}"));
    config.warnings.iter().map(|w| (w.line.expect("a warning about a line"), w.key.clone())).collect()
}

fn lines(keys: &[&str]) -> Vec<(usize, String)> {
    keys.iter().enumerate().map(|(i, k)| (i + 1, k.to_string())).collect()
}

#[test]
fn coordinate_registrations_and_the_queue_migration_keys_take_effect_silently() {
    for value in ["on", "off"] {
        let config = parse(&format!("coordinate_registrations = {value}\n")).unwrap();
        assert_eq!(config.netsplit.coordinate_registrations, value == "on");
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    }
    // A bad value is still an error.
    assert!(parse("coordinate_registrations = maybe\n").is_err());
    let config = parse("max_drain_time = 5000\nmax_msgs_per_drain_step = 100\n").unwrap();
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    // Handed to the cluster layer, which validates them when it starts.
    assert_eq!(config.delegated_entries("max_drain_time").count(), 1);
    assert_eq!(config.delegated_entries("max_msgs_per_drain_step").count(), 1);
}

#[test]
fn plumtree_and_cluster_keys_warn() {
    let text = "plumtree.outstanding_limit = 10\ncluster.seed = a@b\n";
    assert_eq!(warned(text), lines(&["plumtree.outstanding_limit", "cluster.seed"]));
    // Also with the Plumtree backend, which reads vmq_plumtree.* only.
    let text = "metadata_plugin = vmq_plumtree\nplumtree.outstanding_limit = 10\n";
    assert_eq!(warned(text), [(2, "plumtree.outstanding_limit".to_string())]);
}

#[test]
fn cluster_transport_keys_it_does_not_read_warn() {
    let read = "listener.vmq.clustering = 127.0.0.1:44053\n\
                listener.vmqs.clustering = 127.0.0.1:44054\n\
                listener.vmqs.cafile = /etc/ca.pem\n\
                listener.vmqs.certfile = /etc/cert.pem\n\
                listener.vmqs.keyfile = /etc/key.pem\n";
    assert_eq!(warned(read), []);
    let ignored = [
        "listener.vmqs.ciphers",
        "listener.vmqs.eccs",
        "listener.vmqs.depth",
        "listener.vmqs.crlfile",
        "listener.vmqs.require_certificate",
        "listener.vmqs.tls_version",
        "listener.vmqs.clustering.certfile",
        "listener.vmq.other",
        "listener.vmq.clustering.max_connections",
    ];
    let text: String = ignored.iter().map(|k| format!("{k} = x\n")).collect();
    assert_eq!(warned(&text), lines(&ignored));
}

#[test]
fn http_module_selection_warns() {
    let text = "listener.http.default = 127.0.0.1:8888\n\
                listener.http.default.http_modules = vmq_status_http\n\
                listener.http.default.http_module.vmq_mgmt_http.auth.mode = apikey\n";
    assert_eq!(
        warned(text),
        [
            (2, "listener.http.default.http_modules".to_string()),
            (3, "listener.http.default.http_module.vmq_mgmt_http.auth.mode".to_string()),
        ]
    );
}

#[test]
fn nr_of_acceptors_warns_on_every_level_and_is_still_validated() {
    let keys = ["listener.nr_of_acceptors", "listener.tcp.nr_of_acceptors", "listener.tcp.default.nr_of_acceptors"];
    let mut text = String::new();
    for k in keys {
        text.push_str(&format!("{k} = 10\n"));
    }
    text.push_str("listener.tcp.default = 127.0.0.1:1883\n");
    assert_eq!(warned(&text), lines(&keys));
    assert!(parse("listener.nr_of_acceptors = none\n").is_err());
}

#[test]
fn swc_keys_without_counterpart_warn() {
    let keys = ["vmq_swc.directory", "vmq_swc.dkm_directory", "vmq_swc.db_backend", "vmq_swc.fast_call_timeout"];
    let text: String = keys.iter().map(|k| format!("{k} = x\n")).collect();
    assert_eq!(warned(&text), lines(&keys));
}

#[test]
fn keys_of_the_backend_not_chosen_warn() {
    let text = "vmq_swc.sync_interval = 1000\nvmq_plumtree.outstanding_limit = 10\n";
    let config = parse(text).unwrap();
    assert_eq!(
        config.warnings,
        [ConfigWarning {
            line: Some(2),
            key: "vmq_plumtree.outstanding_limit".into(),
            message: "has no effect with metadata_plugin = vmq_swc, ignored".into(),
        }]
    );
    let text = format!("{text}metadata_plugin = vmq_plumtree\n");
    assert_eq!(warned(&text), [(1, "vmq_swc.sync_interval".to_string())]);
    // One warning per key, even when two reasons apply.
    let text = "metadata_plugin = vmq_plumtree\nvmq_swc.directory = x\n";
    assert_eq!(warned(text), [(2, "vmq_swc.directory".to_string())]);
}

#[test]
fn delegated_keys_with_effect_do_not_warn() {
    let text = "vmq_swc.sync_interval = 1000\n\
                rocksdb.block_cache_size = 64MB\n\
                message_store.durability = sync\n\
                listener.http.default = 127.0.0.1:8888\n\
                listener.vmq.clustering = 127.0.0.1:44053\n\
                outgoing_clustering_buffer_size = 10000\n\
                allow_register_during_netsplit = on\n\
                allow_publish_during_netsplit = on\n\
                allow_subscribe_during_netsplit = on\n\
                allow_unsubscribe_during_netsplit = on\n";
    assert_eq!(warned(text), []);
    let text = "metadata_plugin = vmq_plumtree\nvmq_plumtree.outstanding_limit = 10\n";
    assert_eq!(warned(text), []);
}

fn known_key() -> impl Strategy<Value = String> {
    let keys: Vec<String> = Config::known_settings()
        .map(|(k, _)| k.to_string())
        .chain(listeners::PATTERNS.iter().map(|p| p.replace('*', "x")))
        .chain(keys::KNOWN_UNSUPPORTED.iter().map(|k| k.pattern.replace('*', "y")))
        .collect();
    prop::sample::select(keys)
}

fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        (known_key(), "[ -~]{0,12}").prop_map(|(k, v)| format!("{k} = {v}")),
        "[ -~\t]{0,40}",
        Just("# comment".to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "../../proptest-regressions/vmq-config-parse.txt",
        ))),
        ..ProptestConfig::default()
    })]

    /// Any text either parses or fails with a line inside the text; never panics.
    #[test]
    fn parse_never_panics_and_errors_point_inside(lines in prop::collection::vec(line(), 0..12)) {
        let text = lines.join("\n");
        match Config::parse(&text, None) {
            Ok(config) => {
                for w in &config.warnings {
                    let l = w.line.unwrap_or(1);
                    prop_assert!(l >= 1 && l <= lines.len().max(1));
                }
                for e in &config.delegated {
                    prop_assert!(e.line >= 1 && e.line <= lines.len());
                }
            }
            Err(e) => {
                let l = e.line().unwrap_or(0);
                prop_assert!(l >= 1 && l <= lines.len().max(1), "{e}");
            }
        }
    }
}
