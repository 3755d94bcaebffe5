//! Admission time against the dedup state's size. A journal is filled with sparse seqs
//! (every other one: the worst case, one seq range per record, as a long backlog of
//! transactions drained before its telemetry makes), then timed admitting messages of 50
//! new sparse seqs each, durably (WAL, `synchronous=FULL`). Baseline in the same run: the
//! same admissions into an empty journal.
//!
//!     cargo bench -p ferry-cloud --bench dedup      # FERRY_BENCH_MAX=100000 for a quick look

use std::time::Instant;

use ferry_cloud::ingest::{Journal, Queues, admission};
use ferry_shared::record::Unsequenced;
use ferry_shared::{Compression, DeviceId, EnvelopeWriter, RecordBody, SpoolId, Timestamp, encode};

const TOPIC: &str = "ferry/v1/ws-bench/telemetry";
const TIMED: u64 = 300;
const PER_MESSAGE: u64 = 50;

/// One message of readings with seqs `2i + 1` for `i` in `from..to`.
fn message(from: u64, to: u64) -> Vec<u8> {
    let device = DeviceId::new("ws-bench").expect("id");
    let spool = SpoolId::new("01JD3W6Q3X8F2M7C9K4N5P6R8T").expect("spool");
    let mut env = EnvelopeWriter::new(&device, &spool, Timestamp::now());
    let record = Unsequenced::new(
        Timestamp::now(),
        RecordBody::Reading {
            sensor: "bme280".into(),
            metrics: [("temperature_c".to_owned(), 21.5)].into(),
        },
    )
    .to_spool_json()
    .expect("record");
    for i in from..to {
        env.push(2 * i + 1, &record);
    }
    // Gzipped, as the agent sends a large envelope: it stays under the payload limit.
    encode(env.finish().as_bytes(), Compression::Auto(1))
}

fn admit(journal: &mut Journal, payload: &[u8]) {
    let now = Timestamp::now();
    journal
        .admit(
            vec![admission(TOPIC, payload, now, false)],
            now.unix_millis(),
        )
        .expect("admit");
}

/// Mean ms per admission after `history` sparse seqs.
fn run(history: u64) -> (f64, usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut journal = Journal::open(dir.path(), Queues::default()).expect("journal");
    let mut next = 0;
    while next < history {
        let to = (next + 2_000).min(history);
        admit(&mut journal, &message(next, to));
        next = to;
    }
    let ranges = journal.seen_ranges("ws-bench", "01JD3W6Q3X8F2M7C9K4N5P6R8T");
    let start = Instant::now();
    for _ in 0..TIMED {
        admit(&mut journal, &message(next, next + PER_MESSAGE));
        next += PER_MESSAGE;
    }
    (
        start.elapsed().as_secs_f64() * 1000.0 / TIMED as f64,
        ranges,
    )
}

fn main() {
    let max: u64 = std::env::var("FERRY_BENCH_MAX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let sizes: Vec<u64> = [0, 10_000, 100_000, 1_000_000]
        .into_iter()
        .filter(|s| *s <= max)
        .collect();
    let baseline = run(0).0;
    println!("| sparse seqs admitted before | ranges kept | ms per admission | ratio to empty |");
    println!("|---:|---:|---:|---:|");
    for size in sizes {
        let (ms, ranges) = run(size);
        println!("| {size} | {ranges} | {ms:.2} | {:.2} |", ms / baseline);
    }
}
