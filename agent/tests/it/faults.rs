//! Storage faults under the POS API, answered truthfully and losing nothing:
//!
//! - a full disk (a small tmpfs under the data folder) answers `507 disk_full`, logs the
//!   failures once per window, and every transaction answered 202 is in the spool;
//! - failed fsyncs (injected with strace: `fsync`/`fdatasync` fail with EIO) answer
//!   `503 storage_error`; retried with the same idempotency key after a restart, each key
//!   ends in the spool exactly once, whether its first try was stored or not.
//!
//! Both need root (to mount, and to trace); they fail with what is missing otherwise.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ferry_tests::agent::AgentProc;
use ferry_tests::free_port;
use ferry_tests::http::post_json;
use serde_json::{Value, json};

use crate::{BIN, agent};

const TOKEN: &str = "faults-test-token-0123";

/// A tmpfs of `size` mounted at `dir`, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("running mount");
        assert!(
            status.success(),
            "cannot mount a tmpfs at {} (the full-disk test needs root)",
            dir.display()
        );
        Self(dir.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn stamp(key: &str) -> String {
    json!({"op": "stamp", "program": "coffee", "card": "C-1", "store": "S-01", "qty": 1,
           "receipt": "R".repeat(200), "idempotency_key": key})
    .to_string()
}

fn post(port: u16, body: &str) -> (u16, Value) {
    match post_json(port, "/v1/transactions", TOKEN, body) {
        Ok((status, text)) => (status, serde_json::from_str(&text).unwrap_or(Value::Null)),
        Err(e) => panic!("no answer: {e}"),
    }
}

async fn wait_listening(port: u16, agent: &mut AgentProc) {
    ferry_tests::wait_until(Duration::from_secs(20), "the POS API", || {
        assert!(agent.is_running(), "the agent exited:\n{}", agent.log());
        post_json(port, "/healthz", "", "").is_ok()
    })
    .await;
}

fn pos_config(port: u16) -> String {
    // Far above the disk: the disk fills first. No broker: everything stays in the spool.
    format!(
        "[spool]\nmax_bytes = 1073741824\n[pos_api]\nlisten = \"127.0.0.1:{port}\"\ntoken = \"{TOKEN}\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_507_and_loses_nothing_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _fs = Tmpfs::mount(&dir.path().join("data"), "3m");
    let port = free_port();
    let url = format!("mqtt://127.0.0.1:{}", free_port());
    let mut agent = agent(dir.path(), "pos-full", &url, "", &pos_config(port));
    agent.start();
    wait_listening(port, &mut agent).await;

    let mut accepted = 0u64;
    let mut disk_full = 0;
    for i in 0..20_000 {
        let (status, answer) = post(port, &stamp(&format!("k-{i}")));
        match status {
            202 => accepted += 1,
            507 => {
                assert_eq!(answer["error"]["code"], "disk_full", "{answer}");
                disk_full += 1;
                if disk_full == 20 {
                    break;
                }
            }
            other => panic!("request {i}: {other} {answer}"),
        }
    }
    assert_eq!(disk_full, 20, "the disk never filled ({accepted} accepted)");
    assert!(agent.is_running(), "{}", agent.log());
    let errors = agent.log().lines().filter(|l| l.contains("ERROR")).count();
    assert!(
        errors <= 2,
        "storage failures are logged once per window:\n{}",
        agent.log()
    );
    assert_eq!(
        agent.status_u64("pending_transactions"),
        accepted,
        "every 202 is in the spool, and nothing else"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_answers_503_and_a_retry_with_the_key_stores_it_once() {
    assert!(
        Path::new("/usr/bin/strace").exists(),
        "strace is missing: `cargo xtask test` installs it (apt-get install -y strace)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let url = format!("mqtt://127.0.0.1:{}", free_port());
    let config = format!(
        "device_id = \"pos-fsync\"\ndata_dir = \"{}\"\n[mqtt]\nurl = \"{url}\"\n{}",
        dir.path().join("data").display(),
        pos_config(port)
    );
    let config_path = dir.path().join("agent.toml");
    std::fs::write(&config_path, &config).expect("config");
    // Under strace, every fsync and fdatasync from the 40th on fails with EIO.
    let mut traced = Command::new("strace")
        .args(["-f", "-o", "/dev/null", "-e", "trace=fsync,fdatasync"])
        .args(["-e", "inject=fsync,fdatasync:error=EIO:when=40+"])
        .arg(BIN)
        .args(["run", "--config"])
        .arg(&config_path)
        .stderr(std::fs::File::create(dir.path().join("traced.log")).expect("log"))
        .spawn()
        .expect("strace");
    ferry_tests::wait_until(Duration::from_secs(20), "the traced POS API", || {
        post_json(port, "/healthz", "", "").is_ok()
    })
    .await;
    let mut first: BTreeMap<String, u16> = BTreeMap::new();
    for i in 0..60 {
        let key = format!("k-{i}");
        let (status, answer) = post(port, &stamp(&key));
        assert!(
            matches!(status, 202 | 503),
            "request {i}: {status} {answer}"
        );
        if status == 503 {
            assert_eq!(answer["error"]["code"], "storage_error", "{answer}");
        }
        first.insert(key, status);
    }
    assert!(
        first.values().any(|s| *s == 503),
        "no fsync failed: {first:?}"
    );
    // Killing strace would leave its tracee running, detached: kill the agent first.
    let _ = Command::new("pkill")
        .args(["-KILL", "-f"])
        .arg(format!("run --config {}", config_path.display()))
        .status();
    let _ = traced.kill();
    let _ = traced.wait();
    ferry_tests::wait_until(Duration::from_secs(10), "the traced agent gone", || {
        post_json(port, "/healthz", "", "").is_err()
    })
    .await;

    // The storage is sound again: every key retried, as the README tells integrators.
    let mut agent = AgentProc::new(BIN, dir.path(), &config);
    agent.start();
    wait_listening(port, &mut agent).await;
    for (key, status) in &first {
        let (again, answer) = post(port, &stamp(key));
        match status {
            202 => assert_eq!(again, 200, "{key} was accepted: its replay: {answer}"),
            _ => assert!(matches!(again, 200 | 202), "{key}: {again} {answer}"),
        }
    }
    assert_eq!(
        agent.status_u64("pending_transactions"),
        first.len() as u64,
        "each key exactly once in the spool"
    );
}
