//! `[loyalty]`: where the ingest routes transactions, and the ledger the loyalty role keeps.

use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, invalid, redact_password, resolve_token};

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoyaltyConfig {
    /// Where the ingest's router sends transactions: the loyalty role's HTTP address.
    pub url: String,
    /// The loyalty role's `http.token`; or `token_file`, read at startup.
    #[serde(default)]
    pub token: String,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// The ledger, for the loyalty role: `sqlite:///PATH` or `postgres://...`.
    pub database: Option<String>,
    /// Transactions per request to the loyalty API (at most 500, README: loyalty core).
    #[serde(default = "route_batch")]
    pub batch: usize,
    /// Each request to the loyalty API gives up after this long and is retried.
    #[serde(default = "route_timeout_s")]
    pub timeout_s: u64,
    /// The router warns while the oldest transaction waiting for the ledger is older.
    #[serde(default = "backlog_alert_s")]
    pub backlog_alert_s: u64,
    /// How often the loyalty role lets points past their program's `expiry_days` lapse.
    #[serde(default = "expiry_interval_s")]
    pub expiry_interval_s: u64,
}

// By hand, so that the token never reaches a log through `{:?}`.
impl std::fmt::Debug for LoyaltyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoyaltyConfig")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .field("token_file", &self.token_file)
            .field("database", &redact_password(self.database.as_deref()))
            .field("batch", &self.batch)
            .field("timeout_s", &self.timeout_s)
            .field("backlog_alert_s", &self.backlog_alert_s)
            .field("expiry_interval_s", &self.expiry_interval_s)
            .finish()
    }
}

impl LoyaltyConfig {
    /// Reads `token_file` into `token`, and checks the token.
    pub(super) fn resolve(&mut self) -> Result<(), ConfigError> {
        self.token = resolve_token(
            ("loyalty.token", "loyalty.token_file"),
            &self.token,
            self.token_file.as_deref(),
        )?;
        Ok(())
    }

    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(invalid("loyalty.url", "must be an http:// or https:// URL"));
        }
        if !(1..=500).contains(&self.batch) {
            return Err(invalid("loyalty.batch", "must be 1 to 500"));
        }
        if self.timeout_s == 0 {
            return Err(invalid("loyalty.timeout_s", "must be at least 1"));
        }
        if self.expiry_interval_s == 0 {
            return Err(invalid("loyalty.expiry_interval_s", "must be at least 1"));
        }
        if let Some(db) = &self.database
            && db.is_empty()
        {
            return Err(invalid("loyalty.database", "must not be empty"));
        }
        Ok(())
    }
}

fn route_batch() -> usize {
    500
}

fn route_timeout_s() -> u64 {
    10
}

fn backlog_alert_s() -> u64 {
    300
}

fn expiry_interval_s() -> u64 {
    3600
}
