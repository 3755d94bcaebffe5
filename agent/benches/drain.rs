//! Draining a spooled backlog through the real `ferry-agent` binary to a local Mosquitto.
//!
//!     cargo bench -p ferry-agent --bench drain                       # both scenarios, levels 1, 3, 6
//!     cargo bench -p ferry-agent --bench drain -- local --levels 1   # or: iot-core
//!
//! Two scenarios, each run once per gzip level:
//! - `local`: 200k readings, quotas lifted. Baseline in the same run: `mosquitto_pub -l`
//!   sending the same records as 200-record envelopes (plain JSON, one per line) at QoS 1
//!   to the same broker, with the same subscriber attached.
//! - `iot-core`: 1M readings under the default IoT Core pacing (100 publishes/s, 512 KiB/s).
//!
//! The clock runs from starting the agent until its spool is empty, i.e. until the broker has
//! acknowledged every record and the agent has deleted it; the subscriber must then hold
//! every seq. CPU seconds are the agent's user + system time over the whole run, start-up
//! included; peak RSS is its `VmHWM`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_agent::spool::{Class, NewRecord, Spool, SpoolReader};
use ferry_shared::record::Unsequenced;
use ferry_shared::{DeviceId, EnvelopeWriter, RecordBody, SpoolId, Timestamp};
use ferry_tests::broker::Mosquitto;
use ferry_tests::collector::Collector;
use ferry_tests::process::{cpu_seconds, cpu_seconds_by_thread};
use rand::Rng;
use rusqlite::{Connection, OpenFlags};

const BIN: &str = env!("CARGO_BIN_EXE_ferry-agent");
const LOCAL_RECORDS: u64 = 200_000;
const IOT_CORE_RECORDS: u64 = 1_000_000;
const BASELINE_PER_ENVELOPE: usize = 200;
/// A bench that has not finished by then has failed.
const DEADLINE: Duration = Duration::from_secs(300);

struct Drained {
    records: u64,
    seconds: f64,
    cpu_seconds: f64,
    publishes: u64,
    payload_bytes: u64,
    peak_rss_kib: u64,
    threads: Vec<(String, f64)>,
}

impl Drained {
    fn records_per_s(&self) -> f64 {
        self.records as f64 / self.seconds
    }
    fn cpu_s_per_million(&self) -> f64 {
        self.cpu_seconds * 1e6 / self.records as f64
    }
    fn bytes_per_record(&self) -> f64 {
        self.payload_bytes as f64 / self.records as f64
    }
}

/// A spool holding `n` weather readings, one second apart, with sensor-like noise.
async fn fill(dir: &Path, n: u64) {
    let (spool, writer) = Spool::open(dir, u64::MAX / 2).expect("open spool");
    let mut t = 0.0f64;
    let mut rng = rand::rng();
    let base_ms = Timestamp::now().unix_millis() - n as i64 * 1000;
    for chunk in 0..n.div_ceil(1000) {
        let batch = (0..1000.min(n - chunk * 1000))
            .map(|_| {
                t += 1.0;
                // Slow drifts, one decimal, like the simulator.
                let r = |x: f64| (x * 10.0).round() / 10.0;
                let body = RecordBody::Reading {
                    sensor: "bme280".into(),
                    metrics: [
                        (
                            "temperature_c".to_owned(),
                            r(12.0 + 6.0 * (t / 600.0).sin() + rng.random_range(-0.3..0.3)),
                        ),
                        (
                            "humidity_pct".to_owned(),
                            r(60.0 - 15.0 * (t / 600.0).sin() + rng.random_range(-1.0..1.0)),
                        ),
                        (
                            "pressure_hpa".to_owned(),
                            r(1013.0 + rng.random_range(-2.0..2.0)),
                        ),
                    ]
                    .into(),
                };
                let ts = Timestamp::from_unix_millis(base_ms + t as i64 * 1000).expect("ts");
                NewRecord::new(&Unsequenced::new(ts, body)).expect("valid")
            })
            .collect();
        spool.append(batch).await.expect("append");
    }
    drop(spool);
    writer.join();
}

