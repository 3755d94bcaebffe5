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

/// `deploy/mosquitto/` as shipped (only its paths and port moved to a test folder), with
/// certificates from `ferry-cloud certs`: a device's certificate cannot publish into
/// another device's topics, so its forged records never reach the ingest's identity; a
/// certificate from another CA cannot connect; and a device's own data flows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_production_broker_keeps_each_device_to_its_own_topics() {
    use ferry_tests::agent::AgentProc;
    use ferry_tests::collector::Collector;
    use rumqttc::{TlsConfiguration, Transport};

    let _load = super::shared().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (pki, rogue) = (dir.path().join("pki"), dir.path().join("rogue"));
    let certs = |args: &[&str]| {
        let out = std::process::Command::new(ferry_tests::bins::path("ferry-cloud"))
            .arg("certs")
            .args(args)
            .output()
            .expect("ferry-cloud certs");
        assert!(out.status.success(), "certs {args:?}: {out:?}");
    };
    let path = |p: &std::path::Path| p.to_str().expect("utf-8 path").to_owned();
    certs(&["init", "--dir", &path(&pki), "--server-name", "127.0.0.1"]);
    certs(&[
        "client",
        "--dir",
        &path(&pki),
        "ws-1",
        "ws-2",
        "ferry-ingest",
    ]);
    certs(&["init", "--dir", &path(&rogue), "--server-name", "127.0.0.1"]);
    certs(&["client", "--dir", &path(&rogue), "ws-1"]);

    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/mosquitto");
    let shipped = std::fs::read_to_string(deploy.join("mosquitto.conf")).expect("deploy conf");
    let port = ferry_tests::free_port();
    let conf = shipped
        .replace("listener 8883", &format!("listener {port} 127.0.0.1"))
        .replace("/etc/mosquitto/ferry/acl", &path(&deploy.join("acl")))
        .replace("/etc/mosquitto/ferry/", &format!("{}/", path(&pki)))
        .replace("/var/lib/mosquitto/", "{dir}/")
        .replace("log_dest syslog", "log_dest stderr")
        // As root, mosquitto would drop to a user that cannot read the test's files.
        + "user root\n";
    assert!(conf.contains("require_certificate true") && conf.contains("acl_file"));
    let broker = Mosquitto::start_with_conf(port, &conf);

    let client_file = |who: &str, ext: &str| pki.join("clients").join(format!("{who}.{ext}"));
    let ingest = Collector::start_mtls(
        port,
        &pki.join("ca.pem"),
        &client_file("ferry-ingest", "pem"),
        &client_file("ferry-ingest", "key"),
    )
    .await;

    // ws-1's own data, from a real agent with its certificate.
    let agent_dir = dir.path().join("ws-1");
    std::fs::create_dir_all(&agent_dir).expect("agent dir");
    let config = format!(
        "device_id = \"ws-1\"\ndata_dir = \"{}\"\n\
         [mqtt]\nurl = \"mqtts://127.0.0.1:{port}\"\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n\
         [[sources]]\ntype = \"simulator\"\nprofile = \"weather\"\ninterval_ms = 0\ncount = 50\n",
        path(&agent_dir.join("data")),
        path(&pki.join("ca.pem")),
        path(&client_file("ws-1", "pem")),
        path(&client_file("ws-1", "key")),
    );
    let mut agent = AgentProc::new(ferry_tests::bins::path("ferry-agent"), &agent_dir, &config);
    agent.start();
    ferry_tests::wait_until(Duration::from_secs(30), "ws-1's own records", || {
        ingest.seen().seqs_of("ws-1").len() == 50
    })
    .await;
    assert_eq!(agent.terminate(), Some(0), "{}", agent.log());

    // ws-1's certificate, posing as ws-2: a forged envelope and a forged status.
    let tls = |ca: &std::path::Path, cert: &std::path::Path, key: &std::path::Path| {
        ferry_shared::tls::use_ring();
        let read = |p: &std::path::Path| std::fs::read(p).expect("certificate");
        Transport::Tls(TlsConfiguration::Simple {
            ca: read(ca),
            alpn: None,
            client_auth: Some((read(cert), read(key))),
        })
    };
    let mut forger = options("forger", port, true);
    forger.set_transport(tls(
        &pki.join("ca.pem"),
        &client_file("ws-1", "pem"),
        &client_file("ws-1", "key"),
    ));
    let (client, mut events) = AsyncClient::new(forger, 10);
    let envelope = serde_json::json!({"v": 1, "device": "ws-2", "spool": "01JD3W6Q3X8F2M7C9K4N5P6R8T",
        "sent_at": "2026-12-01T00:00:00.000Z",
        "records": [{"seq": 1, "ts": "2026-12-01T00:00:00.000Z", "type": "event",
                     "level": "info", "message": "forged"}]});
    client
        .publish(
            "ferry/v1/ws-2/telemetry",
            QoS::AtLeastOnce,
            false,
            envelope.to_string(),
        )
        .await
        .expect("queue the forgery");
    client
        .publish(
            "ferry/v1/ws-2/status",
            QoS::AtLeastOnce,
            true,
            r#"{"online": false}"#,
        )
        .await
        .expect("queue the forged status");
    // The broker may drop the forger's connection over them; drive it for a while.
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < until {
        let _ = tokio::time::timeout_at(until, events.poll()).await;
    }
    // Then, on a new connection, ws-1's own status, which it may publish: once the
    // ingest's identity has it, the broker has dealt with the forgeries before it.
    let mut honest = options("honest", port, true);
    honest.set_transport(tls(
        &pki.join("ca.pem"),
        &client_file("ws-1", "pem"),
        &client_file("ws-1", "key"),
    ));
    let (own, mut own_events) = AsyncClient::new(honest, 10);
    own.publish(
        "ferry/v1/ws-1/status",
        QoS::AtLeastOnce,
        true,
        r#"{"online": true, "marker": "after"}"#,
    )
    .await
    .expect("queue the own status");
    assert!(
        poll_until(&mut own_events, |e| matches!(
            e,
            Event::Incoming(Incoming::PubAck(_))
        ))
        .await,
        "ws-1's own status was not taken: {}",
        broker.log()
    );
    ferry_tests::wait_until(Duration::from_secs(10), "ws-1's own status", || {
        ingest
            .seen()
            .status
            .get("ws-1")
            .is_some_and(|s| s["marker"] == "after")
    })
    .await;
    {
        let seen = ingest.seen();
        assert!(
            seen.seqs_of("ws-2").is_empty(),
            "ws-1 wrote into ws-2's topics"
        );
        assert!(
            !seen.status.contains_key("ws-2"),
            "ws-1 forged ws-2's status"
        );
    }

    // A certificate from another CA does not get in.
    let mut rogue_opts = options("rogue", port, true);
    rogue_opts.set_transport(tls(
        &pki.join("ca.pem"),
        &rogue.join("clients/ws-1.pem"),
        &rogue.join("clients/ws-1.key"),
    ));
    let (_rogue, mut rogue_events) = AsyncClient::new(rogue_opts, 10);
    let connected = poll_until(&mut rogue_events, |e| {
        matches!(e, Event::Incoming(Incoming::ConnAck(_)))
    })
    .await;
    assert!(!connected, "a certificate from another CA connected");
    let log = broker.log();
    assert!(
        log.contains("certificate verify failed"),
        "the broker refused the rogue certificate itself: {log}"
    );
}
