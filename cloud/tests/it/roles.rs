//! Who may do what, on the real binaries: every route of the role table called with a
//! token of every role (allowed → anything but 401/403; not allowed → 403 `forbidden`
//! naming the role needed), a store's token kept to its store, and the audit trail of
//! every write.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ferry_cloud::config::ApiRole;
use ferry_cloud::http::ROUTES;
use ferry_tests::cloud::TOKEN;
use ferry_tests::http::request;
use ferry_tests::loyalty::{Loyalty, dashboard, loyalty_with};
use serde_json::{Value, json};

use crate::BIN;

const OPERATOR: &str = "operator-token-0123456789";
const STORE: &str = "store-s01-token-0123456789";
const VIEWER: &str = "viewer-token-0123456789";
const ROUTER: &str = "router-token-0123456789";

fn token_of(role: ApiRole) -> &'static str {
    match role {
        ApiRole::Admin => TOKEN,
        ApiRole::Operator => OPERATOR,
        ApiRole::Store => STORE,
        ApiRole::Viewer => VIEWER,
        ApiRole::Router => ROUTER,
    }
}

const TOKENS: &str = "[[http.tokens]]\nname = \"ops\"\ntoken = \"operator-token-0123456789\"\nrole = \"operator\"\n\
     [[http.tokens]]\nname = \"till-s01\"\ntoken = \"store-s01-token-0123456789\"\nrole = \"store\"\nstores = [\"S-01\"]\n\
     [[http.tokens]]\nname = \"wall\"\ntoken = \"viewer-token-0123456789\"\nrole = \"viewer\"\n";

/// The loyalty role and the dashboards on one SQLite ledger, with a token per role.
fn start(dir: &tempfile::TempDir) -> (Loyalty, Loyalty) {
    let ledger = format!("sqlite://{}", dir.path().join("ledger.db").display());
    let mut core = loyalty_with(BIN.as_ref(), dir.path(), &ledger, ROUTER, TOKENS);
    core.start();
    let hot = format!("sqlite://{}", dir.path().join("hot.db").display());
    let sections = format!(
        "{TOKENS}[dashboard]\ndatabase = \"{hot}\"\n\
         [loyalty]\nurl = \"http://127.0.0.1:1\"\ntoken = \"{ROUTER}\"\ndatabase = \"{ledger}\"\n"
    );
    let board_dir = dir.path().join("board");
    std::fs::create_dir_all(&board_dir).expect("dir");
    let mut board = dashboard(BIN.as_ref(), &board_dir, &sections);
    board.start();
    core.put_program(
        "coffee",
        json!({"kind": "stamps", "stamps_per_reward": 10, "reward": "coffee"}),
    );
    (core, board)
}

fn stamp(id: &str, card: &str, store: &str) -> String {
    json!({"tx_id": id, "op": "stamp", "program": "coffee", "card": card, "store": store,
           "qty": 1})
    .to_string()
}

/// Numbers the transactions the walk posts.
static SENT: AtomicU32 = AtomicU32::new(0);

/// A path of the table with sample values, and a body its method needs.
fn sample(method: &str, path: &str) -> (String, String) {
    // The organisation's writes act on records of their own, so the walk's other calls
    // keep the test brand and its store S-01.
    let (brand, store) = match method {
        "GET" => ("test", "S-01"),
        _ => ("walk", "S-walk"),
    };
    let path = path
        .replace("/v1/devices/{id}", "/v1/devices/ws-1")
        .replace("/v1/brands/{id}", &format!("/v1/brands/{brand}"))
        .replace("/v1/stores/{id}/", "/v1/stores/S-01/")
        .replace("/v1/stores/{id}", &format!("/v1/stores/{store}"))
        .replace(
            "{id}",
            match path {
                p if p.starts_with("/v1/programs") => "coffee",
                _ => "S-01",
            },
        )
        .replace("{card}", "C-1");
    let path = match path.as_str() {
        "/v1/compare" => "/v1/compare?metric=temperature_c&devices=ws-1".to_owned(),
        "/v1/cards" => "/v1/cards?flagged=true".to_owned(),
        _ => path,
    };
    let body = match (method, path.as_str()) {
        ("PUT", p) if p.starts_with("/v1/programs") => {
            json!({"kind": "stamps", "stamps_per_reward": 10, "reward": "coffee"}).to_string()
        }
        ("PUT", p) if p.starts_with("/v1/brands") => json!({"name": "Walk"}).to_string(),
        ("PUT", p) if p.starts_with("/v1/stores") => json!({"name": "Walk", "brand": "test",
            "time_zone": "Europe/Berlin", "currency": "EUR"})
        .to_string(),
        ("PUT", _) => json!({"kind": "station"}).to_string(),
        ("POST", p) if p.ends_with("/replace") => json!({"reason": "walk",
            "new_card": format!("C-new-{}", SENT.fetch_add(1, Ordering::Relaxed))})
        .to_string(),
        ("POST", p) if p.ends_with("/merge") => {
            json!({"reason": "walk", "into": "C-1"}).to_string()
        }
        ("POST", p) if p.starts_with("/v1/cards/") => json!({"reason": "walk"}).to_string(),
        ("POST", _) => stamp(
            &format!("t-{}", SENT.fetch_add(1, Ordering::Relaxed)),
            "C-1",
            "S-01",
        ),
        _ => String::new(),
    };
    (path, body)
}

