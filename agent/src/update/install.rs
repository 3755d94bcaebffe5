//! Putting a verified binary in place so that at every instant, crash or not, the path the
//! unit runs holds a whole, runnable binary:
//!
//! 1. the verified bytes (held in memory since their check, never re-read from the
//!    download's path) are written to `ferry-agent.new` beside the binary, made executable
//!    and fsynced; `ferry-agent.new --version` must then say the signed version, so a
//!    binary signed under another version's label never starts a trial;
//! 2. the running binary is hard-linked as `ferry-agent.previous` (through a temp name and
//!    a rename, so an older `.previous` is replaced whole);
//! 3. the trial is recorded (`update/trial`);
//! 4. `ferry-agent.new` is renamed over the binary, and the folder fsynced.
//!
//! A crash before 4 leaves the old binary in place with a trial no binary was started in,
//! which the next start drops (`fleet`); a crash after 4 starts the new one on trial.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::download::Verified;
use super::state::{Trial, UpdateDir};
use crate::durable_file;

fn with_suffix(binary: &Path, suffix: &str) -> PathBuf {
    let mut name = binary.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

pub fn previous_of(binary: &Path) -> PathBuf {
    with_suffix(binary, ".previous")
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The new binary does not say the version it was signed as.
    #[error("{0}")]
    Version(String),
}

/// How long the new binary has to print its version.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `binary --version` and checks that it says `ferry-agent {version}`.
fn says_version(binary: &Path, version: &str) -> Result<(), InstallError> {
    let mut child = spawn_retrying(binary).map_err(|e| {
        InstallError::Version(format!("cannot run `{} --version`: {e}", binary.display()))
    })?;
    let deadline = Instant::now() + VERSION_TIMEOUT;
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(InstallError::Version(format!(
                "`{} --version` did not answer within {VERSION_TIMEOUT:?}",
                binary.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output()?;
    let said = String::from_utf8_lossy(&out.stdout);
    let said = said.trim();
    if !out.status.success() || said != format!("ferry-agent {version}") {
        return Err(InstallError::Version(format!(
            "signed as {version}, the binary says {:?} ({})",
            said.chars().take(120).collect::<String>(),
            out.status
        )));
    }
    Ok(())
}

/// A file just written may still be open for writing in a child another thread forked but
/// has not yet exec'd (ETXTBSY): that lasts microseconds, so a few tries suffice.
fn spawn_retrying(binary: &Path) -> std::io::Result<std::process::Child> {
    let mut tries = 0;
    loop {
        let spawned = Command::new(binary)
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        match spawned {
            Err(e) if e.raw_os_error() == Some(ETXTBSY) && tries < 5 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// The same on every Linux architecture Ferry is built for.
const ETXTBSY: i32 = 26;

pub fn install(
    verified: &Verified,
    binary: &Path,
    trial: &Trial,
    dir: &UpdateDir,
) -> Result<(), InstallError> {
    let new = with_suffix(binary, ".new");
    let _ = std::fs::remove_file(&new);
    {
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o755)
            .open(&new)?;
        out.write_all(verified.bytes())?;
        out.flush()?;
        out.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        out.sync_all()?;
    }
    if let Err(e) = says_version(&new, &trial.version) {
        let _ = std::fs::remove_file(&new);
        return Err(e);
    }
    let previous = previous_of(binary);
    let linking = with_suffix(binary, ".previous.tmp");
    let _ = std::fs::remove_file(&linking);
    std::fs::hard_link(binary, &linking)?;
    std::fs::rename(&linking, &previous)?;
    durable_file::sync_dir(durable_file::parent(binary))?;
    dir.begin_trial(trial)?;
    std::fs::rename(&new, binary)?;
    durable_file::sync_dir(durable_file::parent(binary))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_new_binary_replaces_the_old_which_is_kept_as_previous() {
        let tmp = tempfile::tempdir().expect("tmp");
        let bin = tmp.path().join("ferry-agent");
        std::fs::write(&bin, b"old").expect("old");
        std::fs::write(previous_of(&bin), b"older").expect("older");
        let verified = Verified(b"#!/bin/sh\necho 'ferry-agent 2'\n".to_vec());
        let dir = UpdateDir::open(tmp.path()).expect("dir");
        let trial = Trial {
            job: "j".into(),
            version: "2".into(),
            previous_version: "1".into(),
            started: 1,
            trial_s: 120,
            previous_spool_format: 4,
        };
        install(&verified, &bin, &trial, &dir).expect("installed");
        assert_eq!(std::fs::read(&bin).expect("bin"), verified.bytes());
        assert_eq!(std::fs::read(previous_of(&bin)).expect("prev"), b"old");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&bin).expect("meta").permissions(),
        );
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(dir.trial(), Some(trial));
        assert!(!with_suffix(&bin, ".new").exists());
    }

    #[test]
    fn a_binary_that_does_not_say_its_signed_version_is_not_put_in_place() {
        let tmp = tempfile::tempdir().expect("tmp");
        let bin = tmp.path().join("ferry-agent");
        std::fs::write(&bin, b"old").expect("old");
        let dir = UpdateDir::open(tmp.path()).expect("dir");
        let trial = Trial {
            job: "j".into(),
            version: "2.0.0".into(),
            previous_version: "1".into(),
            started: 1,
            trial_s: 120,
            previous_spool_format: 4,
        };
        for script in [
            "#!/bin/sh\necho 'ferry-agent 1.0.0'\n",
            "#!/bin/sh\necho 'ferry-agent 2.0.0'\nexit 3\n",
            "not a binary",
        ] {
            let err = install(&Verified(script.as_bytes().to_vec()), &bin, &trial, &dir)
                .expect_err(script);
            assert!(matches!(err, InstallError::Version(_)), "{script}: {err}");
            assert_eq!(std::fs::read(&bin).expect("bin"), b"old", "{script}");
            assert_eq!(dir.trial(), None, "no trial begun");
            assert!(!with_suffix(&bin, ".new").exists());
        }
    }
}
