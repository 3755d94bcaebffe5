//! Fleet operations through the cloud's API, with a real agent on a real Mosquitto: a
//! desired configuration applied and shown in sync, a bad one refused, and a rollout whose
//! job the device answers.

use std::time::Duration;

use ferry_tests::broker::Mosquitto;
use ferry_tests::cloud::{AllConfig, TOKEN, start_all};
use ferry_tests::http::request;
use serde_json::{Value, json};

const TOKENS: &str = "[[http.tokens]]\nname = \"ops\"\ntoken = \"operator-token-0123456789\"\nrole = \"operator\"\n\
     [[http.tokens]]\nname = \"wall\"\ntoken = \"viewer-token-0123456789\"\nrole = \"viewer\"\n";
const OPERATOR: &str = "operator-token-0123456789";
const VIEWER: &str = "viewer-token-0123456789";

fn call(http: u16, method: &str, path: &str, token: &str, body: &Value) -> (u16, Value) {
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let (status, text) = request(http, method, path, token, &body).expect("request");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn until(what: &str, mut check: impl FnMut() -> Option<Value>) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(45);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn desired_config_and_rollouts_round_trip_through_a_real_agent() {
    let _alone = crate::one_at_a_time().await;
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let http = ferry_tests::free_port();
    let mut cfg = AllConfig::new(dir.path(), broker.port, http, "fleet-cloud");
    cfg.tail = TOKENS;
    let cloud = start_all(dir.path(), &cfg.toml(), http).await;
    let mut agent =
        ferry_tests::agent::simulated(dir.path(), "fleet-dev", "weather", broker.port, 500, 0);
    agent.start();

    // 1. An operator sets a desired configuration; the agent applies it and says so.
    let desired =
        json!({"sources": [{"type": "simulator", "profile": "weather", "interval_ms": 50}]});
    let (status, put) = call(
        http,
        "PUT",
        "/v1/devices/fleet-dev/config",
        OPERATOR,
        &desired,
    );
    assert_eq!(status, 202, "{put}");
    assert_eq!(put["desired"]["version"], 1);
    assert_eq!(put["in_sync"], false, "not yet answered");
    let synced = until("the device in sync", || {
        let (_, v) = call(
            http,
            "GET",
            "/v1/devices/fleet-dev/config",
            VIEWER,
            &Value::Null,
        );
        (v["in_sync"] == true).then_some(v)
    })
    .await;
    assert_eq!(synced["reported"]["version"], 1, "{synced}");
    assert!(synced["reported"]["applied_at"].is_string(), "{synced}");

    // 2. A value the device refuses: drift, with the key named.
    let bad = json!({"mqtt": {"gzip_level": 12}});
    let (status, put) = call(http, "PUT", "/v1/devices/fleet-dev/config", OPERATOR, &bad);
    assert_eq!(
        (status, &put["desired"]["version"]),
        (202, &json!(2)),
        "{put}"
    );
    let drift = until("the refusal", || {
        let (_, v) = call(
            http,
            "GET",
            "/v1/devices/fleet-dev/config",
            OPERATOR,
            &Value::Null,
        );
        (v["reported"]["version"] == 2).then_some(v)
    })
    .await;
    assert_eq!(drift["in_sync"], false, "{drift}");
    assert!(
        drift["reported"]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("mqtt.gzip_level"),
        "{drift}"
    );
    let (_, all) = call(http, "GET", "/v1/configs", VIEWER, &Value::Null);
    let listed = all
        .as_array()
        .and_then(|a| a.iter().find(|c| c["device"] == "fleet-dev"))
        .unwrap_or_else(|| panic!("fleet-dev in {all}"));
    assert_eq!(
        listed["in_sync"], false,
        "the dashboards' drift column: {listed}"
    );
    // Keys that are the device's own are refused before anything is stored or sent.
    let (status, refused) = call(
        http,
        "PUT",
        "/v1/devices/fleet-dev/config",
        OPERATOR,
        &json!({"mqtt": {"cert_file": "/tmp/x"}}),
    );
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("mqtt.cert_file")
    );
    let (status, _) = call(
        http,
        "PUT",
        "/v1/devices/fleet-dev/config",
        VIEWER,
        &desired,
    );
    assert_eq!(status, 403, "a viewer may look, not change");
    // A card reader that stamps on every scan mints by configuration: an admin's call.
    let minting = json!({"sources": [{"type": "card_reader", "path": "/dev/ttyUSB0",
        "on_scan": {"op": "stamp", "program": "coffee", "qty": 1, "store": "S-01"}}]});
    let (status, body) = call(
        http,
        "PUT",
        "/v1/devices/fleet-dev/config",
        OPERATOR,
        &minting,
    );
    assert_eq!(status, 403, "an operator may not set on_scan rules: {body}");

    // 3. A rollout: only the admin may start one; the device answers its job. This agent
    // has no [update] public_key, so it refuses, which the rollout shows.
    let manifest = ferry_tests::fleet::manifest(b"a binary", "9.9.9").to_text();
    let artifact = json!({"url": "http://127.0.0.1:9/ferry-agent", "manifest": manifest,
                          "signature": "c2ln"});
    let rollout = json!({"version": "9.9.9", "artifacts": {ferry_shared::fleet::this_arch(): artifact},
                         "percent": 100});
    let (status, _) = call(http, "POST", "/v1/rollouts", OPERATOR, &rollout);
    assert_eq!(status, 403, "operators may not roll out");
    let (status, created) = call(http, "POST", "/v1/rollouts", TOKEN, &rollout);
    assert_eq!(status, 201, "{created}");
    assert_eq!(
        created["jobs"][0]["device"], "fleet-dev",
        "percent picks devices known by their status"
    );
    let id = created["id"].as_i64().expect("id");
    let done = until("the device's answer", || {
        let (_, v) = call(
            http,
            "GET",
            &format!("/v1/rollouts/{id}"),
            OPERATOR,
            &Value::Null,
        );
        (v["jobs"][0]["status"] == "FAILED").then_some(v)
    })
    .await;
    assert_eq!(
        done["jobs"][0]["report"]["reason"], "updates_disabled",
        "{done}"
    );
    assert_eq!(done["counts"]["FAILED"], 1, "{done}");
    let (status, bad_rollout) = call(
        http,
        "POST",
        "/v1/rollouts",
        TOKEN,
        &json!({"version": "1", "artifacts": {}, "percent": 5}),
    );
    assert_eq!(status, 400, "{bad_rollout}");

    // 4. Every fleet write is in the fleet's audit trail, newest first, with its author and
    // request id; refused writes are not; only an admin reads it.
    let (status, _) = call(http, "GET", "/v1/fleet/audit", OPERATOR, &Value::Null);
    assert_eq!(status, 403, "the audit trail is the admin's");
    let (status, audit) = call(http, "GET", "/v1/fleet/audit", TOKEN, &Value::Null);
    assert_eq!(status, 200, "{audit}");
    let entries = audit["entries"].as_array().expect("entries");
    let said: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or_default(),
                e["target"].as_str().unwrap_or_default(),
                e["role"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    let rollout_id = id.to_string();
    assert_eq!(
        said,
        [
            ("create_rollout", rollout_id.as_str(), "admin"),
            ("put_config", "fleet-dev", "operator"),
            ("put_config", "fleet-dev", "operator"),
        ],
        "{audit}"
    );
    assert_eq!(entries[1]["detail"]["version"], 2, "{audit}");
    assert!(
        entries
            .iter()
            .all(|e| e["request_id"].as_str().is_some_and(|r| !r.is_empty())),
        "{audit}"
    );

    agent.terminate();
    drop(cloud);
}
