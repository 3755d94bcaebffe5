//! `{data_dir}/update/`: what an update leaves for the next start, and the contract with
//! `ferry-update-guard`, the shell script the unit runs before every start. The script
//! reads and writes only these plain files, so it works whatever state the binary is in:
//!
//! - `trial`: `key=value` lines, written before the new binary is renamed into place;
//!   present while a new binary is on trial. The guard reads `job`, `started`, `trial_s`
//!   and `previous_spool_format`.
//! - `starts`: the guard appends a line per start during a trial.
//! - `rolled_back`, `rollback_refused`, `guard_bad_state`: the guard's verdict (`job=...` and `detail=...`),
//!   for the binary that runs next to report.
//! - `spool_readable_by`: the oldest spool format a binary must read to use this spool,
//!   written by the agent when it opens the spool; the guard refuses to roll back past it.
//! - `jobs/{job_id}.json`: each finished job's final status, so it is never run twice.
//! - `download/{job_id}.part`: an artifact as far as it has arrived.

use std::path::{Path, PathBuf};

use ferry_shared::fleet::JobStatus;
use tracing::warn;

use crate::durable_file;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trial {
    pub job: String,
    /// The version on trial.
    pub version: String,
    pub previous_version: String,
    /// Unix seconds when the new binary was put in place; the trial ends `trial_s` later.
    pub started: u64,
    pub trial_s: u64,
    /// The newest spool format the previous binary reads.
    pub previous_spool_format: u32,
}

impl Trial {
    fn to_text(&self) -> String {
        format!(
            "job={}\nversion={}\nprevious_version={}\nstarted={}\ntrial_s={}\nprevious_spool_format={}\n",
            self.job,
            self.version,
            self.previous_version,
            self.started,
            self.trial_s,
            self.previous_spool_format
        )
    }

    fn parse(text: &str) -> Option<Self> {
        let get = |key: &str| value_of(text, key).map(str::to_owned);
        Some(Self {
            job: get("job")?,
            version: get("version")?,
            previous_version: get("previous_version")?,
            started: get("started")?.parse().ok()?,
            trial_s: get("trial_s")?.parse().ok()?,
            previous_spool_format: get("previous_spool_format")?.parse().ok()?,
        })
    }

    /// Unix seconds when the trial ends.
    pub fn deadline(&self) -> u64 {
        self.started.saturating_add(self.trial_s)
    }
}

/// The value of `key=` in the plain `key=value` lines the guard script reads and writes.
fn value_of<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// What the guard decided at the last start, for this binary to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub job: String,
    /// `rolled_back`, `rollback_refused` or `guard_bad_state`.
    pub reason: &'static str,
    pub detail: String,
}

#[derive(Debug, Clone)]
pub struct UpdateDir {
    dir: PathBuf,
}

const TRIAL: &str = "trial";
const STARTS: &str = "starts";
const VERDICTS: [(&str, &str); 3] = [
    ("rolled_back", "rolled_back"),
    ("rollback_refused", "rollback_refused"),
    ("guard_bad_state", "guard_bad_state"),
];

impl UpdateDir {
    pub fn open(data_dir: &Path) -> std::io::Result<Self> {
        let dir = data_dir.join("update");
        crate::durable_file::create_dir_all(&dir.join("jobs"))?;
        crate::durable_file::create_dir_all(&dir.join("download"))?;
        Ok(Self { dir })
    }

    pub fn trial(&self) -> Option<Trial> {
        let text = std::fs::read_to_string(self.dir.join(TRIAL)).ok()?;
        let trial = Trial::parse(&text);
        if trial.is_none() {
            warn!("update/trial is not readable; ignoring it");
        }
        trial
    }

    /// Whether the guard has started a binary during the current trial.
    pub fn trial_started(&self) -> bool {
        self.dir.join(STARTS).exists()
    }

    /// Begins a trial: the old count of starts goes first, so that it cannot count against
    /// the new trial.
    pub fn begin_trial(&self, trial: &Trial) -> std::io::Result<()> {
        // The guard refuses a file it cannot read strictly; never hand it one.
        ferry_shared::fleet::check_job_id(&trial.job)
            .and_then(|()| ferry_shared::fleet::check_version(&trial.version))
            .and_then(|()| ferry_shared::fleet::check_version(&trial.previous_version))
            .map_err(std::io::Error::other)?;
        durable_file::remove(&self.dir.join(STARTS))?;
        durable_file::write(
            &self.dir.join(TRIAL),
            trial.to_text().as_bytes(),
            0o600,
            None,
        )
    }

