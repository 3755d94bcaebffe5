use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;
use crate::spool::{Spool, SpoolReader, WriterThread};

const TOKEN: &str = "s3cret-token";

struct Api {
    router: Router,
    spool: Spool,
    cards: crate::cards::CardCache,
    _writer: WriterThread,
    _dir: tempfile::TempDir,
}

fn api(max_bytes: u64) -> Api {
    let dir = tempfile::tempdir().expect("tempdir");
    let (spool, writer) = Spool::open(dir.path(), max_bytes).expect("spool");
    let state = PosState {
        device: DeviceId::new("pos-1").expect("id"),
        spool: spool.clone(),
        token: Arc::new(Token::new(TOKEN.into())),
        uplink: Arc::default(),
        sources: Arc::default(),
        answers: Arc::default(),
        cards: crate::cards::CardCache::open(dir.path()).expect("card cache"),
        redemptions: Arc::default(),
    };
    Api {
        cards: state.cards.clone(),
        router: router(state),
        spool,
        _writer: writer,
        _dir: dir,
    }
}

impl Api {
    async fn call(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
            .expect("request");
        let res = self.router.clone().oneshot(req).await.expect("response");
        let status = res.status();
        let bytes = res.into_body().collect().await.expect("body").to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, value)
    }

    async fn post(&self, body: Value) -> (StatusCode, Value) {
        self.call(
            "POST",
            "/v1/transactions",
            Some(TOKEN),
            Some(&body.to_string()),
        )
        .await
    }
}

fn stamp(card: &str) -> Value {
    json!({"op": "stamp", "program": "coffee", "card": card, "store": "S-01", "qty": 1})
}

#[tokio::test]
async fn auth_missing_wrong_and_right() {
    let api = api(64 << 20);
    let body = stamp("C-1").to_string();
    let cases = [
        (None, StatusCode::UNAUTHORIZED),
        (Some("wrong"), StatusCode::UNAUTHORIZED),
        (Some("s3cret-tokeN"), StatusCode::UNAUTHORIZED),
        (Some(""), StatusCode::UNAUTHORIZED),
        (Some(TOKEN), StatusCode::ACCEPTED),
    ];
    for (token, want) in cases {
        let (status, body) = api
            .call("POST", "/v1/transactions", token, Some(&body))
            .await;
        assert_eq!(status, want, "{token:?}: {body}");
        if want == StatusCode::UNAUTHORIZED {
            assert_eq!(body["error"]["code"], "unauthorized");
        }
    }
    for path in ["/v1/status", "/v1/cards/C-1"] {
        assert_eq!(
            api.call("GET", path, None, None).await.0,
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        assert_eq!(
            api.call("GET", path, Some(TOKEN), None).await.0,
            StatusCode::OK,
            "{path}"
        );
    }
    assert_eq!(
        api.call("GET", "/healthz", None, None).await.0,
        StatusCode::OK
    );
    let (status, metrics) = api.call("GET", "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let text = metrics.as_str().expect("text");
    assert!(text.contains("ferry_spool_pending 1"), "{text}");
    assert!(
        text.contains("ferry_pos_requests_total{status=\"401\"} 6"),
        "{text}"
    );
}

#[tokio::test]
async fn every_invalid_input_gets_a_reason() {
    let api = api(64 << 20);
    let base = stamp("C-1");
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b.to_string()
    };
    let without = |k: &str| {
        let mut b = base.clone();
        b.as_object_mut().expect("object").remove(k);
        b.to_string()
    };
    let cases: Vec<(String, &str)> = vec![
        ("not json".into(), "invalid_json"),
        ("{}".into(), "missing_field"),
        (without("card"), "missing_field"),
        (without("qty"), "missing_field"),
        (with("op", json!("steal")), "invalid_field"),
        (with("qty", json!(0)), "invalid_field"),
        (with("qty", json!(-1)), "invalid_field"),
        (with("qty", json!("1")), "invalid_field"),
        (with("card", json!("")), "invalid_field"),
        (with("store", json!("x".repeat(300))), "invalid_field"),
        (with("currency", json!("eur")), "invalid_field"),
        (with("amount_minor", json!(-5)), "invalid_field"),
        (with("tx_id", json!("mine")), "unknown_field"),
        (with("idempotency_key", json!("")), "invalid_field"),
        (with("reverses", json!("pos-1:x")), "invalid_field"),
        (
            json!({"op": "reverse", "program": "coffee", "card": "C", "store": "S"}).to_string(),
            "missing_field",
        ),
        (
            json!({"op": "earn", "program": "points", "card": "C", "store": "S"}).to_string(),
            "missing_field",
        ),
    ];
    for (body, code) in cases {
        let (status, answer) = api
            .call("POST", "/v1/transactions", Some(TOKEN), Some(&body))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{answer}"
        );
    }
    let last = api
        .spool
        .reader()
        .expect("reader")
        .status()
        .expect("status")
        .last_seq;
    assert_eq!(last, 0, "nothing invalid was stored");
}

