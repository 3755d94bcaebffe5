//! The ingest feeds the dashboards' hot store (on a real PostgreSQL) through its journal:
//! while the hot store is unreachable the lake keeps filling and the readings wait; the
//! ingest is SIGKILLed during the outage and after it; devices resend. Afterwards the hot
//! store holds every reading once, and its rollups count each once.

use std::time::{Duration, Instant};

use ferry_tests::cloud::{AllConfig, TOKEN, ingest_with, start_all};
use ferry_tests::devices::{fleet, publish_all};
use ferry_tests::postgres::Postgres;

use crate::{BIN, Lake, assert_exactly_once};

const DEVICES: usize = 5;
const RECORDS: u64 = 2_000;
/// `devices::device_messages` makes every seq but those ending in 0 (txn) or 5 (event) a
/// reading of one metric.
const READINGS: i64 = RECORDS as i64 * 8 / 10;

/// Runs `work` on a connection of its own, made and dropped off this runtime's threads: the
/// synchronous client drives a runtime of its own.
fn with_pg<T>(
    url: &str,
    work: impl FnOnce(&mut postgres::Client) -> Result<T, postgres::Error>,
) -> T {
    tokio::task::block_in_place(|| {
        let mut client =
            postgres::Client::connect(url, postgres::NoTls).expect("connecting to PostgreSQL");
        work(&mut client).unwrap_or_else(|e| panic!("PostgreSQL: {e}"))
    })
}

/// Takes the hot store away as an outage would: no new connections, and the ingest's
/// connection cut.
fn cut(admin: &str) {
    with_pg(admin, |c| {
        c.batch_execute(
            "ALTER DATABASE hot ALLOW_CONNECTIONS false;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'hot';",
        )
    });
}

fn restore(admin: &str) {
    with_pg(admin, |c| {
        c.batch_execute("ALTER DATABASE hot ALLOW_CONNECTIONS true")
    });
}

