//! A real `ferry-agent` process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct AgentProc {
    bin: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// Sends a signal by name with kill(1); std offers only SIGKILL.
pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -{name} {} failed", child.id());
}

impl AgentProc {
    /// `config` is TOML text; it is written into `dir` with the agent's log beside it.
    pub fn new(bin: impl Into<PathBuf>, dir: &Path, config: &str) -> Self {
        let path = dir.join("agent.toml");
        std::fs::write(&path, config).expect("writing agent config");
        Self {
            bin: bin.into(),
            config: path,
            log: dir.join("agent.log"),
            child: None,
        }
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "agent already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("agent log");
        let child = Command::new(&self.bin)
            .args(["run", "--config"])
            .arg(&self.config)
            .env("FERRY_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning ferry-agent");
        self.child = Some(child);
    }

    /// SIGKILL: no chance to flush or say goodbye.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for a clean exit; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        signal(&child, "TERM");
        for _ in 0..200 {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        panic!(
            "agent did not exit within 10 s of SIGTERM; log:\n{}",
            self.log()
        );
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// `ferry-agent status`, parsed. Waits up to 10 s for a just-started agent to create
    /// its spool.
    pub fn status(&self) -> serde_json::Value {
        let mut tries = 0;
        let out = loop {
            let out = Command::new(&self.bin)
                .args(["status", "--config"])
                .arg(&self.config)
                .output()
                .expect("running ferry-agent status");
            let stderr = String::from_utf8_lossy(&out.stderr);
            let starting = stderr.contains("no spool at") || stderr.contains("being created");
            if !starting || tries == 100 {
                break out;
            }
            tries += 1;
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(
            out.status.success(),
            "ferry-agent status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status prints one JSON object")
    }

    pub fn status_u64(&self, field: &str) -> u64 {
        self.status()[field]
            .as_u64()
            .unwrap_or_else(|| panic!("status has no integer {field}"))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.kill9();
    }
}
