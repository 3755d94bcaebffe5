//! What the ingest hands to the hot store: one entry of its journal's `hot` queue.

use std::collections::BTreeMap;

use ferry_shared::Timestamp;
use serde::{Deserialize, Serialize};

/// One entry of the ingest's `hot` queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum HotItem {
    Reading {
        device: String,
        spool: String,
        seq: u64,
        ts_ms: i64,
        /// The lake line says `ts_suspect`: kept in the lake, moving no state.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        ts_suspect: bool,
        metrics: BTreeMap<String, f64>,
    },
    /// A message on the device's `status` topic.
    Status {
        device: String,
        received_ms: i64,
        #[serde(flatten)]
        status: DeviceStatus,
    },
    /// A message of records came from the device.
    Seen { device: String, at_ms: i64 },
}

/// What the agent says on its `status` topic; only `online` is required, because the will
/// message carries nothing else.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceStatus {
    pub online: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    /// When the agent said it; absent in the will.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spool: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_transactions: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_pending_age_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evicted_total: Option<u64>,
}

/// Longest `agent_version` and `spool` a status may carry: what an agent sends is far
/// shorter, and every byte of it is served to every dashboard.
const MAX_STATUS_TEXT: usize = 64;

impl DeviceStatus {
    /// Short texts without control characters, and finite figures.
    pub fn is_sane(&self) -> bool {
        let text_ok = |t: &Option<String>| {
            t.as_deref()
                .is_none_or(|t| t.len() <= MAX_STATUS_TEXT && !t.chars().any(char::is_control))
        };
        text_ok(&self.agent_version)
            && text_ok(&self.spool)
            && self
                .oldest_pending_age_s
                .is_none_or(|age| age.is_finite() && age >= 0.0)
    }
}
