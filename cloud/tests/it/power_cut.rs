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
