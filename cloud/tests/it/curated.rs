//! The curated lake, read back by delta-rs and DuckDB (not by Ferry): each record once,
//! typed, across resends from a share group and an ingest SIGKILL; late data rebuilds its
//! day; a second round commits nothing; a compactor SIGKILLed at any point leaves a
//! readable table; one compactor runs at a time.

use std::collections::BTreeMap;
use std::io::Write;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_shared::Timestamp;
use ferry_tests::curated::{Readback, Round, compact_once, compactor, query, read_table};
use ferry_tests::devices::{device_messages, publish_all};
use ferry_tests::s3::{ACCESS_KEY, REGION, S3Server, SECRET_KEY};
use rand::Rng;

use crate::{BIN, spool_id};

const DAY_1: &str = "2026-11-20";
const DAY_2: &str = "2026-11-21";

fn bin() -> PathBuf {
    PathBuf::from(BIN)
}

/// A raw reading line as the ingest writes it.
fn reading(device: &str, seq: u64, ts: &str) -> String {
    format!(
        r#"{{"seq":{seq},"ts":"{ts}","type":"reading","sensor":"bme280","metrics":{{"temperature_c":{t},"humidity_pct":50}},"device":"{device}","spool":"{spool}","received_at":"{ts}"}}"#,
        t = seq as f64 / 10.0,
        spool = spool_id(0),
    )
}

/// `seqs` of `device`, one second apart from noon of `day`.
fn readings(device: &str, day: &str, seqs: RangeInclusive<u64>) -> Vec<String> {
    seqs.map(|seq| {
        let ts = format!("{day}T12:{:02}:{:02}.000Z", (seq / 60) % 60, seq % 60);
        reading(device, seq, &ts)
    })
    .collect()
}

/// A raw reading object for `day`, as the ingest writes one.
fn put_raw(lake: &Path, day: &str, name: &str, lines: &[String]) {
    put_object(
        lake,
        &format!("raw/type=reading/dt={day}/hour=12"),
        name,
        lines,
    );
}

/// A lake object as the ingest writes one: gzipped NDJSON, in place at once.
fn put_object(lake: &Path, partition: &str, name: &str, lines: &[String]) {
    let dir = lake.join(partition);
    std::fs::create_dir_all(&dir).expect("partition folder");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for line in lines {
        gz.write_all(line.as_bytes()).expect("gzip");
        gz.write_all(b"\n").expect("gzip");
    }
    let tmp = dir.join(format!(".tmp-{name}"));
    std::fs::write(&tmp, gz.finish().expect("gzip")).expect("lake object");
    std::fs::rename(&tmp, dir.join(format!("{name}.ndjson.gz"))).expect("lake object");
}

/// A lake folder and a compactor's config, for tests that write raw objects themselves.
struct FolderLake {
    dir: tempfile::TempDir,
    lake: PathBuf,
    config: PathBuf,
}

impl FolderLake {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let lake = dir.path().join("lake");
        let config = dir.path().join("compact.toml");
        let text = format!(
            "data_dir = \"{}\"\n[lake]\nroot = \"{}\"\n",
            dir.path().join("data").display(),
            lake.display()
        );
        std::fs::write(&config, text).expect("config");
        Self { dir, lake, config }
    }

    /// Readings of `device` with `seqs` on `day`, in a raw object of their own.
    fn put(&self, day: &str, name: &str, device: &str, seqs: RangeInclusive<u64>) {
        put_raw(&self.lake, day, name, &readings(device, day, seqs));
    }

    fn compact(&self) -> Round {
        compact_once(&bin(), &self.config, &[])
    }

    fn readings(&self) -> Readback {
        let table = self.lake.join("curated/readings");
        read_table(&table.display().to_string(), &[], &[])
    }
}

fn count(readback: &Readback, device: &str) -> u64 {
    let key = format!("{device}/{}", spool_id(0));
    readback.delta.counts.get(&key).copied().unwrap_or(0)
}

