//! The dashboards: the hot store on SQLite and on a real PostgreSQL (aggregation, resends,
//! device state, alarms, retention, change feed), and the API of the real
//! `ferry-cloud dashboard` binary over it (auth, JSON errors, readings, loyalty figures per
//! day from a real ledger, alarms, the event stream, the page).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ferry_cloud::config::{AlarmRule, Op};
use ferry_cloud::hot::{DeviceStatus, HotItem, HotStore, Series};
use ferry_cloud::loyalty::{Ledger, Program};
use ferry_shared::{Timestamp, Txn};
use ferry_tests::cloud::TOKEN;
use ferry_tests::http::request;
use ferry_tests::loyalty::{Loyalty, dashboard};
use ferry_tests::postgres::Postgres;
use serde_json::{Value, json};

use crate::BIN;
const MIN: i64 = 60_000;
const DAY: i64 = 24 * 60 * MIN;
const WEEK: i64 = 7 * DAY;

fn now_ms() -> i64 {
    Timestamp::now().unix_millis()
}

fn reading(device: &str, seq: u64, ts_ms: i64, metrics: &[(&str, f64)]) -> HotItem {
    HotItem::Reading {
        device: device.into(),
        spool: "01JD3W6Q3X8F2M7C9K4N5P6R8T".into(),
        seq,
        ts_ms,
        ts_suspect: false,
        metrics: metrics.iter().map(|(m, v)| ((*m).to_owned(), *v)).collect(),
    }
}

fn hot_rule() -> AlarmRule {
    AlarmRule {
        name: "boiling".into(),
        metric: "temperature_c".into(),
        op: Op::Gt,
        value: 200.0,
        for_s: 30,
        device: None,
    }
}

/// Two hours of `ws-1` temperature, every 10 s from `base` (a whole minute): in minute `m`
/// the values are m, m+0.1, ..., m+0.5, so each minute has avg m+0.25, min m, max m+0.5.
fn two_hours(base: i64) -> Vec<HotItem> {
    (0..720)
        .map(|i: i64| {
            let value = (i / 6) as f64 + (i % 6) as f64 / 10.0;
            reading(
                "ws-1",
                i as u64 + 1,
                base + i * 10_000,
                &[("temperature_c", value)],
            )
        })
        .collect()
}

