//! End to end: POS API → agent → Mosquitto → ingest → router → loyalty, under chaos.
//!
//! Two POS agents take 5,000 transactions over 200 cards from four clients. Meanwhile each
//! agent is SIGKILLed twice, the ingest twice, and the loyalty service is down for 10 s;
//! clients retry what got no answer, under the same idempotency key. Afterwards every
//! transaction answered 202 (or 200 for a replayed key) is in the ledger exactly once,
//! every card's balance equals the one computed here from the accepted requests, the lake
//! holds each once, and each till has heard the ledger's balances on the `cards` topic.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_tests::agent::AgentProc;
use ferry_tests::broker::Mosquitto;
use ferry_tests::cloud::{Ingest, Lake, ingest_with};
use ferry_tests::curated::compact_once;
use ferry_tests::http::post_json;
use ferry_tests::loyalty::{Loyalty, loyalty};
use ferry_tests::{bins, free_port, lake, wait_until};
use rand::Rng;
use serde_json::{Value, json};

const REQUESTS: usize = 5_000;
const CARDS: usize = 200;
const CLIENTS: usize = 4;
const POS_TOKEN: &str = "e2e-pos-test-token";
/// Stamps for a coffee; points for a voucher.
const STAMPS_PER_REWARD: i64 = 10;
const POINTS_COST: i64 = 100;

/// What request `i` does: (till, card, program, delta on the balance, body).
fn request(i: usize) -> (usize, String, &'static str, i64, String) {
    let card_no = (i * 7919) % CARDS;
    // Cards 0..100 shop at till 0, the rest at till 1, so each till hears of its own.
    let till = card_no * 2 / CARDS;
    let card = format!("C-{card_no:03}");
    let key = format!("key-{i}");
    let (op, program, qty, delta) = match i % 10 {
        0 => ("redeem", "coffee", 1, -STAMPS_PER_REWARD),
        1 => ("redeem", "points", 1, -POINTS_COST),
        2..=4 => ("earn", "points", 10 + (i % 40) as i64, 10 + (i % 40) as i64),
        _ => ("stamp", "coffee", 1 + (i % 3) as i64, 1 + (i % 3) as i64),
    };
    // Redemptions go through offline on the cashier's word, so the ledger applies them
    // whatever the balance (and flags the card when it goes negative).
    let body = json!({
        "op": op, "program": program, "card": card, "store": format!("S-{till}"),
        "qty": qty, "idempotency_key": key, "allow_overdraft": true,
    });
    (till, card, program, delta, body.to_string())
}

fn pos_agent(dir: &Path, device: &str, broker: u16, port: u16) -> AgentProc {
    let data = dir.join(device);
    std::fs::create_dir_all(&data).expect("agent dir");
    let config = format!(
        "device_id = \"{device}\"\ndata_dir = \"{}\"\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:{broker}\"\npublishes_per_s = 10000\nbytes_per_s = 1000000000\n\
         [pos_api]\nlisten = \"127.0.0.1:{port}\"\ntoken = \"{POS_TOKEN}\"\n",
        data.join("data").display()
    );
    AgentProc::new(bins::path("ferry-agent"), &data, &config)
}

