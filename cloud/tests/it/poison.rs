//! One poison transaction never blocks the queue. A loyalty API that fails (500) on any
//! batch holding one particular transaction stands in for a ledger bug: a fault injected at
//! the API, since no known input makes the real ledger fail any more. The router halves the
//! batch until the transaction is alone, sets it aside in `errors/` (`loyalty_failed`)
//! after three failures, and every other transaction is applied.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use ferry_shared::Timestamp;
use ferry_tests::broker::Mosquitto;
use ferry_tests::cloud::{Lake, TOKEN, ingest_with};
use ferry_tests::devices::{Message, publish_all};
use serde_json::{Value, json};

const POISON: &str = "pos-p:poison";

type Applied = Arc<Mutex<BTreeSet<String>>>;

async fn judge(
    State(applied): State<Applied>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let txns = body["transactions"].as_array().cloned().unwrap_or_default();
    if txns.iter().any(|t| t["tx_id"] == POISON) {
        let error = json!({"error": {"code": "internal", "message": "internal error"}});
        return (StatusCode::INTERNAL_SERVER_ERROR, Json(error));
    }
    let mut seen = applied.lock().expect("lock");
    let results: Vec<Value> = txns
        .iter()
        .map(|t| {
            let tx_id = t["tx_id"].as_str().unwrap_or_default().to_owned();
            seen.insert(tx_id.clone());
            json!({"tx_id": tx_id, "status": "applied"})
        })
        .collect();
    (
        StatusCode::OK,
        Json(json!({"results": results, "cards": []})),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_transaction_is_set_aside_and_the_rest_apply() {
    let _serial = crate::one_at_a_time().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Mosquitto::start();
    let applied: Applied = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let api_port = listener.local_addr().expect("addr").port();
    let app = axum::Router::new()
        .route("/v1/transactions", post(judge))
        .with_state(applied.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let lake = dir.path().join("lake");
    let mut ingest = ingest_with(
        crate::BIN.as_ref(),
        dir.path(),
        broker.port,
        Lake::Folder(&lake),
        "",
        &format!("[loyalty]\nurl = \"http://127.0.0.1:{api_port}\"\ntoken = \"{TOKEN}\"\n"),
    );
    ingest.proc.start();
    ingest.wait_subscribed().await;

    let ids: Vec<String> = (0..10)
        .map(|i| {
            if i == 6 {
                POISON.to_owned()
            } else {
                format!("pos-p:{i}")
            }
        })
        .collect();
    let records: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, tx_id)| {
            json!({"seq": i + 1, "ts": Timestamp::now().to_string(), "type": "txn",
                   "tx_id": tx_id, "op": "stamp", "program": "coffee", "card": "C-1",
                   "store": "S-01", "qty": 1})
        })
        .collect();
    let envelope = json!({"v": 1, "device": "pos-p", "spool": "01JD3W6Q3X8F2M7C9K4N5P6R8T",
                          "sent_at": Timestamp::now().to_string(), "records": records});
    publish_all(
        broker.port,
        "poison-till",
        &[Message {
            topic: "ferry/v1/pos-p/transactions".into(),
            payload: envelope.to_string().into_bytes(),
        }],
    )
    .await;

    ferry_tests::wait_until(Duration::from_secs(60), "the poison set aside", || {
        ferry_tests::lake::read(&lake)
            .iter()
            .filter(|o| o.key.starts_with("errors/"))
            .flat_map(|o| o.lines.iter())
            .any(|l| l["reason"] == "loyalty_failed")
    })
    .await;
    let want: BTreeSet<String> = ids.iter().filter(|id| *id != POISON).cloned().collect();
    ferry_tests::wait_until(Duration::from_secs(30), "the other nine applied", || {
        *applied.lock().expect("lock") == want
    })
    .await;
    ferry_tests::wait_until(Duration::from_secs(30), "an empty route queue", || {
        ingest.metric("ferry_ingest_routes_pending") == 0.0
    })
    .await;
    assert_eq!(ingest.proc.terminate(), Some(0), "{}", ingest.proc.log());
}
