//! Cloud configuration (CONTRACT §2b): TOML with `FERRY_A__B` environment overrides, checked
//! in full at startup so that a bad value fails with the key that holds it.

use std::path::{Path, PathBuf};

use ferry_shared::config_env::{self, BrokerAddr};
use serde::Deserialize;

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
    Invalid { key: &'static str, problem: String },
}

fn invalid(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        problem: problem.into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudConfig {
    /// Journals and durable queues.
    pub data_dir: PathBuf,
    /// The broker the ingest subscribes to; the ingest needs it.
    pub mqtt: Option<MqttConfig>,
    /// Where raw records land; the ingest needs it.
    pub lake: Option<LakeConfig>,
    #[serde(default)]
    pub ingest: IngestConfig,
    /// Where the ingest routes transactions (`url`, `token`), and the ledger the loyalty
    /// role keeps (`database`).
    pub loyalty: Option<LoyaltyConfig>,
    /// The HTTP APIs; the loyalty and dashboard roles need it.
    pub http: Option<HttpConfig>,
    /// The dashboards' hot store, which the ingest feeds and the dashboard role reads.
    pub dashboard: Option<DashboardConfig>,
}

/// A role of `ferry-cloud` (CONTRACT §1), and the sections it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Ingest,
    Loyalty,
    Dashboard,
    All,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Self::Ingest => "ingest",
            Self::Loyalty => "loyalty",
            Self::Dashboard => "dashboard",
            Self::All => "all",
        }
    }

    pub fn runs_ingest(self) -> bool {
        matches!(self, Self::Ingest | Self::All)
    }
}

/// What the ingest runs on, every required section present.
#[derive(Debug, Clone)]
pub struct IngestSetup {
    pub data_dir: PathBuf,
    pub mqtt: MqttConfig,
    pub lake: LakeConfig,
    pub ingest: IngestConfig,
    pub loyalty: Option<LoyaltyConfig>,
    /// With it, the ingest also feeds the hot store.
    pub dashboard: Option<DashboardConfig>,
}

/// `[dashboard]`: the hot store and what the dashboards make of it.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardConfig {
    /// `sqlite:///PATH` or `postgres://...`, as for the ledger.
    pub database: String,
    /// Raw readings are kept this long...
    #[serde(default = "defaults::raw_retention_days")]
    pub raw_retention_days: u32,
    /// ...and 1-minute rollups this long.
    #[serde(default = "defaults::rollup_retention_days")]
    pub rollup_retention_days: u32,
    /// A device not heard from for this long is offline, whatever it last said.
    #[serde(default = "defaults::offline_after_s")]
    pub offline_after_s: u64,
    /// How often the retention job runs.
    #[serde(default = "defaults::retention_interval_s")]
    pub retention_interval_s: u64,
    /// How often the event feed looks for news in the hot store, in ms.
    #[serde(default = "defaults::events_interval_ms")]
    pub events_interval_ms: u64,
    /// Threshold alarm rules (`[[dashboard.alarms]]`).
    #[serde(default)]
    pub alarms: Vec<crate::dashboard::AlarmRule>,
}

const DAY_MS: i64 = 24 * 3600 * 1000;

impl DashboardConfig {
    pub fn raw_keep_ms(&self) -> i64 {
        i64::from(self.raw_retention_days) * DAY_MS
    }

    pub fn rollup_keep_ms(&self) -> i64 {
        i64::from(self.rollup_retention_days) * DAY_MS
    }

