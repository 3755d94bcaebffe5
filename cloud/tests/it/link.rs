//! The ingest's own link to the broker goes silent (packets dropped, no RST), as a cloud
//! host's route to a self-hosted broker can: the ingest runs in a network namespace of the
//! test's own (`ferry_tests::netns::Link`), the broker and a real agent in this one.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferry_tests::cloud::{Lake, assert_exactly_once};
use ferry_tests::lake::record_ids;
use ferry_tests::netns::Link;

use crate::ingest;

const KEEP_ALIVE_S: u64 = 10;
const SILENCE: Duration = Duration::from_secs(40);

/// The ingest notices within two keep-alives, reconnects to its persistent session within
/// seconds of the link's return (a probe of the port, not a back-off grown to 30 s), and
/// the lake holds every record once: what the broker queued for the session meanwhile and
/// what was in flight when the link went silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_broker_link_is_noticed_and_the_session_resumes_with_nothing_lost() {
    let test = "ingest silent link";
    let Some(link) = Link::or_skip(test) else {
        return;
    };
    let _load = crate::one_at_a_time().await;
    let broker = link.broker();
    let dir = tempfile::tempdir().expect("tempdir");
    let lake_dir = dir.path().join("lake");
    let mut ingest = ingest(dir.path(), broker.port, Lake::Folder(&lake_dir), "")
        .behind(&link.exec_prefix(), &link.host_ip);
    ingest
        .proc
        .env("FERRY_MQTT__KEEP_ALIVE_S", KEEP_ALIVE_S.to_string());
    ingest.proc.start();
    ferry_tests::wait_until(Duration::from_secs(30), "the ingest to subscribe", || {
        ingest.proc.log().contains("ingest subscribed")
    })
    .await;
    let device = "ws-silent";
    let mut agent =
        ferry_tests::agent::simulated(dir.path(), device, "weather", broker.port, 50, 0);
    agent.start();
    ingest.wait_for_records(40, Duration::from_secs(30)).await;

    link.silence().expect("silence");
    let silenced = Instant::now();
    let mut noticed = None;
    while silenced.elapsed() < SILENCE {
        if noticed.is_none() && ingest.proc.log().contains("ingest MQTT connection failed") {
            noticed = Some(silenced.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let before = record_ids(&ingest.lake()).len();
    link.restore().expect("restore");
    let restored = Instant::now();
    ingest
        .wait_for_records(before + 1, Duration::from_secs(60))
        .await;
    let resumed = restored.elapsed();
    println!(
        "{test}: keep-alive {KEEP_ALIVE_S} s; noticed {:.1} s into a {} s silence; \
         the lake grew again {:.2} s after the link returned (lake flushes every 1 s)",
        noticed.map_or(f64::NAN, |d| d.as_secs_f64()),
        SILENCE.as_secs(),
        resumed.as_secs_f64()
    );
    let noticed = noticed.expect("the ingest noticed the silent link during it");
    assert!(
        noticed <= Duration::from_secs(2 * KEEP_ALIVE_S + 5),
        "{test}: noticed only after {noticed:?}, beyond two keep-alives"
    );
    assert!(
        resumed <= Duration::from_secs(10),
        "{test}: records reached the lake only {resumed:?} after the link returned"
    );

    assert_eq!(agent.terminate(), Some(0));
    let status = agent.status();
    let last_seq = status["last_seq"].as_u64().expect("last_seq");
    let spool = status["spool"].as_str().expect("spool").to_owned();
    ingest
        .wait_for_records(last_seq as usize, Duration::from_secs(60))
        .await;
    let expected = BTreeMap::from([((device.to_owned(), spool), last_seq)]);
    assert_exactly_once(&ingest.lake(), &expected);
    let log = ingest.proc.log();
    assert!(
        log.contains("session_present=true"),
        "the ingest came back to its persistent session: {log}"
    );
    println!("{test}: {last_seq} records, each in the lake once");
    assert_eq!(ingest.proc.terminate(), Some(0), "{log}");
}