async fn wait_for(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> bool,
    log: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {timeout:?}; log:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hot_store_gets_every_reading_once_through_an_outage_and_sigkills() {
    let _serial = crate::one_at_a_time().await;
    let pg = tokio::task::block_in_place(Postgres::start);
    let url = tokio::task::block_in_place(|| pg.database("hot"));
    let admin = pg.url("postgres");
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = ferry_tests::broker::Mosquitto::start();
    let lake = dir.path().join("lake");
    let mut ingest = ingest_with(
        BIN.as_ref(),
        dir.path(),
        broker.port,
        Lake::Folder(&lake),
        "",
        &format!("[dashboard]\ndatabase = \"{url}\"\n"),
    );
    ingest.proc.start();
    ingest.wait_subscribed().await;

    let (messages, expected) = fleet("ws-hot", DEVICES, RECORDS, 50);
    let third = messages.len() / 3;
    publish_all(broker.port, "hot-devices", &messages[..third]).await;
    wait_for(
        "the first third in the hot store",
        Duration::from_secs(60),
        || {
            ingest.metric("ferry_ingest_hot_stored_total") >= (READINGS * DEVICES as i64 / 4) as f64
                && ingest.metric("ferry_ingest_hot_pending") == 0.0
        },
        || ingest.proc.log(),
    )
    .await;

    cut(&admin);
    publish_all(broker.port, "hot-devices", &messages[third..2 * third]).await;
    wait_for(
        "readings waiting in the journal while the lake fills",
        Duration::from_secs(60),
        || {
            ingest.metric("ferry_ingest_hot_pending") > 0.0
                && ingest.metric("ferry_ingest_hot_failures_total") > 0.0
                && ingest.metric("ferry_ingest_records_out_total") > 0.0
        },
        || ingest.proc.log(),
    )
    .await;
    ingest.proc.kill9();
    ingest.proc.start();
    ingest.wait_subscribed().await;
    restore(&admin);

    // The rest, with the middle third resent as agents do after a reconnect; one more
    // SIGKILL while the hot writer catches up.
    let publisher = {
        let rest: Vec<_> = messages[third..].to_vec();
        let port = broker.port;
        tokio::spawn(async move { publish_all(port, "hot-devices", &rest).await })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    ingest.proc.kill9();
    ingest.proc.start();
    ingest.wait_subscribed().await;
    publisher.await.expect("publisher");

    ingest
        .wait_for_records(DEVICES * RECORDS as usize, Duration::from_secs(120))
        .await;
    assert_exactly_once(&ingest.lake(), &expected);
    wait_for(
        "every reading in the hot store",
        Duration::from_secs(60),
        || {
            ingest.metric("ferry_ingest_hot_pending") == 0.0
                && with_pg(&url, |c| c.query_one("SELECT count(*) FROM readings", &[]))
                    .get::<_, i64>(0)
                    >= READINGS * DEVICES as i64
        },
        || ingest.proc.log(),
    )
    .await;
    let rows = with_pg(&url, |c| {
        c.query(
            "SELECT r.device, r.raw, r.seqs, u.rolled, d.last_seen_ms
             FROM (SELECT device, count(*) AS raw, count(DISTINCT seq) AS seqs
                   FROM readings GROUP BY device) r
             JOIN (SELECT device, CAST(SUM(n) AS BIGINT) AS rolled FROM rollups GROUP BY device) u
               ON u.device = r.device
             LEFT JOIN devices d ON d.device = r.device
             ORDER BY r.device",
            &[],
        )
    });
    assert_eq!(rows.len(), DEVICES, "every device in the hot store");
    for row in rows {
        let device: String = row.get(0);
        let (raw, seqs, rolled): (i64, i64, i64) = (row.get(1), row.get(2), row.get(3));
        assert_eq!(
            (raw, seqs, rolled),
            (READINGS, READINGS, READINGS),
            "{device}: raw, distinct seqs, rolled up"
        );
        assert!(
            row.get::<_, Option<i64>>(4).is_some(),
            "{device}: last seen"
        );
    }
    assert_eq!(ingest.proc.terminate(), Some(0), "{}", ingest.proc.log());
}

/// The write path takes a batch of new readings in one way (on PostgreSQL a binary COPY)
/// and a batch holding resends in another (a savepoint, then `ON CONFLICT`): both count
/// each reading once, in the outcome and in the rollups, on both databases.
#[test]
fn a_batch_with_resends_stores_and_counts_only_the_new_readings() {
    use ferry_cloud::hot::{HotItem, HotStore, Series};

    let _load = crate::beside_others();
    let pg = Postgres::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = format!("sqlite://{}", dir.path().join("hot.db").display());
    let now = ferry_shared::Timestamp::now().unix_millis();
    let minute = now - now.rem_euclid(60_000) - 60_000;
    let reading = |seq: u64| HotItem::Reading {
        device: "ws-1".into(),
        spool: "sp".into(),
        seq,
        ts_ms: minute + seq as i64 * 100,
        ts_suspect: false,
        metrics: [("temperature_c".to_owned(), seq as f64)].into(),
    };
    for url in [pg.database("resends"), sqlite] {
        let mut hot = HotStore::open(&url).expect("hot store");
        let first: Vec<HotItem> = (1..=10).map(reading).collect();
        let out = hot
            .write(&first, &[], 86_400_000, now)
            .expect("first batch");
        assert_eq!((out.stored, out.duplicates), (10, 0), "{url}");
        // Five resent, five new, and one of the new twice in the same batch.
        let mut second: Vec<HotItem> = (6..=15).map(reading).collect();
        second.push(reading(15));
        let out = hot
            .write(&second, &[], 86_400_000, now)
            .expect("second batch");
        assert_eq!((out.stored, out.duplicates), (5, 6), "{url}");
        let Series::Rollup { count, avg, .. } = hot
            .rollup("ws-1", "temperature_c", minute, minute + 60_000, 60_000)
            .expect("rollup")
        else {
            panic!("not a rollup");
        };
        assert_eq!(count, [15], "{url}: each reading counted once");
        assert_eq!(avg, [8.0], "{url}");
        let mut flagged = reading(16);
        if let HotItem::Reading { ts_suspect, .. } = &mut flagged {
            *ts_suspect = true;
        }
        let out = hot
            .write(&[flagged], &[], 86_400_000, now)
            .expect("flagged");
        assert_eq!(
            (out.stored, out.ts_suspect),
            (0, 1),
            "{url}: a reading its device flagged ts_suspect moves no state"
        );
    }
}

/// `all` on PostgreSQL stops cleanly once its connection pools have been used: closing a
/// synchronous PostgreSQL connection on an async thread panicked at shutdown, and a clean
/// stop exited non-zero (found by the whole-cloud bench).
#[tokio::test(flavor = "multi_thread")]
async fn all_on_postgres_stops_with_exit_code_zero() {
    use ferry_tests::http::request;

    let _load = tokio::task::block_in_place(crate::beside_others);
    let pg = tokio::task::block_in_place(Postgres::start);
    let (ledger, hot) =
        tokio::task::block_in_place(|| (pg.database("clean_ledger"), pg.database("clean_hot")));
    let broker = ferry_tests::broker::Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let http = ferry_tests::free_port();
    let config = AllConfig {
        ledger,
        hot: Some(hot),
        ..AllConfig::new(dir.path(), broker.port, http, "clean-stop")
    }
    .toml();
    let mut cloud = start_all(dir.path(), &config, http).await;
    tokio::task::block_in_place(|| {
        ferry_tests::loyalty::put_program(
            http,
            "coffee",
            &serde_json::json!({"kind": "stamps", "stamps_per_reward": 10, "reward": "coffee"}),
        );
        let (status, body) = request(http, "GET", "/v1/devices", TOKEN, "").expect("devices");
        assert_eq!(status, 200, "{body}");
    });
    assert_eq!(cloud.terminate(), Some(0), "{}", cloud.log());
}