fn base_ms() -> i64 {
    (now_ms() - 3 * 3600 * 1000) / MIN * MIN
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// The hot store's contract, run on both databases.
fn hot_store_behaves(store: &mut HotStore) {
    let base = base_ms();
    let rules = [hot_rule()];
    let items = two_hours(base);
    let first = store
        .write(&items[..400], &rules, WEEK, now_ms())
        .expect("write");
    assert_eq!((first.stored, first.duplicates), (400, 0));
    // The rest, with the first 100 resent: counted once.
    let second = store
        .write(&items[300..], &rules, WEEK, now_ms())
        .expect("write");
    assert_eq!((second.stored, second.duplicates), (320, 100));

    let Series::Rollup {
        step_s,
        t,
        avg,
        min,
        max,
        count,
    } = store
        .rollup("ws-1", "temperature_c", base, base + 120 * MIN, MIN)
        .expect("rollup")
    else {
        panic!("rollups expected");
    };
    assert_eq!(step_s, 60);
    assert_eq!(t.len(), 120);
    for m in 0..120 {
        let f = m as f64;
        assert_eq!(t[m], base + m as i64 * MIN);
        assert_eq!(count[m], 6, "minute {m}: each reading once");
        assert!(close(avg[m], f + 0.25), "minute {m}: avg {}", avg[m]);
        assert!(
            close(min[m], f) && close(max[m], f + 0.5),
            "minute {m}: {} {}",
            min[m],
            max[m]
        );
    }
    // Five-minute steps, aligned to multiples of five minutes since the epoch.
    let Series::Rollup {
        t,
        avg,
        count,
        min,
        max,
        ..
    } = store
        .rollup("ws-1", "temperature_c", base, base + 120 * MIN, 5 * MIN)
        .expect("rollup")
    else {
        panic!("rollups expected");
    };
    assert!(t.iter().all(|t| t % (5 * MIN) == 0));
    assert_eq!(count.iter().sum::<i64>(), 720);
    let whole = t.iter().position(|&t| t >= base).expect("a whole step");
    let m0 = ((t[whole] - base) / MIN) as f64;
    if count[whole] == 30 {
        assert!(close(avg[whole], m0 + 2.25), "avg {}", avg[whole]);
        assert!(close(min[whole], m0) && close(max[whole], m0 + 4.5));
    }
    let Series::Raw { t, value } = store
        .raw(
            "ws-1",
            "temperature_c",
            base + 60 * MIN,
            base + 90 * MIN,
            10_000,
        )
        .expect("raw")
    else {
        panic!("raw expected");
    };
    assert_eq!(t.len(), 180);
    assert!(close(value[0], 60.0) && close(value[179], 89.5));

    // Readings older than the raw retention are left to the lake.
    let old = store
        .write(
            &[reading(
                "ws-1",
                9999,
                now_ms() - WEEK - MIN,
                &[("temperature_c", 1.0)],
            )],
            &rules,
            WEEK,
            now_ms(),
        )
        .expect("write");
    assert_eq!((old.stored, old.too_old), (0, 1));

    // Alarms: above 200 for 30 s raises, back below clears; a resend changes nothing.
    let rev = store.rev().expect("rev");
    let t0 = base + 200 * MIN;
    let boil = |seq, s: i64, v| reading("ws-2", seq, t0 + s * 1000, &[("temperature_c", v)]);
    let batch = [boil(1, 0, 201.0), boil(2, 20, 202.0), boil(3, 30, 203.0)];
    store.write(&batch, &rules, WEEK, now_ms()).expect("write");
    let active = store.active_alarms().expect("active");
    assert_eq!(active.len(), 1, "{active:?}");
    assert_eq!(
        (active[0].device.as_str(), active[0].raised_value),
        ("ws-2", 203.0)
    );
    assert_eq!(active[0].condition, "temperature_c > 200 for 30 s");
    store.write(&batch, &rules, WEEK, now_ms()).expect("resend");
    store
        .write(&[boil(4, 40, 50.0)], &rules, WEEK, now_ms())
        .expect("write");
    assert!(store.active_alarms().expect("active").is_empty());
    let cleared = store.cleared_alarms(10).expect("cleared");
    assert_eq!(cleared.len(), 1, "raised once, whatever was resent");
    assert_eq!(cleared[0].cleared_value, Some(50.0));
    let changes = store.changes(rev).expect("changes");
    assert!(changes.rev > rev);
    assert_eq!(changes.alarms.len(), 1, "the alarm, as it stands now");
    assert!(
        changes
            .readings
            .iter()
            .any(|l| l.device == "ws-2" && l.value == 50.0)
    );
    assert!(
        store
            .changes(changes.rev)
            .expect("none")
            .readings
            .is_empty()
    );

    // Device state: status, will, silence and plain activity.
    let now = now_ms();
    let status = |online, at: Option<i64>, pending| DeviceStatus {
        online,
        agent_version: Some("0.1.0".into()),
        at: at.and_then(Timestamp::from_unix_millis),
        pending,
        oldest_pending_age_s: pending.map(|_| 12.5),
        ..DeviceStatus::default()
    };
    let said = |device: &str, s: DeviceStatus| HotItem::Status {
        device: device.into(),
        received_ms: now,
        status: s,
    };
    store
        .write(
            &[
                said("up", status(true, Some(now - 1000), Some(42))),
                said("will", status(true, Some(now - 5000), Some(1))),
                said("will", DeviceStatus::default()),
                said("quiet", status(true, Some(now - 20 * MIN), None)),
                HotItem::Seen {
                    device: "plain".into(),
                    at_ms: now - 2000,
                },
                // A retained status delivered again after a restart: older, ignored.
                said("up", status(false, Some(now - 60_000), Some(7))),
            ],
            &rules,
            WEEK,
            now,
        )
        .expect("write");
    let devices = store.devices(now, 10 * MIN).expect("devices");
    let state = |name: &str| {
        devices
            .iter()
            .find(|d| d.device == name)
            .unwrap_or_else(|| panic!("{name} listed"))
            .clone()
    };
    assert_eq!(state("up").state, "online");
    assert_eq!(
        state("up").backlog.pending,
        Some(42),
        "the newer status stands"
    );
    assert_eq!(state("up").backlog.oldest_pending_age_s, Some(12.5));
    assert_eq!(state("up").agent_version.as_deref(), Some("0.1.0"));
    assert_eq!(state("will").state, "offline", "the will says so");
    assert_eq!(
        state("will").backlog.pending,
        Some(1),
        "the will keeps the last figures"
    );
    assert_eq!(state("quiet").state, "offline", "silent past the timeout");
    assert_eq!(state("plain").state, "online");

    // Retention: raw readings go after their period, rollups stay for theirs.
    let (raw, rollups) = store.retain(now, 60 * MIN, 90 * DAY).expect("retain");
    assert!(raw >= 720, "{raw} raw readings dropped");
    assert_eq!(rollups, 0);
    assert!(
        store
            .raw("ws-1", "temperature_c", base, base + 120 * MIN, 10_000)
            .expect("raw")
            .is_empty()
    );
    assert_eq!(
        store
            .rollup("ws-1", "temperature_c", base, base + 120 * MIN, MIN)
            .expect("rollup")
            .len(),
        120
    );
}

#[test]
fn hot_store_on_sqlite() {
    let _load = crate::beside_others();
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("hot.db").display());
    let mut store = HotStore::open(&url).expect("open");
    hot_store_behaves(&mut store);
    let conn = rusqlite::Connection::open(dir.path().join("hot.db")).expect("open");
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("pragma");
    assert_eq!(mode, "wal");
}

