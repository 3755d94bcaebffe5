//! The S3 server is stopped for 12 s while devices publish: the ingest keeps nothing in
//! unbounded memory, loses nothing, and resumes by itself.

use std::time::Duration;

use ferry_tests::devices::{fleet, publish_all};

use crate::{Stack, assert_exactly_once, s3_stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_outage_loses_nothing_and_heals_by_itself() {
    let _serial = crate::one_at_a_time().await;
    let Stack {
        dir: _dir,
        broker,
        mut s3,
        mut ingest,
    } = s3_stack("flush_bytes = 32768").await;
    // Every device's first half before the outage, its second half during it.
    let (messages, expected) = fleet("ws-outage", 5, 4_000, 100);
    let (before, during): (Vec<_>, Vec<_>) = messages
        .into_iter()
        .enumerate()
        .partition(|(i, _)| i % 80 < 40);
    let before: Vec<_> = before.into_iter().map(|(_, m)| m).collect();
    let during: Vec<_> = during.into_iter().map(|(_, m)| m).collect();
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
