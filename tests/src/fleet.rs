//! For the fleet tests (remote configuration, updates): a client that watches and
//! publishes retained fleet topics, an HTTP server for artifacts, a supervisor that starts
//! the agent the way the packaged unit does, and a second build of the agent to update to.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};

/// The last message seen on each topic of some filters, and a way to publish retained ones.
pub struct Watcher {
    client: AsyncClient,
    seen: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Watcher {
    /// Subscribes to `filters` on the broker at `port` and waits for the subscription.
    pub async fn start(port: u16, filters: &[&str]) -> Self {
        let mut opts =
            MqttOptions::new(format!("watcher-{}", crate::free_port()), "127.0.0.1", port);
        opts.set_keep_alive(Duration::from_secs(30));
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
        let filters: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        let task_seen = seen.clone();
        let task_client = client.clone();
        let task = tokio::spawn(async move {
            let mut subscribed_tx = Some(subscribed_tx);
            let mut acks = 0;
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                        for f in &filters {
                            let _ = task_client.try_subscribe(f, QoS::AtLeastOnce);
                        }
                    }
                    Ok(Event::Incoming(Incoming::SubAck(_))) => {
                        acks += 1;
                        if acks == filters.len()
                            && let Some(tx) = subscribed_tx.take()
                        {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        task_seen
                            .lock()
                            .expect("watcher lock")
                            .insert(p.topic.clone(), p.payload.to_vec());
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), subscribed)
            .await
            .expect("watcher subscribed within 10 s")
            .expect("watcher task alive");
        Self { client, seen, task }
    }

    /// The last message on `topic`, as JSON.
    pub fn last(&self, topic: &str) -> Option<serde_json::Value> {
        let seen = self.seen.lock().expect("watcher lock");
        seen.get(topic).and_then(|p| serde_json::from_slice(p).ok())
    }

    pub async fn publish_retained(&self, topic: &str, payload: &serde_json::Value) {
        self.client
            .publish(
                topic,
                QoS::AtLeastOnce,
                true,
                serde_json::to_vec(payload).expect("json"),
            )
            .await
            .expect("publish queued");
    }

    /// Waits up to `timeout` for `topic`'s last message to satisfy `check`; returns it.
    pub async fn wait_for(
        &self,
        topic: &str,
        timeout: Duration,
        what: &str,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(v) = self.last(topic).filter(|v| check(v)) {
                return v;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what} on {topic}; last: {:?}",
                self.last(topic)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How the artifact server sends a file.
#[derive(Debug, Clone, Copy)]
pub enum Serve {
    Whole,
    /// Only the first n bytes, as if that were the whole file.
    Truncated(usize),
    /// 16 KiB at a time with this pause between, so a download takes a while.
    Throttled(Duration),
}

/// A plain HTTP/1.1 server on 127.0.0.1 that serves named files, with `Range: bytes=N-`.
pub struct ArtifactServer {
    port: u16,
    files: Arc<Files>,
    /// `GET /name from N` per request, for the tests to see resumption.
    requests: Arc<Mutex<Vec<String>>>,
}

impl ArtifactServer {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the artifact server");
        let port = listener.local_addr().expect("address").port();
        let files: Arc<Files> = Arc::default();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let (f, r) = (files.clone(), requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (f, r) = (f.clone(), r.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, &f, &r);
                });
            }
        });
        Self {
            port,
            files,
            requests,
        }
    }

    pub fn put(&self, name: &str, bytes: Vec<u8>, how: Serve) {
        self.files
            .lock()
            .expect("files")
            .insert(name.to_owned(), (Arc::new(bytes), how));
    }

    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port)
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("requests").clone()
    }
}

/// Each file's bytes and how to send them.
type Files = Mutex<HashMap<String, (Arc<Vec<u8>>, Serve)>>;