    pub fn offline_after_ms(&self) -> i64 {
        i64::try_from(self.offline_after_s.saturating_mul(1000)).unwrap_or(i64::MAX)
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.database.is_empty() {
            return Err(invalid("dashboard.database", "must not be empty"));
        }
        if self.raw_retention_days == 0 {
            return Err(invalid(
                "dashboard.raw_retention_days",
                "must be at least 1",
            ));
        }
        if self.rollup_retention_days < self.raw_retention_days {
            return Err(invalid(
                "dashboard.rollup_retention_days",
                "must be at least dashboard.raw_retention_days",
            ));
        }
        if self.offline_after_s == 0 {
            return Err(invalid("dashboard.offline_after_s", "must be at least 1"));
        }
        if self.retention_interval_s == 0 {
            return Err(invalid(
                "dashboard.retention_interval_s",
                "must be at least 1",
            ));
        }
        if !(100..=60_000).contains(&self.events_interval_ms) {
            return Err(invalid(
                "dashboard.events_interval_ms",
                "must be 100 to 60000",
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for rule in &self.alarms {
            if rule.name.is_empty() || !names.insert(rule.name.as_str()) {
                return Err(invalid(
                    "dashboard.alarms",
                    format!("rule names must be present and unique ({:?})", rule.name),
                ));
            }
            if rule.metric.is_empty() {
                return Err(invalid(
                    "dashboard.alarms",
                    format!("rule {:?} needs a metric", rule.name),
                ));
            }
            if !rule.value.is_finite() {
                return Err(invalid(
                    "dashboard.alarms",
                    format!("rule {:?}: value must be a finite number", rule.name),
                ));
            }
        }
        Ok(())
    }
}

// By hand, so that a database password never reaches a log through `{:?}`.
impl std::fmt::Debug for DashboardConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DashboardConfig")
            .field("database", &redact_password(Some(&self.database)))
            .field("raw_retention_days", &self.raw_retention_days)
            .field("rollup_retention_days", &self.rollup_retention_days)
            .field("offline_after_s", &self.offline_after_s)
            .field("alarms", &self.alarms.len())
            .finish()
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoyaltyConfig {
    /// Where the ingest's router sends transactions: the loyalty role's HTTP address.
    pub url: String,
    /// The loyalty role's `http.token`.
    pub token: String,
    /// The ledger, for the loyalty role: `sqlite:///PATH` or `postgres://...`.
    pub database: Option<String>,
    /// Transactions per request to the loyalty API (at most 500, CONTRACT §6).
    #[serde(default = "defaults::route_batch")]
    pub batch: usize,
    /// Each request to the loyalty API gives up after this long and is retried.
    #[serde(default = "defaults::route_timeout_s")]
    pub timeout_s: u64,
    /// The router warns while the oldest transaction waiting for the ledger is older.
    #[serde(default = "defaults::backlog_alert_s")]
    pub backlog_alert_s: u64,
    /// How often the loyalty role lets points past their program's `expiry_days` lapse.
    #[serde(default = "defaults::expiry_interval_s")]
    pub expiry_interval_s: u64,
}

// By hand, so that the token never reaches a log through `{:?}`.
impl std::fmt::Debug for LoyaltyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoyaltyConfig")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .field("database", &redact_password(self.database.as_deref()))
            .field("batch", &self.batch)
            .field("timeout_s", &self.timeout_s)
            .field("backlog_alert_s", &self.backlog_alert_s)
            .field("expiry_interval_s", &self.expiry_interval_s)
            .finish()
    }
}

/// A database URL for a log line: `postgres://user:secret@host` loses its password.
pub fn redact_password(url: Option<&str>) -> Option<String> {
    let url = url?;
    let Some((scheme, rest)) = url.split_once("://") else {
        return Some(url.to_owned());
    };
    match rest.split_once('@') {
        Some((user, host)) if user.contains(':') => {
            let name = user.split(':').next().unwrap_or_default();
            Some(format!("{scheme}://{name}:<redacted>@{host}"))
        }
        _ => Some(url.to_owned()),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    pub url: String,
    pub client_id: String,
    /// Subscribe through `$share/{group}/...`, so that several ingests split the load.
    pub share_group: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    #[serde(default = "defaults::keep_alive_s")]
    pub keep_alive_s: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LakeConfig {
    /// `s3://bucket/prefix` or a local folder.
    pub root: String,
    pub s3_endpoint: Option<String>,
    #[serde(default)]
    pub s3_force_path_style: bool,
    pub s3_region: Option<String>,
    /// A partition is flushed when its gzipped size reaches this.
    #[serde(default = "defaults::flush_bytes")]
    pub flush_bytes: usize,
    /// ...or when its oldest record has waited this long.
    #[serde(default = "defaults::flush_interval_s")]
    pub flush_interval_s: u64,
    /// Partitions open at once; beyond it the oldest is flushed early.
    #[serde(default = "defaults::max_open_partitions")]
    pub max_open_partitions: usize,
    /// Gzipped bytes held in open partitions, all together; beyond it the largest is
    /// flushed early.
    #[serde(default = "defaults::max_buffer_bytes")]
    pub max_buffer_bytes: usize,
}

/// Where the lake lives, parsed from `lake.root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LakeRoot {
    Local(PathBuf),
    S3 { bucket: String, prefix: String },
}

impl LakeConfig {
    fn check(&self) -> Result<(), ConfigError> {
        self.root()?;
        if self.flush_bytes < 1024 {
            return Err(invalid("lake.flush_bytes", "must be at least 1024"));
        }
        if self.flush_interval_s == 0 {
            return Err(invalid("lake.flush_interval_s", "must be at least 1"));
        }
        if self.max_open_partitions == 0 {
            return Err(invalid("lake.max_open_partitions", "must be at least 1"));
        }
        if self.max_buffer_bytes < self.flush_bytes {
            return Err(invalid(
                "lake.max_buffer_bytes",
                "must be at least lake.flush_bytes",
            ));
        }
        Ok(())
    }

    pub fn root(&self) -> Result<LakeRoot, ConfigError> {
        match self.root.strip_prefix("s3://") {
            Some(rest) => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(invalid(
                        "lake.root",
                        "s3:// needs a bucket: s3://BUCKET/PREFIX",
                    ));
                }
                Ok(LakeRoot::S3 {
                    bucket: bucket.to_owned(),
                    prefix: prefix.trim_matches('/').to_owned(),
                })
            }
            None if self.root.contains("://") => Err(invalid(
                "lake.root",
                "must be s3://BUCKET/PREFIX or a local folder",
            )),
            None if self.root.is_empty() => Err(invalid("lake.root", "must not be empty")),
            None => Ok(LakeRoot::Local(PathBuf::from(&self.root))),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Messages admitted into the journal in one transaction (one fsync).
    #[serde(default = "defaults::admit_batch")]
    pub admit_batch: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            admit_batch: defaults::admit_batch(),
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: std::net::SocketAddr,
    pub token: String,
}

// By hand, so that the token never reaches a log through `{:?}`.
impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("listen", &self.listen)
            .field("token", &"<redacted>")
            .finish()
    }
}

