//! 100k records from 20 devices through Mosquitto into S3, each exactly once; then the
//! same envelopes again, which add nothing.

use std::time::Duration;

use ferry_tests::devices::{fleet, publish_all};

use crate::{assert_exactly_once, s3_stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_lands_once_and_resends_add_nothing() {
    let _serial = crate::one_at_a_time().await;
    // About 850 KB of gzipped lines: 64 KiB objects make more than ten of them by size
    // alone, whatever the timing (at 256 KiB the count hung on age flushes, and a fast
    // machine made fewer than ten).
    let mut stack = s3_stack("flush_bytes = 65536").await;
    let (mut messages, expected) = fleet("ws", 20, 5_000, 250);
    // Interleave the devices, as a broker sees them.
    messages.sort_by_key(|m| m.payload.len() % 7);
    publish_all(stack.broker.port, "round-trip-devices", &messages).await;
    let ingest = &mut stack.ingest;
    ingest
        .wait_for_records(100_000, Duration::from_secs(180))
        .await;
    let objects = ingest.lake();
    assert_exactly_once(&objects, &expected);
    assert!(objects.len() >= 10, "{} objects", objects.len());

    // Resent: every envelope again. Nothing new may appear.
    publish_all(stack.broker.port, "round-trip-resend", &messages).await;
    ferry_tests::wait_until(
        Duration::from_secs(60),
        "the resends to be recognised",
        || ingest.metric("ferry_ingest_duplicates_total") >= 100_000.0,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_exactly_once(&ingest.lake(), &expected);
    assert_eq!(ingest.metric("ferry_ingest_records_out_total"), 100_000.0);
    assert_eq!(ingest.proc.terminate(), Some(0), "{}", ingest.proc.log());
}
