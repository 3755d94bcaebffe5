//! Power cuts under the ledger on SQLite: its database on the power-cut filesystem
//! (`ferry_tests::powercut`), which keeps only what was fsynced. The router posts stamps
//! one after another, retrying each with its `tx_id` until answered, while the power is cut
//! at random moments; after each cut the process is SIGKILLed, the filesystem remounted on
//! what survived and the ledger started again. Every transaction answered `applied` (or
//! `duplicate`, when the answer was lost) is in the ledger once: sent again it is a
//! `duplicate`, and the balances add up to exactly the answered ones.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ferry_tests::http::post_json;
use ferry_tests::loyalty::loyalty_with;
use ferry_tests::powercut::PowerCutFs;
use rand::Rng;
use serde_json::{Value, json};

use crate::BIN;

const ROUTER: &str = "router-token-power-cut-01";
const CUTS: usize = 4;
const CARDS: u64 = 20;

fn stamp(i: u64) -> String {
    json!({"tx_id": format!("pc-{i}"), "op": "stamp", "program": "coffee",
            "card": format!("C-{}", i % CARDS), "store": "S-01", "qty": 1})
    .to_string()
}

/// The ledger's word on stamp `i`, or `None` while it does not answer.
fn post(port: u16, i: u64) -> Option<String> {
    let (status, body) = post_json(port, "/v1/transactions", ROUTER, &stamp(i)).ok()?;
    assert!(status == 200 || status >= 500, "stamp {i}: {status} {body}");
    let answer: Value = serde_json::from_str(&body).ok()?;
    answer["results"][0]["status"].as_str().map(str::to_owned)
}

