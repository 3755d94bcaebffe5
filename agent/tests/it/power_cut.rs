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
