//! Object names and sizes follow the flush rules, and DuckDB reads the local lake folder as
//! is, with the SQL the README documents, giving the right count per partition.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use ferry_shared::Timestamp;
use ferry_tests::broker::Mosquitto;
use ferry_tests::devices::{device_messages, publish_all};
use ferry_tests::lake::Object;

use crate::{Lake, assert_exactly_once, ingest, spool_id};

const FLUSH_BYTES: u64 = 65_536;

/// The README's query (section "Querying the lake"), with the root filled in.
fn duckdb_sql(root: &str) -> String {
    format!(
        "SELECT type, CAST(dt AS VARCHAR) AS dt, CAST(hour AS INTEGER) AS hour, count(*) AS n \
         FROM read_json_auto('{root}/raw/*/*/*/*.ndjson.gz', hive_partitioning = true, union_by_name = true) \
         GROUP BY ALL ORDER BY ALL"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_follow_the_flush_rules_and_duckdb_reads_the_lake() {
    let _serial = crate::one_at_a_time().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let lake_dir = dir.path().join("lake");
    let broker = Mosquitto::start();
    let mut ingest = ingest(
        dir.path(),
        broker.port,
        Lake::Folder(&lake_dir),
        &format!("flush_bytes = {FLUSH_BYTES}"),
    );
    // Long enough that the busiest partitions reach flush_bytes first, whatever the load.
    ingest.proc.env("FERRY_LAKE__FLUSH_INTERVAL_S", "10");
    ingest.proc.start();
    ingest.wait_subscribed().await;

    let mut expected = BTreeMap::new();
    let mut messages = Vec::new();
    // 3 devices x 20,000 records one second apart: about 5.5 hours, 6 or 7 hour partitions.
    for d in 0..3 {
        let device = format!("ws-layout-{d}");
        messages.extend(device_messages(
            &device,
            &spool_id(d),
            20_000,
            500,
            Timestamp::now(),
        ));
        expected.insert((device, spool_id(d)), 20_000);
    }
    publish_all(broker.port, "layout-devices", &messages).await;
    ingest
        .wait_for_records(60_000, Duration::from_secs(120))
        .await;
    let objects = ingest.lake();
    assert_exactly_once(&objects, &expected);

    let mut per_partition: BTreeMap<(String, String, u32), u64> = BTreeMap::new();
    let mut by_size = 0;
    for object in &objects {
        check_name_and_lines(object);
        // Flushed when the compressed size reached flush_bytes; the last deflate block may
        // add a little.
        assert!(
            object.bytes <= FLUSH_BYTES + 64 * 1024,
            "{} is {} bytes",
            object.key,
            object.bytes
        );
        if object.bytes >= FLUSH_BYTES {
            by_size += 1;
        }
        let parts: Vec<&str> = object.key.split('/').collect();
        let key = (
            parts[1].trim_start_matches("type=").to_owned(),
            parts[2].trim_start_matches("dt=").to_owned(),
            parts[3].trim_start_matches("hour=").parse().expect("hour"),
        );
        *per_partition.entry(key).or_insert(0) += object.lines.len() as u64;
    }
    assert!(by_size > 0, "some objects were flushed by size");
    assert!(
        per_partition.len() >= 12,
        "types x hours: {per_partition:?}"
    );

    let got = duckdb_counts(&lake_dir.display().to_string());
    assert_eq!(got, per_partition, "DuckDB's counts per partition");
    assert_eq!(ingest.proc.terminate(), Some(0), "{}", ingest.proc.log());
}

fn check_name_and_lines(object: &Object) {
    let parts: Vec<&str> = object.key.split('/').collect();
    assert_eq!(parts.len(), 5, "{}", object.key);
    assert_eq!(parts[0], "raw");
    let kind = parts[1].strip_prefix("type=").expect("type=");
    let dt = parts[2].strip_prefix("dt=").expect("dt=");
    let hour = parts[3].strip_prefix("hour=").expect("hour=");
    let name = parts[4];
    let (stem, ext) = name.split_once('.').expect("extension");
    assert_eq!(ext, "ndjson.gz");
    let (instance, batch) = stem.split_once('-').expect("instance-batch");
    assert_eq!(instance.len(), 26, "{name}");
    assert!(
        batch.len() == 12 && batch.bytes().all(|b| b.is_ascii_digit()),
        "{name}"
    );
    for line in &object.lines {
        assert_eq!(line["type"], kind);
        let ts = line["ts"].as_str().expect("ts");
        assert_eq!(&ts[..10], dt, "{line}");
        assert_eq!(&ts[11..13], hour, "{line}");
        for field in ["device", "spool", "received_at", "seq"] {
            assert!(!line[field].is_null(), "{field} missing: {line}");
        }
    }
}

fn duckdb_counts(root: &str) -> BTreeMap<(String, String, u32), u64> {
    let script = format!(
        "import duckdb, json\nrows = duckdb.sql({sql:?}).fetchall()\nprint(json.dumps(rows))",
        sql = duckdb_sql(root)
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("running python3");
    assert!(
        out.status.success(),
        "DuckDB query failed (is the duckdb Python package installed? `pip install duckdb`; .ci/run does this):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<(String, String, u32, u64)> =
        serde_json::from_slice(&out.stdout).expect("DuckDB rows as JSON");
    rows.into_iter()
        .map(|(t, d, h, n)| ((t, d, h), n))
        .collect()
}
