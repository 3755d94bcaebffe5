//! The harness's Mosquitto keeps what it promises: a polite stop and a start keep what it
//! had queued for a persistent session, as a real broker outage would. (Started as root
//! with its default user, it could not save, and every outage test lost the queue.)

use std::time::Duration;

use ferry_tests::broker::Mosquitto;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};

const TOPIC: &str = "ferry/v1/harness/telemetry";

fn options(id: &str, port: u16, clean: bool) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_clean_session(clean);
    o.set_keep_alive(Duration::from_secs(5));
    o
}

/// Polls `client`'s event loop until `want` says yes, for at most 10 s.
async fn poll_until(events: &mut rumqttc::EventLoop, mut want: impl FnMut(&Event) -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        match tokio::time::timeout_at(deadline, events.poll()).await {
            Ok(Ok(event)) if want(&event) => return true,
            Ok(Ok(_)) => {}
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(_) => return false,
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_keeps_a_queued_message_for_a_persistent_session() {
    let _load = super::shared().await;
    let mut broker = Mosquitto::start();

    // A persistent subscriber subscribes, then goes away.
    let (sub, mut sub_events) = AsyncClient::new(options("harness-sub", broker.port, false), 10);
    sub.subscribe(TOPIC, QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    assert!(
        poll_until(&mut sub_events, |e| matches!(
            e,
            Event::Incoming(Incoming::SubAck(_))
        ))
        .await,
        "no SUBACK"
    );
    sub.disconnect().await.expect("disconnect");
    poll_until(&mut sub_events, |e| {
        matches!(e, Event::Outgoing(rumqttc::Outgoing::Disconnect))
    })
    .await;
    drop(sub_events);

    // While it is away, a message is queued for it.
    let (publisher, mut pub_events) =
        AsyncClient::new(options("harness-pub", broker.port, true), 10);
    publisher
        .publish(TOPIC, QoS::AtLeastOnce, false, b"kept".to_vec())
        .await
        .expect("publish");
    assert!(
        poll_until(&mut pub_events, |e| matches!(
            e,
            Event::Incoming(Incoming::PubAck(_))
        ))
        .await,
        "no PUBACK"
    );
    drop(pub_events);

    // The broker stops (and must save), and starts again on the same port.
    broker.stop();
    broker.resume();

    let (_sub, mut sub_events) = AsyncClient::new(options("harness-sub", broker.port, false), 10);
    let mut payload = None;
    poll_until(&mut sub_events, |e| match e {
        Event::Incoming(Incoming::Publish(p)) => {
            payload = Some(p.payload.to_vec());
            true
        }
        _ => false,
    })
    .await;
    assert_eq!(
        payload.as_deref(),
        Some(&b"kept"[..]),
        "the queued message did not survive the broker's restart; broker log:\n{}",
        broker.log()
    );
    broker.assert_saves_ok();
}