/// The status of a call whose answer may be a stream (`/v1/events`): the status line only.
fn status_of(port: u16, method: &str, path: &str, token: &str, body: &str) -> (u16, Value) {
    if path != "/v1/events" {
        let (status, text) = request(port, method, path, token, body).expect("answer");
        return (status, serde_json::from_str(&text).unwrap_or(Value::Null));
    }
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .expect("write");
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .expect("status line");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, Value::Null)
}

#[test]
fn every_route_answers_each_role_as_the_table_says() {
    let _load = crate::beside_others();
    let dir = tempfile::tempdir().expect("tempdir");
    let (core, board) = start(&dir);
    // A transaction at S-01 for card C-1, so that the store's token may see the card.
    let (status, _) = core.call("POST", "/v1/transactions", &stamp("seed-1", "C-1", "S-01"));
    assert_eq!(status, 200);
    let mut checked = 0;
    for (method, path, roles) in ROUTES {
        for role in ApiRole::ALL {
            let (path, body) = sample(method.as_str(), path);
            let token = token_of(role);
            // Each route lives in one of the two processes; the other does not route it.
            let mut answer = status_of(core.port, method.as_str(), &path, token, &body);
            if matches!(answer.0, 404 | 405) && answer.1["error"]["code"] != "unknown_card" {
                answer = status_of(board.port, method.as_str(), &path, token, &body);
            }
            let (status, body) = answer;
            if roles.contains(&role) {
                assert!(
                    ![401, 403, 404, 405].contains(&status)
                        || body["error"]["code"] == "unknown_device",
                    "{method} {path} as {}: {status} {body}",
                    role.name()
                );
            } else {
                // The router's token is known only where the loyalty API is served.
                if role == ApiRole::Router && status == 401 {
                    continue;
                }
                assert_eq!(status, 403, "{method} {path} as {}: {body}", role.name());
                // A stream's answer is read to its status line only.
                if path != "/v1/events" {
                    assert_eq!(body["error"]["code"], "forbidden", "{method} {path}");
                }
            }
            checked += 1;
        }
    }
    assert!(checked > ROUTES.len() * 4, "{checked} calls");
    // An unknown token is 401 everywhere, a known one with the wrong role 403 saying why.
    let (status, body) = core.call_as("not-a-token-at-all-0000", "GET", "/v1/programs", "");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, body) = core.call_as(VIEWER, "PUT", "/v1/programs/coffee", "{}");
    assert_eq!(status, 403, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("admin") && message.contains("wall"),
        "{message}"
    );
    // Who the token is.
    let (status, me) = board.call_as(STORE, "GET", "/v1/me", "");
    assert_eq!(status, 200, "{me}");
    assert_eq!(
        (&me["name"], &me["role"], &me["stores"]),
        (&json!("till-s01"), &json!("store"), &json!(["S-01"]))
    );
}

