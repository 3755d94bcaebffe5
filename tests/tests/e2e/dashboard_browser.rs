//! The dashboard page in a real browser: Debian's headless Chromium, driven through
//! chromedriver (WebDriver), against `ferry-cloud all` fed by real agents over a real
//! Mosquitto: three weather stations and a till.
//!
//! The page is opened as a user would: it asks for the token, which is typed in. Then it
//! must show a tile per station with a number and its unit, a chart comparing stations, the
//! threshold alarm in its tile, the till's store in the loyalty comparison with its chart
//! and its sales-by-hour heatmap, and the fleet in trouble order; a station frozen with
//! SIGSTOP (its connection left open, so no will message) turns offline and goes to the top
//! of the fleet. Then at 1920×1080 and at 390×844 nothing is wider than the screen, and
//! screenshots are saved as `target/artifacts/dashboard-1920.png` and `dashboard-390.png`
//! (`dashboard-failed.png` when a wait fails).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferry_tests::agent::{AgentProc, simulated};
use ferry_tests::broker::Mosquitto;
use ferry_tests::cloud::{AllConfig, TOKEN, start_all};
use ferry_tests::free_port;
use ferry_tests::loyalty::{put_program, register_till};
use ferry_tests::webdriver::Session;
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const STATIONS: [&str; 3] = ["ws-1", "ws-2", "ws-3"];
const TILL: &str = "pos-1";
/// A wall display's token, and a shop's.
const VIEWER: &str = "viewer-token-for-the-wall";
const STORE: &str = "store-token-for-the-shop";
/// The dashboard's inactivity timeout in this test.
const OFFLINE_AFTER_S: u64 = 8;

/// chromedriver on a free 127.0.0.1 port, killed on drop with the browser it started:
/// a failed test does not close its session, and chromium outlives a killed chromedriver.
struct Driver {
    child: Child,
    port: u16,
    /// Chromium's profile folder, unique to this test: it names the browser's processes.
    profile: PathBuf,
}

impl Driver {
    fn start(dir: &Path) -> Self {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: install Debian's browser and its driver \
                 (apt-get install -y chromium chromium-driver; `cargo xtask test` does)"
            );
        }
        let port = free_port();
        let log = std::fs::File::create(dir.join("chromedriver.log")).expect("driver log");
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting chromedriver");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen in 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            port,
            profile: dir.join("chromium-profile"),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("pkill")
            .arg("-KILL")
            .args(["-f", "--"])
            .arg(format!("--user-data-dir={}", self.profile.display()))
            .status();
    }
}

/// `target/artifacts`, beside the test binary's `target/<profile>/deps`.
fn artifacts_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let target = exe
        .ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"));
    let dir = target.join("artifacts");
    std::fs::create_dir_all(&dir).expect("artifacts dir");
    dir
}

fn cloud_config(dir: &Path, broker: u16, http: u16) -> String {
    AllConfig {
        lake_extra: "flush_interval_s = 1\n",
        dashboard_extra: &format!(
            "offline_after_s = {OFFLINE_AFTER_S}\nevents_interval_ms = 300\n"
        ),
        tail: &format!(
            "[[http.tokens]]\nname = \"wall\"\ntoken = \"{VIEWER}\"\nrole = \"viewer\"\n\
             [[http.tokens]]\nname = \"shop\"\ntoken = \"{STORE}\"\nrole = \"store\"\nstores = [\"S-{TILL}\"]\n\
             [[dashboard.alarms]]\nname = \"above_freezing\"\nmetric = \"temperature_c\"\nop = \">\"\nvalue = 0.0\nfor_s = 2\n"
        ),
        ..AllConfig::new(dir, broker, http, "dashboard-ingest")
    }
    .toml()
}

