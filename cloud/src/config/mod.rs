//! Cloud configuration (README: cloud configuration): TOML with `FERRY_A__B` environment overrides, checked
//! in full at startup so that a bad value fails with the key that holds it.

mod dashboard;
mod http;
mod ingest;
mod lake;
mod loyalty;
mod mqtt;

use std::path::{Path, PathBuf};

use ferry_shared::config_env;
use serde::Deserialize;

pub use dashboard::{AlarmRule, DashboardConfig, Op};
pub use http::{ApiRole, HttpConfig, NamedToken, OidcConfig};
pub use ingest::IngestConfig;
pub use lake::{LakeConfig, LakeRoot};
pub use loyalty::LoyaltyConfig;
pub use mqtt::MqttConfig;

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

pub(crate) fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
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

/// A role of `ferry-cloud` (README: command line), and the sections it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Ingest,
    Loyalty,
    Dashboard,
    All,
    /// The raw layer into the curated tables.
    Compact,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Self::Ingest => "ingest",
            Self::Loyalty => "loyalty",
            Self::Dashboard => "dashboard",
            Self::All => "all",
            Self::Compact => "compact",
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
        let mut config: Self = config_env::parse(text, env).map_err(ConfigError::Shape)?;
        if let Some(http) = &mut config.http {
            http.resolve()?;
        }
        if let Some(loyalty) = &mut config.loyalty {
            loyalty.resolve()?;
        }
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
            loyalty.check()?;
        }
        if let Some(d) = &self.dashboard {
            d.check()?;
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
        if role == Role::Compact {
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
/// A section's token: `token` (empty when not given) or the first line of `token_file`,
/// refused when weak or a placeholder; errors name `keys.0` or `keys.1`.
fn resolve_token(
    keys: (&'static str, &'static str),
    token: &str,
    file: Option<&Path>,
) -> Result<String, ConfigError> {
    let given = Some(token).filter(|t| !t.is_empty());
    ferry_shared::token::from_config(given, file).map_err(|(key, problem)| {
        invalid(if key == "token_file" { keys.1 } else { keys.0 }, problem)
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
data_dir = "/tmp/ferry-cloud"
[loyalty]
url = "http://127.0.0.1:8080"
token = "config-test-token-0123"
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
            lake.compact_interval_s, None,
            "all compacts only when asked"
        );
        assert_eq!(lake.curated_file_bytes, 128 * 1024 * 1024);
        assert_eq!(lake.curated_retention_days, 7);
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
            (
                "FERRY_LAKE__COMPACT_INTERVAL_S",
                "0",
                "lake.compact_interval_s",
            ),
            (
                "FERRY_LAKE__CURATED_FILE_BYTES",
                "1000",
                "lake.curated_file_bytes",
            ),
            (
                "FERRY_LAKE__CURATED_RETENTION_DAYS",
                "0",
                "lake.curated_retention_days",
            ),
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
token = "config-test-token-0123"
database = "sqlite:///tmp/loyalty.db"
[http]
listen = "127.0.0.1:8080"
token = "config-test-token-0123"
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
        c.check_role(Role::Compact)
            .expect("the compactor needs only [lake]");
        let err = CloudConfig::parse(ledger_only, [])
            .expect("valid")
            .check_role(Role::Compact)
            .expect_err("no lake")
            .to_string();
        assert!(err.contains("lake") && err.contains("compact"), "{err}");
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
        // Their placeholder tokens are refused, naming the key; the environment sets real
        // ones, as README's commands do.
        let tokens = || {
            [
                ("FERRY_HTTP__TOKEN", "an-example-token-of-24ch"),
                ("FERRY_LOYALTY__TOKEN", "an-example-token-of-24ch"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        };
        let refused = CloudConfig::parse(
            include_str!("../../../deploy/examples/cloud-local.toml"),
            [],
        )
        .expect_err("a placeholder token")
        .to_string();
        assert!(
            refused.contains("token") && refused.contains("placeholder"),
            "{refused}"
        );
        // cloud-s3 names certificate files of a real deployment, checked at parse time.
        for (name, text) in [
            (
                "cloud-local",
                include_str!("../../../deploy/examples/cloud-local.toml"),
            ),
            (
                "cloud-loyalty",
                include_str!("../../../deploy/examples/cloud-loyalty.toml"),
            ),
        ] {
            CloudConfig::parse(text, tokens()).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let local = CloudConfig::parse(
            include_str!("../../../deploy/examples/cloud-local.toml"),
            tokens(),
        )
        .expect("cloud-local");
        local
            .check_role(Role::All)
            .expect("cloud-local runs every role");
        assert_eq!(local.dashboard.map(|d| d.alarms.len()), Some(1));
    }

    #[test]
    fn tokens_are_checked_and_read_from_files() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("http.token");
        std::fs::write(&file, "read-from-a-token-file\n").expect("write");
        let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let with_http = format!("{BASE}[http]\nlisten = \"127.0.0.1:8080\"\n");
        let c = CloudConfig::parse(
            &with_http,
            env(&[("FERRY_HTTP__TOKEN_FILE", file.to_str().expect("utf-8"))]),
        )
        .expect("token_file");
        assert_eq!(c.http.expect("http").token, "read-from-a-token-file");
        let good = ("FERRY_HTTP__TOKEN", "config-test-token-0123");
        for (var, value, key) in [
            ("FERRY_HTTP__TOKEN", "short", "http.token"),
            ("FERRY_HTTP__TOKEN", "change-me", "http.token"),
            (
                "FERRY_HTTP__TOKEN",
                "set-me-through-FERRY_HTTP__TOKEN",
                "http.token",
            ),
            (
                "FERRY_HTTP__TOKEN_FILE",
                "/nonexistent/token",
                "http.token_file",
            ),
            (
                "FERRY_LOYALTY__TOKEN",
                "change-me-0123456789",
                "loyalty.token",
            ),
        ] {
            let pairs = if var.starts_with("FERRY_HTTP") {
                env(&[(var, value)])
            } else {
                env(&[good, (var, value)])
            };
            let err = CloudConfig::parse(&with_http, pairs)
                .expect_err(value)
                .to_string();
            assert!(err.contains(key), "{var}={value}: {err}");
            assert!(
                !err.contains(value) || key.ends_with("_file"),
                "a token is never echoed: {err}"
            );
        }
        let err = CloudConfig::parse(&with_http, [])
            .expect_err("no token")
            .to_string();
        assert!(err.contains("http.token"), "{err}");
    }

    #[test]
    fn named_tokens_have_a_role_and_their_own_secret() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("wall.token");
        std::fs::write(&file, "wall-token-from-a-file\n").expect("write");
        let http = |tokens: &str| format!("{BASE}[http]\nlisten = \"127.0.0.1:8080\"\n{tokens}");
        let entry = |name: &str, token: &str, role: &str, stores: &str| {
            format!(
                "[[http.tokens]]\nname = \"{name}\"\ntoken = \"{token}\"\nrole = \"{role}\"\n{stores}"
            )
        };
        // Named tokens alone, one from a file; no `http.token` needed.
        let good = format!(
            "{}[[http.tokens]]\nname = \"wall\"\ntoken_file = \"{}\"\nrole = \"viewer\"\n",
            entry(
                "till-s01",
                "store-token-0123456789",
                "store",
                "stores = [\"S-01\"]\n"
            ),
            file.display()
        );
        let c = CloudConfig::parse(&http(&good), []).expect("named tokens");
        let h = c.http.expect("http");
        assert!(h.token.is_empty(), "no admin token was given");
        assert_eq!(h.tokens[1].token, "wall-token-from-a-file");
        assert_eq!(h.tokens[0].role, ApiRole::Store);
        let debug = format!("{h:?}");
        assert!(
            !debug.contains("store-token-0123456789") && debug.contains("till-s01"),
            "{debug}"
        );

        for (tokens, key, why) in [
            (
                entry("a", "short", "viewer", ""),
                "http.tokens[0].token",
                "too short",
            ),
            (
                entry("a", "viewer-token-0123456789", "root", ""),
                "unknown variant",
                "no such role",
            ),
            (
                entry("a", "store-token-0123456789", "store", ""),
                "http.tokens[0].stores",
                "a store needs stores",
            ),
            (
                entry(
                    "a",
                    "viewer-token-0123456789",
                    "viewer",
                    "stores = [\"S-01\"]\n",
                ),
                "http.tokens[0].stores",
                "only stores have stores",
            ),
            (
                entry("a", "router-token-0123456789", "router", ""),
                "http.tokens[0].role",
                "router is not configured here",
            ),
            (
                entry("a b", "viewer-token-0123456789", "viewer", ""),
                "http.tokens[0].name",
                "no spaces",
            ),
            (
                entry("a", "viewer-token-0123456789", "viewer", "")
                    + &entry("a", "other-token-0123456789", "viewer", ""),
                "http.tokens[1].name",
                "a name twice",
            ),
            (
                entry("a", "viewer-token-0123456789", "viewer", "")
                    + &entry("b", "viewer-token-0123456789", "operator", ""),
                "http.tokens[1].token",
                "a secret twice",
            ),
        ] {
            let err = CloudConfig::parse(&http(&tokens), [])
                .expect_err(why)
                .to_string();
            assert!(err.contains(key), "{why}: {err}");
            assert!(
                !err.contains("token-0123456789"),
                "a token is never echoed: {err}"
            );
        }
        // The legacy admin token, when given, must still be a real secret.
        let err = CloudConfig::parse(
            &http(&format!(
                "{}{}",
                "token = \"short\"\n",
                entry("a", "viewer-token-0123456789", "viewer", "")
            )),
            [],
        );
        assert!(err.is_err(), "a short http.token beside named ones");
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
