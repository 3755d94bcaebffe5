//! The ingest is SIGKILLed four times while devices keep publishing and resending; afterwards
//! every record is in the lake exactly once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferry_tests::devices::{fleet, publish_all};
use rand::Rng;

use crate::{assert_exactly_once, s3_stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_and_duplicates_nothing() {
    let _serial = crate::one_at_a_time().await;
    // Small objects, flushed often, so kills land between sealing and writing too.
    let mut stack = s3_stack("flush_bytes = 16384").await;
    let (expected, rounds): (BTreeMap<_, _>, Vec<_>) = (0..10)
        .map(|d| {
            let (messages, expected) = fleet(&format!("ws-crash-{d}"), 1, 6_000, 100);
            (expected.into_iter().next().expect("one device"), messages)
        })
        .unzip();
    // Devices publish in 12 waves while the ingest is killed 4 times at random moments. Each
    // wave also resends the last half of the one before, as agents do after a reconnect,
    // so what was admitted before a kill must be recognised after it.
    let port = stack.broker.port;
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
    let ingest = &mut stack.ingest;
    for kill in 0..4 {
        let wait = rand::rng().random_range(500..1500);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        // Aim the kill at a moment with messages received and not yet acknowledged, the
        // window that a crash must not turn into loss or duplicates.
        let aim = Instant::now() + Duration::from_secs(5);
        while Instant::now() < aim && ingest.metric("ferry_ingest_unacked_messages") < 1.0 {
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
