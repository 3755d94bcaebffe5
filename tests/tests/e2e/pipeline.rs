//! The whole pipeline, twice: on a real Mosquitto (`ferry-cloud all` beside it), and on the
//! embedded broker exactly as `ferry-cloud dev` runs it. Three simulated weather stations
//! and two simulated tills, each a real `ferry-agent` with its own spool, make a known
//! number of records; the lake must hold each once, and the ledger's balances must equal
//! those computed here from the transactions in the lake.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use ferry_tests::agent::{AgentProc, simulated};
use ferry_tests::broker::Mosquitto;
use ferry_tests::cloud::{AllConfig, TOKEN, start_all};
use ferry_tests::free_port;
use ferry_tests::http::request;
use ferry_tests::lake::{self, Object};
use ferry_tests::loyalty::{put_program, register_till};
use ferry_tests::process::signal;

use super::dev::Dev;
use serde_json::{Value, json};

/// Records per simulated device.
const RECORDS: u64 = 60;
const STATIONS: [&str; 3] = ["ws-1", "ws-2", "ws-3"];
const TILLS: [&str; 2] = ["pos-1", "pos-2"];
/// The rate of the `points` program that both runs use.
const POINTS_PER_UNIT: f64 = 1.0;
/// What a coffee costs in the `coffee` program of both runs (and of `dev`).
const STAMPS_PER_COFFEE: i64 = 10;

/// What the ledger must say, from the lake's `txn` lines alone.
fn balances_from_lake(objects: &[Object]) -> BTreeMap<(String, String), i64> {
    let mut balances = BTreeMap::new();
    for line in objects
        .iter()
        .filter(|o| o.key.starts_with("raw/type=txn/"))
        .flat_map(|o| &o.lines)
    {
        let card = line["card"].as_str().expect("card").to_owned();
        let program = line["program"].as_str().expect("program").to_owned();
        let delta = match (line["op"].as_str(), line["qty"].as_i64()) {
            (Some("stamp" | "earn"), Some(qty)) => qty,
            (Some("redeem"), Some(qty)) => -STAMPS_PER_COFFEE * qty,
            (Some("earn"), None) => {
                let amount = line["amount_minor"].as_i64().expect("amount_minor");
                ((amount as f64 / 100.0) * POINTS_PER_UNIT).floor() as i64
            }
            other => panic!("a simulated till made {other:?}: {line}"),
        };
        *balances.entry((card, program)).or_insert(0) += delta;
    }
    balances
}

