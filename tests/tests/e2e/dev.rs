//! `ferry-cloud dev` as a new user meets it: what its banner prints works as printed and
//! within the time it says; a second `dev` on the same ports fails at once and leaves
//! nothing behind; Ctrl-C leaves every record the agents delivered in the lake; its data
//! is private and its agents do not outlive it.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ferry_tests::http::request;
use ferry_tests::lake;
use ferry_tests::process::signal;
use ferry_tests::{bins, free_port};
use serde_json::Value;

const DEVICES: [&str; 5] = ["ws-1", "ws-2", "ws-3", "pos-1", "pos-2"];

/// A running `ferry-cloud dev` on free ports.
pub struct Dev {
    pub child: StopOnDrop,
    pub http: u16,
    pub mqtt: u16,
    pub data: PathBuf,
    /// What it prints on stdout (the banner).
    pub stdout: PathBuf,
    pub log: PathBuf,
}

impl Dev {
    /// `dev` with its data in `data`, its log in `log`, and `args` after the ports.
    pub fn start(data: &Path, log: &Path, args: &[&str]) -> Self {
        // dev's tills take the two ports after the API's: find a run of three that is free.
        let http = loop {
            let port = free_port();
            let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
            if port < u16::MAX - 2 && free(port + 1) && free(port + 2) {
                break port;
            }
        };
        Self::start_on(data, log, free_port(), http, args)
    }

