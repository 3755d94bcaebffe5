//! Update manifests (README: updates): what a release key vouches for. The key signs the
//! manifest's exact text, not the artifact's bytes, so a signature also fixes the version,
//! the architecture, which running versions the binary may replace and until when: an old
//! signed build cannot be replayed as a downgrade (TUF's rollback attack), a mirror cannot
//! keep a device on an old release forever (freeze), and an arm64 build cannot be labelled
//! for armhf or with another version (mix-and-match).

use serde::{Deserialize, Serialize};

use crate::Timestamp;
use crate::fleet::{ARCHES, check_version};

/// The signed text is at most this long; a real one is about 300 bytes.
pub const MAX_MANIFEST_BYTES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The version the binary says it is (`ferry-agent --version`), in semver.
    pub version: String,
    /// Debian's name of the architecture it was built for.
    pub arch: String,
    /// Lower-case hex of the SHA-256 of the binary.
    pub sha256: String,
    pub size: u64,
    /// The earliest running version it may replace.
    pub min_version: String,
    /// Signed as a rollback: it may replace a newer version than itself.
    #[serde(default)]
    pub rollback_to: bool,
    /// No device installs it after this instant.
    pub expires: Timestamp,
}

/// Why a device will not install what a verified manifest describes: a stable code (the job's
/// `reason`) and the detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub detail: String,
}

impl Refusal {
    fn new(reason: &'static str, detail: String) -> Self {
        Self { reason, detail }
    }
}

fn semver(what: &str, version: &str) -> Result<semver::Version, String> {
    semver::Version::parse(version)
        .map_err(|e| format!("{what} {version:?} is not a semver version: {e}"))
}

impl Manifest {
    /// Parses the signed text and checks every field's form; whether this device may install
    /// it is [`Manifest::admits`], after the signature.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() > MAX_MANIFEST_BYTES {
            return Err(format!("the manifest is above {MAX_MANIFEST_BYTES} bytes"));
        }
        let m: Self = serde_json::from_str(text).map_err(|e| format!("the manifest: {e}"))?;
        check_version(&m.version)?;
        semver("manifest version", &m.version)?;
        check_version(&m.min_version)?;
        semver("manifest min_version", &m.min_version)?;
        if !ARCHES.contains(&m.arch.as_str()) {
            return Err(format!(
                "manifest arch {:?}: the architectures are {ARCHES:?}",
                m.arch
            ));
        }
        if m.sha256.len() != 64 || !m.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("manifest sha256 must be 64 hex digits".into());
        }
        if m.size == 0 {
            return Err("manifest size must be above 0".into());
        }
        Ok(m)
    }

    /// The text to sign: compact JSON, which is what the agent checks the signature over.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Whether a device of `arch` running `running` may install it at `now`. Only a manifest
    /// signed as `rollback_to` may go back to a version older than the running one.
    pub fn admits(&self, arch: &str, running: &str, now: Timestamp) -> Result<(), Refusal> {
        if self.arch != arch {
            return Err(Refusal::new(
                "wrong_arch",
                format!("signed for {}, this device is {arch}", self.arch),
            ));
        }
        if now > self.expires {
            return Err(Refusal::new(
                "expired",
                format!("the manifest expired at {}", self.expires),
            ));
        }
        let bad = |e: String| Refusal::new("bad_job", e);
        let new = semver("manifest version", &self.version).map_err(bad)?;
        let min = semver("manifest min_version", &self.min_version).map_err(bad)?;
        let running = semver("the running version", running).map_err(bad)?;
        if running < min {
            return Err(Refusal::new(
                "too_old",
                format!(
                    "{new} replaces {min} and later; this device runs {running}; update to {min} first"
                ),
            ));
        }
        if new < running && !self.rollback_to {
            return Err(Refusal::new(
                "downgrade",
                format!(
                    "{new} is older than the running {running} and is not signed as a rollback_to"
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            version: "1.2.0".into(),
            arch: "arm64".into(),
            sha256: "ab".repeat(32),
            size: 10,
            min_version: "1.0.0".into(),
            rollback_to: false,
            expires: Timestamp::parse("2030-01-01T00:00:00Z").expect("ts"),
        }
    }

    fn at(s: &str) -> Timestamp {
        Timestamp::parse(s).expect("ts")
    }

    #[test]
    fn the_text_round_trips_and_every_field_is_checked() {
        let m = manifest();
        assert_eq!(Manifest::parse(&m.to_text()), Ok(m.clone()));
        let mut v = serde_json::to_value(&m).expect("json");
        v["run"] = "x".into();
        assert!(Manifest::parse(&v.to_string()).is_err(), "unknown field");
        for (field, value, want) in [
            ("version", "1.0\nstarted=now", "version"),
            ("version", "1.2", "semver"),
            ("min_version", "now[$(id>&2)]", "version"),
            ("arch", "sparc", "arch"),
            ("sha256", "00", "sha256"),
        ] {
            let mut v = serde_json::to_value(&m).expect("json");
            v[field] = value.into();
            let err = Manifest::parse(&v.to_string()).expect_err(field);
            assert!(err.contains(want), "{field}={value:?}: {err}");
        }
        assert!(Manifest::parse(&"x".repeat(MAX_MANIFEST_BYTES + 1)).is_err());
    }

    #[test]
    fn admission_refuses_other_arches_downgrades_old_devices_and_expired_manifests() {
        let m = manifest();
        let now = at("2029-01-01T00:00:00Z");
        assert_eq!(m.admits("arm64", "1.1.0", now), Ok(()));
        assert_eq!(m.admits("arm64", "1.0.0", now), Ok(()), "min is inclusive");
        let code =
            |m: &Manifest, arch, running, now| m.admits(arch, running, now).map_err(|r| r.reason);
        assert_eq!(code(&m, "armhf", "1.1.0", now), Err("wrong_arch"));
        assert_eq!(code(&m, "arm64", "0.9.9", now), Err("too_old"));
        assert_eq!(code(&m, "arm64", "1.3.0", now), Err("downgrade"));
        assert_eq!(
            code(&m, "arm64", "1.2.0-rc.1", now),
            Ok(()),
            "a release replaces its rc"
        );
        assert_eq!(
            code(&m, "arm64", "1.1.0", at("2030-01-01T00:00:01Z")),
            Err("expired")
        );
        assert_eq!(code(&m, "arm64", "dev", now), Err("bad_job"));
        let rollback = Manifest {
            rollback_to: true,
            ..manifest()
        };
        assert_eq!(code(&rollback, "arm64", "1.3.0", now), Ok(()));
    }
}
