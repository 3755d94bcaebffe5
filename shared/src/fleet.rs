//! Fleet operations on the wire (README: remote configuration, updates): the documents the
//! cloud and a device exchange to change the device's configuration and its binary, and
//! the topics they travel on when the broker is not IoT Core.
//!
//! Every topic here carries a retained message: a device that was offline finds the latest
//! desired configuration and its current job on connect, and the cloud finds each device's
//! latest answers when it subscribes, so neither side needs a persistent session.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::DeviceId;
pub use crate::manifest::Manifest;
use crate::topic::TOPIC_PREFIX;

/// The named shadow that carries the desired configuration on AWS IoT Core.
pub const SHADOW_NAME: &str = "ferry-config";

/// The key in the shadow's desired and reported state that carries Ferry's own fields
/// (the cloud's `version`; the device's answer) beside the settings.
pub const SHADOW_META: &str = "ferry";

/// Whether a broker host is AWS IoT Core's, where fleet documents travel in the named
/// shadow and IoT Jobs.
pub fn is_iot_core(host: &str) -> bool {
    host.ends_with(".amazonaws.com")
}

/// `$aws/things/{thing}/shadow/name/ferry-config/{rest}`.
pub fn shadow_topic(thing: &str, rest: &str) -> String {
    format!("$aws/things/{thing}/shadow/name/{SHADOW_NAME}/{rest}")
}

/// `ferry/v1/{device}/config`: the desired configuration, retained.
pub fn config_topic(device: &DeviceId) -> String {
    format!("{TOPIC_PREFIX}{device}/config")
}

/// `ferry/v1/{device}/config/reported`: what the device applied, retained.
pub fn config_reported_topic(device: &DeviceId) -> String {
    format!("{TOPIC_PREFIX}{device}/config/reported")
}

/// `ferry/v1/{device}/jobs`: the device's current update job, retained.
pub fn jobs_topic(device: &DeviceId) -> String {
    format!("{TOPIC_PREFIX}{device}/jobs")
}

/// `ferry/v1/{device}/jobs/{job_id}/status`: the job's state as the device reports it,
/// retained.
pub fn job_status_topic(device: &DeviceId, job_id: &str) -> String {
    format!("{TOPIC_PREFIX}{device}/jobs/{job_id}/status")
}

/// The cloud's subscriptions to every device's answers.
pub const REPORTED_FILTER: &str = "ferry/v1/+/config/reported";
pub const JOB_STATUS_FILTER: &str = "ferry/v1/+/jobs/+/status";

/// On IoT Core, the cloud reads answers from the shadow's documents.
pub const SHADOW_DOCUMENTS_FILTER: &str = "$aws/things/+/shadow/name/ferry-config/update/documents";

/// What a device's answer topic says: which device, and which of its documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Reported(DeviceId),
    /// The shadow's `update/documents`: the answer is `current.state.reported.ferry`.
    ShadowDocuments(DeviceId),
    JobStatus {
        device: DeviceId,
        job_id: String,
    },
}

impl Answer {
    /// Parses a topic of [`REPORTED_FILTER`], [`JOB_STATUS_FILTER`] or
    /// [`SHADOW_DOCUMENTS_FILTER`]; `None` for any other.
    pub fn parse(topic: &str) -> Option<Self> {
        if let Some(rest) = topic.strip_prefix("$aws/things/") {
            let (thing, rest) = rest.split_once('/')?;
            let device = DeviceId::new(thing).ok()?;
            return (rest == format!("shadow/name/{SHADOW_NAME}/update/documents"))
                .then_some(Self::ShadowDocuments(device));
        }
        let rest = topic.strip_prefix(TOPIC_PREFIX)?;
        let (device, rest) = rest.split_once('/')?;
        let device = DeviceId::new(device).ok()?;
        if rest == "config/reported" {
            return Some(Self::Reported(device));
        }
        let job_id = rest.strip_prefix("jobs/")?.strip_suffix("/status")?;
        check_job_id(job_id).ok()?;
        Some(Self::JobStatus {
            device,
            job_id: job_id.to_owned(),
        })
    }
}

/// The settings a desired configuration may hold, and within each table the keys it may
/// set (`None`: the value replaces the file's whole). A device's identity, certificates,
/// data folder and POS listener are its own and never change remotely.
pub const REMOTE_KEYS: &[(&str, Option<&[&str]>)] = &[
    ("sources", None),
    ("log_level", None),
    (
        "mqtt",
        Some(&[
            "publishes_per_s",
            "bytes_per_s",
            "max_inflight",
            "gzip_level",
            "status_interval_s",
        ]),
    ),
    ("spool", Some(&["max_bytes"])),
];

