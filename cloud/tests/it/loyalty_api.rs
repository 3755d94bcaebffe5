//! The loyalty core's HTTP API (README: loyalty core) on the real `ferry-cloud loyalty` binary, with
//! its ledger on SQLite: auth, programs, single and batched transactions, cards, the card's
//! ledger, flagged cards, errors and metrics.

use ferry_tests::cloud::TOKEN;
use ferry_tests::http::request;
use ferry_tests::loyalty::{Loyalty, loyalty};
use serde_json::{Value, json};

use crate::BIN;

fn started(dir: &tempfile::TempDir) -> Loyalty {
    let db = format!("sqlite://{}", dir.path().join("ledger.db").display());
    let mut l = loyalty(BIN.as_ref(), dir.path(), &db);
    l.start();
    l
}

fn stamp(id: &str, card: &str, qty: u64) -> Value {
    json!({"tx_id": id, "op": "stamp", "program": "coffee", "card": card, "store": "S-01", "qty": qty})
}

#[test]
fn every_call_needs_the_token_but_health_and_metrics() {
    let _load = crate::beside_others();
    let dir = tempfile::tempdir().expect("tempdir");
    let l = started(&dir);
    for (method, path) in [
        ("GET", "/v1/programs"),
        ("PUT", "/v1/programs/coffee"),
        ("POST", "/v1/transactions"),
        ("GET", "/v1/cards/C-1"),
        ("GET", "/v1/cards/C-1/transactions"),
    ] {
        for token in ["", "wrong", "cloud-test-tokeN"] {
            let (status, body) = request(l.port, method, path, token, "{}").expect("answer");
            assert_eq!(status, 401, "{method} {path} with {token:?}: {body}");
            let body: Value = serde_json::from_str(&body).expect("JSON error");
            assert_eq!(body["error"]["code"], "unauthorized");
        }
    }
    assert_eq!(
        request(l.port, "GET", "/healthz", "", "").expect("h").0,
        200
    );
    let (status, metrics) = request(l.port, "GET", "/metrics", "", "").expect("m");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("ferry_loyalty_transactions_total"),
        "{metrics}"
    );
    let (status, body) = request(l.port, "GET", "/nowhere", TOKEN, "").expect("answer");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("\"code\""), "{body}");
}