    /// Ends a trial. Removing `trial` is the commit: the count of starts goes after it, as
    /// a guard that still saw the trial must also still see its count.
    pub fn end_trial(&self) -> std::io::Result<()> {
        durable_file::remove(&self.dir.join(TRIAL))?;
        durable_file::remove(&self.dir.join(STARTS))
    }

    /// The guard's verdict, if it left one; it is removed once its job's final status is
    /// recorded ([`Self::verdict_reported`]).
    pub fn verdict(&self) -> Option<Verdict> {
        VERDICTS.iter().find_map(|(file, reason)| {
            let text = std::fs::read_to_string(self.dir.join(file)).ok()?;
            let get = |key: &str| value_of(&text, key).unwrap_or_default().to_owned();
            Some(Verdict {
                job: get("job"),
                reason,
                detail: get("detail"),
            })
        })
    }

    pub fn verdict_reported(&self) -> std::io::Result<()> {
        for (file, _) in VERDICTS {
            durable_file::remove(&self.dir.join(file))?;
        }
        Ok(())
    }

    pub fn final_status(&self, job: &str) -> Option<JobStatus> {
        let bytes = std::fs::read(self.job_file(job)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn record_final(&self, job: &str, status: &JobStatus) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(status).map_err(std::io::Error::other)?;
        durable_file::write(&self.job_file(job), &bytes, 0o600, None)
    }

    pub fn set_spool_readable_by(&self, format: u32) -> std::io::Result<()> {
        let path = self.dir.join("spool_readable_by");
        if std::fs::read_to_string(&path).ok().as_deref() == Some(&format!("{format}\n")) {
            return Ok(());
        }
        durable_file::write(&path, format!("{format}\n").as_bytes(), 0o600, None)
    }

    /// Where job `job`'s artifact is downloaded to.
    pub fn part(&self, job: &str) -> PathBuf {
        self.dir.join("download").join(format!("{job}.part"))
    }

    /// Drops downloads of other jobs, which will not be resumed.
    pub fn forget_downloads_except(&self, job: Option<&str>) {
        let keep = job.map(|j| format!("{j}.part"));
        if let Ok(entries) = std::fs::read_dir(self.dir.join("download")) {
            for entry in entries.flatten() {
                if keep.as_deref() != entry.file_name().to_str() {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }

    fn job_file(&self, job: &str) -> PathBuf {
        self.dir.join("jobs").join(format!("{job}.json"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trial_file_is_plain_key_value_lines_and_reads_back() {
        let trial = Trial {
            job: "r1-ws-001".into(),
            version: "0.2.0".into(),
            previous_version: "0.1.0".into(),
            started: 1_700_000_000,
            trial_s: 120,
            previous_spool_format: 4,
        };
        let text = trial.to_text();
        assert!(text.contains("\nstarted=1700000000\n"), "{text}");
        assert_eq!(Trial::parse(&text), Some(trial.clone()));
        assert_eq!(trial.deadline(), 1_700_000_120);
        assert_eq!(Trial::parse("job=x\n"), None);

        let dir = tempfile::tempdir().expect("tmp");
        let up = UpdateDir::open(dir.path()).expect("open");
        std::fs::write(dir.path().join("update/starts"), "1\n").expect("old count");
        up.begin_trial(&trial).expect("begin");
        assert!(!up.trial_started(), "an old count is gone");
        assert_eq!(up.trial(), Some(trial));
        up.end_trial().expect("end");
        assert_eq!(up.trial(), None);
    }

    #[test]
    fn a_verdict_is_read_until_reported() {
        let dir = tempfile::tempdir().expect("tmp");
        let up = UpdateDir::open(dir.path()).expect("open");
        assert_eq!(up.verdict(), None);
        std::fs::write(
            dir.path().join("update/rolled_back"),
            "job=r1\ndetail=4 starts\n",
        )
        .expect("verdict");
        let v = up.verdict().expect("verdict");
        assert_eq!((v.job.as_str(), v.reason), ("r1", "rolled_back"));
        up.verdict_reported().expect("reported");
        assert_eq!(up.verdict(), None);
    }
}