#[test]
fn hot_store_on_postgres() {
    let _load = crate::beside_others();
    let pg = Postgres::start();
    let url = pg.database("hot");
    let mut store = HotStore::open(&url).expect("open");
    hot_store_behaves(&mut store);
    // A second open finds the schema there.
    HotStore::open(&url).expect("reopen");
}

/// A `ferry-cloud dashboard` over a hot store filled with `two_hours`, and a ledger.
fn served(dir: &tempfile::TempDir) -> (Loyalty, String, i64) {
    let hot = format!("sqlite://{}", dir.path().join("hot.db").display());
    let ledger = format!("sqlite://{}", dir.path().join("ledger.db").display());
    let base = base_ms();
    let mut store = HotStore::open(&hot).expect("open");
    let mut items = two_hours(base);
    items.push(HotItem::Status {
        device: "ws-1".into(),
        received_ms: now_ms(),
        status: DeviceStatus {
            online: true,
            agent_version: Some("0.1.0".into()),
            at: Some(Timestamp::now()),
            pending: Some(3),
            ..DeviceStatus::default()
        },
    });
    store
        .write(&items, &[hot_rule()], WEEK, now_ms())
        .expect("write");
    seed_ledger(&ledger);
    let sections = format!(
        "[dashboard]\ndatabase = \"{hot}\"\nevents_interval_ms = 200\n\
         [[dashboard.alarms]]\nname = \"boiling\"\nmetric = \"temperature_c\"\nop = \">\"\nvalue = 200.0\nfor_s = 30\n\
         [loyalty]\nurl = \"http://127.0.0.1:1\"\ntoken = \"unused-but-a-real-token\"\ndatabase = \"{ledger}\"\n"
    );
    let mut d = dashboard(BIN.as_ref(), dir.path(), &sections);
    d.start();
    (d, hot, base)
}

fn txn(v: Value) -> Txn {
    serde_json::from_value(v).expect("txn")
}