/// What the page shows, read from the DOM in one call.
fn page_state(c: &Session) -> Value {
    c.execute(
        "const q = (s, root) => [...(root || document).querySelectorAll(s)];
         const text = (n) => n ? n.textContent : null;
         return {
           tiles: q('.tile[data-device]').map(t => ({
             device: t.dataset.device, state: t.dataset.state, alarms: Number(t.dataset.alarms),
             value: text(t.querySelector('.reading.primary .value')),
             unit: text(t.querySelector('.reading.primary .unit')),
             metric: (t.querySelector('.reading.primary') || {dataset: {}}).dataset.metric || null,
             spark: Number((t.querySelector('svg.spark') || {dataset: {}}).dataset.points || 0),
           })),
           compare: {
             devices: (document.querySelector('#compare').dataset.devices || '').split(',').filter(Boolean),
             points: Number(document.querySelector('#compare').dataset.points || 0),
             canvas: q('#compare canvas').length,
           },
           stores: q('#store-compare tr[data-store]').map(r => ({
             store: r.dataset.store,
             transactions: Number(text(r.querySelector('[data-total=transactions]')).replace(/\\D/g, '')),
             stamps: Number(text(r.querySelector('[data-total=stamps_issued]')).replace(/\\D/g, '')),
             cards: Number(text(r.querySelector('[data-total=active_cards]')).replace(/\\D/g, '')),
           })),
           store_charts: q('.store-chart[data-store]').filter(b => b.querySelector('canvas')).map(b => b.dataset.store),
           heat: q('.heatmap[data-store]').map(t => ({
             store: t.dataset.store,
             sales: q('td[data-count]', t).reduce((n, td) => n + Number(td.dataset.count), 0),
           })),
           busiest: text(document.querySelector('#busiest')),
           fleet: q('#fleet li[data-device]').map(li => ({
             device: li.dataset.device, state: li.dataset.state, trouble: Number(li.dataset.trouble),
             notes: text(li.querySelector('.notes')),
           })),
           rollouts: q('#rollouts li[data-rollout]').map(li => li.textContent),
           feed: document.querySelector('#feed').dataset.state,
           login_open: document.querySelector('#login').open,
           login_error: document.querySelector('#login-error').textContent,
           url: location.href,
           width: window.innerWidth,
           overflow: document.documentElement.scrollWidth - window.innerWidth,
           favicon: (document.querySelector('link[rel=icon]') || {}).href || null,
           role: document.body.dataset.role || null,
           shown: ['stations', 'compare', 'fleet', 'loyalty', 'traffic']
             .filter(p => !document.querySelector('#' + p + '-panel').hidden),
           actions: q('#fleet [data-action]').length,
         };",
    )
    .unwrap_or_else(|e| json!({ "error": e }))
}

