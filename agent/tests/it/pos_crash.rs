//! The POS API under SIGKILL: clients POST 5,000 transactions, some keys repeated and some
//! invalid; the agent is killed twice mid-run and clients retry what got no answer. After
//! restart the spool holds exactly one txn per key that got 202 or 200, and none other.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_tests::http::post_json;
use ferry_tests::{free_port, wait_until};
use rand::Rng;

use crate::agent;

const REQUESTS: usize = 5_000;
const DISTINCT_KEYS: usize = 4_000;
const CLIENTS: usize = 8;
const TOKEN: &str = "pos-crash-test-token";

/// Key -> every (status, tx_id) the agent answered for it.
type Answers = BTreeMap<String, Vec<(u16, String)>>;

/// Request `i`: the key repeats every DISTINCT_KEYS; every 97th key is invalid (qty 0).
fn request(i: usize) -> (String, String, bool) {
    let k = i % DISTINCT_KEYS;
    let valid = !k.is_multiple_of(97);
    let body = serde_json::json!({
        "op": "stamp", "program": "coffee", "card": format!("C-{}", k % 200), "store": "S-01",
        "qty": if valid { 1 } else { 0 }, "receipt": format!("R-{k}"), "idempotency_key": format!("key-{k}"),
    });
    (format!("key-{k}"), body.to_string(), valid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_pos_load_keeps_exactly_one_txn_per_accepted_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    // No broker: everything stays in the spool, where the test counts it.
    let url = format!("mqtt://127.0.0.1:{}", free_port());
    let rest = format!("[pos_api]\nlisten = \"127.0.0.1:{port}\"\ntoken = \"{TOKEN}\"\n");
    let mut agent = agent(dir.path(), "pos-crash", &url, "", &rest);
    agent.start();

    let answers: Arc<Mutex<Answers>> = Arc::default();
    let deadline = Instant::now() + Duration::from_secs(240);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let answers = answers.clone();
            std::thread::spawn(move || {
                for i in (c..REQUESTS).step_by(CLIENTS) {
                    let (key, body, _) = request(i);
                    let (status, reply) = loop {
                        assert!(Instant::now() < deadline, "request {i} never answered");
                        match post_json(port, "/v1/transactions", TOKEN, &body) {
                            Ok(answer) => break answer,
                            // No answer: the agent is down or died mid-request. Retry.
                            Err(_) => std::thread::sleep(Duration::from_millis(50)),
                        }
                    };
                    let tx_id = serde_json::from_str::<serde_json::Value>(&reply)
                        .ok()
                        .and_then(|v| v["tx_id"].as_str().map(str::to_owned))
                        .unwrap_or_default();
                    answers
                        .lock()
                        .expect("lock")
                        .entry(key)
                        .or_default()
                        .push((status, tx_id));
                }
            })
        })
        .collect();

    // Kill at random points of the load, judged by answers received, not by the clock.
    let mut rng = rand::rng();
    let kill_at = [rng.random_range(500..2000), rng.random_range(2500..4000)];
    for at in kill_at {
        wait_until(Duration::from_secs(120), "load to progress", || {
            answers
                .lock()
                .expect("lock")
                .values()
                .map(Vec::len)
                .sum::<usize>()
                >= at
        })
        .await;
        agent.kill9();
        tokio::time::sleep(Duration::from_millis(300)).await;
        agent.start();
    }
    for c in clients {
        c.join().expect("client thread");
    }
    assert_eq!(agent.terminate(), Some(0), "{}", agent.log());
    let runs = agent.log().matches("agent starting").count();
    assert_eq!(runs, 3, "two kills, both while clients were posting");

    let answers = answers.lock().expect("lock");
    let mut accepted = BTreeMap::new();
    for (key, got) in answers.iter() {
        let ok: BTreeSet<&String> = got
            .iter()
            .filter(|(s, _)| *s == 200 || *s == 202)
            .map(|(_, t)| t)
            .collect();
        assert!(
            ok.len() <= 1,
            "{key} was answered with different tx_ids: {got:?}"
        );
        if let Some(tx_id) = ok.into_iter().next() {
            accepted.insert(tx_id.clone(), key.clone());
        } else {
            assert!(got.iter().all(|(s, _)| *s == 400), "{key}: {got:?}");
        }
    }
    let invalid_keys = (0..DISTINCT_KEYS).filter(|k| k.is_multiple_of(97)).count();
    assert_eq!(
        accepted.len(),
        DISTINCT_KEYS - invalid_keys,
        "every valid key was accepted once"
    );

    let db = rusqlite::Connection::open(dir.path().join("data/spool.db")).expect("open spool");
    let mut stmt = db
        .prepare("SELECT body FROM records WHERE class = 0")
        .expect("query");
    let stored: Vec<String> = stmt
        .query_map([], |r| r.get::<_, Vec<u8>>(0))
        .expect("rows")
        .map(|b| {
            let body: serde_json::Value = serde_json::from_slice(&b.expect("row")).expect("json");
            body["tx_id"].as_str().expect("tx_id").to_owned()
        })
        .collect();
    let unique: BTreeSet<&String> = stored.iter().collect();
    assert_eq!(unique.len(), stored.len(), "a tx_id is stored twice");
    let answered: BTreeSet<&String> = accepted.keys().collect();
    assert_eq!(
        unique, answered,
        "the spool holds exactly the accepted transactions"
    );
}
