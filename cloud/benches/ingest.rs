//! Broker to lake through the real `ferry-cloud ingest` binary, on one core.
//!
//!     cargo bench -p ferry-cloud --bench ingest            # 400k records; or pass a number
//!
//! A backlog of envelopes, built as agents build them (gzip, 500 records each, from 20
//! devices), is queued in a local Mosquitto for a persistent session; then the consumer
//! connects and the clock runs until every record is accounted for. Two consumers, in the
//! same run, on the same broker and payloads:
//! - baseline: a bare rumqttc client that receives and acknowledges every message;
//! - ferry: the ingest, pinned to one core with taskset when it is there, writing to a local
//!   lake folder; the clock stops when `ferry_ingest_records_out_total` reaches the count,
//!   that is, when every record is in a durable lake object.
//!
//! Reported: records/s of each and their ratio, the ingest's CPU seconds per million
//! records (utime + stime from /proc), and the sizes of the objects it wrote.

use std::time::{Duration, Instant};

use ferry_tests::broker::Mosquitto;
use ferry_tests::cloud::{Lake, ingest};
use ferry_tests::devices::{Message, fleet, publish_all};
use ferry_tests::process::cpu_seconds;
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};

const BIN: &str = env!("CARGO_BIN_EXE_ferry-cloud");
const DEVICES: usize = 20;

async fn baseline(port: u16, messages: &[Message]) -> f64 {
    let connect = || {
        let mut opts = MqttOptions::new("bench-baseline", "127.0.0.1", port);
        opts.set_clean_session(false)
            .set_max_packet_size(1 << 24, 1 << 20)
            .set_keep_alive(Duration::from_secs(60));
        AsyncClient::new(opts, 1000)
    };
    // Make the session and its subscription, then leave so the broker queues for it.
    let (client, mut events) = connect();
    client
        .subscribe("ferry/v1/+/telemetry", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    client
        .subscribe("ferry/v1/+/transactions", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let mut subacks = 0;
    while subacks < 2 {
        if let Ok(Event::Incoming(Incoming::SubAck(_))) = events.poll().await {
            subacks += 1;
        }
    }
    client.disconnect().await.expect("disconnect");
    while events.poll().await.is_ok() {}
    publish_all(port, "bench-devices-baseline", messages).await;

    let (_client, mut events) = connect();
    let started = Instant::now();
    let mut got = 0;
    while got < messages.len() {
        if let Ok(Event::Incoming(Incoming::Publish(_))) = events.poll().await {
            got += 1;
        }
    }
    started.elapsed().as_secs_f64()
}

struct Ferry {
    /// Until every record was durable in the journal and acknowledged.
    admitted_s: f64,
    /// Until every record was in a lake object.
    in_lake_s: f64,
    cpu_s: f64,
    sizes: Vec<u64>,
}

async fn ferry(port: u16, messages: &[Message], records: u64) -> Ferry {
    let dir = tempfile::tempdir().expect("tempdir");
    let lake_dir = dir.path().join("lake");
    let mut ingest = ingest(BIN, dir.path(), port, Lake::Folder(&lake_dir), "");
    // The session and its subscriptions first; then the backlog, queued by the broker.
    ingest.proc.start();
    ferry_tests::wait_until(Duration::from_secs(30), "the ingest to subscribe", || {
        ingest.proc.log().contains("ingest connected")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ingest.proc.terminate(), Some(0));
    publish_all(port, "bench-devices-ferry", messages).await;

    let pinned = std::path::Path::new("/usr/bin/taskset").exists();
    let started = Instant::now();
    ingest.proc.start();
    let pid = ingest.proc.pid().expect("pid");
    if pinned {
        let _ = std::process::Command::new("taskset")
            .args(["-p", "-c", "0", &pid.to_string()])
            .output();
    }
    ferry_tests::wait_until(Duration::from_secs(600), "every record admitted", || {
        ingest.metric("ferry_ingest_records_in_total") >= records as f64
    })
    .await;
    let admitted_s = started.elapsed().as_secs_f64();
    ferry_tests::wait_until(Duration::from_secs(600), "every record in the lake", || {
        ingest.metric("ferry_ingest_records_out_total") >= records as f64
    })
    .await;
    let in_lake_s = started.elapsed().as_secs_f64();
    let cpu_s = cpu_seconds(pid);
    let sizes = ingest.lake().iter().map(|o| o.bytes).collect();
    assert_eq!(ingest.proc.terminate(), Some(0));
    Ferry {
        admitted_s,
        in_lake_s,
        cpu_s,
        sizes,
    }
}

fn main() {
    let records: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(400_000);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let broker = Mosquitto::start();
        let per_device = records / DEVICES as u64;
        let records = per_device * DEVICES as u64;
        let (messages, _) = fleet("ws", DEVICES, per_device, 500);
        let payload: usize = messages.iter().map(|m| m.payload.len()).sum();
        println!(
            "{records} records in {} messages, {:.1} payload bytes/record",
            messages.len(),
            payload as f64 / records as f64
        );
        let base = baseline(broker.port, &messages).await;
        let Ferry {
            admitted_s,
            in_lake_s,
            cpu_s,
            mut sizes,
        } = ferry(broker.port, &messages, records).await;
        sizes.sort_unstable();
        let mean = sizes.iter().sum::<u64>() as f64 / sizes.len().max(1) as f64;
        println!(
            "baseline (bare rumqttc, receive + ack): {base:.2} s, {:.0} records/s",
            records as f64 / base
        );
        let per_s = |s: f64| records as f64 / s;
        println!("ferry, all durable + acked (journal):   {admitted_s:.2} s, {:.0} records/s", per_s(admitted_s));
        println!("ferry, all in lake objects:             {in_lake_s:.2} s, {:.0} records/s (includes the last flush_interval_s = 1)", per_s(in_lake_s));
        println!("ratio ferry (journal) / baseline:       {:.3}", base / admitted_s);
        println!("ingest CPU: {cpu_s:.2} s, {:.2} CPU s per million records, {:.0} records per CPU second", cpu_s * 1e6 / records as f64, per_s(cpu_s));
        println!(
            "objects: {}, bytes min {} / mean {mean:.0} / max {}",
            sizes.len(),
            sizes.first().copied().unwrap_or(0),
            sizes.last().copied().unwrap_or(0)
        );
    });
}
