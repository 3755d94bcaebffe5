//! The desired configuration (README: remote configuration): which settings may change
//! remotely, how they are laid over the config file, and where the last applied document
//! and the last answer are kept so that a reboot offline keeps both.

use std::path::{Path, PathBuf};

use ferry_shared::fleet::{DesiredConfig, ReportedConfig, check_remote_keys};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tracing::warn;

use crate::config::{AgentConfig, ConfigFile};

/// The file with `desired` laid over it, checked exactly as the file alone is. The error
/// names the key at fault.
pub fn apply(file: &ConfigFile, desired: &Map<String, Value>) -> Result<AgentConfig, String> {
    check_remote_keys(desired)?;
    let mut base: toml::Table = toml::from_str(&file.text).map_err(|e| e.to_string())?;
    for (key, value) in desired {
        let value = to_toml(key, value)?;
        match value {
            toml::Value::Table(settings) if key != "sources" => {
                let section = base
                    .entry(key.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                let toml::Value::Table(section) = section else {
                    return Err(format!("key {key} in the config file is not a table"));
                };
                section.extend(settings);
            }
            value => {
                base.insert(key.clone(), value);
            }
        }
    }
    let text = toml::to_string(&base).map_err(|e| e.to_string())?;
    let desired_cfg = AgentConfig::parse(&text, std::env::vars()).map_err(|e| e.to_string())?;
    let own = AgentConfig::parse(&file.text, std::env::vars()).map_err(|e| e.to_string())?;
    check_bounds(&own, &desired_cfg, spool_room(&own.data_dir))?;
    Ok(desired_cfg)
}

/// What the spool could grow to on its disk now: its files' size plus nine tenths of the
/// space free to this user (the rest for the system and the WAL's checkpoints). `None`
/// when the disk cannot be asked (the folder does not exist yet).
fn spool_room(data_dir: &Path) -> Option<u64> {
    let fs = rustix::fs::statvfs(data_dir).ok()?;
    let free = fs.f_bavail.saturating_mul(fs.f_frsize);
    let spool = crate::spool::FILE_NAME;
    let used: u64 = ["", "-wal", "-shm"]
        .iter()
        .filter_map(|suffix| std::fs::metadata(data_dir.join(format!("{spool}{suffix}"))).ok())
        .map(|m| m.len())
        .sum();
    Some(used.saturating_add(free / 10 * 9))
}

/// IoT Core's per-connection quotas: a remote document may raise the rates up to these, or
/// to what the file itself says, whichever is higher.
const QUOTA_PUBLISHES_PER_S: u32 = 100;
const QUOTA_BYTES_PER_S: u32 = 512 * 1024;
const QUOTA_INFLIGHT: u16 = 100;
/// The most spool a remote document may ask for, unless the file asks for more.
const SPOOL_CEILING: u64 = 16 * 1024 * 1024 * 1024;

/// A remote document can only tune a device within what its owner allowed: the file's own
/// values, or IoT Core's quotas and a spool ceiling (itself within `spool_room`, what the
/// disk can hold) where those are higher. So a fleet message cannot push a device past its
/// broker's quotas or fill its disk.
fn check_bounds(
    own: &AgentConfig,
    desired: &AgentConfig,
    spool_room: Option<u64>,
) -> Result<(), String> {
    let remote_spool = spool_room.map_or(SPOOL_CEILING, |room| room.min(SPOOL_CEILING));
    let (m, d) = (&own.mqtt, &desired.mqtt);
    let bounds: [(&str, u64, u64); 4] = [
        (
            "mqtt.publishes_per_s",
            d.publishes_per_s.into(),
            m.publishes_per_s.max(QUOTA_PUBLISHES_PER_S).into(),
        ),
        (
            "mqtt.bytes_per_s",
            d.bytes_per_s.into(),
            m.bytes_per_s.max(QUOTA_BYTES_PER_S).into(),
        ),
        (
            "mqtt.max_inflight",
            d.max_inflight.into(),
            m.max_inflight.max(QUOTA_INFLIGHT).into(),
        ),
        (
            "spool.max_bytes",
            desired.spool.max_bytes,
            own.spool.max_bytes.max(remote_spool),
        ),
    ];
    let found = bounds.into_iter().filter(|&(_, value, limit)| value > limit).map(|(key, value, limit)| {
        format!("config key {key}: {value} is above {limit}, the most a remote document may set here")
    });
    found.into_iter().next().map_or(Ok(()), Err)
}

/// JSON has null and TOML has not: a null is refused by name rather than dropped.
fn to_toml(key: &str, value: &Value) -> Result<toml::Value, String> {
    fn find_null(v: &Value, at: &str) -> Option<String> {
        match v {
            Value::Null => Some(at.to_owned()),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, v)| find_null(v, &format!("{at}[{i}]"))),
            Value::Object(map) => map
                .iter()
                .find_map(|(k, v)| find_null(v, &format!("{at}.{k}"))),
            _ => None,
        }
    }
    if let Some(at) = find_null(value, key) {
        return Err(format!(
            "key {at} is null; leave it out to keep the file's value"
        ));
    }
    toml::Value::try_from(value).map_err(|e| format!("key {key}: {e}"))
}