async fn wait_for(
    c: &Session,
    what: &str,
    timeout: Duration,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let state = page_state(c);
        if check(&state) {
            return state;
        }
        if Instant::now() >= deadline {
            save_screenshot(c, "dashboard-failed.png");
            panic!("the page did not show {what} within {timeout:?}; it shows {state}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Headless Chromium through chromedriver; the driver kills the browser when dropped.
fn open_browser(dir: &Path) -> (Driver, Session) {
    let driver = Driver::start(dir);
    let caps = json!({
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-dev-shm-usage", "--disable-component-update", "--disable-sync",
                     "--no-first-run", "--window-size=1400,1100",
                     format!("--user-data-dir={}", driver.profile.display())],
        }
    });
    let session = Session::new(driver.port, caps).expect("a Chromium session through chromedriver");
    (driver, session)
}

/// Signs out (the header's button) and signs in with `token`.
fn sign_in_as(c: &Session, token: &str) {
    c.find("#forget").expect("sign out").click().expect("click");
    submit_token(c, token);
}

/// Types `token` into the page's token dialog, as a person would, and submits it.
fn submit_token(c: &Session, token: &str) {
    let field = c.find("#token").expect("token field");
    field.clear().expect("clear");
    field.send_keys(token).expect("type");
    c.find("#login-go").expect("button").click().expect("click");
}

fn save_screenshot(c: &Session, name: &str) -> PathBuf {
    let path = artifacts_dir().join(name);
    match c.screenshot() {
        Ok(png) => {
            std::fs::write(&path, png).expect("writing the screenshot");
            eprintln!("screenshot saved: {}", path.display());
        }
        Err(e) => eprintln!("no screenshot: {e}"),
    }
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_answers_at_a_glance_on_a_desktop_and_a_phone() {
    let _load = super::alone().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = Mosquitto::start();
    let http = free_port();
    let mut cloud = start_all(
        dir.path(),
        &cloud_config(dir.path(), broker.port, http),
        http,
    )
    .await;
    put_program(
        http,
        "coffee",
        &json!({"kind": "stamps", "stamps_per_reward": 10, "reward": "coffee"}),
    );
    put_program(
        http,
        "points",
        &json!({"kind": "points", "points_per_currency_unit": 1, "reward": "voucher", "reward_cost": 100}),
    );
    register_till(http, TILL, &format!("S-{TILL}"));
    let mut agents: Vec<AgentProc> = STATIONS
        .iter()
        .chain([&TILL])
        .map(|d| {
            let profile = if *d == TILL { "pos" } else { "weather" };
            simulated(dir.path(), d, profile, broker.port, 500, 0)
        })
        .collect();
    for a in &mut agents {
        a.start();
    }

    let (_driver, c) = open_browser(dir.path());

    c.goto(&format!("http://127.0.0.1:{http}/"))
        .expect("open the page");
    // It asks for the token; a wrong one is refused and asked for again.
    wait_for(&c, "the token dialog", Duration::from_secs(10), |s| {
        s["login_open"] == true
    })
    .await;
    submit_token(&c, "wrong");
    wait_for(&c, "the token asked again", Duration::from_secs(10), |s| {
        s["login_open"] == true
    })
    .await;
    submit_token(&c, TOKEN);

    // Stations: a tile each, temperature first, a number and its unit, a sparkline.
    wait_for(&c, "a tile per station", Duration::from_secs(60), |s| {
        let tiles = s["tiles"].as_array().cloned().unwrap_or_default();
        s["login_open"] == false
            && tiles.len() == STATIONS.len()
            && tiles.iter().all(|t| {
                t["state"] == "online"
                    && t["metric"] == "temperature_c"
                    && t["unit"] == "°C"
                    && t["value"]
                        .as_str()
                        .is_some_and(|v| v.replace(',', ".").parse::<f64>().is_ok())
            })
    })
    .await;
    // One metric across stations, on one chart.
    wait_for(
        &c,
        "a chart of two stations",
        Duration::from_secs(30),
        |s| {
            s["compare"]["devices"]
                .as_array()
                .is_some_and(|d| d.len() >= 2)
                && s["compare"]["canvas"].as_u64() > Some(0)
                && s["compare"]["points"].as_u64() > Some(0)
        },
    )
    .await;
    // The threshold alarm shows in its station's tile.
    wait_for(&c, "an alarm in a tile", Duration::from_secs(60), |s| {
        s["tiles"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["alarms"].as_u64() > Some(0)))
    })
    .await;
    // Loyalty: the store in the comparison with its totals, and its chart; sales by hour.
    let store = format!("S-{TILL}");
    wait_for(
        &c,
        "the till's store in the loyalty panels",
        Duration::from_secs(70),
        |s| {
            let row = s["stores"]
                .as_array()
                .and_then(|r| r.iter().find(|r| r["store"] == store.as_str()).cloned());
            row.is_some_and(|r| {
                r["transactions"].as_u64() > Some(0) && r["cards"].as_u64() > Some(0)
            }) && s["store_charts"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c == store.as_str()))
                && s["heat"].as_array().is_some_and(|h| {
                    h.iter()
                        .any(|h| h["store"] == store.as_str() && h["sales"].as_u64() > Some(0))
                })
                && s["busiest"]
                    .as_str()
                    .is_some_and(|b| b.starts_with("Busiest hours"))
        },
    )
    .await;
    let all = STATIONS.iter().chain([&TILL]).copied().collect::<Vec<_>>();
    wait_for(
        &c,
        "every device in the fleet list",
        Duration::from_secs(30),
        |s| {
            let fleet = s["fleet"].as_array().cloned().unwrap_or_default();
            all.iter().all(|d| {
                fleet
                    .iter()
                    .any(|f| f["device"] == *d && f["state"] == "online")
            })
        },
    )
    .await;
    // Fleet operations: a desired configuration ws-1 refuses shows as drift, and a rollout
    // ws-2 refuses (it has no [update] public_key) in the updates panel.
    let (status, body) = ferry_tests::http::request(
        http,
        "PUT",
        "/v1/devices/ws-1/config",
        TOKEN,
        &json!({"mqtt": {"gzip_level": 12}}).to_string(),
    )
    .expect("a desired configuration");
    assert_eq!(status, 202, "{body}");
    let manifest = ferry_tests::fleet::manifest(b"a", "9.9.9").to_text();
    let artifact = json!({"url": "http://127.0.0.1:9/a", "manifest": manifest,
                          "signature": "c2ln"});
    let rollout = json!({"version": "9.9.9", "devices": ["ws-2"],
                         "artifacts": {ferry_shared::fleet::this_arch(): artifact}});
    let (status, body) =
        ferry_tests::http::post_json(http, "/v1/rollouts", TOKEN, &rollout.to_string())
            .expect("a rollout");
    assert_eq!(status, 201, "{body}");
    wait_for(
        &c,
        "ws-1's drift and the failed rollout",
        Duration::from_secs(40),
        |s| {
            let drift = s["fleet"].as_array().is_some_and(|f| {
                f.iter().any(|d| {
                    d["device"] == "ws-1"
                        && d["notes"]
                            .as_str()
                            .is_some_and(|n| n.contains("refused") && n.contains("gzip_level"))
                })
            });
            let rolled = s["rollouts"].as_array().is_some_and(|r| {
                r.iter().any(|r| {
                    r.as_str()
                        .is_some_and(|r| r.contains("1 failed") && r.contains("updates_disabled"))
                })
            });
            drift && rolled
        },
    )
    .await;

    let state = page_state(&c);
    assert_eq!(state["feed"], "live", "{state}");
    assert_eq!(state["role"], "admin", "{state}");
    assert!(
        state["actions"].as_u64() > Some(0),
        "an admin may register and retire devices: {state}"
    );
    assert!(
        state["favicon"]
            .as_str()
            .is_some_and(|f| f.ends_with("/assets/favicon.svg")),
        "{state}"
    );

    // ws-3 freezes, its connection open: no will, only the timeout can tell. Its tile
    // says so, and the fleet list puts it first.
    agents[2].send("STOP");
    let frozen = Instant::now();
    let state = wait_for(
        &c,
        "ws-3 offline, first in the fleet",
        Duration::from_secs(OFFLINE_AFTER_S + 15),
        |s| {
            let fleet = s["fleet"].as_array().cloned().unwrap_or_default();
            fleet
                .first()
                .is_some_and(|f| f["device"] == "ws-3" && f["state"] == "offline")
                && s["tiles"].as_array().is_some_and(|t| {
                    t.iter()
                        .any(|t| t["device"] == "ws-3" && t["state"] == "offline")
                })
        },
    )
    .await;
    eprintln!(
        "ws-3 went offline on the page {:?} after it froze (timeout {OFFLINE_AFTER_S} s)",
        frozen.elapsed()
    );
    let troubles: Vec<u64> = state["fleet"]
        .as_array()
        .map(|f| f.iter().filter_map(|d| d["trouble"].as_u64()).collect())
        .unwrap_or_default();
    assert!(
        troubles.windows(2).all(|w| w[0] >= w[1]),
        "the fleet list is in trouble order: {state}"
    );

    // Both screens: a desktop and a phone, with nothing wider than the phone.
    for (width, height, name) in [
        (1920, 1080, "dashboard-1920.png"),
        (390, 844, "dashboard-390.png"),
    ] {
        c.set_window_size(width, height).expect("resize");
        let state = wait_for(
            &c,
            "the page at the new size",
            Duration::from_secs(10),
            |s| {
                s["width"].as_u64().is_some_and(|w| w <= u64::from(width))
                    && s["tiles"]
                        .as_array()
                        .is_some_and(|t| t.len() == STATIONS.len())
            },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(
            state["overflow"].as_i64() <= Some(1),
            "at {width}x{height} the page is wider than the screen: {state}"
        );
        let shot = save_screenshot(&c, name);
        assert!(
            std::fs::metadata(&shot).is_ok_and(|m| m.len() > 10_000),
            "screenshot {}",
            shot.display()
        );
    }

    // Another store's sale, by hand, so that there is a store to keep from the shop.
    let sale = json!({"tx_id": "by-hand-1", "op": "stamp", "program": "coffee",
                      "card": "C-9999", "store": "S-other", "qty": 1});
    let (status, body) =
        ferry_tests::http::post_json(http, "/v1/transactions", TOKEN, &sale.to_string())
            .expect("a sale by hand");
    assert_eq!(status, 200, "{body}");
    c.set_window_size(1400, 1000).expect("resize");
    // A wall display: every dashboard panel, both stores, and nothing to change.
    sign_in_as(&c, VIEWER);
    wait_for(&c, "the viewer's page", Duration::from_secs(40), |s| {
        s["role"] == "viewer"
            && s["shown"].as_array().map(Vec::len) == Some(5)
            && s["fleet"].as_array().is_some_and(|f| f.len() == all.len())
            && s["stores"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r["store"] == "S-other"))
            && s["actions"] == 0
    })
    .await;
    save_screenshot(&c, "dashboard-viewer.png");
    // A shop: its own store's loyalty and sales, nothing else.
    sign_in_as(&c, STORE);
    let state = wait_for(&c, "the shop's page", Duration::from_secs(40), |s| {
        let rows: Vec<&str> = s["stores"]
            .as_array()
            .map(|r| r.iter().filter_map(|r| r["store"].as_str()).collect())
            .unwrap_or_default();
        s["role"] == "store" && rows.len() == 2 && rows.contains(&store.as_str())
    })
    .await;
    assert_eq!(state["shown"], json!(["loyalty", "traffic"]), "{state}");
    assert!(
        state["stores"]
            .as_array()
            .is_some_and(|r| r.iter().all(|r| r["store"] != "S-other")),
        "the shop sees its store and the total of its stores only: {state}"
    );
    assert_eq!(state["actions"], 0, "{state}");
    save_screenshot(&c, "dashboard-store.png");

    let _ = c.close();
    agents[2].send("CONT");
    for a in &mut agents {
        assert_eq!(a.terminate(), Some(0), "{}", a.log());
    }
    assert_eq!(cloud.terminate(), Some(0), "{}", cloud.log());
}