#[test]
fn programs_transactions_and_cards() {
    let _load = crate::beside_others();
    let dir = tempfile::tempdir().expect("tempdir");
    let l = started(&dir);
    // Bad programs name the problem.
    for (body, needle) in [
        (
            json!({"kind": "stamps", "stamps_per_reward": 0, "reward": "x"}),
            "stamps_per_reward",
        ),
        (
            json!({"kind": "points", "points_per_currency_unit": 1, "reward": "x"}),
            "reward_cost",
        ),
        (json!({"kind": "miles"}), "stamps` or `points"),
        (
            json!({"kind": "stamps", "stamps_per_reward": 5, "reward": "x", "extra": 1}),
            "extra",
        ),
    ] {
        let (status, answer) = l.call("PUT", "/v1/programs/coffee", &body.to_string());
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_program");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{body}: {message}");
    }
    l.put_program(
        "coffee",
        json!({"kind": "stamps", "stamps_per_reward": 10, "reward": "free coffee"}),
    );
    l.put_program(
        "points",
        json!({"kind": "points", "points_per_currency_unit": 2, "reward": "voucher", "reward_cost": 100}),
    );
    let (_, listed) = l.call("GET", "/v1/programs", "");
    assert_eq!(
        listed["programs"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
    assert_eq!(listed["programs"][0]["id"], "coffee");

    // One txn object.
    let (status, answer) = l.call(
        "POST",
        "/v1/transactions",
        &stamp("t-1", "C-1", 3).to_string(),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        json!({"results": [{"tx_id": "t-1", "status": "applied"}]})
    );

    // A batch: duplicate, conflict, unparseable, unknown program, earn by amount,
    // an online redemption that the balance cannot cover, and one that it can.
    let batch = json!({"transactions": [
        stamp("t-1", "C-1", 3),
        stamp("t-1", "C-1", 4),
        {"tx_id": "t-bad", "op": "stamp"},
        {"tx_id": "t-2", "op": "stamp", "program": "tea", "card": "C-1", "store": "S-01", "qty": 1},
        {"tx_id": "t-3", "op": "earn", "program": "points", "card": "C-1", "store": "S-01", "amount_minor": 1250},
        {"tx_id": "t-4", "op": "redeem", "program": "coffee", "card": "C-1", "store": "S-01", "qty": 1},
        stamp("t-5", "C-1", 8),
        {"tx_id": "t-6", "op": "redeem", "program": "coffee", "card": "C-1", "store": "S-01", "qty": 1},
    ]});
    let (status, answer) = l.call("POST", "/v1/transactions?balances=true", &batch.to_string());
    assert_eq!(status, 200, "{answer}");
    let got: Vec<(String, String, String)> = answer["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            (
                r["tx_id"].as_str().unwrap_or_default().to_owned(),
                r["status"].as_str().unwrap_or_default().to_owned(),
                r["reason"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let want = [
        ("t-1", "duplicate", ""),
        ("t-1", "rejected", "conflict"),
        ("t-bad", "rejected", "invalid"),
        ("t-2", "rejected", "unknown_program"),
        ("t-3", "applied", ""),
        ("t-4", "rejected", "insufficient_balance"),
        ("t-5", "applied", ""),
        ("t-6", "applied", ""),
    ];
    let want: Vec<(String, String, String)> = want
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    assert_eq!(got, want);
    // The balances of the batch's cards come with it when asked for.
    assert_eq!(answer["cards"][0]["card"], "C-1", "{answer}");

    let (status, card) = l.call("GET", "/v1/cards/C-1", "");
    assert_eq!(status, 200, "{card}");
    assert_eq!(
        card,
        json!({"card": "C-1", "balances": [
            {"program": "coffee", "kind": "stamps", "balance": 1, "rewards_available": 0, "reward_cost": 10, "flagged": false},
            {"program": "points", "kind": "points", "balance": 25, "rewards_available": 0, "reward_cost": 100, "flagged": false},
        ]})
    );
    let (status, _) = l.call("GET", "/v1/cards/C-404", "");
    assert_eq!(status, 404);

    // The ledger, newest first, in pages.
    let (_, page) = l.call("GET", "/v1/cards/C-1/transactions?limit=2", "");
    let ids: Vec<&str> = page["transactions"]
        .as_array()
        .expect("transactions")
        .iter()
        .filter_map(|t| t["tx_id"].as_str())
        .collect();
    assert_eq!(ids, ["t-6", "t-5"], "{page}");
    let before = page["next_before"].as_i64().expect("next page");
    let (_, rest) = l.call(
        "GET",
        &format!("/v1/cards/C-1/transactions?before={before}"),
        "",
    );
    assert_eq!(
        rest["transactions"].as_array().map(Vec::len),
        Some(2),
        "{rest}"
    );
    assert_eq!(rest["transactions"][1]["content"]["qty"], 3);
    let (status, _) = l.call("GET", "/v1/cards/C-1/transactions?limit=0", "");
    assert_eq!(status, 400);

    // An offline redemption applies anyway and flags the card.
    let offline = json!({"tx_id": "t-7", "op": "redeem", "program": "coffee", "card": "C-2",
                         "store": "S-01", "qty": 1, "offline": true});
    let (_, answer) = l.call("POST", "/v1/transactions", &offline.to_string());
    assert_eq!(answer["results"][0]["status"], "applied", "{answer}");
    let (_, flagged) = l.call("GET", "/v1/cards?flagged=true", "");
    assert_eq!(flagged["flagged"], json!(["C-2"]), "{flagged}");
    assert_eq!(
        (
            &flagged["overdrafts"][0]["tx_id"],
            &flagged["overdrafts"][0]["balance_after"]
        ),
        (&json!("t-7"), &json!(-10)),
        "the entry that overdrew it: {flagged}"
    );
    assert_eq!(l.balances("C-2")["coffee"], -10);

    // Whole-request errors.
    for (body, code, status) in [
        ("not json".to_owned(), "not_json", 400),
        ("[1, 2]".to_owned(), "invalid_batch", 400),
        (json!({"transactions": 5}).to_string(), "invalid_batch", 400),
        (
            json!({"transactions": vec![stamp("x", "C-9", 1); 501]}).to_string(),
            "too_large",
            413,
        ),
    ] {
        let (got, answer) = l.call("POST", "/v1/transactions", &body);
        assert_eq!(got, status, "{answer}");
        assert_eq!(answer["error"]["code"], code, "{answer}");
    }
    let (_, metrics) = request(l.port, "GET", "/metrics", "", "").expect("metrics");
    assert!(
        metrics.contains("ferry_loyalty_transactions_total{status=\"applied\"} 5"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "ferry_loyalty_transactions_total{status=\"rejected\",reason=\"conflict\"} 1"
        ),
        "{metrics}"
    );
}

#[test]
fn bad_configuration_names_the_key() {
    let _load = crate::beside_others();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "data_dir = \"/tmp/x\"\n[http]\nlisten = \"127.0.0.1:1\"\ntoken = \"a-token-long-enough-0123\"\n",
    )
    .expect("write");
    let out = std::process::Command::new(BIN)
        .args(["loyalty", "--config"])
        .arg(&path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("loyalty.database"), "{err}");
}

/// The README's curls for the organisation and a card's life, on the binary: brands and
/// stores with the errors a person can make, a txn held for a store set up later, a lost
/// card blocked, replaced and its cashier-named overdraft reviewed, each in the audit trail.
#[test]
fn the_organisation_and_a_cards_life() {
    let _load = crate::beside_others();
    let dir = tempfile::tempdir().expect("tempdir");
    let l = started(&dir);
    l.put_program(
        "coffee",
        json!({"kind": "stamps", "stamps_per_reward": 10, "reward": "free coffee"}),
    );
    let store = |brand: &str, tz: &str, currency: &str| {
        json!({"name": "Bean There Mitte", "brand": brand, "time_zone": tz, "currency": currency})
            .to_string()
    };
    for (path, body, status, code) in [
        (
            "/v1/brands/bean",
            json!({"name": ""}).to_string(),
            400,
            "invalid_brand",
        ),
        (
            "/v1/brands/bean",
            json!({"nom": "x"}).to_string(),
            400,
            "invalid_brand",
        ),
        (
            "/v1/stores/B-01",
            store("bean", "Europe/Berlin", "EUR"),
            409,
            "unknown_brand",
        ),
        (
            "/v1/stores/B-01",
            store("bean", "Mars/Olympus", "EUR"),
            400,
            "invalid_store",
        ),
        (
            "/v1/stores/B-01",
            store("bean", "Europe/Berlin", "euro"),
            400,
            "invalid_store",
        ),
    ] {
        let (got, answer) = l.call("PUT", path, &body);
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{path} {body}: {answer}"
        );
    }
    let (status, brand) = l.call(
        "PUT",
        "/v1/brands/bean",
        &json!({"name": "Bean There"}).to_string(),
    );
    assert_eq!(
        (status, &brand["name"]),
        (200, &json!("Bean There")),
        "{brand}"
    );

    // A sale at a store that is not set up yet is held, and applies once it is.
    let sale = json!({"tx_id": "B-01:1", "op": "stamp", "program": "coffee", "card": "C-7",
                      "store": "B-01", "qty": 4, "staff": "anna"});
    let (_, answer) = l.call("POST", "/v1/transactions", &sale.to_string());
    assert_eq!(answer["results"][0]["reason"], "unknown_store", "{answer}");
    let (status, put) = l.call(
        "PUT",
        "/v1/stores/B-01",
        &store("bean", "Europe/Berlin", "EUR"),
    );
    assert_eq!(
        (status, &put["time_zone"]),
        (200, &json!("Europe/Berlin")),
        "{put}"
    );
    let (_, answer) = l.call("POST", "/v1/transactions", &sale.to_string());
    assert_eq!(answer["results"][0]["status"], "applied", "{answer}");
    let (status, got) = l.call("GET", "/v1/stores/B-01", "");
    assert_eq!((status, &got["brand"]), (200, &json!("bean")), "{got}");
    let (status, _) = l.call("DELETE", "/v1/brands/bean", "");
    assert_eq!(status, 409, "a brand with stores stays");

    // Lost: blocked, then replaced by a new card; the old card's sales are refused.
    for (action, body, status) in [
        ("block", json!({}), 400),
        ("block", json!({"reason": ""}), 400),
        ("review", json!({"reason": "looked"}), 409),
    ] {
        let (got, answer) = l.call(
            "POST",
            &format!("/v1/cards/C-7/{action}"),
            &body.to_string(),
        );
        assert_eq!(got, status, "{action} {body}: {answer}");
    }
    let (status, card) = l.call(
        "POST",
        "/v1/cards/C-7/block",
        &json!({"reason": "reported lost"}).to_string(),
    );
    assert_eq!(
        (status, &card["blocked"]["reason"]),
        (200, &json!("reported lost")),
        "{card}"
    );
    let again = json!({"tx_id": "B-01:2", "op": "stamp", "program": "coffee", "card": "C-7",
                       "store": "B-01", "qty": 1});
    let (_, answer) = l.call("POST", "/v1/transactions?balances=true", &again.to_string());
    assert_eq!(answer["results"][0]["reason"], "card_blocked", "{answer}");
    assert_eq!(
        answer["cards"][0]["blocked"]["reason"], "reported lost",
        "the till hears: {answer}"
    );
    let (status, handed) = l.call(
        "POST",
        "/v1/cards/C-7/replace",
        &json!({"new_card": "C-8", "reason": "new card issued"}).to_string(),
    );
    assert_eq!(status, 200, "{handed}");
    assert_eq!(handed["card"]["balances"][0]["balance"], 4, "{handed}");
    let (_, old) = l.call("GET", "/v1/cards/C-7", "");
    assert_eq!(old["blocked"]["successor"], "C-8", "{old}");

    // The new card overdrawn offline, by a named cashier; reviewed by a person.
    let redeem = json!({"tx_id": "B-01:3", "op": "redeem", "program": "coffee", "card": "C-8",
                        "store": "B-01", "qty": 1, "offline": true, "staff": "ben"});
    let (_, answer) = l.call("POST", "/v1/transactions", &redeem.to_string());
    assert_eq!(answer["results"][0]["status"], "applied", "{answer}");
    let (_, flagged) = l.call("GET", "/v1/cards?flagged=true", "");
    assert_eq!(flagged["flagged"], json!(["C-8"]), "{flagged}");
    assert_eq!(flagged["overdrafts"][0]["staff"], "ben", "{flagged}");
    let (_, history) = l.call("GET", "/v1/cards/C-8/transactions", "");
    assert_eq!(history["transactions"][0]["staff"], "ben", "{history}");
    let (status, _) = l.call(
        "POST",
        "/v1/cards/C-8/review",
        &json!({"reason": "cashier refunded"}).to_string(),
    );
    assert_eq!(status, 200);
    let (_, flagged) = l.call("GET", "/v1/cards?flagged=true", "");
    assert_eq!(flagged["flagged"], json!([]), "{flagged}");

    let (_, audit) = l.call("GET", "/v1/audit", "");
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    for action in [
        "put_brand",
        "put_store",
        "block_card",
        "replace_card",
        "review_card",
    ] {
        assert!(actions.contains(&action), "{action} audited: {actions:?}");
    }
}