/// Waits until the lake holds every record of every device once, then until the ledger
/// agrees with the lake's transactions.
/// `dev`'s dashboards agree with the lake: every device listed, and each station's
/// temperature readings counted once in the hot store's rollups.
async fn assert_dashboard(http: u16, token: &str, logs: impl Fn() -> String) {
    let get = |path: &str| {
        request(http, "GET", path, token, "")
            .ok()
            .and_then(|(status, body)| (status == 200).then_some(body))
            .and_then(|body| serde_json::from_str::<Value>(&body).ok())
            .unwrap_or(Value::Null)
    };
    let two_days_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis()
        - 2 * 86_400_000;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let devices = get("/v1/devices");
        let listed: BTreeSet<&str> = devices["devices"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d["device"].as_str())
            .collect();
        let counted: Vec<i64> = STATIONS
            .iter()
            .map(|station| {
                let answer = get(&format!(
                    "/v1/devices/{station}/readings?metric=temperature_c&step=1h&from={two_days_ago}"
                ));
                answer["count"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_i64)
                    .sum()
            })
            .collect();
        let all_listed = STATIONS.iter().chain(&TILLS).all(|d| listed.contains(d));
        if all_listed && counted.iter().all(|&n| n == RECORDS as i64) {
            return;
        }
        assert!(
            counted.iter().all(|&n| n <= RECORDS as i64),
            "a reading counted twice in the hot store: {counted:?}"
        );
        assert!(
            Instant::now() < deadline,
            "the dashboards list {listed:?} and count {counted:?} readings after 60 s; logs:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn assert_pipeline(lake_root: &Path, http_port: u16, token: &str, logs: impl Fn() -> String) {
    let devices = STATIONS.len() + TILLS.len();
    let want = devices * RECORDS as usize;
    let deadline = Instant::now() + Duration::from_secs(120);
    let objects = loop {
        let objects = lake::read(lake_root);
        let ids = lake::record_ids(&objects);
        if ids.len() >= want {
            let unique: BTreeSet<_> = ids.iter().collect();
            assert_eq!(unique.len(), ids.len(), "a record is in the lake twice");
            let per_device: BTreeMap<&str, BTreeSet<u64>> =
                ids.iter().fold(BTreeMap::new(), |mut m, (d, _, seq)| {
                    m.entry(d.as_str()).or_default().insert(*seq);
                    m
                });
            for device in STATIONS.iter().chain(&TILLS) {
                let seqs = per_device.get(device).cloned().unwrap_or_default();
                assert_eq!(
                    seqs,
                    (1..=RECORDS).collect::<BTreeSet<_>>(),
                    "{device}: seqs in the lake"
                );
            }
            assert_eq!(ids.len(), want, "records nobody sent");
            break objects;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {want} records in the lake after 120 s; logs:\n{}",
            ids.len(),
            logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let txn_lines: usize = objects
        .iter()
        .filter(|o| o.key.starts_with("raw/type=txn/"))
        .map(|o| o.lines.len())
        .sum();
    assert_eq!(txn_lines, TILLS.len() * RECORDS as usize, "txn records");
    let expected = balances_from_lake(&objects);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let differ: Vec<_> = expected
            .iter()
            .filter(|((card, program), want)| {
                let got = request(http_port, "GET", &format!("/v1/cards/{card}"), token, "")
                    .ok()
                    .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
                    .and_then(|v| {
                        v["balances"].as_array()?.iter().find_map(|b| {
                            (b["program"] == program.as_str()).then(|| b["balance"].as_i64())?
                        })
                    });
                got != Some(**want)
            })
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        if differ.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} balances differ from the lake, e.g. {:?}; logs:\n{}",
            differ.len(),
            differ[0],
            logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    format!(
        "--- {}\n{}",
        path.display(),
        lines[lines.len().saturating_sub(30)..].join("\n")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_pipeline_on_the_embedded_broker_as_dev_runs_it() {
    let _load = super::shared().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("dev");
    let log = dir.path().join("dev.log");
    let mut dev = Dev::start(
        &data,
        &log,
        &["--records", &RECORDS.to_string(), "--interval-ms", "20"],
    );
    let http = dev.http;
    let dev = &mut dev.child.0;
    // The agents are dev's children; their logs are in its data folder.
    let logs = || {
        let mut all = tail(&log);
        for agent in STATIONS.iter().chain(&TILLS) {
            all.push('\n');
            all.push_str(&tail(&data.join("agents").join(agent).join("agent.log")));
        }
        all
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let token = loop {
        if let Ok(token) = std::fs::read_to_string(data.join("token")) {
            break token;
        }
        assert!(Instant::now() < deadline, "dev made no token; {}", logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_pipeline(&data.join("lake"), http, token.trim(), logs).await;
    assert_dashboard(http, token.trim(), logs).await;

    // Ctrl-C stops everything cleanly: the agents first, then the cloud.
    signal(dev, "INT");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = dev.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "dev did not stop; {}", logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "dev exited with {status}; {}", logs());
    for agent in STATIONS.iter().chain(&TILLS) {
        let log = std::fs::read_to_string(data.join("agents").join(agent).join("agent.log"))
            .expect("agent log");
        assert!(
            log.contains("agent stopped"),
            "{agent} did not stop cleanly:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_pipeline_on_mosquitto() {
    let _load = super::shared().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Mosquitto::start();
    let http = free_port();
    let lake_root = dir.path().join("lake");
    let config = AllConfig {
        lake_extra: "flush_interval_s = 1\n",
        hot: None,
        ..AllConfig::new(dir.path(), broker.port, http, "e2e-ingest")
    }
    .toml();
    let mut cloud = start_all(dir.path(), &config, http).await;
    put_program(
        http,
        "coffee",
        &json!({"kind": "stamps", "stamps_per_reward": STAMPS_PER_COFFEE, "reward": "coffee"}),
    );
    put_program(
        http,
        "points",
        &json!({"kind": "points", "points_per_currency_unit": POINTS_PER_UNIT, "reward": "voucher", "reward_cost": 100}),
    );
    // The simulator's tills stamp for store `S-{device}`.
    for till in TILLS {
        register_till(http, till, &format!("S-{till}"));
    }
    let mut agents: Vec<AgentProc> = STATIONS
        .iter()
        .map(|d| (d, "weather"))
        .chain(TILLS.iter().map(|d| (d, "pos")))
        .map(|(device, profile)| simulated(dir.path(), device, profile, broker.port, 20, RECORDS))
        .collect();
    for agent in &mut agents {
        agent.start();
    }
    let logs = || {
        let mut all = cloud.log();
        for agent in &agents {
            all.push_str(&agent.log());
        }
        all
    };
    assert_pipeline(&lake_root, http, TOKEN, logs).await;
    for agent in &mut agents {
        assert_eq!(agent.terminate(), Some(0), "{}", agent.log());
    }
    assert_eq!(cloud.terminate(), Some(0), "{}", cloud.log());
}