#[tokio::test]
async fn idempotency_key_replays_the_original_answer() {
    let api = api(64 << 20);
    let mut first = stamp("C-1");
    first["idempotency_key"] = json!("till-1:R-0001");
    let (status, accepted) = api.post(first.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let tx_id = accepted["tx_id"].as_str().expect("tx_id").to_owned();
    assert!(tx_id.starts_with("pos-1:"), "{tx_id}");
    assert_eq!(accepted["seq"], 1);

    // The same request again: the original answer, nothing stored.
    let (status, replay) = api.post(first.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(replay, accepted);
    // The same key for another request: refused, naming the first, nothing stored.
    let mut reused = first.clone();
    reused["qty"] = json!(5);
    let (status, refused) = api.post(reused).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["error"]["code"], "idempotency_mismatch");
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&tx_id)),
        "{refused}"
    );

    let mut other = stamp("C-1");
    other["idempotency_key"] = json!("till-1:R-0002");
    let (status, second) = api.post(other).await;
    assert_eq!(
        (status, second["seq"].clone()),
        (StatusCode::ACCEPTED, json!(2))
    );
    let reader = SpoolReader::open(&Spool::path_in(api.spool.data_dir())).expect("reader");
    assert_eq!(
        reader
            .pending_transactions_of("C-1")
            .expect("pending")
            .len(),
        2
    );
}

#[tokio::test]
async fn full_spool_answers_507_and_stores_nothing() {
    let api = api(1 << 20);
    let mut n = 0;
    let last = loop {
        let mut body = stamp("C-1");
        body["receipt"] = json!("r".repeat(200));
        let (status, answer) = api.post(body).await;
        if status != StatusCode::ACCEPTED {
            break (status, answer);
        }
        n += 1;
        assert!(n < 50_000, "never full");
    };
    assert_eq!(last.0, StatusCode::INSUFFICIENT_STORAGE, "{}", last.1);
    assert_eq!(last.1["error"]["code"], "spool_full");
    let status = api
        .spool
        .reader()
        .expect("reader")
        .status()
        .expect("status");
    assert_eq!(
        status.pending_transactions, n,
        "every 202 is stored, the 507 is not"
    );
}

/// What the cloud says of a card on the `cards` topic: one program's balance and reward cost.
fn hear(api: &Api, card: &str, program: &str, kind: &str, balance: i64, cost: i64) {
    let heard = json!({"card": card, "at": "2026-11-23T10:00:00.000Z", "balances": [
        {"program": program, "kind": kind, "balance": balance,
         "rewards_available": balance / cost, "reward_cost": cost}]});
    api.cards
        .remember(heard.to_string().as_bytes())
        .expect("remember");
}

