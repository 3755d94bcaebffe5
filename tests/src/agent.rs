//! A real `ferry-agent` process.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::Proc;
pub use crate::process::signal;

pub struct AgentProc {
    bin: PathBuf,
    config: PathBuf,
    proc: Proc,
}

/// A `ferry-agent` with one simulator source (`profile` `weather` or `pos`) publishing to
/// the broker on `broker_port`, in `dir/{device}`; not yet started.
pub fn simulated(
    dir: &Path,
    device: &str,
    profile: &str,
    broker_port: u16,
    interval_ms: u64,
    count: u64,
) -> AgentProc {
    let agent_dir = dir.join(device);
    std::fs::create_dir_all(&agent_dir).expect("agent dir");
    let config = format!(
        "device_id = \"{device}\"\ndata_dir = \"{}\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:{broker_port}\"\n\
         [[sources]]\ntype = \"simulator\"\nprofile = \"{profile}\"\ninterval_ms = {interval_ms}\ncount = {count}\n",
        agent_dir.join("data").display(),
    );
    AgentProc::new(crate::bins::path("ferry-agent"), &agent_dir, &config)
}

impl AgentProc {
    /// `config` is TOML text; it is written into `dir` with the agent's log beside it.
    pub fn new(bin: impl Into<PathBuf>, dir: &Path, config: &str) -> Self {
        let bin = bin.into();
        let path = dir.join("agent.toml");
        std::fs::write(&path, config).expect("writing agent config");
        let config_arg = path.to_string_lossy().into_owned();
        Self {
            proc: Proc::new(
                &bin,
                &["run", "--config", &config_arg],
                dir.join("agent.log"),
            ),
            bin,
            config: path,
        }
    }

    /// The same, run by `prefix` (e.g. `ip netns exec NS`, [`crate::netns::Link`]); `status`
    /// still runs here, as it only reads the data folder.
    pub fn wrapped(prefix: &[String], bin: impl Into<PathBuf>, dir: &Path, config: &str) -> Self {
        let mut agent = Self::new(bin, dir, config);
        let config = agent.config.display().to_string();
        agent.proc = Proc::wrapped(
            prefix,
            &agent.bin,
            &["run", "--config", &config],
            dir.join("agent.log"),
        );
        agent
    }

    pub fn start(&mut self) {
        self.proc.start();
    }

    /// An environment variable for the next start; an empty value removes it.
    pub fn env(&mut self, key: &str, value: &str) -> &mut Self {
        self.proc.env(key, value);
        self
    }

    /// SIGKILL: no chance to flush or say goodbye.
    pub fn kill9(&mut self) {
        self.proc.kill9();
    }

    /// SIGTERM, then waits for a clean exit; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        self.proc.terminate()
    }

    /// Sends a signal by name: `STOP` freezes the agent with its connection open, as a hung
    /// device would, so only an inactivity timeout can tell.
    pub fn send(&self, name: &str) {
        self.proc.send(name);
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
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
        self.proc.log()
    }
}