#[test]
fn power_cuts_keep_every_applied_transaction_once() {
    let _load = crate::beside_others();
    let mut fs = PowerCutFs::mount();
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = format!("sqlite://{}", fs.join("ledger.db").display());
    let mut core = loyalty_with(BIN.as_ref(), dir.path(), &ledger, ROUTER, "");
    core.start();
    // A reward far away, so a card's balance counts its stamps.
    core.put_program(
        "coffee",
        json!({"kind": "stamps", "stamps_per_reward": 100000, "reward": "coffee"}),
    );

    let mut rng = rand::rng();
    let mut answered = BTreeSet::new();
    let mut i = 0;
    for cut in 1..=CUTS {
        let until = Instant::now() + Duration::from_millis(rng.random_range(500..2500));
        while Instant::now() < until {
            match post(core.port, i) {
                Some(status) if status == "applied" || status == "duplicate" => {
                    answered.insert(i);
                    i += 1;
                }
                Some(other) => panic!("stamp {i}: {other}"),
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        let report = fs.cut();
        core.proc.kill9();
        fs.remount();
        core.start();
        println!(
            "cut {cut}: {} stamps answered so far; the cut reverted {} files and {} folders",
            answered.len(),
            report.files_reverted,
            report.dirs_reverted
        );
    }
    // Each answered stamp again: the ledger has it, so it is a duplicate, never applied.
    let reapplied: Vec<u64> = answered
        .iter()
        .copied()
        .filter(|&n| post(core.port, n).as_deref() != Some("duplicate"))
        .collect();
    let total: i64 = (0..CARDS)
        .map(|c| {
            core.balances(&format!("C-{c}"))
                .get("coffee")
                .copied()
                .unwrap_or(0)
        })
        .sum();
    println!(
        "{CUTS} power cuts: {} stamps answered, {} in the balances, {} not found again",
        answered.len(),
        total,
        reapplied.len()
    );
    assert!(answered.len() > 20, "too few stamps to judge");
    assert!(
        reapplied.is_empty(),
        "answered before a cut, not in the ledger after it: {reapplied:?}"
    );
    assert_eq!(
        total,
        i64::try_from(answered.len()).expect("count"),
        "each answered stamp counted once"
    );
    core.proc.terminate();
}

/// Power cuts under the ingest: its journal and a folder lake on the power-cut filesystem,
/// cut four times while devices publish (and resend, as agents do after a reconnect).
/// Mosquitto keeps the ingest's persistent session, so what the ingest had not yet
/// acknowledged comes again; what it had acknowledged must be in the lake. Every record
/// the devices published lands exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cuts_under_the_ingest_lose_and_duplicate_nothing() {
    use ferry_tests::devices::{fleet, publish_all};
    let _serial = crate::one_at_a_time().await;
    let mut fs = PowerCutFs::mount();
    let dir = tempfile::tempdir().expect("tempdir");
    // The config and log stay on a real disk; the ingest's data folder is the cut one.
    std::fs::create_dir(fs.join("data")).expect("data folder");
    std::os::unix::fs::symlink(fs.join("data"), dir.path().join("data")).expect("symlink");
    let lake = fs.join("lake");
    let broker = ferry_tests::broker::Mosquitto::start();
    let mut ingest = crate::ingest(
        dir.path(),
        broker.port,
        crate::Lake::Folder(&lake),
        "flush_bytes = 16384",
    );
    // The folders made here must outlive the first cut, as a package's would.
    for d in [fs.path().to_owned(), fs.join("data")] {
        std::fs::File::open(&d)
            .and_then(|f| f.sync_all())
            .expect("fsync");
    }
    ingest.proc.start();
    ingest.wait_subscribed().await;

    let (expected, rounds): (std::collections::BTreeMap<_, _>, Vec<_>) = (0..6)
        .map(|d| {
            let (messages, expected) = fleet(&format!("ws-cut-{d}"), 1, 3_000, 100);
            (expected.into_iter().next().expect("one device"), messages)
        })
        .unzip();
    let port = broker.port;
    let publisher = tokio::spawn(async move {
        // Ten waves over each device's messages, each resending the last half of the one
        // before.
        for wave in 0..10usize {
            let batch: Vec<_> = rounds
                .iter()
                .flat_map(|m| {
                    let step = m.len().div_ceil(10);
                    m.iter()
                        .skip((wave * step).saturating_sub(step / 2))
                        .take(step + step / 2)
                        .cloned()
                })
                .collect();
            publish_all(port, "cut-devices", &batch).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    for cut in 1..=CUTS {
        let wait = rand::rng().random_range(400..1200);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let report = fs.cut();
        ingest.proc.kill9();
        fs.remount();
        ingest.proc.start();
        println!(
            "ingest cut {cut}: {} records in the lake; the cut reverted {} files and {} folders, lost {} entries",
            ferry_tests::lake::record_ids(&ingest.lake()).len(),
            report.files_reverted,
            report.dirs_reverted,
            report.nodes_lost
        );
    }
    publisher.await.expect("publisher");
    ingest
        .wait_for_records(18_000, Duration::from_secs(120))
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    crate::assert_exactly_once(&ingest.lake(), &expected);
    println!("{CUTS} power cuts under the ingest: 18000 records, each in the lake once");
    assert_eq!(ingest.proc.terminate(), Some(0), "{}", ingest.proc.log());
}

/// Power cuts under `fleet.db` (and the rest of `ferry-cloud all`'s data): operators set
/// desired configurations one after another while the power is cut at random moments.
/// Every version the API answered `202` for is there after the cut (a later one, when the
/// answer to a later request was lost), and so is its audit entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cuts_keep_every_desired_configuration_the_api_answered() {
    use ferry_tests::cloud::TOKEN;
    use ferry_tests::http::request;

    let _serial = crate::one_at_a_time().await;
    // The fleet API comes with the dashboards; their hot store is on the cut folder too.
    let mut cloud = CutCloud::start("fleet-cut", true).await;
    let http = cloud.http;
    let put = |device: &str, n: u64| -> Option<u64> {
        let level = if n.is_multiple_of(2) { "info" } else { "debug" };
        let body = json!({ "log_level": level }).to_string();
        let path = format!("/v1/devices/{device}/config");
        let (status, text) = request(http, "PUT", &path, TOKEN, &body).ok()?;
        if status != 202 {
            assert!(status >= 500, "{device}: {status} {text}");
            return None;
        }
        let view: Value = serde_json::from_str(&text).expect("a config view");
        view["desired"]["version"].as_u64()
    };
    let devices: Vec<String> = (0..4).map(|d| format!("ws-fleet-{d}")).collect();
    let mut answered = std::collections::BTreeMap::<String, u64>::new();
    let mut answers = 0usize;
    let mut n = 0u64;
    for cut in 1..=CUTS {
        let until = Instant::now() + Duration::from_millis(rand::rng().random_range(500..2000));
        while Instant::now() < until {
            let device = &devices[(n % devices.len() as u64) as usize];
            match tokio::task::block_in_place(|| put(device, n)) {
                Some(version) => {
                    answered.insert(device.clone(), version);
                    answers += 1;
                    n += 1;
                }
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        let report = cloud.cut().await;
        println!(
            "fleet cut {cut}: {answers} desired configurations answered so far; the cut \
             reverted {} files and {} folders",
            report.files_reverted, report.dirs_reverted
        );
    }
    for (device, version) in &answered {
        let path = format!("/v1/devices/{device}/config");
        let (status, text) = request(http, "GET", &path, TOKEN, "").expect("config");
        assert_eq!(status, 200, "{text}");
        let view: Value = serde_json::from_str(&text).expect("json");
        let kept = view["desired"]["version"].as_u64().unwrap_or(0);
        assert!(
            kept >= *version,
            "{device}: version {version} was answered, {kept} survived the cuts"
        );
    }
    let mut entries = 0;
    let mut page = "/v1/fleet/audit?limit=1000".to_owned();
    loop {
        let (status, text) = request(http, "GET", &page, TOKEN, "").expect("audit");
        assert_eq!(status, 200, "{text}");
        let audit: Value = serde_json::from_str(&text).expect("json");
        entries += audit["entries"].as_array().map_or(0, |e| {
            e.iter().filter(|e| e["action"] == "put_config").count()
        });
        match audit["next_before"].as_i64() {
            Some(before) => page = format!("/v1/fleet/audit?limit=1000&before={before}"),
            None => break,
        }
    }
    println!(
        "{CUTS} power cuts under fleet.db: {answers} configurations answered, \
         {entries} put_config audit entries kept"
    );
    assert!(answers > 20, "too few answers to judge");
    assert!(
        entries >= answers,
        "every answered configuration has its audit entry: {entries} of {answers}"
    );
    cloud.stop();
}

/// Power cuts under `ferry-cloud all` while a till's stamps flow through it: the journal
/// with its route queue, the lake and the ledger (SQLite) all on the power-cut filesystem.
/// The till publishes its envelopes in waves and then all of them again, as an agent does
/// after a reconnect. Whatever a cut undid of the queue or of the ledger's answers, every
/// stamp ends in the balances once: what was answered stays, and what was not is sent again
/// and applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cuts_under_the_route_queue_apply_every_stamp_once() {
    use ferry_tests::cloud::TOKEN;
    use ferry_tests::devices::{Message, publish_all};
    use ferry_tests::http::request;
    use ferry_tests::loyalty::{put_program, register_till};

    const STAMPS: u64 = 600;
    let _serial = crate::one_at_a_time().await;
    let mut cloud = CutCloud::start("route-cut", false).await;
    let http = cloud.http;
    tokio::task::block_in_place(|| {
        put_program(
            http,
            "coffee",
            &json!({"kind": "stamps", "stamps_per_reward": 100000, "reward": "coffee"}),
        );
        register_till(http, "pos-cut", "S-01");
    });

    let messages: Vec<Message> = (0..STAMPS)
        .collect::<Vec<_>>()
        .chunks(10)
        .map(|chunk| {
            let records: Vec<Value> = chunk
                .iter()
                .map(|&i| {
                    json!({"seq": i + 1, "ts": ferry_shared::Timestamp::now().to_string(),
                           "type": "txn", "tx_id": format!("pos-cut:{i}"), "op": "stamp",
                           "program": "coffee", "card": format!("C-{}", i % CARDS),
                           "store": "S-01", "qty": 1})
                })
                .collect();
            Message {
                topic: "ferry/v1/pos-cut/transactions".into(),
                payload: json!({"v": 1, "device": "pos-cut",
                                "spool": "01JD3W6Q3X8F2M7C9K4N5P6R8T",
                                "sent_at": ferry_shared::Timestamp::now().to_string(),
                                "records": records})
                .to_string()
                .into_bytes(),
            }
        })
        .collect();
    let port = cloud.broker.port;
    let waves = messages.clone();
    let publisher = tokio::spawn(async move {
        // Twenty waves over about ten seconds, so the cuts fall among them.
        for wave in waves.chunks(3) {
            publish_all(port, "route-cut-till", wave).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        publish_all(port, "route-cut-till", &waves).await;
    });
    let balance_total = || -> i64 {
        (0..CARDS)
            .map(|c| {
                let path = format!("/v1/cards/C-{c}");
                match request(http, "GET", &path, TOKEN, "") {
                    Ok((200, text)) => serde_json::from_str::<Value>(&text)
                        .ok()
                        .and_then(|v| v["balances"][0]["balance"].as_i64())
                        .unwrap_or(0),
                    _ => 0,
                }
            })
            .sum()
    };
    for cut in 1..=CUTS {
        let wait = rand::rng().random_range(400..1500);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let report = cloud.cut().await;
        let total = tokio::task::block_in_place(balance_total);
        println!(
            "route cut {cut}: {total} stamps in the balances; the cut reverted {} files and \
             {} folders",
            report.files_reverted, report.dirs_reverted
        );
    }
    publisher.await.expect("publisher");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut total = 0;
    while Instant::now() < deadline {
        total = tokio::task::block_in_place(balance_total);
        if total >= STAMPS as i64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Long enough for a second application, were there one, to land.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let settled = tokio::task::block_in_place(balance_total);
    println!("{CUTS} power cuts under the route queue: {STAMPS} stamps sent, {settled} applied");
    assert_eq!(
        (total, settled),
        (STAMPS as i64, STAMPS as i64),
        "every stamp applied once:\n{}",
        cloud.proc.log()
    );
    cloud.stop();
}

/// `ferry-cloud all` with its whole data folder (journal, lake, ledger, fleet.db and, with
/// `hot`, the hot store) on the power-cut filesystem; config and log on a real disk.
struct CutCloud {
    fs: PowerCutFs,
    _dir: tempfile::TempDir,
    broker: ferry_tests::broker::Mosquitto,
    http: u16,
    proc: ferry_tests::process::Proc,
}

impl CutCloud {
    async fn start(client_id: &str, hot: bool) -> Self {
        use ferry_tests::cloud::{AllConfig, start_all};
        let fs = PowerCutFs::mount();
        std::fs::File::open(fs.path())
            .and_then(|f| f.sync_all())
            .expect("fsync");
        let dir = tempfile::tempdir().expect("tempdir");
        let broker = ferry_tests::broker::Mosquitto::start();
        let http = ferry_tests::free_port();
        let mut config = AllConfig::new(fs.path(), broker.port, http, client_id);
        if !hot {
            config.hot = None;
        }
        let proc = start_all(dir.path(), &config.toml(), http).await;
        Self {
            fs,
            _dir: dir,
            broker,
            http,
            proc,
        }
    }

    /// Cuts the power, SIGKILLs, remounts on what survived and starts again; returns once
    /// the ingest has subscribed.
    async fn cut(&mut self) -> ferry_tests::powercut::CutReport {
        let report = self.fs.cut();
        self.proc.kill9();
        self.fs.remount();
        self.proc.start();
        let http = self.http;
        ferry_tests::wait_until(Duration::from_secs(30), "the cloud back up", || {
            ferry_tests::http::request(http, "GET", "/metrics", "", "")
                .is_ok_and(|(_, m)| m.contains("ferry_ingest_subscribed 1"))
        })
        .await;
        report
    }

    fn stop(&mut self) {
        assert_eq!(self.proc.terminate(), Some(0), "{}", self.proc.log());
    }
}