/// Checks that `config` names only [`REMOTE_KEYS`]; the error names the first other key.
/// The values are the device's to check, as it checks its file.
pub fn check_remote_keys(
    config: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), String> {
    for (key, value) in config {
        let Some((_, keys)) = REMOTE_KEYS.iter().find(|(k, _)| k == key) else {
            return Err(format!("key {key} cannot be set remotely"));
        };
        if let Some(allowed) = keys {
            let serde_json::Value::Object(settings) = value else {
                return Err(format!("key {key} must be a table"));
            };
            if let Some(other) = settings.keys().find(|k| !allowed.contains(&k.as_str())) {
                return Err(format!("key {key}.{other} cannot be set remotely"));
            }
        }
    }
    Ok(())
}

/// The desired configuration as published: a version the cloud raises on every change, and
/// the settings (README: remote configuration), which the device checks as it checks its file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredConfig {
    pub version: u64,
    pub config: serde_json::Map<String, serde_json::Value>,
}

/// What the device says about the desired configuration it last received.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportedConfig {
    /// The desired version this answers.
    pub version: u64,
    /// When it was applied; absent when it was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<String>,
    /// Why it was refused, naming the key; the device keeps its running configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One update for one device: the version and a signed artifact per architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobDocument {
    pub job_id: String,
    pub version: String,
    /// Keyed by Debian's architecture names: `amd64`, `arm64`, `armhf`.
    pub artifacts: BTreeMap<String, Artifact>,
}

/// A binary to download: where, and the signed manifest that says what it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    pub url: String,
    /// The [`Manifest`]'s exact text, which is what is signed.
    pub manifest: String,
    /// The ed25519 signature of `manifest` (`ferry-cloud sign`, or a legacy minisign one).
    pub signature: String,
}

/// A job's state, in IoT Jobs' words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    Queued,
    InProgress,
    Succeeded,
    Failed,
}

impl JobState {
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "QUEUED",
            Self::InProgress => "IN_PROGRESS",
            Self::Succeeded => "SUCCEEDED",
            Self::Failed => "FAILED",
        }
    }
}

/// A device's report on one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    pub status: JobState,
    /// Why it failed, as a stable code: `rolled_back`, `signature_mismatch`, `sha256_mismatch`,
    /// `truncated`, `too_large`, `download_failed`, `no_artifact`, `updates_disabled`,
    /// `install_failed`, `rollback_refused`, `guard_bad_state`, `bad_job`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The detail behind `reason`, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The version the device runs as it reports.
    pub running: String,
    pub at: String,
}

/// The architectures an artifact may be built for, in Debian's names.
pub const ARCHES: [&str; 3] = ["amd64", "arm64", "armhf"];

/// A version is written into the trial file that `ferry-update-guard` reads and into topic
/// payloads: 1 to 64 of `[0-9A-Za-z.+-]`, so it can carry no line break, quote or `$(…)`.
pub fn check_version(version: &str) -> Result<(), String> {
    if version.is_empty()
        || version.len() > 64
        || !version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-'))
    {
        return Err(format!(
            "version {:?} must be 1 to 64 of A-Z, a-z, 0-9, '.', '+' and '-'",
            version.chars().take(80).collect::<String>()
        ));
    }
    Ok(())
}

impl Artifact {
    /// Checks every field's form where it enters, before anything is stored or fetched: the
    /// URL parses as http(s) with a host, the manifest parses (its fields checked by
    /// [`Manifest::parse`]) and names `version`, the signature is there. The error names the
    /// field under `at`. The signature itself is the device's to verify, with its key.
    pub fn check(&self, at: &str, version: &str) -> Result<Manifest, String> {
        match url::Url::parse(&self.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => return Err(format!("{at}.url must be an http(s) URL with a host")),
        }
        let manifest = Manifest::parse(&self.manifest).map_err(|e| format!("{at}: {e}"))?;
        if manifest.version != version {
            return Err(format!(
                "{at}: the manifest is signed for version {}, the job says {version}",
                manifest.version
            ));
        }
        if self.signature.trim().is_empty() || self.signature.len() > 4096 {
            return Err(format!("{at}.signature must be 1 to 4096 characters"));
        }
        Ok(manifest)
    }
}