/// Posts until the agent answers; returns (status, tx_id).
fn post_until_answered(port: u16, body: &str, deadline: Instant) -> (u16, String) {
    loop {
        assert!(Instant::now() < deadline, "a request was never answered");
        match post_json(port, "/v1/transactions", POS_TOKEN, body) {
            Ok((status, reply)) => {
                let tx_id = serde_json::from_str::<Value>(&reply)
                    .ok()
                    .and_then(|v| v["tx_id"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                return (status, tx_id);
            }
            // No answer: the agent is down or died mid-request. Retry, same key.
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Request number -> every (status, tx_id) answered for it.
type Answers = BTreeMap<usize, Vec<(u16, String)>>;

struct Cloud {
    ingest: Ingest,
    loyalty: Loyalty,
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pos_to_ledger_exactly_once_under_kills_and_a_loyalty_outage() {
    let _load = super::alone().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Mosquitto::start();
    let cloud_bin = bins::path("ferry-cloud");
    let db = format!("sqlite://{}", dir.path().join("ledger.db").display());
    let ingest_dir = dir.path().join("ingest");
    std::fs::create_dir_all(&ingest_dir).expect("ingest dir");
    let loyalty = loyalty(&cloud_bin, dir.path(), &db);
    let ingest = ingest_with(
        &cloud_bin,
        &ingest_dir,
        broker.port,
        Lake::Folder(&dir.path().join("lake")),
        "",
        &loyalty.route_config(),
    );
    let mut cloud = Cloud { ingest, loyalty };
    cloud.loyalty.start();
    cloud.loyalty.put_program(
        "coffee",
        json!({"kind": "stamps", "stamps_per_reward": STAMPS_PER_REWARD, "reward": "coffee"}),
    );
    cloud.loyalty.put_program(
        "points",
        json!({"kind": "points", "points_per_currency_unit": 1, "reward": "voucher", "reward_cost": POINTS_COST}),
    );
    // Each till at its store (`request` sends till i's transactions for store S-i).
    for till in 0..2 {
        cloud
            .loyalty
            .register_till(&format!("pos-e2e-{till}"), &format!("S-{till}"));
    }
    cloud.ingest.proc.start();
    cloud.ingest.wait_subscribed().await;

    let ports = [free_port(), free_port()];
    let mut tills: Vec<AgentProc> = ["pos-e2e-0", "pos-e2e-1"]
        .iter()
        .zip(ports)
        .map(|(device, port)| pos_agent(dir.path(), device, broker.port, port))
        .collect();
    for till in &mut tills {
        till.start();
    }

    let answers: Arc<Mutex<Answers>> = Arc::default();
    let answered = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(300);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (answers, answered) = (answers.clone(), answered.clone());
            std::thread::spawn(move || {
                for i in (c..REQUESTS).step_by(CLIENTS) {
                    let (till, _, _, _, body) = request(i);
                    let answer = post_until_answered(ports[till], &body, deadline);
                    answers
                        .lock()
                        .expect("lock")
                        .entry(i)
                        .or_default()
                        .push(answer);
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    let started = Instant::now();
    let phase = |what: &str| eprintln!("[{:>6.1} s] {what}", started.elapsed().as_secs_f64());
    // The chaos, at random points of the load, judged by answers, not by the clock.
    let mut rng = rand::rng();
    let mut plan: Vec<(usize, &str)> = vec![
        (rng.random_range(200..1000), "kill till 0"),
        (rng.random_range(400..1400), "kill till 1"),
        (rng.random_range(800..1800), "kill ingest"),
        (rng.random_range(1800..2600), "stop loyalty for 10 s"),
        (rng.random_range(2600..3600), "kill till 0"),
        (rng.random_range(2800..4000), "kill till 1"),
        (rng.random_range(3000..4400), "kill ingest"),
    ];
    plan.sort();
    // The loyalty service comes back 10 s after it was stopped, while the plan goes on.
    let mut loyalty_back_at: Option<Instant> = None;
    for (at, what) in &plan {
        let wait_deadline = Instant::now() + Duration::from_secs(240);
        while answered.load(Ordering::Relaxed) < *at {
            if loyalty_back_at.is_some_and(|t| Instant::now() >= t) {
                cloud.loyalty.start();
                loyalty_back_at = None;
            }
            assert!(
                Instant::now() < wait_deadline,
                "the load stopped progressing"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        phase(what);
        match *what {
            "kill till 0" | "kill till 1" => {
                let till = &mut tills[usize::from(what.ends_with('1'))];
                till.kill9();
                tokio::time::sleep(Duration::from_millis(300)).await;
                till.start();
            }
            "kill ingest" => {
                cloud.ingest.proc.kill9();
                tokio::time::sleep(Duration::from_millis(500)).await;
                cloud.ingest.proc.start();
            }
            _ => {
                cloud.loyalty.proc.kill9();
                loyalty_back_at = Some(Instant::now() + Duration::from_secs(10));
            }
        }
    }
    if let Some(t) = loyalty_back_at {
        tokio::time::sleep_until(t.into()).await;
        cloud.loyalty.start();
    }
    for c in clients {
        c.join().expect("client thread");
    }
    phase("every request answered");
    assert!(
        answered.load(Ordering::Relaxed) >= REQUESTS,
        "every request was answered"
    );

    // What the ledger must say, from the accepted requests alone.
    let mut expected: BTreeMap<(String, &str), i64> = BTreeMap::new();
    let mut per_card: BTreeMap<String, usize> = BTreeMap::new();
    let mut accepted = BTreeSet::new();
    {
        let answers = answers.lock().expect("lock");
        for (i, got) in answers.iter() {
            let ok: BTreeSet<&String> = got
                .iter()
                .filter(|(s, _)| *s == 200 || *s == 202)
                .map(|(_, t)| t)
                .collect();
            assert_eq!(ok.len(), 1, "request {i}: {got:?}");
            let (_, card, program, delta, _) = request(*i);
            *expected.entry((card.clone(), program)).or_default() += delta;
            *per_card.entry(card).or_default() += 1;
            accepted.extend(ok.into_iter().cloned());
        }
    }
    assert_eq!(accepted.len(), REQUESTS, "one tx_id per request");

    // Everything drains: the tills' spools, the route queue, the ledger.
    for till in &tills {
        wait_until(Duration::from_secs(120), "the tills to drain", || {
            till.status_u64("pending") == 0
        })
        .await;
    }
    phase("the tills have drained");
    let settle = Instant::now() + Duration::from_secs(120);
    loop {
        let mismatched: Vec<String> = (0..CARDS)
            .map(|n| format!("C-{n:03}"))
            .filter(|card| {
                let have = cloud.loyalty.balances(card);
                ["coffee", "points"].iter().any(|p| {
                    have.get(*p).copied().unwrap_or(0)
                        != expected.get(&(card.clone(), *p)).copied().unwrap_or(0)
                })
            })
            .collect();
        if mismatched.is_empty() {
            break;
        }
        assert!(
            Instant::now() < settle,
            "{} cards differ from the accepted requests, e.g. {}: ledger {:?}; ingest log:\n{}\nloyalty log:\n{}",
            mismatched.len(),
            mismatched[0],
            cloud.loyalty.balances(&mismatched[0]),
            tail(&cloud.ingest.proc.log()),
            tail(&cloud.loyalty.proc.log()),
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    phase("the ledger agrees");
    // Exactly once: each card's ledger holds each of its accepted transactions once.
    let mut in_ledger = BTreeSet::new();
    for (card, n) in &per_card {
        let (status, page) = cloud.loyalty.call(
            "GET",
            &format!("/v1/cards/{card}/transactions?limit=1000"),
            "",
        );
        assert_eq!(status, 200, "{page}");
        let ids: Vec<String> = page["transactions"]
            .as_array()
            .expect("transactions")
            .iter()
            .filter_map(|t| t["tx_id"].as_str().map(str::to_owned))
            .collect();
        assert_eq!(
            ids.len(),
            *n,
            "{card}: ledger entries against accepted requests"
        );
        in_ledger.extend(ids);
    }
    assert_eq!(
        in_ledger, accepted,
        "the ledger holds exactly the accepted tx_ids"
    );
    assert_eq!(cloud.ingest.metric("ferry_ingest_routes_pending"), 0.0);

    // The lake has every transaction once, too.
    cloud
        .ingest
        .wait_for_records(REQUESTS, Duration::from_secs(60))
        .await;
    let ids = lake::record_ids(&cloud.ingest.lake());
    let unique: BTreeSet<_> = ids.iter().collect();
    assert_eq!(ids.len(), REQUESTS, "lake records");
    assert_eq!(unique.len(), REQUESTS, "no record twice in the lake");

    phase("the lake agrees");
    // The curated transactions table: every accepted transaction once, each one `applied`
    // as the ledger (which the compactor reads) says.
    let lake_dir = dir.path().join("lake");
    let compact_config = dir.path().join("compact.toml");
    std::fs::write(
        &compact_config,
        format!(
            "data_dir = \"{}\"\n[lake]\nroot = \"{}\"\n{}database = \"{db}\"\n",
            dir.path().join("compact").display(),
            lake_dir.display(),
            cloud.loyalty.route_config(),
        ),
    )
    .expect("compact config");
    let round = tokio::task::block_in_place(|| compact_once(&cloud_bin, &compact_config, &[]));
    assert_eq!(round.code, Some(0), "{}", round.stderr);
    let counts = ferry_tests::curated::query(
        &lake_dir.join("curated/transactions"),
        "SELECT count(*), count(DISTINCT tx_id), count(*) FILTER (WHERE outcome = 'applied') FROM t",
    );
    assert_eq!(
        counts,
        json!([[REQUESTS, REQUESTS, REQUESTS]]),
        "every transaction once, and applied"
    );

    // The tills hear the ledger's word: one more stamp per sampled card, now that nothing
    // is being killed, and the till's cloud balance comes to equal the ledger's.
    for n in [0usize, 37, 99, 100, 150, 199] {
        let card = format!("C-{n:03}");
        let till = n * 2 / CARDS;
        let body = json!({"op": "stamp", "program": "coffee", "card": card,
                          "store": format!("S-{till}"), "qty": 1});
        let (status, _) = post_until_answered(ports[till], &body.to_string(), deadline);
        assert_eq!(status, 202);
        let want = expected
            .get(&(card.clone(), "coffee"))
            .copied()
            .unwrap_or(0)
            + 1;
        let path = format!("/v1/cards/{card}");
        wait_until(
            Duration::from_secs(60),
            "the till to hear the card's balance",
            || {
                ferry_tests::http::request(ports[till], "GET", &path, POS_TOKEN, "")
                    .ok()
                    .and_then(|(_, body)| serde_json::from_str::<Value>(&body).ok())
                    .is_some_and(|v| {
                        v["balances"].as_array().is_some_and(|all| {
                            all.iter()
                                .any(|b| b["program"] == "coffee" && b["balance"] == want)
                        })
                    })
            },
        )
        .await;
    }

    phase("the tills heard the ledger");
    // Every process saw the chaos it was meant to.
    assert_eq!(
        cloud.ingest.proc.log().matches("ingest starting").count(),
        3
    );
    assert_eq!(
        cloud
            .loyalty
            .proc
            .log()
            .matches("ferry-cloud starting")
            .count(),
        2
    );
    for till in &tills {
        assert_eq!(
            till.log().matches("agent starting").count(),
            3,
            "{}",
            till.log()
        );
    }
}
