//! The `vmq_passwd` and `vmq_acl` plugins on a real `vernemq` process, driven by clients we
//! did not write (`rumqttc` for MQTT 3.1.1 and 5, `mosquitto_pub`): who gets in with which
//! CONNACK, what the ACL lets through, and that both files are read again while the node runs.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::process::Broker;
use common::{V4, V5};
use rumqttc::v5::mqttbytes::v5::ConnectReturnCode as V5Code;
use rumqttc::{ConnectReturnCode, QoS};

fn entry(user: &str, password: &str) -> String {
    vmq_auth::passwd::hash_entry(user, password.as_bytes()).expect("a valid user name")
}

/// A broker with anonymous access off, the given password and ACL files, read again every
/// second.
fn broker(passwd: &str, acl: &str) -> Broker {
    let dir = tempfile::tempdir().expect("temp dir");
    let (password_file, acl_file) = (dir.path().join("vmq.passwd"), dir.path().join("vmq.acl"));
    std::fs::write(&password_file, passwd).expect("write the password file");
    std::fs::write(&acl_file, acl).expect("write the ACL file");
    let config = format!(
        "allow_anonymous = off\nvmq_passwd.password_file = {}\nvmq_passwd.password_reload_interval = 1\n\
         vmq_acl.acl_file = {}\nvmq_acl.acl_reload_interval = 1\n",
        password_file.display(),
        acl_file.display()
    );
    Broker::start_in(dir, &config)
}

fn v4_options(b: &Broker, id: &str, user: &str, password: &str) -> rumqttc::MqttOptions {
    let mut o = V4::options(b.addr, id);
    o.set_credentials(user, password);
    o
}

fn v5_options(b: &Broker, id: &str, user: &str, password: &str) -> rumqttc::v5::MqttOptions {
    let mut o = V5::options(b.addr, id);
    o.set_credentials(user, password);
    o
}

/// The CONNACK code an MQTT 5 client gets.
async fn v5_connack(opts: rumqttc::v5::MqttOptions) -> V5Code {
    let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(opts, 10);
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        assert!(Instant::now() < deadline, "no CONNACK");
        match eventloop.poll().await {
            Ok(rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::ConnAck(ack))) => break ack.code,
            Ok(_) => {}
            Err(rumqttc::v5::ConnectionError::ConnectionRefused(code)) => break code,
            Err(e) => panic!("no CONNACK: {e}"),
        }
    };
    drop(client);
    code
}

/// How rumqttc reports a CONNACK that refused it.
fn refused(code: ConnectReturnCode) -> String {
    format!("Connection refused, return code: `{code:?}`")
}

#[tokio::test]
async fn connect_is_checked_against_the_password_file_with_vernemqs_codes() {
    let b = broker(&format!("{}\n", entry("john", "secret")), "topic #\n");

    let (_john, _) = V4::connect(v4_options(&b, "c1", "john", "secret")).await;
    let wrong = V4::try_connect(v4_options(&b, "c2", "john", "guess")).await.err();
    assert_eq!(wrong, Some(refused(ConnectReturnCode::BadUserNamePassword)), "MQTT 3.1.1, wrong password: 4");
    let unknown = V4::try_connect(v4_options(&b, "c3", "mary", "secret")).await.err();
    assert_eq!(unknown, Some(refused(ConnectReturnCode::NotAuthorized)), "MQTT 3.1.1, unknown user: 5");
    let anonymous = V4::try_connect(V4::options(b.addr, "c4")).await.err();
    assert_eq!(anonymous, Some(refused(ConnectReturnCode::NotAuthorized)), "MQTT 3.1.1, no credentials: 5");

    assert_eq!(v5_connack(v5_options(&b, "c5", "john", "secret")).await, V5Code::Success);
    assert_eq!(v5_connack(v5_options(&b, "c6", "john", "guess")).await, V5Code::BadUserNamePassword);
    assert_eq!(v5_connack(v5_options(&b, "c7", "mary", "secret")).await, V5Code::BadUserNamePassword);

    // A client we did not write, as a user would try it.
    let out = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &b.addr.port().to_string(), "-u", "john", "-P", "guess"])
        .args(["-t", "t", "-m", "m", "-q", "1"])
        .output()
        .expect("mosquitto_pub runs");
    assert!(!out.status.success(), "mosquitto_pub with a wrong password succeeded");
    let stderr = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(stderr.contains("bad user name or password"), "mosquitto_pub said: {stderr}");
    b.wait_for_line("CONNECT refused");
}