impl JobDocument {
    /// The one check of a job document, wherever it came from (the cloud's API, a retained
    /// message, an IoT Jobs document): the id, the version, and every artifact's fields.
    pub fn check(&self) -> Result<(), String> {
        check_job_id(&self.job_id)?;
        check_version(&self.version)?;
        if self.artifacts.is_empty() {
            return Err("artifacts must name at least one architecture".into());
        }
        for (arch, artifact) in &self.artifacts {
            if !ARCHES.contains(&arch.as_str()) {
                return Err(format!(
                    "artifacts.{arch}: the architectures are {ARCHES:?}"
                ));
            }
            artifact.check(&format!("artifacts.{arch}"), &self.version)?;
        }
        Ok(())
    }
}

/// A job id names a topic level and a file: 1 to 128 of `[A-Za-z0-9_-]`.
pub fn check_job_id(id: &str) -> Result<(), String> {
    if id.is_empty()
        || id.len() > 128
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(format!(
            "job id {id:?} must be 1 to 128 of A-Z, a-z, 0-9, _ and -"
        ));
    }
    Ok(())
}

/// Debian's name for the architecture this binary was built for, as [`JobDocument`] keys it.
pub fn this_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "armhf",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answer_topics_parse_and_others_do_not() {
        let dev = DeviceId::new("pi-7").expect("id");
        assert_eq!(
            Answer::parse(&config_reported_topic(&dev)),
            Some(Answer::Reported(dev.clone()))
        );
        assert_eq!(
            Answer::parse(&job_status_topic(&dev, "r1-pi-7")),
            Some(Answer::JobStatus {
                device: dev.clone(),
                job_id: "r1-pi-7".into()
            })
        );
        assert_eq!(
            Answer::parse(&shadow_topic("pi-7", "update/documents")),
            Some(Answer::ShadowDocuments(dev.clone()))
        );
        for other in [
            config_topic(&dev),
            jobs_topic(&dev),
            "ferry/v1/pi-7/jobs/a/b/status".into(),
            "ferry/v1/bad id/config/reported".into(),
            shadow_topic("pi-7", "update"),
            "other/pi-7/config/reported".into(),
        ] {
            assert_eq!(Answer::parse(&other), None, "{other}");
        }
    }

    fn manifest(version: &str) -> Manifest {
        Manifest {
            version: version.into(),
            arch: "amd64".into(),
            sha256: "ab".repeat(32),
            size: 10,
            min_version: "0.1.0".into(),
            rollback_to: false,
            expires: crate::Timestamp::parse("2030-01-01T00:00:00Z").expect("ts"),
        }
    }

    fn job(version: &str, url: &str) -> JobDocument {
        let artifact = Artifact {
            url: url.into(),
            manifest: manifest(version).to_text(),
            signature: "c2ln".into(),
        };
        JobDocument {
            job_id: "r1-pi".into(),
            version: version.into(),
            artifacts: [("amd64".to_string(), artifact)].into(),
        }
    }

    #[test]
    fn job_documents_are_checked_field_by_field() {
        assert_eq!(
            job("1.2.3-rc.1+g7", "https://example.com/a").check(),
            Ok(())
        );
        for (version, url, want) in [
            ("1.0\nstarted=now", "https://h/a", "version"),
            ("now[$(id>&2)]", "https://h/a", "version"),
            ("", "https://h/a", "version"),
            (&"9".repeat(65), "https://h/a", "version"),
            ("1.0 beta", "https://h/a", "version"),
            ("1.0.0", "ftp://h/a", "url"),
            ("1.0.0", "https://", "url"),
            ("1.0.0", "file:///etc/passwd", "url"),
            ("1.0.0", "not a url", "url"),
            ("1.0", "https://h/a", "semver"),
        ] {
            let err = job(version, url).check().expect_err(version);
            assert!(err.contains(want), "{version} {url}: {err}");
        }
        // The job's version and the signed one are the same, or the job is mislabelled.
        let mut mislabelled = job("1.0.0", "https://h/a");
        mislabelled.version = "2.0.0".into();
        let err = mislabelled.check().expect_err("mislabelled");
        assert!(err.contains("signed for version 1.0.0"), "{err}");
        let mut other = job("1.0.0", "https://h/a");
        other
            .artifacts
            .insert("sparc".into(), other.artifacts["amd64"].clone());
        assert!(other.check().expect_err("arch").contains("sparc"));
        let unknown = r#"{"job_id":"j","version":"1","artifacts":{},"run":"x"}"#;
        assert!(serde_json::from_str::<JobDocument>(unknown).is_err());
    }

    #[test]
    fn job_ids_are_topic_and_file_safe() {
        assert!(check_job_id("r-12_ab").is_ok());
        for bad in ["", "a/b", "..", "a+b", &"x".repeat(129)] {
            assert!(check_job_id(bad).is_err(), "{bad}");
        }
    }
}
