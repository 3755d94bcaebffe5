//! Two ingests in one share group split the load and, with no resends, the lake holds every
//! record exactly once (ARCHITECTURE.md states what holds when devices resend).

use std::collections::BTreeMap;
use std::time::Duration;

use ferry_shared::Timestamp;
use ferry_tests::devices::{device_messages, publish_all};

use crate::{assert_exactly_once, spool_id};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_group_splits_the_load() {
    let _serial = crate::one_at_a_time().await;
    let crate::ShareGroup {
        broker,
        s3: _s3,
        dirs: _dirs,
        mut ingests,
    } = crate::share_group("ingest-shared").await;

    let mut expected = BTreeMap::new();
    let mut messages = Vec::new();
    for d in 0..10 {
        let device = format!("ws-share-{d}");
        messages.extend(device_messages(
            &device,
            &spool_id(d),
            2_000,
            100,
            Timestamp::now(),
        ));
        expected.insert((device, spool_id(d)), 2_000);
    }
    publish_all(broker.port, "share-devices", &messages).await;
    ingests[0]
        .wait_for_records(20_000, Duration::from_secs(60))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_exactly_once(&ingests[0].lake(), &expected);
    let each: Vec<f64> = ingests
        .iter()
        .map(|i| i.metric("ferry_ingest_records_in_total"))
        .collect();
    assert!(
        each.iter().all(|n| *n > 0.0),
        "both members took a share: {each:?}"
    );
    assert_eq!(each.iter().sum::<f64>(), 20_000.0);
    for ingest in &mut ingests {
        assert_eq!(ingest.proc.terminate(), Some(0), "{}", ingest.proc.log());
    }
}
