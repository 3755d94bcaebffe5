//! Putting a verified binary in place so that at every instant, crash or not, the path the
//! unit runs holds a whole, runnable binary:
//!
//! 1. the verified bytes (held in memory since their check, never re-read from the
//!    download's path) are written to `ferry-agent.new` beside the binary, made executable
//!    and fsynced;
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

pub fn install(
    verified: &Verified,
    binary: &Path,
    trial: &Trial,
    dir: &UpdateDir,
) -> std::io::Result<()> {
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
        let verified = Verified(b"new".to_vec());
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
        assert_eq!(std::fs::read(&bin).expect("bin"), b"new");
        assert_eq!(std::fs::read(previous_of(&bin)).expect("prev"), b"old");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&bin).expect("meta").permissions(),
        );
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(dir.trial(), Some(trial));
        assert!(!with_suffix(&bin, ".new").exists());
    }
}
