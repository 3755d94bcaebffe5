//! Agent configuration (README: agent configuration): TOML, with `FERRY_A__B` environment overrides, checked
//! in full at startup so that a bad value fails with the key that holds it.

use std::path::{Path, PathBuf};

use ferry_shared::limits::{MAX_RECORD_BYTES, MAX_TEXT_LEN};
use ferry_shared::sensor_line::LineFormat;
use ferry_shared::{DeviceId, TxId, TxnOp};
use serde::Deserialize;

pub use crate::sources::EdgeFilterConfig;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config: {0}")]
    Shape(String),
    #[error("config key {key}: {problem}")]
    Invalid { key: String, problem: String },
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub device_id: DeviceId,
    pub data_dir: PathBuf,
    pub mqtt: MqttConfig,
    #[serde(default)]
    pub spool: SpoolConfig,
    #[serde(default)]
    pub sources: Vec<SourceConfig>,
    /// The local HTTP API for POS software; off when the table is absent.
    #[serde(default)]
    pub pos_api: Option<PosApiConfig>,
    /// A tracing filter (`info`, `debug`, `ferry_agent::uplink=debug`); `FERRY_LOG`, when
    /// set, wins.
    #[serde(default = "defaults::log_level")]
    pub log_level: String,
    #[serde(default)]
    pub update: UpdateConfig,
    #[serde(default)]
    pub clock: ClockConfig,
}

/// `[clock]` (README: clocks): what says the wall clock can be believed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockConfig {
    /// `auto`, `kernel`, `build_time` or `file:/absolute/path`.
    #[serde(default)]
    pub synced_by: crate::clock::SyncedBy,
}

/// `[update]` (README: updates): signed binaries from the cloud's rollouts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateConfig {
    /// The ed25519 key updates must be signed with: 32 bytes in base64, or a minisign
    /// public key. Without it every update is refused.
    pub public_key: Option<String>,
    /// How long a new binary has to open the spool, connect and deliver its status.
    #[serde(default = "defaults::trial_s")]
    pub trial_s: u64,
    /// The largest artifact this device downloads.
    #[serde(default = "defaults::update_max_bytes")]
    pub max_bytes: u64,
    /// The binary an update replaces; by default the one running. The packaged unit runs
    /// `/var/lib/ferry/bin/ferry-agent`, which the service may write.
    pub binary: Option<PathBuf>,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        Self {
            public_key: None,
            trial_s: defaults::trial_s(),
            max_bytes: defaults::update_max_bytes(),
            binary: None,
        }
    }
}

impl UpdateConfig {
    /// The verifying key, when updates are on.
    pub fn key(&self) -> Result<Option<ferry_shared::signing::PublicKey>, ConfigError> {
        self.public_key
            .as_deref()
            .map(|k| {
                ferry_shared::signing::PublicKey::parse(k)
                    .map_err(|e| invalid("update.public_key", e.to_string()))
            })
            .transpose()
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PosApiConfig {
    pub listen: std::net::SocketAddr,
    token: Option<String>,
    token_file: Option<PathBuf>,
}

// By hand, so that the token never reaches a log through `{:?}`.
impl std::fmt::Debug for PosApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PosApiConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .finish()
    }
}

