//! The agents `ferry-cloud dev` runs: real `ferry-agent` processes, found beside this
//! binary (`cargo build -p ferry-agent -p ferry-cloud` puts them together).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use tracing::{info, warn};

use super::DevOptions;

const STATIONS: usize = 3;
pub const TILLS: usize = 2;

/// Every simulated device: its name, and whether it is a till.
pub fn roster() -> Vec<(String, bool)> {
    (1..=STATIONS)
        .map(|i| (format!("ws-{i}"), false))
        .chain((1..=TILLS).map(|i| (format!("pos-{i}"), true)))
        .collect()
}

/// The store a simulated till stamps for: the simulator's `S-{device}`.
pub fn store_of(till: &str) -> String {
    format!("S-{till}")
}

pub struct Agents {
    children: Vec<(String, Child)>,
    pos_ports: Vec<(String, u16)>,
}

impl Agents {
    /// `token_file` holds the token the tills' POS APIs take: the configs name the file,
    /// so no copy of the token is written.
    pub fn start(data_dir: &Path, opts: &DevOptions, token_file: &Path) -> anyhow::Result<Self> {
        let token = token_file.display();
        let bin = binary()?;
        let mut agents = Self {
            children: Vec::new(),
            pos_ports: Vec::new(),
        };
        for (i, (name, till)) in roster().into_iter().enumerate() {
            let i = i + 1;
            let dir = data_dir.join("agents").join(&name);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let source = if till {
                let port = super::ports::pos_port(opts, i - STATIONS)?;
                agents.pos_ports.push((name.clone(), port));
                format!(
                    "[[sources]]\ntype = \"simulator\"\nprofile = \"pos\"\ninterval_ms = {ms}\ncount = {n}\n\
                     [pos_api]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"{token}\"\n",
                    n = opts.records,
                    ms = opts.interval_ms.unwrap_or(2000),
                )
            } else {
                format!(
                    "[[sources]]\ntype = \"simulator\"\nprofile = \"weather\"\ninterval_ms = {ms}\ncount = {n}\n",
                    n = opts.records,
                    ms = opts.interval_ms.unwrap_or(1000),
                )
            };
            let config = format!(
                "device_id = \"{name}\"\ndata_dir = \"{data}\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:{mqtt}\"\n{source}",
                data = dir.join("data").display(),
                mqtt = opts.mqtt_port,
            );
            let config_path = dir.join("agent.toml");
            std::fs::write(&config_path, config)
                .with_context(|| format!("writing {}", config_path.display()))?;
            let log = std::fs::File::create(dir.join("agent.log"))
                .with_context(|| format!("creating {}", dir.join("agent.log").display()))?;
            // `--exit-with-parent`: should `dev` die without stopping them (SIGKILL, a
            // crash), the agents stop too rather than run on unseen.
            let child = Command::new(&bin)
                .args(["run", "--exit-with-parent", "--config"])
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting {} for {name}", bin.display()))?;
            agents.children.push((name, child));
        }
        Ok(agents)
    }

    pub fn names(&self) -> Vec<String> {
        self.children.iter().map(|(n, _)| n.clone()).collect()
    }

    pub fn pos_ports(&self) -> &[(String, u16)] {
        &self.pos_ports
    }

    /// SIGTERM to each agent, and up to 10 s for them to finish their last commits.
    pub fn stop(&mut self) {
        for (name, child) in &self.children {
            let sent = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            if !sent.is_ok_and(|s| s.success()) {
                warn!(agent = %name, "could not send SIGTERM");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for (name, child) in &mut self.children {
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        info!(agent = %name, %status, "agent stopped");
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    _ => {
                        warn!(agent = %name, "agent did not stop in time; killing it");
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        self.children.clear();
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The `ferry-agent` binary beside this one.
pub fn binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("finding ferry-cloud's own path")?;
    let bin = me.with_file_name("ferry-agent");
    anyhow::ensure!(
        bin.exists(),
        "{} is missing: `ferry-cloud dev` runs the real agent from beside itself; build both \
         with `cargo build -p ferry-agent -p ferry-cloud`",
        bin.display()
    );
    Ok(bin)
}
