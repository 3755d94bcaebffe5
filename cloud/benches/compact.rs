//! The curated lake: compaction speed, Parquet's size, and an analyst's query on each layer.
//!
//!     cargo bench -p ferry-cloud --bench compact          # 1M readings; or pass a number
//!
//! A month of readings (50 stations, three metrics each, 30 days) as the ingest writes
//! them: one gzipped NDJSON object per type, day and hour, level 6. Then, in one run:
//! - floor: gunzip and count the lines of every raw object (no JSON, no Parquet);
//! - compact: one `Compactor::run_once` in this process (a thread for the compactor's
//!   runtime, as `all` runs it), every day of the month, ZSTD Parquet and a Delta commit per
//!   day; CPU seconds of the whole process;
//! - DuckDB: `COPY (SELECT * FROM read_json_auto(raw)) TO parquet (ZSTD)`, what an analyst
//!   might run instead (no dedupe, no sort, no table), in its own process;
//! - the query: average temperature per station and day over the month, by DuckDB, on the
//!   raw objects and on the curated files (best of three each).
//!
//! Reported: records/s per CPU second of each, their ratios, bytes per record of each layer,
//! and the query's time on each layer with their ratio.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use ferry_cloud::config::CloudConfig;
use ferry_cloud::curated::Compactor;
use ferry_tests::process::cpu_seconds;

const STATIONS: u64 = 50;
const DAYS: u64 = 30;

fn main() {
    let records: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let lake = dir.path().join("lake");
    let raw_bytes = write_month(&lake, records);
    println!(
        "{records} readings, {STATIONS} stations, {DAYS} days: {} raw objects, {:.1} MB gzipped NDJSON",
        DAYS * 24,
        raw_bytes as f64 / 1e6
    );

    let (floor_cpu, lines) = measure(|| gunzip_all(&lake.join("raw")));
    assert_eq!(lines, records, "the floor read every line");

    let config = CloudConfig::parse(
        &format!(
            "data_dir = \"{}\"\n[lake]\nroot = \"{}\"\n",
            dir.path().join("data").display(),
            lake.display()
        ),
        [],
    )
    .expect("config");
    let lake_cfg = config.lake.expect("lake");
    let (compact_cpu, report) = measure(|| {
        std::thread::Builder::new()
            .name("compactor".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async {
                    Compactor::new(&lake_cfg, None, Arc::default())
                        .expect("compactor")
                        .run_once(None)
                        .await
                        .expect("compaction")
                })
            })
            .expect("compactor thread")
            .join()
            .expect("compactor thread")
    });
    assert_eq!(report.rows_out, records, "{report:?}");
    assert_eq!(report.commits, DAYS, "{report:?}");
    let curated_bytes = folder_bytes(&lake.join("curated/readings"), ".parquet");

    let duck_out = dir.path().join("duckdb.parquet");
    let duck_cpu = duckdb_cpu(&format!(
        "COPY (SELECT * FROM read_json_auto('{}/raw/*/*/*/*.ndjson.gz', hive_partitioning = true)) \
         TO '{}' (FORMAT parquet, COMPRESSION zstd)",
        lake.display(),
        duck_out.display()
    ));

    let per_cpu = |cpu: f64| records as f64 / cpu;
    println!(
        "floor (gunzip, count lines)    {:>10.0} records/s per CPU second",
        per_cpu(floor_cpu)
    );
    println!(
        "ferry-cloud compact            {:>10.0} records/s per CPU second ({:.2} CPU s; {:.2} x the floor's time)",
        per_cpu(compact_cpu),
        compact_cpu,
        compact_cpu / floor_cpu
    );
    println!(
        "DuckDB COPY raw -> Parquet     {:>10.0} records/s per CPU second (compact: {:.2} x DuckDB's rate)",
        per_cpu(duck_cpu),
        duck_cpu / compact_cpu
    );
    println!(
        "bytes per record: raw NDJSON.gz {:.1}, curated Parquet (ZSTD) {:.1} ({:.2} x raw)",
        raw_bytes as f64 / records as f64,
        curated_bytes as f64 / records as f64,
        curated_bytes as f64 / raw_bytes as f64
    );

    let raw_query = format!(
        "SELECT device, dt, avg(metrics.temperature_c) FROM read_json_auto(\
         '{}/raw/type=reading/*/*/*.ndjson.gz', hive_partitioning = true) GROUP BY ALL",
        lake.display()
    );
    let curated_query = format!(
        "SELECT device, dt, avg(metrics['temperature_c']) FROM read_parquet(\
         '{}/curated/readings/*/*.parquet', hive_partitioning = true) GROUP BY ALL",
        lake.display()
    );
    let raw_s = duckdb_query_seconds(&raw_query);
    let curated_s = duckdb_query_seconds(&curated_query);
    println!(
        "daily average per station over the month (DuckDB): raw {:.3} s, curated {:.3} s ({:.1} x faster)",
        raw_s,
        curated_s,
        raw_s / curated_s
    );
}

