//! The whole cloud on one core: broker → lake + hot store + ledger, through the real
//! `ferry-cloud all` with `[dashboard]` and `[loyalty]`, on SQLite and on PostgreSQL.
//!
//!     cargo bench -p ferry-cloud --bench whole             # 200k records; or pass a number
//!
//! The backlog is the ingest bench's (20 devices; per 10 seqs, 8 readings, an event and a
//! stamp), queued in a local Mosquitto for a persistent session. Two runs on the same
//! broker and payloads, each its binary pinned to one core with taskset when it is there:
//! - baseline: `ferry-cloud ingest` alone (lake only); the clock stops when every record is
//!   in a lake object;
//! - whole: `ferry-cloud all`, with the 20 devices registered as tills of store S-01 and
//!   the `coffee` program; the clock stops when every record is in a lake object, every
//!   reading in the hot store and every stamp applied in the ledger (the journal's route
//!   and hot queues empty); once with both databases on SQLite files, once on a durable
//!   PostgreSQL the bench starts (its server's CPU is not pinned, nor counted).
//!
//! Reported: records/s of each, their ratio, and CPU seconds per million records.

use std::path::Path;
use std::time::{Duration, Instant};

use ferry_tests::broker::Mosquitto;
use ferry_tests::cloud::{TOKEN, metric};
use ferry_tests::devices::{Message, fleet, publish_all};
use ferry_tests::free_port;
use ferry_tests::http::request;
use ferry_tests::loyalty::{put_program, register_till};
use ferry_tests::postgres::Postgres;
use ferry_tests::process::{Proc, cpu_seconds};

const BIN: &str = env!("CARGO_BIN_EXE_ferry-cloud");
const DEVICES: usize = 20;

/// The cloud under test: `ingest` alone, or `all` with the dashboards and the ledger.
struct Cloud {
    proc: Proc,
    http: u16,
    whole: bool,
}

impl Cloud {
    /// `databases`: the ledger's and the hot store's URLs, for `all`.
    fn new(dir: &Path, broker: u16, databases: Option<(String, String)>) -> Self {
        let whole = databases.is_some();
        let http = free_port();
        let mut config = format!(
            "data_dir = \"{data}\"\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:{broker}\"\nclient_id = \"bench-{role}\"\n\
             [lake]\nroot = \"{lake}\"\nflush_interval_s = 1\n\
             [http]\nlisten = \"127.0.0.1:{http}\"\ntoken = \"{TOKEN}\"\n",
            data = dir.join("data").display(),
            lake = dir.join("lake").display(),
            role = if whole { "all" } else { "ingest" },
        );
        if let Some((ledger, hot)) = databases {
            config.push_str(&format!(
                "[loyalty]\nurl = \"http://127.0.0.1:{http}\"\ntoken = \"{TOKEN}\"\n\
                 database = \"{ledger}\"\n\
                 [dashboard]\ndatabase = \"{hot}\"\n",
            ));
        }
        let path = dir.join("cloud.toml");
        std::fs::write(&path, config).expect("config");
        let path = path.to_string_lossy().into_owned();
        let role = if whole { "all" } else { "ingest" };
        Self {
            proc: Proc::new(BIN, &[role, "--config", &path], dir.join("cloud.log")),
            http,
            whole,
        }
    }

    fn metric(&self, name: &str) -> f64 {
        match request(self.http, "GET", "/metrics", "", "") {
            Ok((200, body)) => metric(&body, name),
            _ => 0.0,
        }
    }

    /// Everything done: in the lake, and (for `all`) in the hot store and the ledger.
    fn done(&self, records: u64) -> bool {
        self.metric("ferry_ingest_records_out_total") >= records as f64
            && (!self.whole
                || (self.metric("ferry_ingest_routes_pending") == 0.0
                    && self.metric("ferry_ingest_hot_pending") == 0.0
                    && self.metric("ferry_ingest_records_in_total") >= records as f64))
    }
}

/// Seconds and CPU seconds for `cloud` to take the backlog from subscription to done.
async fn run(
    broker: u16,
    messages: &[Message],
    records: u64,
    databases: Option<(String, String)>,
) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let whole = databases.is_some();
    let mut cloud = Cloud::new(dir.path(), broker, databases);
    // The session, its subscriptions and (for `all`) the ledger's setup first; then the
    // backlog, queued by the broker while the cloud is away.
    cloud.proc.start();
    ferry_tests::wait_until(Duration::from_secs(30), "the cloud to subscribe", || {
        cloud.metric("ferry_ingest_subscribed") == 1.0
    })
    .await;
    if whole {
        put_program(
            cloud.http,
            "coffee",
            &serde_json::json!({"kind": "stamps", "stamps_per_reward": 10, "reward": "coffee"}),
        );
        for d in 0..DEVICES {
            register_till(cloud.http, &format!("ws-{d}"), "S-01");
        }
    }
    assert_eq!(cloud.proc.terminate(), Some(0), "{}", cloud.proc.log());
    publish_all(
        broker,
        &format!("bench-devices-{}", ferry_tests::free_port()),
        messages,
    )
    .await;

    let started = Instant::now();
    cloud.proc.start();
    let pid = cloud.proc.pid().expect("pid");
    if Path::new("/usr/bin/taskset").exists() {
        let _ = std::process::Command::new("taskset")
            .args(["-p", "-c", "0", &pid.to_string()])
            .output();
    }
    ferry_tests::wait_until(Duration::from_secs(900), "everything done", || {
        cloud.done(records)
    })
    .await;
    let took = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid);
    assert_eq!(cloud.proc.terminate(), Some(0), "{}", cloud.proc.log());
    (took, cpu)
}

fn main() {
    let records: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(200_000);
    // Its synchronous client runs a runtime of its own: set it up before ours runs.
    let pg = Postgres::start_durable();
    let on_pg = (pg.database("ledger"), pg.database("hot"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let broker = Mosquitto::start();
        let per_device = records / DEVICES as u64;
        let records = per_device * DEVICES as u64;
        let (messages, _) = fleet("ws", DEVICES, per_device, 500);
        println!("{records} records ({} stamps) in {} messages", records / 10, messages.len());
        let (base_s, base_cpu) = run(broker.port, &messages, records, None).await;
        let files = tempfile::tempdir().expect("tempdir");
        let sqlite = |name: &str| format!("sqlite://{}", files.path().join(name).display());
        let (whole_s, whole_cpu) = run(
            broker.port,
            &messages,
            records,
            Some((sqlite("ledger.db"), sqlite("hot.db"))),
        )
        .await;
        let (pg_s, pg_cpu) = run(broker.port, &messages, records, Some(on_pg.clone())).await;
        let per_s = |s: f64| records as f64 / s;
        let per_m = |cpu: f64| cpu * 1e6 / records as f64;
        println!(
            "baseline, ingest alone (lake):           {base_s:.2} s, {:.0} records/s, {:.2} CPU s per million",
            per_s(base_s),
            per_m(base_cpu)
        );
        println!(
            "whole, all (lake + hot store + ledger):  {whole_s:.2} s, {:.0} records/s, {:.2} CPU s per million",
            per_s(whole_s),
            per_m(whole_cpu)
        );
        println!(
            "whole on PostgreSQL:                     {pg_s:.2} s, {:.0} records/s, {:.2} CPU s per million (ferry-cloud's)",
            per_s(pg_s),
            per_m(pg_cpu)
        );
        println!("ratio whole / baseline (records/s):      {:.3}", base_s / whole_s);
        println!("ratio PostgreSQL / SQLite (records/s):   {:.3}", whole_s / pg_s);
    });
}
