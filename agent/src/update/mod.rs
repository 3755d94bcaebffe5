//! Signed updates with a trial and a rollback (README: updates).
//!
//! A job names a version and an artifact per architecture, each described by a signed
//! manifest (`ferry_shared::manifest`). This binary checks its own architecture's manifest
//! (signature, architecture, version order, expiry), downloads the artifact ([`download`]),
//! checks its size and SHA-256 against the manifest, puts it in place beside the running
//! binary once it says the signed version ([`install`]) and exits; the service manager starts the new binary,
//! which is on trial until it has opened the spool, connected and delivered its status.
//! What decides a failed trial is `ferry-update-guard`, a shell script the unit runs before
//! every start, so a binary that cannot start at all is still rolled back ([`state`]).

pub mod download;
pub mod install;
pub mod state;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_shared::fleet::{
    Artifact, JobDocument, JobState, JobStatus, Manifest, check_job_id, this_arch,
};
use ferry_shared::signing::PublicKey;
use tracing::{info, warn};

use crate::VERSION;
use crate::config::AgentConfig;
pub use download::Failure;
use state::{Trial, UpdateDir};

/// The exit code after a new binary is in place: the service manager restarts the agent.
pub const EXIT_UPDATED: u8 = 75;

/// A build made for the update tests (`FERRY_TEST_FAULTS` set at build time) misbehaves as
/// `AGENT_TEST_FAULT` says at run time: `exit` (fails at once) or `no-connect` (never reaches the
/// broker). Other builds ignore `AGENT_TEST_FAULT`.
pub fn injected_fault() -> Option<String> {
    option_env!("FERRY_TEST_FAULTS")?;
    std::env::var("AGENT_TEST_FAULT")
        .ok()
        .filter(|f| !f.is_empty())
}

/// What to do about a job.
#[derive(Debug)]
pub enum JobStep {
    Nothing,
    /// Another update is under way: ask again when it has ended.
    Later(JobDocument),
    /// Say this about the job.
    Report(String, JobStatus),
    /// Download this into `part` and check it against the verified manifest, then
    /// [`Updater::install`] it.
    Fetch {
        job: String,
        url: String,
        manifest: Manifest,
        part: PathBuf,
    },
}

/// Checks the manifest's signature, then whether this device may install what it describes:
/// its architecture, a version newer than the running one (or signed as `rollback_to`), a
/// running version it may replace, not expired, within `update.max_bytes`. All before a
/// byte is downloaded.
fn admit(artifact: &Artifact, key: &PublicKey, max_bytes: u64) -> Result<Manifest, Failure> {
    key.verify(artifact.manifest.as_bytes(), &artifact.signature)
        .map_err(|e| Failure::new("signature_mismatch", e.to_string()))?;
    let manifest = Manifest::parse(&artifact.manifest).map_err(|e| Failure::new("bad_job", e))?;
    manifest
        .admits(this_arch(), VERSION, ferry_shared::Timestamp::now())
        .map_err(|r| Failure::new(r.reason, r.detail))?;
    if manifest.size > max_bytes {
        return Err(Failure::new(
            "too_large",
            format!(
                "{} bytes, above update.max_bytes {max_bytes}",
                manifest.size
            ),
        ));
    }
    Ok(manifest)
}

pub struct Updater {
    dir: UpdateDir,
    key: Option<PublicKey>,
    max_bytes: u64,
    trial_s: u64,
    binary: Option<PathBuf>,
    on_trial: Option<Trial>,
    /// The job being downloaded.
    active: Option<String>,
    /// The status last reported, said again on every connection (retained, so harmless).
    last: Option<(String, JobStatus)>,
}

