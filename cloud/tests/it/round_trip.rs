//! 100k records from 20 devices through Mosquitto into S3, each exactly once; then the
//! same envelopes again, which add nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_shared::Timestamp;
use ferry_tests::broker::Mosquitto;
use ferry_tests::devices::{Message, device_messages, publish_all};
use ferry_tests::s3::S3Server;

use crate::{Lake, assert_exactly_once, ingest, spool_id};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_lands_once_and_resends_add_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Mosquitto::start();
    let s3 = S3Server::start(crate::BUCKET);
    let mut ingest = ingest(
        dir.path(),
        broker.port,
        Lake::S3(&s3),
        "flush_bytes = 262144",
    );
    ingest.proc.start();

    let mut expected = BTreeMap::new();
    let mut messages: Vec<Message> = Vec::new();
    for d in 0..20 {
        let device = format!("ws-{d:03}");
        messages.extend(device_messages(
            &device,
            &spool_id(d),
            5_000,
            250,
            Timestamp::now(),
        ));
        expected.insert((device, spool_id(d)), 5_000);
    }
    // Interleave the devices, as a broker sees them.
    messages.sort_by_key(|m| m.payload.len() % 7);
    publish_all(broker.port, "round-trip-devices", &messages).await;
    ingest
        .wait_for_records(100_000, Duration::from_secs(180))
        .await;
    let objects = ingest.lake();
    assert_exactly_once(&objects, &expected);
    assert!(objects.len() >= 10, "{} objects", objects.len());

    // Resent: every envelope again. Nothing new may appear.
    publish_all(broker.port, "round-trip-resend", &messages).await;
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