/// A fresh copy of a filled spool, so that every run drains the same records.
fn copy_spool(template: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("data dir");
    for entry in std::fs::read_dir(template).expect("template") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy spool");
    }
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn spool_is_empty(conn: &Connection) -> bool {
    conn.query_row("SELECT NOT EXISTS (SELECT 1 FROM records)", [], |r| {
        r.get(0)
    })
    .unwrap_or(false)
}

/// Waits until the subscriber holds every seq of `device`.
async fn await_subscriber(collector: &Collector, device: &str, records: u64) {
    let start = Instant::now();
    while (collector.seen().seqs_of(device).len() as u64) < records {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{device}: the subscriber holds {} of {records} seqs a minute after the drain",
            collector.seen().seqs_of(device).len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn drain(
    broker: &Mosquitto,
    collector: &Collector,
    template: &Path,
    records: u64,
    device: &str,
    mqtt: &str,
) -> Drained {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    copy_spool(template, &data);
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "device_id = \"{device}\"\ndata_dir = \"{}\"\n[mqtt]\nurl = \"{}\"\n{mqtt}\n",
            data.display(),
            broker.url()
        ),
    )
    .expect("config");
    let arrivals_before = collector.seen().arrivals.len();
    let spool =
        Connection::open_with_flags(Spool::path_in(&data), OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("spool for reading");
    let start = Instant::now();
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .env("FERRY_LOG", "warn")
        .stderr(Stdio::inherit())
        .spawn()
        .expect("agent");
    let mut peak = 0;
    // One indexed probe every 10 ms: cheap beside the drain it watches.
    while !spool_is_empty(&spool) {
        peak = peak.max(peak_rss_kib(child.id()));
        assert!(
            start.elapsed() < DEADLINE,
            "{device}: drain took over {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu_seconds = cpu_seconds(child.id());
    let threads = cpu_seconds_by_thread(child.id());
    peak = peak.max(peak_rss_kib(child.id()));
    ferry_tests::process::signal(&child, "TERM");
    let _ = child.wait();
    await_subscriber(collector, device, records).await;
    let pending = SpoolReader::open(&Spool::path_in(&data))
        .expect("reader")
        .status()
        .expect("status")
        .pending;
    assert_eq!(pending, 0, "every record acknowledged and deleted");
    let seen = collector.seen();
    let ours = &seen.arrivals[arrivals_before..];
    Drained {
        records,
        seconds,
        cpu_seconds,
        publishes: ours.iter().filter(|a| a.records > 0).count() as u64,
        payload_bytes: ours.iter().map(|a| a.bytes as u64).sum(),
        peak_rss_kib: peak,
        threads,
    }
}

/// The same records as plain 200-record envelopes, one per line, for `mosquitto_pub -l`.
fn baseline_lines(template: &Path, device: &str, to: &Path) -> (u64, u64) {
    let reader = SpoolReader::open(&Spool::path_in(template)).expect("reader");
    let device = DeviceId::new(device).expect("device");
    let spool = SpoolId::new("01JD3W6Q3X8F2M7C9K4N5P6R8T").expect("spool");
    let mut out = std::io::BufWriter::new(std::fs::File::create(to).expect("lines"));
    let (mut after, mut records, mut lines) = (0, 0, 0);
    loop {
        let rows = reader
            .pending(Class::Telemetry, after, BASELINE_PER_ENVELOPE, usize::MAX)
            .expect("rows");
        let Some(last) = rows.last() else { break };
        after = last.seq;
        let mut w = EnvelopeWriter::new(&device, &spool, Timestamp::now());
        rows.iter().for_each(|r| w.push(r.seq, &r.json));
        writeln!(out, "{}", w.json()).expect("write line");
        records += rows.len() as u64;
        lines += 1;
    }
    out.flush().expect("flush");
    (records, lines)
}

/// `mosquitto_pub -l` at QoS 1: records/s and CPU seconds per million records.
async fn mosquitto_pub(broker: &Mosquitto, collector: &Collector, template: &Path) -> (f64, f64) {
    let device = "bench-mosquitto-pub";
    let dir = tempfile::tempdir().expect("tempdir");
    let lines = dir.path().join("envelopes.ndjson");
    let (records, envelopes) = baseline_lines(template, device, &lines);
    let start = Instant::now();
    let mut child = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &broker.port.to_string(),
            "-q",
            "1",
            "-l",
        ])
        .args(["-i", device, "-t", &format!("ferry/v1/{device}/telemetry")])
        .stdin(std::fs::File::open(&lines).expect("lines"))
        .spawn()
        .expect("mosquitto_pub (apt install mosquitto-clients, or `cargo xtask bench`)");
    let pid = child.id();
    let mut cpu = 0.0;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "mosquitto_pub failed: {status}");
            break;
        }
        cpu = cpu_seconds(pid);
        assert!(
            start.elapsed() < DEADLINE,
            "mosquitto_pub took over {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let seconds = start.elapsed().as_secs_f64();
    await_subscriber(collector, device, records).await;
    println!(
        "[local] baseline: mosquitto_pub -l sent {records} records in {envelopes} envelopes in {seconds:.2} s"
    );
    (records as f64 / seconds, cpu * 1e6 / records as f64)
}