pub fn status(state: JobState, failure: Option<&Failure>) -> JobStatus {
    JobStatus {
        status: state,
        reason: failure.map(|f| f.reason.to_owned()),
        detail: failure.map(|f| f.detail.clone()),
        running: VERSION.to_owned(),
        at: ferry_shared::Timestamp::now().to_string(),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Updater {
    /// Reads what the last start left: the guard's verdict, a trial this binary is on, or a
    /// trial whose binary never started.
    pub fn open(cfg: &AgentConfig) -> anyhow::Result<Self> {
        let dir = UpdateDir::open(&cfg.data_dir)?;
        let mut up = Self {
            key: cfg.update.key()?,
            max_bytes: cfg.update.max_bytes,
            trial_s: cfg.update.trial_s,
            binary: cfg.update.binary.clone(),
            on_trial: None,
            active: None,
            last: None,
            dir,
        };
        if let Some(verdict) = up.dir.verdict() {
            warn!(job = %verdict.job, reason = verdict.reason, detail = %verdict.detail, "the update was not kept");
            let failure = Failure::new(verdict.reason, verdict.detail);
            // A damaged trial file may leave no job to answer.
            if check_job_id(&verdict.job).is_ok() {
                up.finish(&verdict.job, status(JobState::Failed, Some(&failure)))?;
            }
            up.dir.verdict_reported()?;
        }
        if let Some(trial) = up.dir.trial() {
            if trial.version == VERSION {
                info!(job = %trial.job, version = VERSION, deadline_in_s = trial.deadline().saturating_sub(unix_now()), "on trial");
                up.last = Some((trial.job.clone(), status(JobState::InProgress, None)));
                up.on_trial = Some(trial);
            } else if up.dir.trial_started() {
                // The guard put this binary back but stopped before saying so.
                let failure = Failure::new(
                    "rolled_back",
                    format!("{} did not pass its trial", trial.version),
                );
                up.finish(&trial.job, status(JobState::Failed, Some(&failure)))?;
                up.dir.end_trial()?;
            } else {
                // The swap never happened; the job is still current and runs again.
                info!(job = %trial.job, "an interrupted install is dropped");
                up.dir.end_trial()?;
            }
        }
        Ok(up)
    }

    fn finish(&mut self, job: &str, status: JobStatus) -> std::io::Result<()> {
        self.dir.record_final(job, &status)?;
        self.last = Some((job.to_owned(), status));
        Ok(())
    }

    pub fn last(&self) -> Option<&(String, JobStatus)> {
        self.last.as_ref()
    }

    pub fn dir(&self) -> &UpdateDir {
        &self.dir
    }

    /// When this binary's trial ends, if it is on one.
    pub fn trial_deadline(&self) -> Option<SystemTime> {
        self.on_trial
            .as_ref()
            .map(|t| UNIX_EPOCH + Duration::from_secs(t.deadline()))
    }

    /// The spool is open and the status delivered on a connection: the trial is passed.
    pub fn passed(&mut self) -> anyhow::Result<Option<(String, JobStatus)>> {
        let Some(trial) = self.on_trial.take() else {
            return Ok(None);
        };
        let done = status(JobState::Succeeded, None);
        self.finish(&trial.job, done.clone())?;
        self.dir.end_trial()?;
        info!(job = %trial.job, version = VERSION, previous = %trial.previous_version, "update kept: trial passed");
        Ok(Some((trial.job, done)))
    }

    /// Decides what to do about the device's current job.
    pub fn on_job(&mut self, doc: JobDocument) -> anyhow::Result<JobStep> {
        let job = doc.job_id.clone();
        if let Err(problem) = check_job_id(&job) {
            warn!(%problem, "job ignored");
            return Ok(JobStep::Nothing);
        }
        if let Some(done) = self.dir.final_status(&job) {
            self.last = Some((job.clone(), done.clone()));
            return Ok(JobStep::Report(job, done));
        }
        if self.on_trial.as_ref().is_some_and(|t| t.job == job)
            || self.active.as_deref() == Some(&job)
        {
            return Ok(JobStep::Nothing);
        }
        // One update at a time: another job waits for this binary's trial or the download
        // under way.
        if self.on_trial.is_some() || self.active.is_some() {
            return Ok(JobStep::Later(doc));
        }
        self.dir.forget_downloads_except(Some(&job));
        // Refused before anything is fetched, and recorded as a failed download would be.
        let refused = |up: &mut Self, failure: Failure| -> anyhow::Result<JobStep> {
            let st = up.failed(&job, &failure)?;
            Ok(JobStep::Report(job.clone(), st))
        };
        // Every field is checked before any of it is stored: the version goes into the trial
        // file the guard script reads.
        if let Err(problem) = doc.check() {
            return refused(self, Failure::new("bad_job", problem));
        }
        if doc.version == VERSION {
            let done = status(JobState::Succeeded, None);
            self.finish(&job, done.clone())?;
            return Ok(JobStep::Report(job, done));
        }
        let Some(key) = self.key.clone() else {
            let no_key = Failure::new("updates_disabled", "no [update] public_key in the config");
            return refused(self, no_key);
        };
        let Some(artifact) = doc.artifacts.get(this_arch()).cloned() else {
            let none = Failure::new("no_artifact", format!("no artifact for {}", this_arch()));
            return refused(self, none);
        };
        let manifest = match admit(&artifact, &key, self.max_bytes) {
            Ok(manifest) => manifest,
            Err(failure) => return refused(self, failure),
        };
        info!(job = %job, version = %doc.version, url = %artifact.url, size = manifest.size, "update: downloading");
        self.active = Some(job.clone());
        self.last = Some((job.clone(), status(JobState::InProgress, None)));
        Ok(JobStep::Fetch {
            part: self.dir.part(&job),
            job,
            url: artifact.url,
            manifest,
        })
    }

    /// The job failed: refused, or its download or checks failed.
    pub fn failed(&mut self, job: &str, failure: &Failure) -> anyhow::Result<JobStatus> {
        warn!(job, reason = failure.reason, detail = %failure.detail, "update refused");
        self.active = None;
        let _ = std::fs::remove_file(self.dir.part(job));
        let st = status(JobState::Failed, Some(failure));
        self.finish(job, st.clone())?;
        Ok(st)
    }

    /// Puts the verified download of `job` in place; the caller then exits.
    pub fn install(
        &mut self,
        job: &str,
        version: &str,
        verified: &download::Verified,
    ) -> Result<(), Failure> {
        self.active = None;
        let binary = match &self.binary {
            Some(b) => b.clone(),
            None => std::env::current_exe()
                .map_err(|e| Failure::new("install_failed", format!("the running binary: {e}")))?,
        };
        let trial = Trial {
            job: job.to_owned(),
            version: version.to_owned(),
            previous_version: VERSION.to_owned(),
            started: unix_now(),
            trial_s: self.trial_s,
            previous_spool_format: crate::spool::FORMAT,
        };
        install::install(verified, &binary, &trial, &self.dir).map_err(|e| match e {
            install::InstallError::Version(detail) => Failure::new("version_mismatch", detail),
            install::InstallError::Io(e) => {
                Failure::new("install_failed", format!("{}: {e}", binary.display()))
            }
        })?;
        let _ = std::fs::remove_file(self.dir.part(job));
        info!(job, version, binary = %binary.display(), "update installed; restarting into it");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_shared::signing::SigningKey;

    fn config(data_dir: &std::path::Path, update: &str) -> AgentConfig {
        AgentConfig::parse(
            &format!(
                "device_id = \"d\"\ndata_dir = \"{}\"\n[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n[update]\n{update}\n",
                data_dir.display()
            ),
            [],
        )
        .expect("config")
    }

    fn trial(version: &str) -> Trial {
        Trial {
            job: "j1".into(),
            version: version.into(),
            previous_version: "0.0.1".into(),
            started: unix_now(),
            trial_s: 120,
            previous_spool_format: crate::spool::FORMAT,
        }
    }

    /// What each crash point of an install leaves, read by the next start.
    #[test]
    fn the_next_start_reads_what_an_interrupted_update_left() {
        // Killed after the trial was recorded, before the rename: the old binary starts,
        // drops the trial and runs the job again.
        let tmp = tempfile::tempdir().expect("tmp");
        let cfg = config(tmp.path(), "");
        UpdateDir::open(tmp.path())
            .and_then(|d| d.begin_trial(&trial("9.9.9")))
            .expect("trial");
        let up = Updater::open(&cfg).expect("open");
        assert_eq!(up.trial_deadline(), None);
        assert_eq!(up.dir().trial(), None, "dropped");
        assert!(up.dir().final_status("j1").is_none(), "the job runs again");

        // The new binary started (the guard counted it) and the guard put the old one back
        // but was killed before its verdict: the job failed, rolled back.
        let tmp = tempfile::tempdir().expect("tmp");
        let cfg = config(tmp.path(), "");
        let dir = UpdateDir::open(tmp.path()).expect("dir");
        dir.begin_trial(&trial("9.9.9")).expect("trial");
        std::fs::write(tmp.path().join("update/starts"), "1\n").expect("starts");
        let up = Updater::open(&cfg).expect("open");
        let done = up.dir().final_status("j1").expect("recorded");
        assert_eq!(
            (done.status, done.reason.as_deref()),
            (JobState::Failed, Some("rolled_back"))
        );

        // This binary is the one on trial: the trial goes on until its status is delivered.
        let tmp = tempfile::tempdir().expect("tmp");
        let cfg = config(tmp.path(), "");
        UpdateDir::open(tmp.path())
            .and_then(|d| d.begin_trial(&trial(VERSION)))
            .expect("trial");
        let mut up = Updater::open(&cfg).expect("open");
        assert!(up.trial_deadline().is_some());
        let (job, passed) = up.passed().expect("record").expect("passed");
        assert_eq!((job.as_str(), passed.status), ("j1", JobState::Succeeded));
        assert_eq!(up.dir().trial(), None);
        assert!(up.passed().expect("again").is_none(), "once");
    }

    fn manifest(version: &str) -> Manifest {
        Manifest {
            version: version.into(),
            arch: this_arch().into(),
            sha256: "ab".repeat(32),
            size: 10,
            min_version: "0.0.1".into(),
            rollback_to: false,
            expires: ferry_shared::Timestamp::parse("2100-01-01T00:00:00Z").expect("ts"),
        }
    }

    fn signed_job(id: &str, manifest: &Manifest, key: &SigningKey) -> JobDocument {
        let text = manifest.to_text();
        let artifact = Artifact {
            url: "https://updates.example/ferry-agent".into(),
            signature: key.sign(text.as_bytes()),
            manifest: text,
        };
        JobDocument {
            job_id: id.into(),
            version: manifest.version.clone(),
            artifacts: [(this_arch().to_string(), artifact)].into(),
        }
    }

    fn job(id: &str, version: &str) -> JobDocument {
        let (key, _) = SigningKey::generate().expect("key");
        signed_job(id, &manifest(version), &key)
    }

    /// Each check of the signed manifest refuses before a byte is downloaded, with its code.
    #[test]
    fn a_manifest_is_admitted_only_for_this_arch_a_newer_version_and_before_it_expires() {
        let tmp = tempfile::tempdir().expect("tmp");
        let (key, _) = SigningKey::generate().expect("key");
        let (other, _) = SigningKey::generate().expect("key");
        let setting = format!("public_key = \"{}\"\nmax_bytes = 1048576", key.public_key());
        let mut up = Updater::open(&config(tmp.path(), &setting)).expect("open");
        let older = |m: Manifest| Manifest {
            version: "0.0.1-old".into(),
            min_version: "0.0.0".into(),
            ..m
        };
        let cases = [
            (
                "other-arch",
                Manifest {
                    arch: if this_arch() == "arm64" {
                        "armhf"
                    } else {
                        "arm64"
                    }
                    .into(),
                    ..manifest("9.9.9")
                },
                &key,
                Some("wrong_arch"),
            ),
            (
                "downgrade",
                older(manifest("9.9.9")),
                &key,
                Some("downgrade"),
            ),
            (
                "expired",
                Manifest {
                    expires: ferry_shared::Timestamp::parse("2001-01-01T00:00:00Z").expect("ts"),
                    ..manifest("9.9.9")
                },
                &key,
                Some("expired"),
            ),
            (
                "too-old",
                Manifest {
                    min_version: "9.0.0".into(),
                    ..manifest("9.9.9")
                },
                &key,
                Some("too_old"),
            ),
            (
                "too-big",
                Manifest {
                    size: 1_048_577,
                    ..manifest("9.9.9")
                },
                &key,
                Some("too_large"),
            ),
            (
                "other-key",
                manifest("9.9.9"),
                &other,
                Some("signature_mismatch"),
            ),
            (
                "rollback",
                Manifest {
                    rollback_to: true,
                    ..older(manifest("9.9.9"))
                },
                &key,
                None,
            ),
        ];
        // A manifest changed after signing (here: made a rollback) no longer verifies.
        let mut tampered = signed_job("tampered", &older(manifest("9.9.9")), &key);
        let a = tampered.artifacts.get_mut(this_arch()).expect("artifact");
        a.manifest = a
            .manifest
            .replace("\"rollback_to\":false", "\"rollback_to\":true");
        let JobStep::Report(_, st) = up.on_job(tampered).expect("step") else {
            panic!("refused")
        };
        assert_eq!(st.reason.as_deref(), Some("signature_mismatch"));
        // The one it admits is last: it stays the job under way.
        for (id, m, signer, want) in cases {
            match (up.on_job(signed_job(id, &m, signer)).expect("step"), want) {
                (JobStep::Report(_, st), Some(reason)) => {
                    assert_eq!(st.reason.as_deref(), Some(reason), "{id}: {st:?}")
                }
                (JobStep::Fetch { manifest, .. }, None) => assert_eq!(manifest, m),
                (step, _) => panic!("{id}: {step:?}"),
            }
        }
    }

    /// A signed job can still carry a hostile version: it is refused before the trial file
    /// (which the guard script reads) is written, and answered once.
    #[test]
    fn a_version_that_could_reach_the_guard_is_refused_first() {
        let tmp = tempfile::tempdir().expect("tmp");
        let key = "public_key = \"11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=\"";
        let mut up = Updater::open(&config(tmp.path(), key)).expect("open");
        for (i, version) in ["1.0\nstarted=now[$(id>&2)]", "now[$(id>&2)]", "1 0"]
            .iter()
            .enumerate()
        {
            let id = format!("evil-{i}");
            let JobStep::Report(_, st) = up.on_job(job(&id, version)).expect("step") else {
                panic!("{version:?} must be refused")
            };
            assert_eq!(st.reason.as_deref(), Some("bad_job"), "{version:?}");
            assert_eq!(up.dir().trial(), None);
            assert!(
                up.dir().final_status(&id).is_some(),
                "answered once, recorded"
            );
        }
    }

    #[test]
    fn jobs_are_refused_without_a_key_and_never_run_twice() {
        let tmp = tempfile::tempdir().expect("tmp");
        let mut up = Updater::open(&config(tmp.path(), "")).expect("open");
        let doc = job("j2", "9.9.9");
        let JobStep::Report(_, st) = up.on_job(doc.clone()).expect("step") else {
            panic!("refused")
        };
        assert_eq!(st.reason.as_deref(), Some("updates_disabled"));
        // The retained job again (a reconnect): the recorded answer, nothing run.
        let JobStep::Report(_, again) = up.on_job(doc).expect("step") else {
            panic!("answered")
        };
        assert_eq!(again.reason.as_deref(), Some("updates_disabled"));
    }
}