mod defaults {
    pub fn keep_alive_s() -> u64 {
        30
    }
    pub fn flush_bytes() -> usize {
        8 * 1024 * 1024
    }
    pub fn flush_interval_s() -> u64 {
        60
    }
    pub fn max_open_partitions() -> usize {
        64
    }
    pub fn max_buffer_bytes() -> usize {
        64 * 1024 * 1024
    }
    pub fn admit_batch() -> usize {
        64
    }
    pub fn route_batch() -> usize {
        500
    }
    pub fn route_timeout_s() -> u64 {
        10
    }
    pub fn backlog_alert_s() -> u64 {
        300
    }
    pub fn expiry_interval_s() -> u64 {
        3600
    }
    pub fn raw_retention_days() -> u32 {
        7
    }
    pub fn rollup_retention_days() -> u32 {
        90
    }
    pub fn offline_after_s() -> u64 {
        600
    }
    pub fn retention_interval_s() -> u64 {
        3600
    }
    pub fn events_interval_ms() -> u64 {
        1000
    }
}

impl CloudConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, std::env::vars())
    }

    pub fn parse(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let config: Self = config_env::parse(text, env).map_err(ConfigError::Shape)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        if let Some(m) = &self.mqtt {
            m.check()?;
        }
        if let Some(l) = &self.lake {
            l.check()?;
        }
        if self.ingest.admit_batch == 0 {
            return Err(invalid("ingest.admit_batch", "must be at least 1"));
        }
        if let Some(loyalty) = &self.loyalty {
            if !(loyalty.url.starts_with("http://") || loyalty.url.starts_with("https://")) {
                return Err(invalid("loyalty.url", "must be an http:// or https:// URL"));
            }
            if loyalty.token.is_empty() {
                return Err(invalid("loyalty.token", "must not be empty"));
            }
            if !(1..=500).contains(&loyalty.batch) {
                return Err(invalid("loyalty.batch", "must be 1 to 500"));
            }
            if loyalty.timeout_s == 0 {
                return Err(invalid("loyalty.timeout_s", "must be at least 1"));
            }
            if loyalty.expiry_interval_s == 0 {
                return Err(invalid("loyalty.expiry_interval_s", "must be at least 1"));
            }
            if let Some(db) = &loyalty.database
                && db.is_empty()
            {
                return Err(invalid("loyalty.database", "must not be empty"));
            }
        }
        if let Some(d) = &self.dashboard {
            d.check()?;
        }
        if let Some(http) = &self.http
            && http.token.is_empty()
        {
            return Err(invalid("http.token", "must not be empty"));
        }
        Ok(())
    }

    /// Checks that the sections `role` needs are there.
    pub fn check_role(&self, role: Role) -> Result<(), ConfigError> {
        let needed = |key: &'static str| {
            invalid(
                key,
                format!("this section is required by `ferry-cloud {}`", role.name()),
            )
        };
        if role.runs_ingest() {
            self.mqtt.as_ref().ok_or_else(|| needed("mqtt"))?;
            self.lake.as_ref().ok_or_else(|| needed("lake"))?;
        }
        if role == Role::Loyalty {
            self.loyalty
                .as_ref()
                .and_then(|l| l.database.as_ref())
                .ok_or_else(|| needed("loyalty.database"))?;
        }
        if role == Role::Dashboard {
            self.dashboard.as_ref().ok_or_else(|| needed("dashboard"))?;
        }
        let serves = matches!(role, Role::Loyalty | Role::Dashboard)
            || (role == Role::All && (self.runs_ledger() || self.dashboard.is_some()));
        if serves {
            self.http.as_ref().ok_or_else(|| needed("http"))?;
        }
        Ok(())
    }

    /// The ledger runs in this process (`loyalty`, or `all` with `loyalty.database`).
    pub fn runs_ledger(&self) -> bool {
        self.loyalty.as_ref().is_some_and(|l| l.database.is_some())
    }

    /// The ingest's sections, or the key that is missing.
    pub fn ingest_setup(&self) -> Result<IngestSetup, ConfigError> {
        self.check_role(Role::Ingest)?;
        let (Some(mqtt), Some(lake)) = (self.mqtt.clone(), self.lake.clone()) else {
            return Err(invalid("mqtt", "required by the ingest"));
        };
        Ok(IngestSetup {
            data_dir: self.data_dir.clone(),
            mqtt,
            lake,
            ingest: self.ingest.clone(),
            loyalty: self.loyalty.clone(),
            dashboard: self.dashboard.clone(),
        })
    }
}