/// Today at S-01: 5 stamps, 150 points, one redemption that overdraws the card (10 stamps
/// taken from 5), and a stamp at S-02 that counts there only.
fn seed_ledger(url: &str) {
    let mut ledger = Ledger::open(url).expect("ledger");
    crate::test_stores(&mut ledger);
    ledger
        .put_program(
            "coffee",
            &Program::Stamps {
                stamps_per_reward: 10,
                reward: "free coffee".into(),
            },
        )
        .expect("program");
    ledger
        .put_program(
            "points",
            &Program::Points {
                points_per_currency_unit: 1.0,
                reward: "voucher".into(),
                reward_cost: 100,
                expiry_days: None,
            },
        )
        .expect("program");
    let t = |id: &str, op: &str, program: &str, store: &str, qty: u64| {
        txn(
            json!({"tx_id": id, "op": op, "program": program, "card": "C-1", "store": store,
                   "qty": qty, "offline": op == "redeem"}),
        )
    };
    let outcomes = ledger
        .apply(&[
            t("a", "stamp", "coffee", "S-01", 3),
            t("b", "stamp", "coffee", "S-01", 2),
            t("c", "earn", "points", "S-01", 150),
            t("d", "redeem", "coffee", "S-01", 10),
            t("e", "stamp", "coffee", "S-02", 1),
        ])
        .expect("apply");
    assert!(
        outcomes
            .iter()
            .all(|o| o.status == ferry_cloud::loyalty::Status::Applied),
        "{outcomes:?}"
    );
}

fn get(d: &Loyalty, path: &str) -> (u16, Value) {
    d.call("GET", path, "")
}