/// `work`'s result and the CPU seconds this process spent on it.
fn measure<T>(work: impl FnOnce() -> T) -> (f64, T) {
    let pid = std::process::id();
    let before = cpu_seconds(pid);
    let out = work();
    (cpu_seconds(pid) - before, out)
}

/// `records` readings over the month, one object per day and hour; returns their bytes.
fn write_month(lake: &Path, records: u64) -> u64 {
    let per_hour = records.div_ceil(DAYS * 24);
    let mut seq = vec![0u64; STATIONS as usize];
    let mut written = 0u64;
    let mut bytes = 0u64;
    for day in 0..DAYS {
        for hour in 0..24 {
            let dt = format!("2026-10-{:02}", day + 1);
            let dir = lake.join(format!("raw/type=reading/dt={dt}/hour={hour:02}"));
            std::fs::create_dir_all(&dir).expect("partition");
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
            let in_hour = per_hour.min(records - written);
            for i in 0..in_hour {
                let station = (i % STATIONS) as usize;
                seq[station] += 1;
                let second = i * 3600 / in_hour.max(1);
                let ts = format!(
                    "{dt}T{hour:02}:{:02}:{:02}.{:03}Z",
                    second / 60,
                    second % 60,
                    i % 1000
                );
                let s = seq[station];
                writeln!(
                    gz,
                    r#"{{"seq":{s},"ts":"{ts}","type":"reading","sensor":"bme280","metrics":{{"temperature_c":{t:.1},"humidity_pct":{h:.1},"pressure_hpa":{p:.1}}},"device":"ws-{station:03}","spool":"01JD3W6Q3X8F2M7C9K4N5P{station:04}","received_at":"{ts}"}}"#,
                    t = 5.0 + (s % 200) as f64 / 10.0,
                    h = 40.0 + (s % 400) as f64 / 10.0,
                    p = 990.0 + (s % 300) as f64 / 10.0,
                )
                .expect("line");
            }
            written += in_hour;
            let object = gz.finish().expect("gzip");
            bytes += object.len() as u64;
            std::fs::write(
                dir.join(format!("bench-{day:03}{hour:02}.ndjson.gz")),
                object,
            )
            .expect("object");
        }
    }
    bytes
}

fn gunzip_all(dir: &Path) -> u64 {
    let mut lines = 0;
    let mut text = Vec::new();
    for path in files(dir, ".ndjson.gz") {
        let gz = std::fs::read(&path).expect("object");
        text.clear();
        flate2::read::MultiGzDecoder::new(&gz[..])
            .read_to_end(&mut text)
            .expect("gunzip");
        lines += text.iter().filter(|&&b| b == b'\n').count() as u64;
    }
    lines
}

fn files(dir: &Path, suffix: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("folder").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(suffix) {
                out.push(path);
            }
        }
    }
    out
}

fn folder_bytes(dir: &Path, suffix: &str) -> u64 {
    files(dir, suffix)
        .iter()
        .map(|p| std::fs::metadata(p).expect("size").len())
        .sum()
}

/// Runs `sql` in DuckDB (Python), returning the CPU seconds it spent (user and system).
fn duckdb_cpu(sql: &str) -> f64 {
    let script = "import duckdb, resource, sys\n\
                  duckdb.sql(sys.argv[1])\n\
                  u = resource.getrusage(resource.RUSAGE_SELF)\n\
                  print(u.ru_utime + u.ru_stime)";
    python(script, sql)
}

/// The best of three wall-clock times of `sql`, in one DuckDB process.
fn duckdb_query_seconds(sql: &str) -> f64 {
    let script = "import duckdb, sys, time\n\
                  best = None\n\
                  for _ in range(3):\n\
                  \x20   start = time.perf_counter()\n\
                  \x20   duckdb.sql(sys.argv[1]).fetchall()\n\
                  \x20   took = time.perf_counter() - start\n\
                  \x20   best = took if best is None else min(best, took)\n\
                  print(best)";
    python(script, sql)
}

fn python(script: &str, arg: &str) -> f64 {
    let out = Command::new("python3")
        .args(["-c", script, arg])
        .output()
        .expect("python3 (pip install duckdb)");
    assert!(
        out.status.success(),
        "{arg}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a number")
}
