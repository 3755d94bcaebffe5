//! The dashboard page in a real browser: Debian's headless Chromium, driven through
//! chromedriver (WebDriver, with fantoccini), against `ferry-cloud all` fed by real agents
//! over a real Mosquitto: three weather stations and a till.
//!
//! The page is opened as a user would: it asks for the token, which is typed in. Then:
//! every device is listed online; a chart has points; the threshold alarm appears; the
//! till's stamps show in its store's loyalty figures; and a station frozen with SIGSTOP
//! (its connection left open, so no will message) turns offline within the inactivity
//! timeout. A screenshot is saved as `target/artifacts/dashboard.png`, on failure too.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferry_tests::agent::{AgentProc, simulated};
use ferry_tests::broker::Mosquitto;
use ferry_tests::cloud::{TOKEN, start_all};
use ferry_tests::free_port;
use ferry_tests::loyalty::{put_program, register_till};
use ferry_tests::webdriver::Session;
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const STATIONS: [&str; 3] = ["ws-1", "ws-2", "ws-3"];
const TILL: &str = "pos-1";
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
    format!(
        "data_dir = \"{data}\"\n\
         [mqtt]\nurl = \"mqtt://127.0.0.1:{broker}\"\nclient_id = \"dashboard-ingest\"\n\
         [lake]\nroot = \"{lake}\"\nflush_interval_s = 1\n\
         [loyalty]\nurl = \"http://127.0.0.1:{http}\"\ntoken = \"{TOKEN}\"\ndatabase = \"sqlite://{ledger}\"\n\
         [http]\nlisten = \"127.0.0.1:{http}\"\ntoken = \"{TOKEN}\"\n\
         [dashboard]\ndatabase = \"sqlite://{hot}\"\noffline_after_s = {OFFLINE_AFTER_S}\nevents_interval_ms = 300\n\
         [[dashboard.alarms]]\nname = \"above_freezing\"\nmetric = \"temperature_c\"\nop = \">\"\nvalue = 0.0\nfor_s = 2\n",
        data = dir.join("cloud").display(),
        lake = dir.join("lake").display(),
        ledger = dir.join("ledger.db").display(),
        hot = dir.join("hot.db").display(),
    )
}

/// What the page shows, read from the DOM in one call.
fn page_state(c: &Session) -> Value {
    c.execute(
        "const q = (s) => [...document.querySelectorAll(s)];
         return {
           devices: Object.fromEntries(q('tr[data-device]').map(r => [r.dataset.device, r.dataset.state])),
           points: Number(document.querySelector('#chart').dataset.points || 0),
           chart: document.querySelector('#chart').dataset.device || null,
           canvas: q('#chart canvas').length,
           alarms: q('#alarms li[data-rule]').map(li => li.dataset.rule + '@' + li.dataset.device),
           stores: q('#loyalty table[data-store]').map(t => t.dataset.store),
           stamps_today: Number((document.querySelector('#loyalty table[data-store] tbody tr td:nth-child(2)') || {}).textContent || 0),
           feed: document.querySelector('#feed').dataset.state,
           login_open: document.querySelector('#login').open,
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
async fn the_dashboard_shows_devices_charts_alarms_and_a_device_going_offline() {
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

    let driver = Driver::start(dir.path());
    let profile = &driver.profile;
    let caps = json!({
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--disable-dev-shm-usage", "--disable-component-update", "--disable-sync",
                     "--no-first-run", "--window-size=1400,1100",
                     format!("--user-data-dir={}", profile.display())],
        }
    });
    let c = Session::new(driver.port, caps).expect("a Chromium session through chromedriver");

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

    let all = STATIONS.iter().chain([&TILL]).copied().collect::<Vec<_>>();
    wait_for(&c, "every device online", Duration::from_secs(60), |s| {
        s["login_open"] == false && all.iter().all(|d| s["devices"][*d] == "online")
    })
    .await;
    wait_for(&c, "a chart with points", Duration::from_secs(30), |s| {
        s["canvas"].as_u64() > Some(0) && s["points"].as_u64() >= Some(3)
    })
    .await;
    wait_for(&c, "the threshold alarm", Duration::from_secs(30), |s| {
        s["alarms"].as_array().is_some_and(|a| {
            a.iter().any(|r| {
                r.as_str()
                    .is_some_and(|r| r.starts_with("above_freezing@ws-"))
            })
        })
    })
    .await;
    // The chart keeps growing from the event feed, without a reload.
    let before = page_state(&c)["points"].as_u64().unwrap_or_default();
    wait_for(
        &c,
        "live points on the chart",
        Duration::from_secs(20),
        |s| s["feed"] == "live" && s["points"].as_u64() > Some(before),
    )
    .await;
    // The loyalty panel reloads every 30 s; the till's first stamps are in by then.
    wait_for(
        &c,
        "the till's store in the loyalty figures",
        Duration::from_secs(70),
        |s| {
            s["stores"].as_array().is_some_and(|a| !a.is_empty())
                && s["stamps_today"].as_u64() > Some(0)
        },
    )
    .await;

    // ws-3 freezes, its connection open: no will, only the timeout can tell.
    agents[2].send("STOP");
    let frozen = Instant::now();
    wait_for(
        &c,
        "ws-3 offline",
        Duration::from_secs(OFFLINE_AFTER_S + 10),
        |s| s["devices"]["ws-3"] == "offline" && s["devices"]["ws-1"] == "online",
    )
    .await;
    let took = frozen.elapsed();
    eprintln!(
        "ws-3 went offline on the page {took:?} after it froze (timeout {OFFLINE_AFTER_S} s)"
    );
    let shot = save_screenshot(&c, "dashboard.png");
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 10_000),
        "screenshot {}",
        shot.display()
    );

    let _ = c.close();
    agents[2].send("CONT");
    for a in &mut agents {
        assert_eq!(a.terminate(), Some(0), "{}", a.log());
    }
    assert_eq!(cloud.terminate(), Some(0), "{}", cloud.log());
}
