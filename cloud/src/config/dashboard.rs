//! `[dashboard]`: the hot store, and the threshold alarm rules judged as readings arrive.

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid, redact_password};

/// `[dashboard]`: the hot store and what the dashboards make of it.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DashboardConfig {
    /// `sqlite:///PATH` or `postgres://...`, as for the ledger.
    pub database: String,
    /// Raw readings are kept this long...
    #[serde(default = "raw_retention_days")]
    pub raw_retention_days: u32,
    /// ...and 1-minute rollups this long.
    #[serde(default = "rollup_retention_days")]
    pub rollup_retention_days: u32,
    /// A device not heard from for this long is offline, whatever it last said.
    #[serde(default = "offline_after_s")]
    pub offline_after_s: u64,
    /// How often the retention job runs.
    #[serde(default = "retention_interval_s")]
    pub retention_interval_s: u64,
    /// How often the event feed looks for news in the hot store, in ms.
    #[serde(default = "events_interval_ms")]
    pub events_interval_ms: u64,
    /// Threshold alarm rules (`[[dashboard.alarms]]`).
    #[serde(default)]
    pub alarms: Vec<AlarmRule>,
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

    pub(super) fn check(&self) -> Result<(), ConfigError> {
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

fn raw_retention_days() -> u32 {
    7
}

fn rollup_retention_days() -> u32 {
    90
}

fn offline_after_s() -> u64 {
    600
}

fn retention_interval_s() -> u64 {
    3600
}

fn events_interval_ms() -> u64 {
    1000
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum Op {
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
}

impl Op {
    pub fn holds(self, left: f64, right: f64) -> bool {
        match self {
            Self::Gt => left > right,
            Self::Ge => left >= right,
            Self::Lt => left < right,
            Self::Le => left <= right,
            Self::Eq => left == right,
            Self::Ne => left != right,
        }
    }

    pub fn symbol(self) -> &'static str {
        match self {
            Self::Gt => ">",
            Self::Ge => ">=",
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Eq => "==",
            Self::Ne => "!=",
        }
    }
}

/// `[[dashboard.alarms]]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmRule {
    /// Unique among the rules; alarms carry it.
    pub name: String,
    pub metric: String,
    pub op: Op,
    pub value: f64,
    /// How long, in seconds of reading time, the comparison must hold before the alarm is
    /// raised; 0 raises it at the first reading that matches.
    #[serde(default)]
    pub for_s: u64,
    /// Only this device; every device when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

impl AlarmRule {
    pub fn applies(&self, device: &str, metric: &str) -> bool {
        self.metric == metric && self.device.as_deref().is_none_or(|d| d == device)
    }

    /// `temperature_c > 30 for 60 s`.
    pub fn condition(&self) -> String {
        let mut text = format!("{} {} {}", self.metric, self.op.symbol(), self.value);
        if self.for_s > 0 {
            text.push_str(&format!(" for {} s", self.for_s));
        }
        text
    }
}
