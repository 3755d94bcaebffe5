//! A real `ferry-cloud loyalty` (or `dashboard`) process: its config, its API, and the
//! programs a test needs.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cloud::TOKEN;
use crate::free_port;
use crate::http::request;
use crate::process::Proc;

pub struct Loyalty {
    pub proc: Proc,
    pub port: u16,
    role: &'static str,
}

/// A `ferry-cloud dashboard` with `sections` (`[dashboard]`, and `[loyalty]` for the
/// figures) beside `data_dir` and `[http]`, not yet started.
pub fn dashboard(bin: &Path, dir: &Path, sections: &str) -> Loyalty {
    let port = free_port();
    let config = format!(
        "data_dir = \"{data}\"\n[http]\nlisten = \"127.0.0.1:{port}\"\ntoken = \"{TOKEN}\"\n{sections}",
        data = dir.join("dashboard-data").display(),
    );
    let path = dir.join("dashboard.toml");
    std::fs::write(&path, config).expect("writing dashboard config");
    let path = path.to_string_lossy().into_owned();
    Loyalty {
        proc: Proc::new(
            bin,
            &["dashboard", "--config", &path],
            dir.join("dashboard.log"),
        ),
        port,
        role: "dashboard",
    }
}

/// A loyalty role on `database` (`sqlite:///...` or `postgres://...`), not yet started.
pub fn loyalty(bin: &Path, dir: &Path, database: &str) -> Loyalty {
    loyalty_with(bin, dir, database, TOKEN, "")
}

/// The same, with `router_token` as `loyalty.token` and `extra` after `[http]` (more
/// `[[http.tokens]]`, say).
pub fn loyalty_with(
    bin: &Path,
    dir: &Path,
    database: &str,
    router_token: &str,
    extra: &str,
) -> Loyalty {
    let port = free_port();
    let config = format!(
        "data_dir = \"{data}\"\n\
         [loyalty]\nurl = \"http://127.0.0.1:{port}\"\ntoken = \"{router_token}\"\ndatabase = \"{database}\"\n\
         [http]\nlisten = \"127.0.0.1:{port}\"\ntoken = \"{TOKEN}\"\n{extra}",
        data = dir.join("loyalty-data").display(),
    );
    let path = dir.join("loyalty.toml");
    std::fs::write(&path, config).expect("writing loyalty config");
    let path = path.to_string_lossy().into_owned();
    Loyalty {
        proc: Proc::new(
            bin,
            &["loyalty", "--config", &path],
            dir.join("loyalty.log"),
        ),
        port,
        role: "loyalty",
    }
}

/// `PUT /v1/programs/{id}` on the API at `port`, which must accept it; and the suite's
/// [`TEST_STORES`], where its transactions are sold.
pub fn put_program(port: u16, id: &str, program: &Value) {
    put_ok(port, &format!("/v1/programs/{id}"), program);
    put_test_stores(port);
}

/// The stores the suite's transactions name, all of brand `test`, in UTC and EUR.
pub const TEST_STORES: &[&str] = &["S-01", "S-02", "S-1", "S-99", "S-other"];

fn put_ok(port: u16, path: &str, body: &Value) {
    let (status, answer) = request(port, "PUT", path, TOKEN, &body.to_string())
        .unwrap_or_else(|e| panic!("PUT {path}: {e}"));
    assert_eq!(status, 200, "PUT {path}: {answer}");
}

/// `PUT /v1/stores/{store}` (and its brand `test`) on the API at `port`: a store whose
/// transactions the ledger then applies.
pub fn put_store(port: u16, store: &str) {
    put_ok(
        port,
        "/v1/brands/test",
        &serde_json::json!({"name": "Test brand"}),
    );
    let body = serde_json::json!({
        "name": format!("Store {store}"), "brand": "test", "time_zone": "UTC", "currency": "EUR",
    });
    put_ok(port, &format!("/v1/stores/{store}"), &body);
}

/// [`TEST_STORES`], on the API at `port`.
pub fn put_test_stores(port: u16) {
    for store in TEST_STORES {
        put_store(port, store);
    }
}

/// `PUT /v1/devices/{device}` on the API at `port`: a till at `store`, made a store record
/// first, whose transactions the ledger then applies.
pub fn register_till(port: u16, device: &str, store: &str) {
    put_store(port, store);
    let body = serde_json::json!({"kind": "till", "store": store}).to_string();
    let (status, answer) = request(port, "PUT", &format!("/v1/devices/{device}"), TOKEN, &body)
        .unwrap_or_else(|e| panic!("PUT /v1/devices/{device}: {e}"));
    assert_eq!(status, 200, "PUT /v1/devices/{device}: {answer}");
}

impl Loyalty {
    /// The `[loyalty]` section that points an ingest here.
    pub fn route_config(&self) -> String {
        format!(
            "[loyalty]\nurl = \"http://127.0.0.1:{}\"\ntoken = \"{TOKEN}\"\n",
            self.port
        )
    }

    /// Starts the process and waits for `/healthz`.
    pub fn start(&mut self) {
        self.proc.start();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(request(self.port, "GET", "/healthz", "", ""), Ok((200, _))) {
            assert!(
                self.proc.is_running(),
                "ferry-cloud {} exited; log:\n{}",
                self.role,
                self.proc.log()
            );
            assert!(
                Instant::now() < deadline,
                "ferry-cloud {} not ready in 30 s; log:\n{}",
                self.role,
                self.proc.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A call with the token; the body parsed (`Null` when empty or not JSON).
    pub fn call(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        self.call_as(TOKEN, method, path, body)
    }

    /// A call with another token.
    pub fn call_as(&self, token: &str, method: &str, path: &str, body: &str) -> (u16, Value) {
        let (status, text) = request(self.port, method, path, token, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub fn put_program(&self, id: &str, program: Value) {
        put_program(self.port, id, &program);
    }

    pub fn register_till(&self, device: &str, store: &str) {
        register_till(self.port, device, store);
    }

    /// Balance per program of `card`; empty for a card the ledger has not seen.
    pub fn balances(&self, card: &str) -> std::collections::BTreeMap<String, i64> {
        let (status, answer) = self.call("GET", &format!("/v1/cards/{card}"), "");
        if status == 404 {
            return Default::default();
        }
        assert_eq!(status, 200, "GET /v1/cards/{card}: {answer}");
        answer["balances"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| {
                (
                    b["program"].as_str().unwrap_or_default().to_owned(),
                    b["balance"].as_i64().unwrap_or_default(),
                )
            })
            .collect()
    }
}
