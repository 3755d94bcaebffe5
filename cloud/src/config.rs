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
    pub mqtt: MqttConfig,
    pub lake: LakeConfig,
    #[serde(default)]
    pub ingest: IngestConfig,
    /// Where transactions are routed. With it, transactions are also queued durably for the
    /// loyalty router, which comes with the loyalty core.
    pub loyalty: Option<LoyaltyConfig>,
    pub http: Option<HttpConfig>,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoyaltyConfig {
    pub url: String,
    pub token: String,
    pub database: Option<String>,
}

// By hand, so that the token never reaches a log through `{:?}`.
impl std::fmt::Debug for LoyaltyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoyaltyConfig")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .field("database", &self.database)
            .finish()
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
        let broker = self.broker()?;
        if broker.tls {
            let m = &self.mqtt;
            config_env::check_tls_files(&m.ca_file, &m.cert_file, &m.key_file)
                .map_err(|(key, problem)| invalid(key, problem))?;
        }
        let m = &self.mqtt;
        if m.client_id.is_empty() || m.client_id.len() > 128 {
            return Err(invalid("mqtt.client_id", "must be 1 to 128 bytes"));
        }
        if let Some(group) = &m.share_group
            && (group.is_empty() || group.contains(['/', '+', '#']))
        {
            return Err(invalid(
                "mqtt.share_group",
                "must be a non-empty name without '/', '+' or '#'",
            ));
        }
        if !(5..=1200).contains(&m.keep_alive_s) {
            return Err(invalid("mqtt.keep_alive_s", "must be 5 to 1200 seconds"));
        }
        self.lake.root()?;
        let l = &self.lake;
        if l.flush_bytes < 1024 {
            return Err(invalid("lake.flush_bytes", "must be at least 1024"));
        }
        if l.flush_interval_s == 0 {
            return Err(invalid("lake.flush_interval_s", "must be at least 1"));
        }
        if l.max_open_partitions == 0 {
            return Err(invalid("lake.max_open_partitions", "must be at least 1"));
        }
        if l.max_buffer_bytes < l.flush_bytes {
            return Err(invalid(
                "lake.max_buffer_bytes",
                "must be at least lake.flush_bytes",
            ));
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
        }
        if let Some(http) = &self.http
            && http.token.is_empty()
        {
            return Err(invalid("http.token", "must not be empty"));
        }
        Ok(())
    }

    pub fn broker(&self) -> Result<BrokerAddr, ConfigError> {
        BrokerAddr::parse(&self.mqtt.url).map_err(|p| invalid("mqtt.url", p))
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
"#;

    #[test]
    fn parses_with_defaults() {
        let c = CloudConfig::parse(BASE, []).expect("valid");
        assert_eq!(c.lake.flush_bytes, 8 * 1024 * 1024);
        assert_eq!(c.lake.flush_interval_s, 60);
        assert_eq!(
            c.lake.root().expect("root"),
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
}