#[tokio::test]
async fn an_acl_that_allows_reading_a_refuses_publishing_to_it() {
    let passwd = format!("{}\n{}\n", entry("john", "secret"), entry("feeder", "feed"));
    let acl = "user john\ntopic read a/#\ntopic write b/#\nuser feeder\ntopic write a/#\n";
    let b = broker(&passwd, acl);

    // MQTT 5: refusals carry their reason codes.
    let (mut john, _) = V5::connect(v5_options(&b, "john5", "john", "secret")).await;
    john.client.subscribe("a/#", rumqttc::v5::mqttbytes::QoS::AtLeastOnce).await.expect("queued");
    let granted = john.suback().await;
    assert_eq!(
        granted.return_codes,
        vec![rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(rumqttc::v5::mqttbytes::QoS::AtLeastOnce)]
    );
    john.client.subscribe("c/#", rumqttc::v5::mqttbytes::QoS::AtLeastOnce).await.expect("queued");
    let refused = john.suback().await;
    assert_eq!(refused.return_codes, vec![rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::NotAuthorized]);
    john.client.publish("a/b", rumqttc::v5::mqttbytes::QoS::AtLeastOnce, false, "no").await.expect("queued");
    let ack = loop {
        if let Ok(rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::PubAck(ack))) = john.next().await {
            break ack;
        }
    };
    assert_eq!(ack.reason, rumqttc::v5::mqttbytes::v5::PubAckReason::NotAuthorized, "PUBACK 0x87");

    // MQTT 3.1.1: the refused publish is acknowledged and dropped; an allowed one goes through.
    let (mut reader, _) = V4::connect(v4_options(&b, "reader", "john", "secret")).await;
    reader.subscribe("a/#", QoS::AtLeastOnce).await;
    let (writer, _) = V4::connect(v4_options(&b, "writer", "john", "secret")).await;
    writer.client.publish("a/b", QoS::AtLeastOnce, false, "dropped").await.expect("queued");
    let (feeder, _) = V4::connect(v4_options(&b, "feeder", "feeder", "feed")).await;
    feeder.client.publish("a/b", QoS::AtLeastOnce, false, "allowed").await.expect("queued");
    let first = reader.publish_event().await;
    assert_eq!(first.payload.as_ref(), b"allowed", "john's refused publish reached a subscriber");
}

#[tokio::test]
async fn both_files_are_read_again_while_the_node_runs() {
    let b = broker(&format!("{}\n", entry("john", "secret")), "user john\ntopic read a/#\n");
    let unknown = V4::try_connect(v4_options(&b, "m1", "mary", "pw")).await.err();
    assert_eq!(unknown, Some(refused(ConnectReturnCode::NotAuthorized)));

    let dir = b.dir.path();
    std::fs::write(dir.join("vmq.passwd"), format!("{}\n{}\n", entry("john", "secret"), entry("mary", "pw")))
        .expect("rewrite");
    std::fs::write(dir.join("vmq.acl"), "user john\ntopic read a/#\ntopic write a/#\n").expect("rewrite");
    let deadline = Instant::now() + Duration::from_secs(10);
    while V4::try_connect(v4_options(&b, "m2", "mary", "pw")).await.is_err() {
        assert!(Instant::now() < deadline, "the new user was not read within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The new ACL lets john publish to what he reads.
    let (mut john, _) = V4::connect(v4_options(&b, "john", "john", "secret")).await;
    john.subscribe("a/#", QoS::AtLeastOnce).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        john.client.publish("a/b", QoS::AtLeastOnce, false, "mine").await.expect("queued");
        let got = tokio::time::timeout(Duration::from_millis(300), async {
            loop {
                if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) = john.next().await {
                    return p;
                }
            }
        })
        .await;
        if got.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the new ACL was not read within 10 s");
    }
}

#[tokio::test]
async fn a_missing_acl_file_is_vernemqs_shipped_one_and_a_broken_one_keeps_the_last_good_one() {
    let b = broker(&format!("{}\n", entry("john", "secret")), "topic read a/#\n");
    let dir = b.dir.path().to_owned();
    // A line the parser refuses: the previous ACL stays in force, and the log says where.
    std::fs::write(dir.join("vmq.acl"), "topic read a/#\nthis is not an acl line\n").expect("rewrite");
    let line = b.wait_for_line("keeping the previous contents");
    assert!(line.contains("vmq.acl"), "{line}");
    let (mut john, _) = V4::connect(v4_options(&b, "john", "john", "secret")).await;
    john.subscribe("a/#", QoS::AtLeastOnce).await;

    std::fs::remove_file(dir.join("vmq.acl")).expect("remove");
    let line = b.wait_for_line("using the file VerneMQ ships");
    assert!(line.contains("vmq.acl"), "{line}");
    // `topic #`: now john may publish where he could only read.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        john.client.publish("a/b", QoS::AtLeastOnce, false, "open").await.expect("queued");
        let got = tokio::time::timeout(Duration::from_millis(300), john.publish_event()).await;
        if got.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "the shipped ACL was not in force within 10 s");
    }
}
