//! History query latency: a week at 1-minute steps for one device and metric, from a hot
//! store holding 20 devices that wrote one reading per second for 7 simulated days
//! (12,096,000 readings), on SQLite.
//!
//!     cargo bench -p ferry-cloud --bench dashboard            # 20 devices, 7 days
//!     FERRY_BENCH_DAYS=1 cargo bench -p ferry-cloud --bench dashboard   # a quicker look
//!
//! - The store is filled through `HotStore::write`, the ingest's own path (raw rows,
//!   rollups, latest values), in batches of one simulated hour of all devices.
//! - The query is what `GET /v1/devices/{id}/readings?step=1m` runs, including turning the
//!   answer into JSON; 200 queries over random devices, after 5 to warm up.
//! - The write path is also timed on a durable PostgreSQL for four simulated hours, against
//!   the same hours into a fresh SQLite file.
//! - The baseline, in the same run on the same file: the same aggregates computed from the
//!   raw readings (GROUP BY minute over ~600,000 rows), which is what a store without
//!   rollups must do for every such chart. Its ratio to the rollup query is what the
//!   rollups buy.

use std::time::{Duration, Instant};

use ferry_cloud::hot::{HotItem, HotStore};
use ferry_shared::Timestamp;
use ferry_tests::postgres::Postgres;

const DEVICES: usize = 20;
const MINUTE_MS: i64 = 60_000;
const QUERIES: usize = 200;
const BASELINE_QUERIES: usize = 10;
/// Simulated hours written to both stores to compare their write paths.
const WRITE_HOURS: i64 = 4;

/// One simulated hour of every device, from `start`.
fn hour_of(devices: &[String], start: i64, hour: i64) -> Vec<HotItem> {
    let mut batch = Vec::with_capacity(devices.len() * 3600);
    for (d, device) in devices.iter().enumerate() {
        for s in 0..3600i64 {
            let second = hour * 3600 + s;
            let value = 12.0 + 6.0 * ((second as f64) / 3600.0 + d as f64).sin();
            batch.push(HotItem::Reading {
                device: device.clone(),
                spool: "bench".into(),
                seq: second as u64 + 1,
                ts_ms: start + second * 1000,
                ts_suspect: false,
                metrics: [("temperature_c".to_owned(), value)].into(),
            });
        }
    }
    batch
}

/// Readings per second through `HotStore::write` for `hours` simulated hours.
fn fill_rate(
    store: &mut HotStore,
    devices: &[String],
    start: i64,
    hours: i64,
    keep: i64,
    now: i64,
) -> f64 {
    let began = Instant::now();
    let mut written = 0;
    for hour in 0..hours {
        written += store
            .write(&hour_of(devices, start, hour), &[], keep, now)
            .expect("write")
            .stored;
    }
    written as f64 / began.elapsed().as_secs_f64()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let days: i64 = std::env::var("FERRY_BENCH_DAYS")
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(7);
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("hot.db").display());
    let mut store = HotStore::open(&url).expect("hot store");
    let now = Timestamp::now().unix_millis() / MINUTE_MS * MINUTE_MS;
    let start = now - days * 24 * 3600 * 1000;
    let keep = (days + 1) * 24 * 3600 * 1000;
    let devices: Vec<String> = (0..DEVICES).map(|d| format!("ws-{d:02}")).collect();

    let fill = Instant::now();
    let mut written = 0u64;
    let hours = days * 24;
    for hour in 0..hours {
        let outcome = store
            .write(&hour_of(&devices, start, hour), &[], keep, now)
            .expect("write");
        written += outcome.stored;
        if hour % 24 == 23 {
            eprintln!(
                "filled {} of {days} days ({written} readings, {:.0} s)",
                (hour + 1) / 24,
                fill.elapsed().as_secs_f64()
            );
        }
    }
    let fill_s = fill.elapsed().as_secs_f64();
    let db_bytes = std::fs::metadata(dir.path().join("hot.db"))
        .map(|m| m.len())
        .unwrap_or_default();

    let pick = |i: usize| &devices[(i * 7) % DEVICES];
    let mut query = |i: usize| {
        let began = Instant::now();
        let series = store
            .rollup(pick(i), "temperature_c", start, now, MINUTE_MS)
            .expect("rollup");
        let json = serde_json::to_vec(&series).expect("json");
        let took = began.elapsed();
        assert_eq!(series.len() as i64, days * 24 * 60, "one point per minute");
        assert!(json.len() > 1000);
        took
    };
    for i in 0..5 {
        query(i);
    }
    let mut took: Vec<Duration> = (0..QUERIES).map(&mut query).collect();
    took.sort();
    let mut base: Vec<Duration> = (0..BASELINE_QUERIES)
        .map(|i| {
            let began = Instant::now();
            let points = store
                .rollup_from_raw(pick(i), "temperature_c", start, now, MINUTE_MS)
                .expect("baseline");
            assert_eq!(points as i64, days * 24 * 60);
            began.elapsed()
        })
        .collect();
    base.sort();
    let (p50, p95, p99) = (
        percentile(&took, 0.5),
        percentile(&took, 0.95),
        percentile(&took, 0.99),
    );
    let base_p50 = percentile(&base, 0.5);
    println!(
        "hot store: {DEVICES} devices x 1 reading/s x {days} days = {written} readings, \
         filled in {fill_s:.0} s ({:.0} readings/s), {:.0} MiB on disk",
        written as f64 / fill_s,
        db_bytes as f64 / (1024.0 * 1024.0)
    );
    println!(
        "{days}-day query at 1-min steps ({} points, JSON included), {QUERIES} queries: \
         p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms (goal p95 < 100 ms)",
        days * 24 * 60,
        ms(p50),
        ms(p95),
        ms(p99)
    );
    // The write path on a durable PostgreSQL (fsync on), a few simulated hours, against the
    // same hours into a fresh SQLite file.
    let pg = Postgres::start_durable();
    let mut on_pg = HotStore::open(&pg.database("hot")).expect("hot store on PostgreSQL");
    let pg_rate = fill_rate(&mut on_pg, &devices, start, WRITE_HOURS, keep, now);
    let fresh = tempfile::tempdir().expect("tempdir");
    let mut on_sqlite = HotStore::open(&format!(
        "sqlite://{}",
        fresh.path().join("hot.db").display()
    ))
    .expect("hot store");
    let sqlite_rate = fill_rate(&mut on_sqlite, &devices, start, WRITE_HOURS, keep, now);
    println!(
        "write path, {WRITE_HOURS} simulated hours of {DEVICES} devices ({} readings, one batch \
         per hour): PostgreSQL {pg_rate:.0} readings/s, SQLite {sqlite_rate:.0} readings/s \
         (ratio {:.2})",
        DEVICES * 3600 * WRITE_HOURS as usize,
        pg_rate / sqlite_rate
    );
    println!(
        "baseline, the same aggregates from raw readings, {BASELINE_QUERIES} queries: p50 {:.0} ms; \
         rollups are {:.0}x faster at the median",
        ms(base_p50),
        base_p50.as_secs_f64() / p50.as_secs_f64()
    );
}
