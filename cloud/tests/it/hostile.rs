//! Hostile and absurd input against `ferry-cloud all` (ingest, ledger, dashboards) on a real
//! Mosquitto: each case names the input and the answer it must get. After each, the
//! process is alive and a real stamp is applied. The inputs are the ones that once minted
//! stamps, aborted the process or froze a dashboard.

use std::io::Write;
use std::time::{Duration, Instant};

use ferry_shared::Timestamp;
use ferry_tests::broker::Mosquitto;
use ferry_tests::cloud::{AllConfig, TOKEN, start_all};
use ferry_tests::devices::{Message, publish_all};
use ferry_tests::free_port;
use ferry_tests::http::{closed_by_server, half_sent, request};
use ferry_tests::loyalty::{put_program, register_till};
use serde_json::{Value, json};

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

fn call(http: u16, method: &str, path: &str, body: &str) -> (u16, Value) {
    let (status, text) = request(http, method, path, TOKEN, body)
        .unwrap_or_else(|e| panic!("{method} {path}: no answer: {e}"));
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// One envelope of `records` (JSON objects without `seq`) from `device`, from seq `first`.
fn envelope(device: &str, first: u64, records: &[Value]) -> Vec<u8> {
    let records: Vec<Value> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut r = r.clone();
            r["seq"] = json!(first + i as u64);
            r
        })
        .collect();
    json!({"v": 1, "device": device, "spool": "01JD3W6Q3X8F2M7C9K4N5P6R8T",
           "sent_at": Timestamp::now().to_string(), "records": records})
    .to_string()
    .into_bytes()
}