/// Both readers agree with each other and see every `(device, spool, seq)` once.
fn assert_once(readback: &Readback) {
    assert_eq!(readback.delta.rows, readback.delta.distinct, "{readback:?}");
    assert_eq!(
        readback.duckdb.rows, readback.duckdb.distinct,
        "{readback:?}"
    );
    assert_eq!(readback.delta.counts, readback.duckdb.counts);
    assert_eq!(readback.delta.digest, readback.duckdb.digest);
}

#[test]
fn late_data_rebuilds_its_day_and_a_second_round_commits_nothing() {
    let _shared = crate::beside_others();
    let folder = FolderLake::new();
    let lake = &folder.lake;

    let mut day_1 = readings("ws-a", DAY_1, 1..=300);
    day_1.extend(readings("ws-b", DAY_1, 1..=300));
    put_raw(lake, DAY_1, "i1-000000000001", &day_1);
    // A resend of 100 of them, as a second ingest of a share group writes it.
    put_raw(lake, DAY_1, "i2-000000000001", &day_1[..100]);
    let mut day_2 = readings("ws-a", DAY_2, 301..=500);
    // A clock before 2020: the ingest files it under its arrival day and says so.
    let suspect = reading("ws-c", 1, "2019-01-01T00:00:00.000Z");
    let suspect = suspect.strip_suffix('}').expect("an object");
    day_2.push(format!(r#"{suspect},"ts_suspect":true}}"#));
    put_raw(lake, DAY_2, "i1-000000000002", &day_2);

    let first = folder.compact();
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    let report = first.report.clone().expect("report");
    assert_eq!(report["commits"], 2, "one commit per day: {report}");
    assert_eq!(report["rows_in"], 901);
    assert_eq!(report["rows_out"], 801);
    assert_eq!(report["duplicates"], 100);
    let before = folder.readings();
    assert_once(&before);
    assert_eq!(before.delta.rows, 801);
    assert_eq!(
        (
            count(&before, "ws-a"),
            count(&before, "ws-b"),
            count(&before, "ws-c")
        ),
        (500, 300, 1)
    );
    for (column, duck) in [
        ("ts", "TIMESTAMP WITH TIME ZONE"),
        ("received", "TIMESTAMP WITH TIME ZONE"),
        ("seq", "BIGINT"),
        ("ts_suspect", "BOOLEAN"),
        ("metrics", "MAP(VARCHAR, DOUBLE)"),
        ("device", "VARCHAR"),
    ] {
        assert_eq!(
            before.duckdb.types.get(column).map(String::as_str),
            Some(duck),
            "{column}: {:?}",
            before.duckdb.types
        );
    }
    assert!(
        before.delta.types["ts"].contains("timestamp"),
        "{:?}",
        before.delta.types
    );
    assert!(
        before.delta.types["metrics"].contains("Map"),
        "{:?}",
        before.delta.types
    );
    assert!(before.delta.types.contains_key("dt"));

    // Run again: the same rows, and no commit.
    let again = folder.compact();
    assert_eq!(again.commits(), 0, "{}", again.stderr);
    let same = folder.readings();
    assert_eq!(
        (same.version, &same.delta.digest),
        (before.version, &before.delta.digest)
    );

    // What a killed round leaves: a file no commit names, here ten days old; the next round
    // that commits removes it (VACUUM, full), as it is past the retention.
    let orphan = lake.join(format!(
        "curated/readings/dt={DAY_1}/part-00000-orphan.zstd.parquet"
    ));
    std::fs::write(&orphan, b"not committed").expect("orphan");
    let ten_days_ago = std::time::SystemTime::now() - Duration::from_secs(10 * 86_400);
    std::fs::File::options()
        .write(true)
        .open(&orphan)
        .and_then(|f| f.set_modified(ten_days_ago))
        .expect("orphan's age");

    // Late data for day 1, with resends of rows it has: one commit replaces the day.
    let mut late = readings("ws-b", DAY_1, 301..=400);
    late.extend(readings("ws-b", DAY_1, 250..=300));
    put_raw(lake, DAY_1, "i2-000000000002", &late);
    let round = folder.compact();
    assert_eq!(round.commits(), 1, "only day 1 changed: {}", round.stderr);
    let after = folder.readings();
    assert_once(&after);
    // The day's commit, then VACUUM's two (start and end), as it removed the orphan.
    assert_eq!(after.version, before.version + 3);
    assert_eq!(count(&after, "ws-b"), 400);
    let day_1_files = |r: &Readback| -> Vec<String> {
        r.files
            .iter()
            .filter(|f| f.contains(&format!("dt={DAY_1}")))
            .cloned()
            .collect()
    };
    assert!(
        day_1_files(&after)
            .iter()
            .all(|f| !day_1_files(&before).contains(f)),
        "day 1's files were replaced: {:?} then {:?}",
        before.files,
        after.files
    );
    assert!(
        before.files.iter().all(|f| Path::new(f).exists()),
        "replaced files stay for readers of older versions"
    );
    assert!(
        !orphan.exists(),
        "a file no commit names goes after the retention"
    );
}

#[test]
fn a_compactor_killed_at_any_point_leaves_a_readable_table() {
    let _shared = crate::beside_others();
    let folder = FolderLake::new();
    folder.put(DAY_1, "i1-000000000001", "ws-a", 1..=2000);
    assert_eq!(folder.compact().commits(), 1);

    let mut late = readings("ws-a", DAY_1, 2001..=4000);
    late.extend(readings("ws-a", DAY_1, 1..=500));
    put_raw(&folder.lake, DAY_1, "i1-000000000002", &late);
    let mut rng = rand::rng();
    for kill in 0..6 {
        let log = folder.dir.path().join(format!("compact-{kill}.log"));
        let mut proc = compactor(&bin(), &folder.config, &[], &log);
        proc.start();
        std::thread::sleep(Duration::from_millis(rng.random_range(0..250)));
        proc.kill9();
        let seen = folder.readings();
        assert_once(&seen);
        assert!(
            [2000, 4000].contains(&count(&seen, "ws-a")),
            "the day before or after, never half: {:?}",
            seen.delta.counts
        );
    }
    let last = folder.compact();
    assert_eq!(last.code, Some(0), "{}", last.stderr);
    let done = folder.readings();
    assert_once(&done);
    assert_eq!(count(&done, "ws-a"), 4000);
    assert_eq!(folder.compact().commits(), 0);
}

/// Every file and folder under `root` fsynced, as the ingest leaves its raw objects.
fn sync_tree(root: &Path) {
    for entry in std::fs::read_dir(root).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sync_tree(&path);
        } else {
            std::fs::File::open(&path)
                .and_then(|f| f.sync_all())
                .expect("fsync");
        }
    }
    std::fs::File::open(root)
        .and_then(|f| f.sync_all())
        .expect("fsync a folder");
}

