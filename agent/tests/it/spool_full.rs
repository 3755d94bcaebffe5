//! Over `spool.max_bytes`, telemetry is evicted oldest first and counted; transactions are
//! all kept, and all delivered once the broker appears.

use std::time::Duration;

use ferry_shared::RecordBody;
use ferry_tests::broker::Mosquitto;
use ferry_tests::collector::Collector;
use ferry_tests::{free_port, wait_until};

use crate::{FAST, agent, simulator};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_spool_evicts_oldest_telemetry_and_keeps_every_transaction() {
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let sources = format!(
        "[spool]\nmax_bytes = 1048576\n{}{}",
        simulator("weather", 0, 30_000),
        simulator("pos", 1, 500)
    );
    let url = format!("mqtt://127.0.0.1:{port}");
    let mut agent = agent(dir.path(), "full-1", &url, FAST, &sources);
    agent.start();
    wait_until(Duration::from_secs(60), "both simulators to finish", || {
        agent.status_u64("last_seq") == 30_500
    })
    .await;

    let status = agent.status();
    let evicted = status["evicted_total"].as_u64().expect("evicted_total");
    assert!(evicted > 0, "{status}");
    assert!(
        status["pending_bytes"].as_u64() <= Some(1_048_576),
        "{status}"
    );
    assert_eq!(
        status["pending_transactions"], 500,
        "no transaction evicted: {status}"
    );
    assert_eq!(
        status["pending"].as_u64(),
        Some(30_500 - evicted),
        "{status}"
    );

    let _broker = Mosquitto::start_on(port, None);
    let collector = Collector::start(port).await;
    wait_until(
        Duration::from_secs(60),
        "drain after the broker appears",
        || agent.status_u64("pending") == 0,
    )
    .await;
    assert_eq!(agent.terminate(), Some(0));
    wait_until(Duration::from_secs(10), "every pending record", || {
        collector.seen().seqs_of("full-1").len() as u64 == 30_500 - evicted
    })
    .await;

    let seen = collector.seen();
    let records = &seen.records["full-1"];
    let txns = records.values().filter(|r| r.body.is_txn()).count();
    assert_eq!(txns, 500, "every transaction delivered");
    // Eviction took the oldest telemetry: what arrived is a suffix of the readings.
    let mut readings: Vec<u64> = records
        .values()
        .filter(|r| matches!(r.body, RecordBody::Reading { .. }))
        .map(|r| r.seq)
        .collect();
    readings.sort_unstable();
    let first_kept = readings[0];
    let readings_before = first_kept
        - 1
        - records
            .values()
            .filter(|r| r.body.is_txn() && r.seq < first_kept)
            .count() as u64;
    assert_eq!(
        readings_before, evicted,
        "exactly the oldest {evicted} readings were evicted"
    );
}