fn reading(ts: &str, value: f64) -> Value {
    json!({"ts": ts, "type": "reading", "sensor": "s", "metrics": {"temperature_c": value}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_never_mints_value_nor_stops_the_cloud() {
    let _serial = crate::one_at_a_time().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Mosquitto::start();
    let http = free_port();
    let config = AllConfig {
        lake_extra: "flush_interval_s = 1\n",
        dashboard_extra: "offline_after_s = 3\nevents_interval_ms = 200\n",
        ..AllConfig::new(dir.path(), broker.port, http, "hostile-ingest")
    }
    .toml();
    let mut cloud = start_all(dir.path(), &config, http).await;
    put_program(
        http,
        "coffee",
        &json!({"kind": "stamps", "stamps_per_reward": 10, "reward": "coffee"}),
    );
    let mut legit = 0;
    let mut assert_alive = |what: &str, cloud: &mut ferry_tests::process::Proc| {
        assert!(
            cloud.is_running(),
            "{what}: the cloud died:\n{}",
            cloud.log()
        );
        legit += 1;
        let body = json!({"tx_id": format!("S-01:legit-{legit}"), "op": "stamp", "program": "coffee",
                          "card": "C-L", "store": "S-01", "qty": 1});
        let (status, answer) = call(http, "POST", "/v1/transactions", &body.to_string());
        assert_eq!(status, 200, "after {what}: {answer}");
        assert_eq!(
            answer["results"][0]["status"], "applied",
            "after {what}: {answer}"
        );
    };

    // What: (method, path, body) -> status, and a text the answer must hold.
    let txn = |op: &str, qty: Value| {
        json!({"tx_id": format!("S-01:{op}-{qty}"), "op": op, "program": "coffee", "card": "C-H",
               "store": "S-01", "qty": qty, "offline": true})
        .to_string()
    };
    let cases: Vec<(&str, &str, &str, String, u16, &str)> = vec![
        (
            "a stamp of i64::MAX (wrapped the balance, or panicked the ledger's thread)",
            "POST",
            "/v1/transactions",
            txn("stamp", json!(i64::MAX)),
            200,
            "\"reason\":\"invalid\"",
        ),
        (
            "an offline redemption of u64::MAX rewards (stored a credit)",
            "POST",
            "/v1/transactions",
            txn("redeem", json!(u64::MAX)),
            200,
            "\"reason\":\"invalid\"",
        ),
        (
            "an earn of i64::MAX minor units",
            "POST",
            "/v1/transactions",
            json!({"tx_id": "S-01:big-amount", "op": "earn", "program": "coffee", "card": "C-H",
                   "store": "S-01", "amount_minor": i64::MAX})
            .to_string(),
            200,
            "\"reason\":\"invalid\"",
        ),
        (
            "expiry_days of u32::MAX (crashed the expiry job at every start)",
            "PUT",
            "/v1/programs/x",
            json!({"kind": "points", "points_per_currency_unit": 1, "reward": "r",
                   "reward_cost": 100, "expiry_days": 4294967295u64})
            .to_string(),
            400,
            "expiry_days",
        ),
        (
            "a rate of 1e300 points per unit",
            "PUT",
            "/v1/programs/y",
            json!({"kind": "points", "points_per_currency_unit": 1e300, "reward": "r",
                   "reward_cost": 100})
            .to_string(),
            400,
            "points_per_currency_unit",
        ),
        (
            "days at the end of chrono's calendar (aborted the process)",
            "GET",
            "/v1/stores/S-01/loyalty?from=%2B262142-12-31&to=%2B262142-12-31",
            String::new(),
            400,
            "invalid_time",
        ),
        (
            "the last day of 9999",
            "GET",
            "/v1/stores/S-01/loyalty?from=9999-12-31&to=9999-12-31",
            String::new(),
            400,
            "invalid_time",
        ),
        (
            "readings from i64::MIN to i64::MAX",
            "GET",
            "/v1/devices/ws-h/readings?metric=t&from=-9223372036854775808&to=9223372036854775807",
            String::new(),
            400,
            "invalid_time",
        ),
        (
            "a step of i64::MAX seconds",
            "GET",
            "/v1/devices/ws-h/readings?metric=t&step=9223372036854775807s",
            String::new(),
            400,
            "invalid_step",
        ),
    ];
    for (what, method, path, body, status, holds) in cases {
        let (got, answer) = call(http, method, path, &body);
        assert_eq!(got, status, "{what}: {answer}");
        assert!(answer.to_string().contains(holds), "{what}: {answer}");
        assert_alive(what, &mut cloud);
    }
    let (_, card) = call(http, "GET", "/v1/cards/C-H", "");
    assert!(
        card["balances"].as_array().is_none_or(|b| b.is_empty()),
        "nothing was minted on C-H: {card}"
    );

    // Over MQTT, as a third-party device that never went through an agent.
    let now = Timestamp::now().to_string();
    let future = "2999-01-01T00:00:00.000Z";
    let metrics: serde_json::Map<String, Value> =
        (0..20_000).map(|i| (format!("m{i}"), json!(1.0))).collect();
    let flood = json!({"ts": now, "type": "reading", "sensor": "s", "metrics": metrics});
    let messages = vec![
        Message {
            topic: "ferry/v1/ws-h/status".into(),
            // 100 KB: what a broker takes (IoT Core's limit is 128 KB; the 900 KB of the
            // original report needs a broker without one).
            payload: json!({"online": true, "agent_version": "v".repeat(100_000)})
                .to_string()
                .into_bytes(),
        },
        Message {
            topic: "ferry/v1/ws-h/telemetry".into(),
            payload: gzip(&envelope("ws-h", 1, &[flood])),
        },
        Message {
            topic: "ferry/v1/ws-h/telemetry".into(),
            payload: envelope("ws-h", 2, &[reading(future, 99.0)]),
        },
        Message {
            topic: "ferry/v1/ws-h/telemetry".into(),
            payload: envelope("ws-h", 3, &[reading(&now, 21.5)]),
        },
        Message {
            topic: "ferry/v1/ws-z/status".into(),
            payload: json!({"online": true, "agent_version": "0.1.0", "at": future})
                .to_string()
                .into_bytes(),
        },
    ];
    publish_all(broker.port, "hostile-device", &messages).await;
    let lake = dir.path().join("lake");
    ferry_tests::wait_until(Duration::from_secs(30), "both rejects in errors/", || {
        let reasons: Vec<String> = ferry_tests::lake::read(&lake)
            .iter()
            .filter(|o| o.key.starts_with("errors/"))
            .flat_map(|o| o.lines.iter().map(|l| l["reason"].to_string()))
            .collect();
        reasons.iter().any(|r| r.contains("status_too_large"))
            && reasons.iter().any(|r| r.contains("invalid_field"))
    })
    .await;
    assert_alive(
        "a 100 KB status and a reading of 20,000 metrics",
        &mut cloud,
    );

    // The reading stamped 2999 is in the lake, but the dashboards follow the one after it.
    ferry_tests::wait_until(Duration::from_secs(30), "ws-h's latest reading", || {
        let (status, device) = call(http, "GET", "/v1/devices/ws-h", "");
        status == 200 && device.to_string().contains("21.5")
    })
    .await;
    let (_, device) = call(http, "GET", "/v1/devices/ws-h", "");
    assert!(!device.to_string().contains("2999"), "{device}");
    let (_, devices) = call(http, "GET", "/v1/devices", "");
    assert!(devices.to_string().len() < 4096, "no 100 KB version served");
    // ws-z said it is online in 2999: it is offline once the cloud has not heard from it
    // for offline_after_s (3 s).
    ferry_tests::wait_until(Duration::from_secs(30), "ws-z offline", || {
        let (_, z) = call(http, "GET", "/v1/devices/ws-z", "");
        z.to_string().contains("\"offline\"")
    })
    .await;
    assert_alive("a status stamped 2999", &mut cloud);

    // Who may stamp: only a registered till, at its own store, under its own tx_id prefix.
    register_till(http, "pos-h", "S-01");
    let stamp = |tx_id: &str, store: &str, card: &str| {
        json!({"ts": Timestamp::now().to_string(), "type": "txn", "tx_id": tx_id, "op": "stamp",
               "program": "coffee", "card": card, "store": store, "qty": 1})
    };
    // A transaction of another store, applied through the API (which the token admits),
    // for a reversal to name.
    let (_, answer) = call(
        http,
        "POST",
        "/v1/transactions",
        &json!({"tx_id": "S-99:elsewhere", "op": "stamp", "program": "coffee", "card": "C-R",
                "store": "S-99", "qty": 1})
        .to_string(),
    );
    assert_eq!(answer["results"][0]["status"], "applied", "{answer}");
    let reversal = json!({"ts": Timestamp::now().to_string(), "type": "txn",
        "tx_id": "pos-h:rev", "op": "reverse", "program": "coffee", "card": "C-R",
        "store": "S-01", "reverses": "S-99:elsewhere"});
    let tx_topic = |d: &str| format!("ferry/v1/{d}/transactions");
    let messages = vec![
        Message {
            topic: "ferry/v1/ws-h/telemetry".into(),
            payload: envelope("ws-h", 10, &[stamp("ws-h:1", "S-01", "C-R")]),
        },
        Message {
            topic: tx_topic("pos-h"),
            payload: envelope(
                "pos-h",
                1,
                &[
                    stamp("pos-h:1", "S-02", "C-R"),
                    stamp("pos-other:1", "S-01", "C-R"),
                    reversal,
                    stamp("pos-h:ok", "S-01", "C-R"),
                ],
            ),
        },
        // From a till nobody has registered yet: held until it is.
        Message {
            topic: tx_topic("pos-u"),
            payload: envelope("pos-u", 1, &[stamp("pos-u:1", "S-01", "C-U")]),
        },
    ];
    publish_all(broker.port, "hostile-tills", &messages).await;
    let want = [
        "txn_on_telemetry",
        "loyalty_store_mismatch",
        "loyalty_foreign_tx_id",
        "loyalty_reversal_other_store",
    ];
    ferry_tests::wait_until(
        Duration::from_secs(30),
        "the refused transactions in errors/",
        || {
            let reasons: Vec<String> = ferry_tests::lake::read(&lake)
                .iter()
                .filter(|o| o.key.starts_with("errors/"))
                .flat_map(|o| o.lines.iter().map(|l| l["reason"].to_string()))
                .collect();
            want.iter().all(|w| reasons.iter().any(|r| r.contains(w)))
        },
    )
    .await;
    ferry_tests::wait_until(Duration::from_secs(30), "pos-h's one good stamp", || {
        call(http, "GET", "/v1/cards/C-R", "")
            .1
            .to_string()
            .contains("\"balance\":2")
    })
    .await;
    ferry_tests::wait_until(Duration::from_secs(30), "pos-u's stamp held", || {
        let metrics = request(http, "GET", "/metrics", "", "")
            .map(|(_, text)| text)
            .unwrap_or_default();
        ferry_tests::cloud::metric(&metrics, "ferry_ingest_routes_held") >= 1.0
    })
    .await;
    let (status, _) = call(http, "GET", "/v1/cards/C-U", "");
    assert_eq!(status, 404, "a held stamp is not applied");
    let (_, pos_u) = call(http, "GET", "/v1/devices/pos-u", "");
    assert_eq!(
        pos_u["held_transactions"], 1,
        "the dashboards say what waits: {pos_u}"
    );
    assert_eq!(pos_u["registration"], Value::Null, "{pos_u}");
    register_till(http, "pos-u", "S-01");
    ferry_tests::wait_until(
        Duration::from_secs(30),
        "pos-u's stamp applied once registered",
        || call(http, "GET", "/v1/cards/C-U", "").0 == 200,
    )
    .await;
    let (_, listed) = call(http, "GET", "/v1/devices", "");
    assert!(
        listed.to_string().contains("\"store\":\"S-01\""),
        "registrations are listed: {listed}"
    );
    assert_alive("transactions from the wrong devices and stores", &mut cloud);

    // Slow clients, then SIGTERM: out within 5 s.
    let mut slow = half_sent(http, 300);
    let deadline = Instant::now() + Duration::from_secs(30);
    while closed_by_server(&mut slow) < slow.len() {
        assert!(
            Instant::now() < deadline,
            "half-sent connections still open after 30 s (header-read timeout 10 s)"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let _more = half_sent(http, 100);
    let t0 = Instant::now();
    assert_eq!(cloud.terminate(), Some(0), "{}", cloud.log());
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "SIGTERM took {:?} with slow clients attached",
        t0.elapsed()
    );
}
