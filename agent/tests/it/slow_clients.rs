//! Slow and idle clients cannot take the POS API: 256 clients that send a body one byte at
//! a time and 256 that never read their answers, at once, while `/healthz` keeps answering
//! within a second and a till's stamp is accepted; then the agent has cut them all off.

use std::time::Duration;

use ferry_tests::free_port;
use ferry_tests::http::{SlowClients, healthz_answers_throughout, open_route_budget, post_json};

use crate::agent;

const TOKEN: &str = "slow-clients-token-0123";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_and_unread_answers_leave_the_pos_api_answering() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    // No broker: the stamp stays in the spool, which is all a 202 promises.
    let url = format!("mqtt://127.0.0.1:{}", free_port());
    let rest = format!("[pos_api]\nlisten = \"127.0.0.1:{port}\"\ntoken = \"{TOKEN}\"\n");
    let mut agent = agent(dir.path(), "pos-slow", &url, "", &rest);
    agent.start();
    ferry_tests::wait_until(Duration::from_secs(20), "the POS API", || {
        post_json(port, "/healthz", "", "").is_ok()
    })
    .await;
    let (answers, closed, opened) = tokio::task::spawn_blocking(move || {
        // One address asking an open route without pause gets its burst, then 429 with
        // Retry-After, and is served again after the wait; `/healthz` is not limited.
        let budget = open_route_budget(port, "/v1/openapi.json", 60);
        println!("one address, 60 requests for /v1/openapi.json at once: {budget:?}");
        // The burst is 30; the steady 10 a second may add a few while the 60 go out.
        assert!(budget.allowed >= 30 && budget.limited >= 10, "{budget:?}");
        assert!(budget.retry_after && budget.allowed_again, "{budget:?}");
        for _ in 0..40 {
            assert_eq!(
                ferry_tests::http::request(port, "GET", "/healthz", "", "")
                    .map(|a| a.0)
                    .ok(),
                Some(200)
            );
        }
        let mut clients = SlowClients::open(port, TOKEN, 256, 256, "/v1/openapi.json");
        let mut stamped = false;
        let answers = healthz_answers_throughout(
            port,
            Duration::from_secs(15),
            Duration::from_secs(1),
            || {
                if !stamped {
                    let stamp =
                        r#"{"op":"stamp","program":"coffee","card":"C-1","store":"S-01","qty":1}"#;
                    let (status, body) =
                        post_json(port, "/v1/transactions", TOKEN, stamp).expect("a stamp");
                    assert_eq!(status, 202, "{body}");
                    stamped = true;
                }
            },
        );
        std::thread::sleep(Duration::from_secs(25));
        (answers, clients.closed_by_server(), clients.len())
    })
    .await
    .expect("clients");
    println!(
        "agent: /healthz answered {answers} times within 1 s with {opened} slow clients open; \
         {closed} of them cut off by the agent afterwards"
    );
    assert_eq!(closed, opened, "every slow client is cut off");
    assert_eq!(agent.status_u64("pending"), 1, "the stamp is spooled");
    assert_eq!(agent.terminate(), Some(0));
}