impl PosApiConfig {
    /// The bearer token, from `token` or the first line of `token_file`, refused when weak
    /// or a placeholder.
    pub fn token(&self) -> Result<String, ConfigError> {
        ferry_shared::token::from_config(self.token.as_deref(), self.token_file.as_deref()).map_err(
            |(key, problem)| {
                let key = match key {
                    "token_file" => "pos_api.token_file",
                    _ => "pos_api.token",
                };
                invalid(key, problem)
            },
        )
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://HOST:PORT` (plain TCP) or `mqtts://HOST:PORT` (mutual TLS).
    pub url: String,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// ALPN protocols. Defaults to `["x-amzn-mqtt-ca"]` on port 443, which IoT Core needs there.
    pub alpn: Option<Vec<String>>,
    #[serde(default = "defaults::keep_alive_s")]
    pub keep_alive_s: u64,
    /// IoT Core allows 100 publishes per second per connection and drops the excess.
    #[serde(default = "defaults::publishes_per_s")]
    pub publishes_per_s: u32,
    /// IoT Core allows 512 KiB/s per connection.
    #[serde(default = "defaults::bytes_per_s")]
    pub bytes_per_s: u32,
    /// Unacknowledged QoS 1 publishes; IoT Core allows at most 100.
    #[serde(default = "defaults::max_inflight")]
    pub max_inflight: u16,
    /// gzip level 0–9 for envelopes; by default chosen from `bytes_per_s`
    /// ([`MqttConfig::gzip_level`]).
    pub gzip_level: Option<u32>,
    /// How often the retained status message is refreshed.
    #[serde(default = "defaults::status_interval_s")]
    pub status_interval_s: u64,
    /// Where the desired configuration and update jobs come from: `auto` (IoT Core's named
    /// shadow and jobs on `*.amazonaws.com`, else Ferry's retained topics), `aws`, `ferry`.
    #[serde(default)]
    pub fleet_topics: crate::fleet::channel::FleetTopics,
}

/// Above this byte quota a link is bound by the device's CPU rather than by the quota.
///
/// Measured (docs/BENCHMARKS.md, the drain bench): level 6 sends 11.3 bytes per reading
/// against 17.9 at level 1, so a link held to its byte quota carries 1.6 times the records;
/// it costs 1.6 against 1.3 CPU seconds per million records on the bench machine. A Pi 4,
/// about four times slower, builds ~150k records/s at level 6, ~1.7 MB/s of payload: below
/// that quota the quota binds first and level 6 drains faster; above it the CPU binds and
/// level 1 does.
const CPU_BOUND_BYTES_PER_S: u32 = 2 * 1024 * 1024;

impl MqttConfig {
    /// The gzip level set, or the one that drains fastest on this link.
    pub fn gzip_level(&self) -> u32 {
        self.gzip_level
            .unwrap_or(if self.bytes_per_s <= CPU_BOUND_BYTES_PER_S {
                6
            } else {
                1
            })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    #[serde(default = "defaults::max_bytes")]
    pub max_bytes: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            max_bytes: defaults::max_bytes(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    Simulator(SimulatorConfig),
    /// A sensor streaming readings over serial (USB or UART).
    Serial(SerialConfig),
    /// A card reader at the till.
    CardReader(CardReaderConfig),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialConfig {
    /// The device, e.g. `/dev/ttyUSB0`; a udev symlink such as `/dev/serial/by-id/...`
    /// survives re-plugging into another USB port.
    pub path: PathBuf,
    #[serde(default = "defaults::baud")]
    pub baud: u32,
    pub format: LineFormat,
    /// The `sensor` of the readings.
    pub sensor: String,
    #[serde(default = "defaults::max_line_bytes")]
    pub max_line_bytes: usize,
    /// Thins readings before they are spooled; off when absent.
    pub filter: Option<EdgeFilterConfig>,
    /// Bad lines are reported as `event` records at most once per this many seconds.
    #[serde(default = "defaults::report_window_s")]
    pub report_window_s: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CardReaderConfig {
    pub path: PathBuf,
    #[serde(default = "defaults::baud")]
    pub baud: u32,
    /// The `reader` of the scans.
    pub reader: String,
    /// A regular expression the whole card id must match, e.g. `C-[0-9]{4}`.
    pub pattern: Option<String>,
    /// The same card read again within this time is ignored.
    #[serde(default = "defaults::debounce_ms")]
    pub debounce_ms: u64,
    #[serde(default = "defaults::card_line_bytes")]
    pub max_line_bytes: usize,
    /// Turns every scan into a transaction as well.
    pub on_scan: Option<ScanRule>,
    #[serde(default = "defaults::report_window_s")]
    pub report_window_s: u64,
}

impl CardReaderConfig {
    /// The pattern, anchored at both ends: a card id matches whole or not at all.
    pub fn compiled_pattern(&self) -> Result<Option<regex::Regex>, regex::Error> {
        self.pattern
            .as_deref()
            .map(|p| regex::Regex::new(&format!("^(?:{p})$")))
            .transpose()
    }
}

/// `on_scan = { op = "stamp", program = "coffee", qty = 1, store = "S-01" }`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanRule {
    pub op: TxnOp,
    pub program: String,
    pub store: String,
    #[serde(default = "defaults::qty")]
    pub qty: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatorConfig {
    pub profile: SimulatorProfile,
    #[serde(default = "defaults::interval_ms")]
    pub interval_ms: u64,
    /// 0 = unlimited; otherwise this many records per run of the process.
    #[serde(default)]
    pub count: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SimulatorProfile {
    /// `reading` records from a simulated weather station.
    Weather,
    /// `txn` records from a simulated till.
    Pos,
}

mod defaults {
    pub fn keep_alive_s() -> u64 {
        30
    }
    pub fn publishes_per_s() -> u32 {
        100
    }
    pub fn bytes_per_s() -> u32 {
        512 * 1024
    }
    pub fn max_inflight() -> u16 {
        100
    }
    pub fn status_interval_s() -> u64 {
        60
    }
    pub fn max_bytes() -> u64 {
        256 * 1024 * 1024
    }
    pub fn interval_ms() -> u64 {
        1000
    }
    pub fn baud() -> u32 {
        9600
    }
    pub fn max_line_bytes() -> usize {
        1024
    }
    pub fn card_line_bytes() -> usize {
        256
    }
    pub fn report_window_s() -> u64 {
        60
    }
    pub fn debounce_ms() -> u64 {
        2000
    }
    pub fn qty() -> u64 {
        1
    }
    pub fn log_level() -> String {
        "info".into()
    }
    pub fn trial_s() -> u64 {
        120
    }
    pub fn update_max_bytes() -> u64 {
        64 * 1024 * 1024
    }
}

pub use ferry_shared::config_env::BrokerAddr;

impl MqttConfig {
    pub fn broker(&self) -> Result<BrokerAddr, ConfigError> {
        BrokerAddr::parse(&self.url).map_err(|problem| invalid("mqtt.url", problem))
    }

    /// ALPN protocols to offer: see [`alpn_protocols`].
    pub fn alpn_protocols(&self, port: u16) -> Vec<String> {
        alpn_protocols(self.alpn.as_deref(), port)
    }
}

/// ALPN protocols to offer: the configured ones, else IoT Core's on port 443. `enroll`
/// reads `mqtt.alpn` from a config that is not yet whole, so this takes the list itself.
pub fn alpn_protocols(configured: Option<&[String]>, port: u16) -> Vec<String> {
    match configured {
        Some(list) => list.to_vec(),
        None if port == 443 => vec!["x-amzn-mqtt-ca".to_owned()],
        None => Vec::new(),
    }
}

/// The config file as read, kept so that a desired configuration can be laid over it
/// (`fleet::desired`) and checked by the same [`AgentConfig::parse`].
#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub text: String,
}

impl ConfigFile {
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self {
            path: path.to_owned(),
            text,
        })
    }

    /// The file alone, with `FERRY_*` overrides from the process environment.
    pub fn parse(&self) -> Result<AgentConfig, ConfigError> {
        AgentConfig::parse(&self.text, std::env::vars())
    }
}

impl AgentConfig {
    /// Reads `path`, applies `FERRY_*` overrides from the process environment, and checks it.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        ConfigFile::read(path)?.parse()
    }

    pub fn parse(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let config: Self =
            ferry_shared::config_env::parse(text, env).map_err(ConfigError::Shape)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let broker = self.mqtt.broker()?;
        if broker.tls {
            let m = &self.mqtt;
            ferry_shared::config_env::check_tls_files(&m.ca_file, &m.cert_file, &m.key_file)
                .map_err(|(key, problem)| invalid(key, problem))?;
        }
        let m = &self.mqtt;
        if !(30..=1200).contains(&m.keep_alive_s) {
            return Err(invalid(
                "mqtt.keep_alive_s",
                "IoT Core accepts 30 to 1200 seconds",
            ));
        }
        if m.publishes_per_s == 0 {
            return Err(invalid("mqtt.publishes_per_s", "must be at least 1"));
        }
        if (m.bytes_per_s as usize) < ferry_shared::limits::MAX_PAYLOAD_BYTES {
            return Err(invalid(
                "mqtt.bytes_per_s",
                "must be at least 131072, one full payload",
            ));
        }
        if m.max_inflight == 0 {
            return Err(invalid("mqtt.max_inflight", "must be at least 1"));
        }
        if m.gzip_level.is_some_and(|l| l > 9) {
            return Err(invalid("mqtt.gzip_level", "must be 0 to 9"));
        }
        if m.status_interval_s == 0 {
            return Err(invalid("mqtt.status_interval_s", "must be at least 1"));
        }
        if self.spool.max_bytes < 1024 * 1024 {
            return Err(invalid("spool.max_bytes", "must be at least 1 MiB"));
        }
        if let Some(pos) = &self.pos_api {
            pos.token()?;
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            return Err(invalid("log_level", format!("not a log filter: {e}")));
        }
        self.update.key()?;
        if !(10..=3600).contains(&self.update.trial_s) {
            return Err(invalid("update.trial_s", "must be 10 to 3600 seconds"));
        }
        if self.update.max_bytes < 1024 * 1024 {
            return Err(invalid("update.max_bytes", "must be at least 1 MiB"));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        for (i, source) in self.sources.iter().enumerate() {
            source
                .validate()
                .map_err(|(key, problem)| invalid(format!("sources[{i}].{key}"), problem))?;
        }
        Ok(())
    }
}

impl SourceConfig {
    /// The problem with this source, as (key within the source, message).
    fn validate(&self) -> Result<(), (&'static str, String)> {
        match self {
            Self::Simulator(_) => Ok(()),
            Self::Serial(c) => {
                check_port(&c.path, c.baud, c.max_line_bytes, 16..=MAX_RECORD_BYTES / 2)?;
                check_text("sensor", &c.sensor)?;
                if let Some(filter) = &c.filter {
                    filter.check()?;
                }
                check_window(c.report_window_s)
            }
            Self::CardReader(c) => {
                check_port(&c.path, c.baud, c.max_line_bytes, 8..=MAX_TEXT_LEN)?;
                check_text("reader", &c.reader)?;
                c.compiled_pattern()
                    .map_err(|e| ("pattern", format!("not a valid regular expression: {e}")))?;
                if let Some(rule) = &c.on_scan {
                    if !matches!(rule.op, TxnOp::Stamp | TxnOp::Earn) {
                        return Err((
                            "on_scan.op",
                            "a scan can only \"stamp\" or \"earn\"; redemptions and reversals need the cashier (POS API)".into(),
                        ));
                    }
                    let probe = rule.txn(
                        TxId::new("probe").map_err(|e| ("on_scan", e.to_string()))?,
                        "probe",
                    );
                    probe.validate().map_err(|e| ("on_scan", e.to_string()))?;
                }
                check_window(c.report_window_s)
            }
        }
    }
}

fn check_port(
    path: &Path,
    baud: u32,
    max_line_bytes: usize,
    line_range: std::ops::RangeInclusive<usize>,
) -> Result<(), (&'static str, String)> {
    if path.as_os_str().is_empty() || path.to_str().is_none() {
        return Err(("path", "must be a non-empty UTF-8 device path".into()));
    }
    if baud == 0 {
        return Err(("baud", "must be at least 1".into()));
    }
    if !line_range.contains(&max_line_bytes) {
        return Err((
            "max_line_bytes",
            format!("must be {} to {}", line_range.start(), line_range.end()),
        ));
    }
    Ok(())
}

fn check_text(key: &'static str, value: &str) -> Result<(), (&'static str, String)> {
    if value.is_empty() || value.len() > MAX_TEXT_LEN || value.chars().any(char::is_control) {
        return Err((
            key,
            format!("must be 1 to {MAX_TEXT_LEN} bytes without control characters"),
        ));
    }
    Ok(())
}

fn check_window(report_window_s: u64) -> Result<(), (&'static str, String)> {
    if report_window_s == 0 {
        return Err(("report_window_s", "must be at least 1".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
device_id = "ws-001"
data_dir = "/tmp/ferry"
[mqtt]
url = "mqtt://127.0.0.1:1883"
[[sources]]
type = "simulator"
profile = "weather"
"#;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_with_defaults() {
        let c = AgentConfig::parse(BASE, []).expect("valid");
        assert_eq!(c.mqtt.publishes_per_s, 100);
        assert_eq!(c.spool.max_bytes, 256 * 1024 * 1024);
        assert_eq!(c.mqtt.broker().expect("url").port, 1883);
    }

    #[test]
    fn gzip_level_follows_the_byte_quota_unless_set() {
        let level = |vars: &[(&str, &str)]| {
            AgentConfig::parse(BASE, env(vars))
                .expect("valid")
                .mqtt
                .gzip_level()
        };
        assert_eq!(level(&[]), 6, "IoT Core's quota binds: compress harder");
        assert_eq!(level(&[("FERRY_MQTT__BYTES_PER_S", "100000000")]), 1);
        assert_eq!(
            level(&[
                ("FERRY_MQTT__BYTES_PER_S", "100000000"),
                ("FERRY_MQTT__GZIP_LEVEL", "9")
            ]),
            9
        );
        let err = AgentConfig::parse(BASE, env(&[("FERRY_MQTT__GZIP_LEVEL", "10")]))
            .expect_err("out of range");
        assert!(err.to_string().contains("mqtt.gzip_level"), "{err}");
    }

    #[test]
    fn env_overrides_keep_the_key_type() {
        let c = AgentConfig::parse(
            BASE,
            env(&[
                ("FERRY_MQTT__URL", "mqtt://10.0.0.1:1884"),
                ("FERRY_SPOOL__MAX_BYTES", "2097152"),
                ("FERRY_DEVICE_ID", "123"),
                ("PATH", "/bin"),
            ]),
        )
        .expect("valid");
        assert_eq!(c.mqtt.broker().expect("url").port, 1884);
        assert_eq!(c.spool.max_bytes, 2 * 1024 * 1024);
        assert_eq!(c.device_id.as_str(), "123");
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (("FERRY_MQTT__URL", "http://x"), "mqtt.url"),
            (("FERRY_MQTT__URL", "mqtts://x:8883"), "mqtt.ca_file"),
            (("FERRY_MQTT__KEEP_ALIVE_S", "5"), "mqtt.keep_alive_s"),
            (("FERRY_SPOOL__MAX_BYTES", "10"), "spool.max_bytes"),
            (("FERRY_DEVICE_ID", "bad id"), "device_id"),
            (("FERRY_MQTT__TYPO", "1"), "typo"),
            (("FERRY_SPOOL__MAX_BYTES", "lots"), "max_bytes"),
        ];
        for (vars, key) in cases {
            let err = AgentConfig::parse(BASE, env(&[vars]))
                .expect_err("must fail")
                .to_string();
            assert!(err.contains(key), "{vars:?}: {err:?} does not name {key}");
        }
    }

    #[test]
    fn serial_sources_parse_and_their_errors_name_the_key() {
        let serial = |extra: &str| {
            format!(
                "{BASE}[[sources]]\ntype = \"serial\"\npath = \"/dev/ttyUSB0\"\nformat = \"kv\"\n\
                 sensor = \"bme280\"\n{extra}"
            )
        };
        let card = |extra: &str| {
            format!(
                "{BASE}[[sources]]\ntype = \"card_reader\"\npath = \"/dev/ttyACM0\"\n\
                 reader = \"till\"\n{extra}"
            )
        };
        let c = AgentConfig::parse(
            &serial(
                "[sources.filter]\nmin_interval_ms = 5000\ndeadband = { temperature_c = 0.2 }\n",
            ),
            [],
        )
        .expect("valid");
        let SourceConfig::Serial(s) = &c.sources[1] else {
            panic!("a serial source");
        };
        let filter = s.filter.as_ref().expect("filter");
        assert_eq!(
            (s.baud, s.max_line_bytes, filter.heartbeat_s),
            (9600, 1024, 600)
        );
        assert_eq!(filter.deadband.get("temperature_c"), Some(&0.2));

        let cases = [
            (serial("baud = 0"), "sources[1].baud"),
            (serial("max_line_bytes = 1"), "sources[1].max_line_bytes"),
            (serial("report_window_s = 0"), "sources[1].report_window_s"),
            (
                serial("[sources.filter]\ndeadband = { t = -1.0 }"),
                "sources[1].filter.deadband",
            ),
            (
                serial("[sources.filter]\nheartbeat_s = 0"),
                "sources[1].filter.heartbeat_s",
            ),
            (card("pattern = \"C-[0-9\""), "sources[1].pattern"),
            (
                card("on_scan = { op = \"redeem\", program = \"p\", store = \"s\" }"),
                "sources[1].on_scan.op",
            ),
            (
                card("on_scan = { op = \"stamp\", program = \"\", store = \"s\" }"),
                "sources[1].on_scan",
            ),
            (
                card("on_scan = { op = \"stamp\", program = \"p\", store = \"s\", qty = 0 }"),
                "sources[1].on_scan",
            ),
            (card("max_line_bytes = 100000"), "sources[1].max_line_bytes"),
        ];
        for (text, key) in cases {
            let err = AgentConfig::parse(&text, []).expect_err(key).to_string();
            assert!(err.contains(key), "{err:?} does not name {key}");
        }
    }

    #[test]
    fn alpn_defaults_to_iot_core_on_443() {
        let c = AgentConfig::parse(BASE, []).expect("valid");
        assert_eq!(c.mqtt.alpn_protocols(443), vec!["x-amzn-mqtt-ca"]);
        assert!(c.mqtt.alpn_protocols(8883).is_empty());
    }
}
