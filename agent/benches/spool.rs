//! Durable spool appends per second, against raw batched rusqlite inserts of the same rows,
//! with the same schema and pragmas, in the same run.
//!
//!     cargo bench -p ferry-agent --bench spool [-- ROWS]

use std::time::Instant;

use ferry_agent::spool::{NewRecord, Spool};
use ferry_shared::record::Unsequenced;
use ferry_shared::{RecordBody, Timestamp};

const BATCH: usize = 500;
const WRITERS: usize = 4;

fn records(n: usize) -> Vec<Unsequenced> {
    (0..n)
        .map(|i| {
            let t = i as f64;
            Unsequenced::new(
                Timestamp::now(),
                RecordBody::Reading {
                    sensor: "bme280".into(),
                    metrics: [
                        ("temperature_c".to_owned(), (t / 100.0).sin() * 10.0),
                        ("humidity_pct".to_owned(), 50.0 + (t / 70.0).cos()),
                        ("pressure_hpa".to_owned(), 1013.0 + (t / 300.0).sin()),
                    ]
                    .into(),
                },
            )
        })
        .collect()
}

/// The baseline: one connection, WAL + synchronous=FULL, one transaction per batch.
fn raw_inserts(rows: &[String]) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let conn = rusqlite::Connection::open(dir.path().join("raw.db")).expect("open");
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .expect("wal");
    assert_eq!(mode, "wal");
    conn.pragma_update(None, "synchronous", "FULL")
        .expect("sync");
    conn.execute_batch(include_str!("../migrations/0001_spool.sql"))
        .expect("schema");
    let start = Instant::now();
    let mut seq = 0i64;
    let mut conn = conn;
    for chunk in rows.chunks(BATCH) {
        let tx = conn.transaction().expect("tx");
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO records (seq, class, appended_at, body) VALUES (?1, 1, ?2, ?3)",
                )
                .expect("prepare");
            for body in chunk {
                seq += 1;
                stmt.execute(rusqlite::params![seq, 0i64, body.as_bytes()])
                    .expect("insert");
            }
        }
        tx.commit().expect("commit");
    }
    rows.len() as f64 / start.elapsed().as_secs_f64()
}

fn spool_appends(records: &[Unsequenced]) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    runtime.block_on(async {
        let (spool, writer) = Spool::open(dir.path(), u64::MAX / 2).expect("open");
        let batches: Vec<Vec<NewRecord>> = records
            .chunks(BATCH)
            .map(|c| {
                c.iter()
                    .map(|r| NewRecord::new(r).expect("valid"))
                    .collect()
            })
            .collect();
        let per_writer = batches.len().div_ceil(WRITERS);
        let mut groups: Vec<Vec<Vec<NewRecord>>> = Vec::new();
        let mut it = batches.into_iter().peekable();
        while it.peek().is_some() {
            groups.push(it.by_ref().take(per_writer).collect());
        }
        let start = Instant::now();
        let tasks: Vec<_> = groups
            .into_iter()
            .map(|group| {
                let spool = spool.clone();
                tokio::spawn(async move {
                    for batch in group {
                        spool.append(batch).await.expect("append");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("writer");
        }
        let rate = records.len() as f64 / start.elapsed().as_secs_f64();
        drop(spool);
        writer.join();
        rate
    })
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200_000);
    let records = records(n);
    let rows: Vec<String> = records
        .iter()
        .map(|r| r.to_spool_json().expect("json"))
        .collect();
    // Interleave to share the machine's noise evenly between the two.
    let mut raw = Vec::new();
    let mut spool = Vec::new();
    for _ in 0..3 {
        raw.push(raw_inserts(&rows));
        spool.push(spool_appends(&records));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (raw, spool) = (median(&mut raw), median(&mut spool));
    println!("rows per run            {n} (batches of {BATCH}, {WRITERS} concurrent appenders)");
    println!("raw rusqlite inserts/s  {raw:>12.0}");
    println!("spool appends/s         {spool:>12.0}");
    println!("ratio spool/raw         {:>12.2}", spool / raw);
}