/// One program's entry in a `GET /v1/cards/{card}` answer.
fn program<'a>(card: &'a Value, program: &str) -> &'a Value {
    card["balances"]
        .as_array()
        .and_then(|all| all.iter().find(|b| b["program"] == program))
        .unwrap_or_else(|| panic!("no {program} in {card}"))
}

fn redeem(card: &str, program: &str, qty: u64, overdraft: bool) -> Value {
    json!({"op": "redeem", "program": program, "card": card, "store": "S-01", "qty": qty,
           "allow_overdraft": overdraft})
}

#[tokio::test]
async fn offline_redemption_rules() {
    let api = api(64 << 20);
    // Nothing known of the card, nor what a reward costs: refused, saying so.
    let (status, answer) = api.post(redeem("C-9", "coffee", 1, false)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    assert_eq!(answer["error"]["code"], "insufficient_balance");
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("not known")),
        "{answer}"
    );

    // The cloud says 25 stamps, 10 a coffee. The cashier's override is accepted, marked
    // offline, and takes a whole reward's cost from the estimate: 15.
    hear(&api, "C-9", "coffee", "stamps", 25, 10);
    let (status, _) = api.post(redeem("C-9", "coffee", 1, true)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    for _ in 0..3 {
        assert_eq!(api.post(stamp("C-9")).await.0, StatusCode::ACCEPTED);
    }
    // 18 covers one coffee (10), not two (20); the refusal names both figures.
    let (status, answer) = api.post(redeem("C-9", "coffee", 2, false)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("20") && message.contains("18"), "{answer}");
    assert_eq!(
        api.post(redeem("C-9", "coffee", 1, false)).await.0,
        StatusCode::ACCEPTED
    );

    let (status, card) = api.call("GET", "/v1/cards/C-9", Some(TOKEN), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(program(&card, "coffee")["estimated_balance"], 8, "{card}");
    let pending = card["pending"].as_array().expect("pending");
    assert_eq!(pending.len(), 5);
    for t in pending {
        assert_eq!(
            t["offline"].as_bool().unwrap_or(false),
            t["op"] == "redeem",
            "{t}"
        );
    }
}

/// The cases that overdrew cards: a redemption is charged qty times the reward's cost, as
/// the ledger charges it, not qty.
#[tokio::test]
async fn redemptions_are_charged_what_the_ledger_charges() {
    let api = api(64 << 20);
    // 190 points left, a reward costs 100: 5 rewards need 500, 2 need 200, 1 fits.
    hear(&api, "C-1", "points", "points", 190, 100);
    for (qty, want) in [
        (5, StatusCode::CONFLICT),
        (2, StatusCode::CONFLICT),
        (1, StatusCode::ACCEPTED),
        (1, StatusCode::CONFLICT),
    ] {
        let (status, answer) = api.post(redeem("C-1", "points", qty, false)).await;
        assert_eq!(status, want, "redeem {qty}: {answer}");
    }
    // 1 of 10 stamps: no coffee.
    hear(&api, "C-2", "coffee", "stamps", 1, 10);
    assert_eq!(
        api.post(redeem("C-2", "coffee", 1, false)).await.0,
        StatusCode::CONFLICT
    );
    // A fresh card with 150 points: not 2 rewards of 100.
    hear(&api, "C-3", "points", "points", 150, 100);
    assert_eq!(
        api.post(redeem("C-3", "points", 2, false)).await.0,
        StatusCode::CONFLICT
    );
    // A qty that would wrap is refused before any arithmetic.
    let (status, answer) = api.post(redeem("C-3", "points", u64::MAX, true)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
}

/// Twenty redemptions of one coffee at once on a card that holds five: the check and the
/// append take turns, so exactly five are accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_redemptions_cannot_overdraw_a_card() {
    let api = Arc::new(api(64 << 20));
    hear(&api, "C-5", "coffee", "stamps", 50, 10);
    let tries: Vec<_> = (0..20)
        .map(|_| {
            let api = api.clone();
            tokio::spawn(async move { api.post(redeem("C-5", "coffee", 1, false)).await.0 })
        })
        .collect();
    let mut accepted = 0;
    for t in tries {
        match t.await.expect("request task") {
            StatusCode::ACCEPTED => accepted += 1,
            StatusCode::CONFLICT => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(accepted, 5, "a balance of 50 pays five coffees of 10");
    let (_, card) = api.call("GET", "/v1/cards/C-5", Some(TOKEN), None).await;
    assert_eq!(program(&card, "coffee")["estimated_balance"], 0, "{card}");
}

#[tokio::test]
async fn the_estimate_starts_from_the_clouds_balances() {
    let api = api(64 << 20);
    hear(&api, "C-7", "coffee", "stamps", 4, 2);
    // The cloud says 4; with 2 pending stamps, 6: three rewards of 2 are covered, four not.
    for _ in 0..2 {
        assert_eq!(api.post(stamp("C-7")).await.0, StatusCode::ACCEPTED);
    }
    assert_eq!(
        api.post(redeem("C-7", "coffee", 4, false)).await.0,
        StatusCode::CONFLICT
    );
    let (status, card) = api.call("GET", "/v1/cards/C-7", Some(TOKEN), None).await;
    assert_eq!(status, StatusCode::OK);
    // The cloud's shape for its balance, the till's estimate beside it.
    let coffee = program(&card, "coffee");
    assert_eq!(
        (
            &coffee["kind"],
            &coffee["balance"],
            &coffee["rewards_available"],
            &coffee["reward_cost"],
            &coffee["flagged"]
        ),
        (
            &json!("stamps"),
            &json!(4),
            &json!(2),
            &json!(2),
            &json!(false)
        ),
        "{card}"
    );
    assert_eq!(card["cloud_at"], "2026-11-23T10:00:00.000Z", "{card}");
    assert_eq!(coffee["estimated_balance"], 6, "{card}");
    assert_eq!(coffee["estimated_rewards_available"], 3, "{card}");
    assert_eq!(card["pending"].as_array().map(Vec::len), Some(2), "{card}");
    assert_eq!(
        api.post(redeem("C-7", "coffee", 3, false)).await.0,
        StatusCode::ACCEPTED
    );
}

/// Once the cloud's `cards` topic says a card is blocked, the till refuses it, naming the
/// card that took its balances; a reversal still passes, and the cashier rides along.
#[tokio::test]
async fn a_card_the_cloud_blocked_is_refused_at_the_till() {
    let api = api(64 << 20);
    let mut with_staff = stamp("C-5");
    with_staff["staff"] = json!("anna");
    let (status, accepted) = api.post(with_staff).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let heard = json!({"card": "C-5", "at": "2026-11-23T10:00:00.000Z", "balances": [],
                       "blocked": {"reason": "reported lost", "successor": "C-6",
                                   "blocked_at": "2026-11-23T09:00:00.000Z"}});
    api.cards
        .remember(heard.to_string().as_bytes())
        .expect("remember");
    for body in [stamp("C-5"), redeem("C-5", "coffee", 1, true)] {
        let (status, answer) = api.post(body).await;
        assert_eq!(status, StatusCode::CONFLICT, "{answer}");
        assert_eq!(answer["error"]["code"], "card_blocked");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("C-6")),
            "{answer}"
        );
    }
    let reversal = json!({"op": "reverse", "program": "coffee", "card": "C-5", "store": "S-01",
                          "reverses": accepted["tx_id"]});
    assert_eq!(api.post(reversal).await.0, StatusCode::ACCEPTED);
    let (_, card) = api.call("GET", "/v1/cards/C-5", Some(TOKEN), None).await;
    assert_eq!(card["blocked"]["successor"], "C-6", "{card}");
    assert_eq!(card["pending"][0]["staff"], "anna", "{card}");
    // Another card is untouched.
    assert_eq!(api.post(stamp("C-7")).await.0, StatusCode::ACCEPTED);
}
