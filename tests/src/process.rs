//! A long-running Ferry process under test: started with its log in a file, then killed
//! with SIGKILL (no chance to flush) or stopped with SIGTERM (a clean shutdown).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Proc {
    bin: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

/// The CPU time a process has used so far (user + system), in seconds, from /proc.
pub fn cpu_seconds(pid: u32) -> f64 {
    stat_cpu_seconds(&format!("/proc/{pid}/stat"))
}

/// [`cpu_seconds`] per thread name (threads of one name summed), most first: where a
/// process spends its CPU.
pub fn cpu_seconds_by_thread(pid: u32) -> Vec<(String, f64)> {
    let mut by_name = std::collections::BTreeMap::<String, f64>::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let seconds = stat_cpu_seconds(&task.path().join("stat").to_string_lossy());
        *by_name.entry(name.trim().to_owned()).or_default() += seconds;
    }
    let mut threads: Vec<_> = by_name.into_iter().collect();
    threads.sort_by(|a, b| b.1.total_cmp(&a.1));
    threads
}

fn stat_cpu_seconds(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of stat; 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
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

impl Proc {
    pub fn new(bin: impl Into<PathBuf>, args: &[&str], log: PathBuf) -> Self {
        Self {
            bin: bin.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            env: Vec::new(),
            log,
            child: None,
        }
    }

    /// `bin args…` run by `prefix` (e.g. `ip netns exec NS`, [`crate::netns::Link`]).
    pub fn wrapped(prefix: &[String], bin: &Path, args: &[&str], log: PathBuf) -> Self {
        let (program, first) = prefix.split_first().expect("a command prefix");
        let mut all: Vec<String> = first.to_vec();
        all.push(bin.display().to_string());
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        Self::new(program, &all, log)
    }

    pub fn env(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    pub fn start(&mut self) {
        assert!(
            self.child.is_none(),
            "{} already running",
            self.bin.display()
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("process log");
        let mut command = Command::new(&self.bin);
        command.args(&self.args).env("FERRY_LOG", "info");
        // Set here wins over the default; set empty, removed.
        for (k, v) in &self.env {
            if v.is_empty() {
                command.env_remove(k);
            } else {
                command.env(k, v);
            }
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", self.bin.display()));
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
            "{} did not exit within 10 s of SIGTERM; log:\n{}",
            self.bin.display(),
            self.log()
        );
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Sends a signal by name (`STOP`, `CONT`...) to the running process.
    pub fn send(&self, name: &str) {
        if let Some(child) = &self.child {
            signal(child, name);
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}
