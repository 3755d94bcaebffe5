//! Hostile and absurd input against the real agent's POS API: each case names the input
//! and the answer it must get; after each, the agent is alive and takes a real stamp. Then
//! 300 half-sent requests: the header-read timeout closes them, and SIGTERM still stops
//! the agent within 5 s.

use std::time::{Duration, Instant};

use ferry_tests::free_port;
use ferry_tests::http::{closed_by_server, half_sent, post_json};
use serde_json::{Value, json};

use crate::agent;

const TOKEN: &str = "hostile-test-token-0123";

fn txn(extra: Value) -> String {
    let mut body = json!({"program": "coffee", "card": "C-1", "store": "S-01"});
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    body.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_pos_input_is_refused_and_survived() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    // No broker: transactions stay in the spool.
    let url = format!("mqtt://127.0.0.1:{}", free_port());
    let rest = format!("[pos_api]\nlisten = \"127.0.0.1:{port}\"\ntoken = \"{TOKEN}\"\n");
    let mut agent = agent(dir.path(), "pos-hostile", &url, "", &rest);
    agent.start();
    ferry_tests::wait_until(Duration::from_secs(20), "the POS API", || {
        post_json(port, "/healthz", "", "").is_ok()
    })
    .await;

    let long = "C".repeat(300);
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "a redemption of u64::MAX rewards (wrapped to a credit once)",
            r#"{"op":"redeem","qty":18446744073709551615,"program":"coffee","card":"C-1","store":"S-01"}"#.into(),
            400,
            "invalid_field",
        ),
        (
            "the same, as the cashier's override",
            txn(json!({"op": "redeem", "qty": 18446744073709551615u64, "allow_overdraft": true})),
            400,
            "invalid_field",
        ),
        ("a stamp of i64::MAX", txn(json!({"op": "stamp", "qty": i64::MAX})), 400, "invalid_field"),
        ("a stamp of 10,001", txn(json!({"op": "stamp", "qty": 10_001})), 400, "invalid_field"),
        ("a stamp of 0", txn(json!({"op": "stamp", "qty": 0})), 400, "invalid_field"),
        ("a qty of 2^64", txn(json!({"op": "stamp", "qty": 18446744073709551616.0})), 400, "invalid_field"),
        (
            "an amount of i64::MAX",
            txn(json!({"op": "earn", "amount_minor": i64::MAX})),
            400,
            "invalid_field",
        ),
        ("a negative amount", txn(json!({"op": "earn", "amount_minor": -5})), 400, "invalid_field"),
        ("a card id of 300 bytes", txn(json!({"op": "stamp", "qty": 1, "card": long})), 400, "invalid_field"),
        (
            "a redemption the till knows nothing of",
            txn(json!({"op": "redeem", "qty": 5})),
            409,
            "insufficient_balance",
        ),
        ("not JSON", "{\"op\":".into(), 400, "invalid_json"),
        ("an unknown field", txn(json!({"op": "stamp", "qty": 1, "bonus": 1})), 400, "unknown_field"),
    ];
    for (i, (what, body, status, code)) in cases.into_iter().enumerate() {
        let (got, answer) = post_json(port, "/v1/transactions", TOKEN, &body)
            .unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
        let answer: Value = serde_json::from_str(&answer).unwrap_or(Value::Null);
        assert_eq!(got, status, "{what}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{what}: {answer}");
        assert!(
            agent.is_running(),
            "{what}: the agent died:\n{}",
            agent.log()
        );
        let legit = txn(json!({"op": "stamp", "qty": 1, "idempotency_key": format!("legit-{i}")}));
        let (got, answer) = post_json(port, "/v1/transactions", TOKEN, &legit).expect("answer");
        assert_eq!(got, 202, "after {what}, a real stamp: {answer}");
    }
    assert_eq!(
        agent.status_u64("pending_transactions"),
        12,
        "exactly the 12 real stamps are in the spool"
    );

    // 300 clients that never finish their request head: 256 are taken at once (the cap),
    // and closed by the 10 s header-read timeout; then the other 44, 10 s later.
    let mut slow = half_sent(port, 300);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut closed = 0;
    while closed < slow.len() {
        assert!(
            Instant::now() < deadline,
            "{closed} of 300 half-sent connections closed after 30 s \
             (header-read timeout 10 s, 256 connections at once)"
        );
        std::thread::sleep(Duration::from_millis(500));
        closed = closed_by_server(&mut slow);
    }
    // And SIGTERM with slow clients attached: out within 5 s.
    let _more = half_sent(port, 100);
    let t0 = Instant::now();
    assert_eq!(agent.terminate(), Some(0), "{}", agent.log());
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "SIGTERM took {:?} with slow clients attached",
        t0.elapsed()
    );
}
