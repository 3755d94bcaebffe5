//! Slow and idle clients cannot take the cloud's HTTP server: 256 clients that send a body
//! one byte at a time and 256 that never read their answers, all at once, while `/healthz`
//! keeps answering within a second and the router's stamp is applied; then the server has
//! cut every one of them off.

use std::time::Duration;

use ferry_tests::http::{SlowClients, healthz_answers_throughout, open_route_budget};
use ferry_tests::loyalty::loyalty_with;
use serde_json::json;

use crate::BIN;

const ROUTER: &str = "router-token-0123456789";

#[test]
fn slow_bodies_and_unread_answers_leave_the_api_answering() {
    let _load = crate::beside_others();
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = format!("sqlite://{}", dir.path().join("ledger.db").display());
    let mut core = loyalty_with(BIN.as_ref(), dir.path(), &ledger, ROUTER, "");
    core.start();
    core.put_program(
        "coffee",
        json!({"kind": "stamps", "stamps_per_reward": 10, "reward": "coffee"}),
    );
    // One address asking an open route without pause gets its burst, then 429 with
    // Retry-After, and is served again after the wait; `/healthz` is not limited.
    let budget = open_route_budget(core.port, "/v1/openapi.json", 60);
    println!("one address, 60 requests for /v1/openapi.json at once: {budget:?}");
    // The burst is 30; the steady 10 a second may add a few while the 60 go out.
    assert!(budget.allowed >= 30 && budget.limited >= 10, "{budget:?}");
    assert!(budget.retry_after && budget.allowed_again, "{budget:?}");
    for _ in 0..40 {
        assert_eq!(
            ferry_tests::http::request(core.port, "GET", "/healthz", "", "")
                .map(|a| a.0)
                .ok(),
            Some(200)
        );
    }
    let mut clients = SlowClients::open(core.port, ROUTER, 256, 256, "/v1/openapi.json");
    let mut stamped = false;
    let answers = healthz_answers_throughout(
        core.port,
        Duration::from_secs(15),
        Duration::from_secs(1),
        || {
            if !stamped {
                let stamp = json!({"tx_id": "slow-1", "op": "stamp", "program": "coffee",
                                   "card": "C-1", "store": "S-01", "qty": 1});
                let (status, body) =
                    core.call_as(ROUTER, "POST", "/v1/transactions", &stamp.to_string());
                assert_eq!(status, 200, "{body}");
                assert_eq!(body["results"][0]["status"], "applied", "{body}");
                stamped = true;
            }
        },
    );
    assert!(stamped);
    // Past the body and write timeouts and the request deadline, every one was cut off.
    std::thread::sleep(Duration::from_secs(25));
    let closed = clients.closed_by_server();
    println!(
        "cloud: /healthz answered {answers} times within 1 s with {} slow clients open; \
         {closed} of them cut off by the server afterwards",
        clients.len()
    );
    assert_eq!(closed, clients.len(), "every slow client is cut off");
    assert_eq!(core.balances("C-1")["coffee"], 1);
}