const CURATED_CUTS: u64 = 8;

/// Each folder from `dir` up to `root` fsynced: their names durable.
fn sync_up(dir: &Path, root: &Path) {
    for up in dir.ancestors().take_while(|up| up.starts_with(root)) {
        std::fs::File::open(up)
            .and_then(|f| f.sync_all())
            .expect("fsync a folder");
    }
}

/// The same, with the power cut instead of the process killed: the lake on the power-cut
/// filesystem (`ferry_tests::powercut`), which keeps only what was fsynced. A commit cut
/// at any moment leaves a table delta-rs and DuckDB read, with its day whole before or
/// after, and the next round finishes the work.
#[test]
fn a_power_cut_during_a_commit_leaves_a_readable_table_whole_before_or_after() {
    let _shared = crate::beside_others();
    let mut fs = ferry_tests::powercut::PowerCutFs::mount();
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = fs.join("lake");
    let config = dir.path().join("compact.toml");
    let text = format!(
        "data_dir = \"{}\"\n[lake]\nroot = \"{}\"\n",
        fs.join("data").display(),
        lake.display()
    );
    std::fs::write(&config, text).expect("config");
    put_raw(
        &lake,
        DAY_1,
        "i1-000000000001",
        &readings("ws-a", DAY_1, 1..=2000),
    );
    // The raw objects durable, as the ingest leaves them; the compactor's own files only
    // as it makes them.
    let raw = lake.join("raw");
    sync_tree(&raw);
    sync_up(&raw, fs.path());
    let first = compact_once(&bin(), &config, &[]);
    assert_eq!(first.commits(), 1, "{}", first.stderr);

    let table = lake.join("curated/readings").display().to_string();
    let mut rng = rand::rng();
    let mut outcomes = BTreeMap::<&str, u32>::new();
    let (mut rows, mut raw_total) = (2000, 2000);
    for cut in 0..CURATED_CUTS {
        // Each round has a day to rebuild: 500 late readings and 100 resent.
        let mut late = readings("ws-a", DAY_1, raw_total + 1..=raw_total + 500);
        late.extend(readings("ws-a", DAY_1, 1..=100));
        put_raw(&lake, DAY_1, &format!("i1-{:012}", cut + 2), &late);
        sync_tree(&raw);
        raw_total += 500;
        let log = dir.path().join(format!("compact-{cut}.log"));
        let mut proc = compactor(&bin(), &config, &[], &log);
        proc.start();
        std::thread::sleep(Duration::from_millis(rng.random_range(0..1500)));
        let report = fs.cut();
        proc.kill9();
        fs.remount();
        let seen = read_table(&table, &[], &[]);
        assert_once(&seen);
        let now = count(&seen, "ws-a");
        let reported = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("day compacted");
        println!(
            "curated cut {cut}: table version {}, {now} rows of {raw_total}; commit reported: \
             {reported}; the cut reverted {} files and {} folders, lost {} entries",
            seen.version, report.files_reverted, report.dirs_reverted, report.nodes_lost
        );
        assert!(
            now == rows || now == raw_total,
            "the day before ({rows}) or after ({raw_total}), never between: {:?}",
            seen.delta.counts
        );
        if reported {
            assert_eq!(now, raw_total, "a commit the compactor reported was lost");
        }
        *outcomes
            .entry(if now == raw_total { "after" } else { "before" })
            .or_default() += 1;
        rows = now;
    }
    let last = compact_once(&bin(), &config, &[]);
    assert_eq!(last.code, Some(0), "{}", last.stderr);
    let done = read_table(&table, &[], &[]);
    assert_once(&done);
    assert_eq!(count(&done, "ws-a"), raw_total);
    println!("{CURATED_CUTS} power cuts during compaction rounds: the table was {outcomes:?}");
}

