//! Persistence across `kill -9`: every acknowledged offline message of a persistent session is
//! on disk before its PUBACK, and comes back, in order, after a crash and restart.

mod common;

use std::time::Duration;

use common::V4;
use common::process::Broker;
use rumqttc::{Event, Packet, QoS};

const MESSAGES: u32 = 10_000;
const CONFIG: &str = "max_offline_messages = -1\nmax_online_messages = -1\nmax_inflight_messages = 100\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_offline_messages_survive_kill_minus_9_in_order() {
    common::init_tracing();
    let broker = Broker::start(CONFIG);
    let mut sub_opts = V4::options(broker.addr, "crash-sub");
    sub_opts.set_clean_session(false);
    let (mut sub, _) = V4::connect(sub_opts.clone()).await;
    sub.subscribe("crash/#", QoS::AtLeastOnce).await;
    sub.client.disconnect().await.unwrap();
    // Publish only once the broker has the session offline, so every message goes to the store.
    let b = tokio::task::spawn_blocking(move || {
        b_wait(&broker, "client_id=crash-sub");
        broker
    })
    .await
    .unwrap();

    let mut pub_opts = V4::options(b.addr, "crash-pub");
    pub_opts.set_inflight(200);
    let (mut publ, _) = V4::connect(pub_opts).await;
    let client = publ.client.clone();
    tokio::spawn(async move {
        for i in 0..MESSAGES {
            client.publish("crash/x", QoS::AtLeastOnce, false, i.to_be_bytes().to_vec()).await.unwrap();
        }
    });
    let mut acked = 0;
    while acked < MESSAGES {
        if let Ok(Event::Incoming(Packet::PubAck(_))) = publ.next().await {
            acked += 1;
        }
    }

    let dir = b.kill();
    let b = Broker::start_in(dir, CONFIG);
    let mut sub_opts = V4::options(b.addr, "crash-sub");
    sub_opts.set_clean_session(false);
    sub_opts.set_keep_alive(Duration::from_secs(60));
    let (mut sub, present) = V4::connect(sub_opts).await;
    assert!(present, "the persistent session is back after the restart");
    for i in 0..MESSAGES {
        let p = sub.publish_event().await;
        assert_eq!(p.payload.as_ref(), &i.to_be_bytes(), "message {i} in order");
    }
    assert!(b.stop().success());
}

fn b_wait(b: &Broker, needle: &str) {
    // The disconnect log line names the client id.
    loop {
        let line = b.wait_for_line(needle);
        if common::process::strip_ansi(&line).contains("client disconnected") {
            return;
        }
    }
}