#[test]
fn every_route_needs_the_token_and_errors_are_json() {
    let _load = crate::beside_others();
    let dir = tempfile::tempdir().expect("tempdir");
    let (d, _, _) = served(&dir);
    for path in [
        "/v1/devices",
        "/v1/devices/ws-1",
        "/v1/devices/ws-1/readings?metric=temperature_c",
        "/v1/stores",
        "/v1/stores/S-01/loyalty",
        "/v1/alarms",
        "/v1/events",
        "/v1/stations",
        "/v1/compare?metric=temperature_c&devices=ws-1",
        "/v1/loyalty",
        "/v1/traffic",
    ] {
        for token in ["", "wrong", "cloud-test-tokeN"] {
            let (status, body) = request(d.port, "GET", path, token, "").expect("answer");
            assert_eq!(status, 401, "{path} with {token:?}: {body}");
            let body: Value = serde_json::from_str(&body).expect("JSON error");
            assert_eq!(body["error"]["code"], "unauthorized");
        }
    }
    let cases = [
        ("/v1/devices/nobody", 404, "unknown_device"),
        (
            "/v1/devices/nobody/readings?metric=temperature_c",
            404,
            "unknown_device",
        ),
        ("/v1/devices/ws-1/readings", 400, "missing_metric"),
        (
            "/v1/devices/ws-1/readings?metric=temperature_c&step=30s",
            400,
            "invalid_step",
        ),
        (
            "/v1/devices/ws-1/readings?metric=temperature_c&step=often",
            400,
            "invalid_step",
        ),
        (
            "/v1/devices/ws-1/readings?metric=temperature_c&from=yesterday",
            400,
            "invalid_time",
        ),
        (
            "/v1/devices/ws-1/readings?metric=temperature_c&from=1000000002000&to=1000000001000",
            400,
            "invalid_range",
        ),
        (
            "/v1/devices/ws-1/readings?metric=temperature_c&from=2000&to=1000",
            400,
            "invalid_time",
        ),
        (
            "/v1/devices/ws-1/readings?metric=temperature_c&from=946684800000&step=1m",
            400,
            "too_many_points",
        ),
        (
            "/v1/stores/S-01/loyalty?from=2026-13-01",
            400,
            "invalid_time",
        ),
        (
            "/v1/stores/S-01/loyalty?from=2026-11-02&to=2026-11-01",
            400,
            "invalid_range",
        ),
        (
            "/v1/stores/S-01/loyalty?from=2020-01-01&to=2026-01-01",
            400,
            "invalid_range",
        ),
        ("/assets/nothing.js", 404, "not_found"),
        ("/v1/loyalty?period=week", 400, "invalid_period"),
        ("/v1/traffic?period=", 400, "invalid_period"),
        ("/v1/compare?devices=ws-1", 400, "missing_metric"),
        ("/v1/compare?metric=temperature_c", 400, "invalid_devices"),
        (
            "/v1/compare?metric=temperature_c&devices=,,",
            400,
            "invalid_devices",
        ),
        (
            "/v1/compare?metric=temperature_c&devices=a,b,c,d,e,f,g,h,i",
            400,
            "invalid_devices",
        ),
        (
            "/v1/compare?metric=temperature_c&devices=ws-1&step=30s",
            400,
            "invalid_step",
        ),
        (
            "/v1/compare?metric=temperature_c&devices=ws-1&from=2000&to=1000",
            400,
            "invalid_time",
        ),
    ];
    for (path, status, code) in cases {
        let (got, body) = get(&d, path);
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{path}: {body}"
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    // The page and its assets hold no data: no token needed, nothing from elsewhere.
    let (status, page) = request(d.port, "GET", "/", "", "").expect("page");
    assert_eq!(status, 200);
    assert!(
        page.contains("/assets/uPlot.iife.min.js") && !page.contains("://"),
        "{page}"
    );
    for asset in [
        "app.js",
        "app.css",
        "uPlot.iife.min.js",
        "uPlot.min.css",
        "favicon.svg",
    ] {
        let (status, body) =
            request(d.port, "GET", &format!("/assets/{asset}"), "", "").expect("asset");
        assert_eq!(status, 200, "{asset}");
        assert!(body.len() > 200, "{asset}: {} bytes", body.len());
    }
}

#[test]
fn devices_readings_alarms_and_loyalty_figures() {
    let _load = crate::beside_others();
    let dir = tempfile::tempdir().expect("tempdir");
    let (d, _, base) = served(&dir);
    let (status, body) = get(&d, "/v1/devices");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["offline_after_s"], 600);
    let ws1 = &body["devices"][0];
    assert_eq!(
        (ws1["device"].as_str(), ws1["state"].as_str()),
        (Some("ws-1"), Some("online"))
    );
    assert_eq!(ws1["backlog"]["pending"], 3);
    assert_eq!(ws1["agent_version"], "0.1.0");

    let (status, body) = get(&d, "/v1/devices/ws-1");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["latest"][0]["metric"], "temperature_c");
    assert_eq!(body["latest"][0]["value"], 119.5);

    // Two hours: 1-minute rollups, chosen from the span.
    let (from, to) = (base, base + 120 * MIN);
    let (status, body) = get(
        &d,
        &format!("/v1/devices/ws-1/readings?metric=temperature_c&from={from}&to={to}"),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["kind"].as_str(), body["step_s"].as_i64()),
        (Some("rollup"), Some(60))
    );
    assert_eq!(body["t"].as_array().map(Vec::len), Some(120));
    assert_eq!(body["count"][7], 6);
    assert_eq!(body["avg"][7], 7.25);
    assert_eq!(
        (body["min"][7].as_f64(), body["max"][7].as_f64()),
        (Some(7.0), Some(7.5))
    );
    // Half an hour: raw points.
    let (status, body) = get(
        &d,
        &format!(
            "/v1/devices/ws-1/readings?metric=temperature_c&from={}&to={}",
            from + 30 * MIN,
            from + 60 * MIN
        ),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["kind"], "raw");
    assert_eq!(body["value"].as_array().map(Vec::len), Some(180));
    assert_eq!(body["value"][0], 30.0);
    // An hourly step, RFC 3339 bounds.
    let (status, body) = get(
        &d,
        &format!(
            "/v1/devices/ws-1/readings?metric=temperature_c&step=1h&from={}&to={}",
            Timestamp::from_unix_millis(from - 3 * 3600 * 1000).expect("ts"),
            Timestamp::from_unix_millis(to + 3600 * 1000).expect("ts"),
        ),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["step_s"], 3600);
    let counts: Vec<i64> = body["count"]
        .as_array()
        .expect("counts")
        .iter()
        .filter_map(Value::as_i64)
        .collect();
    assert_eq!(counts.iter().sum::<i64>(), 720, "{counts:?}");
    // A week at one minute, as the benchmark asks it.
    let (status, body) = get(
        &d,
        &format!(
            "/v1/devices/ws-1/readings?metric=temperature_c&from={}&step=1m",
            now_ms() - WEEK
        ),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["t"].as_array().map(Vec::len), Some(120));

    let (status, body) = get(&d, "/v1/alarms");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rules"][0]["name"], "boiling");
    assert_eq!(body["rules"][0]["op"], ">");
    assert_eq!(body["active"].as_array().map(Vec::len), Some(0), "{body}");

    let (status, body) = get(&d, "/v1/stores");
    assert_eq!(status, 200, "{body}");
    // The store records, and the stores the ledger's transactions named (the same here).
    assert_eq!(body["stores"], json!(ferry_tests::loyalty::TEST_STORES));
    assert_eq!(body["records"][0]["time_zone"], "UTC", "{body}");
    let today = chrono::Utc::now().date_naive();
    let (status, body) = get(
        &d,
        &format!(
            "/v1/stores/S-01/loyalty?from={}",
            today - chrono::Duration::days(2)
        ),
    );
    assert_eq!(status, 200, "{body}");
    let days = body["days"].as_array().expect("days");
    assert_eq!(days.len(), 3, "every day listed: {body}");
    assert_eq!(days[0]["stamps_issued"], 0);
    assert_eq!(
        days[2],
        json!({"day": today.to_string(), "stamps_issued": 5, "points_issued": 150,
               "rewards_redeemed": 1, "overdrafts_flagged": 1, "transactions": 4})
    );
    let (_, body) = get(&d, "/v1/stores/S-02/loyalty");
    assert_eq!(body["days"][0]["stamps_issued"], 1);
    assert_eq!(body["days"][0]["overdrafts_flagged"], 0);

    // The period's figures: the busier store first, every day listed, one card counted
    // once over both stores.
    let (status, body) = get(&d, "/v1/loyalty?period=7d");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["days"].as_array().map(Vec::len), Some(7), "{body}");
    assert_eq!(body["to"], today.to_string());
    let stores: Vec<&str> = body["stores"]
        .as_array()
        .expect("stores")
        .iter()
        .filter_map(|s| s["store"].as_str())
        .collect();
    assert_eq!(stores, ["S-01", "S-02"], "{body}");
    assert_eq!(body["stores"][0]["days"].as_array().map(Vec::len), Some(7));
    assert_eq!(
        body["stores"][0]["totals"],
        json!({"stamps_issued": 5, "points_issued": 150, "rewards_redeemed": 1,
               "overdrafts_flagged": 1, "transactions": 4, "active_cards": 1,
               "returning_cards": 0, "returning_share": 0.0})
    );
    assert_eq!(body["totals"]["transactions"], 5, "{body}");
    assert_eq!(
        body["totals"]["active_cards"], 1,
        "one card at two stores: {body}"
    );
    let (_, today_only) = get(&d, "/v1/loyalty?period=today");
    assert_eq!(today_only["days"], json!([today.to_string()]));

    // Sales by hour: all of today's in one hour.
    let (status, body) = get(&d, "/v1/traffic?period=7d");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["stores"][0]["store"], "S-01");
    assert_eq!(body["stores"][0]["total"], 4);
    let cell = &body["stores"][0]["cells"][0];
    assert_eq!(
        (cell[0].as_i64(), cell[2].as_i64()),
        (Some(6), Some(4)),
        "{body}"
    );
    assert_eq!(body["busiest"][0]["transactions"], 5, "{body}");
    assert_eq!(body["busiest"][0]["hour"], cell[1], "{body}");

    // The stations' tiles: ws-1's last reading is an hour old, its status fresh: stale.
    let (status, body) = get(&d, "/v1/stations");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["metrics"],
        json!([{"metric": "temperature_c", "label": "temperature", "unit": "°C"}])
    );
    let tile = &body["stations"][0];
    assert_eq!(
        (&tile["device"], &tile["state"], &tile["latest"][0]["unit"]),
        (&json!("ws-1"), &json!("stale"), &json!("°C")),
        "{body}"
    );
    assert_eq!(tile["latest"][0]["value"], 119.5);

    // Stations compared: one axis, a station without data all null.
    let (status, body) = get(
        &d,
        &format!("/v1/compare?metric=temperature_c&devices=ws-2,ws-1&from={from}&to={to}&step=1m"),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["t"].as_array().map(Vec::len), Some(120), "{body}");
    assert_eq!(body["devices"][0]["device"], "ws-1", "sorted: {body}");
    assert_eq!(
        (
            &body["devices"][0]["avg"][0],
            &body["devices"][0]["min"][0],
            &body["devices"][0]["max"][0]
        ),
        (&json!(0.25), &json!(0.0), &json!(0.5))
    );
    assert!(
        body["devices"][1]["avg"]
            .as_array()
            .is_some_and(|a| a.len() == 120 && a.iter().all(Value::is_null)),
        "{body}"
    );
}