#[test]
fn one_compactor_at_a_time_on_a_folder() {
    let _shared = crate::beside_others();
    let folder = FolderLake::new();
    folder.put(DAY_1, "i1-000000000001", "ws-a", 1..=3000);
    folder.put(DAY_2, "i1-000000000002", "ws-a", 3001..=6000);

    // Two started at once: one does the work, the other finds the lease or nothing left.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| folder.compact());
        let b = s.spawn(|| folder.compact());
        (a.join().expect("a"), b.join().expect("b"))
    });
    let mut commits = 0;
    for round in [&a, &b] {
        match round.code {
            Some(0) => commits += round.commits(),
            _ => assert!(
                round
                    .stderr
                    .contains("another compactor holds the lake's lease"),
                "{}",
                round.stderr
            ),
        }
    }
    assert_eq!(commits, 2, "each day compacted once: {a:?} {b:?}");
    let seen = folder.readings();
    assert_once(&seen);
    assert_eq!(count(&seen, "ws-a"), 6000);

    // While another process holds the lock, a compactor says so and changes nothing.
    folder.put(DAY_2, "i1-000000000003", "ws-b", 1..=10);
    let lock = std::fs::File::open(folder.lake.join("curated/.lease")).expect("lease file");
    lock.try_lock().expect("the test takes the lock");
    let refused = folder.compact();
    assert_ne!(refused.code, Some(0));
    assert!(
        refused
            .stderr
            .contains("another compactor holds the lake's lease"),
        "{}",
        refused.stderr
    );
    drop(lock);
    assert_eq!(folder.compact().commits(), 1);
}