fn serve(stream: TcpStream, files: &Files, requests: &Mutex<Vec<String>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let mut from = 0usize;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" {
            break;
        }
        let lower = header.to_ascii_lowercase();
        if let Some(range) = lower.strip_prefix("range: bytes=") {
            from = range.trim().trim_end_matches('-').parse().unwrap_or(0);
        }
    }
    let name = path.trim_start_matches('/');
    requests
        .lock()
        .expect("requests")
        .push(format!("GET /{name} from {from}"));
    let found = files.lock().expect("files").get(name).cloned();
    let mut out = stream;
    let Some((bytes, how)) = found else {
        return out.write_all(
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        );
    };
    let len = match how {
        Serve::Truncated(n) => n.min(bytes.len()),
        _ => bytes.len(),
    };
    if from >= len && from > 0 {
        return out.write_all(
            format!("HTTP/1.1 416 Range Not Satisfiable\r\ncontent-range: bytes */{len}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .as_bytes(),
        );
    }
    let head = if from > 0 {
        format!(
            "HTTP/1.1 206 Partial Content\r\ncontent-range: bytes {from}-{}/{len}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            len - 1,
            len - from
        )
    } else {
        format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n")
    };
    out.write_all(head.as_bytes())?;
    match how {
        Serve::Throttled(pause) => {
            for chunk in bytes[from..len].chunks(16 * 1024) {
                out.write_all(chunk)?;
                std::thread::sleep(pause);
            }
        }
        _ => out.write_all(&bytes[from..len])?,
    }
    out.flush()
}

/// Runs the agent as `ferry-agent.service` does: `ferry-update-guard` before every start,
/// and a restart whenever the agent exits, whatever its exit code.
pub struct Supervisor {
    stop: Arc<AtomicBool>,
    child: Arc<Mutex<Option<Child>>>,
    starts: Arc<AtomicU32>,
    thread: Option<std::thread::JoinHandle<()>>,
    log: PathBuf,
}

/// The guard script the package installs.
pub fn guard_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/systemd/ferry-update-guard")
        .canonicalize()
        .expect("deploy/systemd/ferry-update-guard")
}

impl Supervisor {
    /// `binary` runs with `run --config config`; `state_dir` is the agent's `data_dir`.
    pub fn start(
        binary: &Path,
        config: &Path,
        state_dir: &Path,
        env: &[(&str, &str)],
        log: &Path,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let child: Arc<Mutex<Option<Child>>> = Arc::default();
        let starts = Arc::new(AtomicU32::new(0));
        let (binary, config, state_dir, log_path) = (
            binary.to_owned(),
            config.to_owned(),
            state_dir.to_owned(),
            log.to_owned(),
        );
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let thread = std::thread::spawn({
            let (stop, child, starts) = (stop.clone(), child.clone(), starts.clone());
            move || {
                let log = || {
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&log_path)
                        .expect("supervisor log")
                };
                while !stop.load(Ordering::SeqCst) {
                    let guard = Command::new("sh")
                        .arg(guard_script())
                        .arg(&state_dir)
                        .arg(&binary)
                        .stdout(log())
                        .stderr(log())
                        .status()
                        .expect("running sh");
                    if !guard.success() {
                        let _ = writeln!(log(), "supervisor: the guard failed: {guard}");
                        std::thread::sleep(Duration::from_millis(300));
                        continue;
                    }
                    let spawned = Command::new(&binary)
                        .args(["run", "--config"])
                        .arg(&config)
                        .envs(env.iter().map(|(k, v)| (k, v)))
                        .stdout(Stdio::null())
                        .stderr(log())
                        .spawn();
                    let Ok(spawned) = spawned else {
                        let _ = writeln!(log(), "supervisor: cannot start {}", binary.display());
                        std::thread::sleep(Duration::from_millis(300));
                        continue;
                    };
                    starts.fetch_add(1, Ordering::SeqCst);
                    *child.lock().expect("child") = Some(spawned);
                    let status = loop {
                        let mut slot = child.lock().expect("child");
                        let Some(c) = slot.as_mut() else { break None };
                        if let Ok(Some(status)) = c.try_wait() {
                            *slot = None;
                            break Some(status);
                        }
                        drop(slot);
                        std::thread::sleep(Duration::from_millis(50));
                    };
                    let _ = writeln!(log(), "supervisor: the agent exited: {status:?}");
                    // The unit's RestartSec, shortened.
                    std::thread::sleep(Duration::from_millis(300));
                }
            }
        });
        Self {
            stop,
            child,
            starts,
            thread: Some(thread),
            log: log.to_owned(),
        }
    }

    /// SIGKILL to the running agent, if one runs; the supervisor starts it again.
    pub fn kill9(&self) {
        if let Some(c) = self.child.lock().expect("child").as_mut() {
            let _ = c.kill();
        }
    }

    pub fn starts(&self) -> u32 {
        self.starts.load(Ordering::SeqCst)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM to the agent, and no more restarts; SIGKILL if it has not stopped in 20 s.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(c) = self.child.lock().expect("child").as_ref() {
            crate::process::signal(c, "TERM");
        }
        let Some(thread) = self.thread.take() else {
            return;
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !thread.is_finished() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if !thread.is_finished() {
            self.kill9();
        }
        let _ = thread.join();
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(c) = self.child.lock().expect("child").as_mut() {
            let _ = c.kill();
        }
    }
}

