//! Draining a spooled backlog through the real `ferry-agent` binary to a local Mosquitto.
//!
//!     cargo bench -p ferry-agent --bench drain
//!
//! Two scenarios:
//! - `local`: 200k readings, quotas lifted: records/s, publishes/s and the agent's peak RSS,
//!   against a baseline of a bare rumqttc client publishing the same number of payloads of
//!   the same size to the same broker in the same run.
//! - `iot-core`: 1M readings under the default IoT Core pacing (100 publishes/s, 512 KiB/s).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_agent::spool::{NewRecord, Spool, SpoolReader};
use ferry_shared::record::Unsequenced;
use ferry_shared::{RecordBody, Timestamp};
use ferry_tests::broker::Mosquitto;
use ferry_tests::collector::Collector;
use rand::Rng;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, Outgoing, QoS};

const BIN: &str = env!("CARGO_BIN_EXE_ferry-agent");

struct Drained {
    records: u64,
    seconds: f64,
    publishes: u64,
    payload_bytes: u64,
    peak_rss_kib: u64,
}

async fn fill(dir: &std::path::Path, n: u64) {
    let (spool, writer) = Spool::open(dir, u64::MAX / 2).expect("open spool");
    let mut t = 0.0f64;
    let mut rng = rand::rng();
    let base_ms = Timestamp::now().unix_millis() - n as i64 * 1000;
    for chunk in 0..n.div_ceil(1000) {
        let batch = (0..1000.min(n - chunk * 1000))
            .map(|_| {
                t += 1.0;
                // A weather station's readings: slow drifts, one decimal, like the simulator.
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
                // One reading a second, as a station that was offline for a while.
                let ts = Timestamp::from_unix_millis(base_ms + t as i64 * 1000).expect("ts");
                NewRecord::new(&Unsequenced::new(ts, body)).expect("valid")
            })
            .collect();
        spool.append(batch).await.expect("append");
    }
    drop(spool);
    writer.join();
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

async fn drain(broker: &Mosquitto, records: u64, quotas: &str) -> Drained {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    fill(&data, records).await;
    let collector = Collector::start(broker.port).await;
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "device_id = \"bench-1\"\ndata_dir = \"{}\"\n[mqtt]\nurl = \"{}\"\n{quotas}\n",
            data.display(),
            broker.url()
        ),
    )
    .expect("config");
    let start = Instant::now();
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .env("FERRY_LOG", "warn")
        .stderr(Stdio::inherit())
        .spawn()
        .expect("agent");
    let mut peak = 0;
    // Watch the subscriber, not the spool: a COUNT(*) over the spool every few ms would
    // compete with the agent for this machine's two cores.
    loop {
        peak = peak.max(peak_rss_kib(child.id()));
        if collector.seen().seqs_of("bench-1").len() as u64 == records {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "drain took over 5 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = start.elapsed().as_secs_f64();
    peak = peak.max(peak_rss_kib(child.id()));
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    let pending = SpoolReader::open(&Spool::path_in(&data))
        .expect("reader")
        .status()
        .expect("status")
        .pending;
    assert_eq!(pending, 0, "every record acknowledged and deleted");
    let seen = collector.seen();
    Drained {
        records,
        seconds,
        publishes: seen.arrivals.len() as u64,
        payload_bytes: seen.arrivals.iter().map(|a| a.bytes as u64).sum(),
        peak_rss_kib: peak,
    }
}

/// A bare rumqttc client publishing `n` payloads of `size` bytes, QoS 1, 100 in flight.
async fn baseline(broker: &Mosquitto, n: u64, size: usize) -> f64 {
    let mut opts = MqttOptions::new("bench-baseline", "127.0.0.1", broker.port);
    opts.set_inflight(100)
        .set_max_packet_size(256 * 1024, 256 * 1024);
    let (client, mut eventloop) = AsyncClient::new(opts, 200);
    let payload = vec![b'x'; size];
    let start = Instant::now();
    let publisher = tokio::spawn(async move {
        for _ in 0..n {
            client
                .publish("bench/baseline", QoS::AtLeastOnce, false, payload.clone())
                .await
                .expect("publish");
        }
        client
    });
    let mut acked = 0;
    while acked < n {
        match eventloop.poll().await {
            Ok(Event::Incoming(Incoming::PubAck(_))) => acked += 1,
            Ok(Event::Outgoing(Outgoing::Publish(_)) | _) => {}
            Err(e) => panic!("baseline publisher: {e}"),
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    drop(publisher);
    seconds
}

fn report(name: &str, d: &Drained) {
    println!("[{name}] {} records in {:.2} s", d.records, d.seconds);
    println!(
        "[{name}]   records/s      {:>10.0}",
        d.records as f64 / d.seconds
    );
    println!(
        "[{name}]   publishes      {:>10} ({:.1}/s)",
        d.publishes,
        d.publishes as f64 / d.seconds
    );
    println!(
        "[{name}]   payload bytes  {:>10} ({:.1} bytes/record, {:.0} KiB/s)",
        d.payload_bytes,
        d.payload_bytes as f64 / d.records as f64,
        d.payload_bytes as f64 / d.seconds / 1024.0
    );
    println!("[{name}]   agent peak RSS {:>10} KiB", d.peak_rss_kib);
}

fn main() {
    let only: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    runtime.block_on(async {
        let broker = Mosquitto::start();
        if only.as_deref().is_none_or(|o| o == "local") {
            let d = drain(
                &broker,
                200_000,
                "publishes_per_s = 100000\nbytes_per_s = 1000000000",
            )
            .await;
            report("local", &d);
            let base = baseline(
                &broker,
                d.publishes,
                (d.payload_bytes / d.publishes.max(1)) as usize,
            )
            .await;
            println!(
                "[local]   baseline: bare rumqttc publishes the same {} payloads in {base:.2} s",
                d.publishes
            );
            println!(
                "[local]   ratio agent time / baseline time  {:.2}",
                d.seconds / base
            );
        }
        if only.as_deref().is_none_or(|o| o == "iot-core") {
            let d = drain(&broker, 1_000_000, "").await;
            report("iot-core", &d);
            println!("[iot-core]   goal: <= 60 s under the default pacing");
        }
    });
}