/// With `[http.oidc]`, the page offers to sign in through the provider: the browser goes
/// to its sign-in page and back with a code (authorization code with PKCE; the provider
/// checks the verifier), the page trades the code for the user's ID token through
/// ferry-cloud, and opens with the role of the user's group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_signs_in_through_the_provider() {
    use ferry_tests::oidc::{Provider, Signer};

    const AUDIENCE: &str = "ferry-dashboard-app";
    let _load = super::shared().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = Signer::es256("k-1");
    let provider = Provider::start(
        vec![signer.jwk.clone()],
        signer,
        AUDIENCE,
        json!(["viewer"]),
    );
    let sections = format!(
        "[http.oidc]\nissuer = \"{}\"\naudience = \"{AUDIENCE}\"\n\
         [dashboard]\ndatabase = \"sqlite://{}\"\n",
        provider.issuer,
        dir.path().join("hot.db").display()
    );
    let mut board = ferry_tests::loyalty::dashboard(
        &ferry_tests::bins::path("ferry-cloud"),
        dir.path(),
        &sections,
    );
    board.start();

    let (_driver, c) = open_browser(dir.path());
    c.goto(&format!("http://127.0.0.1:{}/", board.port))
        .expect("open the page");
    let offered = |c: &Session| {
        c.execute("return !document.querySelector('#sso').hidden && document.querySelector('#login').open;")
            .unwrap_or_default()
            == json!(true)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !offered(&c) {
        assert!(Instant::now() < deadline, "no sign-in offered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.find("#sso-go")
        .expect("sign-in button")
        .click()
        .expect("click");
    let state = wait_for(
        &c,
        "the signed-in user's page",
        Duration::from_secs(20),
        |s| s["role"] == "viewer" && s["login_open"] == false,
    )
    .await;
    let who = c
        .execute("return document.querySelector('#who').textContent;")
        .expect("who");
    assert!(
        who.as_str()
            .is_some_and(|w| w.contains("sam@example.com") && w.contains("viewer")),
        "{who} {state}"
    );
    let url = c.execute("return location.href;").expect("url");
    assert_eq!(
        url,
        json!(format!("http://127.0.0.1:{}/", board.port)),
        "the code left the address bar"
    );
    save_screenshot(&c, "dashboard-signed-in.png");
    let _ = c.close();
}