#[test]
fn a_store_token_is_kept_to_its_stores() {
    let _load = crate::beside_others();
    let dir = tempfile::tempdir().expect("tempdir");
    let (core, board) = start(&dir);
    for (id, card, store) in [
        ("a", "C-1", "S-01"),
        ("b", "C-2", "S-02"),
        ("c", "C-1", "S-02"),
    ] {
        let (status, body) = core.call("POST", "/v1/transactions", &stamp(id, card, store));
        assert_eq!(status, 200, "{body}");
    }
    // Posting: its store only, and a batch with another store's transaction applies nothing.
    let (status, body) = core.call_as(
        STORE,
        "POST",
        "/v1/transactions",
        &stamp("d", "C-3", "S-01"),
    );
    assert_eq!(
        (status, &body["results"][0]["status"]),
        (200, &json!("applied")),
        "{body}"
    );
    let batch = json!({"transactions": [
        serde_json::from_str::<Value>(&stamp("e", "C-3", "S-01")).expect("json"),
        serde_json::from_str::<Value>(&stamp("f", "C-3", "S-02")).expect("json"),
    ]});
    let (status, body) = core.call_as(STORE, "POST", "/v1/transactions", &batch.to_string());
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    assert_eq!(
        core.balances("C-3")["coffee"],
        1,
        "nothing of the refused batch applied"
    );
    // Cards: those seen at its store; entries at its store only.
    let (status, _) = core.call_as(STORE, "GET", "/v1/cards/C-2", "");
    assert_eq!(status, 404, "C-2 was only ever at S-02");
    let (status, body) = core.call_as(STORE, "GET", "/v1/cards/C-1/transactions", "");
    assert_eq!(status, 200, "{body}");
    let stores: Vec<&str> = body["transactions"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["store"].as_str())
        .collect();
    assert_eq!(stores, ["S-01"], "{body}");
    // Figures: its store only.
    let (_, body) = board.call_as(STORE, "GET", "/v1/stores", "");
    assert_eq!(body["stores"], json!(["S-01"]));
    let (status, _) = board.call_as(STORE, "GET", "/v1/stores/S-02/loyalty", "");
    assert_eq!(status, 403);
    let (_, body) = board.call_as(STORE, "GET", "/v1/loyalty?period=today", "");
    let names: Vec<&str> = body["stores"]
        .as_array()
        .expect("stores")
        .iter()
        .filter_map(|s| s["store"].as_str())
        .collect();
    assert_eq!(names, ["S-01"], "{body}");
    assert_eq!(body["totals"]["transactions"], 2, "S-01's own: {body}");
    let (_, body) = board.call_as(STORE, "GET", "/v1/traffic?period=today", "");
    assert_eq!(body["stores"].as_array().map(Vec::len), Some(1), "{body}");
    let (_, body) = board.call_as(VIEWER, "GET", "/v1/loyalty?period=today", "");
    assert_eq!(
        body["totals"]["transactions"], 4,
        "a viewer sees every store: {body}"
    );
    // Reversals: a store's token undoes its own store's sale only, by
    // tx_id; another store's, whose tx_id a receipt may show, only an admin undoes.
    let reverse = |id: &str, of: &str, card: &str, store: &str| {
        json!({"tx_id": id, "op": "reverse", "program": "coffee", "card": card,
               "store": store, "qty": 1, "reverses": of})
        .to_string()
    };
    for (caller, id, of, card, want) in [
        (STORE, "r1", "c", "C-1", json!("reversal_other_store")),
        (STORE, "r3", "a", "C-1", Value::Null),
        (TOKEN, "r4", "c", "C-1", Value::Null),
    ] {
        let (status, body) = core.call_as(
            caller,
            "POST",
            "/v1/transactions",
            &reverse(id, of, card, "S-01"),
        );
        assert_eq!(status, 200, "{id}: {body}");
        let got = &body["results"][0];
        let want_status = if want.is_null() {
            "applied"
        } else {
            "rejected"
        };
        assert_eq!(
            (&got["status"], &got["reason"]),
            (&json!(want_status), &want),
            "{id}: {body}"
        );
    }
}

#[test]
fn every_write_is_in_the_audit_trail() {
    let _load = crate::beside_others();
    let dir = tempfile::tempdir().expect("tempdir");
    let (core, _board) = start(&dir);
    let program = json!({"kind": "stamps", "stamps_per_reward": 8, "reward": "tea"}).to_string();
    let writes = [
        (TOKEN, "PUT", "/v1/programs/tea", program),
        (
            OPERATOR,
            "PUT",
            "/v1/devices/pos-9",
            json!({"kind": "till", "store": "S-01"}).to_string(),
        ),
        (OPERATOR, "DELETE", "/v1/devices/pos-9", String::new()),
        (
            STORE,
            "POST",
            "/v1/transactions",
            stamp("audited-1", "C-9", "S-01"),
        ),
        (
            ROUTER,
            "POST",
            "/v1/transactions",
            stamp("routed-1", "C-9", "S-01"),
        ),
    ];
    for (token, method, path, body) in &writes {
        let (status, answer) = core.call_as(token, method, path, body);
        assert!(status < 300, "{method} {path}: {status} {answer}");
    }
    let (status, body) = core.call_as(VIEWER, "GET", "/v1/audit", "");
    assert_eq!(status, 403, "{body}");
    let (status, body) = core.call("GET", "/v1/audit?limit=10", "");
    assert_eq!(status, 200, "{body}");
    let entries = body["entries"].as_array().expect("entries");
    let seen: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["who"].as_str().unwrap_or_default(),
                e["action"].as_str().unwrap_or_default(),
                e["target"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    // Newest first; the router's device transactions are not audited; `start` put the
    // program and the suite's stores before.
    assert_eq!(
        seen[..5],
        [
            ("till-s01", "transactions", "audited-1"),
            ("ops", "retire_device", "pos-9"),
            ("ops", "put_device", "pos-9"),
            ("admin", "put_program", "tea"),
            ("admin", "put_store", "S-other"),
        ],
        "{body}"
    );
    assert_eq!(entries[0]["detail"]["results"][0]["status"], "applied");
    assert_eq!(entries[3]["detail"]["stamps_per_reward"], 8);
    assert!(
        entries
            .iter()
            .all(|e| e["request_id"].as_str().is_some_and(|r| r.len() == 26))
    );
}