fn report(name: &str, level: u32, d: &Drained) {
    println!(
        "[{name}] level {level}: {} records in {:.2} s: {:.0} records/s, {} publishes, \
         {:.1} bytes/record, {:.2} CPU s per million, peak RSS {} KiB",
        d.records,
        d.seconds,
        d.records_per_s(),
        d.publishes,
        d.bytes_per_record(),
        d.cpu_s_per_million(),
        d.peak_rss_kib
    );
    let threads: Vec<String> = d
        .threads
        .iter()
        .filter(|(_, s)| *s > 0.0)
        .map(|(name, s)| format!("{name} {s:.2}"))
        .collect();
    println!(
        "[{name}] level {level}: CPU s by thread: {}",
        threads.join(", ")
    );
}

struct Args {
    only: Option<String>,
    levels: Vec<u32>,
}

fn args() -> Args {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let (mut only, mut levels) = (None, vec![1, 3, 6]);
    while let Some(a) = args.next() {
        if a == "--levels" {
            let list = args.next().expect("--levels 1,3,6");
            levels = list
                .split(',')
                .map(|l| l.parse().expect("a gzip level, 0-9"))
                .collect();
        } else if !a.starts_with('-') {
            only = Some(a);
        }
    }
    Args { only, levels }
}

fn template() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("data");
    (dir, path)
}

fn main() {
    let args = args();
    let runs = |name: &str| args.only.as_deref().is_none_or(|o| o == name);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    runtime.block_on(async {
        let broker = Mosquitto::start();
        let collector = Collector::start(broker.port).await;
        if runs("local") {
            let (_keep, spool) = template();
            fill(&spool, LOCAL_RECORDS).await;
            let (base, base_cpu) = mosquitto_pub(&broker, &collector, &spool).await;
            println!("[local] baseline: {base:.0} records/s, {base_cpu:.2} CPU s per million");
            for &level in &args.levels {
                let d = drain(
                    &broker,
                    &collector,
                    &spool,
                    LOCAL_RECORDS,
                    &format!("bench-local-{level}"),
                    &format!(
                        "publishes_per_s = 100000\nbytes_per_s = 1000000000\ngzip_level = {level}"
                    ),
                )
                .await;
                report("local", level, &d);
                println!(
                    "[local] level {level}: ratio agent / mosquitto_pub records/s {:.2}",
                    d.records_per_s() / base
                );
            }
        }
        if runs("iot-core") {
            let (_keep, spool) = template();
            fill(&spool, IOT_CORE_RECORDS).await;
            for &level in &args.levels {
                let d = drain(
                    &broker,
                    &collector,
                    &spool,
                    IOT_CORE_RECORDS,
                    &format!("bench-iot-core-{level}"),
                    &format!("gzip_level = {level}"),
                )
                .await;
                report("iot-core", level, &d);
            }
            println!("[iot-core] goal: <= 25 s under the default pacing");
        }
    });
}