    pub fn start_on(data: &Path, log: &Path, mqtt: u16, http: u16, args: &[&str]) -> Self {
        let stdout = log.with_extension("out");
        let child = Command::new(bins::path("ferry-cloud"))
            .args(["dev", "--data-dir"])
            .arg(data)
            .args(["--mqtt-port", &mqtt.to_string()])
            .args(["--http-port", &http.to_string()])
            .args(args)
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(log).expect("log"))
            .spawn()
            .expect("starting ferry-cloud dev");
        Self {
            child: StopOnDrop(child),
            http,
            mqtt,
            data: data.to_owned(),
            stdout,
            log: log.to_owned(),
        }
    }

    /// The banner, once printed, and when it was seen.
    async fn banner(&mut self) -> (String, Instant) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = std::fs::read_to_string(&self.stdout).unwrap_or_default();
            if out.contains("Query the lake") && out.ends_with("\n\n") {
                return (out, Instant::now());
            }
            if let Ok(Some(status)) = self.child.0.try_wait() {
                panic!(
                    "dev exited with {status} before its banner; {}",
                    self.logs()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no banner in 60 s; {}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for a clean exit after Ctrl-C.
    async fn interrupt(&mut self) {
        signal(&self.child.0, "INT");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.0.try_wait().expect("wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "dev did not stop; {}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(
            status.success(),
            "dev exited with {status}; {}",
            self.logs()
        );
    }

    fn token(&self) -> String {
        std::fs::read_to_string(self.data.join("token"))
            .expect("dev's token")
            .trim()
            .to_owned()
    }

    pub fn logs(&self) -> String {
        let mut all = std::fs::read_to_string(&self.log).unwrap_or_default();
        for agent in DEVICES {
            let path = self.data.join("agents").join(agent).join("agent.log");
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            all.push_str(&format!(
                "\n--- {agent}\n{}",
                lines[lines.len().saturating_sub(20)..].join("\n")
            ));
        }
        all
    }
}

/// A `curl` line of the banner: its port, path and token (empty when it sends none).
fn curls(banner: &str) -> Vec<(u16, String, String)> {
    banner
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("curl "))
        .map(|line| {
            let token = line
                .split("Bearer ")
                .nth(1)
                .and_then(|rest| rest.split('\'').next())
                .unwrap_or_default()
                .to_owned();
            let url = line
                .split_whitespace()
                .find(|w| w.starts_with("http://"))
                .unwrap_or_else(|| panic!("no URL in {line:?}"));
            let rest = url.trim_start_matches("http://127.0.0.1:");
            let (port, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            (
                port.parse().unwrap_or_else(|_| panic!("port in {url}")),
                path.to_owned(),
                token,
            )
        })
        .collect()
}

/// "within N s" in `line`.
fn promised(line: &str) -> Duration {
    let n = line
        .split("within ")
        .nth(1)
        .and_then(|rest| rest.split(" s").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no promise in {line:?}"));
    Duration::from_secs(n)
}

/// Slack on top of a printed promise: the suite shares two cores with other tests, so a
/// miss by seconds would say more about the machine than about `dev`.
const SLACK: Duration = Duration::from_secs(10);

/// Every curl, URL and query the banner prints answers as it promises, from a `dev`
/// started as the README starts it (default rates, no record limit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_url_and_query_the_banner_prints_works_as_printed() {
    let _load = super::alone().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut dev = Dev::start(&dir.path().join("dev"), &dir.path().join("dev.log"), &[]);
    let (banner, printed) = dev.banner().await;
    let token = dev.token();
    assert!(
        banner.contains(&format!("token: {token}")),
        "the banner gives the token: {banner}"
    );
    let try_line = banner
        .lines()
        .find(|l| l.starts_with("Try these"))
        .expect("a Try line");

    // The dashboard page, as printed.
    let page = banner
        .lines()
        .find(|l| l.starts_with("Dashboard"))
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("a dashboard URL")
        .to_owned();
    let port: u16 = page
        .trim_start_matches("http://127.0.0.1:")
        .trim_end_matches('/')
        .parse()
        .expect("the dashboard's port");
    let (status, body) = request(port, "GET", "/", "", "").expect("the page");
    assert_eq!(status, 200, "{page}: {body}");
    assert!(body.contains("<title>Ferry</title>"), "{body}");

    // Every curl answers 200 within what the Try line promises; the card's answers have
    // balances.
    let calls = curls(&banner);
    assert!(calls.len() >= 6, "the banner's curls: {calls:?}\n{banner}");
    let deadline = printed + promised(try_line) + SLACK;
    for (port, path, token) in &calls {
        loop {
            let answer = request(*port, "GET", path, token, "");
            let ok = match &answer {
                Ok((200, body)) if path.starts_with("/v1/cards/") => {
                    serde_json::from_str::<Value>(body)
                        .is_ok_and(|v| v["balances"].as_array().is_some_and(|b| !b.is_empty()))
                }
                Ok((200, body)) => !body.is_empty(),
                _ => false,
            };
            if ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "curl of :{port}{path} answered {answer:?}, {:?} after the banner promised \
                 it; {}",
                printed.elapsed(),
                dev.logs()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    // Each query ("Query ... within N s", then the command), run by a shell exactly as
    // printed, until it names every station.
    let lines: Vec<&str> = banner.lines().map(str::trim).collect();
    let queries: Vec<(&str, &str)> = lines
        .windows(2)
        .filter(|pair| pair[0].starts_with("Query ") && pair[1].starts_with("python3 -c"))
        .map(|pair| (pair[0], pair[1]))
        .collect();
    assert_eq!(queries.len(), 2, "the raw and curated queries: {banner}");
    for (promise, query) in queries {
        let deadline = printed + promised(promise) + SLACK;
        loop {
            let out = Command::new("sh")
                .args(["-c", query])
                .output()
                .expect("running sh");
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                !stderr.contains("No module named"),
                "the banner's query needs its Python package ({stderr}); \
                 `cargo xtask test` installs duckdb and deltalake"
            );
            if out.status.success() && ["ws-1", "ws-2", "ws-3"].iter().all(|d| stdout.contains(d)) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{promise}: the query gave {stdout}{stderr} {:?} after the banner; {}",
                printed.elapsed(),
                dev.logs()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    dev.interrupt().await;
}

/// A second `dev` on a port the first holds fails at once, names the port and the flag,
/// makes no data folder, and leaves the first one's devices alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_dev_on_a_taken_port_fails_at_once_and_leaves_nothing() {
    let _load = super::shared().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut first = Dev::start(
        &dir.path().join("first"),
        &dir.path().join("first.log"),
        &[],
    );
    first.banner().await;
    let other_http = loop {
        let port = free_port();
        if port < u16::MAX - 2 && ![first.http, first.http + 1, first.http + 2].contains(&port) {
            break port;
        }
    };
    let held = [first.mqtt, first.http, first.http + 1, first.http + 2];
    for (name, mqtt, http) in [
        ("mqtt", first.mqtt, other_http),
        ("http", free_port(), first.http),
        ("pos", free_port(), first.http - 1),
    ] {
        // The first of the second one's ports that the first one holds, and its flag.
        let port = [mqtt, http, http + 1, http + 2]
            .into_iter()
            .find(|p| held.contains(p))
            .expect("a clash");
        let flag = if port == mqtt {
            "--mqtt-port"
        } else {
            "--http-port"
        };
        let data = dir.path().join(format!("second-{name}"));
        let log = dir.path().join(format!("second-{name}.log"));
        let mut second = Dev::start_on(&data, &log, mqtt, http, &[]);
        let started = Instant::now();
        let status = loop {
            if let Some(status) = second.child.0.try_wait().expect("wait") {
                break status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "a dev on a taken port ({name}) is still running; {}",
                second.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let err = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(!status.success(), "{name}: {err}");
        assert!(
            err.contains(&format!("port {port}")) && err.contains(flag),
            "{name}: the error names port {port} and {flag}: {err}"
        );
        assert!(
            !data.exists(),
            "{name}: a failed start made {}",
            data.display()
        );
    }
    // The first one never saw a rival: its devices are all online.
    let token = first.token();
    let (status, body) = request(first.http, "GET", "/v1/devices", &token, "").expect("devices");
    assert_eq!(status, 200, "{body}");
    let devices: Value = serde_json::from_str(&body).expect("json");
    for d in devices["devices"].as_array().into_iter().flatten() {
        assert_ne!(d["state"], "offline", "{body}");
    }
    assert!(
        !first.logs().contains("ERROR"),
        "the first dev logged errors: {}",
        first.logs()
    );
    first.interrupt().await;
}

/// Ctrl-C in the middle of the flow: afterwards every record is either in the lake, once,
/// or still in its agent's spool; none is in between (delivered to the broker, and held
/// back in the ingest's journal). And the stop logs no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_leaves_every_delivered_record_in_the_lake() {
    let _load = super::shared().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("dev");
    let mut dev = Dev::start(
        &data,
        &dir.path().join("dev.log"),
        &["--records", "200", "--interval-ms", "30"],
    );
    dev.banner().await;
    // Records are flowing: stop in the middle, well before the lake's 5 s flush is due.
    tokio::time::sleep(Duration::from_secs(3)).await;
    dev.interrupt().await;
    let log = std::fs::read_to_string(&dev.log).unwrap_or_default();
    assert!(!log.contains("ERROR"), "a clean stop logs no error: {log}");

    let mut lake: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (device, _, seq) in lake::record_ids(&lake::read(&data.join("lake"))) {
        lake.entry(device).or_default().push(seq);
    }
    let mut in_lake = 0;
    for device in DEVICES {
        let config = data.join("agents").join(device).join("agent.toml");
        let out = Command::new(bins::path("ferry-agent"))
            .args(["status", "--config"])
            .arg(&config)
            .stderr(Stdio::inherit())
            .output()
            .expect("ferry-agent status");
        let status: Value = serde_json::from_slice(&out.stdout).expect("status json");
        let last_seq = status["last_seq"].as_u64().expect("last_seq");
        let pending = status["pending"].as_u64().expect("pending");
        assert_eq!(status["evicted_total"], 0, "{status}");
        let seqs = lake.remove(device).unwrap_or_default();
        let distinct: BTreeSet<u64> = seqs.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            seqs.len(),
            "{device}: a record twice in the lake"
        );
        assert!(
            distinct.iter().all(|s| (1..=last_seq).contains(s)),
            "{device}: seqs beyond {last_seq}"
        );
        assert_eq!(
            distinct.len() as u64 + pending,
            last_seq,
            "{device}: {} in the lake and {pending} in the spool of {last_seq} made; the rest \
             was delivered and is not in the lake; {}",
            distinct.len(),
            dev.logs()
        );
        in_lake += distinct.len();
    }
    assert!(lake.is_empty(), "records of unknown devices: {lake:?}");
    assert!(
        in_lake > 0,
        "nothing reached the lake in 3 s; {}",
        dev.logs()
    );
}

/// The pids of processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            String::from_utf8_lossy(&cmdline)
                .contains(needle)
                .then_some(pid)
        })
        .collect()
}

/// `dev` keeps its data private, and its agents do not outlive it, however it dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_is_private_and_its_agents_die_with_it() {
    let _load = super::shared().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("dev");
    let mut dev = Dev::start(&data, &dir.path().join("dev.log"), &["--interval-ms", "20"]);
    let agents = data.join("agents").display().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    while processes_mentioning(&agents).len() < DEVICES.len() {
        assert!(Instant::now() < deadline, "dev's agents did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "the data folder is its owner's only");
    assert_eq!(mode(&data.join("token")), 0o600, "the token file too");
    for till in ["pos-1", "pos-2"] {
        let config = std::fs::read_to_string(data.join("agents").join(till).join("agent.toml"))
            .expect("agent config");
        assert!(
            config.contains("token_file"),
            "no copy of the token: {config}"
        );
    }

    dev.child.0.kill().expect("SIGKILL dev");
    let _ = dev.child.0.wait();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_mentioning(&agents);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "agents {left:?} outlived a SIGKILLed dev by 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `ferry-cloud dev`, stopped with SIGINT (so that it stops its agents too) if a failed
/// assertion leaves it running, and killed if that does not do.
pub struct StopOnDrop(pub std::process::Child);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if !matches!(self.0.try_wait(), Ok(None)) {
            return;
        }
        signal(&self.0, "INT");
        for _ in 0..200 {
            if !matches!(self.0.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