/// Reads SSE events (name, data) from an open stream until `want` of them match.
fn read_events(
    reader: &mut BufReader<TcpStream>,
    deadline: Instant,
    mut want: impl FnMut(&str, &Value) -> bool,
) -> Vec<(String, Value)> {
    let mut seen = Vec::new();
    let mut name = String::new();
    let mut line = String::new();
    while Instant::now() < deadline {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                continue;
            }
            Err(e) => panic!("event stream: {e}"),
        }
        let line = line.trim_end();
        if let Some(n) = line.strip_prefix("event:") {
            name = n.trim().to_owned();
        } else if let Some(data) = line.strip_prefix("data:") {
            let value: Value = serde_json::from_str(data.trim()).unwrap_or(Value::Null);
            let done = want(&name, &value);
            seen.push((name.clone(), value));
            if done {
                return seen;
            }
        }
    }
    panic!("the wanted event did not come in time; got {seen:?}");
}

#[test]
fn the_event_stream_carries_readings_alarms_and_device_changes() {
    let _load = crate::beside_others();
    let dir = tempfile::tempdir().expect("tempdir");
    let (d, hot, _) = served(&dir);
    let mut stream = TcpStream::connect(("127.0.0.1", d.port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    write!(
        stream,
        "GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    )
    .expect("request");
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).expect("status line");
    assert!(status.contains("200"), "{status}");
    // Let the feed take its first look before anything changes.
    std::thread::sleep(Duration::from_millis(600));

    let mut store = HotStore::open(&hot).expect("open");
    let now = now_ms();
    let items = [
        reading("ws-9", 1, now - 40_000, &[("temperature_c", 220.0)]),
        reading("ws-9", 2, now - 5_000, &[("temperature_c", 221.0)]),
        HotItem::Status {
            device: "ws-1".into(),
            received_ms: now,
            status: DeviceStatus::default(),
        },
    ];
    store
        .write(&items, &[hot_rule()], WEEK, now)
        .expect("write");
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut reading_seen, mut alarm_seen, mut offline_seen) = (false, false, false);
    read_events(&mut reader, deadline, |name, data| {
        match name {
            "reading" if data["device"] == "ws-9" => {
                assert_eq!(data["value"], 221.0, "the newest value: {data}");
                reading_seen = true;
            }
            "alarm" if data["device"] == "ws-9" => {
                assert_eq!(data["rule"], "boiling");
                assert_eq!(data["raised_value"], 221.0);
                alarm_seen = true;
            }
            "device" if data["device"] == "ws-1" && data["state"] == "offline" => {
                offline_seen = true
            }
            _ => {}
        }
        reading_seen && alarm_seen && offline_seen
    });
}