fn write_lease(s3: &S3Server, owner: &str, expires_at_ms: i64) {
    let path = s3
        .bucket_dir(crate::BUCKET)
        .join("lake/curated/_lease.json");
    std::fs::create_dir_all(path.parent().expect("parent")).expect("folder");
    std::fs::write(
        &path,
        serde_json::json!({"owner": owner, "expires_at_ms": expires_at_ms}).to_string(),
    )
    .expect("lease");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_group_with_resends_and_a_kill_compacts_to_each_record_once_on_s3() {
    let _serial = crate::one_at_a_time().await;
    let crate::ShareGroup {
        broker,
        s3,
        dirs,
        mut ingests,
    } = crate::share_group("ingest-curated").await;

    let devices = 6;
    let per_device = 1_000;
    let mut messages = Vec::new();
    for d in 0..devices {
        messages.push(device_messages(
            &format!("ws-cur-{d}"),
            &spool_id(d),
            per_device,
            50,
            Timestamp::now(),
        ));
    }
    let (first_half, second_half): (Vec<_>, Vec<_>) = messages
        .iter()
        .flat_map(|m| m.iter().cloned().enumerate())
        .partition(|(i, _)| *i < 20);
    let strip = |v: Vec<(usize, ferry_tests::devices::Message)>| -> Vec<_> {
        v.into_iter().map(|(_, m)| m).collect()
    };
    let (first_half, second_half) = (strip(first_half), strip(second_half));
    publish_all(broker.port, "curated-devices", &first_half).await;
    ingests[1].proc.kill9();
    publish_all(broker.port, "curated-devices", &second_half).await;
    ingests[1].proc.start();
    ingests[1].wait_subscribed().await;
    // The devices resend the first half, as after a reconnect. Mosquitto hands a share
    // group's messages out in turn (offline members included), so one extra message first
    // makes each copy go to the member that did not take the original: it writes the
    // record again, as the README says a share group may.
    publish_all(broker.port, "curated-resends", &first_half[..1]).await;
    publish_all(broker.port, "curated-resends", &first_half).await;
    ingests[0]
        .wait_for_records(devices * per_device as usize, Duration::from_secs(120))
        .await;
    for ingest in &ingests {
        ferry_tests::wait_until(Duration::from_secs(60), "the ingests are idle", || {
            ingest.metric("ferry_ingest_unacked_messages") == 0.0
                && ingest.metric("ferry_ingest_oldest_unflushed_seconds") == 0.0
        })
        .await;
    }
    let raw_lines: usize = ingests[0].lake().iter().map(|o| o.lines.len()).sum();

    let config = dirs[0].path().join("cloud.toml");
    let env = s3.client_env();
    tokio::task::block_in_place(|| {
        // A live lease of another compactor: refused, naming it.
        let far = chrono::Utc::now().timestamp_millis() + 3_600_000;
        write_lease(&s3, "compactor-elsewhere", far);
        let refused = compact_once(&bin(), &config, &env);
        assert_ne!(refused.code, Some(0));
        assert!(
            refused.stderr.contains("compactor-elsewhere"),
            "{}",
            refused.stderr
        );
        // Its holder died and the lease expired: taken over.
        write_lease(&s3, "compactor-elsewhere", 0);
        let round = compact_once(&bin(), &config, &env);
        assert_eq!(round.code, Some(0), "{}", round.stderr);
        let report = round.report.expect("report");
        assert_eq!(report["rows_in"], raw_lines as u64, "{report}");
        assert_eq!(report["rows_out"], devices as u64 * per_device, "{report}");
        assert!(
            report["duplicates"].as_u64() > Some(0),
            "the raw lake held resends for the curated layer to drop: {report}"
        );

        let storage = [
            ("AWS_ENDPOINT_URL", s3.endpoint()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
        ];
        let bucket = s3.bucket_dir(crate::BUCKET);
        let bucket_url = format!("s3://{}/", crate::BUCKET);
        let local = [(bucket_url.as_str(), bucket.as_path())];
        let table = |name: &str| {
            read_table(
                &format!("s3://{}/lake/curated/{name}", crate::BUCKET),
                &storage,
                &local,
            )
        };
        // device_messages: seq % 10 == 0 a transaction, == 5 an event, else a reading.
        for (name, each) in [
            ("readings", per_device * 8 / 10),
            ("events", per_device / 10),
            ("transactions", per_device / 10),
        ] {
            let seen = table(name);
            assert_once(&seen);
            let expected: BTreeMap<String, u64> = (0..devices)
                .map(|d| (format!("ws-cur-{d}/{}", spool_id(d)), each))
                .collect();
            assert_eq!(seen.delta.counts, expected, "{name}");
        }
        let transactions = table("transactions");
        for column in [
            "tx_id", "op", "program", "card", "store", "offline", "outcome",
        ] {
            assert!(
                transactions.duckdb.types.contains_key(column),
                "{column}: {:?}",
                transactions.duckdb.types
            );
        }
        assert_eq!(transactions.duckdb.types["qty"], "BIGINT");

        let before = table("readings");
        assert_eq!(compact_once(&bin(), &config, &env).commits(), 0);
        let after = table("readings");
        assert_eq!(
            (after.version, after.delta.digest),
            (before.version, before.delta.digest)
        );
    });
    for ingest in &mut ingests {
        assert_eq!(ingest.proc.terminate(), Some(0), "{}", ingest.proc.log());
    }
}

#[test]
fn a_transaction_the_ledger_rejected_says_so_with_its_reason() {
    let _shared = crate::beside_others();
    let folder = FolderLake::new();
    let lake = &folder.lake;
    let txn = |seq: u64, tx_id: &str| {
        format!(
            r#"{{"seq":{seq},"ts":"{DAY_1}T09:00:0{seq}.000Z","type":"txn","tx_id":"{tx_id}","op":"redeem","program":"coffee","card":"C-1","store":"S-1","qty":1,"device":"pos-1","spool":"{spool}","received_at":"{DAY_1}T09:00:0{seq}.500Z"}}"#,
            spool = spool_id(0)
        )
    };
    let lines = [txn(1, "T-1"), txn(2, "T-2")];
    put_object(
        lake,
        &format!("raw/type=txn/dt={DAY_1}/hour=09"),
        "i1-000000000001",
        &lines,
    );
    // The router's trace of T-1, the next day (the ledger was down overnight).
    let payload = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &lines[0]);
    let reject = format!(
        r#"{{"received_at":"{DAY_2}T08:00:00.000Z","topic":"ferry/v1/pos-1/transactions","reason":"loyalty_insufficient_balance","payload_b64":"{payload}"}}"#
    );
    put_object(
        lake,
        &format!("errors/dt={DAY_2}"),
        "i1-000000000009",
        &[reject],
    );

    assert_eq!(folder.compact().commits(), 1);
    let rows = query(
        &lake.join("curated/transactions"),
        "SELECT tx_id, outcome, reason FROM t ORDER BY tx_id",
    );
    assert_eq!(
        rows,
        serde_json::json!([
            ["T-1", "rejected", "insufficient_balance"],
            ["T-2", null, null]
        ])
    );
}
