//! `[mqtt]`: the broker the ingest subscribes to.

use std::path::PathBuf;

use ferry_shared::config_env::{self, BrokerAddr};
use serde::Deserialize;

use super::{ConfigError, invalid};

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
    #[serde(default = "keep_alive_s")]
    pub keep_alive_s: u64,
}

impl MqttConfig {
    pub fn broker(&self) -> Result<BrokerAddr, ConfigError> {
        BrokerAddr::parse(&self.url).map_err(|p| invalid("mqtt.url", p))
    }

    pub(super) fn check(&self) -> Result<(), ConfigError> {
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

fn keep_alive_s() -> u64 {
    30
}
