//! The S3 server is stopped for 12 s while devices publish: the ingest keeps nothing in
//! unbounded memory, loses nothing, and resumes by itself.

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_shared::Timestamp;
use ferry_tests::broker::Mosquitto;
use ferry_tests::devices::{device_messages, publish_all};
use ferry_tests::s3::S3Server;

use crate::{Lake, assert_exactly_once, ingest, spool_id};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_outage_loses_nothing_and_heals_by_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Mosquitto::start();
    let mut s3 = S3Server::start(crate::BUCKET);
    let mut ingest = ingest(
        dir.path(),
        broker.port,
        Lake::S3(&s3),
        "flush_bytes = 32768",
    );
    ingest.proc.start();

    let mut expected = BTreeMap::new();
    let mut before = Vec::new();
    let mut during = Vec::new();
    for d in 0..5 {
        let device = format!("ws-outage-{d}");
        let all = device_messages(&device, &spool_id(d), 4_000, 100, Timestamp::now());
        let half = all.len() / 2;
        before.extend_from_slice(&all[..half]);
        during.extend_from_slice(&all[half..]);
        expected.insert((device, spool_id(d)), 4_000);
    }
    publish_all(broker.port, "outage-devices", &before).await;
    ingest
        .wait_for_records(1_000, Duration::from_secs(60))
        .await;

    s3.stop();
    publish_all(broker.port, "outage-devices", &during).await;
    ferry_tests::wait_until(Duration::from_secs(30), "failed lake writes", || {
        ingest.metric("ferry_ingest_store_errors_total") > 0.0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(ingest.proc.is_running(), "an outage is not fatal");
    let oldest = ingest.metric("ferry_ingest_oldest_unflushed_seconds");
    assert!(
        oldest >= 10.0,
        "the backlog's age shows the outage: {oldest}"
    );
    s3.resume();

    ingest
        .wait_for_records(20_000, Duration::from_secs(120))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_exactly_once(&ingest.lake(), &expected);
    assert_eq!(ingest.proc.terminate(), Some(0), "{}", ingest.proc.log());
}