/// The version the second build reports.
pub const VARIANT_VERSION: &str = "9.9.9-update-test";

/// A second build of `ferry-agent`, version [`VARIANT_VERSION`], that obeys `AGENT_TEST_FAULT`
/// (`exit`, `no-connect`): what the update tests install. Built once into its own target
/// folder beside the test's (a file lock keeps parallel test binaries to one build), so the
/// tests' own binaries are never rebuilt under them.
pub fn variant_agent() -> PathBuf {
    let stock = crate::bins::path("ferry-agent");
    let profile_dir = stock.parent().expect("target/{profile}");
    let target = profile_dir.parent().expect("target").join("update-variant");
    std::fs::create_dir_all(&target).expect("variant target dir");
    let lock = std::fs::File::create(target.join(".lock")).expect("variant lock file");
    lock.lock().expect("locking the variant build");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    let out = Command::new(cargo)
        .current_dir(root)
        .args([
            "build",
            "--quiet",
            "-p",
            "ferry-agent",
            "--bin",
            "ferry-agent",
        ])
        .env("CARGO_TARGET_DIR", &target)
        .env("FERRY_VERSION", VARIANT_VERSION)
        .env("FERRY_TEST_FAULTS", "1")
        .output()
        .expect("running cargo build for the update variant");
    assert!(
        out.status.success(),
        "building the update variant failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = target.join("debug/ferry-agent");
    let said = Command::new(&bin)
        .arg("--version")
        .output()
        .expect("the variant runs");
    let version = String::from_utf8_lossy(&said.stdout);
    assert!(
        version.contains(VARIANT_VERSION),
        "the variant says {version:?}"
    );
    bin
}

/// The manifest of `bytes` as `version` for this machine, as `ferry-cloud sign artifact`
/// makes it: replacing any version, expiring in a day. Tests change fields from here.
pub fn manifest(bytes: &[u8], version: &str) -> ferry_shared::fleet::Manifest {
    ferry_shared::fleet::Manifest {
        version: version.into(),
        arch: ferry_shared::fleet::this_arch().into(),
        sha256: ferry_shared::signing::Sha256::hex_of(bytes),
        size: bytes.len() as u64,
        min_version: "0.0.0".into(),
        rollback_to: false,
        expires: ferry_shared::Timestamp::from_unix_millis(
            ferry_shared::Timestamp::now().unix_millis() + 86_400_000,
        )
        .expect("a day from now"),
    }
}

/// An `artifacts` entry: `manifest` signed with `key`, served from `url`.
pub fn signed_artifact(
    key: &ferry_shared::signing::SigningKey,
    url: &str,
    manifest: &ferry_shared::fleet::Manifest,
) -> serde_json::Value {
    let text = manifest.to_text();
    serde_json::json!({"url": url, "signature": key.sign(text.as_bytes()), "manifest": text})
}