/// `{data_dir}/fleet/`: the desired document last applied and the answer last given.
#[derive(Debug, Clone)]
pub struct DesiredStore {
    dir: PathBuf,
}

const DESIRED: &str = "desired.json";
const REPORTED: &str = "reported.json";

impl DesiredStore {
    pub fn open(data_dir: &Path) -> std::io::Result<Self> {
        let dir = data_dir.join("fleet");
        crate::durable_file::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    pub fn desired(&self) -> Option<DesiredConfig> {
        self.read(DESIRED)
    }

    pub fn reported(&self) -> Option<ReportedConfig> {
        self.read(REPORTED)
    }

    /// Keeps an applied document and its answer; the answer last, so that a crash between
    /// the two makes the document be answered again rather than answered and not kept.
    pub fn applied(&self, desired: &DesiredConfig, answer: &ReportedConfig) -> std::io::Result<()> {
        self.write(DESIRED, desired)?;
        self.write(REPORTED, answer)
    }

    pub fn refused(&self, answer: &ReportedConfig) -> std::io::Result<()> {
        self.write(REPORTED, answer)
    }

    fn read<T: DeserializeOwned>(&self, name: &str) -> Option<T> {
        let path = self.dir.join(name);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                warn!(path = %path.display(), error = %e, "cannot read; ignoring it");
                return None;
            }
        };
        serde_json::from_slice(&bytes)
            .inspect_err(|e| warn!(path = %path.display(), error = %e, "not readable; ignoring it"))
            .ok()
    }

    fn write<T: Serialize>(&self, name: &str, value: &T) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
        crate::durable_file::write(&self.dir.join(name), &bytes, 0o600, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SourceConfig;

    fn file() -> ConfigFile {
        ConfigFile {
            path: "agent.toml".into(),
            text: r#"
# a comment
device_id = "ws-001"
data_dir = "/tmp/ferry"
[mqtt]
url = "mqtt://127.0.0.1:1883"
publishes_per_s = 50
[[sources]]
type = "simulator"
profile = "weather"
interval_ms = 1000
"#
            .into(),
        }
    }

    fn doc(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).expect("json")
    }

    #[test]
    fn remote_settings_lay_over_the_file() {
        let cfg = apply(
            &file(),
            &doc(r#"{"sources": [{"type": "simulator", "profile": "weather", "interval_ms": 50}],
                     "mqtt": {"gzip_level": 1}, "spool": {"max_bytes": 2097152}, "log_level": "debug"}"#),
        )
        .expect("valid");
        let SourceConfig::Simulator(sim) = &cfg.sources[0] else {
            panic!("simulator")
        };
        assert_eq!(sim.interval_ms, 50);
        assert_eq!(cfg.mqtt.gzip_level, Some(1));
        assert_eq!(
            cfg.mqtt.publishes_per_s, 50,
            "the file's other mqtt keys stay"
        );
        assert_eq!(cfg.mqtt.url, "mqtt://127.0.0.1:1883");
        assert_eq!(cfg.spool.max_bytes, 2 * 1024 * 1024);
        assert_eq!(cfg.log_level, "debug");
        assert_eq!(cfg.device_id.as_str(), "ws-001");
        let empty = apply(&file(), &Map::new()).expect("nothing desired");
        assert_eq!(empty.sources.len(), 1);
    }

    #[test]
    fn refusals_name_the_key() {
        let cases = [
            (r#"{"device_id": "x"}"#, "device_id"),
            (r#"{"mqtt": {"cert_file": "/x"}}"#, "mqtt.cert_file"),
            (r#"{"mqtt": {"url": "mqtt://evil:1883"}}"#, "mqtt.url"),
            (r#"{"pos_api": {"listen": "0.0.0.0:1"}}"#, "pos_api"),
            (r#"{"mqtt": {"gzip_level": 12}}"#, "mqtt.gzip_level"),
            (r#"{"spool": {"max_bytes": 10}}"#, "spool.max_bytes"),
            (r#"{"spool": {"max_bytes": null}}"#, "spool.max_bytes"),
            (r#"{"mqtt": 3}"#, "mqtt"),
            (r#"{"log_level": "[["}"#, "log_level"),
            (
                r#"{"sources": [{"type": "serial", "path": "/dev/ttyUSB0", "format": "kv", "sensor": "t", "baud": 0}]}"#,
                "sources[0].baud",
            ),
            (r#"{"sources": [{"type": "teleport"}]}"#, "teleport"),
            (
                r#"{"mqtt": {"publishes_per_s": 101}}"#,
                "mqtt.publishes_per_s",
            ),
            (
                r#"{"mqtt": {"bytes_per_s": 1000000000}}"#,
                "mqtt.bytes_per_s",
            ),
            (r#"{"mqtt": {"max_inflight": 1000}}"#, "mqtt.max_inflight"),
            (
                r#"{"spool": {"max_bytes": 1099511627776}}"#,
                "spool.max_bytes",
            ),
        ];
        for (json, key) in cases {
            let err = apply(&file(), &doc(json)).expect_err(json);
            assert!(err.contains(key), "{json}: {err:?} does not name {key}");
        }
    }

    /// A larger spool than the file's fits what the disk has free now, and the ceiling.
    #[test]
    fn a_remote_spool_cap_fits_the_disk() {
        let own = AgentConfig::parse(&file().text, []).expect("own");
        let with_spool = |bytes: u64| {
            let mut c = own.clone();
            c.spool.max_bytes = bytes;
            c
        };
        let gib = 1024 * 1024 * 1024;
        assert_eq!(
            check_bounds(&own, &with_spool(2 * gib), Some(3 * gib)),
            Ok(())
        );
        let err = check_bounds(&own, &with_spool(4 * gib), Some(3 * gib)).expect_err("disk");
        assert!(
            err.contains("spool.max_bytes") && err.contains(&(3 * gib).to_string()),
            "{err}"
        );
        assert!(
            check_bounds(&own, &with_spool(17 * gib), Some(100 * gib)).is_err(),
            "ceiling"
        );
        assert_eq!(check_bounds(&own, &with_spool(2 * gib), None), Ok(()));
        // The file's own cap stands whatever the disk says: the owner set it.
        let big = with_spool(5 * gib);
        assert_eq!(check_bounds(&big, &with_spool(5 * gib), Some(gib)), Ok(()));
        // The real disk answers for a real folder.
        let dir = tempfile::tempdir().expect("tmp");
        assert!(spool_room(dir.path()).is_some_and(|room| room > 0));
        assert_eq!(spool_room(&dir.path().join("missing")), None);
    }

    #[test]
    fn the_store_keeps_what_was_applied_across_reopening() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = DesiredStore::open(dir.path()).expect("open");
        assert!(store.desired().is_none() && store.reported().is_none());
        let desired = DesiredConfig {
            version: 3,
            config: doc(r#"{"log_level": "debug"}"#),
        };
        let answer = ReportedConfig {
            version: 3,
            applied_at: Some("2026-12-02T00:00:00.000Z".into()),
            error: None,
        };
        store.applied(&desired, &answer).expect("kept");
        let again = DesiredStore::open(dir.path()).expect("reopen");
        assert_eq!(again.desired(), Some(desired));
        assert_eq!(again.reported(), Some(answer));
        std::fs::write(dir.path().join("fleet/desired.json"), b"{torn").expect("write");
        assert_eq!(again.desired(), None, "a torn file is ignored, not fatal");
    }
}