impl MqttConfig {
    pub fn broker(&self) -> Result<BrokerAddr, ConfigError> {
        BrokerAddr::parse(&self.url).map_err(|p| invalid("mqtt.url", p))
    }

    fn check(&self) -> Result<(), ConfigError> {
        let broker = self.broker()?;
        if broker.tls {
            config_env::check_tls_files(&self.ca_file, &self.cert_file, &self.key_file)
                .map_err(|(key, problem)| invalid(key, problem))?;
        }
        if self.client_id.is_empty() || self.client_id.len() > 128 {
            return Err(invalid("mqtt.client_id", "must be 1 to 128 bytes"));
        }
        if let Some(group) = &self.share_group
            && (group.is_empty() || group.contains(['/', '+', '#']))
        {
            return Err(invalid(
                "mqtt.share_group",
                "must be a non-empty name without '/', '+' or '#'",
            ));
        }
        if !(5..=1200).contains(&self.keep_alive_s) {
            return Err(invalid("mqtt.keep_alive_s", "must be 5 to 1200 seconds"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
data_dir = "/tmp/ferry-cloud"
[loyalty]
url = "http://127.0.0.1:8080"
token = "t"
database = "sqlite:///tmp/loyalty.db"
[mqtt]
url = "mqtt://127.0.0.1:1883"
client_id = "ingest-1"
[lake]
root = "s3://ferry-lake/prod"
[dashboard]
database = "sqlite:///tmp/hot.db"
"#;

    #[test]
    fn parses_with_defaults() {
        let c = CloudConfig::parse(BASE, []).expect("valid");
        let lake = c.lake.as_ref().expect("lake");
        assert_eq!(lake.flush_bytes, 8 * 1024 * 1024);
        assert_eq!(lake.flush_interval_s, 60);
        assert_eq!(
            lake.root().expect("root"),
            LakeRoot::S3 {
                bucket: "ferry-lake".into(),
                prefix: "prod".into()
            }
        );
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("FERRY_LAKE__ROOT", "http://x", "lake.root"),
            ("FERRY_LAKE__ROOT", "s3:///x", "lake.root"),
            ("FERRY_LAKE__FLUSH_BYTES", "10", "lake.flush_bytes"),
            ("FERRY_LAKE__FLUSH_INTERVAL_S", "0", "lake.flush_interval_s"),
            ("FERRY_MQTT__URL", "tcp://x", "mqtt.url"),
            ("FERRY_MQTT__URL", "mqtts://x:8883", "mqtt.ca_file"),
            ("FERRY_MQTT__SHARE_GROUP", "a/b", "mqtt.share_group"),
            ("FERRY_MQTT__CLIENT_ID", "", "mqtt.client_id"),
            ("FERRY_MQTT__TYPO", "1", "typo"),
            ("FERRY_LOYALTY__URL", "ftp://x", "loyalty.url"),
            ("FERRY_LOYALTY__BATCH", "501", "loyalty.batch"),
            ("FERRY_LOYALTY__TIMEOUT_S", "0", "loyalty.timeout_s"),
            ("FERRY_DASHBOARD__DATABASE", "", "dashboard.database"),
            (
                "FERRY_DASHBOARD__RAW_RETENTION_DAYS",
                "0",
                "dashboard.raw_retention_days",
            ),
            (
                "FERRY_DASHBOARD__ROLLUP_RETENTION_DAYS",
                "3",
                "dashboard.rollup_retention_days",
            ),
            (
                "FERRY_DASHBOARD__OFFLINE_AFTER_S",
                "0",
                "dashboard.offline_after_s",
            ),
            (
                "FERRY_DASHBOARD__EVENTS_INTERVAL_MS",
                "5",
                "dashboard.events_interval_ms",
            ),
        ];
        for (var, value, key) in cases {
            let err = CloudConfig::parse(BASE, [(var.to_owned(), value.to_owned())])
                .expect_err(key)
                .to_string();
            assert!(
                err.contains(key),
                "{var}={value}: {err:?} does not name {key}"
            );
        }
    }

    #[test]
    fn each_role_names_the_section_it_misses() {
        let ledger_only = r#"
data_dir = "/tmp/ferry-cloud"
[loyalty]
url = "http://127.0.0.1:8080"
token = "t"
database = "sqlite:///tmp/loyalty.db"
[http]
listen = "127.0.0.1:8080"
token = "t"
"#;
        let c = CloudConfig::parse(ledger_only, []).expect("valid");
        c.check_role(Role::Loyalty)
            .expect("the loyalty role has what it needs");
        let err = c.check_role(Role::Ingest).expect_err("no mqtt").to_string();
        assert!(err.contains("mqtt"), "{err}");
        let err = c
            .check_role(Role::Dashboard)
            .expect_err("no dashboard")
            .to_string();
        assert!(err.contains("dashboard"), "{err}");
        let c = CloudConfig::parse(BASE, []).expect("valid");
        let err = c.check_role(Role::All).expect_err("no http").to_string();
        assert!(err.contains("http"), "{err}");
        let err = c
            .check_role(Role::Dashboard)
            .expect_err("no http")
            .to_string();
        assert!(err.contains("http"), "{err}");
        c.ingest_setup().expect("the ingest has what it needs");
    }

    #[test]
    fn alarm_rules_are_checked() {
        let with = |rules: &str| CloudConfig::parse(&format!("{BASE}{rules}"), []);
        let ok = with(
            "[[dashboard.alarms]]\nname = \"hot\"\nmetric = \"temperature_c\"\nop = \">\"\nvalue = 30\nfor_s = 60\n",
        )
        .expect("valid");
        let rules = &ok.dashboard.as_ref().expect("dashboard").alarms;
        assert_eq!((rules[0].name.as_str(), rules[0].for_s), ("hot", 60));
        for (rules, want) in [
            (
                "[[dashboard.alarms]]\nname = \"a\"\nmetric = \"m\"\nop = \"=>\"\nvalue = 1\n",
                "op",
            ),
            (
                "[[dashboard.alarms]]\nname = \"\"\nmetric = \"m\"\nop = \">\"\nvalue = 1\n",
                "dashboard.alarms",
            ),
            (
                "[[dashboard.alarms]]\nname = \"a\"\nmetric = \"\"\nop = \">\"\nvalue = 1\n",
                "dashboard.alarms",
            ),
            (
                "[[dashboard.alarms]]\nname = \"a\"\nmetric = \"m\"\nop = \">\"\nvalue = 1\n[[dashboard.alarms]]\nname = \"a\"\nmetric = \"m\"\nop = \"<\"\nvalue = 1\n",
                "unique",
            ),
            (
                "[[dashboard.alarms]]\nname = \"a\"\nmetric = \"m\"\nop = \">\"\nvalue = nan\n",
                "finite",
            ),
        ] {
            let err = with(rules).expect_err(want).to_string();
            assert!(err.contains(want), "{rules}: {err}");
        }
    }

    #[test]
    fn the_example_configs_parse() {
        // cloud-s3 names certificate files of a real deployment, checked at parse time.
        for (name, text) in [
            (
                "cloud-local",
                include_str!("../../deploy/examples/cloud-local.toml"),
            ),
            (
                "cloud-loyalty",
                include_str!("../../deploy/examples/cloud-loyalty.toml"),
            ),
        ] {
            CloudConfig::parse(text, []).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let local = CloudConfig::parse(include_str!("../../deploy/examples/cloud-local.toml"), [])
            .expect("cloud-local");
        local
            .check_role(Role::All)
            .expect("cloud-local runs every role");
        assert_eq!(local.dashboard.map(|d| d.alarms.len()), Some(1));
    }

    #[test]
    fn database_passwords_are_redacted() {
        assert_eq!(
            redact_password(Some("postgres://ferry:s3cret@db:5432/ledger")).as_deref(),
            Some("postgres://ferry:<redacted>@db:5432/ledger")
        );
        assert_eq!(
            redact_password(Some("sqlite:///var/lib/l.db")).as_deref(),
            Some("sqlite:///var/lib/l.db")
        );
    }
}
