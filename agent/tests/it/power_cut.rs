//! Power cuts under the agent: its data folder on the power-cut filesystem
//! (`ferry_tests::powercut`), which keeps only what was fsynced. A simulator appends and a
//! till posts stamps while the power is cut at random moments; after each cut the agent is
//! SIGKILLed, the filesystem remounted on what survived, and the agent started again.
//! Every `202` the till got reaches the broker, no seq is ever used for two records (the
//! cloud would drop the second as a resend), and the spool's seqs arrive gap-free.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry_shared::RecordBody;
use ferry_tests::agent::AgentProc;
use ferry_tests::broker::Mosquitto;
use ferry_tests::collector::Collector;
use ferry_tests::http::post_json;
use ferry_tests::powercut::PowerCutFs;
use ferry_tests::{free_port, wait_until};
use rand::Rng;

use crate::{BIN, FAST};

const CUTS: usize = 4;
const TOKEN: &str = "power-cut-token-0123";
const DEVICE: &str = "pc-till";

async fn pos_up(port: u16) {
    wait_until(Duration::from_secs(30), "the POS API", || {
        post_json(port, "/healthz", "", "").is_ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_cuts_lose_no_acknowledged_record_and_reuse_no_seq() {
    let broker = Mosquitto::start();
    let collector = Collector::start(broker.port).await;
    let mut fs = PowerCutFs::mount();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = fs.join("data");
    let port = free_port();
    let config = format!(
        "device_id = \"{DEVICE}\"\ndata_dir = \"{}\"\n[mqtt]\nurl = \"{}\"\n{FAST}\n\
         [[sources]]\ntype = \"simulator\"\nprofile = \"weather\"\ninterval_ms = 10\n\
         [pos_api]\nlisten = \"127.0.0.1:{port}\"\ntoken = \"{TOKEN}\"\n",
        data.display(),
        broker.url()
    );
    let mut agent = AgentProc::new(BIN, dir.path(), &config);
    agent.start();
    pos_up(port).await;

    // The till: one stamp after another, each retried with its key until answered.
    let accepted: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let till = {
        let (accepted, stop) = (accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let body = serde_json::json!({"op": "stamp", "program": "coffee",
                    "card": format!("C-{}", i % 50), "store": "S-01", "qty": 1,
                    "idempotency_key": format!("k-{i}")});
                match post_json(port, "/v1/transactions", TOKEN, &body.to_string()) {
                    Ok((202 | 200, reply)) => {
                        let tx: serde_json::Value = serde_json::from_str(&reply).expect("json");
                        let tx_id = tx["tx_id"].as_str().expect("tx_id").to_owned();
                        accepted.lock().expect("lock").insert(tx_id);
                        i += 1;
                    }
                    Ok((status, reply)) => panic!("stamp {i}: {status} {reply}"),
                    // The power is off, or the agent is starting: the same key again.
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        })
    };

    let mut rng = rand::rng();
    for cut in 1..=CUTS {
        tokio::time::sleep(Duration::from_millis(rng.random_range(800..3000))).await;
        let before = accepted.lock().expect("lock").len();
        let report = fs.cut();
        agent.kill9();
        fs.remount();
        agent.start();
        pos_up(port).await;
        println!(
            "cut {cut}: {before} stamps answered 202 so far, {} records seen at the broker; \
             the cut reverted {} files and {} folders, lost {} entries",
            collector.seen().seqs_of(DEVICE).len(),
            report.files_reverted,
            report.dirs_reverted,
            report.nodes_lost
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    till.join().expect("the till");
    assert_eq!(agent.terminate(), Some(0), "{}", agent.log());
    assert!(fs.fsyncs() > 0);

    let last =
        crate::drain_and_check_every_seq(dir.path(), &data, DEVICE, &broker.url(), &collector)
            .await;
    let seen = collector.seen();
    assert!(
        seen.conflicts.is_empty(),
        "seqs used for two different records: {:?}",
        seen.conflicts
    );
    assert_eq!(
        seen.spools_of(DEVICE),
        1,
        "the spool itself survived every cut"
    );
    let delivered: BTreeSet<String> = seen
        .records
        .get(DEVICE)
        .map(|records| {
            records
                .values()
                .filter_map(|r| match &r.body {
                    RecordBody::Txn(t) => Some(t.tx_id.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let accepted = accepted.lock().expect("lock");
    let missing: Vec<&String> = accepted.difference(&delivered).collect();
    println!(
        "{CUTS} power cuts: {} stamps answered 202, {} records in the spool, every one at \
         the broker once, {} seqs reused: none",
        accepted.len(),
        last,
        seen.conflicts.len()
    );
    assert!(accepted.len() > 20, "the till made too few stamps to judge");
    assert!(
        missing.is_empty(),
        "answered 202, never delivered: {missing:?}"
    );
}

/// The update's swap under power cuts: the binary and the update state on the power-cut
/// filesystem, the install of a verified binary run while the power is cut after a random
/// delay, twenty times. After each remount the binary's path holds the old binary or the
/// new one, whole, and it runs; never a torn or missing one.
#[test]
fn a_power_cut_at_any_step_of_the_swap_leaves_a_binary_that_runs() {
    use ferry_agent::update::{download, install, state};
    let script = |version: &str| format!("#!/bin/sh\necho 'ferry-agent {version}'\n");
    let mut rng = rand::rng();
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for round in 0..20 {
        let mut fs = PowerCutFs::mount();
        let bin = fs.join("ferry-agent");
        let sync = |p: &std::path::Path| {
            std::fs::File::open(p)
                .and_then(|f| f.sync_all())
                .expect("fsync")
        };
        std::fs::write(&bin, script("1.0.0")).expect("old binary");
        std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("mode");
        sync(&bin);
        sync(fs.path());
        let updates = state::UpdateDir::open(&fs.join("data")).expect("update dir");
        // The download, verified against its manifest, as the agent does before the swap.
        let new = script("2.0.0");
        let part = fs.join("data/new.part");
        std::fs::write(&part, &new).expect("part");
        let manifest = ferry_tests::fleet::manifest(new.as_bytes(), "2.0.0");
        let verified = download::verify(&part, &manifest).expect("verified");
        let trial = state::Trial {
            job: format!("cut-{round}"),
            version: "2.0.0".into(),
            previous_version: "1.0.0".into(),
            started: 1,
            trial_s: 120,
            previous_spool_format: ferry_agent::spool::FORMAT,
        };
        let delay = Duration::from_micros(rng.random_range(0..30_000));
        let installed = std::thread::scope(|scope| {
            let swap = scope.spawn(|| install::install(&verified, &bin, &trial, &updates));
            std::thread::sleep(delay);
            fs.cut();
            swap.join().expect("install thread").is_ok()
        });
        fs.remount();
        let said = std::process::Command::new(&bin)
            .arg("--version")
            .output()
            .unwrap_or_else(|e| panic!("round {round}: the binary does not run: {e}"));
        let said = String::from_utf8_lossy(&said.stdout).trim().to_owned();
        assert!(
            said == "ferry-agent 1.0.0" || said == "ferry-agent 2.0.0",
            "round {round} (cut after {delay:?}): the binary says {said:?}"
        );
        if said.ends_with("2.0.0") {
            // The new binary is in place only with its trial recorded, for the guard.
            assert!(
                fs.join("data/update/trial").exists(),
                "round {round}: the new binary without its trial"
            );
        }
        *outcomes
            .entry(format!("{said} (install finished: {installed})"))
            .or_default() += 1;
    }
    println!("20 power cuts during the swap: {outcomes:?}");
}

/// The desired configuration and its answer (`fleet/desired.json`, `fleet/reported.json`)
/// under power cuts: written over and over while the power is cut after a random delay,
/// ten times. After each remount both files are whole or absent, and the answer is never
/// for a newer document than the one kept (the document is written first).
#[test]
fn a_power_cut_leaves_the_desired_document_and_its_answer_whole_and_in_order() {
    use ferry_agent::fleet::desired::DesiredStore;
    use ferry_shared::fleet::{DesiredConfig, ReportedConfig};
    let mut rng = rand::rng();
    let mut kept = Vec::new();
    for round in 0..10 {
        let mut fs = PowerCutFs::mount();
        let data = fs.join("data");
        let delay = Duration::from_micros(rng.random_range(1_000..40_000));
        // The last version whose write returned: what the device would have answered.
        let done = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let Ok(store) = DesiredStore::open(&data) else {
                    return;
                };
                for version in 1.. {
                    let desired = DesiredConfig {
                        version,
                        config: serde_json::from_value(
                            serde_json::json!({"log_level": format!("info,v{version}=debug")}),
                        )
                        .expect("config"),
                    };
                    let answer = ReportedConfig {
                        version,
                        applied_at: Some("2026-12-07T00:00:00Z".into()),
                        error: None,
                    };
                    if store.applied(&desired, &answer).is_err() {
                        return;
                    }
                    done.store(version, Ordering::SeqCst);
                }
            });
            std::thread::sleep(delay);
            fs.cut();
        });
        fs.remount();
        for name in ["desired.json", "reported.json"] {
            if let Ok(bytes) = std::fs::read(data.join("fleet").join(name)) {
                assert!(
                    serde_json::from_slice::<serde_json::Value>(&bytes).is_ok(),
                    "round {round}: {name} is torn: {:?}",
                    String::from_utf8_lossy(&bytes)
                );
            }
        }
        let done = done.load(Ordering::SeqCst);
        let store = DesiredStore::open(&data).expect("the store after the cut");
        let desired = store.desired().map_or(0, |d| d.version);
        let reported = store.reported().map_or(0, |r| r.version);
        assert!(
            reported <= desired,
            "round {round}: the answer {reported} is for a newer document than the kept {desired}"
        );
        assert!(
            reported >= done,
            "round {round}: version {done} was written and answered, {reported} survived"
        );
        kept.push((done, desired, reported));
    }
    println!(
        "10 power cuts while the desired document is rewritten: (written, kept, answered) {kept:?}"
    );
}
