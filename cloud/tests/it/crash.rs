//! The ingest is SIGKILLed three times while devices keep publishing; afterwards every
//! record is in the lake exactly once.

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_shared::Timestamp;
use ferry_tests::broker::Mosquitto;
use ferry_tests::devices::{device_messages, publish_all};
use ferry_tests::s3::S3Server;
use rand::Rng;

use crate::{Lake, assert_exactly_once, ingest, spool_id};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Mosquitto::start();
    let s3 = S3Server::start(crate::BUCKET);
    // Small objects, flushed often, so kills land between sealing and writing too.
    let mut ingest = ingest(
        dir.path(),
        broker.port,
        Lake::S3(&s3),
        "flush_bytes = 16384",
    );
    ingest.proc.start();

    let mut expected = BTreeMap::new();
    let mut rounds = Vec::new();
    for d in 0..10 {
        let device = format!("ws-crash-{d}");
        let messages = device_messages(&device, &spool_id(d), 6_000, 100, Timestamp::now());
        expected.insert((device, spool_id(d)), 6_000);
        rounds.push(messages);
    }
    // Devices publish in 12 waves while the ingest is killed 4 times at random moments. Each
    // wave also resends the last half of the one before, as agents do after a reconnect,
    // so what was admitted before a kill must be recognised after it.
    let port = broker.port;
    let publisher = tokio::spawn(async move {
        for wave in 0..12usize {
            let batch: Vec<_> = rounds
                .iter()
                .flat_map(|m| {
                    m.iter()
                        .skip((wave * 10).saturating_sub(5))
                        .take(15)
                        .cloned()
                })
                .collect();
            publish_all(port, "crash-devices", &batch).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    for kill in 0..4 {
        let wait = rand::rng().random_range(500..1500);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        // Aim the kill at a moment with messages received and not yet acknowledged, the
        // window that a crash must not turn into loss or duplicates.
        let aim = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < aim
            && ingest.metric("ferry_ingest_unacked_messages") < 1.0
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        ingest.proc.kill9();
        assert!(
            ingest.proc.log().contains("ingest connected"),
            "kill {kill}: never connected"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        ingest.proc.start();
    }
    publisher.await.expect("publisher");
    ingest
        .wait_for_records(60_000, Duration::from_secs(120))
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_exactly_once(&ingest.lake(), &expected);
    assert_eq!(ingest.proc.terminate(), Some(0), "{}", ingest.proc.log());
}
